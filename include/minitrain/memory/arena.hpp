// minitrain/memory/arena.hpp
// Arena: bump allocation for everything that lives one training step (activations, tape closures).
// reset() makes the whole arena free again in O(1). When a step needs more than the arena holds, it
// chains extra blocks; the next reset() replaces them with one block of the high-water size, so from the
// second step on a steady-state step allocates nothing from the heap.
//
// GradPool: activation gradients are born during backward and die as soon as their producer's backward
// has run; the pool recycles such buffers by exact byte size. Free lists are kept on the host, so the
// same pool works for device memory.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"

namespace minitrain {

template <class Backend>
class Arena {
public:
    explicit Arena(std::size_t initial_bytes = 0) {
        if (initial_bytes) blocks_.push_back(make_block(initial_bytes));
    }
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    ~Arena() { release_all(); }

    /// `bytes` of storage aligned to `align` (a power of two no larger than the backend's alignment).
    void* allocate(std::size_t bytes, std::size_t align = Backend::alignment) {
        if (!blocks_.empty()) {
            Block& b = blocks_.back();
            std::size_t at = (b.used + align - 1) & ~(align - 1);
            if (at + bytes <= b.size) {
                b.used = at + bytes;
                in_use_ += bytes;
                high_water_ = std::max(high_water_, in_use_ + waste_);
                return static_cast<std::byte*>(b.ptr) + at;
            }
            waste_ += b.size - b.used;  // the tail of a full block is not reused until reset
        }
        std::size_t grow = blocks_.empty() ? 0 : blocks_.back().size;
        blocks_.push_back(make_block(std::max({bytes + align, grow, std::size_t(1) << 20})));
        ++growths_;
        return allocate(bytes, align);
    }

    /// A tensor of the given shape and type carved from the arena (uninitialized).
    Tensor tensor(Shape shape, DType dtype) {
        Tensor t;
        t.shape = shape;
        t.dtype = dtype;
        t.device = Backend::device;
        t.ptr = allocate(t.bytes());
        return t;
    }

    /// Frees everything at once. If the last step overflowed into several blocks, they are replaced by
    /// a single block large enough for all of it.
    void reset() {
        if (blocks_.size() > 1) {
            std::size_t total = 0;
            for (auto& b : blocks_) total += b.size;
            release_all();
            blocks_.push_back(make_block(total));
        }
        if (!blocks_.empty()) blocks_.back().used = 0;
        in_use_ = waste_ = 0;
    }

    std::size_t capacity() const {
        std::size_t n = 0;
        for (auto& b : blocks_) n += b.size;
        return n;
    }
    std::size_t in_use() const { return in_use_; }
    std::size_t high_water() const { return high_water_; }
    /// How many times the arena had to take a new block from the backend (0 in a steady state).
    std::size_t growths() const { return growths_; }

private:
    struct Block {
        void* ptr;
        std::size_t size;
        std::size_t used;
    };
    static Block make_block(std::size_t bytes) { return {Backend::allocate(bytes), bytes, 0}; }
    void release_all() {
        for (auto& b : blocks_) Backend::deallocate(b.ptr, b.size);
        blocks_.clear();
    }

    std::vector<Block> blocks_;
    std::size_t in_use_ = 0, waste_ = 0, high_water_ = 0, growths_ = 0;
};

template <class Backend>
class GradPool {
public:
    explicit GradPool(Arena<Backend>& arena) : arena_(arena) {}

    Tensor acquire(Shape shape, DType dtype) {
        Tensor t;
        t.shape = shape;
        t.dtype = dtype;
        t.device = Backend::device;
        std::size_t bytes = t.bytes();
        for (auto& b : buckets_)
            if (b.bytes == bytes && !b.free.empty()) {
                t.ptr = b.free.back();
                b.free.pop_back();
                return t;
            }
        t.ptr = arena_.allocate(bytes);
        return t;
    }

    void release(const Tensor& t) {
        std::size_t bytes = t.bytes();
        for (auto& b : buckets_)
            if (b.bytes == bytes) {
                b.free.push_back(t.ptr);
                return;
            }
        buckets_.push_back({bytes, {}});
        buckets_.back().free.reserve(16);
        buckets_.back().free.push_back(t.ptr);
    }

    /// Forget every buffer (their arena is being reset); bucket capacity is kept for the next step.
    void reset() {
        for (auto& b : buckets_) b.free.clear();
    }

private:
    struct Bucket {
        std::size_t bytes;
        std::vector<void*> free;
    };
    Arena<Backend>& arena_;
    std::vector<Bucket> buckets_;
};

/// An owning, backend-allocated tensor for data that outlives a step (batches, test inputs, caches).
template <class Backend>
class Buffer {
public:
    Buffer() = default;
    Buffer(Shape shape, DType dtype) {
        t_.shape = shape;
        t_.dtype = dtype;
        t_.device = Backend::device;
        t_.ptr = Backend::allocate(t_.bytes());
    }
    Buffer(Buffer&& o) noexcept : t_(o.t_) { o.t_.ptr = nullptr; }
    Buffer& operator=(Buffer&& o) noexcept {
        if (this != &o) {
            free();
            t_ = o.t_;
            o.t_.ptr = nullptr;
        }
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { free(); }

    const Tensor& tensor() const { return t_; }
    operator const Tensor&() const { return t_; }
    template <class T>
    T* data() const {
        return t_.data<T>();
    }

private:
    void free() {
        if (t_.ptr) Backend::deallocate(t_.ptr, t_.bytes());
        t_.ptr = nullptr;
    }
    Tensor t_;
};

}  // namespace minitrain
