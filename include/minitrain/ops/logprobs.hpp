// minitrain/ops/logprobs.hpp
// Differentiable sequence log-probabilities, for every backend: how likely the model finds each whole
// sequence's targets. The node saves only the per-position log-sum-exp (B*T); the backward rebuilds the
// softmax from the logits, so no (B, T, V) probability tensor is kept.
//
// B = sequences, T = positions, V = vocab.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// logp[b] = sum over t with targets[b, t] != ignore_index of log softmax(logits[b, t])[targets[b, t]]
///   -> shape (B). logits (B, T, V) (or any (..., V) with B*T rows), targets (B, T) i32.
/// With `average` each sum is divided by the sequence's count of counted positions (MiniMind's
/// length-normalized DPO). A sequence without counted positions gets 0 and zero gradient. A target
/// outside [0, V) that is not ignore_index throws minitrain::Error naming the sequence, position and
/// value. targets must stay alive until backward has run.
template <class B>
Var& sequence_logprobs(Graph<B>& g, Var& logits, const Tensor& targets, bool average = false,
                       int ignore_index = -100) {
    MT_CHECK(targets.shape.rank == 2, "sequence_logprobs: targets must be (B, T), found ", targets.shape);
    const std::int64_t Bn = targets.shape[0];
    const DType dt = logits.data.dtype;
    Var& logp = g.make(Shape{Bn}, dt, g.needs_grad(logits));
    Tensor lse = g.scratch(Shape{targets.numel()}, dt);  // (B*T)
    sequence_logprobs_forward(B{}, logp.data, lse, logits.data, targets, average, ignore_index);
    if (logp.requires_grad)
        g.record({&logp}, [px = &logits, py = &logp, targets, lse, average, ignore_index](Graph<B>& g) {
            sequence_logprobs_backward(B{}, g.grad_of(*px), px->data, targets, lse, py->grad, average, ignore_index);
        });
    return logp;
}

}  // namespace minitrain
