// minitrain/ops/select.hpp
// The differentiable read-out of a (B, T, C) hidden state as one vector per row, for every backend: a
// weighted sum over the positions. With a one-hot it selects one position exactly (the reward model's
// last-token score, train/reward.hpp); with 1/n on n positions it is their mean (its mean pooling). See
// backend/cpu/select.hpp.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// y[b, :] = sum_t weights[b, t] x[b, t, :].   x: (B, T, C)  weights: (B, T) f32 on the backend  ->  y: (B, C).
/// The gradient flows into x at the positions of nonzero weight. `weights` must outlive the backward.
template <class B>
Var& pool_positions(Graph<B>& g, Var& x, const Tensor& weights) {
    MT_CHECK(x.data.shape.rank == 3, "pool_positions: x must be (B, T, C), found ", x.data.shape);
    Var& y = g.make(Shape{x.data.shape[0], x.data.shape[2]}, x.data.dtype, g.needs_grad(x));
    pool_positions_forward(B{}, y.data, x.data, weights);
    if (y.requires_grad)
        g.record({&y}, [px = &x, py = &y, weights](Graph<B>& g) {
            pool_positions_backward(B{}, g.grad_of(*px), py->grad, weights);
        });
    return y;
}

}  // namespace minitrain
