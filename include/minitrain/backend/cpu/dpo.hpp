// minitrain/backend/cpu/dpo.hpp
// The DPO loss (Rafailov et al., 2023) on the CPU, from sequence log-probabilities of the policy and of
// the frozen reference model:
//
//   z[b]  = beta * ((pc[b] - pr[b]) - (rc[b] - rr[b]))      pc/pr: policy chosen/rejected, rc/rr: reference
//   loss  = mean_b -logsigmoid(z[b]) = mean_b softplus(-z[b])
//
// and the reward statistics logged while training: chosen reward beta (pc - rc), rejected reward
// beta (pr - rr), their mean difference (the margin) and the fraction of pairs where chosen > rejected.
// B is a handful of pairs, so the loops are serial and in double; z may be hundreds in magnitude (a
// policy far from its reference), hence the stable forms of softplus and sigmoid below.
//
// B = preference pairs.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

namespace cpu::dpo {

/// softplus(x) = log(1 + exp(x)) without overflow for large x or loss of precision for very negative x.
inline double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

/// 1 / (1 + exp(-x)) without overflow in either direction.
inline double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
    const double e = std::exp(x);
    return e / (1.0 + e);
}

}  // namespace cpu::dpo

/// loss[0] = mean_b softplus(-z[b]); coef[b] = d loss / d pc[b] = -beta sigmoid(-z[b]) / B (saved for the
/// backward: d loss / d pr[b] = -coef[b]); stats = {mean chosen reward, mean rejected reward, margin,
/// accuracy} in f64.
/// loss (1)  coef (B)  stats (4) f64  policy_chosen, policy_rejected, ref_chosen, ref_rejected (B)
inline void dpo_loss_forward(CPU, const Tensor& loss, const Tensor& coef, const Tensor& stats,
                             const Tensor& policy_chosen, const Tensor& policy_rejected, const Tensor& ref_chosen,
                             const Tensor& ref_rejected, double beta) {
    const std::int64_t B = policy_chosen.numel();
    MT_CHECK(B >= 1, "dpo_loss: need at least one pair, found policy_chosen ", policy_chosen.shape);
    for (const Tensor* t : {&policy_rejected, &ref_chosen, &ref_rejected})
        check_same(*t, policy_chosen, "dpo_loss", "log-probabilities", "policy_chosen");
    check_shape(coef, Shape{B}, "dpo_loss", "coef");
    check_shape(loss, Shape{1}, "dpo_loss", "loss");
    MT_CHECK(stats.numel() == 4 && stats.dtype == DType::f64, "dpo_loss: stats must be 4 f64, found ", stats.shape, " ",
             dtype_name(stats.dtype));
    dispatch_floating(policy_chosen.dtype, "dpo_loss", [&]<class R>() {
        const R *pc = policy_chosen.data<R>(), *pr = policy_rejected.data<R>();  // (B), (B)
        const R *rc = ref_chosen.data<R>(), *rr = ref_rejected.data<R>();        // (B), (B)
        R* c = coef.data<R>();                                                   // (B)
        double sum = 0, chosen = 0, rejected = 0, wins = 0;
        for (std::int64_t b = 0; b < B; ++b) {
            // Each reward is formed before the difference: beta (pc - rc) is what is logged, and the
            // policy and reference log-probabilities of a sequence are close, so this loses the least.
            const double rc_b = beta * (double(pc[b]) - double(rc[b]));
            const double rr_b = beta * (double(pr[b]) - double(rr[b]));
            const double z = rc_b - rr_b;
            sum += cpu::dpo::softplus(-z);
            c[b] = R(-beta * cpu::dpo::sigmoid(-z) / double(B));
            chosen += rc_b;
            rejected += rr_b;
            wins += rc_b > rr_b;
        }
        loss.data<R>()[0] = R(sum / double(B));
        double* s = stats.data<double>();
        s[0] = chosen / double(B);
        s[1] = rejected / double(B);
        s[2] = (chosen - rejected) / double(B);
        s[3] = wins / double(B);
    });
}

/// dpolicy_chosen (=|+=) coef * dloss[0], dpolicy_rejected (=|+=) -coef * dloss[0]. Either may be
/// undefined (not needed).  dpolicy_chosen, dpolicy_rejected, coef (B)  dloss (1)
inline void dpo_loss_backward(CPU, GradOut dpolicy_chosen, GradOut dpolicy_rejected, const Tensor& coef,
                              const Tensor& dloss) {
    check_shape(dloss, Shape{1}, "dpo_loss_backward", "loss gradient");
    const std::int64_t B = coef.numel();
    dispatch_floating(coef.dtype, "dpo_loss_backward", [&]<class R>() {
        const R* c = coef.data<R>();  // (B)
        const R dl = dloss.data<R>()[0];
        auto write = [&](GradOut& d, R sign) {
            if (!d) return;
            check_shape(d.t, Shape{B}, "dpo_loss_backward", "log-probability gradient");
            R* g = d.t.data<R>();
            for (std::int64_t b = 0; b < B; ++b) g[b] = (d.accumulate ? g[b] : R(0)) + sign * c[b] * dl;
        };
        write(dpolicy_chosen, R(1));
        write(dpolicy_rejected, R(-1));
    });
}

}  // namespace minitrain
