// minitrain/backend/cpu/rmsnorm.hpp
// RMSNorm (Llama / MiniMind) on the CPU: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) per row.
// The forward keeps rstd (one number per row) so that the backward need not recompute the row reduction.
//
// The backward is one pass over the rows: dx is row-local, and dw (a sum over all rows) is gathered as
// partial sums over P fixed chunks of rows, one row of a (P, C) workspace each, then summed in chunk
// order. The result depends only on P, which rmsnorm_backward_workspace picks from the thread count and
// the problem size: deterministic for a fixed thread count, however the OpenMP runtime schedules.
//
// N = rows (all leading dimensions), C = channels (the normalized last dimension), P = row chunks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "bf16_weights.hpp"
#include "cpu.hpp"

namespace minitrain {

namespace cpu {
inline void check_rmsnorm(const Tensor& x, const Tensor& w, const char* op) {
    MT_CHECK(x.shape.rank >= 1, op, ": input must have at least one dimension");
    check_shape(w, Shape{x.shape.cols()}, op, "weight");
    MT_CHECK(w.dtype == x.dtype, op, ": weight is ", dtype_name(w.dtype), " but input is ", dtype_name(x.dtype));
}
}  // namespace cpu

/// y = x * rstd * w;  rstd[n] = 1 / sqrt(mean_c x[n, c]^2 + eps).
/// x, y: (N, C) (any leading shape)  w: (C)  rstd: (N), or undefined when no backward will follow.
/// y may be bf16 for an f32 x (an output only bf16 products read, core/precision.hpp): computed in f32, then
/// rounded as the bf16 GEMM's packing rounds (cpu::store_bf16); the backward never reads y.
inline void rmsnorm_forward(CPU, const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, double eps) {
    cpu::check_rmsnorm(x, w, "rmsnorm");
    if (y.dtype == DType::bf16 && x.dtype == DType::f32) {
        check_shape(y, x.shape, "rmsnorm", "output");
    } else {
        check_same(y, x, "rmsnorm", "output", "input");
    }
    const std::int64_t N = x.shape.rows(), C = x.shape.cols();
    if (rstd) {
        MT_CHECK(rstd.numel() == N && rstd.dtype == x.dtype, "rmsnorm: rstd must hold ", N, " ",
                 dtype_name(x.dtype), " values, found ", rstd.shape, " ", dtype_name(rstd.dtype));
    }
    if (y.dtype == DType::bf16) {
        using In = Eigen::Map<const Eigen::ArrayXf>;
        using Out = Eigen::Map<Eigen::ArrayXf>;
        constexpr std::int64_t tile = 256;  // a row's f32 values go through a stack tile on their way to bf16
        const float* xp = x.data<float>();  // (N, C)
        std::uint16_t* yp = static_cast<std::uint16_t*>(y.ptr);  // (N, C) bf16 bits
        float* rp = rstd ? rstd.data<float>() : nullptr;  // (N)
        const float* wp = w.data<float>();  // (C)
#pragma omp parallel for schedule(static) if (N * C >= (1 << 15))
        for (std::int64_t n = 0; n < N; ++n) {
            In xr(xp + n * C, C);
            const float r = 1.0f / std::sqrt(xr.square().sum() / float(C) + float(eps));
            if (rp) rp[n] = r;
            alignas(64) float buf[tile];
            for (std::int64_t c0 = 0; c0 < C; c0 += tile) {  // elementwise products: exact per element, any tiling
                const std::int64_t len = std::min(tile, C - c0);
                Out(buf, len) = (In(xp + n * C + c0, len) * r) * In(wp + c0, len);
                cpu::store_bf16(buf, yp + n * C + c0, std::size_t(len));
            }
        }
        return;
    }
    dispatch_floating(x.dtype, "rmsnorm", [&]<class T>() {
        using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
        using Out = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
        const T* xp = x.data<T>();  // (N, C)
        T* yp = y.data<T>();  // (N, C)
        T* rp = rstd ? rstd.data<T>() : nullptr;  // (N)
        In wr(w.data<T>(), C);  // (C)
#pragma omp parallel for schedule(static) if (N * C >= (1 << 15))
        for (std::int64_t n = 0; n < N; ++n) {
            In xr(xp + n * C, C);
            const T r = T(1) / std::sqrt(xr.square().sum() / T(C) + T(eps));
            if (rp) rp[n] = r;
            Out(yp + n * C, C) = (xr * r) * wr;  // MiniMind's order: normalize, then scale
        }
    });
}

/// Shape of the workspace rmsnorm_backward needs for dw: (P, C), P = row chunks summed separately.
/// P = the thread count (fewer for small inputs), so dw is bitwise reproducible for a given thread count.
inline Shape rmsnorm_backward_workspace(CPU, const Shape& x) {
    const std::int64_t N = x.rows(), C = x.cols();
    std::int64_t P = std::min<std::int64_t>(CPU::threads(), (N * C) >> 15);  // ~32k elements a chunk at least
    P = std::max<std::int64_t>(1, std::min(P, N));
    return Shape{P, C};
}

/// With g = dy * w and xhat = x * rstd:
///   dx (=|+=) rstd * (g - xhat * mean_c(g * xhat))       dw (=|+=) sum_n dy * xhat
/// workspace: (P, C) scratch from rmsnorm_backward_workspace, needed only when dw is defined.
inline void rmsnorm_backward(CPU, GradOut dx, GradOut dw, const Tensor& x, const Tensor& w, const Tensor& rstd,
                             const Tensor& dy, const Tensor& workspace) {
    if (!dx && !dw) return;
    cpu::check_rmsnorm(x, w, "rmsnorm_backward");
    check_same(dy, x, "rmsnorm_backward", "dy", "input");
    const std::int64_t N = x.shape.rows(), C = x.shape.cols();
    MT_CHECK(rstd.numel() == N && rstd.dtype == x.dtype, "rmsnorm_backward: rstd must hold ", N, " ",
             dtype_name(x.dtype), " values, found ", rstd.shape, " ", dtype_name(rstd.dtype));
    if (dx) check_same(dx.t, x, "rmsnorm_backward", "dx", "input");
    if (dw) {
        check_same(dw.t, w, "rmsnorm_backward", "dw", "weight");
        MT_CHECK(workspace.defined() && workspace.shape.rank == 2 && workspace.shape[1] == C &&
                     workspace.shape[0] >= 1 && workspace.dtype == x.dtype,
                 "rmsnorm_backward: the dw workspace must be (P, ", C, ") ", dtype_name(x.dtype), ", found ",
                 workspace.shape, " ", dtype_name(workspace.dtype));
    }
    // Without dw, chunks are only a way to split dx over threads.
    const std::int64_t P = dw ? workspace.shape[0] : rmsnorm_backward_workspace(CPU{}, x.shape)[0];
    dispatch_floating(x.dtype, "rmsnorm_backward", [&]<class T>() {
        using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
        using Out = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
        const T* xp = x.data<T>();  // (N, C)
        const T* gp = dy.data<T>();  // (N, C)
        const T* rp = rstd.data<T>();  // (N)
        T* dxp = dx ? dx.t.data<T>() : nullptr;  // (N, C)
        T* part = dw ? workspace.data<T>() : nullptr;  // (P, C)
        In wr(w.data<T>(), C);  // (C)
#pragma omp parallel for schedule(static) if (P > 1)
        for (std::int64_t p = 0; p < P; ++p) {
            const std::int64_t n0 = N * p / P, n1 = N * (p + 1) / P;
            if (part) Out(part + p * C, C).setZero();
            for (std::int64_t n = n0; n < n1; ++n) {
                In xr(xp + n * C, C), gr(gp + n * C, C);
                const T r = rp[n];
                if (dxp) {
                    // mean(g * xhat) * rstd = sum(dy * w * x) * rstd^2 / C
                    const T k = (gr * wr * xr).sum() * r * r / T(C);
                    Out d(dxp + n * C, C);
                    if (dx.accumulate)
                        d += r * (gr * wr - xr * k);
                    else
                        d = r * (gr * wr - xr * k);
                }
                if (part) Out(part + p * C, C) += gr * (xr * r);
            }
        }
        if (!part) return;
        Out d(dw.t.data<T>(), C);
        if (!dw.accumulate) d.setZero();
        for (std::int64_t p = 0; p < P; ++p) d += In(part + p * C, C);  // fixed order
    });
}

}  // namespace minitrain
