// minitrain/optim/sgd.hpp
// Stochastic gradient descent as torch.optim.SGD computes it: optional momentum (with dampening and
// Nesterov) and coupled L2 weight decay (g + weight_decay*p), the decay again only on parameters whose
// ParameterSet `decay` flag is set. Plain SGD (momentum 0) has no state at all.
//
// State: momentum_buffer, one f32 slab shaped like the gradient slab, allocated only when momentum > 0.
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

/// Optimizer tag: `Optimizer<SGD>`. Defaults are PyTorch's.
struct SGD {
    static constexpr std::string_view name = "sgd";
    struct Options {
        double lr = 1e-3;            // used by step() without an argument; the trainer passes the schedule's lr
        double momentum = 0.0;       // > 0 allocates a momentum buffer
        double dampening = 0.0;
        double weight_decay = 0.0;   // coupled L2: g += weight_decay*p, on `decay` parameters only
        bool nesterov = false;       // needs momentum > 0 and dampening == 0
    };
};

template <class Backend>
class Optimizer<SGD, Backend> : public detail::OptimizerBase<Backend> {
    using Base = detail::OptimizerBase<Backend>;

public:
    using Algo = SGD;
    using Options = SGD::Options;
    using backend_type = Backend;
    static constexpr std::string_view name = SGD::name;

    explicit Optimizer(ParameterSet<Backend>& params, Options options = {})
        : Base(params, "Optimizer<SGD>"), options_(options) {
        validate(options_);
        reset_state();
    }

    /// One update of every trainable parameter from the gradient slab, with learning rate `lr`. The first
    /// update after construction or reset_state() (steps() == 0) seeds the momentum buffer with the
    /// gradient, as PyTorch does.
    void step(double lr) {
        Base::check_lr(lr, "Optimizer<SGD>");
        this->check_layout("Optimizer<SGD>::step");
        const ParameterSet<Backend>& ps = *this->params_;
        const bool first = this->steps_ == 0;
        this->for_each_piece([&](std::size_t p, std::size_t g, std::size_t st, std::size_t n, bool decay) {
            Tensor buf = buf_.tensor().defined() ? Base::view(buf_.tensor(), st, n) : Tensor{};
            sgd_update(Backend{}, Base::view(ps.data(), p, n), Base::view(ps.grads(), g, n), buf, lr, options_.momentum,
                       options_.dampening, decay ? options_.weight_decay : 0.0, options_.nesterov, first);
        });
        this->steps_ += 1;
    }
    void step() { step(options_.lr); }

    /// ("momentum_buffer", buf) when momentum > 0 and something is trainable, otherwise empty.
    /// A writable view of the state slab, (trainable_count) f32.
    std::vector<std::pair<std::string, Tensor>> state() const {
        std::vector<std::pair<std::string, Tensor>> out;
        if (buf_.tensor().defined()) out.emplace_back("momentum_buffer", buf_.tensor());
        return out;
    }

    /// Fresh state for the set's current trainable layout and steps() = 0.
    void reset_state() {
        this->take_layout();
        buf_ = options_.momentum > 0 ? this->make_slab() : Buffer<Backend>();
        this->steps_ = 0;
    }

    /// ZeRO-1: state for, and updates of, gradient-slab elements [begin, end) only; the state is reset.
    void set_shard(std::size_t begin, std::size_t end) {
        this->take_shard(begin, end, "Optimizer<SGD>");
        reset_state();
    }

    const Options& options() const { return options_; }

    static void validate(const Options& o) {
        MT_CHECK(o.lr >= 0 && std::isfinite(o.lr), "SGD options: lr must be finite and >= 0, got ", o.lr);
        MT_CHECK(o.momentum >= 0 && std::isfinite(o.momentum), "SGD options: momentum must be finite and >= 0, got ",
                 o.momentum);
        MT_CHECK(std::isfinite(o.dampening), "SGD options: dampening must be finite, got ", o.dampening);
        MT_CHECK(o.weight_decay >= 0 && std::isfinite(o.weight_decay),
                 "SGD options: weight_decay must be finite and >= 0, got ", o.weight_decay);
        MT_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
                 "SGD options: nesterov needs momentum > 0 and dampening == 0, got momentum ", o.momentum,
                 " and dampening ", o.dampening);
    }

private:
    Options options_;
    Buffer<Backend> buf_;  // (trainable_count) momentum buffer when momentum > 0; segment state at grad_offset
};

}  // namespace minitrain
