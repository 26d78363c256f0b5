// minitrain/backend/cpu/gemm_bf16.hpp
// Matrix product with bf16 inputs and f32 accumulation (what torch.autocast does to a CPU matmul):
//
//   C (M, N) = bf16(op(A)) (M, K) . bf16(op(B)) (K, N)     [+ C when accumulate], f32 in and out, row-major
//
// A and B arrive as f32 and are rounded to bf16 (round to nearest even, as torch's .to(bfloat16)) while they
// are packed, so the conversion costs no pass of its own; a B that is already bf16 (the weights' copy made
// once per step, bf16_weights.hpp) is packed from its bits. On CPUs with AVX512-BF16 (Zen 4 and 5, Sapphire
// Rapids) the micro-kernel is vdpbf16ps: each instruction multiplies 16 pairs of bf16 and adds both
// products to 16 f32 accumulators, twice the multiply-adds of an f32 FMA. Elsewhere gemm_bf16 rounds the
// inputs and runs the f32 product: the same values up to the order of the f32 additions.
//
// The loop nest is gemm_avx512.hpp's (KC x NC block of B in L2, MC x KC of A, a 12 x 32 tile of C in 24 zmm
// registers); what differs is the packed layout, in pairs of k:
//
//   A panel  a[kp][i]      32-bit word = (a(i, 2kp), a(i, 2kp+1)): one broadcast feeds a row's pair
//   B panel  b[kp][j]      32-bit word = (b(2kp, j), b(2kp+1, j)): two zmm cover 32 columns
//
// so acc[i][j] += a(i,2kp) b(2kp,j) + a(i,2kp+1) b(2kp+1,j) is one vdpbf16ps per 16 columns. An odd K
// is padded with a zero. The kernel is compiled with target attributes and picked at run time from CPUID
// (has_avx512_bf16), so a build without -march flags still uses it. Every element of C sums over k in the
// same order whatever the thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include "gemm_split.hpp"

#include "../../core/dtype.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MINITRAIN_BF16_KERNEL 1
#include <immintrin.h>
#endif

namespace minitrain::cpu::bf16gemm {

/// f32 -> the nearest bf16 (ties to even, NaN stays NaN), as the f32 it stands for.
inline float round_bf16(float x) { return float(minitrain::bf16(x)); }

/// Whether this CPU executes AVX512-BF16 (and the AVX512F/BW the kernel also uses).
inline bool has_avx512_bf16() {
#if defined(MINITRAIN_BF16_KERNEL)
    static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512bf16");
    return yes;
#else
    return false;
#endif
}

#if defined(MINITRAIN_BF16_KERNEL)

#define MT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#if defined(__CUDACC__)
#define MT_BF16_UNROLL  // nvcc warns on GCC's unroll pragma; a .cu file's copy of the kernel may be unrolled less
#else
#define MT_BF16_UNROLL _Pragma("GCC unroll 12")
#endif

inline constexpr int MR = 12;               // rows of C per micro-tile
inline constexpr int NR = 32;               // columns of C per micro-tile
inline constexpr std::int64_t KC = 512;     // k per packed block (256 pairs): A panel 12 KiB, as f32's 256
inline constexpr std::int64_t MC = 384;
inline constexpr std::int64_t NC = 512;     // B block: 512 KiB of bf16, as f32's

/// Per-thread packing memory (32-bit words: one bf16 pair each), taken once and never freed (see
/// gemm_avx512.hpp's workspace for why).
inline std::uint32_t* workspace() {
    constexpr std::size_t bytes = std::size_t(KC / 2 * (NC + MC)) * sizeof(std::uint32_t);
    struct Workspace {
        void* ptr = ::operator new(bytes, std::align_val_t{64});
        ~Workspace() { ::operator delete(ptr, std::align_val_t{64}); }
    };
    thread_local Workspace ws;
    return static_cast<std::uint32_t*>(ws.ptr);
}

inline __mmask16 lanes16(std::int64_t n) {
    return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

/// 16 pairs (lo[j], hi[j]) as 32-bit words, both rounded to bf16: lo in the low half of each word.
MT_BF16_TARGET inline __m512i pairs(__m512 lo, __m512 hi) {
    // cvtne2ps gives [lo0..lo15 | hi0..hi15] as bf16; interleave them to lo0 hi0 lo1 hi1 ...
    const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, v);
}

/// 32 consecutive floats (masked) as 16 words (x0,x1) (x2,x3) ... in order.
MT_BF16_TARGET inline __m512i consecutive_pairs(const float* p, std::int64_t n) {
    const __m512 lo = _mm512_maskz_loadu_ps(lanes16(n), p), hi = _mm512_maskz_loadu_ps(lanes16(n - 16), p + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/// In-place transpose of 16 x 16 32-bit words held as 16 row vectors.
MT_BF16_TARGET inline void transpose16(__m512i* r) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; ++i) {
            t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/// C[0:Rows, 0:32] (+)= A panel (Rows x 2kp) . B panel (2kp x 32), both packed in pairs.
template <int Rows>
MT_BF16_TARGET void micro_kernel(std::int64_t kp, const std::uint32_t* __restrict a, const std::uint32_t* __restrict b,
                                 float* c, std::int64_t ldc, __mmask16 cols0, __mmask16 cols1, bool add) {
    __m512 acc0[Rows], acc1[Rows];
MT_BF16_UNROLL
    for (int i = 0; i < Rows; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
    for (std::int64_t p = 0; p < kp; ++p) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
MT_BF16_UNROLL
        for (int i = 0; i < Rows; ++i) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(a[i]));
            acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
            acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
        }
        a += MR;
        b += NR;
    }
MT_BF16_UNROLL
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

using MicroKernel = void (*)(std::int64_t, const std::uint32_t*, const std::uint32_t*, float*, std::int64_t, __mmask16,
                             __mmask16, bool);
template <int... R>
constexpr std::array<MicroKernel, sizeof...(R)> micro_kernels(std::integer_sequence<int, R...>) {
    return {&micro_kernel<R + 1>...};
}
inline constexpr auto kernels = micro_kernels(std::make_integer_sequence<int, MR>{});

/// Rows m0..m0+mc, depth k0..k0+kc of op(A) into 12-row panels of pairs, a[panel][kp][i]; zero rows past mc.
MT_BF16_TARGET inline void pack_a(bool trans, const float* A, std::int64_t lda, std::int64_t m0, std::int64_t mc,
                                  std::int64_t k0, std::int64_t kc, std::uint32_t* dst) {
    const std::int64_t kp = (kc + 1) / 2;
    for (std::int64_t p = 0; p < mc; p += MR, dst += MR * kp) {
        const std::int64_t rows = std::min<std::int64_t>(MR, mc - p);
        if (trans) {  // A stored (K, M): rows 2kp and 2kp+1 hold the pair's two halves for 12 consecutive i
            const float* src = A + k0 * lda + m0 + p;
            const __mmask16 r = lanes16(rows);
            for (std::int64_t q = 0; q < kp; ++q) {
                const __m512 lo = _mm512_maskz_loadu_ps(r, src + 2 * q * lda);
                const __m512 hi = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(r, src + (2 * q + 1) * lda) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(dst + q * MR, __mmask16(0x0fff), pairs(lo, hi));
            }
            continue;
        }
        // A stored (M, K): a row's consecutive floats are already its pairs; transpose 16 x 16 words.
        const float* src = A + (m0 + p) * lda + k0;
        for (std::int64_t k = 0; k < kc; k += 32) {
            __m512i w[16];
            for (std::int64_t i = 0; i < 16; ++i)
                w[i] = i < rows ? consecutive_pairs(src + i * lda + k, kc - k) : _mm512_setzero_si512();
            transpose16(w);
            for (std::int64_t q = 0; q < 16 && k / 2 + q < kp; ++q)
                _mm512_mask_storeu_epi32(dst + (k / 2 + q) * MR, __mmask16(0x0fff), w[q]);
        }
    }
}

/// pack_a from bf16 bits (an activation stored in bf16, core/precision.hpp's activation_dtype): the same words as
/// pack_a of the floats they were rounded from.
MT_BF16_TARGET inline void pack_a(bool trans, const std::uint16_t* A, std::int64_t lda, std::int64_t m0, std::int64_t mc,
                                  std::int64_t k0, std::int64_t kc, std::uint32_t* dst) {
    const std::int64_t kp = (kc + 1) / 2;
    for (std::int64_t p = 0; p < mc; p += MR, dst += MR * kp) {
        const std::int64_t rows = std::min<std::int64_t>(MR, mc - p);
        if (trans) {  // A stored (K, M): rows 2kp and 2kp+1 widened to words, the upper row in the high half
            const std::uint16_t* src = A + k0 * lda + m0 + p;
            const __mmask16 r = lanes16(rows);
            for (std::int64_t q = 0; q < kp; ++q) {
                const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(r, src + 2 * q * lda));
                const __m512i hi = 2 * q + 1 < kc
                                       ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(r, src + (2 * q + 1) * lda)), 16)
                                       : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(dst + q * MR, __mmask16(0x0fff), _mm512_or_si512(lo, hi));
            }
            continue;
        }
        // A stored (M, K): a row's 32 consecutive bf16 are its 16 pairs; transpose 16 x 16 words.
        const std::uint16_t* src = A + (m0 + p) * lda + k0;
        for (std::int64_t k = 0; k < kc; k += 32) {
            const std::int64_t left = kc - k;
            const __mmask32 m = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << left) - 1);
            __m512i w[16];
            for (std::int64_t i = 0; i < 16; ++i)
                w[i] = i < rows ? _mm512_maskz_loadu_epi16(m, src + i * lda + k) : _mm512_setzero_si512();
            transpose16(w);
            for (std::int64_t q = 0; q < 16 && k / 2 + q < kp; ++q)
                _mm512_mask_storeu_epi32(dst + (k / 2 + q) * MR, __mmask16(0x0fff), w[q]);
        }
    }
}

/// Depth k0..k0+kc, columns n0..n0+nc of op(B) into 32-column panels of pairs, b[panel][kp][j]; zero
/// columns past nc.
MT_BF16_TARGET inline void pack_b(bool trans, const float* B, std::int64_t ldb, std::int64_t k0, std::int64_t kc,
                                  std::int64_t n0, std::int64_t nc, std::uint32_t* dst) {
    const std::int64_t kp = (kc + 1) / 2;
    for (std::int64_t p = 0; p < nc; p += NR, dst += NR * kp) {
        const std::int64_t cols = std::min<std::int64_t>(NR, nc - p);
        if (!trans) {  // B stored (K, N): rows 2kp and 2kp+1, 32 columns each
            const float* src = B + k0 * ldb + n0 + p;
            const __mmask16 c0 = lanes16(cols), c1 = lanes16(cols - 16);
            for (std::int64_t q = 0; q < kp; ++q) {
                const float* lo = src + 2 * q * ldb;
                const bool has_hi = 2 * q + 1 < kc;
                const float* hi = lo + ldb;
                for (int h = 0; h < 2; ++h) {
                    const __mmask16 m = h ? c1 : c0;
                    const __m512 l = _mm512_maskz_loadu_ps(m, lo + 16 * h);
                    const __m512 u = has_hi ? _mm512_maskz_loadu_ps(m, hi + 16 * h) : _mm512_setzero_ps();
                    _mm512_store_si512(dst + q * NR + 16 * h, pairs(l, u));
                }
            }
            continue;
        }
        // B stored (N, K): a column's consecutive floats are its pairs; transpose 16 x 16 words.
        const float* src = B + (n0 + p) * ldb + k0;
        for (std::int64_t h = 0; h < NR; h += 16)
            for (std::int64_t k = 0; k < kc; k += 32) {
                __m512i w[16];
                for (std::int64_t j = 0; j < 16; ++j)
                    w[j] = h + j < cols ? consecutive_pairs(src + (h + j) * ldb + k, kc - k) : _mm512_setzero_si512();
                transpose16(w);
                for (std::int64_t q = 0; q < 16 && k / 2 + q < kp; ++q) _mm512_store_si512(dst + (k / 2 + q) * NR + h, w[q]);
            }
    }
}

/// pack_b from bf16 bits already rounded (a Bf16WeightCopy, backend/cpu/bf16_weights.hpp): the same words as
/// pack_b of the floats they stand for, without the rounding.
MT_BF16_TARGET inline void pack_b(bool trans, const std::uint16_t* B, std::int64_t ldb, std::int64_t k0, std::int64_t kc,
                                  std::int64_t n0, std::int64_t nc, std::uint32_t* dst) {
    const std::int64_t kp = (kc + 1) / 2;
    for (std::int64_t p = 0; p < nc; p += NR, dst += NR * kp) {
        const std::int64_t cols = std::min<std::int64_t>(NR, nc - p);
        if (!trans) {  // B stored (K, N): rows 2kp and 2kp+1 widened to words, the upper row in the high half
            const std::uint16_t* src = B + k0 * ldb + n0 + p;
            const __mmask16 c0 = lanes16(cols), c1 = lanes16(cols - 16);
            for (std::int64_t q = 0; q < kp; ++q) {
                const std::uint16_t* lo = src + 2 * q * ldb;
                const bool has_hi = 2 * q + 1 < kc;
                const std::uint16_t* hi = lo + ldb;
                for (int h = 0; h < 2; ++h) {
                    const __mmask16 m = h ? c1 : c0;
                    const __m512i l = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo + 16 * h));
                    const __m512i u = has_hi ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi + 16 * h)), 16)
                                             : _mm512_setzero_si512();
                    _mm512_store_si512(dst + q * NR + 16 * h, _mm512_or_si512(l, u));
                }
            }
            continue;
        }
        // B stored (N, K): a column's 32 consecutive bf16 are its 16 pairs; transpose 16 x 16 words.
        const std::uint16_t* src = B + (n0 + p) * ldb + k0;
        for (std::int64_t h = 0; h < NR; h += 16)
            for (std::int64_t k = 0; k < kc; k += 32) {
                const std::int64_t left = kc - k;
                const __mmask32 m = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << left) - 1);
                __m512i w[16];
                for (std::int64_t j = 0; j < 16; ++j)
                    w[j] = h + j < cols ? _mm512_maskz_loadu_epi16(m, src + (h + j) * ldb + k) : _mm512_setzero_si512();
                transpose16(w);
                for (std::int64_t q = 0; q < 16 && k / 2 + q < kp; ++q) _mm512_store_si512(dst + (k / 2 + q) * NR + h, w[q]);
            }
    }
}

/// The block C[m0:m1, n0:n1] over all of K, on the calling thread. ASrc, BSrc: float, or std::uint16_t for bf16
/// bits (an operand stored in bf16: an activation, or a weight's Bf16WeightCopy).
template <class ASrc, class BSrc>
MT_BF16_TARGET void gemm_block(bool trans_a, bool trans_b, std::int64_t m0, std::int64_t m1, std::int64_t n0,
                               std::int64_t n1, std::int64_t K, const ASrc* A, std::int64_t lda, const BSrc* B,
                               std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
    const std::int64_t kp_max = (std::min(KC, K) + 1) / 2;
    const std::int64_t nc_max = std::min(NC, (n1 - n0 + NR - 1) / NR * NR);
    std::uint32_t* packed_b = workspace();
    std::uint32_t* packed_a = packed_b + kp_max * nc_max;  // 64-byte aligned: nc_max is a multiple of 32
    for (std::int64_t jc = n0; jc < n1; jc += NC) {
        const std::int64_t nc = std::min(NC, n1 - jc);
        for (std::int64_t pc = 0; pc < K; pc += KC) {
            const std::int64_t kc = std::min(KC, K - pc), kp = (kc + 1) / 2;
            const bool add = accumulate || pc > 0;
            pack_b(trans_b, B, ldb, pc, kc, jc, nc, packed_b);
            for (std::int64_t ic = m0; ic < m1; ic += MC) {
                const std::int64_t mc = std::min(MC, m1 - ic);
                pack_a(trans_a, A, lda, ic, mc, pc, kc, packed_a);
                for (std::int64_t ir = 0; ir < mc; ir += MR) {
                    const int rows = int(std::min<std::int64_t>(MR, mc - ir));
                    float* c = C + (ic + ir) * ldc + jc;
                    for (std::int64_t jr = 0; jr < nc; jr += NR)
                        kernels[rows - 1](kp, packed_a + ir * kp, packed_b + jr * kp, c + jr, ldc, lanes16(nc - jr),
                                          lanes16(nc - jr - 16), add);
                }
            }
        }
    }
}

/// The AVX512-BF16 product (the CPU must have it: see has_avx512_bf16). Threads split C as the f32 kernel does.
/// A and B are f32 (rounded while packed) or bf16 bits (a bf16 activation, a Bf16WeightCopy): the same product bit
/// for bit as from the floats the bits were rounded from.
template <class ASrc, class BSrc>
void gemm_avx512bf16(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const ASrc* A,
                     std::int64_t lda, const BSrc* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
    split_gemm(M, N, K, MR, NR, [&](std::int64_t m0, std::int64_t m1, std::int64_t n0, std::int64_t n1) {
        gemm_block(trans_a, trans_b, m0, m1, n0, n1, K, A, lda, B, ldb, C, ldc, accumulate);
    });
}

#undef MT_BF16_TARGET
#undef MT_BF16_UNROLL

#endif  // MINITRAIN_BF16_KERNEL

/// The portable path: op(A) and op(B) rounded to bf16 into scratch copies, then `f32_gemm` (a callable with
/// gemm's signature). Slower, allocates, and equal to the kernel up to the order of the f32 additions.
/// `b_bits`: B's bf16 bits from a Bf16WeightCopy, read instead of rounding B (nullptr: round B).
template <class F32Gemm>
void gemm_rounded(F32Gemm&& f32_gemm, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                  const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                  bool accumulate, const std::uint16_t* b_bits = nullptr) {
    const std::int64_t ra = trans_a ? K : M, ca = trans_a ? M : K, rb = trans_b ? N : K, cb = trans_b ? K : N;
    std::vector<float> a(std::size_t(ra * ca)), b(std::size_t(rb * cb));
    for (std::int64_t i = 0; i < ra; ++i)
        for (std::int64_t j = 0; j < ca; ++j) a[std::size_t(i * ca + j)] = round_bf16(A[i * lda + j]);
    for (std::int64_t i = 0; i < rb; ++i)
        for (std::int64_t j = 0; j < cb; ++j) {
            minitrain::bf16 w;
            if (b_bits) w.bits = b_bits[i * ldb + j];
            b[std::size_t(i * cb + j)] = b_bits ? float(w) : round_bf16(B[i * ldb + j]);
        }
    f32_gemm(trans_a, trans_b, M, N, K, a.data(), ca, b.data(), cb, C, ldc, accumulate);
}

}  // namespace minitrain::cpu::bf16gemm
