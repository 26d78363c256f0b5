// minitrain/autograd/graph.hpp
// The autograd tape and the per-step memory of a forward/backward pass.
//
// A forward op allocates its outputs here, runs its backend kernel and, when some input needs a gradient
// and gradients are enabled, records one node: the outputs it produced and a closure holding only what
// its backward needs (input Vars, saved tensors, scalars). backward(loss) replays the nodes in reverse;
// each node's closure asks grad_of(input) for where to write and whether to add. A node whose outputs
// received no gradient is skipped, and an input that needs none gets an undefined GradOut: no work.
//
// Closures are copied into the arena (they must be trivially destructible: capture Var pointers,
// Tensors and numbers by value), the tape keeps its capacity across steps, and activation gradients are
// recycled through a GradPool, so a steady-state step makes no heap allocation.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "../backend/cpu/cpu.hpp"
#include "../core/random.hpp"
#include "../memory/arena.hpp"
#include "var.hpp"

namespace minitrain {

template <class Backend>
class Graph {
public:
    using backend = Backend;

    explicit Graph(std::size_t data_bytes = 0, std::size_t grad_bytes = 0, std::uint64_t seed = 0)
        : data_(data_bytes), grads_(grad_bytes), pool_(grads_, host_) {
        rng_.seed = seed;
        tape_.reserve(256);
    }
    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;

    // ---- building the graph ------------------------------------------------------------------------

    /// A Var around existing storage (a batch, a test input). It needs a gradient only if asked.
    Var& leaf(const Tensor& t, bool requires_grad = false) {
        Var& v = *new (host_.allocate(sizeof(Var), alignof(Var))) Var{};
        v.data = t;
        v.requires_grad = requires_grad;
        return v;
    }

    /// A fresh output Var with uninitialized data.
    Var& make(Shape shape, DType dtype, bool requires_grad) {
        return leaf(data_.tensor(shape, dtype), requires_grad);
    }

    /// Step-lifetime storage for an op: saved tensors for backward, or scratch.
    Tensor scratch(Shape shape, DType dtype) { return data_.tensor(shape, dtype); }

    /// Step-lifetime host memory for small per-node arrays (lists of Vars, routing tables).
    template <class T>
    T* host_array(std::size_t n) {
        static_assert(std::is_trivially_destructible_v<T>, "host_array: trivially destructible types only");
        return static_cast<T*>(host_.allocate(sizeof(T) * n, alignof(T) < 8 ? 8 : alignof(T)));
    }

    /// True when an op on these inputs must record a node.
    template <class... Vars>
    bool needs_grad(const Vars&... vars) const {
        return grad_enabled_ && (vars.requires_grad || ...);
    }

    /// Record a backward node for `outputs` (at most two). `fn(Graph&)` runs during backward.
    template <class F>
    void record(std::initializer_list<Var*> outputs, F fn) {
        static_assert(std::is_trivially_destructible_v<F>,
                      "a backward closure must be trivially destructible: capture Var pointers, Tensors and "
                      "numbers by value");
        MT_CHECK(outputs.size() >= 1 && outputs.size() <= 2, "Graph::record: a node has one or two outputs");
        void* mem = host_.allocate(sizeof(F), alignof(F));
        new (mem) F(std::move(fn));
        Node n{};
        int i = 0;
        for (Var* v : outputs) n.outputs[i++] = v;
        n.run = [](void* closure, Graph& g) { (*static_cast<F*>(closure))(g); };
        n.closure = mem;
        tape_.push_back(n);
    }

    // ---- backward -------------------------------------------------------------------------------------

    /// Where an op's backward writes the gradient of `v`: undefined when v needs none; a fresh buffer to
    /// overwrite on first arrival; the existing buffer to add to afterwards (always for parameters).
    GradOut grad_of(Var& v) {
        if (!v.requires_grad) return {};
        if (!v.grad.defined()) {
            v.grad = pool_.acquire(v.data.shape, grad_dtype(v.data.dtype));
            return {v.grad, false};
        }
        return {v.grad, true};
    }

    /// Backpropagate from a scalar loss with d(loss) = scale (use 1/accumulation_steps for micro-batches).
    void backward(Var& loss, double scale = 1.0) {
        MT_CHECK(loss.data.numel() == 1, "backward: the loss must have one element, it has shape ",
                 loss.data.shape);
        MT_CHECK(loss.requires_grad, "backward: the loss does not depend on anything that needs a gradient");
        GradOut seed = grad_of(loss);
        fill(Backend{}, seed.t, scale);
        replay();
    }

    /// Backpropagate from any output with a given upstream gradient (copied; same shape and type).
    void backward(Var& out, const Tensor& upstream) {
        check_same(out.data, upstream, "backward", "output", "upstream gradient");
        MT_CHECK(out.requires_grad, "backward: the output does not depend on anything that needs a gradient");
        GradOut seed = grad_of(out);
        Backend::copy(seed.t, upstream);
        replay();
    }

    // ---- step lifetime -------------------------------------------------------------------------------

    /// Start a new step: every activation, saved tensor and activation gradient of the last one is freed.
    void reset() {
        tape_.clear();
        pool_.reset();
        grads_.reset();
        data_.reset();
        host_.reset();
    }

    bool grad_enabled() const { return grad_enabled_; }
    void set_grad_enabled(bool on) { grad_enabled_ = on; }
    /// Training mode turns dropout on.
    bool training() const { return training_; }
    void set_training(bool on) { training_ = on; }
    Rng& rng() { return rng_; }
    std::size_t tape_size() const { return tape_.size(); }
    /// Bytes of activations and activation gradients at the high-water mark.
    std::size_t peak_bytes() const { return data_.high_water() + grads_.high_water(); }
    std::size_t arena_growths() const { return data_.growths() + grads_.growths() + host_.growths(); }

private:
    /// Gradients are f32 for an activation stored in bf16 (ops/activation_dtype: read only by bf16 products).
    static DType grad_dtype(DType data) { return data == DType::bf16 ? DType::f32 : data; }

    struct Node {
        Var* outputs[2];
        void (*run)(void*, Graph&);
        void* closure;
    };

    void replay() {
        for (std::size_t i = tape_.size(); i-- > 0;) {
            Node& n = tape_[i];
            bool any = false;
            for (Var* v : n.outputs)
                if (v && v->grad.defined()) any = true;
            if (!any) continue;  // nothing downstream needs this node's inputs
            for (Var* v : n.outputs)
                if (v && !v->grad.defined()) {  // the other output of a pair got no gradient: zero
                    v->grad = pool_.acquire(v->data.shape, grad_dtype(v->data.dtype));
                    Backend::zero(v->grad);
                }
            n.run(n.closure, *this);
            for (Var* v : n.outputs)
                if (v && v->grad.defined() && !v->persistent_grad) {
                    pool_.release(v->grad);  // consumed: its producer was the last reader
                    v->grad = {};
                }
        }
        tape_.clear();
    }

    Arena<CPU> host_{1 << 16};  // Var structs and closures: host memory whatever the backend
    Arena<Backend> data_;       // activations and saved tensors
    Arena<Backend> grads_;      // activation gradients, recycled by pool_
    GradPool<Backend> pool_;
    std::vector<Node> tape_;
    Rng rng_;
    bool grad_enabled_ = true;
    bool training_ = true;
};

/// Inside this scope nothing is recorded: evaluation and generation.
template <class Backend>
class NoGrad {
public:
    explicit NoGrad(Graph<Backend>& g) : g_(g), prev_(g.grad_enabled()) { g.set_grad_enabled(false); }
    ~NoGrad() { g_.set_grad_enabled(prev_); }
    NoGrad(const NoGrad&) = delete;
    NoGrad& operator=(const NoGrad&) = delete;

private:
    Graph<Backend>& g_;
    bool prev_;
};

}  // namespace minitrain
