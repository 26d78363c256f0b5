// minitrain/backend/cpu/logprobs.hpp
// Sequence log-probabilities on the CPU: per sequence b, the sum over its counted positions t of
// log softmax(logits[b, t])[targets[b, t]], what DPO (and any likelihood ranking) compares.
// Like cross_entropy, the forward keeps one number per position, the log-sum-exp, and the backward
// rebuilds softmax = exp(logits - lse) on the fly while writing the gradient: no (B, T, V) probability
// tensor ever exists. Positions are split across threads, each a few vectorized passes over V logits.
//
// B = sequences, T = positions per sequence, N = B*T rows, V = vocab.
//
// Positions whose target is ignore_index (-100) add nothing and get zero gradient; a sequence without a
// counted position has log-probability 0. With `average`, each sequence's sum is divided by its count of
// counted positions (MiniMind's length-normalized DPO); the plain sum is the DPO paper's.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

namespace cpu::logprobs {

template <class T>
using Row = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

/// Checks shapes and every target before any thread starts (an exception cannot leave an OpenMP
/// region). logits (B, T, V) or any (..., V) with B*T rows; targets (B, T) i32.
inline void check(const Tensor& logits, const Tensor& targets, int ignore_index, const char* op) {
    MT_CHECK(targets.dtype == DType::i32, op, ": targets must be i32, found ", dtype_name(targets.dtype));
    MT_CHECK(targets.shape.rank == 2, op, ": targets must be (B, T), found ", targets.shape);
    MT_CHECK(logits.shape.rank >= 2, op, ": logits must be (B, T, V), found ", logits.shape);
    MT_CHECK(logits.shape.rows() == targets.numel(), op, ": logits ", logits.shape, " have ", logits.shape.rows(),
             " rows of V, targets ", targets.shape, " have ", targets.numel(), " positions");
    const std::int64_t T = targets.shape[1], V = logits.shape.cols();
    const std::int32_t* t = targets.data<std::int32_t>();
    for (std::int64_t n = 0; n < targets.numel(); ++n)
        MT_CHECK(t[n] == ignore_index || (t[n] >= 0 && t[n] < V), op, ": target of sequence ", n / T, " position ",
                 n % T, " (row ", n, ") is ", t[n], ", expected a class in [0, ", V, ") or the ignore index ",
                 ignore_index);
}

/// Counted positions of sequence b.
inline std::int64_t count(const std::int32_t* tgt, std::int64_t b, std::int64_t T, int ignore_index) {
    std::int64_t c = 0;
    for (std::int64_t t = 0; t < T; ++t) c += tgt[b * T + t] != ignore_index;
    return c;
}

}  // namespace cpu::logprobs

/// logp[b] = sum over counted t of (logits[b, t, targets[b, t]] - lse[b, t]), divided by the count when
/// `average` (0 without counted positions); lse[b, t] = logsumexp(logits[b, t]) (0 where ignored).
/// logp (B)  lse (B, T) or (B*T)  logits (B, T, V)  targets (B, T) i32
inline void sequence_logprobs_forward(CPU, const Tensor& logp, const Tensor& lse, const Tensor& logits,
                                      const Tensor& targets, bool average = false, int ignore_index = -100) {
    cpu::logprobs::check(logits, targets, ignore_index, "sequence_logprobs");
    const std::int64_t B = targets.shape[0], T = targets.shape[1], N = B * T, V = logits.shape.cols();
    check_shape(logp, Shape{B}, "sequence_logprobs", "log-probabilities");
    MT_CHECK(lse.numel() == N && lse.dtype == logits.dtype, "sequence_logprobs: lse must hold ", N, " ",
             dtype_name(logits.dtype), ", found ", lse.shape, " ", dtype_name(lse.dtype));
    dispatch_floating(logits.dtype, "sequence_logprobs", [&]<class R>() {  // R: the element type (T is time)
        const R* X = logits.data<R>();  // (N, V)
        const std::int32_t* tgt = targets.data<std::int32_t>();
        R* LSE = lse.data<R>();  // (N)
#pragma omp parallel for schedule(static)
        for (std::int64_t n = 0; n < N; ++n) {
            if (tgt[n] == ignore_index) {
                LSE[n] = R(0);
                continue;
            }
            const cpu::logprobs::ConstRow<R> x(X + n * V, V);
            const R m = x.maxCoeff();  // shift by the max: exp never overflows
            LSE[n] = m + std::log((x - m).exp().sum());
        }
        // Serial sums in position order, in double: the result does not depend on the thread count.
        R* out = logp.data<R>();
        for (std::int64_t b = 0; b < B; ++b) {
            double s = 0;
            std::int64_t c = 0;
            for (std::int64_t t = 0; t < T; ++t) {
                const std::int64_t n = b * T + t;
                if (tgt[n] == ignore_index) continue;
                s += double(X[n * V + tgt[n]]) - double(LSE[n]);
                ++c;
            }
            out[b] = R(average ? (c ? s / double(c) : 0.0) : s);
        }
    });
}

/// dlogits[b, t] (=|+=) (onehot(targets[b, t]) - softmax(logits[b, t])) * dlogp[b] (/ count with
/// `average`), softmax = exp(logits - lse); ignored positions get zero (or are left alone when adding).
/// dlogits, logits (B, T, V)  targets (B, T) i32  lse (B*T)  dlogp (B)
inline void sequence_logprobs_backward(CPU, GradOut dlogits, const Tensor& logits, const Tensor& targets,
                                       const Tensor& lse, const Tensor& dlogp, bool average = false,
                                       int ignore_index = -100) {
    if (!dlogits) return;
    cpu::logprobs::check(logits, targets, ignore_index, "sequence_logprobs_backward");
    check_same(dlogits.t, logits, "sequence_logprobs_backward", "dlogits", "logits");
    const std::int64_t B = targets.shape[0], T = targets.shape[1], N = B * T, V = logits.shape.cols();
    MT_CHECK(lse.numel() == N, "sequence_logprobs_backward: lse must hold ", N, " values, found ", lse.shape);
    check_shape(dlogp, Shape{B}, "sequence_logprobs_backward", "upstream gradient");
    dispatch_floating(logits.dtype, "sequence_logprobs_backward", [&]<class R>() {  // R: the element type (T is time)
        const R* X = logits.data<R>();  // (N, V)
        const R* LSE = lse.data<R>();   // (N)
        const R* dY = dlogp.data<R>();  // (B)
        const std::int32_t* tgt = targets.data<std::int32_t>();
        R* dX = dlogits.t.data<R>();  // (N, V)
        const bool add = dlogits.accumulate;
#pragma omp parallel for schedule(static)
        for (std::int64_t n = 0; n < N; ++n) {
            auto d = cpu::logprobs::Row<R>(dX + n * V, V);
            if (tgt[n] == ignore_index) {
                if (!add) d.setZero();
                continue;
            }
            const std::int64_t b = n / T;
            // The count is recomputed per row (T reads) rather than saved: cheaper than a V-long pass.
            const std::int64_t c = average ? cpu::logprobs::count(tgt, b, T, ignore_index) : 1;
            const R s = R(double(dY[b]) / double(c));
            const cpu::logprobs::ConstRow<R> x(X + n * V, V);
            if (add)
                d -= (x - LSE[n]).exp() * s;
            else
                d = (x - LSE[n]).exp() * -s;
            d[tgt[n]] += s;
        }
    });
}

}  // namespace minitrain
