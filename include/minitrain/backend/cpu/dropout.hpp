// minitrain/backend/cpu/dropout.hpp
// Inverted dropout on the CPU with a counter-based mask: element i is kept when
//     uniform01(seed, offset + i) >= float(p)          (core/random.hpp; the comparison is made in f32)
// and kept elements are scaled by 1 / (1 - p) (computed in double, rounded to the element type), so
// y = x * mask / (1 - p). The mask is a pure function of (seed, offset + i): the backward regenerates it
// instead of storing it, any thread (or a CUDA kernel using the same rule) draws any element independently,
// and the result does not depend on how the work is split.
//
// N = elements (dropout is elementwise; the shape does not matter).
#pragma once

#include <cstdint>

#include "add.hpp"
#include "cpu.hpp"
#include "../../core/random.hpp"

namespace minitrain {

namespace cpu {
/// y (=|+=) x * mask * scale over all elements, mask drawn from (seed, offset + i).
template <class T>
void dropout_apply(T* y, const T* x, std::int64_t n, double p, std::uint64_t seed, std::uint64_t offset,
                   bool accumulate) {
    const float threshold = float(p);
    const T scale = p < 1 ? T(1.0 / (1.0 - p)) : T(0);
    parallel_chunks(n, [=](std::int64_t s, std::int64_t e) {  // by value: loop invariants stay in registers
        if (accumulate) {
#pragma omp simd
            for (std::int64_t i = s; i < e; ++i) {
                const T xi = x[i];  // loaded unconditionally, so the select is a blend, not a masked load
                y[i] += uniform01(seed, offset + std::uint64_t(i)) >= threshold ? xi * scale : T(0);
            }
        } else {
#pragma omp simd
            for (std::int64_t i = s; i < e; ++i) {
                const T xi = x[i];
                y[i] = uniform01(seed, offset + std::uint64_t(i)) >= threshold ? xi * scale : T(0);
            }
        }
    });
}

inline void check_dropout_p(double p, const char* op) {
    MT_CHECK(p >= 0 && p <= 1, op, ": drop probability must be in [0, 1], found ", p);
}
}  // namespace cpu

/// y = x * mask / (1 - p).   x, y: any shape, same type (y may alias x).  p in [0, 1] (p = 1 gives zeros).
inline void dropout_forward(CPU, const Tensor& y, const Tensor& x, double p, std::uint64_t seed,
                            std::uint64_t offset) {
    cpu::check_dropout_p(p, "dropout");
    check_same(y, x, "dropout", "output", "input");
    dispatch_floating(x.dtype, "dropout", [&]<class T>() {
        cpu::dropout_apply<T>(y.data<T>(), x.data<T>(), x.numel(), p, seed, offset, false);
    });
}

/// dx (=|+=) dy * mask / (1 - p), the mask regenerated from the forward's (seed, offset).
inline void dropout_backward(CPU, GradOut dx, const Tensor& dy, double p, std::uint64_t seed,
                             std::uint64_t offset) {
    if (!dx) return;
    cpu::check_dropout_p(p, "dropout_backward");
    check_same(dx.t, dy, "dropout_backward", "dx", "dy");
    dispatch_floating(dy.dtype, "dropout_backward", [&]<class T>() {
        cpu::dropout_apply<T>(dx.t.data<T>(), dy.data<T>(), dy.numel(), p, seed, offset, dx.accumulate);
    });
}

}  // namespace minitrain
