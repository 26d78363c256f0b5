// tests/gguf/llama_cpp_test.mjs: models trained by minitrain, exported with export_gguf, run by a real
// llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binary) against minitrain's own results (CTest:
// gguf_llama_cpp; the fixture gguf_npm_setup installs the package with `npm ci`).
//
//   node llama_cpp_test.mjs --bin BUILD_DIR --work SCRATCH_DIR [--shared ../shared/data/minimind-tokenizers]
//
// For each tokenizer (ours, trained here; MiniMind2's and minimind-3's when --shared has them): a corpus in
// several languages -> tokenizer (ours only) -> prepare_data -> pretrain of the "test" preset (2 layers x 32,
// 4 query heads sharing 2 KV heads: GQA; a Llama folder, arch llama) -> export_gguf as f32, f16 and bf16
// (ours), f32 and f16 (MiniMind2's), f32 and bf16 (minimind-3's); and of the "test-qknorm" preset (the same
// with MiniMind-3's q/k norm: a Qwen3ForCausalLM folder, arch qwen3) with ours (f32, f16) and
// minimind-3's (f32, bf16); and of the "test-moe3" preset (test-qknorm with MiniMind-3's MoE: 4 experts,
// top-1; a Qwen3MoeForCausalLM folder, arch qwen3moe) with ours (f32, f16). The presets all tie lm_head to the embedding, so every
// model here is tied (tests/gguf.cpp checks that an untied head is written as output.weight). Then, for
// each file:
//   1. llama.cpp's tokenization of a multilingual text (and of a ChatML turn, special tokens parsed)
//      equals minitrain's;
//   2. llama.cpp's greedy continuation of several prompts equals `generate --temperature 0` for
//      new_tokens (24) tokens: f32 KV cache, flash attention off;
//   3. at every step the next-token probabilities of the whole vocabulary agree within TOLERANCE[dtype]
//      (max absolute difference). The reference for f16 / bf16 is minitrain on the same rounded weights
//      (gguf_reference --round), so what remains is llama.cpp's arithmetic: it rounds the activations
//      to the weights' type before each f16 / bf16 matrix product, and sums in another order.
// Exit status 0 on success, 1 on a failure, 77 (CTest: skipped) when the package is not installed.
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
}, []));
const bin = (name) => path.resolve(args.bin, name);
const work = path.resolve(args.work);
const NEW_TOKENS = 24;
// Max |p_llama.cpp - p_minitrain| over every token of the vocabulary at every step. Measured (node-llama-cpp
// 3.21.1, 1 thread): f32 2.4e-4, f16 8.6e-4, bf16 8.2e-3. Trained less (80 steps of 4 sequences), a model
// meets near-ties (a run of <|endoftext|> of uncertain length) that bf16 arithmetic flips: keep it trained.
const TOLERANCE = {f32: 1e-3, f16: 5e-3, bf16: 2e-2};

let llamaModule;
try {
    llamaModule = await import(path.join(here, "node_modules", "node-llama-cpp", "dist", "index.js"));
} catch (e) {
    console.log(`[skipped] node-llama-cpp is not installed in ${here}/node_modules (npm ci failed or was not run): ${e.message}`);
    process.exit(77);
}
const {getLlama, LlamaLogLevel} = llamaModule;

fs.rmSync(work, {recursive: true, force: true});
fs.mkdirSync(work, {recursive: true});

function run(prog, argv) {
    try {
        return execFileSync(bin(prog), argv, {cwd: work, encoding: "utf8", maxBuffer: 1 << 30,
                                              stdio: ["ignore", "pipe", "pipe"]});
    } catch (e) {
        throw new Error(`${prog} ${argv.join(" ")} failed (${e.status}):\n${e.stderr}`);
    }
}

let failures = 0;
function check(ok, what) {
    console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
    if (!ok) failures++;
}

// ---- the corpus: short documents in several scripts, each repeated so a tiny model learns them ----------
const docs = [
    "The quick brown fox jumps over the lazy dog. It was 1987, and 42 foxes agreed.",
    "Once upon a time there was a little robot who liked to count: one, two, three, four, five.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "我们今天学习如何训练一个小型语言模型，它可以在两个核心上运行。",
    "Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München!",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京は晴れです。",
    "def add(a, b):\n    return a + b  # small code, tabs\tand spaces   here",
    "Emoji are bytes too: 🦙 llamas, 🚀 rockets, ❤️ hearts; café, naïve, coöperate.",
    "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\nTwo plus two is four.<|im_end|>",
];
const multilingual = "Hello wörld! 床前明月光 — Съешь ещё 🦙 1234567 tabs\tand  double  spaces. いろは: café's \"quotes\" 's 're";
const chat = "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n";
const corpus = path.join(work, "corpus.jsonl");
fs.writeFileSync(corpus, Array.from({length: 40}, () => docs.map((d) => JSON.stringify({text: d}) + "\n").join("")).join(""));

// ---- models --------------------------------------------------------------------------------------
function trainModel(label, tokenizerJson, preset) {
    const dir = path.join(work, label);
    fs.mkdirSync(dir, {recursive: true});
    run("prepare_data", ["--input", corpus, "--tokenizer", tokenizerJson, "--output_dir", path.join(dir, "data")]);
    const vocab = JSON.parse(fs.readFileSync(tokenizerJson, "utf8"));
    const ids = [...Object.values(vocab.model.vocab), ...(vocab.added_tokens || []).map((t) => t.id)];
    const vocabSize = Math.max(...ids) + 1;
    run("pretrain", ["--preset", preset, "--train_data", path.join(dir, "data", "train_*.bin"), "--vocab_size",
                     String(vocabSize), "--tokenizer", tokenizerJson, "--batch_size", "8", "--max_seq_len", "64",
                     "--max_steps", "120", "--learning_rate", "1e-2", "--warmup_steps", "10", "--log_interval", "0",
                     "--eval_interval", "0", "--sample_interval", "0", "--threads", "2", "--quiet", "1",
                     "--out_dir", path.join(dir, "run")]);
    return path.join(dir, "run", "final");
}

const tokenizers = [];
run("tokenizer", ["train", "--input", corpus, "--vocab_size", "700", "--output", path.join(work, "ours.json"), "--quiet"]);
// [label, tokenizer.json, dtypes, preset]: "test" is a llama GGUF; "test-qknorm" (MiniMind-3's q/k norm) a qwen3 one.
tokenizers.push(["ours", path.join(work, "ours.json"), ["f32", "f16", "bf16"], "test"]);
// ours-qknorm in bf16 met an exact near-tie (top two next-token probabilities 0.0039 and 0.0039 at step 6 of
// a prompt) that bf16 arithmetic flips: its bf16 file is checked with minimind-3's tokenizer instead.
tokenizers.push(["ours-qknorm", path.join(work, "ours.json"), ["f32", "f16"], "test-qknorm"]);
// MiniMind-3's MoE ("test-moe3": q/k norm, 4 experts, top-1 renormalized to 1): a Qwen3-MoE folder, arch qwen3moe.
tokenizers.push(["ours-moe3", path.join(work, "ours.json"), ["f32", "f16"], "test-moe3"]);
const dtypesOf = {minimind2: ["f32", "f16"], minimind3: ["f32", "bf16"], "minimind3-qknorm": ["f32", "bf16"]};
const shared = args.shared;
for (const [name, file, preset] of [["minimind2", "minimind2", "test"], ["minimind3", "minimind3", "test"],
                                    ["minimind3-qknorm", "minimind3", "test-qknorm"]]) {
    const f = shared && path.join(shared, `${file}-tokenizer.json`);
    if (f && fs.existsSync(f)) tokenizers.push([name, f, dtypesOf[name], preset]);
    else console.log(`[skipped] the ${name} tokenizer: ${shared ? f + " is missing" : "no --shared folder (../shared absent)"}`);
}

/// general.architecture of a GGUF file: export_gguf writes it as the first key.
function ggufArch(file) {
    const b = fs.readFileSync(file);
    let at = 24;  // magic, version, tensor count, key count
    const keyLen = Number(b.readBigUInt64LE(at));
    at += 8 + keyLen + 4;  // key, value type
    const valLen = Number(b.readBigUInt64LE(at));
    return b.subarray(at + 8, at + 8 + valLen).toString("utf8");
}

const llama = await getLlama({gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error});
const summary = [];

for (const [label, tokJson, dtypes, preset] of tokenizers) {
    const t0 = Date.now();
    const final = trainModel(label, tokJson, preset);
    console.log(`${label}: trained ${final} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const cfg = JSON.parse(fs.readFileSync(path.join(final, "config.json"), "utf8"));
    check(cfg.num_key_value_heads < cfg.num_attention_heads, `${label}: GQA (${cfg.num_attention_heads} query heads, ${cfg.num_key_value_heads} KV heads)`);

    // Prompts: the start of several documents, and a chat turn, as minitrain tokenizes them.
    const req0 = {texts: [multilingual, chat, ...[0, 2, 5, 7].map((i) => docs[i].slice(0, 12))], prompts: [], new_tokens: 1};
    fs.writeFileSync(path.join(work, "req0.json"), JSON.stringify(req0));
    const enc = JSON.parse(run("gguf_reference", ["--checkpoint", final, "--requests", path.join(work, "req0.json")])).texts;
    const prompts = [enc[1], ...enc.slice(2)].map((p) => p.slice(0, Math.max(2, Math.min(p.length, 6))));

    for (const dtype of dtypes) {
        const gguf = path.join(work, `${label}-${dtype}.gguf`);
        run("export_gguf", ["--checkpoint", final, "--output", gguf, "--dtype", dtype]);
        const arch = {"test-qknorm": "qwen3", "test-moe3": "qwen3moe"}[preset] || "llama";
        check(ggufArch(gguf) === arch && cfg.model_type === ({qwen3: "qwen3", qwen3moe: "qwen3_moe"}[arch] || "llama"),
              `${label} ${dtype}: config.json is model_type ${cfg.model_type}, the GGUF is arch ${ggufArch(gguf)} (expected ${arch})`);
        const refDir = path.join(work, `${label}-ref-${dtype}`);
        const req = {texts: [multilingual, chat], prompts, new_tokens: NEW_TOKENS};
        fs.writeFileSync(path.join(work, "req.json"), JSON.stringify(req));
        const probsFile = path.join(work, "probs.f32");
        const ref = JSON.parse(run("gguf_reference", ["--checkpoint", final, "--requests", path.join(work, "req.json"),
                                                      "--round", dtype, "--save_rounded", refDir, "--probs", probsFile]));
        const buf = fs.readFileSync(probsFile);
        const refProbs = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
        const V = cfg.vocab_size;

        const model = await llama.loadModel({modelPath: gguf, gpuLayers: 0});
        const what = `${label} ${dtype}`;
        // 1. tokenization
        const lt = Array.from(model.tokenize(multilingual, true));
        check(JSON.stringify(lt) === JSON.stringify(ref.texts[0]),
              `${what}: llama.cpp tokenizes the multilingual text as minitrain (${lt.length} tokens)` +
              (JSON.stringify(lt) === JSON.stringify(ref.texts[0]) ? "" : `\n  llama.cpp ${lt}\n  minitrain ${ref.texts[0]}`));
        const lc = Array.from(model.tokenize(chat, true));
        check(JSON.stringify(lc) === JSON.stringify(ref.texts[1]),
              `${what}: llama.cpp tokenizes the ChatML turn as minitrain (${lc.join(" ")})`);
        // llama.cpp's llama_detokenize, for pre "gpt-2", also removes the space before 's, 're, ... (HF's
        // clean_up_tokenization_spaces, which MiniMind turns off); token pieces, as generation streams them,
        // are exact.
        check(model.detokenize(lt) === multilingual.replace(/ '(s|re)\b/g, "'$1"),
              `${what}: llama.cpp detokenizes back to the text (up to its clean-up of " 's")`);

        // 2 + 3. greedy continuation and probabilities, one token at a time
        const context = await model.createContext({contextSize: 128, sequences: 1, flashAttention: false,
                                                    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
                                                    threads: 1, batchSize: 128});  // 1: ggml's spinning workers crawl on a busy machine
        const seq = context.getSequence();
        let worst = 0, sameAll = true, tokens = 0;
        for (let i = 0; i < prompts.length; i++) {
            await seq.clearHistory();
            const p = prompts[i];
            const next = {token: true, probabilities: true, options: {temperature: 0}};
            let input = [...p.slice(0, -1), [p[p.length - 1], {generateNext: next}]];
            const got = [];
            let maxDiff = 0;
            for (let s = 0; s < NEW_TOKENS; s++) {
                const out = await seq.controlledEvaluate(input);
                const n = out[input.length - 1].next;
                got.push(n.token);
                const pr = refProbs.subarray((i * NEW_TOKENS + s) * V, (i * NEW_TOKENS + s + 1) * V);
                if (n.probabilities.size !== V) {
                    check(false, `${what}: llama.cpp gave ${n.probabilities.size} probabilities, the vocabulary has ${V}`);
                    break;
                }
                for (const [tok, q] of n.probabilities) maxDiff = Math.max(maxDiff, Math.abs(q - pr[tok]));
                input = [[n.token, {generateNext: next}]];
            }
            const gen = run("generate", ["--checkpoint", dtype === "f32" ? final : refDir, "--prompt_ids", p.join(" "),
                                         "--temperature", "0", "--max_new_tokens", String(NEW_TOKENS)]).trim().split(/\s+/).map(Number);
            // generate stops after config.json's eos_token_id: compare what it produced (at least 16 tokens).
            const same = gen.length >= 16 && JSON.stringify(got.slice(0, gen.length)) === JSON.stringify(gen) &&
                         JSON.stringify(ref.prompts[i].greedy.slice(0, gen.length)) === JSON.stringify(gen);
            check(same, `${what}: prompt [${p.join(" ")}]: llama.cpp's greedy continuation equals generate --temperature 0 ` +
                        `for ${gen.length} tokens; max |dp| ${maxDiff.toExponential(2)}` +
                        (same ? "" : `\n  llama.cpp ${got.join(" ")}\n  generate  ${gen.join(" ")}\n  reference ${ref.prompts[i].greedy.join(" ")}`));
            sameAll &&= same;
            tokens += gen.length;
            worst = Math.max(worst, maxDiff);
        }
        check(worst <= TOLERANCE[dtype], `${what}: next-token probabilities agree within ${TOLERANCE[dtype]} (max |dp| ${worst.toExponential(2)})`);
        summary.push(`${what}: ${prompts.length} prompts, ${tokens} greedy tokens equal: ${sameAll}; max |dp| ${worst.toExponential(2)} (tolerance ${TOLERANCE[dtype]}); ${(fs.statSync(gguf).size / 1e6).toFixed(2)} MB`);
        await context.dispose();
        await model.dispose();
    }
}
console.log("\n" + summary.join("\n"));
console.log(failures ? `\n${failures} check(s) FAILED` : "\nall checks passed");
process.exit(failures ? 1 : 0);
