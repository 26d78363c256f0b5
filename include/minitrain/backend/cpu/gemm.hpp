// minitrain/backend/cpu/gemm.hpp
// Matrix product. f32 on AVX-512 CPUs runs our own kernel (gemm_avx512.hpp: 30% faster than Eigen's
// at training shapes); everything else (f64, CPUs without AVX-512) runs Eigen's GEBP micro-kernels
// with our own blocking buffers and thread split.
//
// Why not `C.noalias() = A * B` on Eigen maps: Eigen then mallocs its packing buffers on every call
// (three per product at training sizes), and a steady-state training step must not touch the heap.
// Here each thread packs into a grow-only, thread-local workspace and runs Eigen's sequential
// Goto-style kernel on its own rows of C; the arithmetic is Eigen's, bit for bit.
//
//   C (M, N) = op(A) (M, K) . op(B) (K, N)     [+ C when accumulate]
//   all row-major; op(A) = A^T when trans_a (A is then stored (K, M)), likewise for B.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

#include "../../core/error.hpp"
#include "../../core/precision.hpp"
#include "bf16_weights.hpp"
#include "gemm_avx512.hpp"
#include "gemm_bf16.hpp"

namespace minitrain::cpu {

namespace detail {

/// Per-thread packing memory that only ever grows: after the first products of a run, no allocation.
template <class T>
T* gemm_workspace(std::size_t elements) {
    struct Workspace {
        void* ptr = nullptr;
        std::size_t bytes = 0;
        ~Workspace() {
            if (ptr) ::operator delete(ptr, std::align_val_t{64});
        }
    };
    thread_local Workspace ws;
    std::size_t bytes = elements * sizeof(T) + 64;
    if (ws.bytes < bytes) {
        if (ws.ptr) ::operator delete(ws.ptr, std::align_val_t{64});
        ws.ptr = ::operator new(bytes, std::align_val_t{64});
        ws.bytes = bytes;
    }
    return static_cast<T*>(ws.ptr);
}

/// Eigen's blocking descriptor pointing at our workspace instead of allocating its own.
template <class T>
struct Blocking : Eigen::internal::level3_blocking<T, T> {
    Blocking(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth) {
        // Eigen's col-major kernel sees the row-major product transposed: its "rows" are our columns.
        this->m_mc = rows;
        this->m_nc = cols;
        this->m_kc = depth;
        Eigen::internal::computeProductBlockingSizes<T, T, 1, Eigen::Index>(this->m_kc, this->m_mc, this->m_nc, 1);
        std::size_t size_a = std::size_t(this->m_kc * this->m_mc), size_b = std::size_t(this->m_kc * this->m_nc);
        std::size_t pad = 64 / sizeof(T);
        T* ws = gemm_workspace<T>(size_a + size_b + pad);
        this->m_blockA = ws;
        this->m_blockB = ws + (size_a + pad - 1) / pad * pad;
    }
};

template <class T, int OrderA, int OrderB>
void gemm_rows(Eigen::Index M, Eigen::Index N, Eigen::Index K, const T* A, Eigen::Index lda, const T* B,
               Eigen::Index ldb, T* C, Eigen::Index ldc) {
    using Product = Eigen::internal::general_matrix_matrix_product<Eigen::Index, T, OrderA, false, T, OrderB, false,
                                                                   Eigen::RowMajor, 1>;
    Blocking<T> blocking(N, M, K);
    Product::run(M, N, K, A, lda, B, ldb, C, 1, ldc, T(1), blocking, nullptr);
}

/// The Eigen path of gemm below.
template <class T>
void eigen_gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const T* A,
                std::int64_t lda, const T* B, std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
    if (M == 0 || N == 0) return;
    if (!accumulate)
        for (std::int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, std::size_t(N) * sizeof(T));
    if (K == 0) return;

    auto rows = [&](std::int64_t m0, std::int64_t m1) {
        // Rows m0..m1 of op(A) start at A + m0*lda (row-major) or A + m0 (stored transposed).
        const T* a = trans_a ? A + m0 : A + m0 * lda;
        T* c = C + m0 * ldc;
        std::int64_t m = m1 - m0;
        if (!trans_a && !trans_b)
            detail::gemm_rows<T, Eigen::RowMajor, Eigen::RowMajor>(m, N, K, a, lda, B, ldb, c, ldc);
        else if (!trans_a && trans_b)
            detail::gemm_rows<T, Eigen::RowMajor, Eigen::ColMajor>(m, N, K, a, lda, B, ldb, c, ldc);
        else if (trans_a && !trans_b)
            detail::gemm_rows<T, Eigen::ColMajor, Eigen::RowMajor>(m, N, K, a, lda, B, ldb, c, ldc);
        else
            detail::gemm_rows<T, Eigen::ColMajor, Eigen::ColMajor>(m, N, K, a, lda, B, ldb, c, ldc);
    };

    int threads = 1;
#if defined(_OPENMP)
    if (!omp_in_parallel() && double(M) * double(N) * double(K) >= double(1 << 18)) threads = omp_get_max_threads();
#endif
    // Rows are split in multiples of 16 so every thread's block keeps whole micro-kernel panels.
    std::int64_t chunk = std::max<std::int64_t>(16, (M + threads - 1) / threads + 15) / 16 * 16;
    threads = int(std::min<std::int64_t>(threads, (M + chunk - 1) / chunk));
    if (threads <= 1) {
        rows(0, M);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) {
        std::int64_t m0 = t * chunk, m1 = std::min(M, m0 + chunk);
        if (m0 < m1) rows(m0, m1);
    }
}

}  // namespace detail

/// C = op(A) op(B), or C += op(A) op(B) when accumulate. Leading dimensions are row strides in elements.
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda,
          const T* B, std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>)
        avx512::gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    else
#endif
        detail::eigen_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/// How many products ran in bf16 in this process, and how many of them packed B from a registered bf16 copy of
/// the weights: the evidence a program prints (precision_report) that --dtype bf16 took the bf16 path rather
/// than silently running f32. Relaxed atomics: one increment per product, nothing next to its arithmetic.
struct Bf16Counters {
    std::atomic<std::uint64_t> products{0};
    std::atomic<std::uint64_t> from_copy{0};
};
inline Bf16Counters& bf16_counters() {
    static Bf16Counters c;
    return c;
}

namespace detail {
inline const float* as_floats(const float* p, std::int64_t, std::int64_t, std::int64_t, std::vector<float>&) { return p; }
/// bf16 bits (rows x cols, row stride ld) widened to the floats they stand for, for the portable path.
inline const float* as_floats(const std::uint16_t* p, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                              std::vector<float>& out) {
    out.resize(std::size_t(rows * ld));
    for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < cols; ++j) {
            minitrain::bf16 w;
            w.bits = p[i * ld + j];
            out[std::size_t(i * ld + j)] = float(w);
        }
    return out.data();
}
}  // namespace detail

/// The bf16 product: C = bf16(op(A)) bf16(op(B)) accumulated in f32. Each operand is f32 (rounded while packed) or
/// bf16 bits (ASrc/BSrc = std::uint16_t: an activation stored in bf16, core/precision.hpp's activation_dtype);
/// the bits give the same product, bit for bit, as the floats they were rounded from. An f32 B inside a
/// registered Bf16WeightCopy is packed from the copy's bits.
template <class ASrc, class BSrc>
void bf16_gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const ASrc* A,
               std::int64_t lda, const BSrc* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
    if (M == 0 || N == 0) return;
    bf16_counters().products.fetch_add(1, std::memory_order_relaxed);
    if (K == 0) {
        if (!accumulate)
            for (std::int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, std::size_t(N) * sizeof(float));
        return;
    }
    const std::uint16_t* b_bits = nullptr;
    if constexpr (std::is_same_v<BSrc, float>) {
        // op(B) is (K, N): stored (N, K) when transposed; its last element is that far from B.
        const std::size_t extent = std::size_t(trans_b ? (N - 1) * ldb + K : (K - 1) * ldb + N);
        b_bits = bf16_copy_of(B, extent);
        if (b_bits) bf16_counters().from_copy.fetch_add(1, std::memory_order_relaxed);
    }
#if defined(MINITRAIN_BF16_KERNEL)
    if (bf16gemm::has_avx512_bf16()) {
        if constexpr (std::is_same_v<BSrc, float>)
            if (b_bits) return bf16gemm::gemm_avx512bf16(trans_a, trans_b, M, N, K, A, lda, b_bits, ldb, C, ldc, accumulate);
        return bf16gemm::gemm_avx512bf16(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    }
#endif
    // Portable: bf16 operands widened (exact), then rounded again by gemm_rounded (a no-op on bf16 values).
    std::vector<float> wa, wb;
    const float* a = detail::as_floats(A, trans_a ? K : M, trans_a ? M : K, lda, wa);
    const float* b = detail::as_floats(B, trans_b ? N : K, trans_b ? K : N, ldb, wb);
    bf16gemm::gemm_rounded(gemm<float>, trans_a, trans_b, M, N, K, a, lda, b, ldb, C, ldc, accumulate, b_bits);
}

/// The product a model's matmul runs (linear, attention, LoRA): gemm in the precision of the Autocast scope
/// (core/precision.hpp). bf16 rounds both inputs to bf16 and accumulates in f32 (bf16_gemm): the vdpbf16ps kernel
/// where the CPU has AVX512-BF16, else the rounded copies through the f32 kernel (the same values up to the order
/// of the f32 additions). When B lies in a registered Bf16WeightCopy (a weight: every model product has its
/// weight as B), its bf16 bits are packed instead of rounding the floats again (bf16_weights.hpp): the same
/// product bit for bit. f64 (the tests' reference) ignores the scope.
template <class T>
void autocast_gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const T* A,
                   std::int64_t lda, const T* B, std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
    if constexpr (std::is_same_v<T, float>) {
        const Precision p = matmul_precision();
        if (p == Precision::bf16) return bf16_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
        MT_CHECK(p == Precision::f32, "cpu::gemm: fp16 products need fast half arithmetic, which the CPU backend does not "
                 "have; bf16 is this CPU's fast type (--dtype bf16)");
    }
    gemm<T>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/// For a program that only reads its weights (generate, chat, eval, serve): when the products run in bf16 (an
/// Autocast bf16 scope is open), rounds f32[0 : n) once into `copy` for the rest of the run, so that no product
/// rounds a weight again (generation packs every weight once per token). The caller must not change the floats
/// while the copy is in use (merge adapters first). In f32 it does nothing.
inline void use_bf16_weights_for_inference(Bf16WeightCopy& copy, const float* f32, std::size_t n) {
    if (matmul_precision() != Precision::bf16 || !bf16_weight_copies_enabled()) return;
    copy.use(f32, n, bf16gemm::has_avx512_bf16());
}

/// One line for a program's log: "precision f32", or "precision bf16: N matrix products in bf16 (M of them read
/// the bf16 copy of the weights)", counted since the process started (bf16_counters).
inline std::string precision_report() {
    const Precision p = matmul_precision();
    std::string s = "precision " + std::string(precision_name(p));
    if (p == Precision::bf16)
        s += ": " + std::to_string(bf16_counters().products.load()) + " matrix products in bf16 (" +
             std::to_string(bf16_counters().from_copy.load()) + " of them read the bf16 copy of the weights)";
    return s;
}

}  // namespace minitrain::cpu
