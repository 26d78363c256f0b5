// minitrain/ops/reshape.hpp
// A reshaped Var shares its input's storage; in backward its gradient buffer is handed to the input
// as is when the input has none yet, so a reshape costs no copy in either direction.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

template <class B>
Var& reshape(Graph<B>& g, Var& x, Shape shape) {
    Var& y = g.leaf(x.data.view(shape), g.needs_grad(x));
    if (y.requires_grad)
        g.record({&y}, [px = &x, py = &y](Graph<B>& g) {
            if (!px->requires_grad) return;
            if (!px->grad.defined() && !px->persistent_grad) {
                px->grad = py->grad.view(px->data.shape);  // adopt: y's buffer becomes x's
                py->grad = {};
                return;
            }
            accumulate(B{}, g.grad_of(*px), py->grad.view(px->data.shape));
        });
    return y;
}

}  // namespace minitrain
