// minitrain/backend/cuda/add.hpp
// Residual add and gradient accumulation on the GPU: grid-stride elementwise kernels.
#pragma once

#include "cuda.hpp"

namespace minitrain {

namespace cuda {
template <class T>
__global__ void add_kernel(T* y, const T* a, const T* b, std::int64_t n) {
    MT_CUDA_GRID_LOOP(i, n) y[i] = a[i] + b[i];
}

/// d (=|+=) src.
template <class T>
__global__ void accumulate_kernel(T* d, const T* src, std::int64_t n, bool accumulate) {
    if (accumulate) {
        MT_CUDA_GRID_LOOP(i, n) d[i] += src[i];
    } else {
        MT_CUDA_GRID_LOOP(i, n) d[i] = src[i];
    }
}
}  // namespace cuda

/// y = a + b (y may alias a or b).
inline void add_forward(CUDA, const Tensor& y, const Tensor& a, const Tensor& b) {
    check_same(a, b, "add", "a", "b");
    check_same(y, a, "add", "output", "a");
    CUDA::on_device(y, "add", "output");
    CUDA::on_device(a, "add", "a");
    CUDA::on_device(b, "add", "b");
    dispatch_floating(a.dtype, "add", [&]<class T>() {
        const std::int64_t n = a.numel();
        if (!n) return;
        cuda::add_kernel<T><<<cuda::grid_for(n), cuda::threads, 0, CUDA::stream()>>>(y.data<T>(), a.data<T>(),
                                                                                        b.data<T>(), n);
        MT_CUDA_LAUNCHED();
    });
}

/// d (=|+=) src: the one way a gradient is passed through unchanged.
inline void accumulate(CUDA, GradOut d, const Tensor& src) {
    if (!d) return;
    check_same(d.t, src, "accumulate", "gradient", "source");
    CUDA::on_device(d.t, "accumulate", "gradient");
    CUDA::on_device(src, "accumulate", "source");
    dispatch_floating(src.dtype, "accumulate", [&]<class T>() {
        const std::int64_t n = src.numel();
        if (!n) return;
        cuda::accumulate_kernel<T><<<cuda::grid_for(n), cuda::threads, 0, CUDA::stream()>>>(
            d.t.data<T>(), src.data<T>(), n, d.accumulate);
        MT_CUDA_LAUNCHED();
    });
}

/// The gradient of a sum reaches both summands unchanged.
inline void add_backward(CUDA, GradOut da, GradOut db, const Tensor& dy) {
    accumulate(CUDA{}, da, dy);
    accumulate(CUDA{}, db, dy);
}

}  // namespace minitrain
