// minitrain/optim/optimizer.hpp
// The optimizer policy. `Optimizer<Algo, Backend>` updates every trainable parameter of a ParameterSet in
// one pass per slab segment; `Algo` is a tag struct (AdamW, SGD) with its `Options`, and each algorithm is
// a specialization in its own header (optim/adamw.hpp, optim/sgd.hpp). The user names the algorithm,
// `Trainer<Net, Optimizer<AdamW>, ...>`, and the trainer picks the backend with rebind_optimizer_t.
//
// Optimizer state (moments, momentum buffers) lives in slabs laid out exactly like the gradient slab: the
// state of a segment starts at segment.grad_offset, so frozen parameters have no state at all.
//
// Every specialization provides:
//   Optimizer(ParameterSet<Backend>& params, Options options = {});
//   void step(double lr);                  one update with this learning rate, then steps() += 1
//   std::int64_t steps() const;  void set_steps(std::int64_t);
//   std::vector<std::pair<std::string, Tensor>> state() const;   views of the state slabs (checkpoints)
//   void reset_state();                    after freeze/unfreeze changed the trainable layout
//   void set_shard(begin, end);            ZeRO-1: keep state for, and update, only gradient-slab elements
//                                          [begin, end) (dist/comm.hpp's shard rule); state() is then that long
//   const Options& options() const;
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../fwd.hpp"
#include "../memory/arena.hpp"
#include "../memory/parameters.hpp"

namespace minitrain {

/// What an optimizer tag must provide: default-constructible `Options` and a `name` for logs and
/// checkpoints. `struct MyAlgo { static constexpr std::string_view name = "my"; struct Options {...}; };`
template <class Algo>
concept OptimizerAlgo = requires {
    typename Algo::Options;
    { Algo::name } -> std::convertible_to<std::string_view>;
} && std::default_initializable<typename Algo::Options>;

namespace detail {
template <class>
inline constexpr bool optim_always_false = false;
}  // namespace detail

/// Optimizer<Algo, Backend>: specialized once per algorithm (optim/adamw.hpp, optim/sgd.hpp). This primary
/// template only exists to turn a misuse into a sentence.
template <class Algo, class Backend = CPU>
class Optimizer {
    static_assert(OptimizerAlgo<Algo>,
                  "minitrain::Optimizer<Algo, Backend>: Algo must be an optimizer tag such as AdamW or SGD: a struct "
                  "with a nested default-constructible `Options` and a `static constexpr std::string_view name`");
    static_assert(!OptimizerAlgo<Algo>,
                  "minitrain::Optimizer<Algo, Backend>: no implementation of this algorithm; include its header "
                  "(minitrain/optim/adamw.hpp, minitrain/optim/sgd.hpp) or specialize Optimizer<Algo, Backend>");
};

/// True for every Optimizer<Algo, Backend>.
template <class T>
inline constexpr bool is_optimizer_v = false;
template <class Algo, class Backend>
inline constexpr bool is_optimizer_v<Optimizer<Algo, Backend>> = true;

/// rebind_optimizer_t<Optimizer<A, X>, B> is Optimizer<A, B>: the user picks the algorithm, the trainer
/// the backend.
template <class Opt, class Backend>
struct rebind_optimizer {
    static_assert(detail::optim_always_false<Opt>,
                  "minitrain::rebind_optimizer_t<Opt, Backend>: Opt must be an Optimizer<Algo, Backend>, "
                  "e.g. Optimizer<AdamW> or Optimizer<SGD>");
};
template <class Algo, class From, class Backend>
struct rebind_optimizer<Optimizer<Algo, From>, Backend> {
    using type = Optimizer<Algo, Backend>;
};
template <class Opt, class Backend>
using rebind_optimizer_t = typename rebind_optimizer<Opt, Backend>::type;

namespace detail {

/// What every optimizer shares: the parameter set, the step counter and the trainable layout its state
/// was allocated for (so that a freeze without reset_state() is caught instead of corrupting memory).
template <class Backend>
class OptimizerBase {
public:
    /// Updates performed so far (the `t` of bias corrections). Part of a checkpoint.
    std::int64_t steps() const { return steps_; }
    void set_steps(std::int64_t steps) {
        MT_CHECK(steps >= 0, "Optimizer::set_steps: the step count must be >= 0, got ", steps);
        steps_ = steps;
    }
    ParameterSet<Backend>& params() const { return *params_; }

    /// The gradient-slab elements [begin, end) this optimizer keeps state for and updates: the whole slab,
    /// or one rank's shard under ZeRO-1.
    std::size_t shard_begin() const { return shard_set_ ? begin_ : 0; }
    std::size_t shard_end() const { return shard_set_ ? end_ : count_; }
    bool sharded() const { return shard_set_ && (begin_ != 0 || end_ != count_); }

protected:
    OptimizerBase(ParameterSet<Backend>& params, std::string_view who) : params_(&params) {
        MT_CHECK(params.finalized(), who, ": the ParameterSet must be finalized before building the optimizer");
    }

    /// Remember the trainable layout the state is being allocated for.
    void take_layout() {
        layout_ = params_->segments();
        count_ = params_->trainable_count();
    }

    /// A zeroed state slab for the shard (the whole gradient slab by default; undefined when empty).
    Buffer<Backend> make_slab() const {
        const std::size_t n = shard_end() - shard_begin();
        if (!n) return Buffer<Backend>();
        Buffer<Backend> b(Shape{std::int64_t(n)}, DType::f32);
        Backend::zero(b.tensor());
        return b;
    }

    /// Restricts the state and the updates to gradient-slab elements [begin, end); reset_state() follows.
    void take_shard(std::size_t begin, std::size_t end, std::string_view who) {
        MT_CHECK(begin <= end && end <= params_->trainable_count(), who, "::set_shard: [", begin, ", ", end,
                 ") is not inside the ", params_->trainable_count(), " trainable elements");
        shard_set_ = true;
        begin_ = begin;
        end_ = end;
    }

    /// Calls f(param_offset, grad_offset, state_offset, count, decay) for every piece of a trainable segment
    /// inside the shard, in slab order (offsets in elements; state offsets relative to the state slabs).
    template <class F>
    void for_each_piece(F&& f) const {
        const std::size_t b = shard_begin(), e = shard_end();
        for (const Segment& s : params_->segments()) {
            const std::size_t lo = std::max(b, s.grad_offset), hi = std::min(e, s.grad_offset + s.count);
            if (lo < hi) f(s.offset + (lo - s.grad_offset), lo, lo - b, hi - lo, s.decay);
        }
    }

    void check_layout(std::string_view who) const {
        const auto& now = params_->segments();
        bool same = now.size() == layout_.size() && params_->trainable_count() == count_;
        for (std::size_t i = 0; same && i < now.size(); ++i)
            same = now[i].offset == layout_[i].offset && now[i].grad_offset == layout_[i].grad_offset &&
                   now[i].count == layout_[i].count && now[i].decay == layout_[i].decay;
        MT_CHECK(same, who, ": the parameter set's trainable layout changed since the optimizer state was allocated (",
                 count_, " -> ", params_->trainable_count(), " trainable elements); call reset_state() after freeze/unfreeze");
    }

    /// Elements [offset, offset + count) of a slab as a 1-D tensor.
    static Tensor view(const Tensor& slab, std::size_t offset, std::size_t count) {
        Tensor t = slab;
        t.ptr = static_cast<std::byte*>(slab.ptr) + offset * dtype_size(slab.dtype);
        t.shape = Shape{std::int64_t(count)};
        return t;
    }

    static void check_lr(double lr, std::string_view who) {
        MT_CHECK(std::isfinite(lr) && lr >= 0, who, "::step: the learning rate must be finite and >= 0, got ", lr);
    }

    ParameterSet<Backend>* params_;
    bool shard_set_ = false;
    std::size_t begin_ = 0, end_ = 0;  // the shard, when set
    std::vector<Segment> layout_;  // trainable segments when the state was allocated
    std::size_t count_ = 0;        // trainable elements when the state was allocated
    std::int64_t steps_ = 0;
};

}  // namespace detail

}  // namespace minitrain
