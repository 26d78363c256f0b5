// Softmax cross-entropy with ignore_index: loss and per-row losses against a plain double loop, gradient
// against finite differences, the all-ignored batch, bad targets, huge logits, thread-count independence.
#include "support/gradcheck.hpp"

#include <tuple>

using namespace minitrain;
using namespace mt_test;

namespace {

/// Per-row losses in double, the direct way (max-shifted so that large logits stay finite); 0 if ignored.
std::vector<double> reference_rows(const Tensor& logits, const Tensor& targets) {
    const std::int64_t N = logits.shape.rows(), V = logits.shape.cols();
    auto x = to_vector(logits);
    std::vector<double> rows(std::size_t(N), 0.0);
    for (std::int64_t n = 0; n < N; ++n) {
        const int t = targets.data<std::int32_t>()[n];
        if (t == -100) continue;
        double m = -INFINITY, z = 0;
        for (std::int64_t j = 0; j < V; ++j) m = std::max(m, x[std::size_t(n * V + j)]);
        for (std::int64_t j = 0; j < V; ++j) z += std::exp(x[std::size_t(n * V + j)] - m);
        rows[std::size_t(n)] = m + std::log(z) - x[std::size_t(n * V + t)];
    }
    return rows;
}

/// Mean over the non-ignored rows.
double reference_loss(const Tensor& logits, const Tensor& targets) {
    auto rows = reference_rows(logits, targets);
    double sum = 0;
    int count = 0;
    for (std::size_t n = 0; n < rows.size(); ++n)
        if (targets.data<std::int32_t>()[n] != -100) sum += rows[n], ++count;
    return sum / count;
}

/// Random targets in [0, V), with every `every`-th row (from `first`) set to -100.
Buffer<CPU> targets_with_ignored(std::int64_t N, int V, Rng& rng, int first, int every) {
    Buffer<CPU> t = randint({N}, rng, 0, V);
    for (std::int64_t n = first; n < N; n += every) t.data<std::int32_t>()[n] = -100;
    return t;
}

}  // namespace

TEST_CASE("cross_entropy: loss and per-row losses equal the definition, ignored rows excluded") {
    Rng rng{31};
    for (auto [N, V] : {std::pair{1, 1}, {37, 101}, {5, 6400}}) {
        INFO("N=" << N << " V=" << V);
        auto x = randn({N, V}, rng, 3.0);
        auto t = targets_with_ignored(N, V, rng, 2, 3);
        for (DType dt : {DType::f64, DType::f32}) {
            INFO(dtype_name(dt));
            const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
            auto xd = converted(x, dt);
            Graph<CPU> g;
            Var& logits = g.leaf(xd, true);
            Var& loss = cross_entropy(g, logits, t);
            REQUIRE(loss.data.shape == Shape{1});
            CHECK(to_vector(loss.data)[0] == doctest::Approx(reference_loss(x, t)).epsilon(tol));
            Var& rows = cross_entropy_rows(g, logits, t);
            REQUIRE(rows.data.shape == Shape{N});
            CHECK_FALSE(rows.requires_grad);
            check_close(to_vector(rows.data), reference_rows(x, t), tol, tol, "per-row losses");
        }
    }
}

TEST_CASE("cross_entropy: (B, T, V) logits with (B, T) targets") {
    Rng rng{32};
    auto x = randn({2, 3, 11}, rng);
    auto t = targets_with_ignored(6, 11, rng, 4, 100);
    Buffer<CPU> t2({2, 3}, DType::i32);
    std::copy_n(t.data<std::int32_t>(), 6, t2.data<std::int32_t>());
    Graph<CPU> g;
    CHECK(to_vector(cross_entropy(g, g.leaf(x), t2).data)[0] ==
          doctest::Approx(reference_loss(x.tensor().view({6, 11}), t)).epsilon(1e-12));
}

TEST_CASE("cross_entropy: gradient of the logits, with ignored rows, written and accumulated") {
    Rng rng{33};
    for (auto [N, V] : {std::pair{1, 3}, {7, 5}, {13, 29}}) {
        INFO("N=" << N << " V=" << V);
        auto x = randn({N, V}, rng, 2.0);
        auto t = targets_with_ignored(N, V, rng, 1, 4);
        gradcheck({{&x}}, [&t](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return cross_entropy(g, *v[0], t); },
                  {.max_probes = 400});
        // The logits feed two losses: the second backward adds to the first one's gradient.
        auto t2 = targets_with_ignored(N, V, rng, 0, 5);
        gradcheck({{&x}}, [&t, &t2](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            return add(g, cross_entropy(g, *v[0], t), cross_entropy(g, *v[0], t2));
        });
    }
}

TEST_CASE("cross_entropy: every row ignored gives loss 0 and zero gradient (not NaN)") {
    Rng rng{34};
    auto x = randn({4, 9}, rng);
    Buffer<CPU> t({4}, DType::i32);
    std::fill_n(t.data<std::int32_t>(), 4, -100);
    Graph<CPU> g;
    Var& logits = g.leaf(x, true);
    Var& loss = cross_entropy(g, logits, t);
    CHECK(to_vector(loss.data)[0] == 0.0);
    g.backward(loss);
    REQUIRE(logits.grad.defined());
    for (double d : to_vector(logits.grad)) REQUIRE(d == 0.0);
    for (double r : to_vector(cross_entropy_rows(g, logits, t).data)) CHECK(r == 0.0);
}

TEST_CASE("cross_entropy: a target outside [0, V) names the row, the value and V") {
    Rng rng{35};
    auto x = randn({5, 7}, rng);
    auto t = randint({5}, rng, 0, 7);
    Graph<CPU> g;
    Var& logits = g.leaf(x, true);
    t.data<std::int32_t>()[3] = 7;
    CHECK_THROWS_WITH_AS(cross_entropy(g, logits, t),
                         "cross_entropy: target of row 3 is 7, expected a class in [0, 7) or the ignore index -100",
                         Error);
    t.data<std::int32_t>()[3] = -1;
    CHECK_THROWS_WITH_AS(cross_entropy_rows(g, logits, t),
                         "cross_entropy: target of row 3 is -1, expected a class in [0, 7) or the ignore index -100",
                         Error);
    t.data<std::int32_t>()[3] = -100;
    CHECK_NOTHROW(cross_entropy(g, logits, t));
    Buffer<CPU> short_t({4}, DType::i32);
    CHECK_THROWS_AS(cross_entropy(g, logits, short_t), Error);
}

TEST_CASE("cross_entropy: logits around 1e3 neither overflow nor lose the answer") {
    Rng rng{36};
    const int N = 6, V = 50;
    for (DType dt : {DType::f64, DType::f32}) {
        INFO(dtype_name(dt));
        auto x = randn({N, V}, rng, 1.0, dt);
        for (int i = 0; i < N * V; ++i)
            dispatch_floating(dt, "shift", [&]<class T>() { x.data<T>()[i] += T(1000 + (i % V) * 20); });
        auto t = randint({N}, rng, 0, V);
        Graph<CPU> g;
        Var& logits = g.leaf(x, true);
        Var& loss = cross_entropy(g, logits, t);
        const double want = reference_loss(x, t);
        CHECK(std::isfinite(want));
        CHECK(to_vector(loss.data)[0] == doctest::Approx(want).epsilon(dt == DType::f64 ? 1e-12 : 1e-5));
        g.backward(loss);
        auto grad = to_vector(logits.grad);
        CHECK(all_finite(grad));
        // Each non-ignored row of the gradient sums to zero (softmax sums to one, minus the one-hot).
        for (int n = 0; n < N; ++n) {
            double s = 0;
            for (int j = 0; j < V; ++j) s += grad[std::size_t(n * V + j)];
            CHECK(std::abs(s) < 1e-6);
        }
    }
}

TEST_CASE("cross_entropy: results are identical on 1 and 2 threads") {
    Rng rng{37};
    auto x = randn({300, 257}, rng, 1.0, DType::f32);
    auto t = targets_with_ignored(300, 257, rng, 5, 7);
    auto run = [&](int threads) {
        CPU::set_threads(threads);
        Graph<CPU> g;
        Var& logits = g.leaf(x, true);
        Var& loss = cross_entropy(g, logits, t);
        std::vector<std::vector<double>> r{to_vector(loss.data), to_vector(cross_entropy_rows(g, logits, t).data)};
        g.backward(loss, 0.25);
        r.push_back(to_vector(logits.grad));
        return r;
    };
    const int before = CPU::threads();
    auto one = run(1), two = run(2);
    CPU::set_threads(before);
    for (std::size_t i = 0; i < one.size(); ++i) {
        INFO("result " << i << " (loss, rows, dlogits)");
        CHECK(one[i] == two[i]);
    }
}
