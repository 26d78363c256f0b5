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
#include <minitrain/backend/cpu/rmsnorm.hpp>
#include <minitrain/backend/cpu/swiglu.hpp>
#include <minitrain/memory/arena.hpp>

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
        const auto one = check_case(c, bg::gemm_avx512bf16<float, float>, r1);
        CPU::set_threads(2);
        const auto two = check_case(c, bg::gemm_avx512bf16<float, float>, r2);
        CHECK_MESSAGE(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0,
                      "thread count changed the result for M=", c.M, " N=", c.N, " K=", c.K);
    }
    // Large enough for both threads to work.
    Rng r1{92}, r2{92};
    CPU::set_threads(1);
    const auto one = check_case({256, 512, 300, false, true, false, 0}, bg::gemm_avx512bf16<float, float>, r1);
    CPU::set_threads(2);
    const auto two = check_case({256, 512, 300, false, true, false, 0}, bg::gemm_avx512bf16<float, float>, r2);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}
#endif

// ---- the bf16 copy of the weights (backend/cpu/bf16_weights.hpp) ------------------------------------------------

TEST_CASE("bf16 weight copy: its bits are the kernel's rounding (scalar rounding on the portable path)") {
    Rng rng{31};
    auto v = random_floats(1000, rng);
    v[3] = 0.0f, v[4] = -0.0f, v[5] = INFINITY, v[6] = 1.5f * 65536.0f;
    std::vector<std::uint16_t> scalar(v.size()), fast(v.size());
    cpu::round_to_bf16(v.data(), scalar.data(), v.size(), false);
    for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(scalar[i] == bf16(v[i]).bits);
    if (bg::has_avx512_bf16()) {
        cpu::round_to_bf16(v.data(), fast.data(), 999, true);  // a tail of 7 after 62 vectors of 16
        fast[999] = scalar[999];
        CHECK(fast == scalar);  // normal numbers: vcvtneps2bf16 is round to nearest even too
    }
}

TEST_CASE("bf16 weight copy: autocast_gemm reads it for B, bit for bit as rounding B; a stale copy is read as is") {
    Rng rng{55};
    CPU::set_threads(2);
    Autocast bf(Precision::bf16);
    for (const Case& c : cases) {
        const int rb = c.tb ? c.N : c.K, cb = c.tb ? c.K : c.N, ca = c.ta ? c.M : c.K, ra = c.ta ? c.K : c.M;
        const int lda = ca + c.pad, ldb = cb + c.pad, ldc = c.N + c.pad;
        auto A = random_floats(std::size_t(ra) * lda, rng), B = random_floats(std::size_t(rb) * ldb, rng);
        const auto C0 = random_floats(std::size_t(c.M) * ldc, rng);
        auto product = [&](const std::vector<float>& b) {
            auto C = C0;
            cpu::autocast_gemm<float>(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, b.data(), ldb, C.data(), ldc, c.acc);
            return C;
        };
        INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb << " pad=" << c.pad);
        const auto rounded = product(B);
        cpu::Bf16WeightCopy copy;
        copy.use(B.data(), B.size(), bg::has_avx512_bf16());
        REQUIRE(cpu::bf16_copy_of(B.data(), B.size()) == copy.bits());
        CHECK(cpu::bf16_copy_of(B.data() + 1, B.size()) == nullptr);  // runs past the range: not covered
        const auto read = product(B);
        CHECK(std::memcmp(read.data(), rounded.data(), read.size() * sizeof(float)) == 0);
        // Change the floats of op(B)'s first element: the registered copy still holds the old value, and the
        // product reads it (which is why the trainer refreshes the copy each step) ...
        auto B2 = B;
        B[0] += 0.5f;
        const auto stale = product(B);
        CHECK(std::memcmp(stale.data(), read.data(), stale.size() * sizeof(float)) == 0);
        // ... until it is refreshed, or released, or copies are switched off.
        copy.use(B.data(), B.size(), bg::has_avx512_bf16());
        const auto fresh = product(B);
        copy.release();
        const auto fresh_rounded = product(B);
        CHECK(std::memcmp(fresh.data(), fresh_rounded.data(), fresh.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(fresh.data(), read.data(), fresh.size() * sizeof(float)) != 0);
        copy.use(B2.data(), B2.size(), bg::has_avx512_bf16());
        cpu::set_bf16_weight_copies(false);
        CHECK(cpu::bf16_copy_of(B2.data(), B2.size()) == nullptr);
        cpu::set_bf16_weight_copies(true);
    }
    CHECK(cpu::bf16_copy_of(nullptr, 0) == nullptr);  // every copy above was released by its destructor
}

TEST_CASE("bf16 weight copy: the portable path reads it bit for bit as rounding B") {
    Rng rng{56};
    for (const Case& c : cases) {
        const int rb = c.tb ? c.N : c.K, cb = c.tb ? c.K : c.N, ca = c.ta ? c.M : c.K, ra = c.ta ? c.K : c.M;
        const int lda = ca + c.pad, ldb = cb + c.pad, ldc = c.N + c.pad;
        auto A = random_floats(std::size_t(ra) * lda, rng), B = random_floats(std::size_t(rb) * ldb, rng);
        std::vector<std::uint16_t> bits(B.size());
        cpu::round_to_bf16(B.data(), bits.data(), B.size(), false);
        std::vector<float> C1(std::size_t(c.M) * ldc), C2 = C1;
        auto f32 = [](auto... b) { cpu::gemm<float>(b...); };
        bg::gemm_rounded(f32, c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C1.data(), ldc, false);
        bg::gemm_rounded(f32, c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C2.data(), ldc, false, bits.data());
        CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
    }
}

// ---- operands stored in bf16 (activations, core/precision.hpp's activation_dtype) ---------------------------

TEST_CASE("bf16_gemm: A or B given as bf16 bits gives the product of the floats they were rounded from, bit for bit") {
    Rng rng{57};
    CPU::set_threads(2);
    Autocast bf(Precision::bf16);
    const bool fast = bg::has_avx512_bf16();
    for (const Case& c : cases) {
        const int rb = c.tb ? c.N : c.K, cb = c.tb ? c.K : c.N, ca = c.ta ? c.M : c.K, ra = c.ta ? c.K : c.M;
        const int lda = ca + c.pad, ldb = cb + c.pad, ldc = c.N + c.pad;
        auto A = random_floats(std::size_t(ra) * lda, rng), B = random_floats(std::size_t(rb) * ldb, rng);
        const auto C0 = random_floats(std::size_t(c.M) * ldc, rng);
        std::vector<std::uint16_t> a16(A.size()), b16(B.size());
        cpu::round_to_bf16(A.data(), a16.data(), A.size(), fast);
        cpu::round_to_bf16(B.data(), b16.data(), B.size(), fast);
        INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb << " pad=" << c.pad);
        auto run = [&](auto* a, auto* b) {
            auto C = C0;
            cpu::bf16_gemm(c.ta, c.tb, c.M, c.N, c.K, a, lda, b, ldb, C.data(), ldc, c.acc);
            return C;
        };
        auto rounded = C0;
        cpu::autocast_gemm<float>(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, rounded.data(), ldc, c.acc);
        const auto from_a = run(a16.data(), B.data()), from_b = run(A.data(), b16.data()), both = run(a16.data(), b16.data());
        CHECK(std::memcmp(from_a.data(), rounded.data(), rounded.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(from_b.data(), rounded.data(), rounded.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(both.data(), rounded.data(), rounded.size() * sizeof(float)) == 0);
        // The bits are not ignored: other bits, another product.
        a16[0] ^= 0x0040;
        const auto other = run(a16.data(), B.data());
        CHECK(std::memcmp(other.data(), rounded.data(), rounded.size() * sizeof(float)) != 0);
    }
}

TEST_CASE("bf16_gemm counts its products, and those that read a weight copy") {
    Rng rng{58};
    Autocast bf(Precision::bf16);
    auto A = random_floats(6 * 8, rng), B = random_floats(8 * 5, rng);
    std::vector<float> C(6 * 5);
    const std::uint64_t p0 = cpu::bf16_counters().products.load(), c0 = cpu::bf16_counters().from_copy.load();
    cpu::autocast_gemm<float>(false, false, 6, 5, 8, A.data(), 8, B.data(), 5, C.data(), 5, false);
    CHECK(cpu::bf16_counters().products.load() == p0 + 1);
    CHECK(cpu::bf16_counters().from_copy.load() == c0);
    {
        cpu::Bf16WeightCopy copy;
        cpu::use_bf16_weights_for_inference(copy, B.data(), B.size());  // under Autocast bf16: made
        REQUIRE(copy.in_use());
        cpu::autocast_gemm<float>(false, false, 6, 5, 8, A.data(), 8, B.data(), 5, C.data(), 5, false);
    }
    CHECK(cpu::bf16_counters().products.load() == p0 + 2);
    CHECK(cpu::bf16_counters().from_copy.load() == c0 + 1);
    CHECK(cpu::precision_report().find("precision bf16: ") == 0);
    {
        Autocast f32(Precision::f32);
        cpu::Bf16WeightCopy copy;
        cpu::use_bf16_weights_for_inference(copy, B.data(), B.size());  // f32: nothing to round
        CHECK_FALSE(copy.in_use());
        cpu::autocast_gemm<float>(false, false, 6, 5, 8, A.data(), 8, B.data(), 5, C.data(), 5, false);
        CHECK(cpu::bf16_counters().products.load() == p0 + 2);  // an f32 product is not counted
        CHECK(cpu::precision_report() == "precision f32");
    }
}

TEST_CASE("rmsnorm and swiglu with a bf16 output: the kernel rounding of their f32 output, bit for bit") {
    // Rows of 300 and 700 values: more than one 256-value tile, and a tail that is not a whole vector.
    Rng rng{59};
    for (const std::int64_t C : {std::int64_t(300), std::int64_t(700)}) {
        CAPTURE(C);
        const std::int64_t N = 37;
        Buffer<CPU> x(Shape{N, C}, DType::f32), w(Shape{C}, DType::f32), h(Shape{N, 2 * C}, DType::f32);
        auto fill = [&](Buffer<CPU>& b, double scale) {
            for (std::int64_t i = 0; i < b.tensor().numel(); ++i) b.tensor().data<float>()[i] = float((rng.uniform() * 2 - 1) * scale);
        };
        fill(x, 3), fill(w, 1), fill(h, 6);
        Buffer<CPU> y32(Shape{N, C}, DType::f32), y16(Shape{N, C}, DType::bf16), r32(Shape{N}, DType::f32), r16(Shape{N}, DType::f32);
        auto same_rounding = [&](const char* what) {
            std::vector<std::uint16_t> want(std::size_t(N * C));
            cpu::store_bf16(y32.tensor().data<float>(), want.data(), want.size());
            INFO(what);
            CHECK(std::memcmp(want.data(), y16.tensor().ptr, want.size() * 2) == 0);
        };
        rmsnorm_forward(CPU{}, y32.tensor(), r32.tensor(), x.tensor(), w.tensor(), 1e-5);
        rmsnorm_forward(CPU{}, y16.tensor(), r16.tensor(), x.tensor(), w.tensor(), 1e-5);
        same_rounding("rmsnorm");
        CHECK(std::memcmp(r32.tensor().ptr, r16.tensor().ptr, std::size_t(N) * 4) == 0);  // rstd: the same f32 values
        swiglu_forward(CPU{}, y32.tensor(), h.tensor());
        swiglu_forward(CPU{}, y16.tensor(), h.tensor());
        same_rounding("swiglu");
    }
}
