// minitrain/ops/swiglu.hpp
// Differentiable SwiGLU on the fused gate|up projection: y = silu(h[..., :F]) * h[..., F:].
// The backward recomputes the sigmoid from h, so nothing beyond h itself is kept.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// h: (..., 2F) = [gate | up]  ->  y: (..., F)
/// readers: ReadBy::matmuls when only a linear layer reads y (down_proj without LoRA): then, on the CPU under
/// Autocast bf16, y is stored in bf16 (core/precision.hpp's activation_dtype); its gradient stays f32.
template <class B>
Var& swiglu(Graph<B>& g, Var& h, ReadBy readers = ReadBy::any) {
    MT_CHECK(h.data.shape.rank >= 1 && h.data.shape.cols() % 2 == 0, "swiglu: input must be (..., 2F), found ",
             h.data.shape);
    Shape ys = h.data.shape;
    ys.dims[ys.rank - 1] /= 2;
    const DType yt = B::device == Device::cpu ? activation_dtype(h.data.dtype, readers) : h.data.dtype;
    Var& y = g.make(ys, yt, g.needs_grad(h));
    swiglu_forward(B{}, y.data, h.data);
    if (y.requires_grad)
        g.record({&y}, [ph = &h, py = &y](Graph<B>& g) { swiglu_backward(B{}, g.grad_of(*ph), ph->data, py->grad); });
    return y;
}

}  // namespace minitrain
