// finetune_demo: the whole fine-tuning pipeline on a task whose answers can be checked exactly.
//
//   finetune_demo [--out_dir runs/finetune_demo] [--threads 2]
//
// The task: two-digit addition asked in ChatML ("What is 23 + 45?" -> "68"). The demo writes, in one
// process:
//   data/pretrain_{train,val}.jsonl  plain statements {"text": "23 + 45 = 68."}
//   data/sft_{train,val}.jsonl       {"conversations": [user "What is 23 + 45?", assistant "68"]}
//   data/dpo_{train,val}.jsonl       {"chosen": [... "68"], "rejected": [... a wrong sum: off by 1 or 10]}
//   data/test_prompts.txt            held-out questions (no pair of them occurs in any training file), and
//   data/test_answers.txt            their answers, line by line (chat --prompts answers the first file)
// then runs tokenizer training -> shards -> Pretrain -> SFT (from the pretrained final/) -> LoRA (rank 8,
// attention + MLP, on the SFT data, from the pretrained model) -> DPO (from the SFT model), and after each
// stage prints the exact-match accuracy of greedy (temperature 0) replies on the held-out prompts, using
// the same ChatSession as examples/chat.cpp. The LoRA stage is scored the way chat --adapter runs it: the
// adapter folder merged into a freshly loaded base.
//
// Tokenizer: trained on the texts with the digits removed, so no merge involves a digit and every digit
// is one token (a number is its digits, not one of 100 unrelated ids): addition can generalize to unseen
// pairs. The model is the "tiny" preset (4 layers x 128). Sized to finish in a few minutes on 2 cores.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <minitrain/minitrain.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/train/dpo.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

using Net = TinyBenchModel;  // the "tiny" preset
using LoRA8 = LoRA<8, 16, LoRAAttentionMLP, SFT>;

struct Problem {
    int a, b;
    std::string question() const { return "What is " + std::to_string(a) + " + " + std::to_string(b) + "?"; }
    std::string answer() const { return std::to_string(a + b); }
};

nlohmann::json conversation(const std::string& user, const std::string& assistant) {
    return nlohmann::json::array({{{"role", "user"}, {"content", user}}, {{"role", "assistant"}, {"content", assistant}}});
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
    std::ofstream out(p);
    for (const auto& l : lines) out << l << '\n';
    MT_CHECK(out, p.string(), ": write failed");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Exact-match accuracy of greedy replies on the held-out problems.
double accuracy(Transformer<Net>& model, const Tokenizer& tok, const std::vector<Problem>& test, std::string* example) {
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 8;
    ChatSession<Net> chat(model, ChatTemplate(tok), o);
    int right = 0;
    for (std::size_t i = 0; i < test.size(); ++i) {
        chat.reset();
        const std::string got = chat.reply(test[i].question());
        right += got == test[i].answer();
        if (i < 3 && example) *example += "  " + test[i].question() + " -> \"" + got + "\" (want " + test[i].answer() + ")\n";
    }
    return double(right) / double(test.size());
}

TrainConfig base_config(const fs::path& out, const fs::path& tok_path, int vocab, int threads) {
    TrainConfig c;
    c.tokenizer = tok_path.string();
    c.vocab_size = vocab;
    c.batch_size = 32;
    c.max_seq_len = 48;
    c.weight_decay = 0.0;
    c.log_interval = 100;
    c.eval_batches = 4;
    c.save_interval = 0;
    c.keep_last = 1;
    c.out_dir = out.string();
    c.threads = threads;
    return c;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string out_dir = "runs/finetune_demo";
        int threads = 2, pretrain_steps = 600, sft_steps = 300, lora_steps = 300, dpo_steps = 100, n_test = 200;
        std::uint64_t seed = 7;
        Flags flags("finetune_demo", "Pretrain -> SFT -> LoRA -> DPO on two-digit addition, with held-out accuracy "
                                     "after each stage. A few minutes on 2 CPU cores.");
        flags.bind("out_dir", out_dir, "where the data, tokenizer and the four runs go");
        flags.bind("threads", threads, "CPU threads (0: all cores)");
        flags.bind("pretrain_steps", pretrain_steps, "pretraining steps (32 x 48 tokens)");
        flags.bind("sft_steps", sft_steps, "SFT steps (32 conversations)");
        flags.bind("lora_steps", lora_steps, "LoRA steps (32 conversations)");
        flags.bind("dpo_steps", dpo_steps, "DPO steps (32 pairs)");
        flags.bind("test", n_test, "held-out questions");
        flags.bind("seed", seed, "data split seed");
        flags.parse(argc, argv);
        if (threads > 0) CPU::set_threads(threads);
        const auto t_all = std::chrono::steady_clock::now();
        const fs::path out = out_dir, data = out / "data", tok_path = out / "tokenizer.json";
        fs::create_directories(data);

        // ---- 1. data ---------------------------------------------------------------------------------
        std::vector<Problem> all;
        for (int a = 0; a < 100; ++a)
            for (int b = 0; b < 100; ++b) all.push_back({a, b});
        std::mt19937_64 rng(seed);
        std::shuffle(all.begin(), all.end(), rng);
        const std::vector<Problem> test(all.begin(), all.begin() + n_test);
        const std::vector<Problem> val(all.begin() + n_test, all.begin() + 2 * n_test);
        const std::vector<Problem> train(all.begin() + 2 * n_test, all.end());
        auto wrong_answer = [&](const Problem& p) {
            static const int deltas[] = {1, -1, 10, -10, 2};
            int w;
            do w = p.a + p.b + deltas[rng() % 5];
            while (w < 0);
            return std::to_string(w);
        };
        auto write_split = [&](const std::string& name, const std::vector<Problem>& ps) {
            std::ofstream pre(data / ("pretrain_" + name + ".jsonl")), sft(data / ("sft_" + name + ".jsonl")),
                dpo(data / ("dpo_" + name + ".jsonl"));
            for (const Problem& p : ps) {
                pre << nlohmann::json{{"text", std::to_string(p.a) + " + " + std::to_string(p.b) + " = " + p.answer() + "."}}.dump() << '\n';
                sft << nlohmann::json{{"conversations", conversation(p.question(), p.answer())}}.dump() << '\n';
                dpo << nlohmann::json{{"chosen", conversation(p.question(), p.answer())},
                                      {"rejected", conversation(p.question(), wrong_answer(p))}}.dump() << '\n';
            }
        };
        write_split("train", train);
        write_split("val", val);
        std::vector<std::string> qs, as;
        for (const Problem& p : test) qs.push_back(p.question()), as.push_back(p.answer());
        write_lines(data / "test_prompts.txt", qs);
        write_lines(data / "test_answers.txt", as);
        std::printf("[1/6] data: %zu train, %zu val, %zu held-out test problems in %s\n", train.size(), val.size(),
                    test.size(), data.c_str());

        // ---- 2. tokenizer: the texts without digits, so that every digit stays a single byte token ------
        auto t0 = std::chrono::steady_clock::now();
        std::vector<std::string> texts;
        for (std::size_t i = 0; i < 500; ++i) {
            std::string s = train[i].question() + " " + std::to_string(train[i].a) + " + " + std::to_string(train[i].b) + " = .";
            s.erase(std::remove_if(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }), s.end());
            texts.push_back(s);
        }
        Tokenizer::TrainOptions to;
        to.vocab_size = 300;
        Tokenizer tok = Tokenizer::train_from_texts(texts, to);
        tok.save(tok_path);
        std::printf("[2/6] tokenizer: %d tokens (%.1f s); \"What is 23 + 45?\" -> %zu tokens\n", tok.vocab_size(),
                    seconds_since(t0), tok.encode("What is 23 + 45?").size());
        const int vocab = tok.vocab_size();

        // ---- 3. shards ----------------------------------------------------------------------------------
        t0 = std::chrono::steady_clock::now();
        PrepareOptions po;
        po.inputs = {(data / "pretrain_train.jsonl").string()};
        po.output_dir = data / "shards";
        po.val_fraction = 0.05;
        po.overwrite = true;
        po.progress = false;
        po.threads = threads;
        PrepareSummary prepared = prepare_data(po, tok);
        std::printf("[3/6] shards: %lld train tokens, %lld val tokens (%.1f s)\n", (long long)prepared.train.tokens,
                    (long long)prepared.val.tokens, seconds_since(t0));

        std::vector<std::pair<std::string, double>> results;
        std::vector<std::pair<std::string, double>> times;
        auto report = [&](const std::string& stage, Transformer<Net>& m, double secs) {
            std::string ex;
            const double acc = accuracy(m, tok, test, &ex);
            results.push_back({stage, acc});
            times.push_back({stage, secs});
            std::printf("==> %s: held-out exact match %.1f%% (%zu questions), stage time %.1f s\n%s", stage.c_str(),
                        100 * acc, test.size(), secs, ex.c_str());
            std::fflush(stdout);
        };
        auto finish_folder = [&](const fs::path& run) {
            fs::copy_file(tok_path, run / "final" / "tokenizer.json", fs::copy_options::overwrite_existing);
        };

        // ---- 4. pretraining -----------------------------------------------------------------------------
        std::printf("[4/6] pretrain: %d steps\n", pretrain_steps);
        t0 = std::chrono::steady_clock::now();
        const fs::path pre_run = out / "pretrain";
        {
            TrainConfig c = base_config(pre_run, tok_path, vocab, threads);
            c.train_data = prepared.train.pattern;
            c.val_data = prepared.val.pattern;
            c.max_steps = pretrain_steps;
            c.learning_rate = 3e-3;
            c.min_lr = 3e-4;
            c.warmup_steps = 30;
            Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, Pretrain> t(c);
            t.fit();
            finish_folder(pre_run);
            report("pretrained", t.model(), seconds_since(t0));
        }

        // ---- 5. SFT from the pretrained model -----------------------------------------------------------
        std::printf("[5/6] SFT: %d steps from %s\n", sft_steps, (pre_run / "final").c_str());
        t0 = std::chrono::steady_clock::now();
        const fs::path sft_run = out / "sft";
        {
            TrainConfig c = base_config(sft_run, tok_path, vocab, threads);
            c.train_data = (data / "sft_train.jsonl").string();
            c.val_data = (data / "sft_val.jsonl").string();
            c.init_from = (pre_run / "final").string();
            c.max_steps = sft_steps;
            c.learning_rate = 1e-3;
            c.min_lr = 1e-4;
            c.warmup_steps = 20;
            Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, SFT> t(c);
            t.fit();
            finish_folder(sft_run);
            report("SFT (full)", t.model(), seconds_since(t0));
        }

        // ---- 5b. LoRA from the pretrained model, on the SFT data ----------------------------------------
        std::printf("[5b/6] LoRA (rank 8, alpha 16, attention + MLP): %d steps from %s\n", lora_steps,
                    (pre_run / "final").c_str());
        t0 = std::chrono::steady_clock::now();
        const fs::path lora_run = out / "lora";
        {
            TrainConfig c = base_config(lora_run, tok_path, vocab, threads);
            c.train_data = (data / "sft_train.jsonl").string();
            c.val_data = (data / "sft_val.jsonl").string();
            c.init_from = (pre_run / "final").string();
            c.max_steps = lora_steps;
            c.learning_rate = 3e-3;
            c.min_lr = 3e-4;
            c.warmup_steps = 20;
            Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, LoRA8> t(c);
            t.fit();
            const double secs = seconds_since(t0);
            // Scored as chat --adapter runs it: a fresh base with the saved adapter folder merged in.
            Transformer<Net> merged(load_model_config(pre_run / "final"));
            load_pretrained(pre_run / "final", merged);
            merge_peft_adapter(lora_run / "final", merged);
            report("LoRA r8 (merged)", merged, secs);
        }

        // ---- 6. DPO from the SFT model ------------------------------------------------------------------
        std::printf("[6/6] DPO: %d steps from %s\n", dpo_steps, (sft_run / "final").c_str());
        t0 = std::chrono::steady_clock::now();
        const fs::path dpo_run = out / "dpo";
        {
            TrainConfig c = base_config(dpo_run, tok_path, vocab, threads);
            c.train_data = (data / "dpo_train.jsonl").string();
            c.val_data = (data / "dpo_val.jsonl").string();
            c.init_from = (sft_run / "final").string();
            c.max_steps = dpo_steps;
            c.learning_rate = 5e-5;
            c.min_lr = 5e-6;
            c.warmup_steps = 10;
            c.dpo_beta = 0.1;
            c.log_interval = 25;
            Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, DPO> t(c);
            t.fit();
            finish_folder(dpo_run);
            report("DPO (from SFT)", t.model(), seconds_since(t0));
        }

        std::printf("\nsummary (held-out exact match, greedy, %zu questions):\n", test.size());
        for (std::size_t i = 0; i < results.size(); ++i)
            std::printf("  %-18s %5.1f%%   (%.1f s)\n", results[i].first.c_str(), 100 * results[i].second, times[i].second);
        std::printf("total time %.1f s; try: chat --checkpoint %s --prompts %s\n", seconds_since(t_all),
                    (sft_run / "final").c_str(), (data / "test_prompts.txt").c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
