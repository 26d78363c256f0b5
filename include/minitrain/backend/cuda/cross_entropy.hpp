// minitrain/backend/cuda/cross_entropy.hpp
// Softmax cross-entropy over the vocabulary on the GPU (semantics: backend/cpu/cross_entropy.hpp). One
// thread block per row: a max reduction, a sum-of-exp reduction, the row's log-sum-exp and loss. A single
// block then sums the losses of the non-ignored rows in a fixed order (in double) into the mean loss and
// the row count. The backward rebuilds softmax = exp(logit - lse) on the fly, one block per row.
//
// The forward returns the non-ignored row count to the host (the op keeps it for the backward), so it
// waits for the GPU once per call; that is also where an invalid target found on the device throws.
//
// N = rows (batch x time), V = vocab.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda.hpp"

namespace minitrain {

namespace cuda {

template <class T>
__global__ void xent_rows_kernel(T* losses, T* lse, const T* logits, const std::int32_t* targets, std::int64_t N,
                                 std::int64_t V, int ignore_index, Status* status) {
    MT_CUDA_ROW_LOOP(n, N) {
        const std::int32_t t = targets[n];
        if (t == ignore_index || t < 0 || t >= V) {  // block-uniform branch
            if (threadIdx.x == 0) {
                losses[n] = lse[n] = T(0);
                if (t != ignore_index) report(status, status_bad_target, n, t, V);
            }
            continue;
        }
        const T* x = logits + n * V;
        T m = -T(INFINITY);
        for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) m = x[v] > m ? x[v] : m;
        m = block_max(m);  // shift by the max: exp never overflows
        T s = 0;
        for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) s += exp(x[v] - m);
        s = block_sum(s);
        if (threadIdx.x == 0) {
            const T l = m + log(s);
            lse[n] = l;
            losses[n] = l - x[t];
        }
    }
}

/// One block: sum of the non-ignored rows' losses (double, fixed order) and their count.
/// loss[0] = mean (0 when no row counts); count_out[0] = the count.
template <class T>
__global__ void xent_mean_kernel(T* loss, long long* count_out, const T* losses, const std::int32_t* targets,
                                 std::int64_t N, std::int64_t V, int ignore_index) {
    double sum = 0;
    long long count = 0;
    for (std::int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        const std::int32_t t = targets[n];
        if (t != ignore_index && t >= 0 && t < V) {
            sum += double(losses[n]);
            ++count;
        }
    }
    sum = block_sum(sum);
    count = block_sum(count);
    if (threadIdx.x == 0) {
        if (loss) loss[0] = T(count ? sum / double(count) : 0.0);
        count_out[0] = count;
    }
}

template <class T>
__global__ void xent_backward_kernel(T* dlogits, bool add, const T* logits, const std::int32_t* targets,
                                     const T* lse, const T* dloss, std::int64_t count, std::int64_t N, std::int64_t V,
                                     int ignore_index) {
    const T s = count ? T(double(dloss[0]) / double(count)) : T(0);
    MT_CUDA_ROW_LOOP(n, N) {
        const std::int32_t t = targets[n];
        T* d = dlogits + n * V;
        if (t == ignore_index || t < 0 || t >= V) {
            if (!add)
                for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = T(0);
            continue;
        }
        const T* x = logits + n * V;
        const T l = lse[n];
        for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) {
            T g = exp(x[v] - l) * s;
            if (add) g = d[v] + g;
            if (v == t) g -= s;  // the one-hot term, subtracted last as the CPU backend does
            d[v] = g;
        }
    }
}

inline void check_xent(const Tensor& logits, const Tensor& targets, const char* op) {
    MT_CHECK(logits.shape.rank >= 1, op, ": logits must be (N, V), found a scalar");
    MT_CHECK(targets.dtype == DType::i32, op, ": targets must be i32, found ", dtype_name(targets.dtype));
    MT_CHECK(targets.numel() == logits.shape.rows(), op, ": ", logits.shape.rows(), " rows of logits ",
             logits.shape, " but ", targets.numel(), " targets ", targets.shape);
    CUDA::on_device(logits, op, "logits");
    CUDA::on_device(targets, op, "targets");
}

}  // namespace cuda

/// losses[n] = logsumexp(logits[n]) - logits[n, targets[n]] (0 for ignored rows), lse[n] = that logsumexp
/// (0 for ignored rows), and loss[0] = the mean of losses over the non-ignored rows (0 when there are
/// none). Returns how many rows are not ignored (waits for the GPU). loss may be undefined.
/// loss (1)  losses (N)  lse (N)  logits (N, V), or any (..., V)  targets (N) i32
/// A target outside [0, V) that is not ignore_index throws minitrain::Error (after the kernels ran; the
/// row is treated as ignored).
inline std::int64_t cross_entropy_forward(CUDA, const Tensor& loss, const Tensor& losses, const Tensor& lse,
                                          const Tensor& logits, const Tensor& targets, int ignore_index) {
    cuda::check_xent(logits, targets, "cross_entropy");
    const std::int64_t N = logits.shape.rows(), V = logits.shape.cols();
    check_shape(losses, Shape{N}, "cross_entropy", "per-row losses");
    check_shape(lse, Shape{N}, "cross_entropy", "lse");
    CUDA::on_device(losses, "cross_entropy", "per-row losses");
    CUDA::on_device(lse, "cross_entropy", "lse");
    if (loss) {
        check_shape(loss, Shape{1}, "cross_entropy", "loss");
        CUDA::on_device(loss, "cross_entropy", "loss");
    }
    long long count = 0;
    dispatch_floating(logits.dtype, "cross_entropy", [&]<class T>() {
        MT_CHECK(losses.dtype == logits.dtype && lse.dtype == logits.dtype && (!loss || loss.dtype == logits.dtype),
                 "cross_entropy: loss, losses and lse must have the logits' type ", dtype_name(logits.dtype));
        if (N) {
            cuda::xent_rows_kernel<T><<<cuda::grid_rows(N), cuda::threads, 0, CUDA::stream()>>>(
                losses.data<T>(), lse.data<T>(), logits.data<T>(), targets.data<std::int32_t>(), N, V, ignore_index,
                CUDA::status());
            MT_CUDA_LAUNCHED();
        }
        auto* count_dev = static_cast<long long*>(CUDA::scratch());
        cuda::xent_mean_kernel<T><<<1, 1024, 0, CUDA::stream()>>>(loss ? loss.data<T>() : nullptr, count_dev,
                                                                  losses.data<T>(), targets.data<std::int32_t>(), N,
                                                                  V, ignore_index);
        MT_CUDA_LAUNCHED();
        CUDA::read_back(&count, count_dev, sizeof count, "cross_entropy");
    });
    return std::int64_t(count);
}

/// dlogits (=|+=) (softmax(logits) - onehot(target)) * dloss[0] / count, with softmax = exp(logits - lse);
/// ignored rows get zero (or are left alone when accumulating). dloss is the loss's gradient, a
/// 1-element device tensor read by the kernel; count is what cross_entropy_forward returned.
/// dlogits, logits (N, V)  targets (N) i32  lse (N)  dloss (1)
inline void cross_entropy_backward(CUDA, GradOut dlogits, const Tensor& logits, const Tensor& targets,
                                   const Tensor& lse, const Tensor& dloss, std::int64_t count, int ignore_index) {
    if (!dlogits) return;
    cuda::check_xent(logits, targets, "cross_entropy_backward");
    check_same(dlogits.t, logits, "cross_entropy_backward", "dlogits", "logits");
    const std::int64_t N = logits.shape.rows(), V = logits.shape.cols();
    check_shape(lse, Shape{N}, "cross_entropy_backward", "lse");
    check_shape(dloss, Shape{1}, "cross_entropy_backward", "loss gradient");
    CUDA::on_device(dlogits.t, "cross_entropy_backward", "dlogits");
    CUDA::on_device(lse, "cross_entropy_backward", "lse");
    CUDA::on_device(dloss, "cross_entropy_backward", "loss gradient");
    if (!N) return;
    dispatch_floating(logits.dtype, "cross_entropy_backward", [&]<class T>() {
        cuda::xent_backward_kernel<T><<<cuda::grid_rows(N), cuda::threads, 0, CUDA::stream()>>>(
            dlogits.t.data<T>(), dlogits.accumulate, logits.data<T>(), targets.data<std::int32_t>(), lse.data<T>(),
            dloss.data<T>(), count, N, V, ignore_index);
        MT_CUDA_LAUNCHED();
    });
}

}  // namespace minitrain
