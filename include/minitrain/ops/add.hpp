// minitrain/ops/add.hpp
// Differentiable elementwise sum (the residual connection).
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// y = a + b, same shapes.
template <class B>
Var& add(Graph<B>& g, Var& a, Var& b) {
    Var& y = g.make(a.data.shape, a.data.dtype, g.needs_grad(a, b));
    add_forward(B{}, y.data, a.data, b.data);
    if (y.requires_grad)
        g.record({&y}, [pa = &a, pb = &b, py = &y](Graph<B>& g) {
            GradOut da = g.grad_of(*pa);  // in the order the kernel writes: add(x, x) must give 2 dy
            GradOut db = g.grad_of(*pb);
            add_backward(B{}, da, db, py->grad);
        });
    return y;
}

}  // namespace minitrain
