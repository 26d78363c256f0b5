// bench_serve: decode speed of the server's engine (include/minitrain/serve/engine.hpp) against generate().
//
//   bench_serve [--threads 2 --prompt 32 --tokens 128 --streams 1,4,16] [--save DIR]
//
// Model: MiniMind2-Small (8 layers x 512, 2 KV heads, vocabulary 6400, context 512) with UNTRAINED random
// weights (speed does not depend on the values) and a 6400-token byte-level BPE trained on synthetic words
// (so every sampled id decodes, as in serving). Greedy decoding, every request runs to --tokens.
//   generate      one stream through nn/generate.hpp: decode tokens/s after the first token, and the time
//                 to the first token (the prompt's prefill)
//   engine N      N requests submitted at once to an Engine with N slots (the server's --parallel):
//                 aggregate decode tokens/s (all tokens / wall time), per-stream tokens/s, mean and worst
//                 time to first token (from submit)
// The HTTP layer (examples/serve.cpp) adds a JSON encode and one socket write per token; `--save DIR`
// writes the model folder so that `serve --checkpoint DIR` can be measured over HTTP too.
#include <minitrain/minitrain.hpp>
#include <minitrain/serve/serve.hpp>
#include <minitrain/util/flags.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

using namespace minitrain;
using namespace minitrain::serve;

namespace {

using Net = MiniMind2Small;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Synthetic "words" of syllables, enough pairs for 6400 BPE tokens.
std::vector<std::string> corpus() {
    const char* syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu", "da", "fi", "go", "he", "ju", "by",
                         "ch", "st", "qu", "wo", "xe", "yi", "an", "or"};
    Rng rng{7, 0};
    std::vector<std::string> texts;
    for (int d = 0; d < 400; ++d) {
        std::string t;
        for (int w = 0; w < 400; ++w) {
            const int n = 1 + int(rng.below(4));
            for (int s = 0; s < n; ++s) t += syl[rng.below(24)];
            t += rng.below(10) == 0 ? ". " : " ";
        }
        texts.push_back(std::move(t));
    }
    return texts;
}

std::string cpu_name() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown CPU";
}

}  // namespace

int main(int argc, char** argv) {
    try {
        int threads = 2, prompt_len = 32, tokens = 128;
        std::string streams_list = "1,4,16", save;
        Flags flags("bench_serve", "Decode speed of the server's engine against generate() on MiniMind2-Small (untrained).");
        flags.bind("threads", threads, "CPU threads");
        flags.bind("prompt", prompt_len, "prompt tokens");
        flags.bind("tokens", tokens, "tokens generated per request");
        flags.bind("streams", streams_list, "concurrent request counts, comma-separated");
        flags.bind("save", save, "also write the model folder (config.json, model.safetensors, tokenizer.json) here");
        flags.parse(argc, argv);
        CPU::set_threads(threads);

        auto t0 = Clock::now();
        Tokenizer::TrainOptions to;
        to.vocab_size = 6400;
        const Tokenizer tok = Tokenizer::train_from_texts(corpus(), to);
        std::fprintf(stderr, "bench_serve: tokenizer of %d tokens trained in %.1f s\n", tok.vocab_size(), since(t0));
        MT_CHECK(tok.vocab_size() == 6400, "bench_serve: the synthetic corpus gave only ", tok.vocab_size(), " tokens");
        Transformer<Net> model(ModelConfig{6400, 512});
        model.init(1337);
        if (!save.empty()) {
            save_pretrained(save, model);
            tok.save(std::filesystem::path(save) / "tokenizer.json");
            std::fprintf(stderr, "bench_serve: wrote %s\n", save.c_str());
        }
        std::vector<std::int32_t> prompt = tok.encode(corpus()[0]);
        prompt.resize(std::size_t(prompt_len));

        std::printf("bench_serve: MiniMind2-Small (%zu parameters, untrained), prompt %d, %d new tokens, greedy, %d threads, %s\n",
                    model.params().count(), prompt_len, tokens, threads, cpu_name().c_str());
        double load[3] = {0, 0, 0};
        if (getloadavg(load, 3) > 0) std::printf("load average at start %.2f\n", load[0]);
        std::printf("%-14s %8s %14s %16s %12s %12s\n", "mode", "streams", "aggregate t/s", "per-stream t/s", "TTFT mean", "TTFT max");

        // generate(): one stream, the first token timed apart.
        {
            SampleOptions o;
            o.temperature = 0;
            o.max_new_tokens = tokens;
            Clock::time_point start = Clock::now(), first;
            int n = 0;
            generate(model, std::span<const std::int32_t>(prompt), o, [&](std::int32_t) {
                if (n++ == 0) first = Clock::now();
                return true;
            });
            const double ttft = std::chrono::duration<double>(first - start).count();
            const double decode = since(first);
            std::printf("%-14s %8d %14.1f %16.1f %10.3f s %10.3f s\n", "generate", 1, (n - 1) / decode, (n - 1) / decode, ttft, ttft);
        }

        std::stringstream ss(streams_list);
        for (std::string item; std::getline(ss, item, ',');) {
            const int N = std::stoi(item);
            Engine<Net> engine(model, tok, EngineOptions{N, 0});
            GenerationParams p;
            p.sample.temperature = 0;
            p.sample.max_new_tokens = tokens;
            const auto start = Clock::now();
            std::vector<std::shared_ptr<Job>> jobs;
            for (int i = 0; i < N; ++i) {
                std::vector<std::int32_t> pr = prompt;
                pr[0] = std::int32_t(300 + i);  // distinct prompts
                jobs.push_back(engine.submit(pr, p));
                MT_CHECK(jobs.back(), "bench_serve: submit refused");
            }
            std::vector<std::string> sink;
            double ttft_sum = 0, ttft_max = 0, per_stream = 0;
            long total = 0;
            for (auto& j : jobs) {
                while (!j->wait_for(sink, std::chrono::milliseconds(100))) sink.clear();
                MT_CHECK(j->error().empty(), "bench_serve: ", j->error());
                ttft_sum += j->queue_and_prefill_seconds();
                ttft_max = std::max(ttft_max, j->queue_and_prefill_seconds());
                per_stream += (j->completion_tokens() - 1) / j->decode_seconds();
                total += j->completion_tokens();
            }
            const double wall = since(start);
            std::printf("%-14s %8d %14.1f %16.1f %10.3f s %10.3f s\n", "engine", N, total / wall, per_stream / N, ttft_sum / N, ttft_max);
        }
        if (getloadavg(load, 3) > 0) std::printf("load average at end %.2f\n", load[0]);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
