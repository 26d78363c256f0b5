// minitrain/backend/cpu/gemm_split.hpp
// How our GEMM kernels (gemm_avx512.hpp f32, gemm_bf16.hpp bf16) share C among threads: disjoint column
// ranges (or row ranges when C is taller than wide) in whole micro-tile panels, so the operand each thread
// packs is its own, no thread waits for another, and the result does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace minitrain::cpu {

/// Calls block(m0, m1, n0, n1) on each thread's part of the M x N product (depth K); MR / NR are the
/// kernel's micro-tile rows and columns. Small products (< 2^18 multiply-adds) stay on the calling thread.
template <class Block>
void split_gemm(std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t MR, std::int64_t NR, Block&& block) {
    int threads = 1;
#if defined(_OPENMP)
    if (!omp_in_parallel() && double(M) * double(N) * double(K) >= double(1 << 18)) threads = omp_get_max_threads();
#endif
    const bool split_columns = N >= M;
    const std::int64_t unit = split_columns ? NR : MR, extent = split_columns ? N : M;
    const std::int64_t panels = (extent + unit - 1) / unit;
    threads = int(std::min<std::int64_t>(threads, panels));
    if (threads <= 1) return block(std::int64_t(0), M, std::int64_t(0), N);
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) {
        const std::int64_t lo = std::min(extent, panels * t / threads * unit);
        const std::int64_t hi = std::min(extent, panels * (t + 1) / threads * unit);
        if (lo >= hi) continue;
        if (split_columns)
            block(std::int64_t(0), M, lo, hi);
        else
            block(lo, hi, std::int64_t(0), N);
    }
}

}  // namespace minitrain::cpu
