// gguf_reference: what minitrain computes for a model folder, as JSON, for tests/gguf/llama_cpp_test.mjs
// to hold llama.cpp's results against.
//
//   gguf_reference --checkpoint DIR --requests REQ.json [--probs FILE] [--round f32|f16|bf16] [--save_rounded DIR2]
//
// REQ.json: {"texts": ["..."], "prompts": [[ids...], ...], "new_tokens": 24}. Output (stdout):
//   {"texts": [[ids of each text, encoded with allow_special]], "prompts": [{"greedy": [ids]}]}
// and, in --probs, the next-token probabilities of every token id at every greedy step of every prompt:
// f32, (prompts, new_tokens, vocab), little-endian.
// --round f16|bf16 rounds every matrix (rank >= 2) through that type before anything runs, as a GGUF file
// of that type holds it (norms stay f32); --save_rounded writes that model as a folder (config.json,
// model.safetensors, tokenizer.json) so that build/generate can run it too.
//
//   gguf_reference --checkpoint DIR --decode_bench N --prompt_ids "1 2 3" [--threads T]
// times greedy generate() of N tokens after the prompt (KV cache, batch 1), best of 3, and prints the
// decode rate (tokens after the first, per second): benchmarks/RESULTS.md's number beside llama.cpp's.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <minitrain/io/gguf.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

template <class Net>
void decode_bench(const fs::path& dir, int n, const std::vector<std::int32_t>& prompt) {
    Transformer<Net, CPU> model(load_model_config(dir));
    load_pretrained(dir, model);
    double best = 0;
    for (int r = 0; r < 3; ++r) {
        SampleOptions o;
        o.temperature = 0;
        o.max_new_tokens = n;
        std::chrono::steady_clock::time_point t1;
        int count = 0;
        generate(model, std::span<const std::int32_t>(prompt), o, [&](std::int32_t) {
            if (count++ == 0) t1 = std::chrono::steady_clock::now();
            return true;
        });
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
        best = std::max(best, (count - 1) / s);
        std::printf("run %d: decode %.1f tokens/s\n", r + 1, (count - 1) / s);
    }
    std::printf("minitrain decode: %.1f tokens/s (best of 3, %d tokens)\n", best, n);
}

template <class Net>
void run(const fs::path& dir, const nlohmann::json& req, const std::string& round, const std::string& save_rounded,
         const std::string& probs_file) {
    Transformer<Net, CPU> model(load_model_config(dir));
    load_pretrained(dir, model);
    if (round != "f32") {
        for (const Parameter& p : model.params().all()) {
            if (p.shape.rank < 2) continue;
            float* x = static_cast<float*>(p.var.data.ptr);
            for (std::int64_t i = 0; i < p.var.data.numel(); ++i)
                x[i] = round == "bf16" ? float(bf16(x[i])) : detail::f16_to_f32(gguf::f32_to_f16(x[i]));
        }
    }
    if (!save_rounded.empty()) {
        const nlohmann::json cfg = gguf::read_json(dir / "config.json");
        HFTokenIds ids;
        if (cfg.contains("eos_token_id")) ids.eos_token_id = cfg["eos_token_id"].get<int>();
        if (cfg.contains("bos_token_id")) ids.bos_token_id = cfg["bos_token_id"].get<int>();
        save_pretrained(save_rounded, model, ids);
        fs::copy_file(dir / "tokenizer.json", fs::path(save_rounded) / "tokenizer.json",
                      fs::copy_options::overwrite_existing);
    }

    nlohmann::json out;
    const Tokenizer tok = Tokenizer::load(dir / "tokenizer.json");
    out["texts"] = nlohmann::json::array();
    for (const auto& t : req.at("texts")) out["texts"].push_back(tok.encode(t.get<std::string>(), true));

    const int V = model.config().vocab_size;
    const int n_new = req.at("new_tokens").get<int>();
    out["prompts"] = nlohmann::json::array();
    std::vector<float> probs;  // (prompts, steps, V)
    for (const auto& p : req.at("prompts")) {
        const std::vector<std::int32_t> prompt = p.get<std::vector<std::int32_t>>();
        SampleOptions o;
        o.temperature = 0;
        o.max_new_tokens = n_new;
        const std::vector<std::int32_t> greedy = generate(model, std::span<const std::int32_t>(prompt), o);

        // One forward pass over prompt + continuation: row t predicts token t + 1.
        std::vector<std::int32_t> all = prompt;
        all.insert(all.end(), greedy.begin(), greedy.end());
        const std::int64_t T = std::int64_t(all.size());
        Graph<CPU> g;
        NoGrad<CPU> no_grad(g);
        g.set_training(false);
        Buffer<CPU> ids(Shape{1, T}, DType::i32);
        CPU::from_host(ids.tensor(), all.data());
        auto res = model.forward(g, ids.tensor(), nullptr);
        const float* logits = static_cast<const float*>(res.logits->data.ptr);
        for (std::size_t s = 0; s < greedy.size(); ++s) {
            const float* row = logits + (prompt.size() - 1 + s) * std::size_t(V);
            double mx = row[0], sum = 0;
            for (int v = 1; v < V; ++v) mx = std::max<double>(mx, row[v]);
            for (int v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
            for (int v = 0; v < V; ++v) probs.push_back(float(std::exp(double(row[v]) - mx) / sum));
        }
        out["prompts"].push_back({{"greedy", greedy}});
    }
    if (!probs_file.empty()) {
        std::ofstream f(probs_file, std::ios::binary);
        f.write(reinterpret_cast<const char*>(probs.data()), std::streamsize(probs.size() * sizeof(float)));
        MT_CHECK(bool(f), probs_file, ": write failed");
    }
    std::puts(out.dump().c_str());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string checkpoint, requests, round = "f32", save_rounded, probs_file, prompt_ids;
        int decode_n = 0, threads = 0;
        Flags flags("gguf_reference", "minitrain's tokens, greedy continuations and probabilities, as JSON.");
        flags.bind("checkpoint", checkpoint, "model folder with tokenizer.json");
        flags.bind("requests", requests, "JSON file: texts, prompts, new_tokens");
        flags.bind_choice("round", round, {"f32", "f16", "bf16"}, "round the matrices through this type first");
        flags.bind("probs", probs_file, "write the next-token probabilities here (f32, prompts x steps x vocab)");
        flags.bind("save_rounded", save_rounded, "write the rounded model to this folder");
        flags.require("checkpoint");
        flags.bind("decode_bench", decode_n, "time greedy decoding of this many tokens instead (0: off)");
        flags.bind("prompt_ids", prompt_ids, "--decode_bench: the prompt");
        flags.bind("threads", threads, "CPU threads (0: OpenMP's default)");
        flags.parse(argc, argv);
        if (threads > 0) CPU::set_threads(threads);
        const fs::path dir = checkpoint;
        const std::string preset = preset_for_folder(dir);
        if (decode_n > 0) {
            std::vector<std::int32_t> prompt;
            for (auto id : parse_int_list(prompt_ids, "prompt_ids")) prompt.push_back(std::int32_t(id));
            with_preset(preset, [&]<class Net>() { decode_bench<Net>(dir, decode_n, prompt); });
            return 0;
        }
        MT_CHECK(!requests.empty(), "--requests is required (or --decode_bench)");
        const nlohmann::json req = gguf::read_json(requests);
        with_preset(preset, [&]<class Net>() { run<Net>(dir, req, round, save_rounded, probs_file); });
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
