// Links unit_a.cpp and unit_b.cpp into one program (see units.hpp) and checks both against plain loops.
#include <doctest/doctest.h>

#include <minitrain/core/random.hpp>

#include "units.hpp"

using two_units::forward_a;
using two_units::forward_b;
using two_units::gradients_b;

TEST_CASE("two translation units: same templates, one program, same numbers") {
    const int N = 5, K = 7, H = 4, M = 3;
    minitrain::Rng rng{3};
    auto randv = [&](int n) {
        std::vector<float> v(n);
        for (auto& e : v) e = float(rng.normal());
        return v;
    };
    auto x = randv(N * K), w1 = randv(H * K), w2 = randv(M * H);

    // Reference: h = 2 x w1^T, y = h w2^T; d(sum y)/dw2[m][j] = sum_n h[n][j]; d/dw1[j][k] = 2 sum_n,m w2[m][j] x[n][k].
    std::vector<double> h(N * H, 0.0), y(N * M, 0.0), dw1(H * K, 0.0), dw2(M * H, 0.0);
    for (int n = 0; n < N; ++n)
        for (int j = 0; j < H; ++j)
            for (int k = 0; k < K; ++k) h[n * H + j] += 2.0 * x[n * K + k] * w1[j * K + k];
    for (int n = 0; n < N; ++n)
        for (int m = 0; m < M; ++m)
            for (int j = 0; j < H; ++j) y[n * M + m] += h[n * H + j] * w2[m * H + j];
    for (int m = 0; m < M; ++m)
        for (int j = 0; j < H; ++j)
            for (int n = 0; n < N; ++n) dw2[m * H + j] += h[n * H + j];
    for (int j = 0; j < H; ++j)
        for (int k = 0; k < K; ++k)
            for (int n = 0; n < N; ++n)
                for (int m = 0; m < M; ++m) dw1[j * K + k] += 2.0 * w2[m * H + j] * x[n * K + k];

    auto ya = forward_a(x, w1, w2, N, K, H, M);
    auto yb = forward_b(x, w1, w2, N, K, H, M);
    REQUIRE(ya.size() == y.size());
    REQUIRE(yb.size() == y.size());
    for (std::size_t i = 0; i < y.size(); ++i) {
        CHECK(ya[i] == doctest::Approx(y[i]).epsilon(1e-4));
        CHECK(ya[i] == yb[i]);
    }

    auto grads = gradients_b(x, w1, w2, N, K, H, M);  // slab order: w1 then w2
    REQUIRE(grads.size() == dw1.size() + dw2.size());
    for (std::size_t i = 0; i < dw1.size(); ++i) CHECK(grads[i] == doctest::Approx(dw1[i]).epsilon(1e-4));
    for (std::size_t i = 0; i < dw2.size(); ++i) CHECK(grads[dw1.size() + i] == doctest::Approx(dw2[i]).epsilon(1e-4));
}
