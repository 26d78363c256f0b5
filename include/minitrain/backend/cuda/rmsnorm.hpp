// minitrain/backend/cuda/rmsnorm.hpp
// RMSNorm (Llama / MiniMind) on the GPU: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) per row.
// One thread block per row, reductions by warp shuffles (cuda.hpp); the forward keeps rstd per row.
//
// The backward splits the rows into P fixed chunks, one block each: the block writes dx row by row and
// accumulates dy * xhat for its chunk into row p of a (P, C) workspace (each thread owns its columns, so
// no atomics); a second kernel sums the P partial rows in order into dw. P depends only on the row count
// (rmsnorm_backward_workspace), so dw is bitwise reproducible on any GPU.
//
// N = rows (all leading dimensions), C = channels (the normalized last dimension), P = row chunks.
#pragma once

#include <cmath>

#include "cuda.hpp"

namespace minitrain {

namespace cuda {

/// Most row chunks of the dw reduction: enough blocks to fill a large GPU, few partial rows to sum.
inline constexpr std::int64_t rmsnorm_max_chunks = 512;

template <class T>
__global__ void rmsnorm_forward_kernel(T* y, T* rstd, const T* x, const T* w, std::int64_t N, std::int64_t C,
                                       T eps) {
    MT_CUDA_ROW_LOOP(n, N) {
        const T* xr = x + n * C;
        T ss = 0;
        for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
        ss = block_sum(ss);
        const T r = T(1) / sqrt(ss / T(C) + eps);
        if (rstd && threadIdx.x == 0) rstd[n] = r;
        T* yr = y + n * C;
        for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) yr[c] = (xr[c] * r) * w[c];  // normalize, then scale
    }
}

/// Block p: rows [N p / P, N (p+1) / P). dx (may be null) written or added; part (may be null) row p
/// receives sum over the chunk of dy * x * rstd.
template <class T>
__global__ void rmsnorm_backward_kernel(T* dx, bool dx_accumulate, T* part, const T* x, const T* w, const T* rstd,
                                        const T* dy, std::int64_t N, std::int64_t C, std::int64_t P) {
    for (std::int64_t p = blockIdx.x; p < P; p += gridDim.x) {
        const std::int64_t n0 = N * p / P, n1 = N * (p + 1) / P;
        T* pr = part ? part + p * C : nullptr;
        if (pr)
            for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) pr[c] = T(0);
        for (std::int64_t n = n0; n < n1; ++n) {
            const T *xr = x + n * C, *gr = dy + n * C;
            const T r = rstd[n];
            if (dx) {
                // mean(g * xhat) * rstd = sum(dy * w * x) * rstd^2 / C
                T s = 0;
                for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) s += gr[c] * w[c] * xr[c];
                const T k = block_sum(s) * r * r / T(C);
                T* d = dx + n * C;
                for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
                    const T v = r * (gr[c] * w[c] - xr[c] * k);
                    d[c] = dx_accumulate ? d[c] + v : v;
                }
            }
            if (pr)
                for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) pr[c] += gr[c] * (xr[c] * r);
        }
    }
}

/// dw[c] (=|+=) sum_p part[p, c], in chunk order.
template <class T>
__global__ void rmsnorm_dw_kernel(T* dw, bool accumulate, const T* part, std::int64_t P, std::int64_t C) {
    MT_CUDA_GRID_LOOP(c, C) {
        T d = accumulate ? dw[c] : T(0);
        for (std::int64_t p = 0; p < P; ++p) d += part[p * C + c];
        dw[c] = d;
    }
}

inline void check_rmsnorm(const Tensor& x, const Tensor& w, const char* op) {
    MT_CHECK(x.shape.rank >= 1, op, ": input must have at least one dimension");
    check_shape(w, Shape{x.shape.cols()}, op, "weight");
    MT_CHECK(w.dtype == x.dtype, op, ": weight is ", dtype_name(w.dtype), " but input is ", dtype_name(x.dtype));
    CUDA::on_device(x, op, "input");
    CUDA::on_device(w, op, "weight");
}

}  // namespace cuda

/// y = x * rstd * w;  rstd[n] = 1 / sqrt(mean_c x[n, c]^2 + eps).
/// x, y: (N, C) (any leading shape)  w: (C)  rstd: (N), or undefined when no backward will follow.
inline void rmsnorm_forward(CUDA, const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, double eps) {
    cuda::check_rmsnorm(x, w, "rmsnorm");
    check_same(y, x, "rmsnorm", "output", "input");
    CUDA::on_device(y, "rmsnorm", "output");
    const std::int64_t N = x.shape.rows(), C = x.shape.cols();
    if (rstd) {
        MT_CHECK(rstd.numel() == N && rstd.dtype == x.dtype, "rmsnorm: rstd must hold ", N, " ",
                 dtype_name(x.dtype), " values, found ", rstd.shape, " ", dtype_name(rstd.dtype));
        CUDA::on_device(rstd, "rmsnorm", "rstd");
    }
    if (!N) return;
    dispatch_floating(x.dtype, "rmsnorm", [&]<class T>() {
        cuda::rmsnorm_forward_kernel<T><<<cuda::grid_rows(N), cuda::threads, 0, CUDA::stream()>>>(
            y.data<T>(), rstd ? rstd.data<T>() : nullptr, x.data<T>(), w.data<T>(), N, C, T(eps));
        MT_CUDA_LAUNCHED();
    });
}

/// Shape of the workspace rmsnorm_backward needs for dw: (P, C), P = min(rows, 512) row chunks.
inline Shape rmsnorm_backward_workspace(CUDA, const Shape& x) {
    const std::int64_t N = x.rows(), C = x.cols();
    return Shape{std::clamp<std::int64_t>(N, 1, cuda::rmsnorm_max_chunks), C};
}

/// With g = dy * w and xhat = x * rstd:
///   dx (=|+=) rstd * (g - xhat * mean_c(g * xhat))       dw (=|+=) sum_n dy * xhat
/// workspace: (P, C) scratch from rmsnorm_backward_workspace, needed only when dw is defined.
inline void rmsnorm_backward(CUDA, GradOut dx, GradOut dw, const Tensor& x, const Tensor& w, const Tensor& rstd,
                             const Tensor& dy, const Tensor& workspace) {
    if (!dx && !dw) return;
    cuda::check_rmsnorm(x, w, "rmsnorm_backward");
    check_same(dy, x, "rmsnorm_backward", "dy", "input");
    CUDA::on_device(dy, "rmsnorm_backward", "dy");
    CUDA::on_device(rstd, "rmsnorm_backward", "rstd");
    const std::int64_t N = x.shape.rows(), C = x.shape.cols();
    MT_CHECK(rstd.numel() == N && rstd.dtype == x.dtype, "rmsnorm_backward: rstd must hold ", N, " ",
             dtype_name(x.dtype), " values, found ", rstd.shape, " ", dtype_name(rstd.dtype));
    if (dx) {
        check_same(dx.t, x, "rmsnorm_backward", "dx", "input");
        CUDA::on_device(dx.t, "rmsnorm_backward", "dx");
    }
    if (dw) {
        check_same(dw.t, w, "rmsnorm_backward", "dw", "weight");
        MT_CHECK(workspace.defined() && workspace.shape.rank == 2 && workspace.shape[1] == C &&
                     workspace.shape[0] >= 1 && workspace.dtype == x.dtype,
                 "rmsnorm_backward: the dw workspace must be (P, ", C, ") ", dtype_name(x.dtype), ", found ",
                 workspace.shape, " ", dtype_name(workspace.dtype));
        CUDA::on_device(dw.t, "rmsnorm_backward", "dw");
        CUDA::on_device(workspace, "rmsnorm_backward", "workspace");
    }
    // Without dw, chunks are only a way to split dx over blocks: one row each.
    const std::int64_t P = dw ? workspace.shape[0] : N;
    dispatch_floating(x.dtype, "rmsnorm_backward", [&]<class T>() {
        T* part = dw ? workspace.data<T>() : nullptr;
        if (N && P) {
            cuda::rmsnorm_backward_kernel<T><<<cuda::grid_rows(P), cuda::threads, 0, CUDA::stream()>>>(
                dx ? dx.t.data<T>() : nullptr, dx.accumulate, part, x.data<T>(), w.data<T>(), rstd.data<T>(),
                dy.data<T>(), N, C, P);
            MT_CUDA_LAUNCHED();
        }
        if (dw && C) {
            if (!N) {  // no rows: dw gets nothing added
                if (!dw.accumulate) CUDA::zero(dw.t);
                return;
            }
            cuda::rmsnorm_dw_kernel<T><<<cuda::grid_for(C), cuda::threads, 0, CUDA::stream()>>>(
                dw.t.data<T>(), dw.accumulate, part, P, C);
            MT_CUDA_LAUNCHED();
        }
    });
}

}  // namespace minitrain
