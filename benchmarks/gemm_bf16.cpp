// bench_gemm_bf16: the bf16 matrix product (backend/cpu/gemm_bf16.hpp) against our f32 one at MiniMind2-Small's
// training shapes (B x T = 2048 rows, hidden 512, FFN 1408, vocabulary 6400), and both against the
// instruction peaks probed on this CPU (a loop of independent vfmadd231ps / vdpbf16ps on registers).
//
//   bench_gemm_bf16 [--threads N] [--reps N]
//
// Prints one line per shape: GFLOP/s of f32, of bf16 and their ratio (2 x M x N x K flops per product),
// then the peaks. Ratios taken in the same run are what to compare: the machine is shared and noisy.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <minitrain/backend/cpu/cpu.hpp>
#include <minitrain/backend/cpu/gemm.hpp>
#include <minitrain/backend/cpu/gemm_bf16.hpp>

using namespace minitrain;
namespace bg = minitrain::cpu::bf16gemm;

namespace {

template <class F>
double best_seconds(int reps, F&& f) {
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

#if defined(MINITRAIN_BF16_KERNEL)
/// Flops per second of `iters` rounds of 24 independent accumulators (one core each thread).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) double probe_dpbf16(long iters) {
    __m512 acc[24];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x3f003f00);
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < iters; ++i)
#pragma GCC unroll 24
        for (int k = 0; k < 24; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], x, y);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    float sink = 0;
    for (auto& a : acc) sink += _mm512_reduce_add_ps(a);
    if (sink == 1.2345f) std::puts("");
    return double(iters) * 24 * 16 * 4 / s;  // 16 lanes x 2 products x 2 flops
}
#endif
__attribute__((target("avx512f"))) double probe_fma(long iters) {
    __m512 acc[24];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < iters; ++i)
#pragma GCC unroll 24
        for (int k = 0; k < 24; ++k) acc[k] = _mm512_fmadd_ps(acc[k], x, y);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    float sink = 0;
    for (auto& a : acc) sink += _mm512_reduce_add_ps(a);
    if (sink == 1.2345f) std::puts("");
    return double(iters) * 24 * 16 * 2 / s;
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    }
    CPU::set_threads(threads);
    std::printf("bench_gemm_bf16: %d threads, best of %d; AVX512-BF16 kernel: %s\n", threads, reps,
                bg::has_avx512_bf16() ? "yes" : "no (portable path)");
    struct Shape { const char* what; bool ta, tb; int M, N, K; };
    const Shape shapes[] = {
        {"q/o proj fwd   x.W^T", false, true, 2048, 512, 512},
        {"up/gate fwd    x.W^T", false, true, 2048, 1408, 512},
        {"down fwd       h.W^T", false, true, 2048, 512, 1408},
        {"lm_head fwd    x.E^T", false, true, 2048, 6400, 512},
        {"up bwd dX      dY.W", false, false, 2048, 512, 1408},
        {"up bwd dW      dY^T.X", true, false, 1408, 512, 2048},
        {"lm_head bwd dW dY^T.X", true, false, 6400, 512, 2048},
    };
    std::printf("%-24s %10s %10s %7s\n", "shape (M x N x K)", "f32 GF/s", "bf16 GF/s", "ratio");
    double f32_total = 0, bf16_total = 0, flops_total = 0;
    for (const Shape& s : shapes) {
        std::vector<float> A(std::size_t(s.M) * s.K, 0.5f), B(std::size_t(s.K) * s.N, 0.25f), C(std::size_t(s.M) * s.N);
        for (std::size_t i = 0; i < A.size(); ++i) A[i] = float(int(i % 97) - 48) / 64.0f;
        for (std::size_t i = 0; i < B.size(); ++i) B[i] = float(int(i % 89) - 44) / 64.0f;
        const int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
        const double flops = 2.0 * s.M * s.N * s.K;
        const double t32 = best_seconds(reps, [&] {
            cpu::gemm<float>(s.ta, s.tb, s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C.data(), s.N, false);
        });
        double t16 = t32;
#if defined(MINITRAIN_BF16_KERNEL)
        if (bg::has_avx512_bf16())
            t16 = best_seconds(reps, [&] {
                bg::gemm_avx512bf16(s.ta, s.tb, s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C.data(), s.N, false);
            });
#endif
        f32_total += t32;
        bf16_total += t16;
        flops_total += flops;
        std::printf("%-24s %10.1f %10.1f %6.2fx   (%d x %d x %d)\n", s.what, flops / t32 / 1e9, flops / t16 / 1e9, t32 / t16,
                    s.M, s.N, s.K);
    }
    std::printf("%-24s %10.1f %10.1f %6.2fx\n", "all shapes (time-weighted)", flops_total / f32_total / 1e9,
                flops_total / bf16_total / 1e9, f32_total / bf16_total);
    // Peaks: one probe per thread, summed.
    double fma = 0, dp = 0;
#pragma omp parallel num_threads(threads) reduction(+ : fma, dp)
    {
        fma += probe_fma(20000000);
#if defined(MINITRAIN_BF16_KERNEL)
        if (bg::has_avx512_bf16()) dp += probe_dpbf16(20000000);
#endif
    }
    std::printf("peak (probe, %d threads): f32 FMA %.1f GFLOP/s, bf16 vdpbf16ps %.1f GFLOP/s (%.2fx)\n", threads,
                fma / 1e9, dp / 1e9, fma > 0 ? dp / fma : 0.0);
    return 0;
}
