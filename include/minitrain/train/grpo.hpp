// minitrain/train/grpo.hpp
// The GRPO task policy (group relative policy optimization, Shao et al. 2024), with CISPO's clipped
// importance weights (MiniMax-M1, 2025) as the default loss, as in MiniMind's train_grpo.py: for each
// prompt the policy samples G replies, a reward scores each, and each reply's advantage is its reward
// relative to the other replies of the same prompt (rl/advantages.hpp); the loss (ops/grpo.hpp) raises
// the log-probability of the generated tokens of replies better than their group and lowers the others',
// with a KL penalty that keeps the policy near a frozen reference.
//
//   Trainer<Net, Optimizer<AdamW>, Schedule<Constant>, GRPO> t(cfg);   // cfg.init_from = the SFT model
//   t.objective().set_reward([](const Completion& c) { return c.text == c.reference ? 1.0 : 0.0; });
//   t.fit();
//
// Data: SFT's conversations (MiniMind's JSONL; RLAIF files, whose last assistant message is empty, load
// as they are): the prompt is everything up to "<|im_start|>assistant\n" of the last assistant message,
// and that message's text is the reference answer the rule rewards compare with. batch_size counts
// prompts, so a micro-batch has R = batch_size x num_generations sequences of max_seq_len tokens.
//
// Legend: P = prompts per micro-batch (batch_size), G = num_generations, R = P x G rows (sample j of
// prompt p is row p G + j), T = max_seq_len, N = R x T.
//
// Decisions:
//  - Rollouts are sampled with the KV cache (nn/generate.hpp), in eval mode (no dropout), the G samples
//    of a prompt decoded together (generate_group: one (G, 1) forward per position, each row with its
//    own sampler). Sample j of prompt p of the batch that starts at data position (epoch, index) uses the
//    sampler seed hash(seed, epoch, index, p G + j): the samples are a function of the data position,
//    which checkpoints store, so a resumed run draws exactly the samples of the uninterrupted one with no
//    sampler state of its own to save (the sampler's state is the data position).
//  - The reference is what a fresh run starts from (init_from, else init(init_seed)), built by the
//    objective itself as in DPO (train/dpo.hpp: same memory plan, same reasoning about resume). With
//    beta = 0 there is no reference model at all.
//  - Old log-probabilities (the sampling policy's) are the policy's own on the first pass over a batch
//    of samples, copied from the forward, so the ratio is exactly 1 there and the loss gradient is the
//    plain policy gradient. grpo_iterations > 1 keeps the samples and the old log-probabilities for that
//    many optimizer steps; then checkpoints must fall between batches of samples (save_interval a
//    multiple of grpo_iterations) and accumulation_steps must be 1, which the constructor checks.
//  - A reply is scored on its text before <|im_end|>; the generated tokens trained on include
//    <|im_end|> (the policy learns to stop). max_gen_len is cut to what fits in max_seq_len.
//  - Validation: the greedy reply to each validation prompt is scored; EvalBatch::nats is minus the sum
//    of the rewards and tokens the number of prompts, so the Trainer's "val loss" is minus the mean
//    greedy reward (higher reward, lower "loss"; its "ppl" means nothing here).
//  - Logged per step (MicroResult::metrics): reward_mean, reward_std, kl, clip_fraction,
//    response_length (generated tokens per sample), ratio.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../data/sft.hpp"
#include "../io/checkpoint.hpp"
#include "../nn/generate.hpp"
#include "../nn/transformer.hpp"
#include "../ops/grpo.hpp"
#include "../ops/logprobs.hpp"
#include "../rl/advantages.hpp"
#include "../rl/rewards.hpp"
#include "config.hpp"
#include "objective.hpp"
#include "sft.hpp"

namespace minitrain {

struct GRPO {
    static constexpr const char* name = "grpo";
    class Data;
    template <class Model>
    class Objective;
};

/// Prompts with reference answers: SFT's conversation data (train/sft.hpp), one conversation per prompt.
class GRPO::Data : public SFT::Data {
public:
    explicit Data(const TrainConfig& c, DataShard shard = {}) : SFT::Data(c, shard) {}
};

/// The policy loss options of a TrainConfig (loss_type, beta, epsilon, epsilon_high), checked.
inline PolicyLossOptions policy_loss_options(const TrainConfig& c) {
    PolicyLossOptions o;
    MT_CHECK(c.loss_type == "cispo" || c.loss_type == "grpo", "loss_type must be cispo or grpo, found '", c.loss_type, "'");
    o.kind = c.loss_type == "grpo" ? PolicyLoss::grpo : PolicyLoss::cispo;
    o.beta = c.beta;
    o.epsilon = c.epsilon;
    o.epsilon_high = c.epsilon_high;
    return o;
}

/// One prompt of an RL batch (GRPO, PPO): its tokens, its text and its reference answer.
struct RlPrompt {
    std::vector<std::int32_t> ids;
    std::string text, reference;
};

/// The id of <|im_end|>, which ends every sampled reply; `who` names the task in the error.
inline int rl_reply_end(const Tokenizer& tok, const char* who) {
    auto id = tok.find("<|im_end|>");
    MT_CHECK(id, who, ": the tokenizer has no \"<|im_end|>\" token: replies could not end");
    return *id;
}

/// Row p of a host batch (ids, targets: (rows, T) i32) as an RL prompt: the ids through
/// "<|im_start|>assistant\n" of the first supervised span, and that span's text before <|im_end|> as the
/// reference. Empty ids for a row without targets.
inline RlPrompt rl_prompt_of(const Tensor& ids_t, const Tensor& targets_t, int p, std::int64_t T, const Tokenizer& tok,
                             int eos) {
    const std::int32_t* ids = ids_t.data<std::int32_t>() + std::int64_t(p) * T;
    const std::int32_t* tgt = targets_t.data<std::int32_t>() + std::int64_t(p) * T;
    RlPrompt pr;
    std::int64_t first = -1;
    for (std::int64_t t = 0; t < T && first < 0; ++t)
        if (tgt[t] != ignore_index) first = t;
    if (first < 0) return pr;
    pr.ids.assign(ids, ids + first + 1);  // position `first` predicts the first reply token
    std::vector<std::int32_t> ref;
    for (std::int64_t t = first; t < T && tgt[t] != ignore_index && tgt[t] != eos; ++t) ref.push_back(tgt[t]);
    pr.reference = tok.decode(ref);
    pr.text = tok.decode(pr.ids);
    return pr;
}

/// The reward of reply t (sampled ids, ending with eos when it finished) to prompt pr.
inline double rl_score(const RewardFn& reward, const RlPrompt& pr, const std::vector<std::int32_t>& t, int eos,
                       const Tokenizer& tok) {
    const bool finished = !t.empty() && t.back() == eos;
    // A model whose vocab_size exceeds the tokenizer's can sample ids that have no text: they read as nothing.
    std::vector<std::int32_t> known;
    for (std::size_t k = 0; k + (finished ? 1 : 0) < t.size(); ++k)
        if (t[k] >= 0 && t[k] < tok.vocab_size()) known.push_back(t[k]);
    Completion c{pr.text, tok.decode(known), pr.reference, int(t.size()), finished};
    return reward(c);
}

template <class Model>
class GRPO::Objective {
public:
    using Backend = typename Model::backend;
    using Net = typename Model::net;

    using Prompt = RlPrompt;

    /// What the last rollout produced (host numbers), for tests and reports.
    struct Rollout {
        std::vector<Prompt> prompts;                   // (P)
        std::vector<std::vector<std::int32_t>> tokens; // (R) generated tokens of each sample
        std::vector<double> rewards;                   // (R)
        std::vector<float> advantages;                 // (R)
        RewardStats stats;
        double mean_length = 0;
    };

    Objective(const TrainConfig& c, Model& policy)
        : policy_(policy), opts_(policy_loss_options(c)), P_(c.batch_size), G_(c.num_generations), T_(c.max_seq_len),
          iterations_(c.grpo_iterations), max_gen_(c.max_gen_len), top_k_(c.top_k), temperature_(c.temperature),
          seed_(c.seed), reward_(rule_reward(c.reward, c.length_penalty)),
          ids_(Shape{c.batch_size, c.max_seq_len}, DType::i32), targets_(Shape{c.batch_size, c.max_seq_len}, DType::i32),
          roll_ids_(Shape{std::int64_t(c.batch_size) * c.num_generations, c.max_seq_len}, DType::i32),
          roll_targets_(Shape{std::int64_t(c.batch_size) * c.num_generations, c.max_seq_len}, DType::i32),
          adv_host_(Shape{std::int64_t(c.batch_size) * c.num_generations}, DType::f32) {
        MT_CHECK(c.num_generations >= 2, "grpo: num_generations must be at least 2 (advantages compare the samples of "
                 "a prompt with each other), found ", c.num_generations);
        MT_CHECK(c.max_gen_len >= 1, "grpo: max_gen_len must be at least 1, found ", c.max_gen_len);
        MT_CHECK(c.temperature > 0, "grpo: temperature must be positive (greedy samples of a group are all the "
                 "same), found ", c.temperature);
        MT_CHECK(c.grpo_iterations >= 1, "grpo: grpo_iterations must be at least 1, found ", c.grpo_iterations);
        MT_CHECK(c.grpo_iterations == 1 || c.accumulation_steps == 1, "grpo: grpo_iterations ", c.grpo_iterations,
                 " needs accumulation_steps 1 (each step reuses one micro-batch of samples), found ", c.accumulation_steps);
        MT_CHECK(c.grpo_iterations == 1 || c.save_interval % c.grpo_iterations == 0, "grpo: with grpo_iterations ",
                 c.grpo_iterations, " save_interval must be a multiple of it (a checkpoint between two passes over the "
                 "same samples could not be resumed exactly), found ", c.save_interval);
        if (opts_.beta != 0) {
            reference_ = std::make_unique<Model>(policy.config());
            reference_->params().freeze_all();  // no gradient slab: the reference is constant
            if (!c.init_from.empty())
                load_pretrained(c.init_from, *reference_);
            else
                reference_->init(c.init_seed);
        }
        const Shape n{std::int64_t(P_) * G_ * T_};
        old_ = Buffer<Backend>(n, DType::f32);
        ref_ = Buffer<Backend>(n, DType::f32);
        adv_ = Buffer<Backend>(adv_host_.tensor().shape, DType::f32);
        if constexpr (Backend::device != Device::cpu) {
            dev_ids_ = Buffer<Backend>(roll_ids_.tensor().shape, DType::i32);
            dev_targets_ = Buffer<Backend>(roll_ids_.tensor().shape, DType::i32);
        }
        CPU::zero(ids_.tensor());
        CPU::zero(targets_.tensor());
    }

    ParameterSet<Backend>& parameters() { return policy_.params(); }

    /// The reward of every sample (replaces the rule reward of TrainConfig::reward).
    void set_reward(RewardFn f) {
        MT_CHECK(bool(f), "grpo: set_reward was given an empty function");
        reward_ = std::move(f);
    }

    /// One micro-batch: P prompts from `data`, G samples each (the first of grpo_iterations passes), the
    /// reference's and the policy's log-probabilities of the generated tokens, the loss.
    template <class Source>
    MicroResult train(Model& m, Graph<Backend>& g, Source& data) {
        if (pass_ == 0) {
            const auto at = data.position();
            data.next(ids_, targets_);
            roll(m, data.tokenizer(), hash64(hash64(seed_, std::uint64_t(at.epoch)), std::uint64_t(at.index)));
        }
        const Tensor& ids = device(roll_ids_, dev_ids_);
        const Tensor& tgt = device(roll_targets_, dev_targets_);
        const std::int64_t R = roll_ids_.tensor().shape[0];
        const Tensor tok_tgt = tgt.view(Shape{R * T_, 1});  // one "sequence" per position: per-token log-probs

        // 1. the reference's per-token log-probabilities (N), copied out; then the graph is cleared
        if (reference_ && pass_ == 0) {
            NoGrad<Backend> no_grad(g);
            const bool training = g.training();
            g.set_training(false);
            auto out = reference_->forward(g, ids);
            Backend::copy(ref_.tensor(), sequence_logprobs(g, *out.logits, tok_tgt).data);
            g.set_training(training);
            g.reset();
        }
        // 2. the policy; on the first pass its log-probabilities are also the old ones (ratio 1)
        auto out = policy_forward(m, g, ids, tgt);
        Var& lp = sequence_logprobs(g, *out.logits, tok_tgt);  // (N)
        if (pass_ == 0) Backend::copy(old_.tensor(), lp.data);
        PolicyLossStats st;
        Var& loss = grpo_loss(g, lp, old_.tensor(), ref_.tensor(), adv_.tensor(), tgt, opts_, &st);
        pass_ = (pass_ + 1) % iterations_;

        MicroResult r;
        r.loss = &loss;
        if (out.aux && g.training()) {
            r.aux = scalar(out.aux->data);
            r.loss = &add(g, loss, *out.aux);
        }
        r.tokens = std::int64_t(st.tokens);
        r.metrics[0] = {"reward_mean", last_.stats.mean};
        r.metrics[1] = {"reward_std", last_.stats.std};
        r.metrics[2] = {"kl", st.kl};
        r.metrics[3] = {"clip_fraction", st.clip_fraction};
        r.metrics[4] = {"response_length", last_.mean_length};
        r.metrics[5] = {"ratio", st.ratio};
        last_stats_ = st;
        return r;
    }

    /// One validation batch: the greedy reply to each of its prompts, scored; nats = -sum of the rewards.
    template <class Source>
    EvalBatch eval(Model& m, Graph<Backend>&, Source& data) {
        data.val_next(ids_, targets_);
        EvalBatch e;
        const int eos = im_end(data.tokenizer());
        for (int p = 0; p < P_; ++p) {
            Prompt pr = prompt_of(p, data.tokenizer(), eos);
            if (pr.ids.empty()) continue;  // a padding row of the last batch
            SampleOptions o;
            o.temperature = 0;
            o.max_new_tokens = budget(pr);
            o.eos_token = eos;
            std::vector<std::int32_t> t = generate(m, std::span<const std::int32_t>(pr.ids), o);
            e.nats -= score(pr, t, eos, data.tokenizer());
            e.tokens += 1;
        }
        return e;
    }

    /// The first prompt of the last batch, at most n tokens.
    std::span<const std::int32_t> sample_prompt(int n) const {
        if (last_.prompts.empty()) return {};
        const auto& ids = last_.prompts[0].ids;
        return {ids.data(), std::min(ids.size(), std::size_t(std::max(n, 0)))};
    }

    /// The last rollout: prompts, samples, rewards, advantages.
    const Rollout& rollout() const { return last_; }
    const PolicyLossStats& loss_stats() const { return last_stats_; }
    const PolicyLossOptions& options() const { return opts_; }
    /// The frozen reference model, or null when beta == 0.
    Model* reference() { return reference_.get(); }

    static double scalar(const Tensor& t) {
        float v = 0;
        Backend::to_host(&v, t);
        return v;
    }

private:
    static int im_end(const Tokenizer& tok) { return rl_reply_end(tok, "grpo"); }

    Prompt prompt_of(int p, const Tokenizer& tok, int eos) const { return rl_prompt_of(ids_, targets_, p, T_, tok, eos); }

    int budget(const Prompt& pr) const { return std::min<int>(max_gen_, T_ - int(pr.ids.size())); }

    double score(const Prompt& pr, const std::vector<std::int32_t>& t, int eos, const Tokenizer& tok) const {
        return rl_score(reward_, pr, t, eos, tok);
    }

    /// Samples G replies per prompt of the host batch into roll_ids_ / roll_targets_, scores them and
    /// writes the advantages to the backend.
    void roll(Model& m, const Tokenizer& tok, std::uint64_t key) {
        const int eos = im_end(tok);
        const std::int64_t R = std::int64_t(P_) * G_;
        std::int32_t* ids = roll_ids_.data<std::int32_t>();      // (R, T)
        std::int32_t* tgt = roll_targets_.data<std::int32_t>();  // (R, T)
        std::fill_n(ids, R * T_, 0);
        std::fill_n(tgt, R * T_, ignore_index);
        last_ = Rollout{};
        last_.tokens.resize(std::size_t(R));
        last_.rewards.assign(std::size_t(R), 0.0);
        last_.advantages.assign(std::size_t(R), 0.0f);
        double length = 0;
        for (int p = 0; p < P_; ++p) {
            Prompt pr = prompt_of(p, tok, eos);
            MT_CHECK(!pr.ids.empty(), "grpo: prompt ", p, " of the batch has no assistant reply to start from");
            MT_CHECK(int(pr.ids.size()) < T_, "grpo: a prompt has ", pr.ids.size(), " tokens, max_seq_len is ", T_,
                     ": no room for a reply");
            std::vector<SampleOptions> os(static_cast<std::size_t>(G_));
            for (int j = 0; j < G_; ++j) {
                SampleOptions& o = os[std::size_t(j)];
                o.temperature = temperature_;
                o.top_k = top_k_;
                o.seed = hash64(key, std::uint64_t(std::int64_t(p) * G_ + j));
                o.max_new_tokens = budget(pr);
                o.eos_token = eos;
            }
            std::vector<std::vector<std::int32_t>> group =
                generate_group(m, std::span<const std::int32_t>(pr.ids), std::span<const SampleOptions>(os));
            for (int j = 0; j < G_; ++j) {
                const std::int64_t row = std::int64_t(p) * G_ + j;
                std::vector<std::int32_t>& t = group[std::size_t(j)];
                const std::int64_t L = std::int64_t(pr.ids.size());
                std::copy(pr.ids.begin(), pr.ids.end(), ids + row * T_);
                for (std::size_t k = 0; k < t.size(); ++k) {
                    if (L + std::int64_t(k) < T_) ids[row * T_ + L + std::int64_t(k)] = t[k];
                    tgt[row * T_ + L - 1 + std::int64_t(k)] = t[k];  // position L-1+k predicts generated token k
                }
                last_.rewards[std::size_t(row)] = score(pr, t, eos, tok);
                length += double(t.size());
                last_.tokens[std::size_t(row)] = std::move(t);
            }
            last_.prompts.push_back(std::move(pr));
        }
        last_.stats = group_advantages(last_.rewards, G_, last_.advantages);
        last_.mean_length = length / double(R);
        std::copy(last_.advantages.begin(), last_.advantages.end(), adv_host_.data<float>());
        Backend::from_host(adv_.tensor(), adv_host_.data<float>());
    }

    /// The policy's forward; an MoE policy also gets the targets so that it attaches its balancing loss.
    auto policy_forward(Model& m, Graph<Backend>& g, const Tensor& ids, const Tensor& tgt) {
        return m.forward(g, ids, Net::moe ? &tgt : nullptr);
    }

    const Tensor& device(Buffer<CPU>& host, Buffer<Backend>& dev) { return host_batch_on(host, dev); }

    Model& policy_;
    std::unique_ptr<Model> reference_;
    PolicyLossOptions opts_;
    int P_, G_, T_, iterations_, max_gen_, top_k_;
    double temperature_;
    std::uint64_t seed_;
    RewardFn reward_;
    int pass_ = 0;  // which of grpo_iterations passes over the current samples comes next
    Buffer<CPU> ids_, targets_;                // (P, T) i32 host batch of prompts
    Buffer<CPU> roll_ids_, roll_targets_;      // (R, T) i32 prompts + samples, targets on the generated tokens
    Buffer<CPU> adv_host_;                     // (R) f32
    Buffer<Backend> dev_ids_, dev_targets_;    // the same on the device (non-CPU backends)
    Buffer<Backend> old_, ref_;                // (N) old and reference per-token log-probabilities
    Buffer<Backend> adv_;                      // (R) advantages
    Rollout last_;
    PolicyLossStats last_stats_;
};

}  // namespace minitrain
