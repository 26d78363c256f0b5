// minitrain/backend/cpu/moe.hpp
// Mixture of experts on the CPU, as MiniMind's MoEGate and MOEFeedForward define it:
//   router   softmax over the expert logits, top-k, optional renormalization of the k weights, and the
//            sequence-level load-balancing loss (seq_aux);
//   dispatch copies each token's row once per chosen expert into a buffer grouped by expert, so every
//            expert multiplies one contiguous block of rows (one GEMM, not a gather per token);
//   combine  mixes each token's k expert outputs back with the router weights.
//
// B = batch (sequences), T = time, N = B*T tokens, C = channels, E = experts, K = experts per token.
//
// Top-k order: a token's K experts are listed by descending score; equal scores go to the lower expert
// index first. Routing is therefore a deterministic function of the logits (torch.topk leaves ties
// unspecified; MiniMind's output does not depend on the order within a token's K).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu.hpp"
#include "eigen.hpp"

namespace minitrain {

namespace cpu {
/// Per-token top-k lists live on the stack, so K is bounded (MiniMind uses 2; DeepSeek-style models 8).
inline constexpr int moe_max_top_k = 64;
/// Loops over fewer elements than this stay on one thread: starting the team would cost more.
inline constexpr std::int64_t moe_grain = 1 << 14;

template <class T>
using RowArray = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
template <class T>
RowArray<T> row(const Tensor& t, std::int64_t r, std::int64_t cols) {
    return {t.data<T>() + r * cols, cols};
}
}  // namespace cpu

// ---- router -----------------------------------------------------------------------------------------

/// scores = softmax(logits); (weights, indices) = top-K of scores, weights divided by their sum (+1e-20)
/// when norm_topk (for any K: ops/moe.hpp decides, by the gate's rules, whether top-1 is renormalized). When aux is defined (training with alpha > 0), also the balancing loss:
///   ce[b, e] = #{(t, k): indices[b, t, k] == e} / (T*K/E)        (a count: carries no gradient)
///   aux      = alpha * mean_b sum_e ce[b, e] * mean_t scores[b, t, e]
/// Shapes: weights (N, K)  indices (N, K) i32  scores (N, E)  ce (B, E)  aux (1)  logits (N, E)
inline void moe_router_forward(CPU, const Tensor& weights, const Tensor& indices, const Tensor& scores,
                               const Tensor& ce, const Tensor& aux, const Tensor& logits, int batch, bool norm_topk,
                               double alpha) {
    const std::int64_t N = logits.shape.rows(), E = logits.shape.cols(), K = weights.shape.cols();
    MT_CHECK(K >= 1 && K <= E && K <= cpu::moe_max_top_k, "moe_router: top-k must be in [1, min(E = ", E, ", ",
             cpu::moe_max_top_k, ")], found ", K);
    check_shape(weights, Shape{N, K}, "moe_router", "weights");
    check_shape(indices, Shape{N, K}, "moe_router", "indices");
    check_shape(scores, Shape{N, E}, "moe_router", "scores");
    MT_CHECK(indices.dtype == DType::i32, "moe_router: indices must be i32, found ", dtype_name(indices.dtype));
    MT_CHECK(batch >= 1 && N % batch == 0, "moe_router: ", N, " tokens do not split into ", batch, " sequences");
    const bool norm = norm_topk;
    dispatch_floating(logits.dtype, "moe_router", [&]<class T>() {
        const T* L = logits.data<T>();
        T* S = scores.data<T>();
        T* W = weights.data<T>();
        std::int32_t* I = indices.data<std::int32_t>();
#pragma omp parallel for schedule(static) if (N * E >= cpu::moe_grain)
        for (std::int64_t n = 0; n < N; ++n) {
            const T* l = L + n * E;
            T* s = S + n * E;
            T m = l[0];
            for (std::int64_t e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
            T sum = 0;
            for (std::int64_t e = 0; e < E; ++e) sum += (s[e] = std::exp(l[e] - m));
            const T inv = T(1) / sum;
            for (std::int64_t e = 0; e < E; ++e) s[e] *= inv;
            // Insertion into a descending list of K; a later equal score never passes an earlier one.
            T best[cpu::moe_max_top_k];
            std::int32_t pick[cpu::moe_max_top_k];
            std::int64_t filled = 0;
            for (std::int64_t e = 0; e < E; ++e) {
                const T v = s[e];
                if (filled == K && !(v > best[K - 1])) continue;
                std::int64_t p = filled < K ? filled++ : K - 1;
                for (; p > 0 && best[p - 1] < v; --p) {
                    best[p] = best[p - 1];
                    pick[p] = pick[p - 1];
                }
                best[p] = v;
                pick[p] = std::int32_t(e);
            }
            T denom = 1;
            if (norm) {
                T tot = 0;
                for (std::int64_t k = 0; k < K; ++k) tot += best[k];
                denom = tot + T(1e-20);
            }
            for (std::int64_t k = 0; k < K; ++k) {
                W[n * K + k] = norm ? best[k] / denom : best[k];
                I[n * K + k] = pick[k];
            }
        }
        if (!aux.defined()) return;

        const std::int64_t Bn = batch, Tn = N / batch;
        check_shape(ce, Shape{Bn, E}, "moe_router", "ce");
        check_shape(aux, Shape{1}, "moe_router", "aux");
        T* CE = ce.data<T>();
        const double expected = double(Tn * K) / double(E);  // each expert's count under perfect balance
#pragma omp parallel for schedule(static) if (N * K >= cpu::moe_grain)
        for (std::int64_t b = 0; b < Bn; ++b) {
            T* c = CE + b * E;
            for (std::int64_t e = 0; e < E; ++e) c[e] = 0;
            for (std::int64_t i = b * Tn * K; i < (b + 1) * Tn * K; ++i) c[I[i]] += T(1);
            for (std::int64_t e = 0; e < E; ++e) c[e] = T(double(c[e]) / expected);
        }
        // mean_b sum_e ce * mean_t s  ==  (1/N) sum_n sum_e ce[b(n), e] s[n, e]
        double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (N * E >= cpu::moe_grain)
        for (std::int64_t n = 0; n < N; ++n) {
            const T* c = CE + (n / Tn) * E;
            const T* s = S + n * E;
            double acc = 0;
            for (std::int64_t e = 0; e < E; ++e) acc += double(c[e]) * double(s[e]);
            total += acc;
        }
        aux.data<T>()[0] = T(alpha * total / double(N));
    });
}

/// dlogits (=|+=) the gradient through the weights and, when daux is defined, through the balancing loss.
/// Both reach the logits through the softmax: dlogit = s * (dscore - <s, dscore>), where
///   dscore[e]        = alpha * daux * ce[b, e] / N                                  (aux; ce constant)
///   dscore[idx[k]]  += dw[k]                                                         (plain top-k)
///                   or (dw[k] - <dw, w>) / (sum_k s[idx[k]] + 1e-20)                 (renormalized)
/// Shapes: dlogits (N, E)  scores (N, E)  indices (N, K)  ce (B, E)  dweights (N, K)  daux (1)
inline void moe_router_backward(CPU, GradOut dlogits, const Tensor& scores, const Tensor& indices, const Tensor& ce,
                                const Tensor& dweights, const Tensor& daux, int batch, bool norm_topk, double alpha) {
    if (!dlogits) return;
    const std::int64_t N = scores.shape.rows(), E = scores.shape.cols(), K = indices.shape.cols();
    check_same(dlogits.t, scores, "moe_router_backward", "dlogits", "scores");
    check_shape(dweights, Shape{N, K}, "moe_router_backward", "dweights");
    const bool norm = norm_topk, with_aux = daux.defined();
    const std::int64_t Tn = N / batch;
    dispatch_floating(scores.dtype, "moe_router_backward", [&]<class T>() {
        const T* S = scores.data<T>();
        const T* DW = dweights.data<T>();
        const std::int32_t* I = indices.data<std::int32_t>();
        const T* CE = with_aux ? ce.data<T>() : nullptr;
        const T c = with_aux ? T(alpha * double(daux.data<T>()[0]) / double(N)) : T(0);
        T* DL = dlogits.t.data<T>();
        const bool acc = dlogits.accumulate;
#pragma omp parallel for schedule(static) if (N * E >= cpu::moe_grain)
        for (std::int64_t n = 0; n < N; ++n) {
            const T* s = S + n * E;
            const T* dw = DW + n * K;
            const std::int32_t* idx = I + n * K;
            T* dl = DL + n * E;
            // top[k]: the gradient of the chosen score idx[k] through the weights
            T top[cpu::moe_max_top_k];
            if (norm) {
                T tot = 0;
                for (std::int64_t k = 0; k < K; ++k) tot += s[idx[k]];
                const T denom = tot + T(1e-20);
                T dw_w = 0;
                for (std::int64_t k = 0; k < K; ++k) dw_w += dw[k] * (s[idx[k]] / denom);
                for (std::int64_t k = 0; k < K; ++k) top[k] = (dw[k] - dw_w) / denom;
            } else {
                for (std::int64_t k = 0; k < K; ++k) top[k] = dw[k];
            }
            // <s, dscore> without materializing dscore: aux part over all experts + top-k part
            T dot = 0;
            const T* cb = with_aux ? CE + (n / Tn) * E : nullptr;
            if (with_aux) {
                for (std::int64_t e = 0; e < E; ++e) dot += s[e] * cb[e];
                dot *= c;
            }
            for (std::int64_t k = 0; k < K; ++k) dot += s[idx[k]] * top[k];
            if (with_aux) {
                if (acc)
                    for (std::int64_t e = 0; e < E; ++e) dl[e] += s[e] * (c * cb[e] - dot);
                else
                    for (std::int64_t e = 0; e < E; ++e) dl[e] = s[e] * (c * cb[e] - dot);
            } else {
                if (acc)
                    for (std::int64_t e = 0; e < E; ++e) dl[e] -= s[e] * dot;
                else
                    for (std::int64_t e = 0; e < E; ++e) dl[e] = -s[e] * dot;
            }
            for (std::int64_t k = 0; k < K; ++k) dl[idx[k]] += s[idx[k]] * top[k];
        }
    });
}

// ---- dispatch ---------------------------------------------------------------------------------------

/// xe[slot[n, k]] = x[n] with rows grouped by expert: expert e owns rows [offsets[e], offsets[e+1]),
/// holding its tokens in ascending (n, k) order, so the layout is deterministic.
/// Shapes: xe (N*K, C)  offsets (E+1) i32  slot (N, K) i32  x (N, C)  indices (N, K) i32
/// Any element type: rows are copied as bytes.
inline void moe_dispatch_forward(CPU, const Tensor& xe, const Tensor& offsets, const Tensor& slot, const Tensor& x,
                                 const Tensor& indices) {
    const std::int64_t N = x.shape.rows(), C = x.shape.cols(), K = indices.shape.cols(),
                       E = offsets.numel() - 1;
    MT_CHECK(indices.dtype == DType::i32 && offsets.dtype == DType::i32 && slot.dtype == DType::i32,
             "moe_dispatch: indices, offsets and slot must be i32");
    check_shape(indices, Shape{N, K}, "moe_dispatch", "indices");
    check_shape(slot, Shape{N, K}, "moe_dispatch", "slot");
    check_shape(xe, Shape{N * K, C}, "moe_dispatch", "xe");
    MT_CHECK(xe.dtype == x.dtype, "moe_dispatch: xe is ", dtype_name(xe.dtype), ", x is ", dtype_name(x.dtype));
    MT_CHECK(E >= 1, "moe_dispatch: need at least one expert");
    MT_CHECK(N * K < (std::int64_t(1) << 31), "moe_dispatch: ", N * K, " rows overflow i32 slots");
    const std::int32_t* I = indices.data<std::int32_t>();
    std::int32_t* O = offsets.data<std::int32_t>();
    std::int32_t* SL = slot.data<std::int32_t>();
    // Counting sort: O[e+1] counts expert e while each (n, k) takes its rank within its expert; the prefix
    // sum then turns counts into offsets and rank + offset is the row. O(N*K) integer work, sequential.
    for (std::int64_t e = 0; e <= E; ++e) O[e] = 0;
    for (std::int64_t i = 0; i < N * K; ++i) {
        const std::int32_t e = I[i];
        MT_CHECK(e >= 0 && e < E, "moe_dispatch: token ", i / K, " routes to expert ", e, ", outside [0, ", E, ")");
        SL[i] = O[e + 1]++;
    }
    for (std::int64_t e = 0; e < E; ++e) O[e + 1] += O[e];
    const std::size_t row_bytes = std::size_t(C) * dtype_size(x.dtype);
    const auto* X = static_cast<const std::byte*>(x.ptr);
    auto* XE = static_cast<std::byte*>(xe.ptr);
#pragma omp parallel for schedule(static) if (N * K * C >= cpu::moe_grain)
    for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t i = n * K + k;
            SL[i] += O[I[i]];
            std::memcpy(XE + std::size_t(SL[i]) * row_bytes, X + std::size_t(n) * row_bytes, row_bytes);
        }
}

/// dx[n] (=|+=) sum_k dxe[slot[n, k]].   dx (N, C)  slot (N, K)  dxe (N*K, C)
inline void moe_dispatch_backward(CPU, GradOut dx, const Tensor& slot, const Tensor& dxe) {
    if (!dx) return;
    const std::int64_t N = dx.t.shape.rows(), C = dx.t.shape.cols(), K = slot.shape.cols();
    check_shape(dxe, Shape{N * K, C}, "moe_dispatch_backward", "dxe");
    const std::int32_t* SL = slot.data<std::int32_t>();
    dispatch_floating(dxe.dtype, "moe_dispatch_backward", [&]<class T>() {
#pragma omp parallel for schedule(static) if (N * K * C >= cpu::moe_grain)
        for (std::int64_t n = 0; n < N; ++n) {
            auto d = cpu::row<T>(dx.t, n, C);
            const std::int32_t* s = SL + n * K;
            if (!dx.accumulate) d = cpu::row<T>(dxe, s[0], C);
            for (std::int64_t k = dx.accumulate ? 0 : 1; k < K; ++k) d += cpu::row<T>(dxe, s[k], C);
        }
    });
}

// ---- combine ----------------------------------------------------------------------------------------

/// y[n] = sum_k weights[n, k] * ye[slot[n, k]].   y (N, C)  ye (N*K, C)  weights (N, K)  slot (N, K) i32
inline void moe_combine_forward(CPU, const Tensor& y, const Tensor& ye, const Tensor& weights, const Tensor& slot) {
    const std::int64_t N = slot.shape[0], K = slot.shape.cols(), C = ye.shape.cols();
    MT_CHECK(slot.dtype == DType::i32, "moe_combine: slot must be i32, found ", dtype_name(slot.dtype));
    check_shape(ye, Shape{N * K, C}, "moe_combine", "expert outputs");
    check_shape(weights, Shape{N, K}, "moe_combine", "weights");
    check_shape(y, Shape{N, C}, "moe_combine", "output");
    MT_CHECK(weights.dtype == ye.dtype, "moe_combine: weights are ", dtype_name(weights.dtype),
             ", expert outputs are ", dtype_name(ye.dtype));
    const std::int32_t* SL = slot.data<std::int32_t>();
    dispatch_floating(ye.dtype, "moe_combine", [&]<class T>() {
        const T* W = weights.data<T>();
#pragma omp parallel for schedule(static) if (N * K * C >= cpu::moe_grain)
        for (std::int64_t n = 0; n < N; ++n) {
            auto out = cpu::row<T>(y, n, C);
            out = W[n * K] * cpu::row<T>(ye, SL[n * K], C);
            for (std::int64_t k = 1; k < K; ++k) out += W[n * K + k] * cpu::row<T>(ye, SL[n * K + k], C);
        }
    });
}

/// dye[slot[n, k]] (=|+=) weights[n, k] * dy[n];  dweights[n, k] (=|+=) <dy[n], ye[slot[n, k]]>.
/// slot is a bijection onto the rows of ye (as moe_dispatch builds it), so each row of dye is written once.
inline void moe_combine_backward(CPU, GradOut dye, GradOut dweights, const Tensor& ye, const Tensor& weights,
                                 const Tensor& slot, const Tensor& dy) {
    const std::int64_t N = slot.shape[0], K = slot.shape.cols(), C = ye.shape.cols();
    check_shape(dy, Shape{N, C}, "moe_combine_backward", "dy");
    const std::int32_t* SL = slot.data<std::int32_t>();
    dispatch_floating(ye.dtype, "moe_combine_backward", [&]<class T>() {
        const T* W = weights.data<T>();
        T* DW = dweights ? dweights.t.data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (N * K * C >= cpu::moe_grain)
        for (std::int64_t n = 0; n < N; ++n) {
            auto g = cpu::row<T>(dy, n, C);
            for (std::int64_t k = 0; k < K; ++k) {
                const std::int64_t i = n * K + k, r = SL[i];
                if (dye) {
                    auto d = cpu::row<T>(dye.t, r, C);
                    if (dye.accumulate)
                        d += W[i] * g;
                    else
                        d = W[i] * g;
                }
                if (DW) {
                    const T dot = (g * cpu::row<T>(ye, r, C)).sum();
                    DW[i] = dweights.accumulate ? DW[i] + dot : dot;
                }
            }
        }
    });
}

}  // namespace minitrain
