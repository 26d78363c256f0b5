// minitrain/ops/swiglu.hpp
// Differentiable SwiGLU on the fused gate|up projection: y = silu(h[..., :F]) * h[..., F:].
// The backward recomputes the sigmoid from h, so nothing beyond h itself is kept.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// h: (..., 2F) = [gate | up]  ->  y: (..., F)
template <class B>
Var& swiglu(Graph<B>& g, Var& h) {
    MT_CHECK(h.data.shape.rank >= 1 && h.data.shape.cols() % 2 == 0, "swiglu: input must be (..., 2F), found ",
             h.data.shape);
    Shape ys = h.data.shape;
    ys.dims[ys.rank - 1] /= 2;
    Var& y = g.make(ys, h.data.dtype, g.needs_grad(h));
    swiglu_forward(B{}, y.data, h.data);
    if (y.requires_grad)
        g.record({&y}, [ph = &h, py = &y](Graph<B>& g) { swiglu_backward(B{}, g.grad_of(*ph), ph->data, py->grad); });
    return y;
}

}  // namespace minitrain
