// minitrain/ops/embedding.hpp
// Differentiable token embedding: rows of a (V, C) table picked by integer ids. Only the table can
// receive a gradient (ids are data); the backward scatter-adds into it.
#pragma once

#include "../autograd/graph.hpp"

namespace minitrain {

/// y = table[ids].   ids: (N), (B, T) or (B, T, K) i32  table: (V, C)  ->  y: (ids shape..., C)
/// ids is captured by reference to its storage: it must stay alive until backward has run.
template <class B>
Var& embedding(Graph<B>& g, const Tensor& ids, Var& table) {
    MT_CHECK(table.data.shape.rank == 2, "embedding: table must be (V, C), found ", table.data.shape);
    MT_CHECK(ids.shape.rank >= 1 && ids.shape.rank < Shape::max_rank, "embedding: ids must have 1 to ",
             Shape::max_rank - 1, " dimensions, found ", ids.shape);
    Shape ys = ids.shape;
    ys.dims[ys.rank++] = table.data.shape[1];
    Var& y = g.make(ys, table.data.dtype, g.needs_grad(table));
    embedding_forward(B{}, y.data, ids, table.data);
    if (y.requires_grad)
        g.record({&y}, [ids, pt = &table, py = &y](Graph<B>& g) {
            embedding_backward(B{}, g.grad_of(*pt), ids, py->grad);
        });
    return y;
}

}  // namespace minitrain
