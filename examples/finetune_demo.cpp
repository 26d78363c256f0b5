// finetune_demo: the whole fine-tuning pipeline on a task whose answers can be checked exactly.
//
//   finetune_demo [--out_dir runs/finetune_demo] [--threads 2] [--reuse_pretrain 1] [--sft_lr ...]
//
// What it shows is what the MiniMind pipeline is for: pretraining puts knowledge into the model,
// fine-tuning teaches it to answer questions with that knowledge. The knowledge is the times table
// from 1 x 1 to 24 x 24 (576 facts); the questions are asked in ChatML. The demo writes, in one process:
//   data/pretrain_train.jsonl        every fact 20 times, in four wordings ("7 x 8 = 56.", "7 times 8 is
//                                    56.", ...), plus, as web text has, question-and-answer lines
//                                    ("Q: What is 7 x 8? A: 56.") for the facts that are neither held out
//                                    nor in the rl split
//   data/sft_{train,val}.jsonl       {"conversations": [user "What is 7 x 8?", assistant "56"]}
//   data/rl_train.jsonl              the same for the rl split (--rl_facts, empty by default): prompts and
//                                    answers for --grpo_data rl, about facts that pretraining states but
//                                    (as the held-out ones) never asks
//   data/dpo_{train,val}.jsonl       {"chosen": [... "56"], "rejected": [... a near miss: a neighbouring
//                                    entry of the table, 48 or 63, or the answer off by one or ten]}
//   data/rm_test_pairs.jsonl         the same pairs for the held-out questions (the reward model's second score)
//   data/test_prompts.txt            held-out questions: facts the model read in pretraining but was never
//   data/test_answers.txt            asked about in any fine-tuning file (chat --prompts answers the first)
// then runs tokenizer training -> shards -> Pretrain -> SFT (from the pretrained final/) -> LoRA (rank 8,
// attention + MLP, on the SFT data, from the pretrained model) -> DPO (from the SFT model) -> GRPO (CISPO
// loss, from the SFT model, the exact-match reward on the training questions; it prints the reward curve)
// -> a reward model (the SFT model + a scalar head, Bradley-Terry loss on the DPO pairs, or --rm_data on
// the SFT model's own samples; held-out pair accuracy, and with --rm_samples how it ranks the SFT model's
// samples) -> GRPO again with that model's score as the reward; with step 4b's distillation of two small
// students (the pretrained model as teacher vs hard labels alone), and after each stage prints the exact-match accuracy of greedy (temperature 0) replies on the held-out
// questions, using the same ChatSession as examples/chat.cpp. The LoRA stage is scored the way
// chat --adapter runs it: the adapter folder merged into a freshly loaded base.
//
// The pretrained model knows the held-out facts (it completes "Q: What is 7 x 8? A:" as plain text, and
// the demo prints how often correctly) but has never seen a ChatML conversation, so it cannot answer
// one; a fine-tuned model answers questions about facts that no fine-tuning example contained only if
// fine-tuning taught it to use what pretraining stored rather than memorize its own examples.
//
// --task add replaces the times table by sums of two numbers 0..--add_max (10,000 at the default 99): pretraining
// states every sum except the held-out and rl ones, so those must be computed, not remembered, and
// what GRPO's reward teaches on the rl prompts (carrying, digit by digit) is what the held-out
// questions need. The DPO pairs' rejected reply is the right one with one digit changed (--add_slip), and
// data/rm_test_pairs.jsonl holds such pairs for the held-out questions, read only to score the reward model.
// A run where GRPO lifts held-out exact match clearly above SFT (85.3% -> 89.3-95.3% over three seeds;
// benchmarks/RESULTS.md, session 10), about 10 minutes on 2 cores with the other stages off:
//   finetune_demo --task add --test 1000 --rl_facts 1300 --pretrain_steps 5000 --restate 1 --sft_steps 2000
//     --grpo_data rl --grpo_reward final_number --grpo_temperature 1.0 --grpo_prompts 16 --grpo_steps 400
//     --lora_steps 0 --dpo_steps 0 --distill_steps 0 --rm_steps 0
//
// Tokenizer: trained on the texts with the digits removed, so no merge involves a digit and every digit
// is one token. The model is the "tiny" preset (4 layers x 128). Sized to finish in about five minutes
// on 2 cores; --reuse_pretrain 1 re-runs only the fine-tuning stages on an earlier run's pretrained model.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <minitrain/minitrain.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/train/distill.hpp>
#include <minitrain/train/dpo.hpp>
#include <minitrain/train/grpo.hpp>
#include <minitrain/train/reward.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

using Net = TinyBenchModel;  // the "tiny" preset
using LoRA8 = LoRA<8, 16, LoRAAttentionMLP, SFT>;

/// One question of the task: a product of the times table (op 'x', a fact to remember) or, with --task add,
/// a sum (op '+', an answer to compute digit by digit).
struct Problem {
    int a, b;
    char op = 'x';
    bool sum() const { return op == '+'; }
    std::string expression() const { return std::to_string(a) + " " + op + " " + std::to_string(b); }
    std::string question() const { return "What is " + expression() + "?"; }
    std::string answer() const { return std::to_string(sum() ? a + b : a * b); }
    /// The reply with its working shown: the question restated in the pretraining text's own words.
    std::string restated(const std::string& result) const { return expression() + " = " + result; }
    /// The fact in one of four wordings.
    std::string statement(int wording = 0) const {
        const std::string x = std::to_string(a), y = std::to_string(b);
        switch (wording) {
            case 1: return x + (sum() ? " plus " : " times ") + y + " is " + answer() + ".";
            case 2: return (sum() ? "The sum of " : "The product of ") + x + " and " + y + " is " + answer() + ".";
            case 3: return (sum() ? "Adding " + x + " and " : "Multiplying " + x + " by ") + y + " gives " + answer() + ".";
            default: return expression() + " = " + answer() + ".";
        }
    }
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

/// A reply is right when it is the answer, bare ("56") or after the question restated ("7 x 8 = 56").
bool right_answer(const std::string& reply, const Problem& p) {
    return reply == p.answer() || reply == p.restated(p.answer());
}

/// A reply that restates the question before answering: "7 x 8 = 56".
bool restates(const std::string& reply) { return reply.find(" = ") != std::string::npos; }

struct Score {
    double accuracy = 0;      // right replies (right_answer)
    double restated = 0;      // replies that restate the question first
    std::vector<char> right;  // per question: 1 if the reply was right
};

/// Two models on the same questions: how many the second fixes and breaks, and the exact two-sided sign
/// test (McNemar's, exact) on those discordant questions: the chance of a split this uneven if neither model
/// were better. Questions both get right or both get wrong say nothing about which is better.
struct Paired {
    int fixed = 0, broken = 0;
    double p_value = 1;
};

Paired compare_paired(const Score& before, const Score& after) {
    MT_CHECK(before.right.size() == after.right.size(), "compare_paired: ", before.right.size(), " and ",
             after.right.size(), " questions");
    Paired r;
    for (std::size_t i = 0; i < before.right.size(); ++i) {
        r.fixed += !before.right[i] && after.right[i];
        r.broken += before.right[i] && !after.right[i];
    }
    const int n = r.fixed + r.broken, k = std::min(r.fixed, r.broken);
    double tail = 0, term = std::pow(0.5, n);  // P(X = 0) for X ~ Binomial(n, 1/2), then P(X = i) by recurrence
    for (int i = 0; i <= k; ++i) {
        tail += term;
        term *= double(n - i) / double(i + 1);
    }
    r.p_value = std::min(1.0, 2 * tail);
    return r;
}

/// Exact-match accuracy of greedy replies on the given problems (held-out, or GRPO's rl split).
Score accuracy(Transformer<Net>& model, const Tokenizer& tok, const std::vector<Problem>& test, std::string* example) {
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 16;
    ChatSession<Net> chat(model, ChatTemplate(tok), o);
    Score s;
    int restated = 0;
    for (std::size_t i = 0; i < test.size(); ++i) {
        chat.reset();
        const std::string got = chat.reply(test[i].question());
        s.right.push_back(right_answer(got, test[i]));
        restated += restates(got);
        if (i < 3 && example) *example += "  " + test[i].question() + " -> \"" + got + "\" (want " + test[i].answer() + ")\n";
    }
    s.accuracy = double(std::count(s.right.begin(), s.right.end(), 1)) / double(test.size());
    s.restated = double(restated) / double(test.size());
    return s;
}

/// How a reward model ranks the policy's own replies: G samples per question at temperature 1, and over
/// the questions with both right and wrong samples, every (right, wrong) pair of them. What GRPO's group
/// advantage is made of, unlike pairs with a planted slip.
struct SampleRanking {
    int mixed = 0;             // questions with a right and a wrong sample
    long pairs = 0, wins = 0;  // (right, wrong) pairs, and those the model scores right above wrong
    double accuracy() const { return pairs ? double(wins) / double(pairs) : std::nan(""); }  // no pairs: no number
};

/// G replies of `policy` to `question` at temperature 1, seeded (seed, i).
std::vector<std::string> sample_replies(Transformer<Net>& policy, const Tokenizer& tok, const std::string& question, int G,
                                        std::uint64_t seed) {
    std::vector<std::string> replies;
    for (int i = 0; i < G; ++i) {
        SampleOptions o;
        o.temperature = 1.0;
        o.max_new_tokens = 16;
        o.seed = hash64(seed, std::uint64_t(i));
        ChatSession<Net> chat(policy, ChatTemplate(tok), o);
        replies.push_back(chat.reply(question));
    }
    return replies;
}

SampleRanking rank_samples(Transformer<Net>& policy, const Tokenizer& tok, RewardModelScorer<Net, CPU>& rm,
                           const std::vector<Problem>& questions, int G) {
    SampleRanking r;
    for (std::size_t q = 0; q < questions.size(); ++q) {
        const std::string prompt =
            render_chatml(Conversation{{Role::user, questions[q].question()}}) + "<|im_start|>assistant\n";
        std::vector<std::pair<double, bool>> scored;  // (score, right) per sample
        for (const std::string& reply : sample_replies(policy, tok, questions[q].question(), G, q))
            scored.push_back({rm.score(prompt, reply), right_answer(reply, questions[q])});
        long pairs = 0;
        for (const auto& [right_score, right] : scored)
            for (const auto& [wrong_score, wrong_right] : scored)
                if (right && !wrong_right) ++pairs, r.wins += right_score > wrong_score;
        r.pairs += pairs;
        r.mixed += pairs > 0;
    }
    return r;
}

/// The same for the pretraining text's own question format, "Q: What is 7 x 8? A: 56.", completed
/// greedily after an end-of-text token: what the model knows, whatever it can say in a conversation.
template <ModelPolicy M>
double text_accuracy(Transformer<M>& model, const Tokenizer& tok, const std::vector<Problem>& test) {
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 6;
    int right = 0;
    for (const Problem& p : test) {
        std::vector<std::int32_t> prompt = tok.encode("<|endoftext|>Q: " + p.question() + " A:");
        std::string got = tok.decode(generate(model, prompt, o));
        got = got.substr(0, got.find('.'));
        got.erase(0, got.find_first_not_of(' '));
        right += got == p.answer();
    }
    return double(right) / double(test.size());
}

/// `text` with one of its digits written as another (never a new leading zero): a slip anywhere in a reply,
/// in the sum or, when the reply restates the question, in an operand ("53 + 66 = 119" -> "53 + 86 = 119").
std::string digit_slip(std::string text, std::mt19937_64& rng) {
    auto digit = [&](std::size_t i) { return i < text.size() && text[i] >= '0' && text[i] <= '9'; };
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < text.size(); ++i)
        if (digit(i)) at.push_back(i);
    MT_CHECK(!at.empty(), "digit_slip: no digit in '", text, "'");
    const std::size_t i = at[rng() % at.size()];
    const bool leading = (i == 0 || !digit(i - 1)) && digit(i + 1);
    char c;
    do c = char('0' + rng() % 10);
    while (c == text[i] || (leading && c == '0'));
    text[i] = c;
    return text;
}

/// Preference pairs from the policy's own replies (--rm_data samples): G samples per question at
/// temperature 1, labelled by the question's answer; each distinct wrong one is rejected against a right
/// one (a right sample when there is one, else the answer, restated when `restate`). A question with no
/// wrong sample gets one pair with a digit slip of its right reply, so that every question is in the file.
/// Returns the pairs.
int write_sample_pairs(const fs::path& path, Transformer<Net>& policy, const Tokenizer& tok,
                       const std::vector<Problem>& questions, int G, bool restate, std::uint64_t seed) {
    std::ofstream out(path);
    std::mt19937_64 rng(seed);
    int n = 0;
    for (std::size_t q = 0; q < questions.size(); ++q) {
        const Problem& p = questions[q];
        const std::vector<std::string> replies = sample_replies(policy, tok, p.question(), G, hash64(seed, q));
        std::string chosen = restate ? p.restated(p.answer()) : p.answer();
        std::vector<std::string> wrong;
        for (const std::string& r : replies)
            if (right_answer(r, p)) chosen = r;
            else if (std::find(wrong.begin(), wrong.end(), r) == wrong.end()) wrong.push_back(r);
        if (wrong.empty()) wrong.push_back(digit_slip(chosen, rng));
        for (const std::string& r : wrong)
            out << nlohmann::json{{"chosen", conversation(p.question(), chosen)},
                                  {"rejected", conversation(p.question(), r)}}.dump() << '\n', ++n;
    }
    MT_CHECK(out, path.string(), ": write failed");
    return n;
}

/// `out` as the files `parts`, one after another.
void concatenate(const fs::path& out, std::initializer_list<fs::path> parts) {
    std::ofstream o(out);
    for (const fs::path& f : parts) o << std::ifstream(f).rdbuf();
    MT_CHECK(o, out.string(), ": write failed");
}

/// What every stage shares, and its own data, length and learning rate (warmup, then cosine to a tenth).
TrainConfig stage_config(const fs::path& out, const fs::path& tok_path, int vocab, int threads,
                         const std::string& train_data, const std::string& val_data, int steps, double lr,
                         int warmup) {
    TrainConfig c;
    c.train_data = train_data;
    c.val_data = val_data;
    c.max_steps = steps;
    c.learning_rate = lr;
    c.min_lr = lr / 10;
    c.warmup_steps = warmup;
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
        int threads = 2, pretrain_steps = 1500, sft_steps = 600, lora_steps = 600, dpo_steps = 100, n_test = 150;
        double sft_lr = 3e-3, lora_lr = 3e-3, dpo_lr = 1e-5, dpo_beta = 0.1;
        // Two experiments on what GRPO can teach here (benchmarks/RESULTS.md, session 8), off by default:
        //  * --rl_facts N: N facts that pretraining states but, like the held-out ones, never asks, whose
        //    questions are GRPO's prompts with --grpo_data rl (the SFT model is often wrong there);
        //  * --restate F: a share F of SFT's replies restate the question first ("7 x 8 = 56", the pretraining
        //    text's own words) instead of the bare answer ("56"); with --grpo_reward final_number GRPO's
        //    reward reads the final number of either, so it may learn which habit answers better.
        int n_rl = 0;
        double restate_fraction = 0, restate_bonus = 0;
        // --task add: sums a + b of operands 0..add_max instead of the times table. A sum is computed, not
        // remembered: the held-out and rl problems appear in no file but their own, so what GRPO's reward
        // teaches on its prompts (carrying, digit by digit) is what the held-out questions need.
        std::string task = "times";
        int add_max = 99;
        std::string add_slip = "digit";  // carry slips alone: the reward model stays at chance (RESULTS.md, session 10)
        int grpo_steps = 30, grpo_prompts = 8, grpo_samples = 6;
        double grpo_lr = 1e-4, grpo_beta = 0.02, grpo_temperature = 2.0;  // at 1.0 every sample of the SFT model on its training questions is right: no signal
        std::string grpo_loss = "cispo", grpo_reward = "exact_match";
        std::uint64_t grpo_seed = 42;  // TrainConfig's default
        std::string grpo_data = "train";  // which questions GRPO's prompts are: SFT's train split, its val split, both, or the rl split
        // Distillation: a "test"-preset student (2 layers x 32) from the pretrained teacher vs the same student
        // on the hard labels alone, same steps, data, lr and seed.
        int distill_steps = 300;
        double distill_lr = 3e-3, distill_alpha = 0.5, distill_temperature = 1.5;
        std::uint64_t distill_seed = 11;  // the initial student, the same for both
        // A reward model (the SFT model + a scalar head, Bradley-Terry loss) on the DPO pairs, then GRPO with it.
        int rm_steps = 100, rm_samples = 0;
        double rm_lr = 3e-4;
        std::string rm_data = "dpo";  // or "samples": the SFT model's own replies to the rl questions, or both
        bool grpo_rule = true;
        std::string rm_pooling = "mean";  // 87.5% of held-out slip pairs right, "last" 69.7% (RESULTS.md, session 11)
        std::string rm_line;
        bool reuse_pretrain = false, reuse_sft = false, data_only = false;
        std::uint64_t seed = 7;
        Flags flags("finetune_demo", "Pretrain -> SFT -> LoRA -> DPO -> GRPO on the times table (or, --task add, on sums), "
                                     "with held-out accuracy after each stage. A few minutes on 2 CPU cores.");
        flags.bind("out_dir", out_dir, "where the data, tokenizer and the four runs go");
        flags.bind_choice("task", task, {"times", "add"}, "times: the times table 1..24 (facts, remembered from "
                          "pretraining); add: sums of two numbers 0..add_max (computed; held-out and rl sums are in no "
                          "pretraining or fine-tuning file)");
        flags.bind("add_max", add_max, "--task add: the largest operand");
        flags.bind_choice("add_slip", add_slip, {"digit", "carry"}, "--task add: the DPO and reward-model pairs' rejected "
                          "reply: the right one with one digit written as another (an operand it restates, or the "
                          "sum), or a carry slip in the sum (plus or minus 1 or 10)");
        flags.bind("threads", threads, "CPU threads (0: all cores)");
        flags.bind("pretrain_steps", pretrain_steps, "pretraining steps (32 x 48 tokens)");
        flags.bind("sft_steps", sft_steps, "SFT steps (32 conversations)");
        flags.bind("lora_steps", lora_steps, "LoRA steps (32 conversations; 0: skip)");
        flags.bind("dpo_steps", dpo_steps, "DPO steps (32 pairs; 0: skip)");
        flags.bind("sft_lr", sft_lr, "SFT peak learning rate (warmup, cosine to a tenth)");
        flags.bind("lora_lr", lora_lr, "LoRA peak learning rate");
        flags.bind("dpo_lr", dpo_lr, "DPO peak learning rate");
        flags.bind("dpo_beta", dpo_beta, "DPO beta");
        flags.bind("restate", restate_fraction, "share of the SFT and DPO replies that restate the question before the "
                   "answer (\"7 x 8 = 56\"; the others: \"56\")");
        flags.bind("restate_bonus", restate_bonus, "GRPO (step 7): add this to the reward of a reply that starts with its "
                   "question restated exactly (0: the rule reward alone)");
        flags.bind("rl_facts", n_rl, "facts stated in pretraining but never asked (as the held-out ones), whose questions are "
                   "GRPO's prompts (--grpo_data rl)");
        flags.bind("grpo_steps", grpo_steps, "GRPO steps from the SFT model, --grpo_reward on its prompts' answers (0: skip)");
        flags.bind("grpo_prompts", grpo_prompts, "GRPO prompts per step");
        flags.bind("grpo_samples", grpo_samples, "GRPO samples per prompt");
        flags.bind("grpo_lr", grpo_lr, "GRPO learning rate (constant)");
        flags.bind("grpo_beta", grpo_beta, "GRPO KL penalty to the SFT model");
        flags.bind("grpo_temperature", grpo_temperature, "GRPO sampling temperature (on the train split every sample at 1.0 "
                   "is right, no signal: hence 2.0)");
        flags.bind("grpo_reward", grpo_reward, "GRPO's rule reward (exact_match; final_number reads the reply's last number, "
                   "for --restate)");
        flags.bind("grpo_loss", grpo_loss, "cispo or grpo");
        flags.bind("grpo_seed", grpo_seed, "GRPO's seed: the order of its prompts and its samples (both GRPO stages)");
        flags.bind_choice("grpo_data", grpo_data, {"train", "val", "train+val", "rl"},
                          "GRPO's prompts: the rl split (--rl_facts: facts pretraining states but never asks), the SFT "
                          "training questions, the SFT validation questions (never trained on, but asked in "
                          "pretraining), or both of those; never the held-out test questions");
        flags.bind("distill_steps", distill_steps, "distillation demo: steps of each of the two small students (0: skip)");
        flags.bind("distill_lr", distill_lr, "distillation demo: peak learning rate of both students");
        flags.bind("distill_alpha", distill_alpha, "distillation demo: weight of the hard labels (MiniMind: 0.5)");
        flags.bind("distill_temperature", distill_temperature, "distillation demo: temperature (MiniMind: 1.5)");
        flags.bind("distill_seed", distill_seed, "distillation demo: the seed of the initial student (the same for both)");
        flags.bind("rm_steps", rm_steps, "reward model steps (8 DPO pairs each) from the SFT model, then GRPO with its score as the "
                   "reward (grpo_steps, same settings; 0: skip both)");
        flags.bind("rm_lr", rm_lr, "reward model peak learning rate");
        flags.bind_choice("rm_data", rm_data, {"dpo", "samples", "dpo+samples"}, "the reward model's training pairs: the "
                          "DPO pairs (the answer vs a slip, on the SFT questions), the SFT model's own replies to the rl "
                          "questions (--rl_facts), 6 per question at temperature 1, each wrong one against a right one, or both");
        flags.bind("grpo_rule", grpo_rule, "run step 7 (GRPO with the rule reward; 0: only step 8's reward-model GRPO)");
        flags.bind_choice("rm_pooling", rm_pooling, {"last", "mean"}, "where the reward model's head reads a reply: its "
                          "last token, or the mean over its tokens");
        flags.bind("rm_samples", rm_samples, "also score the reward model on the SFT model's own samples: this many per "
                   "held-out question at temperature 1, how often it ranks a right one above a wrong one (0: skip)");
        flags.bind("reuse_pretrain", reuse_pretrain, "skip pretraining: fine-tune the model already in OUT_DIR/pretrain/final");
        flags.bind("reuse_sft", reuse_sft, "skip SFT too: the later stages start from OUT_DIR/sft/final (with --reuse_pretrain 1)");
        flags.bind("test", n_test, "held-out questions");
        flags.bind("seed", seed, "data split seed");
        flags.bind("data_only", data_only, "write the data files (step 1) and stop: the corpus for the stage programs");
        flags.parse(argc, argv);
        if (threads > 0) CPU::set_threads(threads);
        const auto t_all = std::chrono::steady_clock::now();
        const fs::path out = out_dir, data = out / "data", tok_path = out / "tokenizer.json";
        fs::create_directories(data);

        // ---- 1. data ---------------------------------------------------------------------------------
        const bool adding = task == "add";
        MT_CHECK(!adding || (add_max >= 9 && add_max <= 999), "--add_max ", add_max, ": expected 9..999");
        std::vector<Problem> all;
        if (adding) {
            for (int a = 0; a <= add_max; ++a)
                for (int b = 0; b <= add_max; ++b) all.push_back({a, b, '+'});
        } else {
            for (int a = 1; a <= 24; ++a)
                for (int b = 1; b <= 24; ++b) all.push_back({a, b});
        }
        std::mt19937_64 rng(seed);
        std::shuffle(all.begin(), all.end(), rng);
        MT_CHECK(n_test >= 1 && n_test <= int(all.size()) / 2, "--test ", n_test, ": must be between 1 and ",
                 all.size() / 2, " (half of the ", all.size(), " facts)");
        MT_CHECK(n_rl >= 0 && n_test + n_rl <= int(all.size()) / 2, "--rl_facts ", n_rl, ": with --test ", n_test,
                 " at most ", all.size() / 2 - n_test, " (held-out and rl facts together at most half of the ", all.size(),
                 " facts)");
        MT_CHECK(restate_fraction >= 0 && restate_fraction <= 1, "--restate ", restate_fraction, ": expected a share in [0, 1]");
        MT_CHECK(n_rl > 0 || grpo_data != "rl" || grpo_steps == 0, "--grpo_data rl needs --rl_facts > 0");
        MT_CHECK(rm_samples == 0 || rm_samples >= 2, "--rm_samples ", rm_samples, ": expected 0 (off) or at least 2 (a "
                 "ranking needs a right and a wrong sample of one question)");
        {  // pretraining text: every fact in 20 statements of varied wording (the held-out facts included),
           // and, as web text has, question-and-answer lines for the facts that are neither held out nor in
           // the rl split. --task add: every sum but the held-out and rl ones, once stated, once asked.
            std::vector<std::string> docs;
            for (std::size_t i = adding ? std::size_t(n_test + n_rl) : 0; i < all.size(); ++i)
                for (int c = 0; c < (adding ? 1 : 20); ++c) {
                    docs.push_back(all[i].statement(int(rng() % 4)));
                    if (int(i) >= n_test + n_rl && c % 4 == 0)
                        docs.push_back("Q: " + all[i].question() + " A: " + all[i].answer() + ".");
                }
            std::shuffle(docs.begin(), docs.end(), rng);
            std::ofstream pre(data / "pretrain_train.jsonl");
            for (const std::string& d : docs) pre << nlohmann::json{{"text", d}}.dump() << '\n';
        }
        const std::vector<Problem> test(all.begin(), all.begin() + n_test);
        const std::vector<Problem> rl(all.begin() + n_test, all.begin() + n_test + n_rl);
        const std::vector<Problem> val(all.begin() + n_test + n_rl, all.begin() + n_test + n_rl + 50);
        const std::vector<Problem> train(all.begin() + n_test + n_rl + 50, all.end());
        auto wrong_answer = [&](const Problem& p) {
            int w;
            if (p.sum()) {  // a carry dropped or added (--add_slip carry)
                const int deltas[] = {1, -1, 10, -10};
                do w = p.a + p.b + deltas[rng() % 4];
                while (w < 0);
            } else {
                const int deltas[] = {p.a, -p.a, p.b, -p.b, 1, -1, 10, -10};  // a table neighbour, or a slip
                do w = p.a * p.b + deltas[rng() % 8];
                while (w <= 0);
            }
            return std::to_string(w);
        };
        auto write_conversations = [&](const fs::path& p, const std::vector<Problem>& ps) {  // bare answers
            std::ofstream o(p);
            for (const Problem& q : ps) o << nlohmann::json{{"conversations", conversation(q.question(), q.answer())}}.dump() << '\n';
            MT_CHECK(o, p.string(), ": write failed");
        };
        // DPO pairs (the answer vs a slip) into `pairs_file`, and the SFT conversations into `sft_file` unless it is empty.
        auto write_split = [&](const std::vector<Problem>& ps, const std::string& pairs_file, const std::string& sft_file) {
            std::ofstream sft, dpo(data / pairs_file);
            if (!sft_file.empty()) sft.open(data / sft_file);
            for (const Problem& p : ps) {
                const bool restate = restate_fraction > 0 && double(rng() % 1000) < 1000 * restate_fraction;
                auto reply = [&](const std::string& result) { return restate ? p.restated(result) : result; };
                if (sft.is_open())
                    sft << nlohmann::json{{"conversations", conversation(p.question(), reply(p.answer()))}}.dump() << '\n';
                const std::string rejected = p.sum() && add_slip == "digit" ? digit_slip(reply(p.answer()), rng)
                                                                            : reply(wrong_answer(p));
                dpo << nlohmann::json{{"chosen", conversation(p.question(), reply(p.answer()))},
                                      {"rejected", conversation(p.question(), rejected)}}.dump() << '\n';
            }
        };
        write_split(train, "dpo_train.jsonl", "sft_train.jsonl");
        write_split(val, "dpo_val.jsonl", "sft_val.jsonl");
        write_conversations(data / "rl_train.jsonl", rl);  // GRPO's prompts, the answer as the rewards' reference
        std::vector<std::string> qs, as;
        for (const Problem& p : test) qs.push_back(p.question()), as.push_back(p.answer());
        write_lines(data / "test_prompts.txt", qs);
        write_lines(data / "test_answers.txt", as);
        // Pairs on the held-out questions, read only by the reward model's evaluation (step 8): how well it judges
        // answers it never read, as GRPO's samples on the rl prompts are. Written last: the files above do not change.
        write_split(test, "rm_test_pairs.jsonl", "");
        const char* what = adding ? "sums (held-out and rl ones in no other file)" : "facts stated for pretraining";
        std::printf("[1/8] data: %zu %s; questions: %zu train, %zu val, %zu rl (GRPO), %zu held out, in %s\n", all.size(),
                    what, train.size(), val.size(), rl.size(), test.size(), data.c_str());
        if (data_only) return 0;

        // ---- 2. tokenizer: the texts without digits, so that every digit stays a single byte token ------
        auto t0 = std::chrono::steady_clock::now();
        std::vector<std::string> texts;
        for (const Problem& p : train) {
            std::string s = "Q: " + p.question() + " A: .";
            for (int w = 0; w < 4; ++w) s += " " + p.statement(w);
            s.erase(std::remove_if(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }), s.end());
            texts.push_back(s);
        }
        Tokenizer::TrainOptions to;
        to.vocab_size = 300;
        Tokenizer tok = Tokenizer::train_from_texts(texts, to);
        tok.save(tok_path);
        std::printf("[2/8] tokenizer: %d tokens (%.1f s); \"%s\" -> %zu tokens\n", tok.vocab_size(),
                    seconds_since(t0), test[0].question().c_str(), tok.encode(test[0].question()).size());
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
        std::printf("[3/8] shards: %lld train tokens, %lld val tokens (%.1f s)\n", (long long)prepared.train.tokens,
                    (long long)prepared.val.tokens, seconds_since(t0));

        struct StageResult {
            std::string stage;
            Score score;  // on the held-out questions
            double seconds;
        };
        std::vector<StageResult> results;
        auto report = [&](const std::string& stage, Transformer<Net>& m, double secs) -> Score {
            std::string ex;
            const Score score = accuracy(m, tok, test, &ex);
            const double acc = score.accuracy;
            results.push_back({stage, score, secs});
            std::string habit;  // with --restate: how often the model shows its working
            if (restate_fraction > 0) habit = "; " + std::to_string(int(100 * score.restated + 0.5)) + "% restate the question";
            std::printf("==> %s: held-out exact match %.1f%% (%zu questions%s), stage time %.1f s\n%s", stage.c_str(), 100 * acc,
                        test.size(), habit.c_str(), secs, ex.c_str());
            std::fflush(stdout);
            return score;
        };
        auto finish_folder = [&](const fs::path& run) {
            fs::copy_file(tok_path, run / "final" / "tokenizer.json", fs::copy_options::overwrite_existing);
        };

        // ---- 4. pretraining -----------------------------------------------------------------------------
        t0 = std::chrono::steady_clock::now();
        const fs::path pre_run = out / "pretrain";
        auto report_pretrained = [&](Transformer<Net>& m) {
            report("pretrained", m, seconds_since(t0));
            std::printf("    (the same model completing \"Q: <question> A:\" as plain text: %.1f%% of the held-out facts)\n",
                        100 * text_accuracy(m, tok, test));
        };
        const std::string sft_train = (data / "sft_train.jsonl").string(), sft_val = (data / "sft_val.jsonl").string();
        if (reuse_pretrain) {
            std::printf("[4/8] pretrain: reusing %s\n", (pre_run / "final").c_str());
            Transformer<Net> m(load_model_config(pre_run / "final"));
            load_pretrained(pre_run / "final", m);
            report_pretrained(m);
        } else {
            std::printf("[4/8] pretrain: %d steps\n", pretrain_steps);
            TrainConfig c = stage_config(pre_run, tok_path, vocab, threads, prepared.train.pattern,
                                         prepared.val.pattern, pretrain_steps, 3e-3, 30);
            Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, Pretrain> t(c);
            t.fit();
            finish_folder(pre_run);
            report_pretrained(t.model());
        }

        // ---- 4b. distillation: a smaller student from the pretrained teacher vs hard labels alone ----------
        std::vector<std::string> distill_lines;
        if (distill_steps > 0) {
            using Student = TinyModel;  // the "test" preset: 2 layers x 32, vs the teacher's 4 x 128
            std::printf("[4b] distillation: two \"test\"-preset students, %d steps each, from scratch on the pretraining "
                        "shards: teacher %s (alpha %g, T %g) vs the hard labels alone\n", distill_steps,
                        (pre_run / "final").c_str(), distill_alpha, distill_temperature);
            auto student_config = [&](const fs::path& run) {
                TrainConfig c = stage_config(run, tok_path, vocab, threads, prepared.train.pattern, prepared.val.pattern,
                                             distill_steps, distill_lr, 30);
                c.eval_batches = 0;  // the whole validation split: the two numbers are compared
                c.init_seed = distill_seed;  // the same initial student for both
                fs::remove_all(run);
                return c;
            };
            auto line = [&](const char* what, const EvalResult& v, double acc, double secs) {
                char b[256];
                std::snprintf(b, sizeof b, "  %-28s val loss %.4f (ppl %.2f), held-out text exact match %5.1f%%, %.1f s",
                              what, v.loss, v.perplexity, 100 * acc, secs);
                distill_lines.push_back(b);
                std::printf("==> %s\n", b);
                std::fflush(stdout);
            };
            t0 = std::chrono::steady_clock::now();
            {
                TrainConfig c = student_config(out / "student_hard");
                Trainer<Student, Optimizer<AdamW>, Schedule<WarmupCosine>, Pretrain> t(c);
                t.fit();
                line("student, hard labels", t.evaluate(), text_accuracy(t.model(), tok, test), seconds_since(t0));
            }
            t0 = std::chrono::steady_clock::now();
            {
                TrainConfig c = student_config(out / "student_distilled");
                c.teacher = (pre_run / "final").string();
                c.distill_alpha = distill_alpha;
                c.distill_temperature = distill_temperature;
                Trainer<Student, Optimizer<AdamW>, Schedule<WarmupCosine>, Distill<Net, Pretrain>> t(c);
                t.fit();
                line("student, distilled", t.evaluate(), text_accuracy(t.model(), tok, test), seconds_since(t0));
            }
        }

        // ---- 5. SFT from the pretrained model -----------------------------------------------------------
        std::printf("[5/8] SFT: %d steps from %s\n", sft_steps, (pre_run / "final").c_str());
        t0 = std::chrono::steady_clock::now();
        const fs::path sft_run = out / "sft";
        double sft_rl_accuracy = 0;  // the SFT model on the rl split's questions: where GRPO starts
        Score sft_score;             // ... and on the held-out ones, question by question
        if (reuse_sft) {
            Transformer<Net> m(load_model_config(sft_run / "final"));
            load_pretrained(sft_run / "final", m);
            sft_score = report("SFT (full, reused)", m, 0.0);
            if (!rl.empty()) sft_rl_accuracy = accuracy(m, tok, rl, nullptr).accuracy;
        } else {
            TrainConfig c = stage_config(sft_run, tok_path, vocab, threads, sft_train, sft_val, sft_steps, sft_lr, 20);
            c.init_from = (pre_run / "final").string();
            Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, SFT> t(c);
            t.fit();
            finish_folder(sft_run);
            sft_score = report("SFT (full)", t.model(), seconds_since(t0));
            if (!rl.empty()) sft_rl_accuracy = accuracy(t.model(), tok, rl, nullptr).accuracy;
        }

        // ---- 5b. LoRA from the pretrained model, on the SFT data ----------------------------------------
        if (lora_steps > 0) {
            std::printf("[5b/8] LoRA (rank 8, alpha 16, attention + MLP): %d steps from %s\n", lora_steps,
                        (pre_run / "final").c_str());
            t0 = std::chrono::steady_clock::now();
            const fs::path lora_run = out / "lora";
            {
                TrainConfig c = stage_config(lora_run, tok_path, vocab, threads, sft_train, sft_val, lora_steps, lora_lr, 20);
                c.init_from = (pre_run / "final").string();
                Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, LoRA8> t(c);
                t.fit();
                const double secs = seconds_since(t0);
                // Scored as chat --adapter runs it: a fresh base with the saved adapter folder merged in.
                Transformer<Net> merged(load_model_config(pre_run / "final"));
                load_pretrained(pre_run / "final", merged);
                merge_peft_adapter(lora_run / "final", merged);
                report("LoRA r8 (merged)", merged, secs);
            }
        }

        // ---- 6. DPO from the SFT model ------------------------------------------------------------------
        if (dpo_steps > 0) {
            std::printf("[6/8] DPO: %d steps from %s\n", dpo_steps, (sft_run / "final").c_str());
            t0 = std::chrono::steady_clock::now();
            const fs::path dpo_run = out / "dpo";
            {
                TrainConfig c = stage_config(dpo_run, tok_path, vocab, threads, (data / "dpo_train.jsonl").string(),
                                             (data / "dpo_val.jsonl").string(), dpo_steps, dpo_lr, 10);
                c.init_from = (sft_run / "final").string();
                c.dpo_beta = dpo_beta;
                c.log_interval = 25;
                Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, DPO> t(c);
                t.fit();
                finish_folder(dpo_run);
                report("DPO (from SFT)", t.model(), seconds_since(t0));
            }
        }

        // ---- 7. GRPO from the SFT model: exact-match reward on the training questions (--grpo_data) --------
        // (and in step 8 the same stage with a learned reward: `reward` set, the reward model's score)
        auto grpo_stage = [&](const char* label, const fs::path& grpo_run, RewardFn reward) {
            t0 = std::chrono::steady_clock::now();
            std::string prompts = grpo_data == "rl" ? (data / "rl_train.jsonl").string() : grpo_data == "val" ? sft_val : sft_train;
            if (grpo_data == "train+val") {
                prompts = (data / "grpo_train.jsonl").string();
                concatenate(prompts, {sft_train, sft_val});
            }
            TrainConfig c = stage_config(grpo_run, tok_path, vocab, threads, prompts, sft_val, grpo_steps, grpo_lr, 0);
            c.init_from = (sft_run / "final").string();
            c.batch_size = grpo_prompts;
            c.num_generations = grpo_samples;
            c.loss_type = grpo_loss;
            c.beta = grpo_beta;
            c.temperature = grpo_temperature;
            c.max_gen_len = 16;  // "24 x 24 = 576" and <|im_end|>, with room to spare
            c.reward = grpo_reward;
            c.seed = grpo_seed;  // the prompt order and the samples
            c.log_interval = 10;
            c.eval_batches = 2;
            fs::remove_all(grpo_run);  // a fresh run each time
            Trainer<Net, Optimizer<AdamW>, Schedule<Constant>, GRPO> t(c);
            if (reward) t.objective().set_reward(std::move(reward));
            t.fit();
            finish_folder(grpo_run);
            const Paired vs = compare_paired(sft_score, report(label, t.model(), seconds_since(t0)));
            std::printf("    against the SFT model, question by question: %d of its held-out errors fixed, %d of its right "
                        "answers broken (exact sign test, two-sided: p = %.2g)\n", vs.fixed, vs.broken, vs.p_value);
            if (grpo_data == "rl")
                std::printf("    on its own prompts (the %zu rl questions, greedy): %.1f%%; the SFT model: %.1f%%\n", rl.size(),
                            100 * accuracy(t.model(), tok, rl, nullptr).accuracy, 100 * sft_rl_accuracy);
            // The reward curve: mean reward of the samples, every log_interval steps.
            std::ifstream m(grpo_run / "metrics.jsonl");
            std::string line, curve;
            while (std::getline(m, line)) {
                auto j = nlohmann::json::parse(line);
                if (!j.contains("reward_mean")) continue;
                char b[64];
                std::snprintf(b, sizeof b, " %lld:%.2f", (long long)j["step"].get<std::int64_t>(), j["reward_mean"].get<double>());
                curve += b;
            }
            std::printf("    reward curve (step:mean reward of the samples):%s\n", curve.c_str());
        };
        if (grpo_steps > 0 && grpo_rule) {
            std::printf("[7/8] GRPO (%s): %d steps from %s, %d prompts x %d samples per step, prompts: the %s questions\n",
                        grpo_loss.c_str(), grpo_steps, (sft_run / "final").c_str(), grpo_prompts, grpo_samples,
                        grpo_data.c_str());
            RewardFn reward;  // null: the rule reward --grpo_reward
            if (restate_bonus != 0) {
                // --grpo_reward's rule, plus a bonus when the reply starts with its question restated exactly: a
                // reward on the habit (as MiniMind's format reward is on <think>), not on any one fact.
                reward = [rule = rule_reward(grpo_reward), restate_bonus](const Completion& c) {
                    const std::size_t at = c.prompt.rfind("What is "), end = c.prompt.rfind('?');
                    bool restated = false;
                    if (at != std::string_view::npos && end != std::string_view::npos && end > at + 8) {
                        restated = c.text.starts_with(std::string(c.prompt.substr(at + 8, end - at - 8)) + " = ");
                    }
                    return rule(c) + (restated ? restate_bonus : 0.0);
                };
            }
            grpo_stage("GRPO (from SFT)", out / "grpo", std::move(reward));
        }

        // ---- 8. a reward model on the DPO pairs, then GRPO with its score as the reward -------------------
        if (rm_steps > 0) {
            t0 = std::chrono::steady_clock::now();
            Transformer<Net> sft(load_model_config(sft_run / "final"));  // what the sampled pairs and rankings sample
            load_pretrained(sft_run / "final", sft);
            std::string rm_train = (data / "dpo_train.jsonl").string();
            if (rm_data != "dpo") {
                MT_CHECK(!rl.empty(), "--rm_data ", rm_data, " needs --rl_facts > 0 (the questions the pairs are sampled on)");
                const fs::path sampled = data / "rm_samples.jsonl";
                const int n = write_sample_pairs(sampled, sft, tok, rl, 6, restate_fraction > 0, seed);
                std::printf("[8/8] reward model pairs: %d from the SFT model's replies to the %zu rl questions, in %s (%.1f s)\n",
                            n, rl.size(), sampled.c_str(), seconds_since(t0));
                rm_train = sampled.string();
                if (rm_data == "dpo+samples") {  // the DPO pairs, then the sampled ones (the loader shuffles)
                    rm_train = (data / "rm_train.jsonl").string();
                    concatenate(rm_train, {data / "dpo_train.jsonl", sampled});
                }
            }
            std::printf("[8/8] reward model (%s pooling): %d steps from %s on %s, held out: %s\n", rm_pooling.c_str(), rm_steps,
                        (sft_run / "final").c_str(), rm_train.c_str(), (data / "dpo_val.jsonl").c_str());
            const fs::path rm_run = out / "reward";
            TrainConfig c = stage_config(rm_run, tok_path, vocab, threads, rm_train,
                                         (data / "dpo_val.jsonl").string(), rm_steps, rm_lr, 10);
            c.init_from = (sft_run / "final").string();
            c.batch_size = 8;
            c.log_interval = 25;
            c.reward_pooling = rm_pooling;
            fs::remove_all(rm_run);
            {
                Trainer<Net, Optimizer<AdamW>, Schedule<WarmupCosine>, RewardModel> t(c);
                t.fit();
            }
            finish_folder(rm_run);
            Transformer<Net> rm(ModelConfig{vocab, c.max_seq_len});
            const RewardHead head = load_reward_model(rm_run / "final", rm);
            RewardModel::Data pairs(c);
            const PairEvaluation e = evaluate_pairs(rm, head, pairs, c.batch_size, c.max_seq_len);
            std::printf("==> reward model: held-out pair accuracy %.1f%% (%lld pairs), margin %.4f, loss %.4f, %.1f s\n",
                        100 * e.accuracy, (long long)e.pairs, e.margin, e.loss, seconds_since(t0));
            TrainConfig ct = c;
            ct.val_data = (data / "rm_test_pairs.jsonl").string();
            RewardModel::Data test_pairs(ct);
            const PairEvaluation et = evaluate_pairs(rm, head, test_pairs, c.batch_size, c.max_seq_len);
            std::printf("    on pairs for the held-out questions (--task add: sums in no training file): pair accuracy "
                        "%.1f%% (%lld pairs), margin %.4f\n", 100 * et.accuracy, (long long)et.pairs, et.margin);
            rm_line = "reward model: pair accuracy " + std::to_string(100 * e.accuracy).substr(0, 4) + "% (" +
                      std::to_string(e.pairs) + " DPO pairs held out), " + std::to_string(100 * et.accuracy).substr(0, 4) +
                      "% (" + std::to_string(et.pairs) + " pairs on the held-out questions)";
            if (rm_samples > 0) {
                RewardModelScorer<Net, CPU> scorer(rm_run / "final");
                const SampleRanking sr = rank_samples(sft, tok, scorer, test, rm_samples);
                std::printf("    on the SFT model's own samples (%d per held-out question, temperature 1): %d questions have "
                            "right and wrong ones; it scores the right one higher in %.1f%% of their %ld (right, wrong) "
                            "pairs\n", rm_samples, sr.mixed, 100 * sr.accuracy(), sr.pairs);
                if (!rl.empty()) {  // GRPO's prompts with --grpo_data rl (other samples than --rm_data samples' pairs)
                    const SampleRanking rr = rank_samples(sft, tok, scorer, rl, rm_samples);
                    std::printf("    ... and on the rl questions (GRPO's prompts): %d with right and wrong samples, %.1f%% of "
                                "%ld pairs\n", rr.mixed, 100 * rr.accuracy(), rr.pairs);
                }
                rm_line += ", " + std::to_string(100 * sr.accuracy()).substr(0, 4) +
                           "% on the SFT model's own samples";
            }
            if (grpo_steps > 0) {
                std::printf("[8b] GRPO with the reward model's score as the reward (otherwise as step 7)\n");
                grpo_stage("GRPO (reward model)", out / "grpo_rm", reward_model_reward<Net, CPU>(rm_run / "final"));
            }
        }

        std::printf("\nsummary (held-out exact match, greedy, %zu questions):\n", test.size());
        for (const StageResult& r : results)
            if (restate_fraction > 0)
                std::printf("  %-19s %5.1f%%   (restates %3.0f%%, %.1f s)\n", r.stage.c_str(), 100 * r.score.accuracy,
                            100 * r.score.restated, r.seconds);
            else
                std::printf("  %-19s %5.1f%%   (%.1f s)\n", r.stage.c_str(), 100 * r.score.accuracy, r.seconds);
        if (!rm_line.empty()) std::printf("%s\n", rm_line.c_str());
        if (!distill_lines.empty()) {
            std::printf("distillation (\"test\"-preset students, %d steps, from the pretrained teacher's shards):\n", distill_steps);
            for (const std::string& l : distill_lines) std::printf("%s\n", l.c_str());
        }
        std::printf("total time %.1f s; try: chat --checkpoint %s --prompts %s\n", seconds_since(t_all),
                    (sft_run / "final").c_str(), (data / "test_prompts.txt").c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
