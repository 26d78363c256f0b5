// tests/gguf/decode_bench.mjs: llama.cpp's greedy decode speed on a GGUF file (benchmarks/RESULTS.md).
//
//   node tests/gguf/decode_bench.mjs --gguf model.gguf --prompt_ids "1 2 3" [--tokens 128] [--threads 2]
//
// Prints the prompt evaluation time and the decode rate (tokens/s after the first new token), one token
// per batch, f32 KV cache, flash attention off: the setting tests/gguf/llama_cpp_test.mjs checks.
import path from "node:path";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const {getLlama, LlamaLogLevel} = await import(path.join(here, "node_modules", "node-llama-cpp", "dist", "index.js"));
const args = {tokens: "128", threads: "2"};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];
const n = Number(args.tokens);
const prompt = args.prompt_ids.trim().split(/\s+/).map(Number);

const llama = await getLlama({gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: args.gguf, gpuLayers: 0});
const context = await model.createContext({contextSize: prompt.length + n + 8, sequences: 1, flashAttention: false,
                                            experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
                                            threads: Number(args.threads)});
const seq = context.getSequence();
let best = 0;
for (let run = 0; run < 3; run++) {  // the best of three, as our benchmarks report
    await seq.clearHistory();
    const t0 = performance.now();
    let t1 = 0, count = 0;
    for await (const token of seq.evaluate(prompt, {temperature: 0})) {
        if (count === 0) t1 = performance.now();
        if (++count >= n) break;
    }
    const rate = (count - 1) / ((performance.now() - t1) / 1000);
    best = Math.max(best, rate);
    console.log(`run ${run + 1}: prompt + first token ${(t1 - t0).toFixed(1)} ms, decode ${rate.toFixed(1)} tokens/s`);
}
console.log(`llama.cpp decode: ${best.toFixed(1)} tokens/s (best of 3, ${n} tokens, ${args.threads} threads)`);
await context.dispose();
await model.dispose();
