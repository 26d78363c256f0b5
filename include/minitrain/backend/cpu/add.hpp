// minitrain/backend/cpu/add.hpp
// Residual add and gradient accumulation: memory-bound elementwise loops, vectorized by Eigen and split
// across threads by OpenMP.
#pragma once

#include "cpu.hpp"
#include "eigen.hpp"

namespace minitrain {

namespace cpu {
/// Run f(begin, end) over [0, n) in contiguous chunks, one per thread, when n is large enough to pay.
template <class F>
void parallel_chunks(std::int64_t n, F&& f) {
    constexpr std::int64_t grain = 1 << 15;
    if (n < 2 * grain) {
        f(std::int64_t(0), n);
        return;
    }
#pragma omp parallel
    {
#if defined(_OPENMP)
        std::int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
#else
        std::int64_t nt = 1, id = 0;
#endif
        std::int64_t chunk = (n + nt - 1) / nt, b = id * chunk, e = std::min(n, b + chunk);
        if (b < e) f(b, e);
    }
}

template <class T>
Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> array(const Tensor& t, std::int64_t begin, std::int64_t end) {
    return {t.data<T>() + begin, end - begin};
}
}  // namespace cpu

/// y = a + b (y may alias a or b).
inline void add_forward(CPU, const Tensor& y, const Tensor& a, const Tensor& b) {
    check_same(a, b, "add", "a", "b");
    check_same(y, a, "add", "output", "a");
    dispatch_floating(a.dtype, "add", [&]<class T>() {
        cpu::parallel_chunks(a.numel(), [&](std::int64_t s, std::int64_t e) {
            cpu::array<T>(y, s, e) = cpu::array<T>(a, s, e) + cpu::array<T>(b, s, e);
        });
    });
}

/// d (=|+=) src: the one way a gradient is passed through unchanged.
inline void accumulate(CPU, GradOut d, const Tensor& src) {
    if (!d) return;
    check_same(d.t, src, "accumulate", "gradient", "source");
    dispatch_floating(src.dtype, "accumulate", [&]<class T>() {
        cpu::parallel_chunks(src.numel(), [&](std::int64_t s, std::int64_t e) {
            if (d.accumulate)
                cpu::array<T>(d.t, s, e) += cpu::array<T>(src, s, e);
            else
                cpu::array<T>(d.t, s, e) = cpu::array<T>(src, s, e);
        });
    });
}

/// The gradient of a sum reaches both summands unchanged.
inline void add_backward(CPU, GradOut da, GradOut db, const Tensor& dy) {
    accumulate(CPU{}, da, dy);
    accumulate(CPU{}, db, dy);
}

}  // namespace minitrain
