// minitrain/ops/grpo.hpp
// The differentiable GRPO / CISPO policy loss: the policy's per-token log-probabilities in (a Var), one
// scalar out; the sampling policy's and the reference's log-probabilities and the advantages are
// constants. The formula, both surrogates and the KL term: backend/cpu/grpo.hpp.
//
// R = sequences, T = positions, N = R * T.
#pragma once

#include <cmath>

#include "../autograd/graph.hpp"

namespace minitrain {

/// What one grpo_loss call measured, over its counted (generated) tokens; host numbers, for logging.
struct PolicyLossStats {
    double kl = 0;             // mean k3 estimate of KL(policy || reference) per token (0 when beta == 0)
    double clip_fraction = 0;  // fraction of tokens whose clip is active (GRPO: ratio outside the band in the
                               // direction of the advantage; CISPO: ratio above epsilon_high)
    double ratio = 0;          // mean policy ratio exp(lp - old): 1 on the first pass over fresh samples
    double tokens = 0;         // counted tokens
};

/// The GRPO / CISPO loss -> shape (1). lp: the policy's per-token log-probabilities (R*T) (sequence_logprobs
/// over a (R*T, 1) view of the targets gives them); old: the sampling policy's (R*T); ref: the reference's
/// (R*T), not read when o.beta == 0; adv: one advantage per sequence (R); targets (R, T) i32 marks the
/// generated tokens (anything but ignore_index). targets must stay alive until backward has run.
template <class B>
Var& grpo_loss(Graph<B>& g, Var& lp, const Tensor& old, const Tensor& ref, const Tensor& adv, const Tensor& targets,
               const PolicyLossOptions& o, PolicyLossStats* stats = nullptr, int ignore_index = -100) {
    MT_CHECK(std::isfinite(o.beta) && o.beta >= 0, "grpo_loss: beta must be >= 0, found ", o.beta);
    MT_CHECK(o.epsilon > 0 && o.epsilon < 1, "grpo_loss: epsilon must be in (0, 1), found ", o.epsilon);
    MT_CHECK(o.epsilon_high > 0, "grpo_loss: epsilon_high must be positive, found ", o.epsilon_high);
    const DType dt = lp.data.dtype;
    Var& loss = g.make(Shape{1}, dt, g.needs_grad(lp));
    Tensor coef = g.scratch(lp.data.shape, dt);     // (N) d loss / d lp
    Tensor stat = g.scratch(Shape{4}, DType::f64);  // (4) the statistics, on the backend
    grpo_loss_forward(B{}, loss.data, coef, stat, lp.data, old, ref, adv, targets, o, ignore_index);
    if (stats) {
        double s[4];
        B::to_host(s, stat);
        *stats = PolicyLossStats{s[0], s[1], s[2], s[3]};
    }
    if (loss.requires_grad)
        g.record({&loss}, [px = &lp, py = &loss, coef](Graph<B>& g) { grpo_loss_backward(B{}, g.grad_of(*px), coef, py->grad); });
    return loss;
}

}  // namespace minitrain
