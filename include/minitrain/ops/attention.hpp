// minitrain/ops/attention.hpp
// Differentiable causal attention with grouped-query heads and an optional KV cache, for every backend.
// The node saves only the per-row log-sum-exp (B, H, Tq); the output itself is the output Var's data, and
// the probabilities are recomputed in backward, so memory stays O(T) per head instead of O(T^2).
//
// B = batch, Tq = query rows, Tk = key rows allocated, H = query heads, KV = key/value heads, D = head dim.
#pragma once

#include <cmath>

#include "../autograd/graph.hpp"

namespace minitrain {

/// out = softmax(scale q k^T + causal mask) v.
///   q (B, Tq, H, D), k and v (B, Tk, KV, D) with H a multiple of KV  ->  out (B, Tq, H, D).
/// kv_len: valid key rows (default Tk); the queries are the last Tq of them (Tq <= kv_len <= Tk), so a KV
/// cache of capacity Tk holding kv_len rows is attended without copying. scale <= 0 means 1/sqrt(D).
template <class B>
Var& attention(Graph<B>& g, Var& q, Var& k, Var& v, int kv_len = -1, double scale = 0) {
    const Shape& qs = q.data.shape;
    MT_CHECK(qs.rank == 4, "attention: q must be (B, Tq, H, D), found shape ", qs);
    if (scale <= 0) scale = 1.0 / std::sqrt(double(qs[3]));
    if (kv_len < 0) kv_len = int(k.data.shape[1]);
    Var& out = g.make(qs, q.data.dtype, g.needs_grad(q, k, v));
    Tensor lse = g.scratch(Shape{qs[0], qs[2], qs[1]}, q.data.dtype);  // (B, H, Tq)
    Tensor scratch = g.scratch(attention_scratch_shape(B{}, q.data, k.data, false), q.data.dtype);
    attention_forward(B{}, out.data, lse, q.data, k.data, v.data, kv_len, scale, scratch);
    if (out.requires_grad)
        g.record({&out}, [pq = &q, pk = &k, pv = &v, po = &out, lse, kv_len, scale](Graph<B>& g) {
            Tensor scratch = g.scratch(attention_scratch_shape(B{}, pq->data, pk->data, true), pq->data.dtype);
            attention_backward(B{}, g.grad_of(*pq), g.grad_of(*pk), g.grad_of(*pv), pq->data, pk->data, pv->data,
                               po->data, lse, po->grad, kv_len, scale, scratch);
        });
    return out;
}

}  // namespace minitrain
