// minitrain/backend/cpu/distill.hpp
// White-box knowledge distillation on the CPU (Hinton et al. 2015), as MiniMind's train_distillation.py
// mixes it: at each counted position i (target != ignore_index) of the student's logits s and the
// frozen teacher's logits t,
//
//   ce_i  = -log softmax(s_i)[y_i]                                         the hard-label loss
//   kl_i  = sum_v p_v (log p_v - log q_v),  p = softmax(t_i / T), q = softmax(s_i / T)
//   loss  = alpha mean_i ce_i + (1 - alpha) T^2 mean_i kl_i
//
// T^2 keeps the soft term's gradient on the scale of the hard one's as T grows. Gradient per logit:
//   d loss / d s_iv = [alpha (softmax(s_i)_v - [v == y_i]) + (1 - alpha) T (q_v - p_v)] / n.
// The backward recomputes the three softmaxes from the logits (nothing (N, V) is saved).
//
// N = positions, V = vocab.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

namespace cpu::distill {

/// Per row: the log-sum-exp of x / T, in double.
template <class F>
double lse(const F* x, std::int64_t V, double T) {
    double m = -INFINITY;
    for (std::int64_t v = 0; v < V; ++v) m = std::max(m, double(x[v]) / T);
    double z = 0;
    for (std::int64_t v = 0; v < V; ++v) z += std::exp(double(x[v]) / T - m);
    return m + std::log(z);
}

}  // namespace cpu::distill

/// loss (1); stats (3) f64 = {mean ce, mean kl (without T^2), counted positions}.
/// student, teacher (N, V)  targets (N) i32
inline void distill_loss_forward(CPU, const Tensor& loss, const Tensor& stats, const Tensor& student,
                                 const Tensor& teacher, const Tensor& targets, double alpha, double T,
                                 int ignore_index) {
    MT_CHECK(teacher.numel() == student.numel() && teacher.shape.cols() == student.shape.cols() &&
                 teacher.dtype == student.dtype,
             "distill_loss: teacher logits ", teacher.shape, " ", dtype_name(teacher.dtype), " do not match student logits ",
             student.shape, " ", dtype_name(student.dtype), " (the same rows of the same vocabulary)");
    const std::int64_t N = student.shape.rows(), V = student.shape.cols();
    MT_CHECK(targets.numel() == N && targets.dtype == DType::i32, "distill_loss: targets must be ", N, " i32 (one per row of ",
             "the logits), found ", targets.shape, " ", dtype_name(targets.dtype));
    check_shape(loss, Shape{1}, "distill_loss", "loss");
    dispatch_floating(student.dtype, "distill_loss", [&]<class F>() {
        const std::int32_t* y = targets.data<std::int32_t>();  // (N)
        double ce = 0, kl = 0, n = 0;
        for (std::int64_t i = 0; i < N; ++i) {
            if (y[i] == ignore_index) continue;
            MT_CHECK(y[i] >= 0 && y[i] < V, "distill_loss: target of row ", i, " is ", y[i], ", expected a class in [0, ", V,
                     ") or the ignore index ", ignore_index);
            const F *s = student.data<F>() + i * V, *t = teacher.data<F>() + i * V;  // (V), (V)
            ce += cpu::distill::lse(s, V, 1.0) - double(s[y[i]]);
            const double ls = cpu::distill::lse(s, V, T), lt = cpu::distill::lse(t, V, T);
            for (std::int64_t v = 0; v < V; ++v) {
                const double lp = double(t[v]) / T - lt, lq = double(s[v]) / T - ls;
                kl += std::exp(lp) * (lp - lq);
            }
            n += 1;
        }
        const double m = n > 0 ? 1.0 / n : 0.0;
        loss.data<F>()[0] = F(alpha * ce * m + (1 - alpha) * T * T * kl * m);
        double* st = stats.data<double>();
        st[0] = ce * m;
        st[1] = kl * m;
        st[2] = n;
    });
}

/// dstudent (=|+=) the gradient above times dloss[0].  dstudent, student, teacher (N, V)  targets (N)  dloss (1)
inline void distill_loss_backward(CPU, GradOut dstudent, const Tensor& student, const Tensor& teacher,
                                  const Tensor& targets, const Tensor& dloss, double alpha, double T, int ignore_index) {
    if (!dstudent) return;
    check_same(dstudent.t, student, "distill_loss_backward", "student gradient", "student logits");
    const std::int64_t N = student.shape.rows(), V = student.shape.cols();
    dispatch_floating(student.dtype, "distill_loss_backward", [&]<class F>() {
        const std::int32_t* y = targets.data<std::int32_t>();
        std::int64_t n = 0;
        for (std::int64_t i = 0; i < N; ++i) n += y[i] != ignore_index;
        const double dl = double(dloss.data<F>()[0]) / double(std::max<std::int64_t>(n, 1));
        for (std::int64_t i = 0; i < N; ++i) {
            F* d = dstudent.t.data<F>() + i * V;
            if (y[i] == ignore_index) {
                if (!dstudent.accumulate) std::fill_n(d, V, F(0));
                continue;
            }
            const F *s = student.data<F>() + i * V, *t = teacher.data<F>() + i * V;
            const double l1 = cpu::distill::lse(s, V, 1.0), ls = cpu::distill::lse(s, V, T), lt = cpu::distill::lse(t, V, T);
            for (std::int64_t v = 0; v < V; ++v) {
                const double soft = std::exp(double(s[v]) - l1) - (v == y[i] ? 1.0 : 0.0);
                const double q = std::exp(double(s[v]) / T - ls), p = std::exp(double(t[v]) / T - lt);
                const double gv = (alpha * soft + (1 - alpha) * T * (q - p)) * dl;
                d[v] = F((dstudent.accumulate ? double(d[v]) : 0.0) + gv);
            }
        }
    });
}

}  // namespace minitrain
