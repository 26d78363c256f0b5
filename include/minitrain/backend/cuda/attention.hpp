// minitrain/backend/cuda/attention.hpp
// Causal scaled-dot-product attention with grouped-query heads on the GPU, memory-efficient: no (T, T)
// score matrix ever exists. Semantics, layouts and the KV-cache convention are those of
// backend/cpu/attention.hpp (queries are the last Tq of kv_len positions; query head h uses kv head h / G).
//
// Forward: one thread block per query row (b, i, h). The block walks the visible keys in chunks of
// blockDim, one key per thread: score = scale * q.k, then the online-softmax recurrence (FlashAttention)
//     m' = max(m, max_chunk s),  l' = l e^(m - m') + sum_chunk e^(s - m'),  o' = o e^(m - m') + sum_chunk e^(s - m') v
// with thread d holding output columns d and d + blockDim. The row's log-sum-exp m + log(l) is saved.
//
// Backward recomputes probabilities from q, k and lse, in three deterministic kernels (no atomics):
//   delta[i] = dout_i . out_i                     (rowsum(dP * P), the softmax Jacobian's shared term)
//   dq_i     = scale sum_j P_ij (dout_i . v_j - delta_i) k_j          one block per query row
//   dk_j     = scale sum_(h,i) P_ij (dout_i . v_j - delta_i) q_i       one block per (b, key j, kv head),
//   dv_j     =       sum_(h,i) P_ij dout_i                              over its G query heads and rows i
// Recomputing P twice costs flops but keeps every write owned by one thread.
//
// Head dim D <= 256 (two output columns per thread at 128 threads).
//
// B = batch, Tq = query rows, Tk = key rows allocated, L = kv_len valid key rows, H = query heads,
// KV = key/value heads, G = H / KV, D = head dim.
#pragma once

#include <cmath>

#include "cuda.hpp"

namespace minitrain {

namespace cuda::attn {

inline constexpr int block = 128;     // threads per block: keys per chunk
inline constexpr int max_head_dim = 2 * block;
static_assert(block % 32 == 0 && block <= 1024, "block_sum / block_max need whole warps, at most 32 of them");

struct Dims {
    std::int64_t B, Tq, Tk, L, H, KV, G, D;
    std::int64_t first_pos;  // absolute position of query row 0: L - Tq
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
    MT_CHECK(d.D <= max_head_dim, op, ": the CUDA attention kernel supports head dim up to ", max_head_dim,
             ", found ", d.D);
    d.G = d.H / d.KV;
    d.L = kv_len < 0 ? d.Tk : kv_len;
    MT_CHECK(d.Tq <= d.L && d.L <= d.Tk, op, ": kv_len ", d.L, " must lie between the ", d.Tq, " query rows and the ",
             d.Tk, " key rows of k");
    d.first_pos = d.L - d.Tq;
    CUDA::on_device(q, op, "q");
    CUDA::on_device(k, op, "k");
    CUDA::on_device(v, op, "v");
    return d;
}

template <class T>
__device__ inline T dot(const T* a, const T* b, std::int64_t n) {
    T s = 0;
    for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

/// out (B, Tq, H, D), lse (B, H, Tq). Block per query row; row = (b * Tq + i) * H + h.
template <class T>
__global__ void __launch_bounds__(block) forward_kernel(T* out, T* lse, const T* q, const T* k, const T* v, Dims d,
                                                        T scale) {
    __shared__ T qs[max_head_dim];  // (D) this row's query
    __shared__ T ps[block];         // (chunk) exp(s - m') of the chunk's keys
    const int tid = int(threadIdx.x);
    const std::int64_t ks = d.KV * d.D;  // row stride of k and v
    MT_CUDA_ROW_LOOP(row, d.B * d.Tq * d.H) {
        const std::int64_t h = row % d.H, i = (row / d.H) % d.Tq, b = row / (d.H * d.Tq);
        const T* kb = k + (b * d.Tk * d.KV + h / d.G) * d.D;  // key j at kb + j * ks
        const T* vb = v + (b * d.Tk * d.KV + h / d.G) * d.D;
        const std::int64_t nk = d.first_pos + i + 1;  // visible keys
        __syncthreads();  // the previous row is done with qs
        for (std::int64_t c = tid; c < d.D; c += block) qs[c] = q[row * d.D + c];
        __syncthreads();
        T m = -T(INFINITY), l = 0, acc0 = 0, acc1 = 0;
        for (std::int64_t j0 = 0; j0 < nk; j0 += block) {
            const std::int64_t j = j0 + tid;
            const T s = j < nk ? dot(qs, kb + j * ks, d.D) * scale : -T(INFINITY);
            const T mn = fmax(m, block_max(s));  // finite: the chunk has at least one visible key
            const T p = j < nk ? exp(s - mn) : T(0);
            const T alpha = exp(m - mn);  // 0 on the first chunk (m = -inf)
            l = l * alpha + block_sum(p);  // block_sum's barriers also order the previous chunk's ps reads
            ps[tid] = p;
            __syncthreads();
            const std::int64_t cnt = nk - j0 < block ? nk - j0 : block;
            T s0 = 0, s1 = 0;
            for (std::int64_t t = 0; t < cnt; ++t) {
                const T* vr = vb + (j0 + t) * ks;
                if (tid < d.D) s0 += ps[t] * vr[tid];
                if (tid + block < d.D) s1 += ps[t] * vr[tid + block];
            }
            acc0 = acc0 * alpha + s0;
            acc1 = acc1 * alpha + s1;
            m = mn;
        }
        if (tid < d.D) out[row * d.D + tid] = acc0 / l;
        if (tid + block < d.D) out[row * d.D + tid + block] = acc1 / l;
        if (tid == 0) lse[(b * d.H + h) * d.Tq + i] = m + log(l);
    }
}

/// delta (B, H, Tq) = rowwise dout . out.
template <class T>
__global__ void delta_kernel(T* delta, const T* out, const T* dout, Dims d) {
    MT_CUDA_GRID_LOOP(row, d.B * d.Tq * d.H) {
        const std::int64_t h = row % d.H, i = (row / d.H) % d.Tq, b = row / (d.H * d.Tq);
        delta[(b * d.H + h) * d.Tq + i] = dot(dout + row * d.D, out + row * d.D, d.D);
    }
}

/// dq (=|+=): block per query row.
template <class T>
__global__ void __launch_bounds__(block) dq_kernel(T* dq, bool accumulate, const T* q, const T* k, const T* v,
                                                   const T* lse, const T* delta, const T* dout, Dims d, T scale) {
    __shared__ T qs[max_head_dim], gs[max_head_dim];  // (D) query row, its output gradient
    __shared__ T ds[block];                           // (chunk) dS of the chunk's keys
    const int tid = int(threadIdx.x);
    const std::int64_t ks = d.KV * d.D;
    MT_CUDA_ROW_LOOP(row, d.B * d.Tq * d.H) {
        const std::int64_t h = row % d.H, i = (row / d.H) % d.Tq, b = row / (d.H * d.Tq);
        const T* kb = k + (b * d.Tk * d.KV + h / d.G) * d.D;
        const T* vb = v + (b * d.Tk * d.KV + h / d.G) * d.D;
        const std::int64_t nk = d.first_pos + i + 1;
        const T l = lse[(b * d.H + h) * d.Tq + i], dl = delta[(b * d.H + h) * d.Tq + i];
        __syncthreads();
        for (std::int64_t c = tid; c < d.D; c += block) {
            qs[c] = q[row * d.D + c];
            gs[c] = dout[row * d.D + c];
        }
        __syncthreads();
        T acc0 = 0, acc1 = 0;
        for (std::int64_t j0 = 0; j0 < nk; j0 += block) {
            const std::int64_t j = j0 + tid;
            T g = 0;
            if (j < nk) {
                const T p = exp(dot(qs, kb + j * ks, d.D) * scale - l);
                g = p * (dot(gs, vb + j * ks, d.D) - dl) * scale;
            }
            __syncthreads();  // the previous chunk is done with ds
            ds[tid] = g;
            __syncthreads();
            const std::int64_t cnt = nk - j0 < block ? nk - j0 : block;
            for (std::int64_t t = 0; t < cnt; ++t) {
                const T* kr = kb + (j0 + t) * ks;
                if (tid < d.D) acc0 += ds[t] * kr[tid];
                if (tid + block < d.D) acc1 += ds[t] * kr[tid + block];
            }
        }
        T* o = dq + row * d.D;
        if (tid < d.D) o[tid] = accumulate ? o[tid] + acc0 : acc0;
        if (tid + block < d.D) o[tid + block] = accumulate ? o[tid + block] + acc1 : acc1;
    }
}

/// dk, dv (=|+=, either may be null): block per key row (b, j, g) = (b * Tk + j) * KV + g, summing over the
/// G query heads of kv head g and the query rows that see key j. Rows j >= L are seen by nobody: zero.
template <class T>
__global__ void __launch_bounds__(block) dkv_kernel(T* dk, bool dk_accumulate, T* dv, bool dv_accumulate, const T* q,
                                                    const T* k, const T* v, const T* lse, const T* delta,
                                                    const T* dout, Dims d, T scale) {
    __shared__ T kr[max_head_dim], vr[max_head_dim];  // (D) this key row and value row
    __shared__ T ps[block], ds[block];                // (chunk) P and dS of the chunk's (head, query row) items
    __shared__ std::int64_t qoff[block];              // (chunk) element offset of each item's q / dout row
    const int tid = int(threadIdx.x);
    MT_CUDA_ROW_LOOP(row, d.B * d.Tk * d.KV) {
        const std::int64_t g = row % d.KV, j = (row / d.KV) % d.Tk, b = row / (d.KV * d.Tk);
        // Query row i (position first_pos + i) sees key j when first_pos + i >= j.
        const std::int64_t i0 = j > d.first_pos ? j - d.first_pos : 0;
        const std::int64_t per_head = j < d.L ? d.Tq - i0 : 0, items = d.G * per_head;
        __syncthreads();
        for (std::int64_t c = tid; c < d.D; c += block) {
            kr[c] = k[row * d.D + c];
            vr[c] = v[row * d.D + c];
        }
        __syncthreads();
        T k0 = 0, k1 = 0, v0 = 0, v1 = 0;
        for (std::int64_t t0 = 0; t0 < items; t0 += block) {
            const std::int64_t t = t0 + tid;
            T p = 0, gr = 0;
            std::int64_t off = 0;
            if (t < items) {
                const std::int64_t h = g * d.G + t / per_head, i = i0 + t % per_head;
                off = ((b * d.Tq + i) * d.H + h) * d.D;
                const std::int64_t li = (b * d.H + h) * d.Tq + i;
                p = exp(dot(q + off, kr, d.D) * scale - lse[li]);
                gr = p * (dot(dout + off, vr, d.D) - delta[li]) * scale;
            }
            __syncthreads();  // the previous chunk is done with ps, ds, qoff
            ps[tid] = p;
            ds[tid] = gr;
            qoff[tid] = off;
            __syncthreads();
            const std::int64_t cnt = items - t0 < block ? items - t0 : block;
            for (std::int64_t u = 0; u < cnt; ++u) {
                const T* qr = q + qoff[u];
                const T* gr_row = dout + qoff[u];
                if (tid < d.D) {
                    k0 += ds[u] * qr[tid];
                    v0 += ps[u] * gr_row[tid];
                }
                if (tid + block < d.D) {
                    k1 += ds[u] * qr[tid + block];
                    v1 += ps[u] * gr_row[tid + block];
                }
            }
        }
        // When k and v are one Var, dk and dv are the same row, both adding (see attention_backward).
        if (dk) {
            T* o = dk + row * d.D;
            if (tid < d.D) o[tid] = dk_accumulate ? o[tid] + k0 : k0;
            if (tid + block < d.D) o[tid + block] = dk_accumulate ? o[tid + block] + k1 : k1;
        }
        if (dv) {
            T* o = dv + row * d.D;
            if (tid < d.D) o[tid] = dv_accumulate ? o[tid] + v0 : v0;
            if (tid + block < d.D) o[tid + block] = dv_accumulate ? o[tid + block] + v1 : v1;
        }
    }
}

}  // namespace cuda::attn

/// Scratch the CUDA attention kernels need, of q's type: nothing in the forward (a placeholder element),
/// the per-row delta = dout . out (B * H * Tq) in the backward.
inline Shape attention_scratch_shape(CUDA, const Tensor& q, const Tensor& k, bool backward) {
    (void)k;
    if (!backward || q.shape.rank != 4) return Shape{1};
    return Shape{std::max<std::int64_t>(q.shape[0] * q.shape[1] * q.shape[2], 1)};
}

/// out = softmax(scale q k^T + causal mask) v, and lse = the log-sum-exp of each query row's scaled scores.
/// out (B, Tq, H, D)  lse (B, H, Tq)  q (B, Tq, H, D)  k, v (B, Tk, KV, D)  scratch: unused.
/// kv_len < 0 means Tk.
inline void attention_forward(CUDA, const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                              const Tensor& v, int kv_len, double scale, const Tensor& scratch) {
    (void)scratch;
    const cuda::attn::Dims d = cuda::attn::dims(q, k, v, kv_len, "attention");
    check_same(out, q, "attention", "output", "q");
    check_shape(lse, Shape{d.B, d.H, d.Tq}, "attention", "lse");
    MT_CHECK(lse.dtype == q.dtype, "attention: lse is ", dtype_name(lse.dtype), ", q is ", dtype_name(q.dtype));
    CUDA::on_device(out, "attention", "output");
    CUDA::on_device(lse, "attention", "lse");
    const std::int64_t rows = d.B * d.Tq * d.H;
    if (!rows || !d.D) return;
    dispatch_floating(q.dtype, "attention", [&]<class T>() {
        cuda::attn::forward_kernel<T><<<cuda::grid_rows(rows), cuda::attn::block, 0, CUDA::stream()>>>(
            out.data<T>(), lse.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), d, T(scale));
        MT_CUDA_LAUNCHED();
    });
}

/// Gradients of attention_forward (see the file comment). Each destination may be undefined (skipped) and
/// is written (=) or added to (+=) per its flag. Rows of dk, dv at or past kv_len get zero (or are left
/// alone when accumulating). dq (B, Tq, H, D)  dk, dv (B, Tk, KV, D)  out, dout (B, Tq, H, D)  lse (B, H, Tq)
/// scratch: (B * H * Tq) from attention_scratch_shape(CUDA, q, k, true).
inline void attention_backward(CUDA, GradOut dq, GradOut dk, GradOut dv, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& dout, int kv_len,
                               double scale, const Tensor& scratch) {
    const cuda::attn::Dims d = cuda::attn::dims(q, k, v, kv_len, "attention_backward");
    check_same(out, q, "attention_backward", "output", "q");
    check_same(dout, q, "attention_backward", "output gradient", "q");
    check_shape(lse, Shape{d.B, d.H, d.Tq}, "attention_backward", "lse");
    CUDA::on_device(out, "attention_backward", "output");
    CUDA::on_device(dout, "attention_backward", "output gradient");
    CUDA::on_device(lse, "attention_backward", "lse");
    if (dq) check_same(dq.t, q, "attention_backward", "dq", "q"), CUDA::on_device(dq.t, "attention_backward", "dq");
    if (dk) check_same(dk.t, k, "attention_backward", "dk", "k"), CUDA::on_device(dk.t, "attention_backward", "dk");
    if (dv) check_same(dv.t, v, "attention_backward", "dv", "v"), CUDA::on_device(dv.t, "attention_backward", "dv");
    if (!dq && !dk && !dv) return;
    const std::int64_t qrows = d.B * d.Tq * d.H, krows = d.B * d.Tk * d.KV;
    MT_CHECK(scratch.numel() >= qrows && scratch.dtype == q.dtype, "attention_backward: scratch must hold ", qrows,
             " ", dtype_name(q.dtype), " values, found ", scratch.shape, " ", dtype_name(scratch.dtype));
    // The same Var passed as q and k (or v) hands over one buffer twice, and which of the two GradOuts says
    // "write" depends on the order the caller's arguments were evaluated in. Kernels run dq, then dk, then
    // dv: for a shared buffer, clear it once when any of its GradOuts would write, and let all of them add.
    GradOut* outs[3] = {&dq, &dk, &dv};
    for (int a = 0; a < 3; ++a)
        for (int c = a + 1; c < 3; ++c)
            if (*outs[a] && *outs[c] && outs[a]->t.ptr == outs[c]->t.ptr) {
                if (!outs[a]->accumulate || !outs[c]->accumulate) CUDA::zero(outs[a]->t);
                outs[a]->accumulate = outs[c]->accumulate = true;
            }
    if (!qrows || !d.D) {
        if (dk && !dk.accumulate) CUDA::zero(dk.t);
        if (dv && !dv.accumulate) CUDA::zero(dv.t);
        return;
    }
    dispatch_floating(q.dtype, "attention_backward", [&]<class T>() {
        using namespace cuda::attn;
        cudaStream_t s = CUDA::stream();
        T* delta = scratch.data<T>();  // (B, H, Tq)
        delta_kernel<T><<<cuda::grid_for(qrows), cuda::threads, 0, s>>>(delta, out.data<T>(), dout.data<T>(), d);
        MT_CUDA_LAUNCHED();
        if (dq) {
            dq_kernel<T><<<cuda::grid_rows(qrows), block, 0, s>>>(dq.t.data<T>(), dq.accumulate, q.data<T>(),
                                                                    k.data<T>(), v.data<T>(), lse.data<T>(), delta,
                                                                    dout.data<T>(), d, T(scale));
            MT_CUDA_LAUNCHED();
        }
        if ((dk || dv) && krows) {
            dkv_kernel<T><<<cuda::grid_rows(krows), block, 0, s>>>(
                dk ? dk.t.data<T>() : nullptr, dk.accumulate, dv ? dv.t.data<T>() : nullptr, dv.accumulate,
                q.data<T>(), k.data<T>(), v.data<T>(), lse.data<T>(), delta, dout.data<T>(), d, T(scale));
            MT_CUDA_LAUNCHED();
        }
    });
}

}  // namespace minitrain
