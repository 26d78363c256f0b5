// minitrain/backend/cpu/select.hpp
// One position per row on the CPU: y[b, :] = x[b, pos[b], :], and its backward, which writes
// dx[b, pos[b], :] and zeros (or leaves, when accumulating) everything else. This is how a scalar head
// reads a sequence's hidden state at its last real token (train/reward.hpp). B is a handful of rows and
// C a few hundred values, so the loops are serial: the cost is nothing next to the forward pass.
//
// B = rows, T = time, C = channels.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu.hpp"

namespace minitrain {

namespace cpu {
/// Every position must lie in [0, T); checked on the host before any memory is touched.
inline void check_positions(const Tensor& pos, std::int64_t B, std::int64_t T, const char* op) {
    MT_CHECK(pos.dtype == DType::i32 && pos.numel() == B, op, ": positions must be (", B, ") i32, found ", pos.shape,
             " ", dtype_name(pos.dtype));
    const std::int32_t* p = pos.data<std::int32_t>();
    for (std::int64_t b = 0; b < B; ++b)
        MT_CHECK(p[b] >= 0 && p[b] < T, op, ": position ", p[b], " of row ", b, " is outside [0, ", T, ")");
}
}  // namespace cpu

/// y[b, :] = x[b, pos[b], :].   x: (B, T, C)  pos: (B) i32  y: (B, C)
inline void select_positions_forward(CPU, const Tensor& y, const Tensor& x, const Tensor& pos) {
    MT_CHECK(x.shape.rank == 3, "select_positions: x must be (B, T, C), found ", x.shape);
    const std::int64_t B = x.shape[0], T = x.shape[1], C = x.shape[2];
    check_shape(y, Shape{B, C}, "select_positions", "output");
    MT_CHECK(y.dtype == x.dtype, "select_positions: output is ", dtype_name(y.dtype), ", x is ", dtype_name(x.dtype));
    cpu::check_positions(pos, B, T, "select_positions");
    dispatch_floating(x.dtype, "select_positions", [&]<class R>() {
        const std::int32_t* p = pos.data<std::int32_t>();
        for (std::int64_t b = 0; b < B; ++b)
            std::memcpy(y.data<R>() + b * C, x.data<R>() + (b * T + p[b]) * C, std::size_t(C) * sizeof(R));
    });
}

/// dx[b, pos[b], :] (=|+=) dy[b, :]; without accumulation the other positions of dx are set to 0.
/// dx: (B, T, C)  dy: (B, C)  pos: (B) i32
inline void select_positions_backward(CPU, GradOut dx, const Tensor& dy, const Tensor& pos) {
    if (!dx) return;
    const std::int64_t B = dx.t.shape[0], T = dx.t.shape[1], C = dx.t.shape[2];
    check_shape(dy, Shape{B, C}, "select_positions_backward", "output gradient");
    cpu::check_positions(pos, B, T, "select_positions_backward");
    dispatch_floating(dy.dtype, "select_positions_backward", [&]<class R>() {
        R* d = dx.t.data<R>();
        if (!dx.accumulate) std::memset(static_cast<void*>(d), 0, std::size_t(B * T * C) * sizeof(R));
        const std::int32_t* p = pos.data<std::int32_t>();
        for (std::int64_t b = 0; b < B; ++b) {
            R* row = d + (b * T + p[b]) * C;
            const R* g = dy.data<R>() + b * C;
            for (std::int64_t c = 0; c < C; ++c) row[c] += g[c];
        }
    });
}

}  // namespace minitrain
