// minitrain/backend/cuda/moe.hpp
// Mixture of experts on the GPU, with the semantics of backend/cpu/moe.hpp (MiniMind's MoEGate and
// MOEFeedForward): router (softmax, top-k, renormalization, seq_aux balancing loss), dispatch (rows
// grouped by expert, ascending token order within an expert), combine. Every kernel is deterministic.
//
//   router    one thread per token: softmax over E, top-K by insertion (ties to the lower expert index,
//             as on the CPU), renormalization. Balancing loss: one thread per (sequence, expert) counts
//             its picks; one block sums ce * scores over tokens in double, in a fixed order.
//   dispatch  a counting sort with a stable order: one block per expert scans the (n, k) picks in order
//             and ranks its own (warp ballots + a prefix over warps), one thread turns the counts into
//             offsets, then one thread per row element copies x into its slot.
//   combine   one thread per output element; dweights one block per (token, k) with a block reduction.
//
// B = batch (sequences), T = time, N = B*T tokens, C = channels, E = experts, K = experts per token.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda.hpp"

namespace minitrain {

namespace cuda::moe {

/// Per-token top-k lists live in registers / local memory, so K is bounded as on the CPU.
inline constexpr int max_top_k = 64;

template <class T>
__global__ void router_kernel(T* W, std::int32_t* I, T* S, const T* logits, std::int64_t N, std::int64_t E,
                              std::int64_t K, bool norm) {
    MT_CUDA_GRID_LOOP(n, N) {
        const T* l = logits + n * E;
        T* s = S + n * E;
        T m = l[0];
        for (std::int64_t e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
        T sum = 0;
        for (std::int64_t e = 0; e < E; ++e) sum += (s[e] = exp(l[e] - m));
        const T inv = T(1) / sum;
        for (std::int64_t e = 0; e < E; ++e) s[e] *= inv;
        // Insertion into a descending list of K; a later equal score never passes an earlier one.
        T best[max_top_k];
        std::int32_t pick[max_top_k];
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
}

/// ce[b, e] = #{(t, k) of sequence b picking e} / expected.
template <class T>
__global__ void router_counts_kernel(T* CE, const std::int32_t* I, std::int64_t Bn, std::int64_t Tn, std::int64_t K,
                                     std::int64_t E, double expected) {
    MT_CUDA_GRID_LOOP(be, Bn * E) {
        const std::int64_t b = be / E, e = be % E;
        T c = 0;
        for (std::int64_t i = b * Tn * K; i < (b + 1) * Tn * K; ++i) c += I[i] == e ? T(1) : T(0);
        CE[be] = T(double(c) / expected);
    }
}

/// One block: aux[0] = alpha * (1/N) sum_n sum_e ce[b(n), e] s[n, e], summed in double in a fixed order.
template <class T>
__global__ void router_aux_kernel(T* aux, const T* CE, const T* S, std::int64_t N, std::int64_t Tn, std::int64_t E,
                                  double alpha) {
    double total = 0;
    for (std::int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        const T* c = CE + (n / Tn) * E;
        const T* s = S + n * E;
        double acc = 0;
        for (std::int64_t e = 0; e < E; ++e) acc += double(c[e]) * double(s[e]);
        total += acc;
    }
    total = block_sum(total);
    if (threadIdx.x == 0) aux[0] = T(alpha * total / double(N));
}

/// One thread per token; see moe_router_backward for the formula.
template <class T>
__global__ void router_backward_kernel(T* DL, bool acc, const T* S, const std::int32_t* I, const T* CE, const T* DW,
                                       const T* daux, std::int64_t N, std::int64_t E, std::int64_t K, std::int64_t Tn,
                                       bool norm, double alpha) {
    const bool with_aux = daux != nullptr;
    const T c = with_aux ? T(alpha * double(daux[0]) / double(N)) : T(0);
    MT_CUDA_GRID_LOOP(n, N) {
        const T* s = S + n * E;
        const T* dw = DW + n * K;
        const std::int32_t* idx = I + n * K;
        T* dl = DL + n * E;
        T top[max_top_k];  // the gradient of the chosen score idx[k] through the weights
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
}

// ---- dispatch ---------------------------------------------------------------------------------------

inline constexpr int scan_block = 256;
static_assert(scan_block % 32 == 0 && scan_block <= 1024, "dispatch_rank_kernel ballots whole warps");

/// Block e: ranks expert e's picks in (n, k) order into SL, and stores its count in O[e + 1].
/// Also reports picks outside [0, E) (block 0 only, so each is reported once).
template <class Index>
__global__ void __launch_bounds__(scan_block) dispatch_rank_kernel(Index* O, Index* SL, const Index* I, std::int64_t NK,
                                                                   std::int64_t E, std::int64_t K,
                                                                   cuda::Status* status) {
    __shared__ int warp_count[scan_block / 32];
    const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
    for (std::int64_t e = blockIdx.x; e < E; e += gridDim.x) {
        int running = 0;
        for (std::int64_t base = 0; base < NK; base += scan_block) {
            const std::int64_t i = base + tid;
            const Index pick = i < NK ? I[i] : Index(-1);
            if (e == 0 && i < NK && (pick < 0 || pick >= E)) cuda::report(status, cuda::status_bad_expert, i / K, pick, E);
            const bool mine = i < NK && pick == e;
            const unsigned ballot = __ballot_sync(0xffffffffu, mine);
            if (lane == 0) warp_count[warp] = __popc(ballot);
            __syncthreads();
            int before = running, total = 0;
            for (int w = 0; w < scan_block / 32; ++w) {
                if (w < warp) before += warp_count[w];
                total += warp_count[w];
            }
            if (mine) SL[i] = Index(before + __popc(ballot & ((1u << lane) - 1u)));
            __syncthreads();  // warp_count is rewritten by the next round
            running += total;
        }
        if (tid == 0) O[e + 1] = Index(running);
    }
}

/// One thread: counts in O[1..E] become offsets O[0..E].
template <class Index>
__global__ void dispatch_offsets_kernel(Index* O, std::int64_t E) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        O[0] = 0;
        for (std::int64_t e = 0; e < E; ++e) O[e + 1] += O[e];
    }
}

/// SL[i] += O[I[i]]: ranks become rows of xe. Picks outside [0, E) get slot -1 (their copy is skipped).
template <class Index>
__global__ void dispatch_slots_kernel(Index* SL, const Index* O, const Index* I, std::int64_t NK, std::int64_t E) {
    MT_CUDA_GRID_LOOP(i, NK) {
        const Index e = I[i];
        SL[i] = e >= 0 && e < E ? Index(SL[i] + O[e]) : Index(-1);
    }
}

/// Bytes per word of dispatch_copy_kernel: the widest of 4, 2, 1 that divides the row size and both base
/// addresses. The row size alone is not enough: a bf16 view may start 2 bytes past a 4-byte boundary, and
/// a misaligned 4-byte load faults (cudaErrorMisalignedAddress).
inline int dispatch_word_bytes(std::size_t row_bytes, const void* xe, const void* x) {
    const std::uintptr_t all = std::uintptr_t(row_bytes) | reinterpret_cast<std::uintptr_t>(xe) |
                               reinterpret_cast<std::uintptr_t>(x);
    return all % 4 == 0 ? 4 : all % 2 == 0 ? 2 : 1;
}

/// xe[SL[n*K + k]] = x[n], words of type W (the row size in bytes is a multiple of sizeof(W)).
template <class W>
__global__ void dispatch_copy_kernel(W* xe, const W* x, const std::int32_t* SL, std::int64_t NK, std::int64_t K,
                                     std::int64_t words) {
    MT_CUDA_GRID_LOOP(idx, NK * words) {
        const std::int64_t i = idx / words, w = idx % words;
        const std::int32_t slot = SL[i];
        if (slot >= 0) xe[std::int64_t(slot) * words + w] = x[(i / K) * words + w];
    }
}

/// dx[n] (=|+=) sum_k dxe[slot[n, k]], in k order.
template <class T>
__global__ void dispatch_backward_kernel(T* dx, bool acc, const std::int32_t* SL, const T* dxe, std::int64_t N,
                                         std::int64_t K, std::int64_t C) {
    MT_CUDA_GRID_LOOP(idx, N * C) {
        const std::int64_t n = idx / C, c = idx % C;
        const std::int32_t* s = SL + n * K;
        // Slot -1 (a bad expert index, reported by the forward) has no row in dxe: it adds nothing.
        T d = acc ? dx[idx] : T(0);
        for (std::int64_t k = 0; k < K; ++k)
            if (s[k] >= 0) d += dxe[std::int64_t(s[k]) * C + c];
        dx[idx] = d;
    }
}

// ---- combine ----------------------------------------------------------------------------------------

template <class T>
__global__ void combine_kernel(T* y, const T* ye, const T* W, const std::int32_t* SL, std::int64_t N, std::int64_t K,
                               std::int64_t C) {
    MT_CUDA_GRID_LOOP(idx, N * C) {
        const std::int64_t n = idx / C, c = idx % C;
        // Slot -1 (a bad expert index, reported by moe_dispatch) adds nothing rather than reading row -1.
        T out = 0;
        for (std::int64_t k = 0; k < K; ++k) {
            const std::int32_t sl = SL[n * K + k];
            if (sl >= 0) out += W[n * K + k] * ye[std::int64_t(sl) * C + c];
        }
        y[idx] = out;
    }
}

/// dye[slot[n, k]] (=|+=) weights[n, k] * dy[n].
template <class T>
__global__ void combine_dye_kernel(T* dye, bool acc, const T* W, const std::int32_t* SL, const T* dy, std::int64_t N,
                                   std::int64_t K, std::int64_t C) {
    MT_CUDA_GRID_LOOP(idx, N * K * C) {
        const std::int64_t i = idx / C, c = idx % C;
        if (SL[i] < 0) continue;  // a bad expert index (reported by moe_dispatch): no row to write
        T* d = dye + std::int64_t(SL[i]) * C + c;
        const T v = W[i] * dy[(i / K) * C + c];
        *d = acc ? *d + v : v;
    }
}

/// dweights[n, k] (=|+=) <dy[n], ye[slot[n, k]]>: one block per (n, k).
template <class T>
__global__ void combine_dweights_kernel(T* DW, bool acc, const T* ye, const std::int32_t* SL, const T* dy,
                                        std::int64_t N, std::int64_t K, std::int64_t C) {
    MT_CUDA_ROW_LOOP(i, N * K) {
        const T* g = dy + (i / K) * C;
        const std::int32_t sl = SL[i];
        const T* r = ye + std::int64_t(sl) * C;
        T s = 0;
        if (sl >= 0)  // block-uniform; slot -1 (a bad expert index) has no row: weight gradient 0
            for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) s += g[c] * r[c];
        s = block_sum(s);
        if (threadIdx.x == 0) DW[i] = acc ? DW[i] + s : s;
    }
}

}  // namespace cuda::moe

// ---- router -----------------------------------------------------------------------------------------

/// scores = softmax(logits); (weights, indices) = top-K of scores, weights divided by their sum (+1e-20)
/// when norm_topk (for any K; ops/moe.hpp applies the gate's rules). When aux is defined, also the balancing loss (see backend/cpu/moe.hpp):
///   ce[b, e] = #{(t, k): indices[b, t, k] == e} / (T*K/E);   aux = alpha * mean_b sum_e ce[b, e] * mean_t scores[b, t, e]
/// Shapes: weights (N, K)  indices (N, K) i32  scores (N, E)  ce (B, E)  aux (1)  logits (N, E)
inline void moe_router_forward(CUDA, const Tensor& weights, const Tensor& indices, const Tensor& scores,
                               const Tensor& ce, const Tensor& aux, const Tensor& logits, int batch, bool norm_topk,
                               double alpha) {
    const std::int64_t N = logits.shape.rows(), E = logits.shape.cols(), K = weights.shape.cols();
    MT_CHECK(K >= 1 && K <= E && K <= cuda::moe::max_top_k, "moe_router: top-k must be in [1, min(E = ", E, ", ",
             cuda::moe::max_top_k, ")], found ", K);
    check_shape(weights, Shape{N, K}, "moe_router", "weights");
    check_shape(indices, Shape{N, K}, "moe_router", "indices");
    check_shape(scores, Shape{N, E}, "moe_router", "scores");
    MT_CHECK(indices.dtype == DType::i32, "moe_router: indices must be i32, found ", dtype_name(indices.dtype));
    MT_CHECK(batch >= 1 && N % batch == 0, "moe_router: ", N, " tokens do not split into ", batch, " sequences");
    CUDA::on_device(weights, "moe_router", "weights");
    CUDA::on_device(indices, "moe_router", "indices");
    CUDA::on_device(scores, "moe_router", "scores");
    CUDA::on_device(logits, "moe_router", "logits");
    const bool norm = norm_topk;
    const std::int64_t Bn = batch, Tn = N / batch;
    if (aux.defined()) {
        check_shape(ce, Shape{Bn, E}, "moe_router", "ce");
        check_shape(aux, Shape{1}, "moe_router", "aux");
        CUDA::on_device(ce, "moe_router", "ce");
        CUDA::on_device(aux, "moe_router", "aux");
    }
    dispatch_floating(logits.dtype, "moe_router", [&]<class T>() {
        cudaStream_t s = CUDA::stream();
        if (N) {
            cuda::moe::router_kernel<T><<<cuda::grid_for(N), cuda::threads, 0, s>>>(
                weights.data<T>(), indices.data<std::int32_t>(), scores.data<T>(), logits.data<T>(), N, E, K, norm);
            MT_CUDA_LAUNCHED();
        }
        if (!aux.defined()) return;
        const double expected = double(Tn * K) / double(E);  // each expert's count under perfect balance
        cuda::moe::router_counts_kernel<T><<<cuda::grid_for(Bn * E), cuda::threads, 0, s>>>(
            ce.data<T>(), indices.data<std::int32_t>(), Bn, Tn, K, E, expected);
        MT_CUDA_LAUNCHED();
        cuda::moe::router_aux_kernel<T><<<1, 1024, 0, s>>>(aux.data<T>(), ce.data<T>(), scores.data<T>(), N, Tn, E,
                                                           alpha);
        MT_CUDA_LAUNCHED();
    });
}

/// dlogits (=|+=) the gradient through the weights and, when daux is defined, through the balancing loss
/// (formula: backend/cpu/moe.hpp). daux is a 1-element device tensor read by the kernel.
/// Shapes: dlogits (N, E)  scores (N, E)  indices (N, K)  ce (B, E)  dweights (N, K)  daux (1)
inline void moe_router_backward(CUDA, GradOut dlogits, const Tensor& scores, const Tensor& indices, const Tensor& ce,
                                const Tensor& dweights, const Tensor& daux, int batch, bool norm_topk, double alpha) {
    if (!dlogits) return;
    const std::int64_t N = scores.shape.rows(), E = scores.shape.cols(), K = indices.shape.cols();
    check_same(dlogits.t, scores, "moe_router_backward", "dlogits", "scores");
    check_shape(dweights, Shape{N, K}, "moe_router_backward", "dweights");
    MT_CHECK(K <= cuda::moe::max_top_k, "moe_router_backward: top-k above ", cuda::moe::max_top_k);
    CUDA::on_device(dlogits.t, "moe_router_backward", "dlogits");
    CUDA::on_device(scores, "moe_router_backward", "scores");
    CUDA::on_device(indices, "moe_router_backward", "indices");
    CUDA::on_device(dweights, "moe_router_backward", "dweights");
    const bool norm = norm_topk, with_aux = daux.defined();
    if (with_aux) {
        CUDA::on_device(daux, "moe_router_backward", "daux");
        CUDA::on_device(ce, "moe_router_backward", "ce");
    }
    MT_CHECK(batch >= 1 && N % batch == 0, "moe_router_backward: ", N, " tokens do not split into ", batch,
             " sequences");
    const std::int64_t Tn = N / batch;
    if (!N) return;
    dispatch_floating(scores.dtype, "moe_router_backward", [&]<class T>() {
        cuda::moe::router_backward_kernel<T><<<cuda::grid_for(N), cuda::threads, 0, CUDA::stream()>>>(
            dlogits.t.data<T>(), dlogits.accumulate, scores.data<T>(), indices.data<std::int32_t>(),
            with_aux ? ce.data<T>() : nullptr, dweights.data<T>(), with_aux ? daux.data<T>() : nullptr, N, E, K, Tn,
            norm, alpha);
        MT_CUDA_LAUNCHED();
    });
}

// ---- dispatch ---------------------------------------------------------------------------------------

/// xe[slot[n, k]] = x[n] with rows grouped by expert: expert e owns rows [offsets[e], offsets[e+1]),
/// holding its tokens in ascending (n, k) order. An expert index outside [0, E) is reported through the
/// CUDA status word (Error at the next synchronization: ops/moe.hpp reads the offsets right after).
/// Shapes: xe (N*K, C)  offsets (E+1) i32  slot (N, K) i32  x (N, C)  indices (N, K) i32. Any element type.
inline void moe_dispatch_forward(CUDA, const Tensor& xe, const Tensor& offsets, const Tensor& slot, const Tensor& x,
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
    CUDA::on_device(xe, "moe_dispatch", "xe");
    CUDA::on_device(offsets, "moe_dispatch", "offsets");
    CUDA::on_device(slot, "moe_dispatch", "slot");
    CUDA::on_device(x, "moe_dispatch", "x");
    CUDA::on_device(indices, "moe_dispatch", "indices");
    cudaStream_t s = CUDA::stream();
    const std::int64_t NK = N * K;
    std::int32_t* O = offsets.data<std::int32_t>();
    std::int32_t* SL = slot.data<std::int32_t>();
    const std::int32_t* I = indices.data<std::int32_t>();
    cuda::moe::dispatch_rank_kernel<std::int32_t><<<cuda::grid_rows(E), cuda::moe::scan_block, 0, s>>>(O, SL, I, NK, E, K,
                                                                                        CUDA::status());
    MT_CUDA_LAUNCHED();
    cuda::moe::dispatch_offsets_kernel<std::int32_t><<<1, 32, 0, s>>>(O, E);
    MT_CUDA_LAUNCHED();
    if (!NK) return;
    cuda::moe::dispatch_slots_kernel<std::int32_t><<<cuda::grid_for(NK), cuda::threads, 0, s>>>(SL, O, I, NK, E);
    MT_CUDA_LAUNCHED();
    const std::size_t row_bytes = std::size_t(C) * dtype_size(x.dtype);
    if (!row_bytes) return;
    const int word = cuda::moe::dispatch_word_bytes(row_bytes, xe.ptr, x.ptr);
    const std::int64_t words = std::int64_t(row_bytes) / word;
    if (word == 4) {
        cuda::moe::dispatch_copy_kernel<std::uint32_t><<<cuda::grid_for(NK * words), cuda::threads, 0, s>>>(
            static_cast<std::uint32_t*>(xe.ptr), static_cast<const std::uint32_t*>(x.ptr), SL, NK, K, words);
    } else if (word == 2) {
        cuda::moe::dispatch_copy_kernel<std::uint16_t><<<cuda::grid_for(NK * words), cuda::threads, 0, s>>>(
            static_cast<std::uint16_t*>(xe.ptr), static_cast<const std::uint16_t*>(x.ptr), SL, NK, K, words);
    } else {
        cuda::moe::dispatch_copy_kernel<std::uint8_t><<<cuda::grid_for(NK * words), cuda::threads, 0, s>>>(
            static_cast<std::uint8_t*>(xe.ptr), static_cast<const std::uint8_t*>(x.ptr), SL, NK, K, words);
    }
    MT_CUDA_LAUNCHED();
}

/// dx[n] (=|+=) sum_k dxe[slot[n, k]].   dx (N, C)  slot (N, K)  dxe (N*K, C)
inline void moe_dispatch_backward(CUDA, GradOut dx, const Tensor& slot, const Tensor& dxe) {
    if (!dx) return;
    const std::int64_t N = dx.t.shape.rows(), C = dx.t.shape.cols(), K = slot.shape.cols();
    check_shape(dxe, Shape{N * K, C}, "moe_dispatch_backward", "dxe");
    CUDA::on_device(dx.t, "moe_dispatch_backward", "dx");
    CUDA::on_device(slot, "moe_dispatch_backward", "slot");
    CUDA::on_device(dxe, "moe_dispatch_backward", "dxe");
    if (!N || !C || !K) return;
    dispatch_floating(dxe.dtype, "moe_dispatch_backward", [&]<class T>() {
        cuda::moe::dispatch_backward_kernel<T><<<cuda::grid_for(N * C), cuda::threads, 0, CUDA::stream()>>>(
            dx.t.data<T>(), dx.accumulate, slot.data<std::int32_t>(), dxe.data<T>(), N, K, C);
        MT_CUDA_LAUNCHED();
    });
}

// ---- combine ----------------------------------------------------------------------------------------

/// y[n] = sum_k weights[n, k] * ye[slot[n, k]].   y (N, C)  ye (N*K, C)  weights (N, K)  slot (N, K) i32
inline void moe_combine_forward(CUDA, const Tensor& y, const Tensor& ye, const Tensor& weights, const Tensor& slot) {
    const std::int64_t N = slot.shape[0], K = slot.shape.cols(), C = ye.shape.cols();
    MT_CHECK(slot.dtype == DType::i32, "moe_combine: slot must be i32, found ", dtype_name(slot.dtype));
    check_shape(ye, Shape{N * K, C}, "moe_combine", "expert outputs");
    check_shape(weights, Shape{N, K}, "moe_combine", "weights");
    check_shape(y, Shape{N, C}, "moe_combine", "output");
    MT_CHECK(weights.dtype == ye.dtype, "moe_combine: weights are ", dtype_name(weights.dtype),
             ", expert outputs are ", dtype_name(ye.dtype));
    CUDA::on_device(y, "moe_combine", "output");
    CUDA::on_device(ye, "moe_combine", "expert outputs");
    CUDA::on_device(weights, "moe_combine", "weights");
    CUDA::on_device(slot, "moe_combine", "slot");
    if (!N || !C || !K) return;
    dispatch_floating(ye.dtype, "moe_combine", [&]<class T>() {
        cuda::moe::combine_kernel<T><<<cuda::grid_for(N * C), cuda::threads, 0, CUDA::stream()>>>(
            y.data<T>(), ye.data<T>(), weights.data<T>(), slot.data<std::int32_t>(), N, K, C);
        MT_CUDA_LAUNCHED();
    });
}

/// dye[slot[n, k]] (=|+=) weights[n, k] * dy[n];  dweights[n, k] (=|+=) <dy[n], ye[slot[n, k]]>.
/// slot is a bijection onto the rows of ye (as moe_dispatch builds it), so each row of dye is written once.
inline void moe_combine_backward(CUDA, GradOut dye, GradOut dweights, const Tensor& ye, const Tensor& weights,
                                 const Tensor& slot, const Tensor& dy) {
    const std::int64_t N = slot.shape[0], K = slot.shape.cols(), C = ye.shape.cols();
    check_shape(dy, Shape{N, C}, "moe_combine_backward", "dy");
    CUDA::on_device(dy, "moe_combine_backward", "dy");
    CUDA::on_device(ye, "moe_combine_backward", "expert outputs");
    CUDA::on_device(slot, "moe_combine_backward", "slot");
    if (dye) CUDA::on_device(dye.t, "moe_combine_backward", "dye");
    if (dweights) CUDA::on_device(dweights.t, "moe_combine_backward", "dweights");
    if (!N || !K) return;
    dispatch_floating(ye.dtype, "moe_combine_backward", [&]<class T>() {
        cudaStream_t s = CUDA::stream();
        if (dye && C) {
            cuda::moe::combine_dye_kernel<T><<<cuda::grid_for(N * K * C), cuda::threads, 0, s>>>(
                dye.t.data<T>(), dye.accumulate, weights.data<T>(), slot.data<std::int32_t>(), dy.data<T>(), N, K, C);
            MT_CUDA_LAUNCHED();
        }
        if (dweights) {
            cuda::moe::combine_dweights_kernel<T><<<cuda::grid_rows(N * K), cuda::threads, 0, s>>>(
                dweights.t.data<T>(), dweights.accumulate, ye.data<T>(), slot.data<std::int32_t>(), dy.data<T>(), N,
                K, C);
            MT_CUDA_LAUNCHED();
        }
    });
}

}  // namespace minitrain
