// minitrain/ops/rmsnorm.hpp
// Differentiable RMSNorm (Llama / MiniMind): y = x / sqrt(mean(x^2, last dim) + eps) * w.
// Saves one number per row (rstd) for the backward; x and w are read back from their Vars.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// x: (..., C)  w: (C)  ->  y: (..., C)
/// readers: ReadBy::matmuls when only linear layers read y (then, on the CPU under Autocast bf16, y is stored in
/// bf16: core/precision.hpp's activation_dtype; its gradient stays f32).
template <class B>
Var& rmsnorm(Graph<B>& g, Var& x, Var& w, double eps = 1e-5, ReadBy readers = ReadBy::any) {
    const DType yt = B::device == Device::cpu ? activation_dtype(x.data.dtype, readers) : x.data.dtype;
    Var& y = g.make(x.data.shape, yt, g.needs_grad(x, w));
    Tensor rstd = y.requires_grad ? g.scratch(Shape{x.data.shape.rows()}, x.data.dtype) : Tensor{};  // (N)
    rmsnorm_forward(B{}, y.data, rstd, x.data, w.data, eps);
    if (y.requires_grad)
        g.record({&y}, [px = &x, pw = &w, py = &y, rstd](Graph<B>& g) {
            GradOut dw = g.grad_of(*pw);
            // Per-chunk partial sums of dw, so that its reduction over rows is deterministic.
            Tensor ws = dw ? g.scratch(rmsnorm_backward_workspace(B{}, px->data.shape), px->data.dtype) : Tensor{};
            rmsnorm_backward(B{}, g.grad_of(*px), dw, px->data, pw->data, rstd, py->grad, ws);
        });
    return y;
}

}  // namespace minitrain
