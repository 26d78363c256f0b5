// minitrain/ops/ppo.hpp
// The differentiable PPO losses: the actor's (clipped ratio + KL to the reference) on the policy's per-token
// log-probabilities, the critic's (clipped value loss) on the value head's per-token values; the old
// log-probabilities and values, the reference's log-probabilities, the advantages and the returns are
// constants. The formulas: backend/cpu/ppo.hpp.
//
// R = sequences, T = positions, N = R * T.
#pragma once

#include <cmath>

#include "../autograd/graph.hpp"

namespace minitrain {

/// What ppo_policy_loss measured over its counted (generated) tokens; host numbers, for logging.
struct PpoPolicyStats {
    double kl = 0;             // mean k3 estimate of KL(policy || reference) per token (0 when kl_coef == 0)
    double clip_fraction = 0;  // fraction of tokens with |ratio - 1| > clip_epsilon (MiniMind's clipfrac)
    double approx_kl = 0;      // mean 0.5 (lp - old)^2: how far the policy moved from the sampling one
    double ratio = 0;          // mean ratio exp(lp - old): 1 on the first pass over fresh samples
    double tokens = 0;         // counted tokens
};

/// What ppo_value_loss measured; host numbers.
struct PpoValueStats {
    double clip_fraction = 0;  // fraction of tokens whose clipped error is the larger (they get no gradient)
    double tokens = 0;
    double value_loss = 0;     // 0.5 mean max(...) before vf_coef (what MiniMind logs as the critic loss)
};

/// The actor loss -> (1). lp: the policy's per-token log-probabilities (N); old: the sampling policy's (N);
/// ref: the reference's (N), not read when o.kl_coef == 0; adv: per-token advantages (N); targets (R, T) i32
/// marks the generated tokens. targets must stay alive until backward has run.
template <class B>
Var& ppo_policy_loss(Graph<B>& g, Var& lp, const Tensor& old, const Tensor& ref, const Tensor& adv, const Tensor& targets,
                     const PpoOptions& o, PpoPolicyStats* stats = nullptr, int ignore_index = -100) {
    MT_CHECK(std::isfinite(o.kl_coef) && o.kl_coef >= 0, "ppo_policy_loss: kl_coef must be >= 0, found ", o.kl_coef);
    MT_CHECK(o.clip_epsilon > 0 && o.clip_epsilon < 1, "ppo_policy_loss: clip_epsilon must be in (0, 1), found ",
             o.clip_epsilon);
    const DType dt = lp.data.dtype;
    Var& loss = g.make(Shape{1}, dt, g.needs_grad(lp));
    Tensor coef = g.scratch(lp.data.shape, dt);     // (N) d loss / d lp
    Tensor stat = g.scratch(Shape{5}, DType::f64);  // (5) the statistics, on the backend
    ppo_policy_loss_forward(B{}, loss.data, coef, stat, lp.data, old, ref, adv, targets, o, ignore_index);
    if (stats) {
        double s[5];
        B::to_host(s, stat);
        *stats = PpoPolicyStats{s[0], s[1], s[2], s[3], s[4]};
    }
    if (loss.requires_grad)
        g.record({&loss}, [px = &lp, py = &loss, coef](Graph<B>& g) { ppo_loss_backward(B{}, g.grad_of(*px), coef, py->grad); });
    return loss;
}

/// The critic loss, o.vf_coef x the clipped value loss -> (1) (added to the actor's: one backward trains
/// both). values: the value head's per-token values (N); old_values: the values at sampling time (N);
/// returns (N) = GAE advantages + old values; targets (R, T) as for ppo_policy_loss.
template <class B>
Var& ppo_value_loss(Graph<B>& g, Var& values, const Tensor& old_values, const Tensor& returns, const Tensor& targets,
                    const PpoOptions& o, PpoValueStats* stats = nullptr, int ignore_index = -100) {
    MT_CHECK(std::isfinite(o.cliprange_value) && o.cliprange_value > 0, "ppo_value_loss: cliprange_value must be "
             "positive, found ", o.cliprange_value);
    MT_CHECK(std::isfinite(o.vf_coef) && o.vf_coef >= 0, "ppo_value_loss: vf_coef must be >= 0, found ", o.vf_coef);
    const DType dt = values.data.dtype;
    Var& loss = g.make(Shape{1}, dt, g.needs_grad(values));
    Tensor coef = g.scratch(values.data.shape, dt);  // (N) d loss / d values
    Tensor stat = g.scratch(Shape{3}, DType::f64);
    ppo_value_loss_forward(B{}, loss.data, coef, stat, values.data, old_values, returns, targets, o, ignore_index);
    if (stats) {
        double s[3];
        B::to_host(s, stat);
        *stats = PpoValueStats{s[0], s[1], s[2]};
    }
    if (loss.requires_grad)
        g.record({&loss}, [px = &values, py = &loss, coef](Graph<B>& g) {
            ppo_loss_backward(B{}, g.grad_of(*px), coef, py->grad);
        });
    return loss;
}

}  // namespace minitrain
