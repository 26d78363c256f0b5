// minitrain/memory/finite.hpp
// Finding NaN and Inf in parameter slabs: a saved model must never hold them, and a loaded one is refused
// when it does (naming the tensor), so a diverged run cannot silently hand garbage to eval or chat.
//
// The test reads the exponent bits (all ones = Inf or NaN), so it holds under -ffast-math too.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "parameters.hpp"

namespace minitrain {

/// Where the first non-finite value of a set of tensors is, and how many there are in that tensor.
struct NonFinite {
    std::string name;         // the tensor (parameter or optimizer state) holding it
    std::int64_t index = 0;   // flat index of the first one inside that tensor
    float value = 0;          // NaN, +Inf or -Inf
    std::int64_t count = 0;   // non-finite values in that tensor
    std::int64_t numel = 0;   // elements of that tensor
};

namespace detail {

inline bool is_finite_bits(float v) {
    std::uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    return (u & 0x7f800000u) != 0x7f800000u;
}

/// Index of the first non-finite value of p[0, n), or -1. A branch-free pass over blocks first: slabs are
/// scanned before every save, and finite data (the usual case) should cost one read at memory speed.
inline std::int64_t first_non_finite(const float* p, std::int64_t n) {
    constexpr std::int64_t block = 4096;
    for (std::int64_t b = 0; b < n; b += block) {
        const std::int64_t e = b + block < n ? b + block : n;
        std::uint32_t bad = 0;
        for (std::int64_t i = b; i < e; ++i) {
            std::uint32_t u;
            std::memcpy(&u, p + i, sizeof u);
            bad |= std::uint32_t((u & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            for (std::int64_t i = b; i < e; ++i)
                if (!is_finite_bits(p[i])) return i;
    }
    return -1;
}

inline std::int64_t count_non_finite(const float* p, std::int64_t n) {
    std::int64_t c = 0;
    for (std::int64_t i = 0; i < n; ++i) c += !is_finite_bits(p[i]);
    return c;
}

}  // namespace detail

/// The first parameter (in slab order) holding a NaN or an Inf, or nullopt when all are finite. Off the CPU
/// the data slab is copied to the host first (this runs at save and load time, not per step).
template <class Backend>
std::optional<NonFinite> find_non_finite(const ParameterSet<Backend>& ps) {
    if (ps.count() == 0) return std::nullopt;
    const float* base = nullptr;
    std::vector<float> staging;
    if constexpr (Backend::device == Device::cpu) {
        base = ps.data().template data<float>();
    } else {
        staging.resize(ps.count());
        Backend::to_host(staging.data(), ps.data());
        base = staging.data();
    }
    for (const Parameter& p : ps.all()) {
        const std::int64_t n = p.shape.numel();
        const float* q = base + p.offset;
        if (std::int64_t i = detail::first_non_finite(q, n); i >= 0)
            return NonFinite{p.name, i, q[i], detail::count_non_finite(q, n), n};
    }
    return std::nullopt;
}

/// The first non-finite value among named host f32 tensors (optimizer state staged for a checkpoint).
inline std::optional<NonFinite> find_non_finite(const std::string& name, const float* p, std::int64_t n) {
    if (std::int64_t i = detail::first_non_finite(p, n); i >= 0)
        return NonFinite{name, i, p[i], detail::count_non_finite(p, n), n};
    return std::nullopt;
}

/// "model.layers.3.mlp.up_proj.weight holds 12 non-finite values of 65536 (the first, nan, at index 7)".
inline std::string describe(const NonFinite& f) {
    std::string v = f.value != f.value ? "nan" : f.value > 0 ? "inf" : "-inf";
    return f.name + " holds " + std::to_string(f.count) + " non-finite value" + (f.count == 1 ? "" : "s") + " of " +
           std::to_string(f.numel) + " (the first, " + v + ", at index " + std::to_string(f.index) + ")";
}

}  // namespace minitrain
