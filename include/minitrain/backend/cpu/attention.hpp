// minitrain/backend/cpu/attention.hpp
// Causal scaled-dot-product attention with grouped-query heads on the CPU, without a (B, H, T, T)
// probability tensor: the forward keeps only each query row's log-sum-exp, and the backward recomputes
// the probabilities tile by tile from q, k and that log-sum-exp.
//
// B = batch, Tq = query rows, Tk = key rows allocated (the KV-cache capacity), L = kv_len valid key rows,
// H = query heads, KV = key/value heads, G = H / KV query heads sharing one kv head, D = head dim,
// R = query rows per tile.
//
// q (B, Tq, H, D), k and v (B, Tk, KV, D) are what a linear projection gives, viewed: a head's rows are
// H*D (or KV*D) elements apart, and cpu::gemm reads them in place with that row stride. Query head h
// uses kv head h / G. The queries are the last Tq positions of an L-long sequence: row i sits at position
// L - Tq + i and sees keys j <= L - Tq + i. Training has Tq = L = Tk; cached decoding has Tq = 1 (or a
// few) and L <= Tk. Key rows at or past L are never read.
//
// Work is cut in tiles of R query rows of one (batch, head). A tile only multiplies against the keys its
// last row can see, which skips about half of the flops under the causal mask, and its (R, keys) score
// block lives in a per-thread scratch row handed in by the op (the kernel allocates nothing; cpu::gemm
// packs into its own reused workspace). Every tile is computed the same way by whichever thread takes
// it, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>

#include "cpu.hpp"
#include "gemm.hpp"

namespace minitrain {

namespace cpu::attn {

/// Query rows per tile: scratch is R x Tk per thread, and masked keys are skipped per tile.
constexpr std::int64_t tile_rows = 64;

struct Dims {
    std::int64_t B, Tq, Tk, L, H, KV, G, D;
    std::int64_t first_pos;  // absolute position of query row 0: L - Tq
    std::int64_t tiles() const { return (Tq + tile_rows - 1) / tile_rows; }
    std::int64_t rows() const { return std::min(tile_rows, Tq); }  // rows of the largest tile
};

inline Dims dims(const Tensor& q, const Tensor& k, const Tensor& v, int kv_len, const char* op) {
    MT_CHECK(q.shape.rank == 4, op, ": q must be (B, Tq, H, D), found shape ", q.shape);
    MT_CHECK(k.shape.rank == 4, op, ": k must be (B, Tk, KV, D), found shape ", k.shape);
    check_same(k, v, op, "k", "v");
    MT_CHECK(q.dtype == k.dtype, op, ": q is ", dtype_name(q.dtype), " but k is ", dtype_name(k.dtype));
    Dims d{};
    d.B = q.shape[0], d.Tq = q.shape[1], d.H = q.shape[2], d.D = q.shape[3];
    d.Tk = k.shape[1], d.KV = k.shape[2];
    MT_CHECK(k.shape[0] == d.B && k.shape[3] == d.D, op, ": q has shape ", q.shape, " but k has shape ", k.shape,
             " (batch and head dim must match)");
    MT_CHECK(d.KV > 0 && d.H % d.KV == 0, op, ": ", d.H, " query heads cannot be shared by ", d.KV, " kv heads");
    d.G = d.H / d.KV;
    d.L = kv_len < 0 ? d.Tk : kv_len;
    MT_CHECK(d.Tq <= d.L && d.L <= d.Tk, op, ": kv_len ", d.L, " must lie between the ", d.Tq, " query rows and the ",
             d.Tk, " key rows of k");
    d.first_pos = d.L - d.Tq;
    return d;
}

inline int thread_id() {
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}

template <class T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

/// One score row s (n keys computed, the first `see` visible) becomes probabilities in place; masked
/// entries become 0 so that the P V product can run over all n columns. Returns the log-sum-exp.
template <class T>
T softmax_row(T* s, std::int64_t n, std::int64_t see, T scale) {
    Vec<T> x(s, see);
    x *= scale;
    const T m = x.maxCoeff();
    x = (x - m).exp();
    const T sum = x.sum();
    x *= T(1) / sum;
    std::fill(s + see, s + n, T(0));
    return m + std::log(sum);
}

/// Recompute a probability row from its scores and saved log-sum-exp (same layout as softmax_row).
template <class T>
void probability_row(T* s, std::int64_t n, std::int64_t see, T scale, T lse) {
    Vec<T> x(s, see);
    x = (x * scale - lse).exp();
    std::fill(s + see, s + n, T(0));
}

/// Zero the Tk rows of one head of a (B, Tk, heads, D) gradient.
template <class T>
void zero_head(const Tensor& t, std::int64_t b, std::int64_t head) {
    const std::int64_t rows = t.shape[1], heads = t.shape[2], D = t.shape[3];
    T* p = t.data<T>() + (b * rows * heads + head) * D;
    for (std::int64_t r = 0; r < rows; ++r) std::fill_n(p + r * heads * D, D, T(0));
}

}  // namespace cpu::attn

/// Scratch the attention kernels need, of q's type: one row per thread, holding an (R, Tk) score block in
/// the forward and two of them (probabilities and their gradient) in the backward. The kernels run on as
/// many threads as the scratch has rows.
inline Shape attention_scratch_shape(CPU, const Tensor& q, const Tensor& k, bool backward,
                                     int threads = CPU::threads()) {
    const std::int64_t R = std::min(cpu::attn::tile_rows, q.shape[1]), Tk = k.shape[1];
    return Shape{std::max(threads, 1), (backward ? 2 : 1) * std::max<std::int64_t>(R * Tk, 1)};
}

inline void attention_check_scratch(const Tensor& scratch, const Tensor& q, const Tensor& k, bool backward,
                                    const char* op) {
    const Shape need = attention_scratch_shape(CPU{}, q, k, backward, 1);
    MT_CHECK(scratch.shape.rank == 2 && scratch.shape[0] >= 1 && scratch.shape[1] >= need[1], op,
             ": scratch must be (threads, ", need[1], "), found ", scratch.shape);
    MT_CHECK(scratch.dtype == q.dtype, op, ": scratch is ", dtype_name(scratch.dtype), ", q is ", dtype_name(q.dtype));
}

/// out = softmax(scale q k^T + causal mask) v, and lse = the log-sum-exp of each query row's scaled scores.
/// out (B, Tq, H, D)  lse (B, H, Tq)  q (B, Tq, H, D)  k, v (B, Tk, KV, D)  scratch (threads, R*Tk).
/// kv_len < 0 means Tk.
inline void attention_forward(CPU, const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                              const Tensor& v, int kv_len, double scale, const Tensor& scratch) {
    const cpu::attn::Dims d = cpu::attn::dims(q, k, v, kv_len, "attention");
    check_same(out, q, "attention", "output", "q");
    check_shape(lse, Shape{d.B, d.H, d.Tq}, "attention", "lse");
    MT_CHECK(lse.dtype == q.dtype, "attention: lse is ", dtype_name(lse.dtype), ", q is ", dtype_name(q.dtype));
    attention_check_scratch(scratch, q, k, false, "attention");
    dispatch_floating(q.dtype, "attention", [&]<class T>() {
        using namespace cpu::attn;
        const T *Q = q.data<T>(), *K = k.data<T>(), *V = v.data<T>();
        T *O = out.data<T>(), *LSE = lse.data<T>();
        const std::int64_t qs = d.H * d.D, ks = d.KV * d.D;  // row strides of q (and out), k and v
        const std::int64_t heads = d.B * d.H, items = d.tiles() * heads;
#pragma omp parallel for schedule(dynamic) num_threads(int(scratch.shape[0]))
        for (std::int64_t it = 0; it < items; ++it) {
            // The last tiles see the most keys: hand them out first so the dynamic schedule balances.
            const std::int64_t tile = d.tiles() - 1 - it / heads, b = (it % heads) / d.H, h = it % d.H;
            const std::int64_t i0 = tile * tile_rows, R = std::min(tile_rows, d.Tq - i0);
            const std::int64_t nk = d.first_pos + i0 + R;  // keys visible to the tile's last row
            const std::int64_t q_off = ((b * d.Tq + i0) * d.H + h) * d.D, kv_off = (b * d.Tk * d.KV + h / d.G) * d.D;
            T* S = scratch.data<T>() + thread_id() * scratch.shape[1];  // (R, nk) scores, then probabilities
            cpu::autocast_gemm<T>(false, true, R, nk, d.D, Q + q_off, qs, K + kv_off, ks, S, nk, false);
            for (std::int64_t r = 0; r < R; ++r)
                LSE[(b * d.H + h) * d.Tq + i0 + r] = softmax_row(S + r * nk, nk, d.first_pos + i0 + r + 1, T(scale));
            cpu::autocast_gemm<T>(false, false, R, d.D, nk, S, nk, V + kv_off, ks, O + q_off, qs, false);
        }
    });
}

/// Gradients of attention_forward, recomputing each tile's probabilities P from q, k and lse:
///   dv += P^T dout;  dP = dout v^T;  dS = P * (dP - rowsum(dout * out)) * scale;  dq = dS k;  dk += dS^T q.
/// Each destination may be undefined (skipped) and is written (=) or added to (+=) per its flag. Work is
/// split over (batch, kv head): the G query heads and all tiles that feed one kv head's dk, dv rows are
/// processed by one thread, so no two threads write the same rows and the sum order is fixed.
/// dq (B, Tq, H, D)  dk, dv (B, Tk, KV, D)  out, dout (B, Tq, H, D)  lse (B, H, Tq)  scratch (threads, 2*R*Tk).
/// Rows of dk, dv at or past kv_len get zero (or are left alone when accumulating).
inline void attention_backward(CPU, GradOut dq, GradOut dk, GradOut dv, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& dout, int kv_len,
                               double scale, const Tensor& scratch) {
    const cpu::attn::Dims d = cpu::attn::dims(q, k, v, kv_len, "attention_backward");
    check_same(out, q, "attention_backward", "output", "q");
    check_same(dout, q, "attention_backward", "output gradient", "q");
    check_shape(lse, Shape{d.B, d.H, d.Tq}, "attention_backward", "lse");
    if (dq) check_same(dq.t, q, "attention_backward", "dq", "q");
    if (dk) check_same(dk.t, k, "attention_backward", "dk", "k");
    if (dv) check_same(dv.t, v, "attention_backward", "dv", "v");
    attention_check_scratch(scratch, q, k, true, "attention_backward");
    if (!dq && !dk && !dv) return;
    // The same Var passed as q and k (or v) hands over one buffer twice; dq then must add like dk does.
    const bool dq_shared = dq && ((dk && dq.t.ptr == dk.t.ptr) || (dv && dq.t.ptr == dv.t.ptr));
    dispatch_floating(q.dtype, "attention_backward", [&]<class T>() {
        using namespace cpu::attn;
        const T *Q = q.data<T>(), *K = k.data<T>(), *V = v.data<T>(), *O = out.data<T>(), *dO = dout.data<T>();
        const T* LSE = lse.data<T>();
        T *dQ = dq ? dq.t.data<T>() : nullptr, *dK = dk ? dk.t.data<T>() : nullptr, *dV = dv ? dv.t.data<T>() : nullptr;
        const std::int64_t qs = d.H * d.D, ks = d.KV * d.D;  // row strides of q (and out, dout), k and v
#pragma omp parallel for schedule(dynamic) num_threads(int(scratch.shape[0]))
        for (std::int64_t it = 0; it < d.B * d.KV; ++it) {
            const std::int64_t b = it / d.KV, g = it % d.KV;
            // Several heads and tiles add into this kv head's rows: clear them first where we overwrite.
            if (dk && !dk.accumulate) zero_head<T>(dk.t, b, g);
            if (dv && !dv.accumulate) zero_head<T>(dv.t, b, g);
            if (dq_shared && !dq.accumulate)
                for (std::int64_t h = g * d.G; h < (g + 1) * d.G; ++h) zero_head<T>(dq.t, b, h);
            T* P = scratch.data<T>() + thread_id() * scratch.shape[1];  // (R, nk) probabilities
            T* dS = P + d.rows() * d.Tk;  // (R, nk) their gradient, then the scores' gradient
            const std::int64_t kv_off = (b * d.Tk * d.KV + g) * d.D;
            for (std::int64_t h = g * d.G; h < (g + 1) * d.G; ++h)
                for (std::int64_t i0 = 0; i0 < d.Tq; i0 += tile_rows) {
                    const std::int64_t R = std::min(tile_rows, d.Tq - i0), nk = d.first_pos + i0 + R;
                    const std::int64_t q_off = ((b * d.Tq + i0) * d.H + h) * d.D;
                    const T* lse_row = LSE + (b * d.H + h) * d.Tq + i0;
                    cpu::autocast_gemm<T>(false, true, R, nk, d.D, Q + q_off, qs, K + kv_off, ks, P, nk, false);
                    for (std::int64_t r = 0; r < R; ++r)
                        probability_row(P + r * nk, nk, d.first_pos + i0 + r + 1, T(scale), lse_row[r]);
                    if (dv) cpu::autocast_gemm<T>(true, false, nk, d.D, R, P, nk, dO + q_off, qs, dV + kv_off, ks, true);
                    if (!dq && !dk) continue;
                    cpu::autocast_gemm<T>(false, true, R, nk, d.D, dO + q_off, qs, V + kv_off, ks, dS, nk, false);
                    for (std::int64_t r = 0; r < R; ++r) {
                        // rowsum(dP * P) = dout . out: the softmax Jacobian's shared term, from saved rows.
                        const T delta =
                            (ConstVec<T>(dO + q_off + r * qs, d.D) * ConstVec<T>(O + q_off + r * qs, d.D)).sum();
                        Vec<T> ds(dS + r * nk, nk);
                        ds = Vec<T>(P + r * nk, nk) * (ds - delta) * T(scale);
                    }
                    if (dq)
                        cpu::autocast_gemm<T>(false, false, R, d.D, nk, dS, nk, K + kv_off, ks, dQ + q_off, qs,
                                     dq.accumulate || dq_shared);
                    if (dk) cpu::autocast_gemm<T>(true, false, nk, d.D, R, dS, nk, Q + q_off, qs, dK + kv_off, ks, true);
                }
        }
    });
}

}  // namespace minitrain
