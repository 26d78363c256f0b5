// minitrain/ops/moe.hpp
// Mixture-of-experts building blocks (MiniMind's MoEGate + MOEFeedForward, training path):
//
//   logits = linear(x, gate_w)                             (N, E)   the gate: an ordinary linear layer
//   r      = moe_router(g, logits, B, K, norm_topk, alpha)  weights (N, K), aux (1), indices (N, K)
//   d      = moe_dispatch(g, x, r.indices, E)              xe (N*K, C), rows grouped by expert
//   ye     = moe_experts(g, d, expert)                     each expert on its own block of rows, stacked
//   y      = moe_combine(g, ye, r.weights, d.slot)         (N, C) = sum_k w[n, k] * expert_k(x[n])
//   loss   = ce_loss + aux                                 the balancing loss joins the objective
//
// B = batch (sequences), T = time, N = B*T tokens, C = channels, E = experts, K = experts per token.
// Top-k ties go to the lower expert index (see backend/cpu/moe.hpp).
#pragma once

#include <cstdint>

#include "../autograd/graph.hpp"
#include "../core/router_rules.hpp"
#include "rows.hpp"

namespace minitrain {

/// What the router decided for every token.
struct Routing {
    Var& weights;    // (N, K) mixing weight of each chosen expert (renormalized when norm_topk and K > 1)
    Var& aux;        // (1) balancing loss, alpha included; a constant 0 without gradient when it is off
    Tensor indices;  // (N, K) i32 chosen experts, by descending score (ties: lower index first)
    Tensor scores;   // (N, E) softmax of the logits
};

/// The router after its linear layer: softmax scoring, top-k, renormalization and the balancing loss by
/// `rules` (core/router_rules.hpp), the loss computed only when the graph is training and alpha > 0 (otherwise aux is 0 and costs
/// nothing). logits: (N, E) or (B, T, E) with N = batch * T.
template <class B>
Routing moe_router(Graph<B>& g, Var& logits, int batch, int top_k, bool norm_topk, double alpha,
                   RouterRules rules = RouterRules::minimind2) {
    const std::int64_t N = logits.data.shape.rows(), E = logits.data.shape.cols(), K = top_k;
    const DType dt = logits.data.dtype;
    MT_CHECK(batch >= 1 && N % batch == 0, "moe_router: ", N, " tokens do not split into ", batch, " sequences");
    MT_CHECK(K >= 1 && K <= E, "moe_router: top_k must be in [1, ", E, "], found ", K);
    MT_CHECK(alpha >= 0, "moe_router: alpha must be non-negative, found ", alpha);
    const bool whole_batch = rules == RouterRules::minimind3;
    const bool renormalize = norm_topk && (K > 1 || whole_batch);
    if (whole_batch) {
        batch = 1;
        alpha *= double(K);
    }
    const bool with_aux = alpha > 0 && g.training();
    const bool rg = g.needs_grad(logits);
    Var& weights = g.make(Shape{N, K}, dt, rg);
    Var& aux = g.make(Shape{1}, dt, rg && with_aux);
    Tensor indices = g.scratch(Shape{N, K}, DType::i32);  // (N, K)
    Tensor scores = g.scratch(Shape{N, E}, dt);           // (N, E) saved for backward
    Tensor ce = with_aux ? g.scratch(Shape{batch, E}, dt) : Tensor{};  // (B, E) saved for backward
    if (!with_aux) fill(B{}, aux.data, 0.0);
    moe_router_forward(B{}, weights.data, indices, scores, ce, with_aux ? aux.data : Tensor{}, logits.data, batch,
                       renormalize, alpha);
    if (rg) {
        auto backward = [pl = &logits, pw = &weights, pa = with_aux ? &aux : nullptr, scores, indices, ce, batch,
                         renormalize, alpha](Graph<B>& g) {
            moe_router_backward(B{}, g.grad_of(*pl), scores, indices, ce, pw->grad, pa ? pa->grad : Tensor{}, batch,
                                renormalize, alpha);
        };
        if (with_aux)
            g.record({&weights, &aux}, backward);  // whichever gets no gradient is zero-filled by the tape
        else
            g.record({&weights}, backward);
    }
    return {weights, aux, indices, scores};
}

/// Token rows regrouped by expert.
struct Dispatch {
    Var& xe;                           // (N*K, C) expert e's tokens are rows [offsets[e], offsets[e+1])
    Tensor offsets;                    // (E+1) i32, backend memory
    Tensor slot;                       // (N, K) i32: the row of xe holding token n's k-th choice
    const std::int32_t* host_offsets;  // (E+1) the same offsets in host memory, for slicing
    int experts;

    std::int64_t begin(int e) const { return host_offsets[e]; }
    std::int64_t end(int e) const { return host_offsets[e + 1]; }
    std::int64_t rows(int e) const { return host_offsets[e + 1] - host_offsets[e]; }
};

/// Copies each token once per chosen expert into a buffer grouped by expert; within an expert, tokens
/// keep ascending order. x: (N, C) or (B, T, C); indices: (N, K) i32 from moe_router.
/// Backward: dx[n] = sum_k dxe[slot[n, k]].
template <class B>
Dispatch moe_dispatch(Graph<B>& g, Var& x, const Tensor& indices, int experts) {
    const std::int64_t N = x.data.shape.rows(), C = x.data.shape.cols(), K = indices.shape.cols();
    MT_CHECK(N >= 1, "moe_dispatch: no tokens");
    MT_CHECK(indices.shape.rank == 2 && indices.shape[0] == N, "moe_dispatch: indices have shape ", indices.shape,
             ", expected (", N, ", K) for input ", x.data.shape);
    MT_CHECK(experts >= 1, "moe_dispatch: need at least one expert, got ", experts);
    Var& xe = g.make(Shape{N * K, C}, x.data.dtype, g.needs_grad(x));
    Tensor offsets = g.scratch(Shape{experts + 1}, DType::i32);  // (E+1)
    Tensor slot = g.scratch(Shape{N, K}, DType::i32);            // (N, K)
    moe_dispatch_forward(B{}, xe.data, offsets, slot, x.data, indices);
    std::int32_t* host = g.template host_array<std::int32_t>(std::size_t(experts) + 1);
    B::to_host(host, offsets);
    if (xe.requires_grad)
        g.record({&xe}, [px = &x, pxe = &xe, slot](Graph<B>& g) {
            moe_dispatch_backward(B{}, g.grad_of(*px), slot, pxe->grad);
        });
    return {xe, offsets, slot, host, experts};
}

/// Runs `expert(g, e, rows) -> Var&` on every expert's block of d.xe that holds at least one token (an
/// expert without tokens is skipped: no work, no gradient for its weights) and stacks the outputs in the
/// same row order, ready for moe_combine. Each output must keep its input's row count.
template <class B, class F>
Var& moe_experts(Graph<B>& g, const Dispatch& d, F&& expert) {
    Var** outs = g.template host_array<Var*>(std::size_t(d.experts));
    int n = 0;
    for (int e = 0; e < d.experts; ++e) {
        if (d.rows(e) == 0) continue;
        Var& in = slice_rows(g, d.xe, d.begin(e), d.end(e));
        Var& out = expert(g, e, in);
        MT_CHECK(out.data.shape.rank >= 1 && out.data.shape[0] == d.rows(e), "moe_experts: expert ", e, " got ",
                 d.rows(e), " rows and returned shape ", out.data.shape);
        outs[n++] = &out;
    }
    return concat_rows(g, outs, n);
}

/// y[n] = sum_k weights[n, k] * ye[slot[n, k]].   ye: (N*K, C)  weights: (N, K)  slot: (N, K) i32  ->  y: (N, C)
template <class B>
Var& moe_combine(Graph<B>& g, Var& ye, Var& weights, const Tensor& slot) {
    const std::int64_t N = slot.shape[0], C = ye.data.shape.cols();
    Var& y = g.make(Shape{N, C}, ye.data.dtype, g.needs_grad(ye, weights));
    moe_combine_forward(B{}, y.data, ye.data, weights.data, slot);
    if (y.requires_grad)
        g.record({&y}, [pye = &ye, pw = &weights, py = &y, slot](Graph<B>& g) {
            GradOut dye = g.grad_of(*pye);
            GradOut dw = g.grad_of(*pw);
            moe_combine_backward(B{}, dye, dw, pye->data, pw->data, slot, py->grad);
        });
    return y;
}

}  // namespace minitrain
