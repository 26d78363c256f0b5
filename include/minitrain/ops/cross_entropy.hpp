// minitrain/ops/cross_entropy.hpp
// Differentiable softmax cross-entropy with an ignore index, for every backend. The node saves the
// per-row log-sum-exp (N) and the non-ignored row count; the gradient is rebuilt from the logits.
//
// N = rows (batch x time), V = vocab.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// Mean over non-ignored rows of logsumexp(logits[n]) - logits[n, targets[n]]  ->  shape (1).
///   logits (N, V) or (..., V) with N rows;  targets: N i32 class indices or ignore_index.
/// All rows ignored gives 0 with zero gradient (PyTorch: NaN). A target outside [0, V) that is not
/// ignore_index throws minitrain::Error. targets must stay alive until backward has run.
template <class B>
Var& cross_entropy(Graph<B>& g, Var& logits, const Tensor& targets, int ignore_index = -100) {
    const std::int64_t N = logits.data.shape.rows();
    const DType dt = logits.data.dtype;
    Var& loss = g.make(Shape{1}, dt, g.needs_grad(logits));
    Tensor losses = g.scratch(Shape{N}, dt), lse = g.scratch(Shape{N}, dt);  // (N), (N)
    const std::int64_t count = cross_entropy_forward(B{}, loss.data, losses, lse, logits.data, targets, ignore_index);
    if (loss.requires_grad)
        g.record({&loss}, [px = &logits, py = &loss, targets, lse, count, ignore_index](Graph<B>& g) {
            cross_entropy_backward(B{}, g.grad_of(*px), px->data, targets, lse, py->grad, count, ignore_index);
        });
    return loss;
}

/// Per-row losses (N) for evaluation (perplexity, bits per byte): 0 for ignored rows. Not differentiable:
/// the result never requires a gradient.
template <class B>
Var& cross_entropy_rows(Graph<B>& g, Var& logits, const Tensor& targets, int ignore_index = -100) {
    const std::int64_t N = logits.data.shape.rows();
    Var& losses = g.make(Shape{N}, logits.data.dtype, false);
    Tensor lse = g.scratch(Shape{N}, logits.data.dtype);  // (N)
    cross_entropy_forward(B{}, Tensor{}, losses.data, lse, logits.data, targets, ignore_index);
    return losses;
}

}  // namespace minitrain
