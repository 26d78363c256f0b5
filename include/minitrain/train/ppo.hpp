// minitrain/train/ppo.hpp
// The PPO task policy (proximal policy optimization, Schulman et al. 2017, for language models as in
// Ouyang et al. 2022), following MiniMind's train_ppo.py: for each prompt the actor samples one reply, a
// reward scores it (a reward model folder, rule rewards or any RewardFn), a critic estimates the value of
// every generated position, GAE turns the sequence reward and the values into per-token advantages
// (rl/advantages.hpp), and the loss (ops/ppo.hpp) is the clipped-ratio actor loss with a KL penalty to the
// frozen reference plus vf_coef times the clipped value loss.
//
//   Trainer<Net, Optimizer<AdamW>, Schedule<Constant>, PPO> t(cfg);   // cfg.init_from = the SFT model
//   t.objective().set_reward(reward_model_reward<RMNet>("out/reward/final"));
//   t.fit();
//
// Data: GRPO's (SFT's conversations; the prompt is everything through "<|im_start|>assistant\n" of the
// first assistant message, its text the reference of the rule rewards). batch_size counts prompts; each
// has one sample, so a micro-batch has R = batch_size sequences of max_seq_len tokens.
//
// Legend: R = prompts = samples per micro-batch (batch_size), T = max_seq_len, C = hidden, N = R x T.
//
// Decisions:
//  - The critic is a value head, value_head.weight (1, C) without bias, on the ACTOR's own final-norm
//    hidden state at every position (one trunk, two heads: TRL's AutoModelForCausalLMWithValueHead), not
//    MiniMind's separate critic model. So the critic starts from the actor (its trunk is the SFT model,
//    as MiniMind initializes its critic from the SFT weights; the head from hash64(init_seed, "value")),
//    one forward gives log-probabilities and values, one optimizer step trains both with one learning
//    rate, and the Trainer's checkpoints, clipping and resume handle the head as they handle the reward
//    model's (appended to the model's ParameterSet). The price: MiniMind's separate critic learning rate
//    and the critic's independence from the actor's updates are not reproduced.
//  - The KL to the reference is a term of the actor's loss, beta (MiniMind's kl_coef, 0.02) x the mean k3
//    estimate, as MiniMind writes it, not a per-token reward: the critic then predicts the reward model's
//    score alone. beta = 0 keeps no reference model.
//  - Old log-probabilities and old values are the actor's and the critic's own from the first pass over a
//    batch of samples (ratio exactly 1 there); GAE reads the old values, with gamma and lam (MiniMind: 1,
//    0.95), the reward at the sequence's last generated token (its <|im_end|> when it finished), the value
//    after the last token 0; advantages are whitened over the batch's tokens. grpo_iterations (MiniMind's
//    ppo_update_iters) > 1 keeps the samples, old log-probabilities, old values, advantages and returns for
//    that many optimizer steps, one mini-batch each (the whole batch: MiniMind's mini_batch_size and its
//    early stop on approx KL are not implemented); checkpoints must then fall between batches of samples
//    (save_interval a multiple of grpo_iterations, accumulation_steps 1), which the constructor checks.
//  - Rollouts, their seeds (hash(seed, epoch, index, row): a function of the data position, so a resumed
//    run draws the same samples), the reference, the reply scoring and validation (the greedy reply's
//    reward; the "val loss" is minus the mean reward) are GRPO's (train/grpo.hpp).
//  - <out_dir>/final is the actor alone, a plain model folder (what generate, eval, sft load), plus
//    value_head.safetensors (the critic's head, "value_head.weight" F32 (1, C)).
//  - Logged per step (MicroResult::metrics): reward_mean, reward_std, kl (to the reference), clip_fraction
//    (|ratio - 1| > epsilon, MiniMind's clipfrac), value_loss (before vf_coef), response_length.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../data/sft.hpp"
#include "../io/checkpoint.hpp"
#include "../io/safetensors.hpp"
#include "../nn/generate.hpp"
#include "../nn/transformer.hpp"
#include "../ops/logprobs.hpp"
#include "../ops/ppo.hpp"
#include "../rl/advantages.hpp"
#include "../rl/rewards.hpp"
#include "config.hpp"
#include "grpo.hpp"
#include "objective.hpp"
#include "reward.hpp"

namespace minitrain {

struct PPO {
    static constexpr const char* name = "ppo";
    class Data;
    template <class Model>
    class Objective;
};

/// Prompts with reference answers: GRPO's data.
class PPO::Data : public GRPO::Data {
public:
    explicit Data(const TrainConfig& c, DataShard shard = {}) : GRPO::Data(c, shard) {}
};

namespace ppo {
inline constexpr const char* value_head_name = "value_head.weight";
inline constexpr const char* value_head_file = "value_head.safetensors";
}  // namespace ppo

/// The PPO loss options of a TrainConfig (epsilon, beta, cliprange_value, vf_coef), checked.
inline PpoOptions ppo_options(const TrainConfig& c) {
    PpoOptions o;
    o.clip_epsilon = c.epsilon;
    o.kl_coef = c.beta;
    o.cliprange_value = c.cliprange_value;
    o.vf_coef = c.vf_coef;
    MT_CHECK(std::isfinite(c.gamma) && c.gamma >= 0 && c.gamma <= 1, "ppo: gamma must be in [0, 1], found ", c.gamma);
    MT_CHECK(std::isfinite(c.lam) && c.lam >= 0 && c.lam <= 1, "ppo: lam must be in [0, 1], found ", c.lam);
    return o;
}

template <class Model>
class PPO::Objective {
public:
    using Backend = typename Model::backend;
    using Net = typename Model::net;
    using Prompt = RlPrompt;

    /// What the last rollout produced (host numbers), for tests and reports.
    struct Rollout {
        std::vector<Prompt> prompts;                    // (R)
        std::vector<std::vector<std::int32_t>> tokens;  // (R) generated tokens of each sample
        std::vector<double> rewards;                    // (R)
        std::vector<double> values, advantages, returns;  // (N) old values, whitened advantages, returns
        RewardStats stats;
        GaeStats gae;
        double mean_length = 0;
    };

    /// Appends the value head to `policy`'s parameters (before the Trainer builds the optimizer or loads
    /// weights), builds the reference.
    Objective(const TrainConfig& c, Model& policy)
        : policy_(policy), params_(policy.params()),
          head_(&params_.append(ppo::value_head_name, Shape{1, Net::hidden})), opts_(ppo_options(c)), R_(c.batch_size),
          T_(c.max_seq_len), iterations_(c.grpo_iterations), max_gen_(c.max_gen_len), top_k_(c.top_k),
          temperature_(c.temperature), gamma_(c.gamma), lam_(c.lam), seed_(c.seed), init_seed_(c.init_seed),
          reward_(rule_reward(c.reward, c.length_penalty)),
          ids_(Shape{c.batch_size, c.max_seq_len}, DType::i32), targets_(Shape{c.batch_size, c.max_seq_len}, DType::i32),
          roll_ids_(Shape{c.batch_size, c.max_seq_len}, DType::i32),
          roll_targets_(Shape{c.batch_size, c.max_seq_len}, DType::i32),
          host_n_(Shape{std::int64_t(c.batch_size) * c.max_seq_len}, DType::f32) {
        MT_CHECK(c.max_gen_len >= 1, "ppo: max_gen_len must be at least 1, found ", c.max_gen_len);
        MT_CHECK(c.temperature > 0, "ppo: temperature must be positive, found ", c.temperature);
        MT_CHECK(c.grpo_iterations >= 1, "ppo: ppo_update_iters (grpo_iterations) must be at least 1, found ",
                 c.grpo_iterations);
        MT_CHECK(c.grpo_iterations == 1 || c.accumulation_steps == 1, "ppo: ppo_update_iters ", c.grpo_iterations,
                 " needs accumulation_steps 1 (each step reuses one micro-batch of samples), found ", c.accumulation_steps);
        MT_CHECK(c.grpo_iterations == 1 || c.save_interval % c.grpo_iterations == 0, "ppo: with ppo_update_iters ",
                 c.grpo_iterations, " save_interval must be a multiple of it (a checkpoint between two passes over the "
                 "same samples could not be resumed exactly), found ", c.save_interval);
        if (opts_.kl_coef != 0) {
            reference_ = std::make_unique<Model>(policy.config());
            reference_->params().freeze_all();  // no gradient slab: the reference is constant
            if (!c.init_from.empty())
                load_pretrained(c.init_from, *reference_);
            else
                reference_->init(c.init_seed);
        }
        files_.tokenizer = c.tokenizer;
        files_.dtype = parse_save_dtype(c.save_dtype);
        const Shape n{std::int64_t(R_) * T_};
        for (Buffer<Backend>* b : {&old_, &ref_, &old_values_, &adv_, &ret_}) *b = Buffer<Backend>(n, DType::f32);
        if constexpr (Backend::device != Device::cpu) {
            dev_ids_ = Buffer<Backend>(roll_ids_.tensor().shape, DType::i32);
            dev_targets_ = Buffer<Backend>(roll_ids_.tensor().shape, DType::i32);
        }
        CPU::zero(ids_.tensor());
        CPU::zero(targets_.tensor());
    }

    /// What the optimizer trains: the actor and the value head.
    ParameterSet<Backend>& parameters() { return params_; }
    Var& value_head() { return *head_; }

    /// The reward of every sample (replaces the rule reward of TrainConfig::reward).
    void set_reward(RewardFn f) {
        MT_CHECK(bool(f), "ppo: set_reward was given an empty function");
        reward_ = std::move(f);
    }

    /// One micro-batch: R prompts from `data`, one sample each (the first of grpo_iterations passes), the
    /// reference's log-probabilities, the actor's log-probabilities and the critic's values, GAE, the loss.
    template <class Source>
    MicroResult train(Model& m, Graph<Backend>& g, Source& data) {
        if (pass_ == 0) {
            const auto at = data.position();
            data.next(ids_, targets_);
            roll(m, data.tokenizer(), hash64(hash64(seed_, std::uint64_t(at.epoch)), std::uint64_t(at.index)));
        }
        const Tensor& ids = host_batch_on(roll_ids_, dev_ids_);
        const Tensor& tgt = host_batch_on(roll_targets_, dev_targets_);
        const std::int64_t N = std::int64_t(R_) * T_;
        const Tensor tok_tgt = tgt.view(Shape{N, 1});  // one "sequence" per position: per-token log-probs

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
        // 2. one trunk, two heads: the actor's log-probabilities and the critic's values (N)
        Var* aux = nullptr;
        Var& h = m.hidden(g, ids, nullptr, &aux);                                           // (R, T, C)
        Var& logits = linear(g, h, m.params().find("model.embed_tokens.weight").var);       // (R, T, V), tied
        Var& lp = sequence_logprobs(g, logits, tok_tgt);                                    // (N)
        Var& values = reshape(g, linear(g, h, *head_), {N});                                // (R, T, 1) -> (N)
        // 3. on the first pass: old log-probabilities and values are these (ratio 1), then GAE
        if (pass_ == 0) {
            Backend::copy(old_.tensor(), lp.data);
            Backend::copy(old_values_.tensor(), values.data);
            advantages();
        }
        PpoPolicyStats ps;
        PpoValueStats vs;
        Var& actor = ppo_policy_loss(g, lp, old_.tensor(), ref_.tensor(), adv_.tensor(), tgt, opts_, &ps);
        Var& critic = ppo_value_loss(g, values, old_values_.tensor(), ret_.tensor(), tgt, opts_, &vs);
        pass_ = (pass_ + 1) % iterations_;

        MicroResult r;
        r.loss = &add(g, actor, critic);
        if (aux && g.training()) {
            r.aux = scalar(aux->data);
            r.loss = &add(g, *r.loss, *aux);
        }
        r.tokens = std::int64_t(ps.tokens);
        r.metrics[0] = {"reward_mean", last_.stats.mean};
        r.metrics[1] = {"reward_std", last_.stats.std};
        r.metrics[2] = {"kl", ps.kl};
        r.metrics[3] = {"clip_fraction", ps.clip_fraction};
        r.metrics[4] = {"value_loss", vs.value_loss};
        r.metrics[5] = {"response_length", last_.mean_length};
        last_policy_ = ps;
        last_value_ = vs;
        return r;
    }

    /// One validation batch: the greedy reply to each of its prompts, scored; nats = -sum of the rewards.
    template <class Source>
    EvalBatch eval(Model& m, Graph<Backend>&, Source& data) {
        data.val_next(ids_, targets_);
        EvalBatch e;
        const int eos = im_end(data.tokenizer());
        for (int p = 0; p < R_; ++p) {
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

    const Rollout& rollout() const { return last_; }
    const PpoPolicyStats& policy_stats() const { return last_policy_; }
    const PpoValueStats& value_stats() const { return last_value_; }
    const PpoOptions& options() const { return opts_; }
    /// The frozen reference model, or null when beta == 0.
    Model* reference() { return reference_.get(); }

    static double scalar(const Tensor& t) {
        float v = 0;
        Backend::to_host(&v, t);
        return v;
    }

    // ---- Trainer hooks ------------------------------------------------------------------------------

    /// init_from: the actor from a model folder (an SFT model has no value head), the head from the seed.
    void load_init(const std::filesystem::path& dir, Model& model) {
        Model trunk(model.config());
        load_pretrained(dir, trunk);
        Backend::copy(model.params().data().rows(0, std::int64_t(trunk.params().count())), trunk.params().data());
        reward::init_head<Backend>(*head_, Net::init_std, hash64(init_seed_, 0x76616c7565 /* "value" */));
    }

    /// <out_dir>/final: the actor as a plain model folder, and value_head.safetensors.
    void save_final(const std::filesystem::path& dir, const Model& model) {
        Model actor(model.config());
        const std::int64_t n = std::int64_t(actor.params().count());
        MT_CHECK(std::int64_t(model.params().count()) == n + head_->data.numel(), dir.string(), ": the PPO model has ",
                 model.params().count(), " values, expected the actor's ", n, " + the value head's ", head_->data.numel());
        Backend::copy(actor.params().data(), model.params().data().rows(0, n));  // the head was appended last
        save_pretrained(dir, actor, files_);
        std::vector<float> w(std::size_t(head_->data.numel()));
        Backend::to_host(w.data(), head_->data);
        save_safetensors(dir / ppo::value_head_file, {{ppo::value_head_name, detail::host_f32(w.data(), head_->data.shape)}},
                         {{"format", "pt"}});
    }

private:
    static int im_end(const Tokenizer& tok) { return rl_reply_end(tok, "ppo"); }

    /// Prompt p of the host batch, as GRPO reads it (train/grpo.hpp rl_prompt_of).
    Prompt prompt_of(int p, const Tokenizer& tok, int eos) const { return rl_prompt_of(ids_, targets_, p, T_, tok, eos); }

    int budget(const Prompt& pr) const { return std::min<int>(max_gen_, T_ - int(pr.ids.size())); }

    double score(const Prompt& pr, const std::vector<std::int32_t>& t, int eos, const Tokenizer& tok) const {
        return rl_score(reward_, pr, t, eos, tok);
    }

    /// Samples one reply per prompt of the host batch into roll_ids_ / roll_targets_ and scores them.
    void roll(Model& m, const Tokenizer& tok, std::uint64_t key) {
        const int eos = im_end(tok);
        std::int32_t* ids = roll_ids_.data<std::int32_t>();      // (R, T)
        std::int32_t* tgt = roll_targets_.data<std::int32_t>();  // (R, T)
        std::fill_n(ids, std::int64_t(R_) * T_, 0);
        std::fill_n(tgt, std::int64_t(R_) * T_, ignore_index);
        last_ = Rollout{};
        last_.rewards.assign(std::size_t(R_), 0.0);
        double length = 0;
        for (int p = 0; p < R_; ++p) {
            Prompt pr = prompt_of(p, tok, eos);
            MT_CHECK(!pr.ids.empty(), "ppo: prompt ", p, " of the batch has no assistant reply to start from");
            MT_CHECK(int(pr.ids.size()) < T_, "ppo: a prompt has ", pr.ids.size(), " tokens, max_seq_len is ", T_,
                     ": no room for a reply");
            SampleOptions o;
            o.temperature = temperature_;
            o.top_k = top_k_;
            o.seed = hash64(key, std::uint64_t(p));
            o.max_new_tokens = budget(pr);
            o.eos_token = eos;
            std::vector<std::int32_t> t = generate(m, std::span<const std::int32_t>(pr.ids), o);
            const std::int64_t L = std::int64_t(pr.ids.size()), row = std::int64_t(p) * T_;
            std::copy(pr.ids.begin(), pr.ids.end(), ids + row);
            for (std::size_t k = 0; k < t.size(); ++k) {
                if (L + std::int64_t(k) < T_) ids[row + L + std::int64_t(k)] = t[k];
                tgt[row + L - 1 + std::int64_t(k)] = t[k];  // position L-1+k predicts generated token k
            }
            last_.rewards[std::size_t(p)] = score(pr, t, eos, tok);
            length += double(t.size());
            last_.tokens.push_back(std::move(t));
            last_.prompts.push_back(std::move(pr));
        }
        double mean = 0, var = 0;
        for (double r : last_.rewards) mean += r;
        mean /= R_;
        for (double r : last_.rewards) var += (r - mean) * (r - mean);
        last_.stats.mean = mean;
        last_.stats.std = std::sqrt(var / R_);
        last_.mean_length = length / double(R_);
    }

    /// GAE on the old values (on the host), whitened advantages and returns to the backend.
    void advantages() {
        const std::size_t N = std::size_t(R_) * std::size_t(T_);
        last_.values.resize(N);
        last_.advantages.resize(N);
        last_.returns.resize(N);
        Backend::to_host(host_n_.data<float>(), old_values_.tensor());
        const float* v = host_n_.data<float>();
        const std::int32_t* y = roll_targets_.data<std::int32_t>();
        std::vector<std::uint8_t> counted(N);
        for (std::size_t i = 0; i < N; ++i) {
            counted[i] = y[i] != ignore_index;
            last_.values[i] = counted[i] ? double(v[i]) : 0.0;
        }
        last_.gae = gae_advantages(last_.values, last_.rewards, counted, T_, gamma_, lam_, last_.advantages, last_.returns);
        auto upload = [&](const std::vector<double>& src, Buffer<Backend>& dst) {
            float* h = host_n_.data<float>();
            for (std::size_t i = 0; i < N; ++i) h[i] = float(src[i]);
            Backend::from_host(dst.tensor(), h);
        };
        upload(last_.advantages, adv_);
        upload(last_.returns, ret_);
        upload(last_.values, old_values_);  // uncounted positions 0, as MiniMind masks them
    }

    Model& policy_;
    ParameterSet<Backend>& params_;
    Var* head_;
    std::unique_ptr<Model> reference_;
    PpoOptions opts_;
    int R_, T_, iterations_, max_gen_, top_k_;
    double temperature_, gamma_, lam_;
    std::uint64_t seed_, init_seed_;
    RewardFn reward_;
    SaveOptions files_;
    int pass_ = 0;  // which of grpo_iterations passes over the current samples comes next
    Buffer<CPU> ids_, targets_;                       // (R, T) i32 host batch of prompts
    Buffer<CPU> roll_ids_, roll_targets_;             // (R, T) i32 prompts + samples, targets on the generated tokens
    Buffer<CPU> host_n_;                              // (N) f32 staging
    Buffer<Backend> dev_ids_, dev_targets_;           // the same on the device (non-CPU backends)
    Buffer<Backend> old_, ref_, old_values_, adv_, ret_;  // (N) old / reference log-probs, old values, advantages, returns
    Rollout last_;
    PpoPolicyStats last_policy_;
    PpoValueStats last_value_;
};

}  // namespace minitrain
