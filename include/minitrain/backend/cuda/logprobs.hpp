// minitrain/backend/cuda/logprobs.hpp
// Sequence log-probabilities on the GPU (semantics: backend/cpu/logprobs.hpp): per sequence b, the sum
// over its counted positions t of log softmax(logits[b, t])[targets[b, t]]. One block per position for
// the log-sum-exp, one block per sequence for its sum (in double, fixed order); the backward rebuilds
// softmax = exp(logits - lse) on the fly, one block per position.
//
// An invalid target is recorded in the CUDA status word (Error at the next synchronization point) and
// its position is treated as ignored.
//
// B = sequences, T = positions per sequence, N = B*T rows, V = vocab.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda.hpp"

namespace minitrain {

namespace cuda::logprobs {

__device__ inline bool counted(std::int32_t t, std::int64_t V, int ignore_index) {
    return t != ignore_index && t >= 0 && t < V;
}

template <class R>
__global__ void lse_kernel(R* lse, const R* logits, const std::int32_t* targets, std::int64_t N, std::int64_t V,
                           int ignore_index, Status* status) {
    MT_CUDA_ROW_LOOP(n, N) {
        const std::int32_t t = targets[n];
        if (!counted(t, V, ignore_index)) {  // block-uniform branch
            if (threadIdx.x == 0) {
                lse[n] = R(0);
                if (t != ignore_index) report(status, status_bad_logprob_target, n, t, V);
            }
            continue;
        }
        const R* x = logits + n * V;
        R m = -R(INFINITY);
        for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) m = x[v] > m ? x[v] : m;
        m = block_max(m);
        R s = 0;
        for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) s += exp(x[v] - m);
        s = block_sum(s);
        if (threadIdx.x == 0) lse[n] = m + log(s);
    }
}

/// One block per sequence: logp[b] = sum of (logit of target - lse), / count when average.
template <class R>
__global__ void sum_kernel(R* logp, const R* logits, const R* lse, const std::int32_t* targets, std::int64_t B,
                           std::int64_t T, std::int64_t V, bool average, int ignore_index) {
    MT_CUDA_ROW_LOOP(b, B) {
        double s = 0;
        long long c = 0;
        for (std::int64_t t = threadIdx.x; t < T; t += blockDim.x) {
            const std::int64_t n = b * T + t;
            if (!counted(targets[n], V, ignore_index)) continue;
            s += double(logits[n * V + targets[n]]) - double(lse[n]);
            ++c;
        }
        s = block_sum(s);
        c = block_sum(c);
        if (threadIdx.x == 0) logp[b] = R(average ? (c ? s / double(c) : 0.0) : s);
    }
}

template <class R>
__global__ void backward_kernel(R* dlogits, bool add, const R* logits, const std::int32_t* targets, const R* lse,
                                const R* dlogp, std::int64_t N, std::int64_t T, std::int64_t V, bool average,
                                int ignore_index) {
    MT_CUDA_ROW_LOOP(n, N) {
        const std::int32_t t = targets[n];
        R* d = dlogits + n * V;
        if (!counted(t, V, ignore_index)) {
            if (!add)
                for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = R(0);
            continue;
        }
        const std::int64_t b = n / T;
        long long c = 1;
        if (average) {  // the sequence's count, recomputed per row (T reads) rather than saved
            long long mine = 0;
            // counted(), as sum_kernel counts: a target outside [0, V) (reported by lse_kernel) is no position.
            for (std::int64_t u = threadIdx.x; u < T; u += blockDim.x) mine += counted(targets[b * T + u], V, ignore_index);
            c = block_sum(mine);
        }
        const R s = R(double(dlogp[b]) / double(c));
        const R* x = logits + n * V;
        const R l = lse[n];
        for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) {
            const R e = exp(x[v] - l);
            R g = add ? d[v] - e * s : e * -s;
            if (v == t) g += s;
            d[v] = g;
        }
    }
}

inline void check(const Tensor& logits, const Tensor& targets, const char* op) {
    MT_CHECK(targets.dtype == DType::i32, op, ": targets must be i32, found ", dtype_name(targets.dtype));
    MT_CHECK(targets.shape.rank == 2, op, ": targets must be (B, T), found ", targets.shape);
    MT_CHECK(logits.shape.rank >= 2, op, ": logits must be (B, T, V), found ", logits.shape);
    MT_CHECK(logits.shape.rows() == targets.numel(), op, ": logits ", logits.shape, " have ", logits.shape.rows(),
             " rows of V, targets ", targets.shape, " have ", targets.numel(), " positions");
    CUDA::on_device(logits, op, "logits");
    CUDA::on_device(targets, op, "targets");
}

}  // namespace cuda::logprobs

/// logp[b] = sum over counted t of (logits[b, t, targets[b, t]] - lse[b, t]), divided by the count when
/// `average` (0 without counted positions); lse[b, t] = logsumexp(logits[b, t]) (0 where ignored).
/// logp (B)  lse (B, T) or (B*T)  logits (B, T, V)  targets (B, T) i32
inline void sequence_logprobs_forward(CUDA, const Tensor& logp, const Tensor& lse, const Tensor& logits,
                                      const Tensor& targets, bool average = false, int ignore_index = -100) {
    cuda::logprobs::check(logits, targets, "sequence_logprobs");
    const std::int64_t B = targets.shape[0], T = targets.shape[1], N = B * T, V = logits.shape.cols();
    check_shape(logp, Shape{B}, "sequence_logprobs", "log-probabilities");
    MT_CHECK(lse.numel() == N && lse.dtype == logits.dtype, "sequence_logprobs: lse must hold ", N, " ",
             dtype_name(logits.dtype), ", found ", lse.shape, " ", dtype_name(lse.dtype));
    CUDA::on_device(logp, "sequence_logprobs", "log-probabilities");
    CUDA::on_device(lse, "sequence_logprobs", "lse");
    if (!B) return;
    dispatch_floating(logits.dtype, "sequence_logprobs", [&]<class R>() {
        cudaStream_t s = CUDA::stream();
        if (N) {
            cuda::logprobs::lse_kernel<R><<<cuda::grid_rows(N), cuda::threads, 0, s>>>(
                lse.data<R>(), logits.data<R>(), targets.data<std::int32_t>(), N, V, ignore_index, CUDA::status());
            MT_CUDA_LAUNCHED();
        }
        cuda::logprobs::sum_kernel<R><<<cuda::grid_rows(B), cuda::threads, 0, s>>>(
            logp.data<R>(), logits.data<R>(), lse.data<R>(), targets.data<std::int32_t>(), B, T, V, average,
            ignore_index);
        MT_CUDA_LAUNCHED();
    });
}

/// dlogits[b, t] (=|+=) (onehot(targets[b, t]) - softmax(logits[b, t])) * dlogp[b] (/ count with
/// `average`), softmax = exp(logits - lse); ignored positions get zero (or are left alone when adding).
/// dlogits, logits (B, T, V)  targets (B, T) i32  lse (B*T)  dlogp (B)
inline void sequence_logprobs_backward(CUDA, GradOut dlogits, const Tensor& logits, const Tensor& targets,
                                       const Tensor& lse, const Tensor& dlogp, bool average = false,
                                       int ignore_index = -100) {
    if (!dlogits) return;
    cuda::logprobs::check(logits, targets, "sequence_logprobs_backward");
    check_same(dlogits.t, logits, "sequence_logprobs_backward", "dlogits", "logits");
    const std::int64_t B = targets.shape[0], T = targets.shape[1], N = B * T, V = logits.shape.cols();
    MT_CHECK(lse.numel() == N, "sequence_logprobs_backward: lse must hold ", N, " values, found ", lse.shape);
    check_shape(dlogp, Shape{B}, "sequence_logprobs_backward", "upstream gradient");
    CUDA::on_device(dlogits.t, "sequence_logprobs_backward", "dlogits");
    CUDA::on_device(lse, "sequence_logprobs_backward", "lse");
    CUDA::on_device(dlogp, "sequence_logprobs_backward", "upstream gradient");
    if (!N) return;
    dispatch_floating(logits.dtype, "sequence_logprobs_backward", [&]<class R>() {
        cuda::logprobs::backward_kernel<R><<<cuda::grid_rows(N), cuda::threads, 0, CUDA::stream()>>>(
            dlogits.t.data<R>(), dlogits.accumulate, logits.data<R>(), targets.data<std::int32_t>(), lse.data<R>(),
            dlogp.data<R>(), N, T, V, average, ignore_index);
        MT_CUDA_LAUNCHED();
    });
}

}  // namespace minitrain
