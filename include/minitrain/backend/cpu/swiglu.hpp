// minitrain/backend/cpu/swiglu.hpp
// SwiGLU activation of the Llama / MiniMind FFN on the CPU, on a fused input: the model stores gate_proj
// and up_proj adjacently, so one GEMM yields h = [gate | up] and this kernel reads both halves of a row.
//     y = silu(a) * b,   a = h[:, :F] (gate), b = h[:, F:] (up),   silu(a) = a * sigmoid(a)
// The backward recomputes sigmoid from h (cheap, vectorized) instead of saving it: only h is kept.
//
// N = rows (all leading dimensions), F = FFN hidden size.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bf16_weights.hpp"
#include "cpu.hpp"

namespace minitrain {

namespace cpu {
inline std::int64_t check_swiglu(const Tensor& y, const Tensor& h, const char* op) {
    MT_CHECK(h.shape.rank >= 1 && h.shape.cols() % 2 == 0, op, ": input must be (..., 2F), found ", h.shape);
    Shape ys = h.shape;
    ys.dims[ys.rank - 1] /= 2;
    check_shape(y, ys, op, "output");
    MT_CHECK(y.dtype == h.dtype || (y.dtype == DType::bf16 && h.dtype == DType::f32), op, ": output is ",
             dtype_name(y.dtype), " but input is ", dtype_name(h.dtype));
    return ys.cols();
}
}  // namespace cpu

/// y = silu(h[:, :F]) * h[:, F:].   h: (N, 2F)  y: (N, F)
/// y may be bf16 for an f32 h (down_proj's input under autocast bf16, core/precision.hpp): computed in f32 tile by
/// tile, then rounded as the bf16 GEMM's packing rounds (cpu::store_bf16); the backward reads only h.
inline void swiglu_forward(CPU, const Tensor& y, const Tensor& h) {
    const std::int64_t F = cpu::check_swiglu(y, h, "swiglu"), N = h.shape.rows();
    if (y.dtype == DType::bf16) {
        using In = Eigen::Map<const Eigen::ArrayXf>;
        using Out = Eigen::Map<Eigen::ArrayXf>;
        constexpr std::int64_t tile = 256;  // a multiple of the vector width: the f32 path's packets, element for element
        const float* hp = h.data<float>();                       // (N, 2F)
        std::uint16_t* yp = static_cast<std::uint16_t*>(y.ptr);  // (N, F) bf16 bits
#pragma omp parallel for schedule(static) if (N * F >= (1 << 14))
        for (std::int64_t n = 0; n < N; ++n) {
            alignas(64) float buf[tile];
            for (std::int64_t f0 = 0; f0 < F; f0 += tile) {
                const std::int64_t len = std::min(tile, F - f0);
                In a(hp + n * 2 * F + f0, len), b(hp + n * 2 * F + F + f0, len);
                Out(buf, len) = a / (1.0f + (-a).exp()) * b;
                cpu::store_bf16(buf, yp + n * F + f0, std::size_t(len));
            }
        }
        return;
    }
    dispatch_floating(h.dtype, "swiglu", [&]<class T>() {
        using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
        using Out = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
        const T* hp = h.data<T>();  // (N, 2F)
        T* yp = y.data<T>();        // (N, F)
#pragma omp parallel for schedule(static) if (N * F >= (1 << 14))
        for (std::int64_t n = 0; n < N; ++n) {
            In a(hp + n * 2 * F, F), b(hp + n * 2 * F + F, F);
            Out(yp + n * F, F) = a / (T(1) + (-a).exp()) * b;
        }
    });
}

/// With s = sigmoid(a):  da (=|+=) dy * b * s * (1 + a (1 - s)),  db (=|+=) dy * a * s.
/// dh: (N, 2F) = [da | db]  h: (N, 2F)  dy: (N, F)
inline void swiglu_backward(CPU, GradOut dh, const Tensor& h, const Tensor& dy) {
    if (!dh) return;
    const std::int64_t F = cpu::check_swiglu(dy, h, "swiglu_backward"), N = h.shape.rows();
    check_same(dh.t, h, "swiglu_backward", "dh", "h");
    dispatch_floating(h.dtype, "swiglu_backward", [&]<class T>() {
        using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
        using Out = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
        constexpr std::int64_t tile = 256;  // sigmoid of a tile lives in a stack buffer, reused by both halves
        const T* hp = h.data<T>();      // (N, 2F)
        const T* gp = dy.data<T>();     // (N, F)
        T* dp = dh.t.data<T>();         // (N, 2F)
#pragma omp parallel for schedule(static) if (N * F >= (1 << 14))
        for (std::int64_t n = 0; n < N; ++n) {
            alignas(64) T sbuf[tile];
            for (std::int64_t f0 = 0; f0 < F; f0 += tile) {
                const std::int64_t len = std::min(tile, F - f0);
                In a(hp + n * 2 * F + f0, len), b(hp + n * 2 * F + F + f0, len), g(gp + n * F + f0, len);
                Out s(sbuf, len), da(dp + n * 2 * F + f0, len), db(dp + n * 2 * F + F + f0, len);
                s = T(1) / (T(1) + (-a).exp());  // exp(-a) = inf for very negative a: s = 0, no NaN
                if (dh.accumulate) {
                    da += g * b * s * (T(1) + a * (T(1) - s));
                    db += g * a * s;
                } else {
                    da = g * b * s * (T(1) + a * (T(1) - s));
                    db = g * a * s;
                }
            }
        }
    });
}

}  // namespace minitrain
