// minitrain/memory/arena.hpp
// Arena: bump allocation for everything that lives one training step (activations, tape closures).
// reset() makes the whole arena free again in O(1). When a step needs more than the arena holds, it
// chains extra blocks; the next reset() replaces them with one block of the high-water size, so from the
// second step on a steady-state step allocates nothing from the heap.
//
// GradPool: activation gradients are born during backward and die as soon as their producer's backward
// has run; the pool recycles such buffers by size class. Free lists are kept on the host, so the same
// pool works for device memory.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <new>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../backend/cpu/cpu.hpp"
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
            // A quarter of headroom: step sizes that depend on the data (MoE routing) then fit next time.
            std::size_t total = 0;
            for (auto& b : blocks_) total += b.size;
            release_all();
            blocks_.push_back(make_block(total + total / 4));
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
    /// Buffers come from `storage`; the free-list nodes live in `host`, so no list touches device memory
    /// and none is ever heap-allocated. Both arenas are reset together with the pool.
    GradPool(Arena<Backend>& storage, Arena<CPU>& host) : storage_(storage), host_(host) { heads_.fill(nullptr); }

    Tensor acquire(Shape shape, DType dtype) {
        Tensor t;
        t.shape = shape;
        t.dtype = dtype;
        t.device = Backend::device;
        const int c = size_class(t.bytes());
        if (Node* n = heads_[std::size_t(c)]) {
            heads_[std::size_t(c)] = n->next;
            t.ptr = n->ptr;
            return t;
        }
        t.ptr = storage_.allocate(class_bytes(c));
        return t;
    }

    void release(const Tensor& t) {
        const int c = size_class(t.bytes());
        Node* n = new (host_.allocate(sizeof(Node), alignof(Node))) Node{t.ptr, heads_[std::size_t(c)]};
        heads_[std::size_t(c)] = n;
    }

    /// Forget every buffer (their arena is being reset).
    void reset() { heads_.fill(nullptr); }

    /// Buffers are recycled by size class: 8 classes per power of two, so a buffer is at most 12.5%
    /// larger than asked for, and data-dependent sizes (MoE experts' token counts) still find a free
    /// buffer of their class instead of growing the arena every step.
    static int size_class(std::size_t bytes) {
        if (bytes <= 64) return 0;
        const int e = int(std::bit_width(bytes - 1)) - 1;  // 2^e < bytes <= 2^(e+1)
        if (e < 3) return 1;
        const std::size_t step = std::size_t(1) << (e - 3);
        const std::size_t s = (bytes - (std::size_t(1) << e) + step - 1) / step;  // 1..8
        return 8 * e + int(s);
    }
    static std::size_t class_bytes(int c) {
        if (c == 0) return 64;
        if (c == 1) return 128;
        const int e = (c - 1) / 8;
        const std::size_t s = std::size_t(c - 8 * e);
        return (std::size_t(1) << e) + s * (std::size_t(1) << (e - 3));
    }

private:
    struct Node {
        void* ptr;
        Node* next;
    };
    Arena<Backend>& storage_;
    Arena<CPU>& host_;
    std::array<Node*, 8 * 64 + 1> heads_;
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
