// minitrain/backend/cpu/bf16_weights.hpp
// The bf16 copy of the weights that bf16 products read (core/precision.hpp): rounded once per optimizer step
// instead of once in every product that packs them (a step packs each weight in its forward, its backward
// dX = dY W and once more per micro-batch).
//
// A Bf16WeightCopy rounds a range of f32 floats (a parameter slab) into bf16 bits and registers the pair
// while it is in use; cpu::autocast_gemm asks bf16_copy_of() whether a product's B operand lies in a
// registered range and, if so, packs the bf16 bits instead of rounding the floats. The rounding is the
// kernel's own (vcvtneps2bf16 where the CPU has AVX512-BF16, else minitrain::bf16's round to nearest even),
// so a product reads the same bf16 words either way and its result is bit for bit the same.
//
// Who holds a copy must refresh it whenever the floats change and release it before they change again: the
// trainer uses it for the span of one step's forward and backward passes (train/trainer.hpp) and releases
// it before the optimizer writes the weights, so nothing (an optimizer step, load_checkpoint, a LoRA merge,
// a user's edit between steps) can leave a stale copy registered.
//
// The registry is process-wide (as the precision switch is): registration happens on the calling thread,
// outside any product, and the OpenMP workers of a product only read it.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../../core/dtype.hpp"
#include "../../core/error.hpp"
#include "gemm_bf16.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace minitrain::cpu {

namespace detail {

struct Bf16Range {
    const float* f32 = nullptr;  // the floats the copy stands for
    std::size_t n = 0;
    const std::uint16_t* bits = nullptr;  // their bf16 rounding, n of them
};

inline constexpr int max_bf16_ranges = 8;

struct Bf16Registry {
    std::array<Bf16Range, max_bf16_ranges> ranges{};
    int count = 0;
    std::atomic<bool> enabled{true};
};

inline Bf16Registry& bf16_registry() {
    static Bf16Registry r;
    return r;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/// The AVX512-BF16 rounding, the same instruction family the GEMM's packing uses (vcvtne(2)ps2bf16: round to
/// nearest even, denormal inputs read as zero), so the copy's words equal the packed ones.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline void round_bf16_avx512(
    const float* src, std::uint16_t* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        const __mmask16 m = __mmask16((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
    }
}
#endif

}  // namespace detail

/// Whether bf16 products read registered copies (on by default). Off: every product rounds while packing, as
/// before; the results are the same bit for bit. For the tests and benchmarks that compare the two.
inline void set_bf16_weight_copies(bool on) { detail::bf16_registry().enabled.store(on); }
inline bool bf16_weight_copies_enabled() { return detail::bf16_registry().enabled.load(); }

/// The bf16 bits standing for p[0 : extent) if a registered copy covers all of it (and copies are enabled),
/// else nullptr.
inline const std::uint16_t* bf16_copy_of(const float* p, std::size_t extent) {
    auto& r = detail::bf16_registry();
    if (!r.enabled.load(std::memory_order_relaxed)) return nullptr;
    for (int i = 0; i < r.count; ++i) {
        const detail::Bf16Range& g = r.ranges[std::size_t(i)];
        if (p >= g.f32 && p < g.f32 + g.n && extent <= std::size_t(g.f32 + g.n - p)) return g.bits + (p - g.f32);
    }
    return nullptr;
}

/// f32 -> bf16 bits, n of them, with the rounding the bf16 GEMM's packing applies on this CPU.
inline void round_to_bf16(const float* src, std::uint16_t* dst, std::size_t n, bool avx512_bf16) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (avx512_bf16) {
        // Two threads split the slab in 16-float multiples (a 26M-parameter slab: ~10 ms on one core).
        const std::ptrdiff_t chunks = std::ptrdiff_t((n + 65535) / 65536);
#pragma omp parallel for schedule(static)
        for (std::ptrdiff_t c = 0; c < chunks; ++c) {
            const std::size_t b = std::size_t(c) * 65536, e = std::min(n, b + 65536);
            detail::round_bf16_avx512(src + b, dst + b, e - b);
        }
        return;
    }
#endif
    (void)avx512_bf16;
    for (std::size_t i = 0; i < n; ++i) dst[i] = minitrain::bf16(src[i]).bits;
}

/// round_to_bf16 on the calling thread with this CPU's kernel rounding: for an op that stores its output in bf16
/// (core/precision.hpp's activation_dtype) row by row, inside its own parallel loop. The words equal what the bf16
/// GEMM's packing makes of the floats, so a product reading them gives the result it gives on the floats.
inline void store_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (bf16gemm::has_avx512_bf16()) return detail::round_bf16_avx512(src, dst, n);
#endif
    for (std::size_t i = 0; i < n; ++i) dst[i] = minitrain::bf16(src[i]).bits;
}

/// A bf16 copy of a range of floats, registered for the bf16 products while in use (see the top of the file).
/// Its memory grows to the largest range used and is kept, so a steady-state step does not allocate.
class Bf16WeightCopy {
public:
    Bf16WeightCopy() = default;
    Bf16WeightCopy(const Bf16WeightCopy&) = delete;
    Bf16WeightCopy& operator=(const Bf16WeightCopy&) = delete;
    ~Bf16WeightCopy() { release(); }

    /// Rounds f32[0 : n) now and lets bf16 products read the copy for them until release(). `avx512_bf16`: the
    /// CPU's kernel is the AVX512-BF16 one (bf16gemm::has_avx512_bf16()), whose rounding the copy must match.
    void use(const float* f32, std::size_t n, bool avx512_bf16) {
        release();
        if (n == 0) return;
        if (bits_.size() < n) bits_.resize(n);
        round_to_bf16(f32, bits_.data(), n, avx512_bf16);
        auto& r = detail::bf16_registry();
        MT_CHECK(r.count < detail::max_bf16_ranges, "Bf16WeightCopy: more than ", detail::max_bf16_ranges,
                 " bf16 weight copies in use at once");
        r.ranges[std::size_t(r.count++)] = {f32, n, bits_.data()};
        src_ = f32;
    }

    /// Stops the products from reading the copy (they round the floats themselves again).
    void release() {
        if (!src_) return;
        auto& r = detail::bf16_registry();
        for (int i = 0; i < r.count; ++i)
            if (r.ranges[std::size_t(i)].f32 == src_ && r.ranges[std::size_t(i)].bits == bits_.data()) {
                r.ranges[std::size_t(i)] = r.ranges[std::size_t(r.count - 1)];
                --r.count;
                break;
            }
        src_ = nullptr;
    }

    bool in_use() const { return src_ != nullptr; }
    /// The copy's bits (valid while in use).
    const std::uint16_t* bits() const { return bits_.data(); }

private:
    std::vector<std::uint16_t> bits_;
    const float* src_ = nullptr;
};

}  // namespace minitrain::cpu
