// cpu::gemm: every transpose combination, accumulate, odd sizes, one and several threads, against a
// plain double loop; f32 through both paths (our AVX-512 kernel where the CPU has it, and Eigen's),
// with padded leading dimensions and sizes that cross every blocking boundary.
#include <cstring>

#include "support/gradcheck.hpp"

using namespace minitrain;
using namespace mt_test;

namespace {
std::vector<double> reference(bool ta, bool tb, int M, int N, int K, const double* A, const double* B,
                              const std::vector<double>& C0, bool accumulate) {
    std::vector<double> C(std::size_t(M) * N);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            double s = accumulate ? C0[std::size_t(i) * N + j] : 0.0;
            for (int k = 0; k < K; ++k) s += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
            C[std::size_t(i) * N + j] = s;
        }
    return C;
}
}  // namespace

TEST_CASE("gemm matches a reference loop for every transpose combination") {
    Rng rng{41};
    for (int threads : {1, 2}) {
        CPU::set_threads(threads);
        for (auto [M, N, K] : {std::tuple{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {130, 70, 40}, {5, 300, 9}})
            for (int ta = 0; ta < 2; ++ta)
                for (int tb = 0; tb < 2; ++tb)
                    for (int acc = 0; acc < 2; ++acc) {
                        auto A = randn({M * K}, rng), B = randn({K * N}, rng), C = randn({M * N}, rng);
                        auto C0 = to_vector(C);
                        auto want = reference(ta, tb, M, N, K, A.data<double>(), B.data<double>(), C0, acc);
                        cpu::gemm<double>(ta, tb, M, N, K, A.data<double>(), ta ? M : K, B.data<double>(),
                                          tb ? K : N, C.data<double>(), N, acc);
                        check_close(to_vector(C), want, 1e-12, 1e-12,
                                    "gemm M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                                        std::to_string(K) + " ta=" + std::to_string(ta) + " tb=" +
                                        std::to_string(tb) + " acc=" + std::to_string(acc) + " threads=" +
                                        std::to_string(threads));
                    }
    }
    CPU::set_threads(2);
}

TEST_CASE("gemm writes only its rows when C is a block of a larger matrix (ldc > N)") {
    Rng rng{42};
    const int M = 9, N = 4, K = 6, ldc = 7;
    auto A = randn({M * K}, rng), B = randn({K * N}, rng);
    std::vector<double> C(std::size_t(M) * ldc, 42.0);
    cpu::gemm<double>(false, false, M, N, K, A.data<double>(), K, B.data<double>(), N, C.data(), ldc, false);
    std::vector<double> zero(std::size_t(M) * N, 0.0);
    auto want = reference(false, false, M, N, K, A.data<double>(), B.data<double>(), zero, false);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < ldc; ++j) {
            if (j < N)
                CHECK(C[std::size_t(i) * ldc + j] == doctest::Approx(want[std::size_t(i) * N + j]).epsilon(1e-12));
            else
                CHECK(C[std::size_t(i) * ldc + j] == 42.0);  // padding columns untouched
        }
}

namespace {
using GemmF32 = void (*)(bool, bool, std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t,
                         const float*, std::int64_t, float*, std::int64_t, bool);

/// Runs f on f32 operands whose rows are padded (lda = cols + 3 and so on) and compares with a double
/// loop, to a tolerance scaled by sum |a||b| so that long sums are judged fairly.
void check_f32_gemm(GemmF32 f, const char* path) {
    Rng rng{43};
    // 397 rows cross MC = 384 and the 12-row panels; 530 columns cross NC = 512 on one thread and
    // the 32-column panels; depths 300 and 520 cross KC = 256 once and twice.
    for (int threads : {1, 2}) {
        CPU::set_threads(threads);
        for (auto [M, N, K] : {std::tuple{1, 1, 1}, {13, 33, 17}, {397, 45, 300}, {20, 530, 270}, {40, 24, 520}, {29, 40, 1024}})
            for (int ta = 0; ta < 2; ++ta)
                for (int tb = 0; tb < 2; ++tb)
                    for (int acc = 0; acc < 2; ++acc) {
                        // Padded rows; and once rows exactly 1024 floats apart (A is then packed, see gemm_avx512.hpp).
                        const int lda = K == 1024 && !ta ? 1024 : (ta ? M : K) + 3;
                        const int ldb = (tb ? K : N) + 5, ldc = N + 7;
                        std::vector<float> A(std::size_t((ta ? K : M) * lda)), B(std::size_t((tb ? N : K) * ldb)),
                            C(std::size_t(M * ldc));
                        for (auto& x : A) x = float(rng.normal());
                        for (auto& x : B) x = float(rng.normal());
                        for (auto& x : C) x = float(rng.normal());
                        const std::vector<float> C0 = C;
                        f(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, acc);
                        int bad = 0;
                        for (int i = 0; i < M; ++i)
                            for (int j = 0; j < ldc; ++j) {
                                const std::size_t at = std::size_t(i) * ldc + j;
                                if (j >= N) {  // padding stays untouched
                                    bad += C[at] != C0[at];
                                    continue;
                                }
                                double want = acc ? C0[at] : 0.0, scale = acc ? std::fabs(C0[at]) : 0.0;
                                for (int k = 0; k < K; ++k) {
                                    double a = ta ? A[std::size_t(k) * lda + i] : A[std::size_t(i) * lda + k];
                                    double b = tb ? B[std::size_t(j) * ldb + k] : B[std::size_t(k) * ldb + j];
                                    want += a * b;
                                    scale += std::fabs(a * b);
                                }
                                bad += !(std::fabs(C[at] - want) <= 1e-6 * scale + 1e-6);
                            }
                        CHECK_MESSAGE(bad == 0, path << " f32 gemm M=" << M << " N=" << N << " K=" << K << " ta="
                                                     << ta << " tb=" << tb << " acc=" << acc << " threads=" << threads
                                                     << ": " << bad << " wrong elements");
                    }
    }
    CPU::set_threads(2);
}
}  // namespace

TEST_CASE("f32 gemm: padded strides, every transpose, sizes across the blocking boundaries") {
    check_f32_gemm(&cpu::gemm<float>, "cpu::gemm");
    check_f32_gemm(&cpu::detail::eigen_gemm<float>, "Eigen path");
}

TEST_CASE("f32 gemm gives the same bits on one thread and on two") {
    Rng rng{44};
    const int M = 300, N = 200, K = 700;
    std::vector<float> A(std::size_t(M) * K), B(std::size_t(K) * N), C1(std::size_t(M) * N), C2(C1.size());
    for (auto& x : A) x = float(rng.normal());
    for (auto& x : B) x = float(rng.normal());
    CPU::set_threads(1);
    cpu::gemm<float>(false, true, M, N, K, A.data(), K, B.data(), K, C1.data(), N, false);
    CPU::set_threads(2);
    cpu::gemm<float>(false, true, M, N, K, A.data(), K, B.data(), K, C2.data(), N, false);
    CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
}
