// minitrain/backend/cuda/swiglu.hpp
// SwiGLU activation of the Llama / MiniMind FFN on the GPU, on the fused input h = [gate | up]:
//     y = silu(a) * b,   a = h[:, :F], b = h[:, F:],   silu(a) = a * sigmoid(a)
// One thread per output element; the backward recomputes the sigmoid from h.
//
// N = rows (all leading dimensions), F = FFN hidden size.
#pragma once

#include <cmath>

#include "cuda.hpp"

namespace minitrain {

namespace cuda {
template <class T>
__global__ void swiglu_forward_kernel(T* y, const T* h, std::int64_t N, std::int64_t F) {
    MT_CUDA_GRID_LOOP(i, N * F) {
        const std::int64_t n = i / F, f = i % F;
        const T a = h[n * 2 * F + f], b = h[n * 2 * F + F + f];
        y[i] = a / (T(1) + exp(-a)) * b;
    }
}

/// With s = sigmoid(a):  da (=|+=) dy * b * s * (1 + a (1 - s)),  db (=|+=) dy * a * s.
template <class T>
__global__ void swiglu_backward_kernel(T* dh, bool accumulate, const T* h, const T* dy, std::int64_t N,
                                       std::int64_t F) {
    MT_CUDA_GRID_LOOP(i, N * F) {
        const std::int64_t n = i / F, f = i % F;
        const T a = h[n * 2 * F + f], b = h[n * 2 * F + F + f], g = dy[i];
        const T s = T(1) / (T(1) + exp(-a));  // exp(-a) = inf for very negative a: s = 0, no NaN
        const T da = g * b * s * (T(1) + a * (T(1) - s)), db = g * a * s;
        T* d = dh + n * 2 * F;
        if (accumulate) {
            d[f] += da;
            d[F + f] += db;
        } else {
            d[f] = da;
            d[F + f] = db;
        }
    }
}

inline std::int64_t check_swiglu(const Tensor& y, const Tensor& h, const char* op) {
    MT_CHECK(h.shape.rank >= 1 && h.shape.cols() % 2 == 0, op, ": input must be (..., 2F), found ", h.shape);
    Shape ys = h.shape;
    ys.dims[ys.rank - 1] /= 2;
    check_shape(y, ys, op, "output");
    MT_CHECK(y.dtype == h.dtype, op, ": output is ", dtype_name(y.dtype), " but input is ", dtype_name(h.dtype));
    CUDA::on_device(h, op, "input");
    CUDA::on_device(y, op, "output");
    return ys.cols();
}
}  // namespace cuda

/// y = silu(h[:, :F]) * h[:, F:].   h: (N, 2F)  y: (N, F)
inline void swiglu_forward(CUDA, const Tensor& y, const Tensor& h) {
    const std::int64_t F = cuda::check_swiglu(y, h, "swiglu"), N = h.shape.rows();
    dispatch_floating(h.dtype, "swiglu", [&]<class T>() {
        if (!N || !F) return;
        cuda::swiglu_forward_kernel<T><<<cuda::grid_for(N * F), cuda::threads, 0, CUDA::stream()>>>(
            y.data<T>(), h.data<T>(), N, F);
        MT_CUDA_LAUNCHED();
    });
}

/// dh: (N, 2F) = [da | db]  h: (N, 2F)  dy: (N, F)
inline void swiglu_backward(CUDA, GradOut dh, const Tensor& h, const Tensor& dy) {
    if (!dh) return;
    const std::int64_t F = cuda::check_swiglu(dy, h, "swiglu_backward"), N = h.shape.rows();
    check_same(dh.t, h, "swiglu_backward", "dh", "h");
    CUDA::on_device(dh.t, "swiglu_backward", "dh");
    dispatch_floating(h.dtype, "swiglu_backward", [&]<class T>() {
        if (!N || !F) return;
        cuda::swiglu_backward_kernel<T><<<cuda::grid_for(N * F), cuda::threads, 0, CUDA::stream()>>>(
            dh.t.data<T>(), dh.accumulate, h.data<T>(), dy.data<T>(), N, F);
        MT_CUDA_LAUNCHED();
    });
}

}  // namespace minitrain
