// quickstart: from raw text to a model that writes, in a few minutes on a CPU.
//
//   1. corpus     the quotations of Debian's `fortunes` package (/usr/share/games/fortunes), one JSONL
//                 record per quotation
//   2. tokenizer  a byte-level BPE vocabulary trained on that corpus (tokenizer.json, Hugging Face format)
//   3. shards     the corpus tokenized and packed into llm.c token shards, with a validation split
//   4. pretrain   a 4-layer Llama-style model, logging loss, validation loss and samples as it goes
//   5. generate   text from a few prompts with the trained model
//
// Everything lands in --out_dir (default runs/quickstart): data/, tokenizer.json, run/ (metrics.jsonl,
// checkpoints/, final/). Run it again with --resume 1 to continue from the last checkpoint.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <minitrain/minitrain.hpp>
#include <minitrain/data/prepare.hpp>
#include <minitrain/tokenizer/tokenizer.hpp>
#include <minitrain/util/flags.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

// The "quickstart" preset (nn/presets.hpp): 4 layers x 256 wide, 8 heads sharing 4 KV heads, about 3.5M
// parameters at vocabulary 2048. Registered, so that generate, chat, sft, lora and dpo load its folders.
using QuickModel = QuickstartModel;

/// Every quotation of the fortune files (records separated by a line holding "%"), as JSONL.
std::int64_t write_corpus(const fs::path& fortunes, const fs::path& jsonl, bool chinese) {
    MT_CHECK(fs::is_directory(fortunes), fortunes.string(),
             ": no fortune files. Install them with `bash cmake/setup.sh --quickstart` (Debian package fortunes)");
    const std::set<std::string> zh = {"chinese", "song100", "tang300"};  // the fortunes-zh package
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(fortunes)) {
        const auto name = e.path().filename().string();
        if (!e.is_regular_file() || e.path().has_extension() || (zh.count(name) != 0) != chinese) continue;
        files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    MT_CHECK(!files.empty(), fortunes.string(), ": no fortune files found");
    fs::create_directories(jsonl.parent_path());
    std::ofstream out(jsonl);
    std::int64_t records = 0;
    for (auto& f : files) {
        std::ifstream in(f);
        std::string line, text;
        auto flush = [&] {
            while (!text.empty() && text.back() == '\n') text.pop_back();
            if (!text.empty()) {
                out << nlohmann::json{{"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
                ++records;
            }
            text.clear();
        };
        while (std::getline(in, line)) {
            if (line == "%") {
                flush();
            } else {
                text += line;
                text += '\n';
            }
        }
        flush();
    }
    return records;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string out_dir = "runs/quickstart", corpus = "/usr/share/games/fortunes";
        int steps = 1500, vocab = 2048, threads = 0;
        bool resume = false, chinese = false;
        Flags flags("quickstart", "Train a tokenizer and a small language model on Debian's fortune quotations, then "
                                  "generate text. About 5 minutes on 2 idle CPU cores (--steps 200 for a quick look).");
        flags.bind("out_dir", out_dir, "where the data, tokenizer, checkpoints and metrics go");
        flags.bind("corpus", corpus, "folder of fortune files (records separated by '%' lines)");
        flags.bind("chinese", chinese, "train on the Tang and Song poems of fortunes-zh instead");
        flags.bind("steps", steps, "optimizer steps of 16 x 128 tokens");
        flags.bind("vocab_size", vocab, "tokenizer vocabulary size");
        flags.bind("threads", threads, "CPU threads (0: all cores)");
        flags.bind("resume", resume, "continue from the last checkpoint in out_dir/run");
        flags.parse(argc, argv);
        if (threads > 0) CPU::set_threads(threads);
        const fs::path out = out_dir, data = out / "data", tok_path = out / "tokenizer.json";

        // 1. Corpus
        std::printf("[1/5] corpus: reading %s\n", corpus.c_str());
        const fs::path jsonl = data / "corpus.jsonl";
        std::int64_t records = write_corpus(corpus, jsonl, chinese);
        std::printf("      %lld quotations -> %s (%.1f MB)\n", (long long)records, jsonl.c_str(),
                    double(fs::file_size(jsonl)) / 1e6);

        // 2. Tokenizer
        Tokenizer tok;
        if (resume && fs::exists(tok_path)) {
            tok = Tokenizer::load(tok_path);
            std::printf("[2/5] tokenizer: reusing %s (%d tokens)\n", tok_path.c_str(), tok.vocab_size());
        } else {
            std::printf("[2/5] tokenizer: training a %d-token byte-level BPE\n", vocab);
            auto t0 = std::chrono::steady_clock::now();
            Tokenizer::TrainOptions to;
            to.vocab_size = vocab;
            tok = Tokenizer::train({jsonl}, to);
            tok.save(tok_path);
            std::printf("      %s in %.1f s\n", tok_path.c_str(),
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }

        // 3. Shards
        std::printf("[3/5] shards: tokenizing and packing\n");
        PrepareOptions po;
        po.inputs = {jsonl.string()};
        po.output_dir = data;
        po.val_fraction = 0.05;
        po.overwrite = true;
        PrepareSummary prepared = prepare_data(po, tok);
        std::printf("%s\n", prepared.describe().c_str());

        // 4. Pretraining
        std::printf("[4/5] pretraining\n");
        TrainConfig c;
        c.train_data = prepared.train.pattern;
        c.val_data = prepared.val.pattern;
        c.vocab_size = tok.vocab_size();
        c.batch_size = 16;
        c.max_seq_len = 128;
        c.max_steps = steps;
        c.learning_rate = 2e-3;
        c.min_lr = 2e-4;
        c.warmup_steps = std::min(30, steps / 10);
        c.weight_decay = 0.1;
        c.log_interval = 25;
        c.eval_interval = 100;
        c.eval_batches = 20;
        c.sample_interval = 200;
        c.sample_tokens = 40;
        c.save_interval = 200;
        c.keep_last = 2;
        c.out_dir = (out / "run").string();
        c.resume = resume;
        Trainer<QuickModel, Optimizer<AdamW>, Schedule<WarmupCosine>, Pretrain> trainer(c);
        trainer.decode = [&](std::span<const std::int32_t> ids) { return tok.decode(ids); };
        trainer.sample_prompt = tok.encode("The ");
        trainer.fit();
        // The tokenizer travels with the model, so the final folder is all that chat and generate need.
        fs::copy_file(tok_path, fs::path(c.out_dir) / "final" / "tokenizer.json", fs::copy_options::overwrite_existing);

        // 5. Generation
        std::printf("[5/5] samples (temperature 0.8, top-k 40)\n");
        SampleOptions so;
        so.temperature = 0.8;
        so.top_k = 40;
        so.max_new_tokens = 60;
        so.eos_token = tok.token_id("<|endoftext|>");
        const std::vector<std::string> prompts = chinese ? std::vector<std::string>{"春", "月", "山"}
                                                         : std::vector<std::string>{"The ", "Love ", "A computer "};
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            so.seed = i + 1;
            auto prompt = tok.encode(prompts[i]);
            auto ids = generate(trainer.model(), std::span<const std::int32_t>(prompt), so);
            if (!ids.empty() && ids.back() == so.eos_token) ids.pop_back();
            std::printf("---\n%s%s\n", prompts[i].c_str(), tok.decode(ids).c_str());
        }
        const fs::path run = c.out_dir;
        std::printf("---\nrun directory: %s\n  tokenizer:   %s\n  shards:      %s, %s\n  metrics:     %s\n"
                    "  loss curve:  %s (open it in a browser)\n  report:      %s\n  TensorBoard: tensorboard --logdir %s\n"
                    "  checkpoints: %s\n  final model: %s (Hugging Face Llama folder, preset quickstart)\n"
                    "next: ./build/chat --checkpoint %s   or   ./build/sft --from_weight %s --data_path SFT.jsonl\n",
                    out.c_str(), tok_path.c_str(), prepared.train.pattern.c_str(), prepared.val.pattern.c_str(),
                    (run / "metrics.jsonl").c_str(), (run / "loss.svg").c_str(), (run / "report.md").c_str(), run.c_str(),
                    (run / "checkpoints").c_str(), (run / "final").c_str(), (run / "final").c_str(), (run / "final").c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
