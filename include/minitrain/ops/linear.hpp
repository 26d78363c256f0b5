// minitrain/ops/linear.hpp
// Differentiable linear layer and matrix product, written once for every backend.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// y = x w^T.   x: (..., K)  w: (M, K)  ->  y: (..., M)
/// x may be stored in bf16 (ReadBy::matmuls, core/precision.hpp): y is then in w's type (f32), as are the gradients.
template <class B>
Var& linear(Graph<B>& g, Var& x, Var& w) {
    Shape ys = x.data.shape;
    ys.dims[ys.rank - 1] = w.data.shape[0];
    Var& y = g.make(ys, x.data.dtype == DType::bf16 ? w.data.dtype : x.data.dtype, g.needs_grad(x, w));
    linear_forward(B{}, y.data, x.data, w.data);
    if (y.requires_grad)
        g.record({&y}, [px = &x, pw = &w, py = &y](Graph<B>& g) {
            GradOut dx = g.grad_of(*px);  // in the order the kernel writes (see ops/add.hpp)
            GradOut dw = g.grad_of(*pw);
            linear_backward(B{}, dx, dw, px->data, pw->data, py->grad);
        });
    return y;
}

/// c = a b.   a: (M, K)  b: (K, N)  ->  c: (M, N)
template <class B>
Var& matmul(Graph<B>& g, Var& a, Var& b) {
    Var& c = g.make(Shape{a.data.shape[0], b.data.shape[-1]}, a.data.dtype, g.needs_grad(a, b));
    matmul_forward(B{}, c.data, a.data, b.data);
    if (c.requires_grad)
        g.record({&c}, [pa = &a, pb = &b, pc = &c](Graph<B>& g) {
            GradOut da = g.grad_of(*pa);
            GradOut db = g.grad_of(*pb);
            matmul_backward(B{}, da, db, pa->data, pb->data, pc->grad);
        });
    return c;
}

}  // namespace minitrain
