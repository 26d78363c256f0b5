// minitrain/backend/cpu/ppo.hpp
// The PPO losses on the CPU (Schulman et al. 2017, as MiniMind's train_ppo.py writes them), per generated
// token, with per-token advantages A and returns from GAE (rl/advantages.hpp):
//
//   actor:   r      = exp(lp - old)                                            the policy ratio
//            kl     = exp(ref - lp) - (ref - lp) - 1                           Schulman's k3 estimator, >= 0
//            loss   = mean_tok max(-A r, -A clip(r, 1 - clip, 1 + clip)) + kl_coef mean_tok kl
//   critic:  vc     = clip(v, old_v - cliprange_value, old_v + cliprange_value)
//            value  = 0.5 mean_tok max((v - ret)^2, (vc - ret)^2)
//            loss   = vf_coef value                                            (what is added to the actor's)
//
// mean_tok is the mean over every counted token of the batch (targets != ignore_index), not per sequence
// first as GRPO's: MiniMind's masked sum / mask sum. The KL to the reference is a loss term, as in
// MiniMind (not folded into the per-token rewards): its gradient reaches the policy directly and the
// critic never has to predict it.
// Gradients: actor d/d lp = -A r where the unclipped term is the maximum, 0 where the clip is active
// (A > 0 and r > 1 + clip, or A < 0 and r < 1 - clip), plus kl_coef (1 - exp(ref - lp)), each over the
// token count; critic d/d v = vf_coef (v - ret) where the unclipped error is the larger, 0 where the clipped one
// is (v outside the band and farther from ret than vc), over the token count. On ties (inside the band)
// both terms have that same derivative. Serial loops in double: R x T is a few thousand tokens.
//
// R = sequences, T = positions, N = R * T.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

/// The knobs of the PPO losses, named as MiniMind's train_ppo.py names them, with its defaults.
struct PpoOptions {
    double clip_epsilon = 0.2;     // the ratio is clipped to [1 - clip_epsilon, 1 + clip_epsilon]
    double kl_coef = 0.02;         // weight of the k3 KL to the reference (0: no reference needed)
    double cliprange_value = 0.2;  // the value is clipped to old_value +- cliprange_value
    double vf_coef = 0.5;          // weight of the value loss in the total loss
};

namespace cpu::ppo {
inline std::int64_t counted(const std::int32_t* y, std::int64_t n, int ignore_index) {
    std::int64_t c = 0;
    for (std::int64_t i = 0; i < n; ++i) c += y[i] != ignore_index;
    return c;
}
}  // namespace cpu::ppo

/// Actor loss (1); coef (N) = d loss / d lp, saved for the backward; stats (5) f64 = {mean k3 kl to the
/// reference, clip fraction (|r - 1| > clip_epsilon, MiniMind's clipfrac), mean approx kl 0.5 (lp - old)^2,
/// mean ratio, counted tokens}.   lp, old (N)  ref (N) or undefined when kl_coef == 0  adv (N)  targets (R, T) i32
inline void ppo_policy_loss_forward(CPU, const Tensor& loss, const Tensor& coef, const Tensor& stats, const Tensor& lp,
                                    const Tensor& old, const Tensor& ref, const Tensor& adv, const Tensor& targets,
                                    const PpoOptions& o, int ignore_index) {
    MT_CHECK(targets.shape.rank == 2 && targets.dtype == DType::i32, "ppo_policy_loss: targets must be (R, T) i32, found ",
             targets.shape, " ", dtype_name(targets.dtype));
    const std::int64_t N = targets.shape[0] * targets.shape[1];
    check_shape(lp, Shape{N}, "ppo_policy_loss", "log-probabilities (R*T)");
    check_same(old, lp, "ppo_policy_loss", "old log-probabilities", "log-probabilities");
    const bool kl = o.kl_coef != 0;
    if (kl) check_same(ref, lp, "ppo_policy_loss", "reference log-probabilities", "log-probabilities");
    check_same(adv, lp, "ppo_policy_loss", "advantages (R*T)", "log-probabilities");
    check_same(coef, lp, "ppo_policy_loss", "coef", "log-probabilities");
    check_shape(loss, Shape{1}, "ppo_policy_loss", "loss");
    MT_CHECK(stats.numel() == 5 && stats.dtype == DType::f64, "ppo_policy_loss: stats must be 5 f64, found ", stats.shape,
             " ", dtype_name(stats.dtype));
    dispatch_floating(lp.dtype, "ppo_policy_loss", [&]<class F>() {
        const F *p = lp.data<F>(), *q = old.data<F>(), *rf = kl ? ref.data<F>() : nullptr, *a = adv.data<F>();  // (N)
        const std::int32_t* y = targets.data<std::int32_t>();                                               // (N)
        F* c = coef.data<F>();                                                                              // (N)
        const std::int64_t n = cpu::ppo::counted(y, N, ignore_index);
        const double scale = n > 0 ? 1.0 / double(n) : 0.0;
        double surrogate = 0, kl_sum = 0, clipped = 0, approx = 0, ratio_sum = 0;
        for (std::int64_t i = 0; i < N; ++i) {
            if (y[i] == ignore_index) {
                c[i] = F(0);
                continue;
            }
            const double x = double(p[i]), A = double(a[i]), lr = x - double(q[i]), r = std::exp(lr);
            const double rc = std::clamp(r, 1.0 - o.clip_epsilon, 1.0 + o.clip_epsilon);
            const double plain = -A * r, clipped_term = -A * rc;
            const bool active = clipped_term > plain;  // the clipped term is the maximum: no gradient
            surrogate += std::max(plain, clipped_term);
            double k = 0, dk = 0;
            if (kl) {
                const double d = double(rf[i]) - x, e = std::exp(d);
                k = e - d - 1.0;
                dk = 1.0 - e;
            }
            c[i] = F(((active ? 0.0 : -A * r) + o.kl_coef * dk) * scale);
            kl_sum += k;
            clipped += std::abs(r - 1.0) > o.clip_epsilon;
            approx += 0.5 * lr * lr;
            ratio_sum += r;
        }
        loss.data<F>()[0] = F((surrogate + o.kl_coef * kl_sum) * scale);
        double* s = stats.data<double>();
        s[0] = kl_sum * scale;
        s[1] = clipped * scale;
        s[2] = approx * scale;
        s[3] = ratio_sum * scale;
        s[4] = double(n);
    });
}

/// Critic loss (1), vf_coef times the value loss; coef (N) = d loss / d v; stats (3) f64 = {fraction of
/// tokens whose clipped error is the larger (no gradient), counted tokens, the value loss before
/// vf_coef}.   v, old_v, ret (N)  targets (R, T) i32
inline void ppo_value_loss_forward(CPU, const Tensor& loss, const Tensor& coef, const Tensor& stats, const Tensor& v,
                                   const Tensor& old_v, const Tensor& ret, const Tensor& targets, const PpoOptions& o,
                                   int ignore_index) {
    MT_CHECK(targets.shape.rank == 2 && targets.dtype == DType::i32, "ppo_value_loss: targets must be (R, T) i32, found ",
             targets.shape, " ", dtype_name(targets.dtype));
    const std::int64_t N = targets.shape[0] * targets.shape[1];
    check_shape(v, Shape{N}, "ppo_value_loss", "values (R*T)");
    check_same(old_v, v, "ppo_value_loss", "old values", "values");
    check_same(ret, v, "ppo_value_loss", "returns", "values");
    check_same(coef, v, "ppo_value_loss", "coef", "values");
    check_shape(loss, Shape{1}, "ppo_value_loss", "loss");
    MT_CHECK(stats.numel() == 3 && stats.dtype == DType::f64, "ppo_value_loss: stats must be 3 f64, found ", stats.shape,
             " ", dtype_name(stats.dtype));
    dispatch_floating(v.dtype, "ppo_value_loss", [&]<class F>() {
        const F *x = v.data<F>(), *ov = old_v.data<F>(), *R = ret.data<F>();  // (N)
        const std::int32_t* y = targets.data<std::int32_t>();                 // (N)
        F* c = coef.data<F>();                                                // (N)
        const std::int64_t n = cpu::ppo::counted(y, N, ignore_index);
        const double scale = n > 0 ? 1.0 / double(n) : 0.0, cliprange = o.cliprange_value;
        double total = 0, clipped = 0;
        for (std::int64_t i = 0; i < N; ++i) {
            if (y[i] == ignore_index) {
                c[i] = F(0);
                continue;
            }
            const double val = double(x[i]), before = double(ov[i]), r = double(R[i]);
            const double vc = std::clamp(val, before - cliprange, before + cliprange);
            const double e1 = (val - r) * (val - r), e2 = (vc - r) * (vc - r);
            const bool active = e2 > e1;
            total += 0.5 * std::max(e1, e2);
            c[i] = F((active ? 0.0 : val - r) * scale * o.vf_coef);
            clipped += active;
        }
        loss.data<F>()[0] = F(o.vf_coef * total * scale);
        double* s = stats.data<double>();
        s[0] = clipped * scale;
        s[1] = double(n);
        s[2] = total * scale;
    });
}

/// dx (=|+=) coef * dloss[0]: the backward of both PPO losses.   dx, coef (N)  dloss (1)
inline void ppo_loss_backward(CPU, GradOut dx, const Tensor& coef, const Tensor& dloss) {
    check_shape(dloss, Shape{1}, "ppo_loss_backward", "loss gradient");
    if (!dx) return;
    check_same(dx.t, coef, "ppo_loss_backward", "input gradient", "coef");
    dispatch_floating(coef.dtype, "ppo_loss_backward", [&]<class F>() {
        const F* c = coef.data<F>();  // (N)
        const F dl = dloss.data<F>()[0];
        F* g = dx.t.data<F>();
        for (std::int64_t i = 0; i < coef.numel(); ++i) g[i] = (dx.accumulate ? g[i] : F(0)) + c[i] * dl;
    });
}

}  // namespace minitrain
