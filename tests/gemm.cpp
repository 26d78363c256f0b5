// cpu::gemm: every transpose combination, accumulate, odd sizes, one and several threads, against a
// plain double loop; and no heap traffic once the workspace has grown.
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
