// minitrain/ops/rope.hpp
// Differentiable rotary position embedding (Hugging Face rotate_half layout) of queries or keys.
// The cos/sin tables come from rope_table, computed once per model; nothing is saved for the backward.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// x: (B, T, H, D)  cos, sin: (Tmax, D/2), same type as x  ->  y: (B, T, H, D) at positions pos0 + t.
/// The tables are captured by view: they must stay alive until backward has run.
template <class B>
Var& rope(Graph<B>& g, Var& x, const Tensor& cos, const Tensor& sin, int pos0 = 0) {
    Var& y = g.make(x.data.shape, x.data.dtype, g.needs_grad(x));
    rope_forward(B{}, y.data, x.data, cos, sin, pos0);
    if (y.requires_grad)
        g.record({&y}, [px = &x, py = &y, cos, sin, pos0](Graph<B>& g) {
            rope_backward(B{}, g.grad_of(*px), py->grad, cos, sin, pos0);
        });
    return y;
}

}  // namespace minitrain
