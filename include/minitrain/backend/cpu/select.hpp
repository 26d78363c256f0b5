// minitrain/backend/cpu/select.hpp
// A weighted sum over each row's positions on the CPU: y[b, :] = sum_t w[b, t] x[b, t, :], and its
// backward, which writes w[b, t] dy[b, :] into dx and zeros (or leaves, when accumulating) the rest. This
// is how a scalar head reads a sequence's hidden state: at its last real token (a one-hot: exactly that
// row, 1 * x + 0) or as the mean over its reply (train/reward.hpp). Positions of weight 0 are skipped.
// B is a handful of rows and C a few hundred values, so the loops are serial: the cost is nothing next to
// the forward pass.
//
// B = rows, T = time, C = channels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu.hpp"

namespace minitrain {

/// y[b, :] = sum_t w[b, t] x[b, t, :], a weighted sum over the positions of each row (a mean when a row's
/// weights are 1/n on n positions).   x: (B, T, C)  w: (B, T) f32  y: (B, C)
inline void pool_positions_forward(CPU, const Tensor& y, const Tensor& x, const Tensor& w) {
    MT_CHECK(x.shape.rank == 3, "pool_positions: x must be (B, T, C), found ", x.shape);
    const std::int64_t B = x.shape[0], T = x.shape[1], C = x.shape[2];
    check_shape(y, Shape{B, C}, "pool_positions", "output");
    check_shape(w, Shape{B, T}, "pool_positions", "weights");
    MT_CHECK(w.dtype == DType::f32, "pool_positions: weights must be f32, found ", dtype_name(w.dtype));
    MT_CHECK(y.dtype == x.dtype, "pool_positions: output is ", dtype_name(y.dtype), ", x is ", dtype_name(x.dtype));
    dispatch_floating(x.dtype, "pool_positions", [&]<class R>() {
        const float* wt = w.data<float>();
        for (std::int64_t b = 0; b < B; ++b) {
            R* out = y.data<R>() + b * C;
            std::fill(out, out + C, R(0));
            for (std::int64_t t = 0; t < T; ++t) {
                const float k = wt[b * T + t];
                if (k == 0) continue;
                const R* row = x.data<R>() + (b * T + t) * C;
                for (std::int64_t c = 0; c < C; ++c) out[c] += R(k) * row[c];
            }
        }
    });
}

/// dx[b, t, :] (=|+=) w[b, t] dy[b, :].   dx: (B, T, C)  dy: (B, C)  w: (B, T) f32
inline void pool_positions_backward(CPU, GradOut dx, const Tensor& dy, const Tensor& w) {
    if (!dx) return;
    const std::int64_t B = dx.t.shape[0], T = dx.t.shape[1], C = dx.t.shape[2];
    check_shape(dy, Shape{B, C}, "pool_positions_backward", "output gradient");
    check_shape(w, Shape{B, T}, "pool_positions_backward", "weights");
    dispatch_floating(dy.dtype, "pool_positions_backward", [&]<class R>() {
        R* d = dx.t.data<R>();
        if (!dx.accumulate) std::memset(static_cast<void*>(d), 0, std::size_t(B * T * C) * sizeof(R));
        const float* wt = w.data<float>();
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t t = 0; t < T; ++t) {
                const float k = wt[b * T + t];
                if (k == 0) continue;
                R* row = d + (b * T + t) * C;
                const R* g = dy.data<R>() + b * C;
                for (std::int64_t c = 0; c < C; ++c) row[c] += R(k) * g[c];
            }
    });
}

}  // namespace minitrain
