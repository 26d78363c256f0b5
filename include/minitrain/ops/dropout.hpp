// minitrain/ops/dropout.hpp
// Differentiable inverted dropout. The mask is a function of (seed, offset + i) (see
// backend/cpu/dropout.hpp): each call reserves numel consecutive indices of the graph's random stream,
// so successive dropouts differ, a step is reproducible from (seed, counter), and the backward
// regenerates the mask instead of storing it.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// y = x * mask / (1 - p) in training mode; x itself (no node, no copy) when p == 0 or in eval mode.
template <class B>
Var& dropout(Graph<B>& g, Var& x, double p) {
    MT_CHECK(p >= 0 && p <= 1, "dropout: drop probability must be in [0, 1], found ", p);
    if (p == 0 || !g.training()) return x;
    const std::uint64_t seed = g.rng().seed, offset = g.rng().skip(std::uint64_t(x.data.numel()));
    Var& y = g.make(x.data.shape, x.data.dtype, g.needs_grad(x));
    dropout_forward(B{}, y.data, x.data, p, seed, offset);
    if (y.requires_grad)
        g.record({&y}, [px = &x, py = &y, p, seed, offset](Graph<B>& g) {
            dropout_backward(B{}, g.grad_of(*px), py->grad, p, seed, offset);
        });
    return y;
}

}  // namespace minitrain
