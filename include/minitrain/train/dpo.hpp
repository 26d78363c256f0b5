// minitrain/train/dpo.hpp
// The DPO task policy (Direct Preference Optimization, Rafailov et al. 2023): fine-tune a policy to prefer
// the chosen reply of each preference pair over the rejected one, relative to a frozen reference model.
//
//   loss = mean over pairs of -logsigmoid(beta * ((pc - pr) - (rc - rr)))
//
// pc/pr: the policy's log-probability of the chosen/rejected reply (summed over the assistant tokens),
// rc/rr: the same under the reference. Data: MiniMind's DPO JSONL {"chosen": [...], "rejected": [...]},
// rendered with ChatML (data/chat.hpp); only assistant tokens are scored.
//
// Legend: P = pairs per micro-batch (batch_size), R = 2P rows (chosen rows first, then rejected: the
// ExampleLoader layout), T = max_seq_len, V = vocab.
//
// Decisions:
//  - The reference model is what a fresh run starts the policy from: init_from's weights when given (as
//    in MiniMind, which starts DPO from the SFT checkpoint), otherwise init(init_seed). The objective
//    builds it itself in its constructor, so it needs no copy of the policy (the Trainer constructs the
//    objective before it loads weights) and it is the same after a resume: the reference is never
//    trained, and both sources are reproducible. (Replacing the files of init_from between a run and
//    its resume changes the reference: don't.)
//  - Memory: the reference runs first, under NoGrad and in eval mode, on the Trainer's graph; its R
//    log-probabilities are copied out and the graph is reset before the policy's forward. So the
//    reference costs no activation memory beyond the policy step's own (the arena's high-water mark is
//    the larger of the two, the policy's forward + backward), only one copy of the weights (no
//    gradients, no optimizer state). Consequence: train() and eval() reset the graph they are given;
//    nothing built on it before the call survives.
//  - Log-probabilities are summed over the reply tokens, as in the DPO paper. MiniMind's train_dpo.py
//    divides each by its number of reply tokens: set_length_normalized(true) does the same.
//  - Chosen and rejected rows go through the policy in one (R, T) forward.
//  - MoE policies add their balancing loss (aux) to the DPO loss, as in pretraining.
//  - Logged per step (MicroResult::metrics): reward_margin, reward_accuracy, chosen_reward,
//    rejected_reward. Validation: EvalBatch::nats is the summed DPO loss of the batch's pairs and
//    EvalBatch::tokens the number of pairs, so the Trainer's "val loss" is the mean DPO loss per pair
//    (its "ppl" = exp of that means nothing for DPO); padding pairs of the last batch are not counted.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "../data/sft.hpp"
#include "../io/checkpoint.hpp"
#include "../nn/transformer.hpp"
#include "config.hpp"
#include "objective.hpp"
#include "sft.hpp"

namespace minitrain {

struct DPO {
    static constexpr const char* name = "dpo";
    class Data;
    template <class Model>
    class Objective;
};

// ---- data ---------------------------------------------------------------------------------------------

/// Preference pairs: SFT's conversation data (train/sft.hpp: tokenizer, val_data or val_fraction,
/// skip_bad_records) with two sequences per example, served as (R, T) batches: rows [0, P) the chosen
/// conversations, rows [P, R) the rejected ones, targets -100 except on assistant tokens. The last
/// validation batch may be partial: its missing pairs are rows whose targets are all -100.
class DPO::Data : public SFT::Data {
public:
    explicit Data(const TrainConfig& c, DataShard shard = {}) : SFT::Data(c, ExampleKind::dpo, shard) {}
};

// ---- objective ----------------------------------------------------------------------------------------

template <class Model>
class DPO::Objective {
public:
    using Backend = typename Model::backend;
    using Net = typename Model::net;

    /// What one batch's DPO loss is made of.
    struct Pairs {
        Var* loss = nullptr;             // (1) DPO loss (+ MoE aux in training); on the tape when gradients are on
        Var* dpo = nullptr;              // (1) the DPO loss alone
        Var* aux = nullptr;              // (1) MoE balancing loss of the policy forward, or null
        Var* policy_logprobs = nullptr;  // (R) chosen rows, then rejected rows
        DpoStats stats;                  // over the counted pairs
        std::int64_t pairs = 0;          // counted pairs
    };

    Objective(const TrainConfig& c, Model& policy)
        : policy_(policy), reference_(policy.config()), beta_(c.dpo_beta), P_(c.batch_size),
          ids_(Shape{2 * c.batch_size, c.max_seq_len}, DType::i32),
          targets_(Shape{2 * c.batch_size, c.max_seq_len}, DType::i32) {
        MT_CHECK(std::isfinite(c.dpo_beta) && c.dpo_beta > 0, "dpo: dpo_beta must be positive, got ", c.dpo_beta);
        reference_.params().freeze_all();  // no gradient slab: the reference is constant
        if (!c.init_from.empty())
            load_pretrained(c.init_from, reference_);
        else
            reference_.init(c.init_seed);
        if constexpr (Backend::device != Device::cpu) {
            dev_ids_ = Buffer<Backend>(ids_.tensor().shape, DType::i32);
            dev_targets_ = Buffer<Backend>(ids_.tensor().shape, DType::i32);
        }
        CPU::zero(ids_.tensor());
        CPU::zero(targets_.tensor());
    }

    ParameterSet<Backend>& parameters() { return policy_.params(); }

    /// One micro-batch from `data` (DPO::Data, or anything with next(ids, targets) filling (R, T) host
    /// tensors in the pair layout, e.g. an ExampleLoader over pairs).
    template <class Source>
    MicroResult train(Model& m, Graph<Backend>& g, Source& data) {
        data.next(ids_, targets_);
        Pairs p = loss(m, g, device(ids_, dev_ids_), device(targets_, dev_targets_), P_);
        MicroResult r;
        r.loss = p.loss;
        if (p.aux) r.aux = scalar(p.aux->data);
        r.tokens = ids_.tensor().numel();
        r.metrics[0] = {"reward_margin", p.stats.margin};
        r.metrics[1] = {"reward_accuracy", p.stats.accuracy};
        r.metrics[2] = {"chosen_reward", p.stats.chosen_reward};
        r.metrics[3] = {"rejected_reward", p.stats.rejected_reward};
        return r;
    }

    /// One validation batch: nats = summed DPO loss of its real pairs, tokens = their number.
    template <class Source>
    EvalBatch eval(Model& m, Graph<Backend>& g, Source& data) {
        data.val_next(ids_, targets_);
        const std::int64_t n = real_pairs();
        EvalBatch e;
        if (n == 0) return e;
        Pairs p = loss(m, g, device(ids_, dev_ids_), device(targets_, dev_targets_), n);
        e.tokens = n;
        e.nats = scalar(p.dpo->data) * double(n);
        return e;
    }

    /// The prompt of the last batch's first chosen conversation (through "<|im_start|>assistant\n"),
    /// at most n tokens.
    std::span<const std::int32_t> sample_prompt(int n) const {
        const std::int64_t T = ids_.tensor().shape[1];
        const std::int32_t* tgt = targets_.data<std::int32_t>();
        std::int64_t len = T;
        for (std::int64_t t = 0; t < T; ++t)
            if (tgt[t] != ignore_index) {
                len = t + 1;  // position t predicts the first reply token: the prompt is ids[0..t]
                break;
            }
        return {ids_.data<std::int32_t>(), std::size_t(std::min<std::int64_t>(n, len))};
    }

    /// The DPO loss of one batch on the backend: ids, targets (R, T) i32 with rows [0, R/2) chosen and
    /// [R/2, R) rejected; only pairs [0, pairs) count. Runs the reference on g (NoGrad, eval mode),
    /// RESETS g, then runs the policy and builds the loss on g (recorded unless gradients are off).
    Pairs loss(Model& policy, Graph<Backend>& g, const Tensor& ids, const Tensor& targets, std::int64_t pairs) {
        MT_CHECK(ids.shape.rank == 2 && ids.shape[0] % 2 == 0, "dpo: ids must be (2P, T): P chosen rows, then P rejected, found ",
                 ids.shape);
        const std::int64_t R = ids.shape[0], P = R / 2;
        MT_CHECK(1 <= pairs && pairs <= P, "dpo: ", pairs, " pairs counted out of a batch of ", P);

        // 1. reference log-probabilities (R), kept in ref_logp_; then the graph is cleared
        {
            NoGrad<Backend> no_grad(g);
            const bool training = g.training();
            g.set_training(false);
            auto out = reference_.forward(g, ids);
            Var& lp = sequence_logprobs(g, *out.logits, targets, average_);  // (R)
            if (ref_logp_.tensor().shape != lp.data.shape || ref_logp_.tensor().dtype != lp.data.dtype)
                ref_logp_ = Buffer<Backend>(lp.data.shape, lp.data.dtype);
            Backend::copy(ref_logp_.tensor(), lp.data);
            g.set_training(training);
        }
        g.reset();

        // 2. the policy on chosen and rejected rows at once. MoE: pass the targets to get the balancing
        // loss (the model attaches aux only then; the cross-entropy it also computes is left unused).
        auto out = policy.forward(g, ids, Net::moe ? &targets : nullptr);
        Pairs p;
        p.pairs = pairs;
        p.policy_logprobs = &sequence_logprobs(g, *out.logits, targets, average_);  // (R)
        Var& pc = slice_rows(g, *p.policy_logprobs, 0, pairs);             // (pairs)
        Var& pr = slice_rows(g, *p.policy_logprobs, P, P + pairs);         // (pairs)
        const Tensor& ref = ref_logp_.tensor();
        p.dpo = &dpo_loss(g, pc, pr, ref.rows(0, pairs), ref.rows(P, P + pairs), beta_, &p.stats);
        p.loss = p.dpo;
        if (out.aux && g.training()) {
            p.aux = out.aux;
            p.loss = &add(g, *p.dpo, *out.aux);
        }
        return p;
    }

    /// Divide each sequence's log-probability by its number of reply tokens (MiniMind) instead of summing
    /// (the DPO paper, the default); applies to the policy and the reference alike.
    void set_length_normalized(bool on) { average_ = on; }
    bool length_normalized() const { return average_; }

    /// The frozen reference model.
    Model& reference() { return reference_; }
    /// Reference log-probabilities (R) of the last batch, on the backend.
    const Tensor& reference_logprobs() const { return ref_logp_.tensor(); }
    double beta() const { return beta_; }

    static double scalar(const Tensor& t) {
        if (t.dtype == DType::f64) {
            double v = 0;
            Backend::to_host(&v, t);
            return v;
        }
        MT_CHECK(t.dtype == DType::f32, "dpo: a scalar loss must be f32 or f64, found ", dtype_name(t.dtype));
        float v = 0;
        Backend::to_host(&v, t);
        return v;
    }

private:
    /// Pairs of the current host batch that are real examples (the last validation batch ends with padding
    /// pairs whose targets are all -100). The loader puts real pairs first.
    std::int64_t real_pairs() const {
        const std::int64_t R = targets_.tensor().shape[0], T = targets_.tensor().shape[1], P = R / 2;
        const std::int32_t* tgt = targets_.data<std::int32_t>();
        auto counted = [&](std::int64_t row) {
            return std::any_of(tgt + row * T, tgt + (row + 1) * T, [](std::int32_t y) { return y != ignore_index; });
        };
        std::int64_t n = 0;
        while (n < P && (counted(n) || counted(P + n))) ++n;
        for (std::int64_t b = n; b < P; ++b)
            MT_CHECK(!counted(b) && !counted(P + b), "dpo: pair ", b, " of a validation batch has targets after an empty pair ", n);
        return n;
    }

    const Tensor& device(Buffer<CPU>& host, Buffer<Backend>& dev) { return host_batch_on(host, dev); }

    Model& policy_;
    Model reference_;
    double beta_;
    int P_;
    bool average_ = false;
    Buffer<CPU> ids_, targets_;              // (R, T) i32 host batch
    Buffer<Backend> dev_ids_, dev_targets_;  // the same on the device (non-CPU backends)
    Buffer<Backend> ref_logp_;               // (R) reference log-probabilities of the current batch
};

}  // namespace minitrain
