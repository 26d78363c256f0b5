// minitrain/backend/cpu/optim.hpp
// Optimizer kernels for the CPU: the AdamW and SGD updates over one segment of the parameter slab, and
// the two reductions gradient clipping needs (sum of squares, scale). Each update is one pass over its
// segment, split across threads by OpenMP.
//
// The updates follow PyTorch's single-tensor (foreach=False) implementations operation by operation,
// with the scalar coefficients computed in double the way Python computes them and rounded to the
// tensor's type where PyTorch rounds them, so an f32 run tracks torch.optim to within rounding (FMA
// contraction may differ by an ulp per operation). Kernels take f32 (training) or f64 (tests).
//
// Vectorization: std::sqrt must set errno for negative inputs, so without -fno-math-errno a loop that
// calls it is not vectorized. The AdamW loop therefore works in L1-sized blocks: one vectorized pass
// updates the moments, a scalar pass takes the square roots, a vectorized pass updates the parameters.
// (It stays exact: the approximate rsqrt of fast-math sqrt would not match PyTorch.)
//
// Legend: N = elements in the segment. p = parameters, g = gradients, m / v = first / second moments.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "add.hpp"  // cpu::parallel_chunks, cpu::array
#include "cpu.hpp"

namespace minitrain {

namespace cpu {
/// Elements per block of the blocked optimizer loops: a block of m, v and sqrt(v) stays in L1.
inline constexpr std::int64_t optim_block = 256;

/// Sum of x^2 over [0, n) in double, with eight independent accumulators so the loop pipelines and
/// vectorizes without reassociation; the result depends only on n and the data.
template <class T>
double sum_squares_range(const T* x, std::int64_t n) {
    double acc[8] = {};
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) {
            double v = double(x[i + j]);
            acc[j] += v * v;
        }
    double tail = 0;
    for (; i < n; ++i) tail += double(x[i]) * double(x[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}
}  // namespace cpu

// ----------------------------------------------------------------------------------------------------
// AdamW

/// One AdamW step (torch.optim.AdamW semantics) on a segment, in place:
///   p *= 1 - lr*weight_decay                (decoupled decay; pass weight_decay = 0 for no decay)
///   m  = lerp(m, g, 1 - beta1)              (= beta1*m + (1-beta1)*g)
///   v  = beta2*v + (1-beta2)*g*g
///   p += -(lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
/// `step` counts updates including this one (1 on the first). p, g, m, v: (N), same type, no aliasing.
inline void adamw_update(CPU, const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, double lr,
                         double beta1, double beta2, double eps, double weight_decay, std::int64_t step) {
    check_same(p, g, "adamw_update", "param", "grad");
    check_same(p, m, "adamw_update", "param", "exp_avg");
    check_same(p, v, "adamw_update", "param", "exp_avg_sq");
    MT_CHECK(step >= 1, "adamw_update: step counts updates including this one and must be >= 1, got ", step);
    // Coefficients as PyTorch forms them: Python floats (double), rounded to the tensor type when they
    // meet a tensor.
    const double bias_correction1 = 1.0 - std::pow(beta1, double(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, double(step));
    const bool decay = weight_decay != 0.0;
    const double lerp_weight = 1.0 - beta1;
    dispatch_floating(p.dtype, "adamw_update", [&]<class T>() {
        const T decay_factor = T(1.0 - lr * weight_decay);
        const T w = T(lerp_weight);
        const T w_complement = T(1) - w;             // lerp's form for weights >= 0.5
        const bool small_weight = std::abs(w) < T(0.5);
        const T b2 = T(beta2), one_minus_b2 = T(1.0 - beta2);
        const T bc2_sqrt = T(std::sqrt(bias_correction2));
        const T neg_step_size = T(-(lr / bias_correction1));
        const T eps_t = T(eps);
        T* P = p.data<T>();
        const T* G = g.data<T>();
        T* M = m.data<T>();
        T* V = v.data<T>();
        cpu::parallel_chunks(p.numel(), [&](std::int64_t begin, std::int64_t end) {
            T root[cpu::optim_block];  // (block) sqrt(v)
            for (std::int64_t b = begin; b < end; b += cpu::optim_block) {
                const std::int64_t k = std::min(cpu::optim_block, end - b);
                T* __restrict pp = P + b;
                const T* __restrict gg = G + b;
                T* __restrict mm = M + b;
                T* __restrict vv = V + b;
                // Branches hoisted out of the loops so that each loop vectorizes.
                // param.mul_(1 - lr*wd)
                if (decay)
                    for (std::int64_t i = 0; i < k; ++i) pp[i] = pp[i] * decay_factor;
                // exp_avg.lerp_(grad, 1 - beta1)
                if (small_weight)
                    for (std::int64_t i = 0; i < k; ++i) mm[i] = mm[i] + w * (gg[i] - mm[i]);
                else
                    for (std::int64_t i = 0; i < k; ++i) mm[i] = gg[i] - (gg[i] - mm[i]) * w_complement;
                // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                for (std::int64_t i = 0; i < k; ++i) {
                    const T vi = vv[i] * b2;
                    vv[i] = vi + one_minus_b2 * gg[i] * gg[i];
                }
                for (std::int64_t i = 0; i < k; ++i) root[i] = std::sqrt(vv[i]);
                // denom = exp_avg_sq.sqrt() / bc2_sqrt + eps; param.addcdiv_(exp_avg, denom, -step_size)
                for (std::int64_t i = 0; i < k; ++i) pp[i] = pp[i] + neg_step_size * mm[i] / (root[i] / bc2_sqrt + eps_t);
            }
        });
    });
}

// ----------------------------------------------------------------------------------------------------
// SGD

/// One SGD step (torch.optim.SGD semantics) on a segment, in place:
///   d = g + weight_decay*p                  (coupled L2; the gradient slab itself is not modified)
///   momentum > 0: buf = first_step ? d : momentum*buf + (1-dampening)*d
///                 d = nesterov ? d + momentum*buf : buf
///   p += -lr * d
/// `buf` (N) is used only when momentum > 0 (it may be undefined otherwise). p, g: (N).
inline void sgd_update(CPU, const Tensor& p, const Tensor& g, const Tensor& buf, double lr, double momentum,
                       double dampening, double weight_decay, bool nesterov, bool first_step) {
    check_same(p, g, "sgd_update", "param", "grad");
    const bool use_momentum = momentum != 0.0;
    if (use_momentum) check_same(p, buf, "sgd_update", "param", "momentum_buffer");
    const bool decay = weight_decay != 0.0;
    dispatch_floating(p.dtype, "sgd_update", [&]<class T>() {
        const T wd = T(weight_decay), mu = T(momentum), keep = T(1.0 - dampening), neg_lr = T(-lr);
        T* P = p.data<T>();
        const T* G = g.data<T>();
        T* B = use_momentum ? buf.data<T>() : nullptr;
        cpu::parallel_chunks(p.numel(), [&](std::int64_t begin, std::int64_t end) {
            T* __restrict pp = P + begin;
            const T* __restrict gg = G + begin;
            const std::int64_t k = end - begin;
            if (!use_momentum) {
                for (std::int64_t i = 0; i < k; ++i) {
                    const T d = decay ? gg[i] + wd * pp[i] : gg[i];
                    pp[i] = pp[i] + neg_lr * d;
                }
                return;
            }
            T* __restrict bb = B + begin;
            for (std::int64_t i = 0; i < k; ++i) {
                T d = decay ? gg[i] + wd * pp[i] : gg[i];
                T bi;
                if (first_step) {
                    bi = d;  // torch.clone(grad): no dampening on the first step
                } else {
                    bi = bb[i] * mu;
                    bi = bi + keep * d;
                }
                bb[i] = bi;
                d = nesterov ? d + mu * bi : bi;
                pp[i] = pp[i] + neg_lr * d;
            }
        });
    });
}

// ----------------------------------------------------------------------------------------------------
// Gradient clipping

/// Sum of squares of all elements, accumulated in double. The tensor is cut into a fixed number of chunks
/// whatever the thread count, and the chunk sums are added in order: the result is the same for any
/// number of threads.
inline double sum_squares(CPU, const Tensor& x) {
    return dispatch_floating(x.dtype, "sum_squares", [&]<class T>() -> double {
        constexpr int parts = 64;
        const T* X = x.data<T>();
        const std::int64_t n = x.numel(), chunk = (n + parts - 1) / parts;
        double partial[parts];  // (parts) chunk sums
#pragma omp parallel for schedule(static) if (n >= (std::int64_t(1) << 16))
        for (int c = 0; c < parts; ++c) {
            const std::int64_t b = std::min(n, c * chunk), e = std::min(n, b + chunk);
            partial[c] = cpu::sum_squares_range(X + b, e - b);
        }
        double total = 0;
        for (int c = 0; c < parts; ++c) total += partial[c];
        return total;
    });
}

/// x *= s, with s rounded to the tensor's type (as PyTorch's mul_ by a clip coefficient does).
inline void scale(CPU, const Tensor& x, double s) {
    dispatch_floating(x.dtype, "scale", [&]<class T>() {
        const T factor = T(s);
        cpu::parallel_chunks(x.numel(), [&](std::int64_t b, std::int64_t e) { cpu::array<T>(x, b, e) *= factor; });
    });
}

}  // namespace minitrain
