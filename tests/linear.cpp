// Linear layer and matrix product: gradients against finite differences, forward against a plain loop.
#include "support/gradcheck.hpp"

using namespace minitrain;
using namespace mt_test;

TEST_CASE("linear: forward equals the definition y = x w^T") {
    Rng rng{7};
    auto x = randn({3, 5, 7}, rng), w = randn({4, 7}, rng);
    Graph<CPU> g;
    Var& y = linear(g, g.leaf(x), g.leaf(w));
    REQUIRE(y.data.shape == Shape{3, 5, 4});
    auto Y = to_vector(y.data);
    for (int n = 0; n < 15; ++n)
        for (int m = 0; m < 4; ++m) {
            double want = 0;
            for (int k = 0; k < 7; ++k) want += x.data<double>()[n * 7 + k] * w.data<double>()[m * 7 + k];
            CHECK(Y[n * 4 + m] == doctest::Approx(want).epsilon(1e-12));
        }
}

TEST_CASE("linear: gradients of input and weight, odd sizes") {
    Rng rng{11};
    for (auto [N, K, M] : {std::tuple{1, 1, 1}, {5, 3, 7}, {13, 17, 9}}) {
        auto x = randn({N, K}, rng), w = randn({M, K}, rng);
        gradcheck({{&x}, {&w}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return linear(g, *v[0], *v[1]); });
    }
}

TEST_CASE("linear: a frozen weight gets no gradient, the input still does") {
    Rng rng{12};
    auto x = randn({2, 3, 6}, rng), w = randn({5, 6}, rng);
    gradcheck({{&x, true}, {&w, false}},
              [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return linear(g, *v[0], *v[1]); });
}

TEST_CASE("matmul: gradients") {
    Rng rng{13};
    auto a = randn({6, 5}, rng), b = randn({5, 3}, rng);
    gradcheck({{&a}, {&b}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return matmul(g, *v[0], *v[1]); });
}

TEST_CASE("add: gradients reach both summands") {
    Rng rng{14};
    auto a = randn({4, 9}, rng), b = randn({4, 9}, rng);
    gradcheck({{&a}, {&b}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return add(g, *v[0], *v[1]); });
}

TEST_CASE("reshape: gradient passes through with the input's shape") {
    Rng rng{15};
    auto x = randn({4, 6}, rng), w = randn({3, 8}, rng);
    gradcheck({{&x}, {&w}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return linear(g, reshape(g, *v[0], Shape{3, 8}), *v[1]);
    });
}

TEST_CASE("the same Var twice in one op: add(x, x) and linear(x, x) get both gradient contributions") {
    Rng rng{16};
    auto x = randn({4, 4}, rng);
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return add(g, *v[0], *v[0]); });
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return linear(g, *v[0], *v[0]); });
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return matmul(g, *v[0], *v[0]); });
}
