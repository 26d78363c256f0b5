// Embedding, RMSNorm, RoPE, SwiGLU and dropout: each forward against a plain reference loop, each backward
// against finite differences (gradcheck), plus the properties each op promises (error messages, frozen
// inputs, determinism across threads, in-place RoPE, dropout statistics). One file: one executable to build.
#include "support/gradcheck.hpp"

#include <cstring>

using namespace minitrain;
using namespace mt_test;

namespace {

/// Bitwise copy of a buffer.
Buffer<CPU> clone(const Tensor& t) {
    Buffer<CPU> b(t.shape, t.dtype);
    std::memcpy(b.tensor().ptr, t.ptr, t.bytes());
    return b;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
    return a.bytes() == b.bytes() && std::memcmp(a.ptr, b.ptr, a.bytes()) == 0;
}

/// Runs body with the given OpenMP thread count, then restores the previous one.
template <class F>
void with_threads(int n, F&& body) {
    int prev = CPU::threads();
    CPU::set_threads(n);
    body();
    CPU::set_threads(prev);
}

/// A backward kernel given accumulate = true must add exactly what it writes with accumulate = false.
template <class F>
void check_accumulates(Shape s, F&& backward_into) {
    Rng rng{4242};
    Buffer<CPU> fresh(s, DType::f64);
    backward_into(GradOut{fresh.tensor(), false});
    auto base = randn(s, rng);
    auto acc = clone(base);
    backward_into(GradOut{acc.tensor(), true});
    auto want = to_vector(base);
    auto f = to_vector(fresh);
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += f[i];
    check_close(to_vector(acc), want, 1e-13, 1e-13, "accumulate = true adds to the existing gradient");
}

}  // namespace

// ---- embedding -----------------------------------------------------------------------------------------

TEST_CASE("embedding: forward picks table rows, output shape is ids shape + C") {
    Rng rng{1};
    const int V = 11, C = 7;
    auto table = randn({V, C}, rng);
    auto ids = randint({3, 5}, rng, 0, V);
    Graph<CPU> g;
    Var& y = embedding(g, ids, g.leaf(table));
    REQUIRE(y.data.shape == Shape{3, 5, C});
    auto Y = to_vector(y.data);
    for (int n = 0; n < 15; ++n)
        for (int c = 0; c < C; ++c)
            CHECK(Y[n * C + c] == table.data<double>()[ids.data<std::int32_t>()[n] * C + c]);
}

TEST_CASE("embedding: an id outside [0, V) throws, naming position, value and V") {
    Rng rng{2};
    const int V = 9;
    auto table = randn({V, 4}, rng);
    auto ids = randint({2, 6}, rng, 0, V);
    Graph<CPU> g;
    Var& t = g.leaf(table, true);
    ids.data<std::int32_t>()[7] = V;
    CHECK_THROWS_WITH_AS(embedding(g, ids, t), doctest::Contains("token id 9 at position 7"), Error);
    CHECK_THROWS_WITH_AS(embedding(g, ids, t), doctest::Contains("[0, 9)"), Error);
    ids.data<std::int32_t>()[7] = 0;
    ids.data<std::int32_t>()[0] = -3;
    CHECK_THROWS_WITH_AS(embedding(g, ids, t), doctest::Contains("token id -3 at position 0"), Error);
    // The backward kernel checks too: a bad id must not write outside the table.
    Buffer<CPU> dtab({V, 4}, DType::f64), dy({12, 4}, DType::f64);
    CHECK_THROWS_AS(embedding_backward(CPU{}, GradOut{dtab.tensor(), false}, ids, dy), Error);
    Buffer<CPU> wrong_type({12}, DType::f64);
    CHECK_THROWS_WITH_AS(embedding(g, wrong_type, t), doctest::Contains("i32"), Error);
}

TEST_CASE("embedding: gradient of the table, repeated ids, odd shapes") {
    Rng rng{3};
    for (auto [V, C, B, T] : {std::tuple{1, 1, 1, 1}, {4, 5, 3, 7}, {13, 3, 1, 17}}) {
        auto table = randn({V, C}, rng);
        auto ids = randint({B, T}, rng, 0, V);  // V << B*T: most rows are hit several times
        Tensor idt = ids.tensor();
        gradcheck({{&table}}, [idt](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return embedding(g, idt, *v[0]); });
    }
    auto table = randn({6, 9}, rng);
    auto flat = randint({23}, rng, 0, 6);
    Tensor idt = flat.tensor();
    gradcheck({{&table}}, [idt](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return embedding(g, idt, *v[0]); });
}

TEST_CASE("embedding: a frozen table gets no gradient and records nothing") {
    Rng rng{4};
    auto table = randn({7, 5}, rng), w = randn({5}, rng);
    auto ids = randint({2, 3}, rng, 0, 7);
    Tensor idt = ids.tensor();
    {
        Graph<CPU> g;
        Var& y = embedding(g, idt, g.leaf(table, false));
        CHECK_FALSE(y.requires_grad);
        CHECK(g.tape_size() == 0);
    }
    // Frozen table feeding a trainable norm: the gain gets its gradient, the table none.
    gradcheck({{&table, false}, {&w, true}}, [idt](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return rmsnorm(g, embedding(g, idt, *v[0]), *v[1]);
    });
}

TEST_CASE("embedding: backward is the serial scatter-add, bitwise, for any thread count") {
    Rng rng{5};
    const int V = 50, C = 37, N = 3001;  // N * C above the parallel threshold; C not a multiple of a lane
    auto ids = randint({N}, rng, 0, V);
    auto dy = randn({N, C}, rng);
    std::vector<double> want(std::size_t(V) * C, 0.0);
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) want[std::size_t(ids.data<std::int32_t>()[n]) * C + c] += dy.data<double>()[n * C + c];
    for (int threads : {1, 2, 3, 5}) {
        with_threads(threads, [&] {
            Buffer<CPU> dt({V, C}, DType::f64);
            embedding_backward(CPU{}, GradOut{dt.tensor(), false}, ids, dy);
            INFO("threads = " << threads);
            CHECK(to_vector(dt) == want);
        });
    }
    check_accumulates({V, C}, [&](GradOut d) { embedding_backward(CPU{}, d, ids, dy); });
}

// ---- rmsnorm -------------------------------------------------------------------------------------------

TEST_CASE("rmsnorm: forward equals x / sqrt(mean(x^2) + eps) * w") {
    Rng rng{10};
    for (double eps : {1e-5, 0.3}) {
        const int N = 15, C = 7;
        auto x = randn({3, 5, C}, rng), w = randn({C}, rng);
        Graph<CPU> g;
        Var& y = rmsnorm(g, g.leaf(x, true), g.leaf(w), eps);
        REQUIRE(y.data.shape == x.tensor().shape);
        std::vector<double> want;
        for (int n = 0; n < N; ++n) {
            double ss = 0;
            for (int c = 0; c < C; ++c) ss += x.data<double>()[n * C + c] * x.data<double>()[n * C + c];
            double r = 1.0 / std::sqrt(ss / C + eps);
            for (int c = 0; c < C; ++c) want.push_back(x.data<double>()[n * C + c] * r * w.data<double>()[c]);
        }
        check_close(to_vector(y.data), want, 1e-13, 1e-15, "rmsnorm forward");
    }
}

TEST_CASE("rmsnorm: gradients of input and gain, odd shapes") {
    Rng rng{11};
    auto fwd = [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return rmsnorm(g, *v[0], *v[1]); };
    for (Shape s : {Shape{1, 2}, Shape{5, 3}, Shape{2, 3, 17}, Shape{1, 2, 3, 5}}) {
        auto x = randn(s, rng), w = randn({s.cols()}, rng);
        gradcheck({{&x}, {&w}}, fwd);
    }
    // C = 1: dx = dy w rstd eps / (x^2 + eps) is a cancellation no f32 evaluation survives; f64 only.
    auto x1 = randn({3, 1}, rng), w1 = randn({1}, rng);
    gradcheck({{&x1}, {&w1}}, fwd, {.check_f32 = false});
    // A large eps makes the eps term matter in the gradient.
    auto x = randn({4, 6}, rng, 0.1), w = randn({6}, rng);
    gradcheck({{&x}, {&w}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return rmsnorm(g, *v[0], *v[1], 0.05); });
}

TEST_CASE("rmsnorm: a frozen gain or a frozen input gets no gradient") {
    Rng rng{12};
    auto x = randn({3, 4, 9}, rng), w = randn({9}, rng);
    auto fwd = [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return rmsnorm(g, *v[0], *v[1]); };
    gradcheck({{&x, true}, {&w, false}}, fwd);
    gradcheck({{&x, false}, {&w, true}}, fwd);
}

TEST_CASE("rmsnorm: no-grad forward records nothing and matches the recorded one") {
    Rng rng{13};
    auto x = randn({6, 11}, rng), w = randn({11}, rng);
    Graph<CPU> g;
    Var& a = rmsnorm(g, g.leaf(x, true), g.leaf(w, true));
    std::size_t recorded = g.tape_size();
    NoGrad<CPU> ng(g);
    Var& b = rmsnorm(g, g.leaf(x, true), g.leaf(w, true));
    CHECK(recorded == 1);
    CHECK(g.tape_size() == 1);
    CHECK_FALSE(b.requires_grad);
    CHECK(bitwise_equal(a.data, b.data));
}

TEST_CASE("rmsnorm: large backward is deterministic for a thread count and matches a reference") {
    Rng rng{14};
    const int N = 2001, C = 129;  // above the parallel threshold: several row chunks
    auto x = randn({N, C}, rng), w = randn({C}, rng), dy = randn({N, C}, rng);
    Buffer<CPU> rstd({N}, DType::f64), y({N, C}, DType::f64);
    rmsnorm_forward(CPU{}, y, rstd, x, w, 1e-5);
    // Reference in the plain formula.
    std::vector<double> dx_want(std::size_t(N) * C), dw_want(C, 0.0);
    for (int n = 0; n < N; ++n) {
        const double* xr = x.data<double>() + n * C;
        const double* gr = dy.data<double>() + n * C;
        double ss = 0, dot = 0;
        for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
        double r = 1.0 / std::sqrt(ss / C + 1e-5);
        for (int c = 0; c < C; ++c) dot += gr[c] * w.data<double>()[c] * xr[c] * r;
        for (int c = 0; c < C; ++c) {
            dx_want[std::size_t(n) * C + c] = r * (gr[c] * w.data<double>()[c] - xr[c] * r * dot / C);
            dw_want[c] += gr[c] * xr[c] * r;
        }
    }
    for (int threads : {1, 2, 3}) {
        with_threads(threads, [&] {
            INFO("threads = " << threads);
            Shape ws = rmsnorm_backward_workspace(CPU{}, x.tensor().shape);
            CHECK(ws == Shape{threads, C});
            Buffer<CPU> work(ws, DType::f64), dx1({N, C}, DType::f64), dw1({C}, DType::f64), dx2({N, C}, DType::f64),
                dw2({C}, DType::f64);
            rmsnorm_backward(CPU{}, {dx1.tensor(), false}, {dw1.tensor(), false}, x, w, rstd, dy, work);
            rmsnorm_backward(CPU{}, {dx2.tensor(), false}, {dw2.tensor(), false}, x, w, rstd, dy, work);
            CHECK(bitwise_equal(dw1, dw2));
            CHECK(bitwise_equal(dx1, dx2));
            check_close(to_vector(dx1), dx_want, 1e-10, 1e-12, "rmsnorm dx vs reference");
            check_close(to_vector(dw1), dw_want, 1e-10, 1e-12, "rmsnorm dw vs reference");
            // dx alone needs no workspace.
            Buffer<CPU> dx3({N, C}, DType::f64);
            rmsnorm_backward(CPU{}, {dx3.tensor(), false}, {}, x, w, rstd, dy, Tensor{});
            CHECK(bitwise_equal(dx1, dx3));
            check_accumulates({C}, [&](GradOut d) { rmsnorm_backward(CPU{}, {}, d, x, w, rstd, dy, work); });
            check_accumulates({N, C}, [&](GradOut d) { rmsnorm_backward(CPU{}, d, {}, x, w, rstd, dy, Tensor{}); });
        });
    }
    Buffer<CPU> dw({C}, DType::f64);
    CHECK_THROWS_WITH_AS(rmsnorm_backward(CPU{}, {}, {dw.tensor(), true}, x, w, rstd, dy, Tensor{}),
                         doctest::Contains("workspace"), Error);
}

// ---- rope ----------------------------------------------------------------------------------------------

namespace {
/// Hugging Face's formulation, computed from scratch in double: inv_freq = 1 / theta^(arange(0, D, 2) / D),
/// emb = cat(freqs, freqs), y = x * cos(emb) + rotate_half(x) * sin(emb), rotate_half(x) = cat(-x2, x1).
std::vector<double> rope_reference(const Tensor& x, double theta, int pos0) {
    const int B = int(x.shape[0]), T = int(x.shape[1]), H = int(x.shape[2]), D = int(x.shape[3]), half = D / 2;
    auto X = to_vector(x);
    std::vector<double> y(X.size());
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t)
            for (int h = 0; h < H; ++h) {
                const double* xr = X.data() + ((std::size_t(b) * T + t) * H + h) * D;
                double* yr = y.data() + ((std::size_t(b) * T + t) * H + h) * D;
                for (int d = 0; d < D; ++d) {
                    double inv_freq = 1.0 / std::pow(theta, double(2 * (d % half)) / D);
                    double emb = double(pos0 + t) * inv_freq;
                    double rot = d < half ? -xr[d + half] : xr[d - half];
                    yr[d] = xr[d] * std::cos(emb) + rot * std::sin(emb);
                }
            }
    return y;
}

struct RopeTables {
    Buffer<CPU> cos, sin;
    RopeTables(int Tmax, int D, double theta, DType dtype) : cos({Tmax, D / 2}, dtype), sin({Tmax, D / 2}, dtype) {
        rope_table(CPU{}, cos, sin, theta);
    }
};
}  // namespace

TEST_CASE("rope: table equals theta^(-2i/D) angles") {
    for (double theta : {1e4, 1e6})
        for (int D : {2, 8, 64}) {
            const int Tmax = 41;
            RopeTables t64(Tmax, D, theta, DType::f64), t32(Tmax, D, theta, DType::f32);
            for (int p = 0; p < Tmax; ++p)
                for (int i = 0; i < D / 2; ++i) {
                    double a = p * std::exp(-double(2 * i) / D * std::log(theta));  // the definition, another way
                    CHECK(t64.cos.data<double>()[p * D / 2 + i] == doctest::Approx(std::cos(a)).epsilon(1e-12));
                    CHECK(t64.sin.data<double>()[p * D / 2 + i] == doctest::Approx(std::sin(a)).epsilon(1e-12));
                    // f32 tables: the double value rounded once.
                    CHECK(t32.cos.data<float>()[p * D / 2 + i] == float(t64.cos.data<double>()[p * D / 2 + i]));
                    CHECK(t32.sin.data<float>()[p * D / 2 + i] == float(t64.sin.data<double>()[p * D / 2 + i]));
                }
        }
}

TEST_CASE("rope: forward equals the Hugging Face rotate_half formula, odd T and H, pos0 > 0, in place") {
    Rng rng{20};
    for (double theta : {1e4, 1e6})
        for (int D : {2, 8, 64})
            for (int pos0 : {0, 6}) {
                const int B = 2, T = 5, H = 3, Tmax = pos0 + T + 2;
                CAPTURE(theta);
                CAPTURE(D);
                CAPTURE(pos0);
                auto x = randn({B, T, H, D}, rng);
                auto want = rope_reference(x, theta, pos0);
                RopeTables tab(Tmax, D, theta, DType::f64);
                Buffer<CPU> y(x.tensor().shape, DType::f64);
                rope_forward(CPU{}, y, x, tab.cos, tab.sin, pos0);
                check_close(to_vector(y), want, 1e-12, 1e-14, "rope f64 vs reference");
                // In place (y aliases x).
                auto inplace = clone(x);
                rope_forward(CPU{}, inplace, inplace, tab.cos, tab.sin, pos0);
                CHECK(bitwise_equal(inplace, y));
                // f32.
                RopeTables t32(Tmax, D, theta, DType::f32);
                auto x32 = converted(x, DType::f32);
                Buffer<CPU> y32(x.tensor().shape, DType::f32);
                rope_forward(CPU{}, y32, x32, t32.cos, t32.sin, pos0);
                check_close(to_vector(y32), want, 1e-5, 1e-6, "rope f32 vs reference");
                // The backward is the inverse rotation.
                Buffer<CPU> back(x.tensor().shape, DType::f64);
                rope_backward(CPU{}, {back.tensor(), false}, y, tab.cos, tab.sin, pos0);
                check_close(to_vector(back), to_vector(x), 1e-12, 1e-14, "rope backward inverts forward");
            }
}

TEST_CASE("rope: large in-place forward across threads matches the reference") {
    Rng rng{21};
    const int B = 3, T = 37, H = 5, D = 64, pos0 = 11;  // above the parallel threshold
    auto x = randn({B, T, H, D}, rng);
    auto want = rope_reference(x, 1e6, pos0);
    RopeTables tab(64, D, 1e6, DType::f64);
    rope_forward(CPU{}, x, x, tab.cos, tab.sin, pos0);
    check_close(to_vector(x), want, 1e-12, 1e-14, "rope in place, parallel");
    auto dy = randn({B, T, H, D}, rng);
    check_accumulates({B, T, H, D}, [&](GradOut d) { rope_backward(CPU{}, d, dy, tab.cos, tab.sin, pos0); });
}

TEST_CASE("rope: gradients") {
    Rng rng{22};
    for (auto [B, T, H, D, pos0] : {std::tuple{1, 1, 1, 2, 0}, {2, 5, 3, 8, 3}, {1, 3, 1, 64, 17}}) {
        auto x = randn({B, T, H, D}, rng);
        const int Tmax = pos0 + T;
        gradcheck({{&x}}, [=](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            Tensor c = g.scratch({Tmax, D / 2}, v[0]->data.dtype), s = g.scratch({Tmax, D / 2}, v[0]->data.dtype);
            rope_table(CPU{}, c, s, 1e6);
            return rope(g, *v[0], c, s, pos0);
        });
    }
}

TEST_CASE("rope: bad positions, head dim and tables are errors") {
    Rng rng{23};
    auto x = randn({1, 4, 2, 8}, rng);
    RopeTables tab(6, 8, 1e6, DType::f64), small(6, 4, 1e6, DType::f64), t32(6, 8, 1e6, DType::f32);
    Buffer<CPU> y(x.tensor().shape, DType::f64);
    CHECK_NOTHROW(rope_forward(CPU{}, y, x, tab.cos, tab.sin, 2));
    CHECK_THROWS_WITH_AS(rope_forward(CPU{}, y, x, tab.cos, tab.sin, 3), doctest::Contains("[3, 7)"), Error);
    CHECK_THROWS_WITH_AS(rope_forward(CPU{}, y, x, tab.cos, tab.sin, -1), doctest::Contains("outside"), Error);
    CHECK_THROWS_AS(rope_forward(CPU{}, y, x, small.cos, small.sin, 0), Error);
    CHECK_THROWS_AS(rope_forward(CPU{}, y, x, t32.cos, t32.sin, 0), Error);
    auto odd = randn({1, 4, 2, 7}, rng);
    Buffer<CPU> yo(odd.tensor().shape, DType::f64);
    CHECK_THROWS_WITH_AS(rope_forward(CPU{}, yo, odd, tab.cos, tab.sin, 0), doctest::Contains("even"), Error);
}

// ---- swiglu --------------------------------------------------------------------------------------------

TEST_CASE("swiglu: forward equals silu(gate) * up on the fused input") {
    Rng rng{30};
    const int F = 7;
    auto h = randn({4, 3, 2 * F}, rng, 3.0);
    Graph<CPU> g;
    Var& y = swiglu(g, g.leaf(h));
    REQUIRE(y.data.shape == Shape{4, 3, F});
    std::vector<double> want;
    for (int n = 0; n < 12; ++n)
        for (int f = 0; f < F; ++f) {
            double a = h.data<double>()[n * 2 * F + f], b = h.data<double>()[n * 2 * F + F + f];
            want.push_back(a / (1 + std::exp(-a)) * b);
        }
    check_close(to_vector(y.data), want, 1e-14, 1e-300, "swiglu f64");
    auto h32 = converted(h, DType::f32);
    Var& y32 = swiglu(g, g.leaf(h32));
    check_close(to_vector(y32.data), want, 2e-6, 1e-30, "swiglu f32");
}

TEST_CASE("swiglu: gradients, odd F, large gate values stay finite") {
    Rng rng{31};
    for (Shape s : {Shape{1, 2}, Shape{5, 14}, Shape{2, 3, 22}}) {
        auto h = randn(s, rng, 2.0);
        gradcheck({{&h}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return swiglu(g, *v[0]); });
    }
    // F above the backward's 256-element tile, with saturated gates (|a| up to 120: exp overflows in f32).
    const int N = 3, F = 300;
    auto h = randn({N, 2 * F}, rng);
    for (int n = 0; n < N; ++n)
        for (int f = 0; f < F; f += 3) h.data<double>()[n * 2 * F + f] = (f % 2 ? 1 : -1) * (20.0 + f * 0.33);
    // Outputs up to ~100 make the central differences noisy at ~1e-7: a looser absolute tolerance.
    gradcheck({{&h}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return swiglu(g, *v[0]); },
              {.rtol = 1e-6, .atol = 1e-6});
    auto dy = randn({N, F}, rng);
    check_accumulates({N, 2 * F}, [&](GradOut d) { swiglu_backward(CPU{}, d, h, dy); });
}

// ---- dropout -------------------------------------------------------------------------------------------

TEST_CASE("dropout: eval mode and p = 0 return the input itself") {
    Rng rng{40};
    auto x = randn({4, 5}, rng);
    Graph<CPU> g;
    Var& xv = g.leaf(x, true);
    CHECK(&dropout(g, xv, 0.0) == &xv);
    g.set_training(false);
    CHECK(&dropout(g, xv, 0.5) == &xv);
    CHECK(g.tape_size() == 0);
    CHECK(g.rng().counter == 0);
    g.set_training(true);
    CHECK(&dropout(g, xv, 0.5) != &xv);
    CHECK(g.tape_size() == 1);
    CHECK_THROWS_AS(dropout(g, xv, 1.5), Error);
}

TEST_CASE_TEMPLATE("dropout: mask follows uniform01(seed, offset + i) >= p, rate p, exact scaling", T, float, double) {
    Rng rng{41};
    const double p = 0.3;
    const std::int64_t n = 1 << 20;
    auto x = randn({1024, 1024}, rng, 1.0, dtype_of<T>());
    Graph<CPU> g(0, 0, /*seed=*/987);
    g.rng().counter = 12345;
    Var& y = dropout(g, g.leaf(x), p);
    CHECK(g.rng().counter == 12345 + std::uint64_t(n));
    const T scale = T(1.0 / (1.0 - p));
    std::int64_t dropped = 0, wrong = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        bool keep = uniform01(987, 12345 + std::uint64_t(i)) >= float(p);
        T got = y.data.template data<T>()[i], xi = x.template data<T>()[i];
        dropped += !keep;
        wrong += keep ? got != xi * scale : got != T(0);
    }
    CHECK(wrong == 0);
    // Binomial: sd of the dropped fraction is sqrt(p (1 - p) / n) = 4.5e-4; allow 7 sd.
    CHECK(std::abs(double(dropped) / double(n) - p) < 3.2e-3);
}

TEST_CASE("dropout: same seed and offset give the same mask, the next call a different one") {
    Rng rng{42};
    auto x = randn({33, 65}, rng);
    const std::uint64_t n = 33 * 65;
    Graph<CPU> g1(0, 0, 5), g2(0, 0, 5), g3(0, 0, 6);
    Var& a = dropout(g1, g1.leaf(x), 0.5);
    Var& b = dropout(g2, g2.leaf(x), 0.5);
    Var& c = dropout(g1, g1.leaf(x), 0.5);  // second draw in the same stream: offset n
    Var& d = dropout(g3, g3.leaf(x), 0.5);  // another seed
    CHECK(bitwise_equal(a.data, b.data));
    CHECK_FALSE(bitwise_equal(a.data, c.data));
    CHECK_FALSE(bitwise_equal(a.data, d.data));
    CHECK(g1.rng().counter == 2 * n);
    // The kernel with the recorded (seed, offset) reproduces the second call.
    Buffer<CPU> again(x.tensor().shape, DType::f64);
    dropout_forward(CPU{}, again, x, 0.5, 5, n);
    CHECK(bitwise_equal(again, c.data));
    // p = 1 drops everything (no NaN from 1 / (1 - p)).
    dropout_forward(CPU{}, again, x, 1.0, 5, 0);
    CHECK(to_vector(again) == std::vector<double>(n, 0.0));
}

TEST_CASE("dropout: gradient with a fixed stream, backward regenerates the mask") {
    Rng rng{43};
    auto x = randn({7, 13}, rng);
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return dropout(g, *v[0], 0.35); });
    // Large, parallel: dx = dy * mask / (1 - p) with the same mask as the forward (forward of dy).
    auto big = randn({300, 257}, rng), dy = randn({300, 257}, rng);
    Buffer<CPU> dx(dy.tensor().shape, DType::f64), fy(dy.tensor().shape, DType::f64);
    dropout_backward(CPU{}, {dx.tensor(), false}, dy, 0.2, 77, 1000);
    dropout_forward(CPU{}, fy, dy, 0.2, 77, 1000);
    CHECK(bitwise_equal(dx, fy));
    check_accumulates(dy.tensor().shape, [&](GradOut d) { dropout_backward(CPU{}, d, dy, 0.2, 77, 1000); });
}
