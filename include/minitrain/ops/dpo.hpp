// minitrain/ops/dpo.hpp
// The differentiable DPO loss for every backend: policy sequence log-probabilities in, one scalar out,
// the reference model's log-probabilities as constants. See backend/cpu/dpo.hpp for the formula.
//
// B = preference pairs.
#pragma once

#include <cmath>

#include "../autograd/graph.hpp"

namespace minitrain {

/// Reward statistics of one dpo_loss call, means over its B pairs (host numbers, for logging).
struct DpoStats {
    double chosen_reward = 0;    // beta (policy_chosen - ref_chosen)
    double rejected_reward = 0;  // beta (policy_rejected - ref_rejected)
    double margin = 0;           // chosen_reward - rejected_reward
    double accuracy = 0;         // fraction of pairs with chosen_reward > rejected_reward
};

/// mean_b -logsigmoid(beta ((pc - pr) - (rc - rr)))  ->  shape (1). All four inputs are (B) of one
/// floating type: pc/pr are the policy's log-probabilities of the chosen/rejected sequences (Vars, the
/// gradient flows into them), rc/rr the reference model's (constants). Stable for any margin. When
/// `stats` is given it receives the reward statistics (one device-to-host copy of 4 numbers).
template <class B>
Var& dpo_loss(Graph<B>& g, Var& policy_chosen, Var& policy_rejected, const Tensor& ref_chosen,
              const Tensor& ref_rejected, double beta, DpoStats* stats = nullptr) {
    MT_CHECK(std::isfinite(beta) && beta > 0, "dpo_loss: beta must be positive, found ", beta);
    const std::int64_t Bn = policy_chosen.data.numel();
    const DType dt = policy_chosen.data.dtype;
    Var& loss = g.make(Shape{1}, dt, g.needs_grad(policy_chosen, policy_rejected));
    Tensor coef = g.scratch(Shape{Bn}, dt);            // (B) d loss / d policy_chosen
    Tensor stat = g.scratch(Shape{4}, DType::f64);     // (4) the statistics, on the backend
    dpo_loss_forward(B{}, loss.data, coef, stat, policy_chosen.data, policy_rejected.data, ref_chosen, ref_rejected,
                     beta);
    if (stats) {
        double s[4];
        B::to_host(s, stat);
        *stats = DpoStats{s[0], s[1], s[2], s[3]};
    }
    if (loss.requires_grad)
        g.record({&loss}, [pc = &policy_chosen, pr = &policy_rejected, py = &loss, coef](Graph<B>& g) {
            // grad_of(pc) before grad_of(pr): the order in which the two buffers are acquired is fixed.
            GradOut dc = g.grad_of(*pc);
            GradOut dr = g.grad_of(*pr);
            dpo_loss_backward(B{}, dc, dr, coef, py->grad);
        });
    return loss;
}

}  // namespace minitrain
