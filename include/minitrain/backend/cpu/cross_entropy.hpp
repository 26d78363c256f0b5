// minitrain/backend/cpu/cross_entropy.hpp
// Softmax cross-entropy over the vocabulary, on the CPU. The forward keeps one number per row, the
// log-sum-exp; the backward rebuilds softmax(row) = exp(row - lse) on the fly while writing the gradient,
// so no second (N, V) probability tensor ever exists. Rows are split across threads; each row is a few
// vectorized passes over V contiguous logits.
//
// N = rows (batch x time), V = vocab.
//
// Rows whose target is ignore_index (-100, as in PyTorch) add nothing to the loss and get zero gradient;
// the loss is the mean over the other rows. When every row is ignored the loss is 0 with zero gradient
// (PyTorch returns NaN): a batch of padding must not poison a run.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

namespace cpu::xent {

template <class T>
using Row = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

/// Checks shapes and that every target is a class or the ignore index (before any thread starts: an
/// exception cannot leave an OpenMP region).
inline void check(const Tensor& logits, const Tensor& targets, int ignore_index, const char* op) {
    MT_CHECK(logits.shape.rank >= 1, op, ": logits must be (N, V), found a scalar");
    MT_CHECK(targets.dtype == DType::i32, op, ": targets must be i32, found ", dtype_name(targets.dtype));
    MT_CHECK(targets.numel() == logits.shape.rows(), op, ": ", logits.shape.rows(), " rows of logits ",
             logits.shape, " but ", targets.numel(), " targets ", targets.shape);
    const std::int64_t N = logits.shape.rows(), V = logits.shape.cols();
    const std::int32_t* t = targets.data<std::int32_t>();
    for (std::int64_t n = 0; n < N; ++n)
        MT_CHECK(t[n] == ignore_index || (t[n] >= 0 && t[n] < V), op, ": target of row ", n, " is ", t[n],
                 ", expected a class in [0, ", V, ") or the ignore index ", ignore_index);
}

}  // namespace cpu::xent

/// losses[n] = logsumexp(logits[n]) - logits[n, targets[n]] (0 for ignored rows), lse[n] = that logsumexp
/// (0 for ignored rows), and loss[0] = the mean of losses over the non-ignored rows (0 when there are
/// none). Returns how many rows are not ignored. loss may be undefined (per-row losses only).
/// loss (1)  losses (N)  lse (N)  logits (N, V), or any (..., V)  targets (N) i32
inline std::int64_t cross_entropy_forward(CPU, const Tensor& loss, const Tensor& losses, const Tensor& lse,
                                          const Tensor& logits, const Tensor& targets, int ignore_index) {
    cpu::xent::check(logits, targets, ignore_index, "cross_entropy");
    const std::int64_t N = logits.shape.rows(), V = logits.shape.cols();
    check_shape(losses, Shape{N}, "cross_entropy", "per-row losses");
    check_shape(lse, Shape{N}, "cross_entropy", "lse");
    if (loss) check_shape(loss, Shape{1}, "cross_entropy", "loss");
    std::int64_t count = 0;
    dispatch_floating(logits.dtype, "cross_entropy", [&]<class T>() {
        const T* X = logits.data<T>();
        const std::int32_t* tgt = targets.data<std::int32_t>();
        T *Ls = losses.data<T>(), *LSE = lse.data<T>();
#pragma omp parallel for schedule(static)
        for (std::int64_t n = 0; n < N; ++n) {
            if (tgt[n] == ignore_index) {
                Ls[n] = LSE[n] = T(0);
                continue;
            }
            const cpu::xent::ConstRow<T> x(X + n * V, V);
            const T m = x.maxCoeff();  // shift by the max: exp never overflows, however large the logits
            LSE[n] = m + std::log((x - m).exp().sum());
            Ls[n] = LSE[n] - X[n * V + tgt[n]];
        }
        // A serial sum in row order: the loss does not depend on the thread count.
        double sum = 0;
        for (std::int64_t n = 0; n < N; ++n)
            if (tgt[n] != ignore_index) sum += double(Ls[n]), ++count;
        if (loss) loss.data<T>()[0] = T(count ? sum / double(count) : 0.0);
    });
    return count;
}

/// dlogits (=|+=) (softmax(logits) - onehot(target)) * dloss[0] / count, with softmax = exp(logits - lse);
/// ignored rows get zero (or are left alone when accumulating). dloss is the loss's gradient, a
/// 1-element tensor read where it lives; count is what cross_entropy_forward returned.
/// dlogits, logits (N, V)  targets (N) i32  lse (N)  dloss (1)
inline void cross_entropy_backward(CPU, GradOut dlogits, const Tensor& logits, const Tensor& targets,
                                   const Tensor& lse, const Tensor& dloss, std::int64_t count, int ignore_index) {
    if (!dlogits) return;
    cpu::xent::check(logits, targets, ignore_index, "cross_entropy_backward");
    check_same(dlogits.t, logits, "cross_entropy_backward", "dlogits", "logits");
    const std::int64_t N = logits.shape.rows(), V = logits.shape.cols();
    check_shape(lse, Shape{N}, "cross_entropy_backward", "lse");
    check_shape(dloss, Shape{1}, "cross_entropy_backward", "loss gradient");
    dispatch_floating(logits.dtype, "cross_entropy_backward", [&]<class T>() {
        const T* X = logits.data<T>();
        const T* LSE = lse.data<T>();
        const std::int32_t* tgt = targets.data<std::int32_t>();
        T* dX = dlogits.t.data<T>();
        const T s = count ? T(double(dloss.data<T>()[0]) / double(count)) : T(0);
        const bool add = dlogits.accumulate;
#pragma omp parallel for schedule(static)
        for (std::int64_t n = 0; n < N; ++n) {
            auto d = cpu::xent::Row<T>(dX + n * V, V);
            if (tgt[n] == ignore_index) {
                if (!add) d.setZero();
                continue;
            }
            const cpu::xent::ConstRow<T> x(X + n * V, V);
            if (add)
                d += (x - LSE[n]).exp() * s;
            else
                d = (x - LSE[n]).exp() * s;
            d[tgt[n]] -= s;
        }
    });
}

}  // namespace minitrain
