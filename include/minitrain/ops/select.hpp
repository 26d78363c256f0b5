// minitrain/ops/select.hpp
// The differentiable selection of one position per row, for every backend: what a scalar head (the
// reward model's score, train/reward.hpp) reads from a (B, T, C) hidden state. See backend/cpu/select.hpp.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// y[b, :] = x[b, positions[b], :].   x: (B, T, C)  positions: (B) i32 on the backend  ->  y: (B, C).
/// The gradient flows into x at the selected positions only. `positions` must outlive the backward.
template <class B>
Var& select_positions(Graph<B>& g, Var& x, const Tensor& positions) {
    MT_CHECK(x.data.shape.rank == 3, "select_positions: x must be (B, T, C), found ", x.data.shape);
    Var& y = g.make(Shape{x.data.shape[0], x.data.shape[2]}, x.data.dtype, g.needs_grad(x));
    select_positions_forward(B{}, y.data, x.data, positions);
    if (y.requires_grad)
        g.record({&y}, [px = &x, py = &y, positions](Graph<B>& g) {
            select_positions_backward(B{}, g.grad_of(*px), py->grad, positions);
        });
    return y;
}

}  // namespace minitrain
