// minitrain/core/random.hpp
// Counter-based randomness: the n-th number of a stream is hash(seed, n), so any element can be drawn
// independently (in parallel, on any backend) and a run is reproduced by saving (seed, counter).
#pragma once

#include <cmath>
#include <cstdint>

#include "dtype.hpp"

namespace minitrain {

/// SplitMix64 finalizer over (seed, index): a well-mixed 64-bit value.
MT_HOST_DEVICE inline std::uint64_t hash64(std::uint64_t seed, std::uint64_t index) {
    std::uint64_t z = seed * 0x9e3779b97f4a7c15ull + index + 0x632be59bd9b4e019ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/// Uniform in [0, 1) with 24 bits of precision.
MT_HOST_DEVICE inline float uniform01(std::uint64_t seed, std::uint64_t index) {
    return float(hash64(seed, index) >> 40) * (1.0f / 16777216.0f);
}

/// A random stream: seed plus a position. Copying it copies the stream; saving both fields resumes it.
struct Rng {
    std::uint64_t seed = 0;
    std::uint64_t counter = 0;

    std::uint64_t next_u64() { return hash64(seed, counter++); }
    /// Uniform in [0, 1) with 53 bits.
    double uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
    /// Uniform integer in [0, n).
    std::uint64_t below(std::uint64_t n) { return n ? next_u64() % n : 0; }
    /// Standard normal (Box-Muller; consumes two numbers).
    double normal() {
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    /// Reserve n consecutive indices for a kernel that draws by index; returns the first.
    std::uint64_t skip(std::uint64_t n) {
        std::uint64_t first = counter;
        counter += n;
        return first;
    }
};

}  // namespace minitrain
