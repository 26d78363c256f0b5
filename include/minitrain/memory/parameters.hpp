// minitrain/memory/parameters.hpp
// ParameterSet: every parameter of a model in one contiguous slab, their gradients in a second slab and
// (owned by the optimizer) the optimizer state in slabs laid out exactly like the gradient slab. One
// all-reduce covers all gradients; one loop updates all parameters.
//
// Lifecycle: add() every parameter, then finalize() allocates. freeze()/unfreeze() may follow (LoRA
// freezes the base): the gradient slab then covers only trainable parameters, so frozen weights cost
// neither gradient memory nor gradient work. Registration order is slab order.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "../autograd/var.hpp"
#include "arena.hpp"

namespace minitrain {

struct Parameter {
    std::string name;
    Shape shape;
    bool decay = true;         // receives weight decay (2-D weight matrices by default)
    bool frozen = false;
    std::size_t offset = 0;    // elements into the data slab
    std::size_t grad_offset = 0;  // elements into the gradient slab (trainable parameters only)
    Var var;                   // data: view of the data slab; grad: view of the gradient slab or undefined
};

/// A contiguous run of trainable parameters with the same decay flag, for one optimizer loop.
struct Segment {
    std::size_t offset;       // into the data slab
    std::size_t grad_offset;  // into the gradient slab and the optimizer state
    std::size_t count;
    bool decay;
};

template <class Backend>
class ParameterSet {
public:
    ParameterSet() = default;
    ParameterSet(const ParameterSet&) = delete;
    ParameterSet& operator=(const ParameterSet&) = delete;

    /// Register a parameter; its Var stays at the same address for the set's lifetime.
    /// Weight decay defaults to on for matrices (rank >= 2) and off for vectors (norm gains).
    Var& add(std::string name, Shape shape, int decay = -1) {
        MT_CHECK(!finalized_, "ParameterSet::add(\"", name, "\"): the set is already finalized");
        for (auto& p : params_) MT_CHECK(p.name != name, "ParameterSet::add: duplicate parameter name \"", name, "\"");
        Parameter& p = params_.emplace_back();
        p.name = std::move(name);
        p.shape = shape;
        p.decay = decay < 0 ? shape.rank >= 2 : decay != 0;
        p.offset = count_;
        count_ += std::size_t(shape.numel());
        return p.var;
    }

    /// Allocate the data slab (uninitialized) and the gradient slab (zeroed).
    void finalize() {
        MT_CHECK(!finalized_, "ParameterSet::finalize: called twice");
        data_ = Buffer<Backend>(Shape{std::int64_t(count_)}, DType::f32);
        for (auto& p : params_) {
            p.var.data = slice(data_.tensor(), p.offset, p.shape);
        }
        finalized_ = true;
        layout_grads();
    }

    /// Register one more parameter after finalize(): both slabs are reallocated, the existing values are
    /// kept (they stay a prefix of the data slab, in the same order), the new one is uninitialized, every
    /// gradient is zeroed. For a head added to a built model (train/reward.hpp's score) before any graph,
    /// optimizer or view of the slabs exists: those would still point at the old slabs.
    Var& append(std::string name, Shape shape, int decay = -1) {
        MT_CHECK(finalized_, "ParameterSet::append(\"", name, "\"): finalize() first (before it, use add)");
        finalized_ = false;
        Buffer<Backend> old = std::move(data_);
        Var& v = add(std::move(name), shape, decay);
        data_ = Buffer<Backend>(Shape{std::int64_t(count_)}, DType::f32);
        const std::int64_t kept = old.tensor().defined() ? old.tensor().numel() : 0;
        if (kept) Backend::copy(data_.tensor().rows(0, kept), old.tensor());
        for (auto& p : params_) p.var.data = slice(data_.tensor(), p.offset, p.shape);
        finalized_ = true;
        layout_grads();
        return v;
    }

    void freeze(const std::function<bool(const Parameter&)>& which) { set_frozen(which, true); }
    void unfreeze(const std::function<bool(const Parameter&)>& which) { set_frozen(which, false); }
    void freeze_all() { set_frozen([](const Parameter&) { return true; }, true); }

    void zero_grad() {
        if (grads_.tensor().defined()) Backend::zero(grads_.tensor());
    }

    Parameter& find(std::string_view name) {
        for (auto& p : params_)
            if (p.name == name) return p;
        detail::fail("ParameterSet: no parameter named \"", name, "\"");
    }
    Parameter* try_find(std::string_view name) {
        for (auto& p : params_)
            if (p.name == name) return &p;
        return nullptr;
    }

    std::deque<Parameter>& all() { return params_; }
    const std::deque<Parameter>& all() const { return params_; }
    const std::vector<Segment>& segments() const { return segments_; }
    /// The whole data slab (f32, count() elements).
    const Tensor& data() const { return data_.tensor(); }
    /// The whole gradient slab (f32, trainable_count() elements; undefined when nothing is trainable).
    const Tensor& grads() const { return grads_.tensor(); }
    std::size_t count() const { return count_; }
    std::size_t trainable_count() const { return trainable_; }
    bool finalized() const { return finalized_; }

private:
    static Tensor slice(const Tensor& slab, std::size_t offset, Shape shape) {
        Tensor t = slab;
        t.ptr = static_cast<float*>(slab.ptr) + offset;
        t.shape = shape;
        return t;
    }

    void set_frozen(const std::function<bool(const Parameter&)>& which, bool frozen) {
        MT_CHECK(finalized_, "ParameterSet: freeze/unfreeze after finalize()");
        bool changed = false;
        for (auto& p : params_)
            if (which(p) && p.frozen != frozen) {
                p.frozen = frozen;
                changed = true;
            }
        if (changed) layout_grads();
    }

    /// Gradient slab over trainable parameters in registration order; gradients start at zero.
    void layout_grads() {
        trainable_ = 0;
        segments_.clear();
        for (auto& p : params_) {
            if (p.frozen) continue;
            p.grad_offset = trainable_;
            std::size_t n = std::size_t(p.shape.numel());
            if (!segments_.empty() && segments_.back().decay == p.decay &&
                segments_.back().offset + segments_.back().count == p.offset)
                segments_.back().count += n;
            else
                segments_.push_back({p.offset, trainable_, n, p.decay});
            trainable_ += n;
        }
        grads_ = trainable_ ? Buffer<Backend>(Shape{std::int64_t(trainable_)}, DType::f32) : Buffer<Backend>();
        zero_grad();
        for (auto& p : params_) {
            p.var.requires_grad = !p.frozen;
            p.var.persistent_grad = true;
            p.var.grad = p.frozen ? Tensor{} : slice(grads_.tensor(), p.grad_offset, p.shape);
        }
    }

    std::deque<Parameter> params_;
    std::vector<Segment> segments_;
    Buffer<Backend> data_, grads_;
    std::size_t count_ = 0, trainable_ = 0;
    bool finalized_ = false;
};

}  // namespace minitrain
