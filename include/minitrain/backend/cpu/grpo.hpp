// minitrain/backend/cpu/grpo.hpp
// The GRPO / CISPO policy loss on the CPU, per generated token, from the policy's per-token
// log-probabilities lp, those of the policy that sampled the tokens (old) and of the frozen reference
// (ref), and one advantage per sequence A[b]:
//
//   r       = exp(lp - old)                                         the policy ratio (importance weight)
//   GRPO:   obj = min(r A, clip(r, 1 - epsilon, 1 + epsilon) A)     (PPO's clipped surrogate)
//   CISPO:  obj = sg(min(r, epsilon_high)) A lp                      (MiniMax-M1: the weight is clipped and
//                                                                    detached; every token keeps a gradient)
//   kl      = exp(ref - lp) - (ref - lp) - 1                        (Schulman's k3 estimator, >= 0)
//   loss    = mean_b [ sum_t mask[b,t] (-(obj - beta kl)) / sum_t mask[b,t] ]
//
// as MiniMind's train_grpo.py writes it (a token mean per sequence, then a mean over sequences). mask is
// targets != ignore_index; a sequence without generated tokens adds 0 and still counts in the mean over
// R (the batch is fixed-size, so the gradient scale does not depend on how many samples were empty).
// Gradients (d/d lp): GRPO r A where the unclipped term is the minimum, 0 where the clip is active
// (A > 0 and r > 1 + epsilon, or A < 0 and r < 1 - epsilon); CISPO min(r, epsilon_high) A; the KL term
// beta (1 - exp(ref - lp)). The loops are serial and in double: R x T is a few thousand tokens.
//
// R = sequences (prompts x samples), T = positions, N = R * T.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

/// Which policy-gradient surrogate grpo_loss uses.
enum class PolicyLoss : std::uint8_t { grpo, cispo };

inline const char* policy_loss_name(PolicyLoss k) { return k == PolicyLoss::grpo ? "grpo" : "cispo"; }

/// The knobs of grpo_loss, named as MiniMind's train_grpo.py names them.
struct PolicyLossOptions {
    PolicyLoss kind = PolicyLoss::cispo;
    double beta = 0.02;         // weight of the KL penalty to the reference (0: no reference needed)
    double epsilon = 0.2;       // GRPO: the ratio is clipped to [1 - epsilon, 1 + epsilon]
    double epsilon_high = 5.0;  // CISPO: the importance weight is clipped to at most epsilon_high
};

/// loss (1); coef (N) = d loss / d lp, saved for the backward; stats (4) f64 = {mean kl, clip fraction,
/// mean ratio, counted tokens} over the counted tokens.
/// lp, old (N)  ref (N) or undefined when beta == 0  adv (R)  targets (R, T) i32
inline void grpo_loss_forward(CPU, const Tensor& loss, const Tensor& coef, const Tensor& stats, const Tensor& lp,
                              const Tensor& old, const Tensor& ref, const Tensor& adv, const Tensor& targets,
                              const PolicyLossOptions& o, int ignore_index) {
    MT_CHECK(targets.shape.rank == 2 && targets.dtype == DType::i32, "grpo_loss: targets must be (R, T) i32, found ",
             targets.shape, " ", dtype_name(targets.dtype));
    const std::int64_t R = targets.shape[0], T = targets.shape[1];
    MT_CHECK(R >= 1, "grpo_loss: need at least one sequence, found targets ", targets.shape);
    check_shape(lp, Shape{R * T}, "grpo_loss", "log-probabilities (R*T)");
    check_same(old, lp, "grpo_loss", "old log-probabilities", "log-probabilities");
    const bool kl = o.beta != 0;
    if (kl) check_same(ref, lp, "grpo_loss", "reference log-probabilities", "log-probabilities");
    check_shape(adv, Shape{R}, "grpo_loss", "advantages (R)");
    MT_CHECK(adv.dtype == lp.dtype, "grpo_loss: advantages are ", dtype_name(adv.dtype), ", log-probabilities ",
             dtype_name(lp.dtype));
    check_same(coef, lp, "grpo_loss", "coef", "log-probabilities");
    check_shape(loss, Shape{1}, "grpo_loss", "loss");
    MT_CHECK(stats.numel() == 4 && stats.dtype == DType::f64, "grpo_loss: stats must be 4 f64, found ", stats.shape,
             " ", dtype_name(stats.dtype));
    dispatch_floating(lp.dtype, "grpo_loss", [&]<class F>() {
        const F *p = lp.data<F>(), *q = old.data<F>(), *rf = kl ? ref.data<F>() : nullptr;  // (N)
        const F* a = adv.data<F>();                                                      // (R)
        const std::int32_t* y = targets.data<std::int32_t>();                            // (R, T)
        F* c = coef.data<F>();                                                           // (N)
        double total = 0, kl_sum = 0, clipped = 0, ratio_sum = 0, counted = 0;
        for (std::int64_t b = 0; b < R; ++b) {
            std::int64_t n = 0;
            for (std::int64_t t = 0; t < T; ++t) n += y[b * T + t] != ignore_index;
            const double A = a[b], scale = n > 0 ? 1.0 / (double(n) * double(R)) : 0.0;
            double row = 0;
            for (std::int64_t t = 0; t < T; ++t) {
                const std::int64_t i = b * T + t;
                if (y[i] == ignore_index) {
                    c[i] = F(0);
                    continue;
                }
                const double x = double(p[i]), r = std::exp(x - double(q[i]));
                double obj, dobj;
                bool clip;
                if (o.kind == PolicyLoss::grpo) {
                    const double rc = std::clamp(r, 1.0 - o.epsilon, 1.0 + o.epsilon);
                    clip = (A > 0 && r > 1.0 + o.epsilon) || (A < 0 && r < 1.0 - o.epsilon);
                    obj = std::min(r * A, rc * A);
                    dobj = clip ? 0.0 : r * A;
                } else {
                    const double w = std::min(r, o.epsilon_high);
                    clip = r > o.epsilon_high;
                    obj = w * A * x;
                    dobj = w * A;
                }
                double k = 0, dk = 0;
                if (kl) {
                    const double d = double(rf[i]) - x, e = std::exp(d);
                    k = e - d - 1.0;
                    dk = 1.0 - e;
                }
                row += -(obj - o.beta * k);
                c[i] = F(-(dobj - o.beta * dk) * scale);
                kl_sum += k;
                clipped += clip;
                ratio_sum += r;
            }
            if (n > 0) total += row / double(n);
            counted += double(n);
        }
        loss.data<F>()[0] = F(total / double(R));
        double* s = stats.data<double>();
        const double m = counted > 0 ? 1.0 / counted : 0.0;
        s[0] = kl_sum * m;
        s[1] = clipped * m;
        s[2] = ratio_sum * m;
        s[3] = counted;
    });
}

/// dlp (=|+=) coef * dloss[0].  dlp, coef (N)  dloss (1)
inline void grpo_loss_backward(CPU, GradOut dlp, const Tensor& coef, const Tensor& dloss) {
    check_shape(dloss, Shape{1}, "grpo_loss_backward", "loss gradient");
    if (!dlp) return;
    check_same(dlp.t, coef, "grpo_loss_backward", "log-probability gradient", "coef");
    dispatch_floating(coef.dtype, "grpo_loss_backward", [&]<class F>() {
        const F* c = coef.data<F>();  // (N)
        const F dl = dloss.data<F>()[0];
        F* g = dlp.t.data<F>();
        for (std::int64_t i = 0; i < coef.numel(); ++i) g[i] = (dlp.accumulate ? g[i] : F(0)) + c[i] * dl;
    });
}

}  // namespace minitrain
