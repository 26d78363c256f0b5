// bench_ops: how fast each building block of a MiniMind2-Small training step runs on this machine.
//
// Prints the machine, an FMA-throughput probe (what the cores can really do), a GEMM table (cpu::gemm,
// the kernel every linear layer uses, against Eigen's own `noalias()` product) with the fraction of the
// FMA peak each shape reaches, the GEMM time of one whole step's linear layers, and a table of every
// autograd op forward and forward+backward, called through Graph exactly as nn/transformer.hpp calls
// them. Times are medians of --reps repetitions after --warmup untimed ones; the machine may be shared,
// so the 1-minute load average is printed at start and end.
//
//   bench_ops [--threads 2] [--reps 11] [--warmup 2] [--only gemm|ops|peak] [--dtype f32|bf16]
//
// --dtype bf16 runs the op table inside an Autocast bf16 scope, as a `--dtype bf16` training step runs:
// linear layers and attention in bf16 (f32 accumulation), activations only matmuls read stored in bf16,
// everything else f32. The GEMM table is always cpu::gemm in f32 (bench_gemm_bf16 compares the kernels).
//
// Sizes (MiniMind2-Small, batch 4 x 512): B = 4 batch, T = 512 time, N = B*T = 2048 rows, C = 512
// channels, H = 8 heads, KV = 2 kv heads, D = 64 head dim, F = 1408 FFN hidden, V = 6400 vocab,
// E = 4 experts, K = 2 experts per token, L = 8 layers, P = 25.8M parameters.
// GEMM notation: C (M, N) = op(A) (M, K) . op(B) (K, N), row-major; FLOPs = 2 M N K.
#include <minitrain/minitrain.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <time.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

using namespace minitrain;

namespace {

// ---- options and timing ---------------------------------------------------------------------------

struct Options {
    int threads = 2;
    int reps = 11;
    int warmup = 2;
    std::string only;  // empty: everything
    std::string dtype = "f32";  // the op table's matrix products: f32, or bf16 as a --dtype bf16 training step runs them
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            MT_CHECK(i + 1 < argc, "bench_ops: ", a, " needs a value");
            return argv[++i];
        };
        if (a == "--threads") o.threads = std::stoi(value());
        else if (a == "--reps") o.reps = std::stoi(value());
        else if (a == "--warmup") o.warmup = std::stoi(value());
        else if (a == "--only") o.only = value();
        else if (a == "--dtype") o.dtype = std::string(precision_name(cpu_precision(value())));
        else if (a == "-h" || a == "--help") {
            std::printf("usage: bench_ops [--threads N] [--reps N] [--warmup N] [--only peak|gemm|ops] [--dtype f32|bf16]\n");
            std::exit(0);
        } else {
            MT_CHECK(false, "bench_ops: unknown argument ", a, " (try --help)");
        }
    }
    MT_CHECK(o.threads >= 1 && o.reps >= 1 && o.warmup >= 0, "bench_ops: threads and reps must be >= 1");
    return o;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double process_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

/// A timing: the median wall time, and the CPU share = process CPU time / (wall time x threads) over the
/// timed calls. A share well below 1 means other processes took the cores (or threads waited): the wall
/// time then overstates what the code costs on a quiet machine.
struct Timing {
    double ms = 0;
    double share = 0;
};
int g_threads = 1;

/// Median wall time of fn() in milliseconds, after `warmup` untimed calls.
Timing time_ms(const std::function<void()>& fn, int reps, int warmup) {
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<double> t;
    double wall = 0, cpu0 = process_cpu_s();
    for (int i = 0; i < reps; ++i) {
        double t0 = now_s();
        fn();
        t.push_back((now_s() - t0) * 1e3);
        wall += t.back() / 1e3;
    }
    const double cpu = process_cpu_s() - cpu0;
    std::sort(t.begin(), t.end());
    return {t[t.size() / 2], wall > 0 ? cpu / (wall * g_threads) : 0};
}

double median_ms(const std::function<void()>& fn, int reps, int warmup) { return time_ms(fn, reps, warmup).ms; }

double loadavg1() {
    std::ifstream f("/proc/loadavg");
    double l = -1;
    f >> l;
    return l;
}

// ---- the machine ----------------------------------------------------------------------------------

std::string cpuinfo_field(const std::string& key) {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key, 0) == 0) {
            auto c = line.find(':');
            if (c != std::string::npos) return line.substr(c + 2);
        }
    return "?";
}

double nominal_ghz() {
    std::string mhz = cpuinfo_field("cpu MHz");
    return mhz == "?" ? 0 : std::atof(mhz.c_str()) / 1000;
}

void print_machine(const Options& o) {
    std::printf("== machine\n");
    std::printf("cpu:        %s (family %s, model %s), %u logical cpus, cpu MHz (nominal/TSC) %s\n",
                cpuinfo_field("model name").c_str(), cpuinfo_field("cpu family").c_str(),
                cpuinfo_field("model").c_str(), std::thread::hardware_concurrency(), cpuinfo_field("cpu MHz").c_str());
    std::printf("threads:    %d (OpenMP max %d), OMP_WAIT_POLICY=%s\n", o.threads, CPU::threads(),
                std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)");
    std::printf("compiler:   g++ %s, Eigen %d.%d.%d, C++ %ld\n", __VERSION__, EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION,
                EIGEN_MINOR_VERSION, long(__cplusplus));
    std::string isa;
#if defined(__AVX512F__)
    isa += " AVX-512F";
#endif
#if defined(__AVX512BF16__)
    isa += " AVX512-BF16";
#endif
#if defined(__AVX2__)
    isa += " AVX2";
#endif
#if defined(__FMA__)
    isa += " FMA";
#endif
#if defined(__OPTIMIZE__)
    isa += " -O";
#endif
#if defined(NDEBUG)
    isa += " NDEBUG";
#endif
    std::printf("built with:%s; Eigen vectorizes with %s\n", isa.c_str(), Eigen::SimdInstructionSetsInUse());
    std::printf("load:       %.2f (1-minute load average at start)\n\n", loadavg1());
}

// ---- FMA peak probe -------------------------------------------------------------------------------

/// Per-thread FMA throughput with `width`-bit vectors: 12 independent accumulator chains (more than
/// latency x pipes on any current x86), timed on the thread's own CPU clock so that time the scheduler
/// gives to other processes does not count. Returns GFLOP/s per thread (median over threads of their
/// best of three runs) and the wall-clock rate of all threads together.
struct Probe {
    double per_thread_cpu = 0;  // GFLOP/s per thread while it is on a CPU
    double all_wall = 0;        // GFLOP/s of all threads, wall clock
};

double thread_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

template <int Width>
double fma_kernel(long iters) {
#if defined(__AVX512F__)
    if constexpr (Width == 512) {
        __m512 acc[12];
        for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(float(j) * 1e-3f);
        const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
        for (long i = 0; i < iters; ++i)
            for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
        __m512 s = acc[0];
        for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
        return double(_mm512_reduce_add_ps(s));
    }
#endif
#if defined(__AVX2__) && defined(__FMA__)
    if constexpr (Width == 256) {
        __m256 acc[12];
        for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(float(j) * 1e-3f);
        const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
        for (long i = 0; i < iters; ++i)
            for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], b, c);
        __m256 s = acc[0];
        for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
        float v[8];
        _mm256_storeu_ps(v, s);
        return double(v[0] + v[7]);
    }
#endif
    (void)iters;
    return 0;
}

template <int Width>
Probe fma_probe(int threads) {
    constexpr long iters = 20'000'000;  // 12 * iters FMAs per thread: ~0.1-0.3 s of work
    const double flops = 2.0 * 12 * (Width / 32) * double(iters);
    std::vector<double> best(std::size_t(threads), 0);
    double sink = 0, wall_best = 0;
    for (int rep = 0; rep < 3; ++rep) {
        double w0 = now_s();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            int id = omp_get_thread_num();
            double t0 = thread_cpu_s();
            sink += fma_kernel<Width>(iters);
            double rate = flops / (thread_cpu_s() - t0) / 1e9;
            best[std::size_t(id)] = std::max(best[std::size_t(id)], rate);
        }
        wall_best = std::max(wall_best, threads * flops / (now_s() - w0) / 1e9);
    }
    if (sink == 12345.678) std::printf(" ");  // keep the result alive
    std::sort(best.begin(), best.end());
    return {best[best.size() / 2], wall_best};
}

/// The f32 FMA peak the GEMM tables are compared against, GFLOP/s for `threads` threads.
double g_peak = 0;

void run_peak(const Options& o) {
    std::printf("== FMA peak probe (f32, 12 independent FMA chains per thread)\n");
    const double ghz = nominal_ghz();
#if defined(__AVX2__) && defined(__FMA__)
    Probe p256 = fma_probe<256>(o.threads);
    std::printf("256-bit FMA: %7.1f GFLOP/s per thread on its CPU time = %5.1f FLOP/cycle at the nominal %.2f GHz; "
                "%7.1f GFLOP/s wall, %d threads\n",
                p256.per_thread_cpu, p256.per_thread_cpu / ghz, ghz, p256.all_wall, o.threads);
    g_peak = p256.per_thread_cpu * o.threads;
#endif
#if defined(__AVX512F__)
    Probe p512 = fma_probe<512>(o.threads);
    std::printf("512-bit FMA: %7.1f GFLOP/s per thread on its CPU time = %5.1f FLOP/cycle at the nominal %.2f GHz; "
                "%7.1f GFLOP/s wall, %d threads\n",
                p512.per_thread_cpu, p512.per_thread_cpu / ghz, ghz, p512.all_wall, o.threads);
    g_peak = std::max(g_peak, p512.per_thread_cpu * o.threads);
#endif
    std::printf("nominal theoretical peak at 32 f32 FLOP/cycle/core (two 256-bit FMA pipes; AVX-512 double-pumped "
                "as on Zen 4): %d x %.2f GHz x 32 = %.1f GFLOP/s\n",
                o.threads, ghz, o.threads * ghz * 32);
    std::printf("peak used below (probe, %d threads): %.1f GFLOP/s\n\n", o.threads, g_peak);
}

// ---- GEMM -----------------------------------------------------------------------------------------

struct GemmShape {
    const char* name;
    bool ta, tb;
    std::int64_t M, N, K;
    bool accumulate;
    int per_step;  // how many times one training step runs this product
};

void fill_random(float* p, std::int64_t n, std::uint64_t seed, float scale = 1.0f) {
    for (std::int64_t i = 0; i < n; ++i) p[i] = (uniform01(seed, std::uint64_t(i)) - 0.5f) * 2 * scale;
}

/// The linear layers of one training step of a dense model: N rows, C channels, HD = H*D, KVD = KV*D,
/// F FFN hidden, V vocab, L layers (lm_head tied to the embedding).
struct GemmModel {
    const char* name;
    std::int64_t N, C, HD, KVD, F, V, L;
};

void run_gemm(const Options& o, const GemmModel& m, bool squares) {
    const std::int64_t N = m.N, C = m.C, HD = m.HD, KVD = m.KVD, F = m.F, V = m.V;
    const int L = int(m.L);
    // Forward y = x w^T is gemm(no, T); backward dx = dy w is gemm(no, no); dw += dy^T x is gemm(T, no).
    std::vector<GemmShape> shapes = {
        {"q,o fwd    x.w^T", false, true, N, HD, C, false, 2 * L},
        {"k,v fwd    x.w^T", false, true, N, KVD, C, false, 2 * L},
        {"gate|up fwd", false, true, N, 2 * F, C, false, L},
        {"down fwd", false, true, N, C, F, false, L},
        {"lm_head fwd", false, true, N, V, C, false, 1},
        {"q,o dx     dy.w", false, false, N, C, HD, false, 2 * L},
        {"k,v dx", false, false, N, C, KVD, true, 2 * L},
        {"gate|up dx", false, false, N, C, 2 * F, false, L},
        {"down dx", false, false, N, F, C, false, L},
        {"lm_head dx", false, false, N, C, V, false, 1},
        {"q,o dw     dy^T.x +=", true, false, HD, C, N, true, 2 * L},
        {"k,v dw", true, false, KVD, C, N, true, 2 * L},
        {"gate|up dw", true, false, 2 * F, C, N, true, L},
        {"down dw", true, false, C, F, N, true, L},
        {"lm_head dw", true, false, V, C, N, true, 1},
    };
    if (squares) {
        shapes.push_back({"square 1024", false, false, 1024, 1024, 1024, false, 0});
        shapes.push_back({"square 2048", false, false, 2048, 2048, 2048, false, 0});
    }
    std::printf("== GEMM f32 of %s (N=%ld C=%ld H*D=%ld KV*D=%ld F=%ld V=%ld L=%d), %d threads\n", m.name, long(N),
                long(C), long(HD), long(KVD), long(F), long(V), L, o.threads);
    std::printf("median of %d; %% = of the probed FMA peak %.0f GFLOP/s; ", o.reps, g_peak);
    std::printf("cpu%% = CPU share (process CPU time / (wall x threads)); on-CPU = GFLOP/s per second of CPU time x "
                "threads, i.e. what a quiet machine would give if the threads never wait.\n");
    std::printf("%-22s %2s %2s %6s %6s %6s | %9s %8s %6s %5s %8s %6s | %9s %8s %6s %5s\n", "shape", "tA", "tB", "M", "N",
                "K", "gemm ms", "GFLOP/s", "%peak", "cpu%", "on-CPU", "%peak", "eigen ms", "GFLOP/s", "%peak", "/step");
    double step_ms = 0, step_cpu_ms = 0, step_flops = 0, eigen_step_ms = 0;
    for (const GemmShape& s : shapes) {
        const std::int64_t a_elems = s.M * s.K, b_elems = s.K * s.N, c_elems = s.M * s.N;
        // 64-byte aligned, as activations and parameters are.
        Buffer<CPU> Ab(Shape{a_elems}, DType::f32), Bb(Shape{b_elems}, DType::f32), Cb(Shape{c_elems}, DType::f32);
        float *A = Ab.data<float>(), *Bp = Bb.data<float>(), *Cp = Cb.data<float>();
        fill_random(A, a_elems, 1);
        fill_random(Bp, b_elems, 2);
        std::fill_n(Cp, c_elems, 0.0f);
        const std::int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
        const double flops = 2.0 * double(s.M) * double(s.N) * double(s.K);
        Timing ours = time_ms(
            [&] { cpu::gemm<float>(s.ta, s.tb, s.M, s.N, s.K, A, lda, Bp, ldb, Cp, s.N, s.accumulate); },
            o.reps, o.warmup);
        // Eigen's own product on the same storage (it allocates its packing buffers each call).
        using Map = Eigen::Map<cpu::MatrixRM<float>>;
        Map Ast(A, s.ta ? s.K : s.M, s.ta ? s.M : s.K), Bst(Bp, s.tb ? s.N : s.K, s.tb ? s.K : s.N);
        Map Cst(Cp, s.M, s.N);
        auto eigen = [&] {
            if (!s.ta && !s.tb) cpu::assign_or_add(Cst, Ast * Bst, s.accumulate);
            else if (!s.ta && s.tb) cpu::assign_or_add(Cst, Ast * Bst.transpose(), s.accumulate);
            else if (s.ta && !s.tb) cpu::assign_or_add(Cst, Ast.transpose() * Bst, s.accumulate);
            else cpu::assign_or_add(Cst, Ast.transpose() * Bst.transpose(), s.accumulate);
        };
        double theirs = median_ms(eigen, o.reps, o.warmup);
        const double g1 = flops / ours.ms / 1e6, g2 = flops / theirs / 1e6, oncpu = g1 / std::max(ours.share, 1e-9);
        auto pct = [](double r) { return g_peak > 0 ? 100 * r / g_peak : 0.0; };
        std::printf("%-22s %2s %2s %6ld %6ld %6ld | %9.2f %8.1f %5.0f%% %4.0f%% %8.1f %5.0f%% | %9.2f %8.1f %5.0f%% %5d\n",
                    s.name, s.ta ? "T" : "", s.tb ? "T" : "", long(s.M), long(s.N), long(s.K), ours.ms, g1, pct(g1),
                    100 * ours.share, oncpu, pct(oncpu), theirs, g2, pct(g2), s.per_step);
        step_ms += ours.ms * s.per_step;
        step_cpu_ms += ours.ms * ours.share * s.per_step;
        eigen_step_ms += theirs * s.per_step;
        step_flops += flops * s.per_step;
    }
    std::printf("linear layers of one %s step (fwd + dx + dw, %d layers + lm_head): %.1f GFLOP, "
                "cpu::gemm %.0f ms wall (%.1f GFLOP/s, %.0f%% of peak), %.0f ms on-CPU (%.1f GFLOP/s, %.0f%%); "
                "Eigen noalias %.0f ms wall\n\n",
                m.name, L, step_flops / 1e9, step_ms, step_flops / step_ms / 1e6,
                g_peak > 0 ? 100 * step_flops / step_ms / 1e6 / g_peak : 0.0, step_cpu_ms, step_flops / step_cpu_ms / 1e6,
                g_peak > 0 ? 100 * step_flops / step_cpu_ms / 1e6 / g_peak : 0.0, eigen_step_ms);
}

// ---- ops ------------------------------------------------------------------------------------------

/// One row of the op table. build() runs the op's forward on a fresh graph and returns the Var whose
/// gradient is seeded for the backward (nullptr: the op is timed forward only).
struct OpCase {
    std::string name, shape;
    std::function<Var*(Graph<CPU>&)> build;
    double fwd_work = 0, fb_work = 0;  // FLOPs or bytes of forward, forward+backward
    bool flops = false;                // work is FLOPs (else bytes)
    int per_step = 0;                  // calls in one MiniMind2-Small training step
    bool scalar_loss = false;          // the output is a loss: backward(loss), nothing to seed
};

struct OpResult {
    std::string name;
    double fwd = 0, bwd = 0;  // ms; bwd = fwd+bwd - fwd - seeding
    int per_step = 0;
    double share = 1;  // CPU share of the fwd+bwd timing
};

void print_op(const OpCase& c, double fwd, double fb, double share) {
    const char* unit = c.flops ? "GFLOP/s" : "GB/s";
    const double f_rate = fwd > 0 ? c.fwd_work / fwd / 1e6 : 0, fb_rate = fb > 0 ? c.fb_work / fb / 1e6 : 0;
    if (fb > 0)
        std::printf("%-18s %-30s %9.3f %10.3f %9.1f %9.1f %-7s %4.0f%% %5d\n", c.name.c_str(), c.shape.c_str(), fwd,
                    fb, f_rate, fb_rate, unit, 100 * share, c.per_step);
    else
        std::printf("%-18s %-30s %9.3f %10s %9.1f %9s %-7s %4.0f%% %5d\n", c.name.c_str(), c.shape.c_str(), fwd, "-",
                    f_rate, "-", unit, 100 * share, c.per_step);
}

void run_ops(const Options& o) {
    constexpr int B = 4, T = 512, C = 512, H = 8, KV = 2, D = 64, F = 1408, V = 6400, E = 4, K = 2, L = 8;
    constexpr std::int64_t N = std::int64_t(B) * T;
    constexpr double f4 = 4;  // bytes per f32

    // Parameters as the model holds them: one slab, gradients accumulated (+=) into a second slab.
    ParameterSet<CPU> ps;
    Var& wq = ps.add("wq", {H * D, C});
    Var& wk = ps.add("wk", {KV * D, C});
    Var& wo = ps.add("wo", {C, H * D});
    Var& wgu = ps.add("gate_up", {2 * F, C});
    Var& wd = ps.add("down", {C, F});
    Var& emb = ps.add("embed", {V, C});
    Var& gain = ps.add("norm", {C});
    ps.finalize();
    fill_random(ps.data().data<float>(), std::int64_t(ps.count()), 7, 0.05f);
    std::fill_n(gain.data.data<float>(), C, 1.0f);

    // Inputs (persistent, created once). x stands for any (B, T, C) activation.
    auto buffer = [](Shape s, std::uint64_t seed, float scale) {
        Buffer<CPU> b(s, DType::f32);
        fill_random(b.data<float>(), s.numel(), seed, scale);
        return b;
    };
    Buffer<CPU> x = buffer({B, T, C}, 11, 1.0f), x2 = buffer({B, T, C}, 12, 1.0f);
    Buffer<CPU> hf = buffer({B, T, F}, 13, 1.0f), h2f = buffer({B, T, 2 * F}, 14, 2.0f);
    Buffer<CPU> q = buffer({B, T, H, D}, 15, 1.0f), k = buffer({B, T, KV, D}, 16, 1.0f), v = buffer({B, T, KV, D}, 17, 1.0f);
    Buffer<CPU> logits = buffer({N, V}, 18, 3.0f), router_logits = buffer({N, E}, 19, 1.0f);
    Buffer<CPU> ye = buffer({N * K, C}, 20, 1.0f);
    Buffer<CPU> ids(Shape{B, T}, DType::i32), targets(Shape{N}, DType::i32), route(Shape{N, K}, DType::i32);
    for (std::int64_t i = 0; i < N; ++i) {
        ids.data<std::int32_t>()[i] = std::int32_t(hash64(21, std::uint64_t(i)) % V);
        targets.data<std::int32_t>()[i] = std::int32_t(hash64(22, std::uint64_t(i)) % V);
        // Balanced top-2 routing for dispatch/combine: token i goes to experts (i, i+1) mod E.
        route.data<std::int32_t>()[2 * i] = std::int32_t(i % E);
        route.data<std::int32_t>()[2 * i + 1] = std::int32_t((i + 1) % E);
    }
    Buffer<CPU> cos(Shape{T, D / 2}, DType::f32), sin(Shape{T, D / 2}, DType::f32);
    rope_table(CPU{}, cos, sin, 1e6);
    Buffer<CPU> moe_w = buffer({N, K}, 23, 0.5f);
    Buffer<CPU> slot;  // (N, K) i32, filled below for moe_combine

    auto lin = [&](const char* name, Var& w, const Tensor& in, int per_step) {
        const std::int64_t Mo = w.data.shape[0], Kin = w.data.shape[1];
        OpCase c{name, "(" + std::to_string(N) + "," + std::to_string(Kin) + ")x(" + std::to_string(Mo) + "," +
                           std::to_string(Kin) + ")^T",
                 [&w, in](Graph<CPU>& g) { return &linear(g, g.leaf(in, true), w); }};
        c.fwd_work = 2.0 * N * Mo * Kin, c.fb_work = 6.0 * N * Mo * Kin, c.flops = true, c.per_step = per_step;
        return c;
    };
    auto ew = [](std::string name, std::string shape, double fwd_bytes, double fb_bytes, int per_step,
                 std::function<Var*(Graph<CPU>&)> build) {
        OpCase c{std::move(name), std::move(shape), std::move(build)};
        c.fwd_work = fwd_bytes, c.fb_work = fb_bytes, c.per_step = per_step;
        return c;
    };
    const double nc = double(N) * C;
    // Causal attention FLOPs: q k^T and p v over the visible half, 2 * 2 * T*(T+1)/2 * D per head;
    // backward = 2x forward (dv, dp, dq, dk), not counting the recomputation of p.
    const double att = 2.0 * 2.0 * double(T) * (T + 1) / 2 * D * B * H;

    std::vector<OpCase> cases;
    cases.push_back(lin("linear q", wq, x, L));
    cases.push_back(lin("linear k/v", wk, x, 2 * L));
    cases.push_back(lin("linear o", wo, x, L));
    cases.push_back(lin("linear gate|up", wgu, x, L));
    cases.push_back(lin("linear down", wd, hf, L));
    cases.push_back(lin("linear lm_head", emb, x, 1));
    cases.push_back(ew("embedding", "ids(4,512) table(6400,512)", 2 * nc * f4, 5 * nc * f4, 1,
                       [&](Graph<CPU>& g) { return &embedding(g, ids, emb); }));
    cases.push_back(ew("rmsnorm", "(4,512,512)", 2 * nc * f4, 5 * nc * f4, 2 * L + 1,
                       [&](Graph<CPU>& g) { return &rmsnorm(g, g.leaf(x, true), gain, 1e-5); }));
    cases.push_back(ew("rope q", "(4,512,8,64)", 2 * nc * f4, 4 * nc * f4, L,
                       [&](Graph<CPU>& g) { return &rope(g, g.leaf(q, true), cos, sin); }));
    cases.push_back(ew("rope k", "(4,512,2,64)", 0.5 * nc * f4, nc * f4, L,
                       [&](Graph<CPU>& g) { return &rope(g, g.leaf(k, true), cos, sin); }));
    {
        OpCase c{"attention", "q(4,512,8,64) kv(4,512,2,64)", [&](Graph<CPU>& g) {
                     return &attention(g, g.leaf(q, true), g.leaf(k, true), g.leaf(v, true));
                 }};
        c.fwd_work = att, c.fb_work = 3 * att, c.flops = true, c.per_step = L;
        cases.push_back(c);
    }
    cases.push_back(ew("swiglu", "(4,512,2816)->(..,1408)", 3.0 * N * F * f4, 8.0 * N * F * f4, L,
                       [&](Graph<CPU>& g) { return &swiglu(g, g.leaf(h2f, true)); }));
    cases.push_back(ew("add", "(4,512,512)", 3 * nc * f4, 7 * nc * f4, 2 * L,
                       [&](Graph<CPU>& g) { return &add(g, g.leaf(x, true), g.leaf(x2, true)); }));
    {
        OpCase c = ew("cross_entropy", "(2048,6400)", double(N) * V * f4, 3.0 * N * V * f4, 1, [&](Graph<CPU>& g) {
            return &cross_entropy(g, g.leaf(logits, true), targets);
        });
        c.scalar_loss = true;
        cases.push_back(c);
    }
    cases.push_back(ew("dropout p=0.1", "(4,512,512)", 2 * nc * f4, 4 * nc * f4, 0,
                       [&](Graph<CPU>& g) { return &dropout(g, g.leaf(x, true), 0.1); }));
    cases.push_back(ew("moe_router", "logits(2048,4) top-2", 2.0 * N * E * f4, 4.0 * N * E * f4, 0,
                       [&](Graph<CPU>& g) { return &moe_router(g, g.leaf(router_logits, true), B, K, true, 0.01).weights; }));
    cases.push_back(ew("moe_dispatch", "(2048,512)->(4096,512)", 3 * nc * f4, 6 * nc * f4, 0,
                       [&](Graph<CPU>& g) { return &moe_dispatch(g, g.leaf(x, true), route, E).xe; }));
    {
        // Slots of the balanced routing above, as moe_dispatch computes them.
        Graph<CPU> g0;
        Dispatch d0 = moe_dispatch(g0, g0.leaf(x, false), route, E);
        slot = Buffer<CPU>(Shape{N, K}, DType::i32);
        CPU::copy(slot, d0.slot);
        cases.push_back(ew("moe_combine", "(4096,512)->(2048,512)", 3 * nc * f4, 8 * nc * f4, 0, [&](Graph<CPU>& g) {
            return &moe_combine(g, g.leaf(ye, true), g.leaf(moe_w, true), slot.tensor());
        }));
    }

    std::printf("== ops, MiniMind2-Small sizes (B=4 T=512 C=512 H=8 KV=2 D=64 F=1408 V=6400 E=4 K=2), %d threads, "
                "median of %d\n",
                o.threads, o.reps);
    std::printf("fwd = the training-mode forward (records its node); fwd+bwd excludes seeding dy (a copy of the "
                "output, timed separately and subtracted). Rates: FLOPs (linear: 2NMK fwd, 6NMK fwd+bwd; attention: "
                "causal, backward = 2x forward) or minimal bytes moved.\n");
    std::printf("%-18s %-30s %9s %10s %9s %9s %-7s %5s %5s\n", "op", "shape", "fwd ms", "fwd+bwd ms", "fwd rate",
                "f+b rate", "unit", "cpu%", "/step");
    Graph<CPU> g;
    std::vector<OpResult> results;
    for (const OpCase& c : cases) {
        double fwd = median_ms(
            [&] {
                g.reset();
                c.build(g);
            },
            o.reps, o.warmup);
        double seed = 0;
        Timing fb;
        Var* out = nullptr;
        {
            g.reset();
            out = c.build(g);
        }
        const Tensor out_t = out->data;
        if (!c.scalar_loss) {
            Buffer<CPU> up(out_t.shape, out_t.dtype), dst(out_t.shape, out_t.dtype);
            fill_random(up.data<float>(), out_t.numel(), 31, 1e-3f);
            seed = median_ms([&] { CPU::copy(dst, up); }, o.reps, o.warmup);
            fb = time_ms(
                [&] {
                    g.reset();
                    g.backward(*c.build(g), up.tensor());
                },
                o.reps, o.warmup);
        } else {
            fb = time_ms(
                [&] {
                    g.reset();
                    g.backward(*c.build(g));
                },
                o.reps, o.warmup);
        }
        fb.ms -= seed;
        print_op(c, fwd, fb.ms, fb.share);
        results.push_back({c.name, fwd, fb.ms - fwd, c.per_step, fb.share});
    }
    g.reset();

    // Optimizer and clipping over the whole MiniMind2-Small parameter set.
    Transformer<MiniMind2Small> model(ModelConfig{6400, 512});
    model.init(1);
    ParameterSet<CPU>& mp = model.params();
    const double P = double(mp.trainable_count());
    fill_random(mp.grads().data<float>(), std::int64_t(P), 41, 1e-2f);
    Optimizer<AdamW> opt(mp);
    const std::string pshape = "P=" + std::to_string(mp.trainable_count());
    Timing adam = time_ms([&] { opt.step(1e-4); }, o.reps, o.warmup);
    const double t_adam = adam.ms;
    double t_norm = median_ms([&] { clip_grad_norm(mp, 0.0); }, o.reps, o.warmup);
    double t_clip = median_ms([&] {
        clip_grad_norm(mp, 1e-3);  // the norm is always above: measure + rescale, as a clipped step does
    }, o.reps, o.warmup);
    double t_zero = median_ms([&] { mp.zero_grad(); }, o.reps, o.warmup);
    std::printf("%-18s %-30s %9.3f %10s %9.1f %9s %-7s %4.0f%% %5d\n", "adamw step", pshape.c_str(), t_adam, "-",
                7 * 4 * P / t_adam / 1e6, "-", "GB/s", 100 * adam.share, 1);
    std::printf("%-18s %-30s %9.3f %10s %9.1f %9s %-7s %5s %5d\n", "clip (norm+scale)", pshape.c_str(), t_clip, "-",
                3 * 4 * P / t_clip / 1e6, "-", "GB/s", "", 1);
    std::printf("%-18s %-30s %9.3f %10s %9.1f %9s %-7s %5s %5s\n", "  grad norm only", pshape.c_str(), t_norm, "-",
                4 * P / t_norm / 1e6, "-", "GB/s", "", "");
    std::printf("%-18s %-30s %9.3f %10s %9.1f %9s %-7s %5s %5d\n", "zero_grad", pshape.c_str(), t_zero, "-",
                4 * P / t_zero / 1e6, "-", "GB/s", "", 1);
    results.push_back({"adamw+clip+zero", t_adam + t_clip + t_zero, 0, 1, adam.share});

    // What one MiniMind2-Small step costs if it were just these calls.
    std::printf("\n== estimated MiniMind2-Small step (B=4 T=512) from the op medians above x calls per step\n");
    std::printf("on-CPU ms = total ms x the CPU share of its timing: the load-free estimate.\n");
    std::printf("%-18s %5s %10s %10s %10s %6s %10s %6s\n", "op", "/step", "fwd ms", "bwd ms", "total ms", "share",
                "on-CPU ms", "share");
    double total = 0, total_cpu = 0;
    for (auto& r : results) total += r.per_step * (r.fwd + r.bwd), total_cpu += r.per_step * (r.fwd + r.bwd) * r.share;
    for (auto& r : results) {
        if (!r.per_step) continue;
        const double t = r.per_step * (r.fwd + r.bwd);
        std::printf("%-18s %5d %10.1f %10.1f %10.1f %5.1f%% %10.1f %5.1f%%\n", r.name.c_str(), r.per_step,
                    r.per_step * r.fwd, r.per_step * r.bwd, t, 100 * t / total, t * r.share,
                    100 * t * r.share / total_cpu);
    }
    std::printf("%-18s %5s %10s %10s %10.1f %6s %10.1f  -> %.0f tokens/s wall, %.0f tokens/s on-CPU, if nothing "
                "else cost time\n",
                "sum", "", "", "", total, "", total_cpu, N / (total / 1e3), N / (total_cpu / 1e3));
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured, even through a pipe
    try {
        Options o = parse(argc, argv);
        CPU::set_threads(o.threads);
        g_threads = o.threads;
        print_machine(o);
        if (o.only.empty() || o.only == "peak" || o.only == "gemm") run_peak(o);
        if (o.only.empty() || o.only == "gemm") {
            run_gemm(o, {"MiniMind2-Small (B=4 T=512)", 2048, 512, 512, 128, 1408, 6400, 8}, true);
            run_gemm(o, {"tiny (B=8 T=128)", 1024, 128, 128, 64, 384, 512, 4}, false);
        }
        if (o.only.empty() || o.only == "ops") {
            Autocast autocast(parse_precision(o.dtype));
            std::printf("op table precision: %s\n", o.dtype.c_str());
            run_ops(o);
        }
        std::printf("\nload: %.2f (1-minute load average at end)\n", loadavg1());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_ops: %s\n", e.what());
        return 1;
    }
}
