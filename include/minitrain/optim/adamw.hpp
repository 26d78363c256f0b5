// minitrain/optim/adamw.hpp
// AdamW (Loshchilov & Hutter), exactly as torch.optim.AdamW computes it: decoupled weight decay, bias-
// corrected moments, eps added after the square root. Weight decay applies only to parameters whose
// ParameterSet `decay` flag is set (2-D matrices by default; norm gains and biases are not decayed),
// as nanoGPT and MiniMind configure their parameter groups.
//
// State: exp_avg (m) and exp_avg_sq (v), two f32 slabs shaped like the gradient slab.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../backend/cpu/optim.hpp"
#include "optimizer.hpp"

namespace minitrain {

/// Optimizer tag: `Optimizer<AdamW>`.
struct AdamW {
    static constexpr std::string_view name = "adamw";
    /// Defaults are the GPT-pretraining ones (nanoGPT, llm.c): beta2 = 0.95 rather than PyTorch's 0.999
    /// steadies training with large batches of noisy tokens. Set beta2 = 0.999 to get torch's defaults.
    struct Options {
        double lr = 1e-3;            // used by step() without an argument; the trainer passes the schedule's lr
        double beta1 = 0.9;
        double beta2 = 0.95;
        double eps = 1e-8;
        double weight_decay = 0.1;   // decoupled: p *= 1 - lr*weight_decay, on `decay` parameters only
    };
};

template <class Backend>
class Optimizer<AdamW, Backend> : public detail::OptimizerBase<Backend> {
    using Base = detail::OptimizerBase<Backend>;

public:
    using Algo = AdamW;
    using Options = AdamW::Options;
    using backend_type = Backend;
    static constexpr std::string_view name = AdamW::name;

    /// Allocates zeroed moments for the set's trainable parameters (the set must be finalized).
    explicit Optimizer(ParameterSet<Backend>& params, Options options = {})
        : Base(params, "Optimizer<AdamW>"), options_(options) {
        validate(options_);
        reset_state();
    }

    /// One update of every trainable parameter from the gradient slab, with learning rate `lr`.
    void step(double lr) {
        Base::check_lr(lr, "Optimizer<AdamW>");
        this->check_layout("Optimizer<AdamW>::step");
        const std::int64_t t = this->steps_ + 1;
        const ParameterSet<Backend>& ps = *this->params_;
        this->for_each_piece([&](std::size_t p, std::size_t g, std::size_t st, std::size_t n, bool decay) {
            adamw_update(Backend{}, Base::view(ps.data(), p, n), Base::view(ps.grads(), g, n), Base::view(m_.tensor(), st, n),
                         Base::view(v_.tensor(), st, n), lr, options_.beta1, options_.beta2, options_.eps,
                         decay ? options_.weight_decay : 0.0, t);
        });
        this->steps_ = t;
    }
    void step() { step(options_.lr); }

    /// ("exp_avg", m) and ("exp_avg_sq", v): writable views of the state slabs, each (trainable_count),
    /// f32 (the shard's length under set_shard). Empty when nothing is trainable. Restoring a checkpoint = copying into them + set_steps().
    std::vector<std::pair<std::string, Tensor>> state() const {
        std::vector<std::pair<std::string, Tensor>> out;
        if (m_.tensor().defined()) {
            out.emplace_back("exp_avg", m_.tensor());
            out.emplace_back("exp_avg_sq", v_.tensor());
        }
        return out;
    }

    /// Fresh zeroed state for the set's current trainable layout and steps() = 0, as a new
    /// torch.optim.AdamW over the now-trainable parameters would start.
    void reset_state() {
        this->take_layout();
        m_ = this->make_slab();
        v_ = this->make_slab();
        this->steps_ = 0;
    }

    /// ZeRO-1: state for, and updates of, gradient-slab elements [begin, end) only; the state is reset.
    void set_shard(std::size_t begin, std::size_t end) {
        this->take_shard(begin, end, "Optimizer<AdamW>");
        reset_state();
    }

    const Options& options() const { return options_; }

    static void validate(const Options& o) {
        MT_CHECK(o.beta1 >= 0 && o.beta1 < 1, "AdamW options: beta1 must be in [0, 1), got ", o.beta1);
        MT_CHECK(o.beta2 >= 0 && o.beta2 < 1, "AdamW options: beta2 must be in [0, 1), got ", o.beta2);
        MT_CHECK(o.eps >= 0 && std::isfinite(o.eps), "AdamW options: eps must be finite and >= 0, got ", o.eps);
        MT_CHECK(o.weight_decay >= 0 && std::isfinite(o.weight_decay),
                 "AdamW options: weight_decay must be finite and >= 0, got ", o.weight_decay);
        MT_CHECK(o.lr >= 0 && std::isfinite(o.lr), "AdamW options: lr must be finite and >= 0, got ", o.lr);
    }

private:
    Options options_;
    Buffer<Backend> m_, v_;  // (trainable_count) exp_avg, exp_avg_sq; segment state at grad_offset
};

}  // namespace minitrain
