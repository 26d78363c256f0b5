// minitrain/backend/cpu/gemm_avx512.hpp
// f32 matrix product for AVX-512 CPUs: a Goto/BLIS-style loop nest around a 12 x 32 register tile.
//
//   C (M, N) = op(A) (M, K) . op(B) (K, N)     [+ C when accumulate], all row-major.
//
// The micro-kernel keeps a 12-row x 32-column block of C in 24 zmm accumulators. Each step over k
// loads two vectors of B (32 columns) and broadcasts 12 values of A, one per row: 24 FMAs for 2 vector
// loads and 12 broadcasts. Measured on Zen 4 it runs at the FMA peak when its operands sit in L1
// (116 GFLOP/s on one core against a 117 GFLOP/s probe); everything around it exists to keep it fed:
//
//   for jc over N in NC columns            (the thread's own columns or rows, see gemm below)
//     for pc over K in KC steps
//       pack B[pc.., jc..] into 32-column panels, k-major, zero-padded     -> L2 (KC x NC floats)
//       for ic over M in MC rows
//         A panels: read in place when A is row-major (12 strided rows), packed when A is stored
//         transposed (12 contiguous floats per k) or its rows are 4 KiB apart -> L1 (12 x KC floats)
//         for each 12-row panel: for each 32-column panel: micro-kernel
//
// Packing B transposed (the forward x . W^T, W stored (out, in)) uses 16 x 16 in-register transposes;
// packing is otherwise plain vector copies. Every element of C sums over k in the same order whatever
// the thread split, so results do not depend on the thread count.
#pragma once

#if defined(__AVX512F__)

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>

#include "gemm_split.hpp"

namespace minitrain::cpu::avx512 {

inline constexpr int MR = 12;                // rows of C per micro-tile (broadcast side)
inline constexpr int NR = 32;                // columns of C per micro-tile (two zmm vectors)
inline constexpr std::int64_t KC = 256;      // depth of one packed block: A panel 12 KiB (L1)
inline constexpr std::int64_t MC = 384;      // rows per A block
inline constexpr std::int64_t NC = 512;      // columns per packed B block: 512 KiB (L2)

/// Per-thread packing memory for the largest blocks (KC x (NC + MC) floats, 0.9 MiB), taken once on a
/// thread's first product and never resized. Never freeing it matters beyond the allocation itself:
/// glibc raises its mmap threshold to the size of any large block that is freed, after which the
/// training step's medium-sized buffers come from the heap, which does not shrink (a grow-and-free
/// workspace cost 250 MiB of peak RSS in bench_lora).
inline float* workspace() {
    constexpr std::size_t bytes = std::size_t(KC * (NC + MC)) * sizeof(float);
    struct Workspace {
        void* ptr = ::operator new(bytes, std::align_val_t{64});
        ~Workspace() { ::operator delete(ptr, std::align_val_t{64}); }
    };
    thread_local Workspace ws;
    return static_cast<float*>(ws.ptr);
}

/// The first n of 16 lanes (none for n <= 0).
inline __mmask16 lanes(std::int64_t n) {
    return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

/// C[0:Rows, 0:32] (+)= A-panel (Rows x kc) . B-panel (kc x 32); `cols0`/`cols1` mask the valid columns.
/// A packed: a[k * MR + i]; A in place: a[i * lda + k].
template <int Rows, bool Packed>
void micro_kernel(std::int64_t kc, const float* __restrict a, std::int64_t lda, const float* __restrict b,
                  float* c, std::int64_t ldc, __mmask16 cols0, __mmask16 cols1, bool add) {
    __m512 acc0[Rows], acc1[Rows];
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
    for (std::int64_t k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < Rows; ++i) {
            const __m512 ai = _mm512_set1_ps(Packed ? a[i] : a[i * lda]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
        }
        a += Packed ? MR : 1;
        b += NR;
    }
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) {
        float* ci = c + i * ldc;
        if (add) {
            acc0[i] = _mm512_add_ps(acc0[i], _mm512_maskz_loadu_ps(cols0, ci));
            acc1[i] = _mm512_add_ps(acc1[i], _mm512_maskz_loadu_ps(cols1, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, cols0, acc0[i]);
        _mm512_mask_storeu_ps(ci + 16, cols1, acc1[i]);
    }
}

using MicroKernel = void (*)(std::int64_t, const float*, std::int64_t, const float*, float*, std::int64_t, __mmask16,
                             __mmask16, bool);

template <bool Packed, int... R>
constexpr std::array<MicroKernel, sizeof...(R)> micro_kernels(std::integer_sequence<int, R...>) {
    return {&micro_kernel<R + 1, Packed>...};
}
/// kernels<P>[r - 1] handles a panel of r rows (the last panel of a block may be short).
template <bool Packed>
inline constexpr auto kernels = micro_kernels<Packed>(std::make_integer_sequence<int, MR>{});

/// In-place transpose of a 16 x 16 block held as 16 row vectors.
inline void transpose16(__m512* r) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    auto pd = [](__m512 x) { return _mm512_castps_pd(x); };
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i]), pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i]), pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i + 1]), pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i + 1]), pd(t[i + 3])));
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; ++i) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/// Packs rows m0..m0+mc, depth k0..k0+kc of op(A) = A^T (A stored (K, M)) into 12-row panels,
/// a[panel][k][i], zero rows past mc.
inline void pack_a_transposed(const float* A, std::int64_t lda, std::int64_t m0, std::int64_t mc, std::int64_t k0,
                              std::int64_t kc, float* dst) {
    for (std::int64_t p = 0; p < mc; p += MR, dst += MR * kc) {
        const float* src = A + k0 * lda + m0 + p;
        const __mmask16 rows = lanes(mc - p);
        for (std::int64_t k = 0; k < kc; ++k)
            _mm512_mask_storeu_ps(dst + k * MR, __mmask16(0x0fff), _mm512_maskz_loadu_ps(rows, src + k * lda));
    }
}

/// The same for a row-major A (stored (M, K)), through 16 x 16 transposes. Used only when A's rows are
/// a multiple of 4 KiB apart: read in place, the 12 rows of a panel would then share one L1 set.
inline void pack_a_rows(const float* A, std::int64_t lda, std::int64_t m0, std::int64_t mc, std::int64_t k0,
                        std::int64_t kc, float* dst) {
    for (std::int64_t p = 0; p < mc; p += MR, dst += MR * kc) {
        const float* src = A + (m0 + p) * lda + k0;
        const std::int64_t rows = std::min<std::int64_t>(MR, mc - p);
        for (std::int64_t k = 0; k < kc; k += 16) {
            const __mmask16 depth = lanes(kc - k);
            __m512 r[16];
            for (std::int64_t i = 0; i < 16; ++i)
                r[i] = i < rows ? _mm512_maskz_loadu_ps(depth, src + i * lda + k) : _mm512_setzero_ps();
            transpose16(r);
            for (std::int64_t kk = 0; kk < 16 && k + kk < kc; ++kk)
                _mm512_mask_storeu_ps(dst + (k + kk) * MR, __mmask16(0x0fff), r[kk]);
        }
    }
}

/// Packs depth k0..k0+kc, columns n0..n0+nc of op(B) into 32-column panels, b[panel][k][j], zero
/// columns past nc.
inline void pack_b(bool trans, const float* B, std::int64_t ldb, std::int64_t k0, std::int64_t kc, std::int64_t n0,
                   std::int64_t nc, float* dst) {
    for (std::int64_t p = 0; p < nc; p += NR, dst += NR * kc) {
        const std::int64_t cols = std::min<std::int64_t>(NR, nc - p);
        if (!trans) {  // B stored (K, N): rows of 32 columns are contiguous
            const float* src = B + k0 * ldb + n0 + p;
            const __mmask16 c0 = lanes(cols), c1 = lanes(cols - 16);
            for (std::int64_t k = 0; k < kc; ++k) {
                _mm512_store_ps(dst + k * NR, _mm512_maskz_loadu_ps(c0, src + k * ldb));
                _mm512_store_ps(dst + k * NR + 16, _mm512_maskz_loadu_ps(c1, src + k * ldb + 16));
            }
            continue;
        }
        // B stored (N, K): transpose 16 x 16 blocks on the way in.
        const float* src = B + (n0 + p) * ldb + k0;
        for (std::int64_t h = 0; h < NR; h += 16)
            for (std::int64_t k = 0; k < kc; k += 16) {
                const __mmask16 depth = lanes(kc - k);
                __m512 r[16];
                for (std::int64_t j = 0; j < 16; ++j)
                    r[j] = h + j < cols ? _mm512_maskz_loadu_ps(depth, src + (h + j) * ldb + k) : _mm512_setzero_ps();
                transpose16(r);
                for (std::int64_t kk = 0; kk < 16 && k + kk < kc; ++kk) _mm512_store_ps(dst + (k + kk) * NR + h, r[kk]);
            }
    }
}

/// The block C[m0:m1, n0:n1] of the product, over all of K, on the calling thread.
inline void gemm_block(bool trans_a, bool trans_b, std::int64_t m0, std::int64_t m1, std::int64_t n0, std::int64_t n1,
                       std::int64_t K, const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                       std::int64_t ldc, bool accumulate) {
    const std::int64_t kc_max = std::min(KC, K);
    const std::int64_t nc_max = std::min(NC, (n1 - n0 + NR - 1) / NR * NR);
    const bool pack_a = trans_a || lda % 1024 == 0;  // see pack_a_rows
    float* packed_b = workspace();
    float* packed_a = packed_b + kc_max * nc_max;  // 64-byte aligned: nc_max is a multiple of 32
    for (std::int64_t jc = n0; jc < n1; jc += NC) {
        const std::int64_t nc = std::min(NC, n1 - jc);
        for (std::int64_t pc = 0; pc < K; pc += KC) {
            const std::int64_t kc = std::min(KC, K - pc);
            const bool add = accumulate || pc > 0;
            pack_b(trans_b, B, ldb, pc, kc, jc, nc, packed_b);
            for (std::int64_t ic = m0; ic < m1; ic += MC) {
                const std::int64_t mc = std::min(MC, m1 - ic);
                if (trans_a)
                    pack_a_transposed(A, lda, ic, mc, pc, kc, packed_a);
                else if (pack_a)
                    pack_a_rows(A, lda, ic, mc, pc, kc, packed_a);
                for (std::int64_t ir = 0; ir < mc; ir += MR) {
                    const int rows = int(std::min<std::int64_t>(MR, mc - ir));
                    const MicroKernel kernel = pack_a ? kernels<true>[rows - 1] : kernels<false>[rows - 1];
                    const float* a = pack_a ? packed_a + ir * kc : A + (ic + ir) * lda + pc;
                    float* c = C + (ic + ir) * ldc + jc;
                    for (std::int64_t jr = 0; jr < nc; jr += NR)
                        kernel(kc, a, lda, packed_b + jr * kc, c + jr, ldc, lanes(nc - jr), lanes(nc - jr - 16), add);
                }
            }
        }
    }
}

/// C = op(A) op(B), or C += op(A) op(B) when accumulate; leading dimensions are row strides in elements.
/// Threads take disjoint column ranges (or row ranges when C is taller than wide) in whole panels, so
/// the operand each thread packs is its own and no thread waits for another.
inline void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                 std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate)
            for (std::int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, std::size_t(N) * sizeof(float));
        return;
    }
    split_gemm(M, N, K, MR, NR, [&](std::int64_t m0, std::int64_t m1, std::int64_t n0, std::int64_t n1) {
        gemm_block(trans_a, trans_b, m0, m1, n0, n1, K, A, lda, B, ldb, C, ldc, accumulate);
    });
}

}  // namespace minitrain::cpu::avx512

#endif  // __AVX512F__
