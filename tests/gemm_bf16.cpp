// The bf16 matrix product (backend/cpu/gemm_bf16.hpp): bf16 inputs, f32 accumulation. The AVX512-BF16
// kernel against a double loop over the same bf16-rounded inputs, for every transpose combination, with
// accumulation, padded leading dimensions, odd K and sizes that cross every blocking boundary; against
// the portable path (rounded inputs through the f32 product); and one thread against two, bit for bit.
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include <minitrain/backend/cpu/gemm.hpp>
#include <minitrain/backend/cpu/gemm_bf16.hpp>

#include "support/gradcheck.hpp"

using namespace minitrain;
using namespace mt_test;
namespace bg = minitrain::cpu::bf16gemm;

namespace {

std::vector<float> random_floats(std::size_t n, Rng& rng) {
    std::vector<float> v(n);
    for (auto& x : v) x = float(rng.uniform() * 2 - 1);
    return v;
}

struct Case {
    int M, N, K;
    bool ta, tb, acc;
    int pad;  // extra elements per row of A, B and C
};

/// Runs `gemm` on a case; checks against the double reference of the rounded inputs with a bound of
/// K f32 roundings of sum |a||b| (the products of bf16 values are exact in f32), and that the padding of C
/// is untouched. Returns C.
template <class Gemm>
std::vector<float> check_case(const Case& c, Gemm&& gemm, Rng& rng) {
    const int ra = c.ta ? c.K : c.M, ca = (c.ta ? c.M : c.K), rb = c.tb ? c.N : c.K, cb = (c.tb ? c.K : c.N);
    const int lda = ca + c.pad, ldb = cb + c.pad, ldc = c.N + c.pad;
    auto A = random_floats(std::size_t(ra) * lda, rng), B = random_floats(std::size_t(rb) * ldb, rng);
    auto C = random_floats(std::size_t(c.M) * ldc, rng);
    const auto C0 = C;
    gemm(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C.data(), ldc, c.acc);
    const std::string what = "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
                             " ta=" + std::to_string(c.ta) + " tb=" + std::to_string(c.tb) + " acc=" +
                             std::to_string(c.acc) + " pad=" + std::to_string(c.pad);
    int bad = 0;
    for (int i = 0; i < c.M; ++i)
        for (int j = 0; j < ldc; ++j) {
            const float got = C[std::size_t(i) * ldc + j];
            if (j >= c.N) {  // padding
                if (got != C0[std::size_t(i) * ldc + j] && bad++ < 3) FAIL_CHECK(what << ": padding of C changed");
                continue;
            }
            double s = c.acc ? C0[std::size_t(i) * ldc + j] : 0.0, mag = std::fabs(s);
            for (int k = 0; k < c.K; ++k) {
                const double a = bg::round_bf16(c.ta ? A[std::size_t(k) * lda + i] : A[std::size_t(i) * lda + k]);
                const double b = bg::round_bf16(c.tb ? B[std::size_t(j) * ldb + k] : B[std::size_t(k) * ldb + j]);
                s += a * b;
                mag += std::fabs(a * b);
            }
            const double tol = 1e-7 * (c.K + 2) * mag + 1e-30;
            if (!(std::fabs(got - s) <= tol) && bad++ < 3)
                FAIL_CHECK(what << ": C[" << i << "][" << j << "] = " << got << ", expected " << s << " (tolerance " << tol << ")");
        }
    return C;
}

const Case cases[] = {
    {1, 1, 1, false, false, false, 0},    {7, 5, 3, false, false, true, 0},    {13, 33, 65, true, false, false, 3},
    {33, 17, 64, false, true, true, 1},   {12, 32, 2, true, true, false, 0},   {130, 70, 41, true, true, true, 5},
    {5, 300, 9, false, true, false, 0},   {400, 40, 33, false, false, false, 0},  // M > MC
    {25, 530, 77, false, true, true, 2},                                         // N > NC
    {14, 35, 1030, true, false, true, 0}, {14, 35, 1030, false, true, false, 7}, // K > 2 KC, odd pairs
    {24, 64, 513, false, false, false, 0},                                        // K = KC + 1
    {12, 48, 256, false, false, false, 1024 - 256},                               // rows 4 KiB apart
};

}  // namespace

TEST_CASE("round_bf16 rounds to nearest even and keeps NaN, Inf and the sign") {
    auto bits = [](float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; };
    auto from = [](std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
    CHECK(bits(bg::round_bf16(from(0x3f808000u))) == 0x3f800000u);  // tie, even below
    CHECK(bits(bg::round_bf16(from(0x3f818000u))) == 0x3f820000u);  // tie, even above
    CHECK(bits(bg::round_bf16(from(0x3f808001u))) == 0x3f810000u);  // above the tie
    CHECK(bg::round_bf16(-2.5f) == -2.5f);
    CHECK(std::isinf(bg::round_bf16(INFINITY)));
    CHECK(std::isnan(bg::round_bf16(from(0x7f800001u))));  // a NaN whose payload would round into Inf
    CHECK(std::isinf(bg::round_bf16(from(0x7f7fffffu))));  // FLT_MAX rounds up to Inf, as torch does
}

TEST_CASE("bf16 gemm: the portable path (rounded inputs, f32 product) against the double loop") {
    Rng rng{77};
    CPU::set_threads(2);
    auto portable = [](auto... a) {
        bg::gemm_rounded([](auto... b) { cpu::gemm<float>(b...); }, a...);
    };
    for (const Case& c : cases) check_case(c, portable, rng);
}

#if defined(MINITRAIN_BF16_KERNEL)
TEST_CASE("bf16 gemm: the AVX512-BF16 kernel against the double loop; 1 thread == 2 threads bit for bit") {
    if (!bg::has_avx512_bf16()) {
        MESSAGE("this CPU has no AVX512-BF16: the kernel is not run (the portable path is tested above)");
        return;
    }
    for (const Case& c : cases) {
        Rng r1{91}, r2{91};
        CPU::set_threads(1);
        const auto one = check_case(c, bg::gemm_avx512bf16, r1);
        CPU::set_threads(2);
        const auto two = check_case(c, bg::gemm_avx512bf16, r2);
        CHECK_MESSAGE(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0,
                      "thread count changed the result for M=", c.M, " N=", c.N, " K=", c.K);
    }
    // Large enough for both threads to work.
    Rng r1{92}, r2{92};
    CPU::set_threads(1);
    const auto one = check_case({256, 512, 300, false, true, false, 0}, bg::gemm_avx512bf16, r1);
    CPU::set_threads(2);
    const auto two = check_case({256, 512, 300, false, true, false, 0}, bg::gemm_avx512bf16, r2);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}
#endif
