// minitrain/core/tensor.hpp
// Tensor: a non-owning view of contiguous, row-major storage with a shape, an element type and a device.
// Storage belongs to an Arena (activations), a ParameterSet slab (weights, gradients, optimizer state)
// or a Buffer (anything else). Views are cheap to copy and never copy data behind your back.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dtype.hpp"
#include "shape.hpp"

namespace minitrain {

struct Tensor {
    void* ptr = nullptr;
    Shape shape;
    DType dtype = DType::f32;
    Device device = Device::cpu;

    bool defined() const { return ptr != nullptr; }
    explicit operator bool() const { return defined(); }
    std::int64_t numel() const { return shape.numel(); }
    std::size_t bytes() const { return std::size_t(numel()) * dtype_size(dtype); }

    /// Typed pointer; the element type must match (no silent reinterpretation).
    template <class T>
    T* data() const {
        MT_CHECK(dtype == dtype_of<T>(), "Tensor::data: tensor holds ", dtype_name(dtype), ", asked for ",
                 dtype_name(dtype_of<T>()));
        return static_cast<T*>(ptr);
    }

    /// Same storage, new shape with the same element count.
    Tensor view(Shape s) const {
        MT_CHECK(s.numel() == numel(), "Tensor::view: ", shape, " has ", numel(), " elements, ", s, " needs ",
                 s.numel());
        Tensor t = *this;
        t.shape = s;
        return t;
    }

    /// Rows [begin, end) of the tensor seen as (rows, cols); contiguous, so still a plain view.
    Tensor rows(std::int64_t begin, std::int64_t end) const {
        MT_CHECK(0 <= begin && begin <= end && end <= shape[0], "Tensor::rows: [", begin, ", ", end,
                 ") outside dimension 0 of ", shape);
        Tensor t = *this;
        std::int64_t stride = shape[0] ? numel() / shape[0] : 0;
        t.ptr = static_cast<std::byte*>(ptr) + std::size_t(begin * stride) * dtype_size(dtype);
        t.shape.dims[0] = end - begin;
        return t;
    }
};

/// A gradient destination handed to an op's backward: write (`=`) when accumulate is false,
/// add (`+=`) when it is true. An undefined tensor means "this input needs no gradient": skip the work.
struct GradOut {
    Tensor t;
    bool accumulate = false;
    explicit operator bool() const { return t.defined(); }
};

inline void check_shape(const Tensor& t, const Shape& expected, const char* op, const char* name) {
    MT_CHECK(t.shape == expected, op, ": ", name, " has shape ", t.shape, ", expected ", expected);
}

inline void check_same(const Tensor& a, const Tensor& b, const char* op, const char* na, const char* nb) {
    MT_CHECK(a.shape == b.shape, op, ": ", na, " has shape ", a.shape, " but ", nb, " has shape ", b.shape);
    MT_CHECK(a.dtype == b.dtype, op, ": ", na, " is ", dtype_name(a.dtype), " but ", nb, " is ",
             dtype_name(b.dtype));
}

}  // namespace minitrain
