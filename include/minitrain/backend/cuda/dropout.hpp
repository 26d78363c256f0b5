// minitrain/backend/cuda/dropout.hpp
// Inverted dropout on the GPU with the CPU backend's counter-based mask (backend/cpu/dropout.hpp):
// element i is kept when uniform01(seed, offset + i) >= float(p) (core/random.hpp, the same function on
// host and device), and kept elements are scaled by T(1 / (1 - p)) computed in double on the host. The
// mask and the output therefore match the CPU backend bit for bit; the backward regenerates the mask.
//
// N = elements (dropout is elementwise; the shape does not matter).
#pragma once

#include <cstdint>

#include "cuda.hpp"
#include "../../core/random.hpp"

namespace minitrain {

namespace cuda {
/// y (=|+=) x * mask * scale over all elements, mask drawn from (seed, offset + i).
template <class T>
__global__ void dropout_kernel(T* y, const T* x, std::int64_t n, float threshold, T scale, std::uint64_t seed,
                               std::uint64_t offset, bool accumulate) {
    MT_CUDA_GRID_LOOP(i, n) {
        const T v = uniform01(seed, offset + std::uint64_t(i)) >= threshold ? x[i] * scale : T(0);
        if (accumulate)
            y[i] += v;
        else
            y[i] = v;
    }
}

template <class T>
void dropout_launch(T* y, const T* x, std::int64_t n, double p, std::uint64_t seed, std::uint64_t offset,
                    bool accumulate) {
    if (!n) return;
    const T scale = p < 1 ? T(1.0 / (1.0 - p)) : T(0);
    dropout_kernel<T><<<grid_for(n), threads, 0, CUDA::stream()>>>(y, x, n, float(p), scale, seed, offset,
                                                                   accumulate);
    MT_CUDA_LAUNCHED();
}
}  // namespace cuda

/// y = x * mask / (1 - p).   x, y: any shape, same type (y may alias x).  p in [0, 1] (p = 1 gives zeros).
inline void dropout_forward(CUDA, const Tensor& y, const Tensor& x, double p, std::uint64_t seed,
                            std::uint64_t offset) {
    MT_CHECK(p >= 0 && p <= 1, "dropout: drop probability must be in [0, 1], found ", p);
    check_same(y, x, "dropout", "output", "input");
    CUDA::on_device(y, "dropout", "output");
    CUDA::on_device(x, "dropout", "input");
    dispatch_floating(x.dtype, "dropout", [&]<class T>() {
        cuda::dropout_launch<T>(y.data<T>(), x.data<T>(), x.numel(), p, seed, offset, false);
    });
}

/// dx (=|+=) dy * mask / (1 - p), the mask regenerated from the forward's (seed, offset).
inline void dropout_backward(CUDA, GradOut dx, const Tensor& dy, double p, std::uint64_t seed,
                             std::uint64_t offset) {
    if (!dx) return;
    MT_CHECK(p >= 0 && p <= 1, "dropout_backward: drop probability must be in [0, 1], found ", p);
    check_same(dx.t, dy, "dropout_backward", "dx", "dy");
    CUDA::on_device(dx.t, "dropout_backward", "dx");
    CUDA::on_device(dy, "dropout_backward", "dy");
    dispatch_floating(dy.dtype, "dropout_backward", [&]<class T>() {
        cuda::dropout_launch<T>(dx.t.data<T>(), dy.data<T>(), dy.numel(), p, seed, offset, dx.accumulate);
    });
}

}  // namespace minitrain
