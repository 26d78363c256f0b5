// Mixture of experts: the router against MiniMind's MoEGate (softmax, top-k, renormalization, seq_aux
// balancing loss), dispatch/combine and the row ops against plain loops, and every gradient against
// finite differences (f64) and the f64 path (f32).
#include "support/gradcheck.hpp"

#include <algorithm>
#include <numeric>

using namespace minitrain;
using namespace mt_test;

namespace {

/// Logits whose values within a row are at least 0.4 apart, in a random order: top-k selection cannot
/// change under finite-difference probes or f32 rounding.
Buffer<CPU> separated_logits(int N, int E, Rng& rng) {
    Buffer<CPU> b(Shape{N, E}, DType::f64);
    std::vector<int> perm(static_cast<std::size_t>(E));
    for (int n = 0; n < N; ++n) {
        std::iota(perm.begin(), perm.end(), 0);
        for (int i = E - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(std::uint64_t(i) + 1)]);
        for (int e = 0; e < E; ++e)
            b.data<double>()[n * E + e] = 0.6 * (perm[e] - (E - 1) / 2.0) + 0.2 * (rng.uniform() - 0.5);
    }
    return b;
}

/// MiniMind's MoEGate after its linear layer, written out in double from its definition.
struct RefRouting {
    std::vector<double> scores, weights;
    std::vector<int> indices;
    double aux = 0;
};

RefRouting ref_router(const std::vector<double>& logits, int N, int E, int B, int K, bool norm, double alpha,
                      RouterRules rules = RouterRules::minimind2) {
    const bool minimind3 = rules == RouterRules::minimind3;
    RefRouting r;
    r.scores.resize(std::size_t(N * E));
    for (int n = 0; n < N; ++n) {
        double m = -INFINITY, sum = 0;
        for (int e = 0; e < E; ++e) m = std::max(m, logits[n * E + e]);
        for (int e = 0; e < E; ++e) sum += std::exp(logits[n * E + e] - m);
        for (int e = 0; e < E; ++e) r.scores[n * E + e] = std::exp(logits[n * E + e] - m) / sum;
        std::vector<int> order(static_cast<std::size_t>(E));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return r.scores[n * E + a] > r.scores[n * E + b]; });
        double tot = 0;
        for (int k = 0; k < K; ++k) tot += r.scores[n * E + order[k]];
        for (int k = 0; k < K; ++k) {
            r.indices.push_back(order[k]);
            double w = r.scores[n * E + order[k]];
            r.weights.push_back((K > 1 || minimind3) && norm ? w / (tot + 1e-20) : w);
        }
    }
    if (minimind3) {
        // MiniMind-3: load = one_hot(topk_idx, E).float().mean(0) (K, E);
        //             aux = (load * scores.mean(0)).sum() * E * alpha, over all N tokens at once
        std::vector<double> load(std::size_t(E), 0.0), mean(std::size_t(E), 0.0);
        for (int i = 0; i < N * K; ++i) load[r.indices[i]] += 1.0 / N;
        for (int n = 0; n < N; ++n)
            for (int e = 0; e < E; ++e) mean[e] += r.scores[n * E + e] / N;
        for (int e = 0; e < E; ++e) r.aux += load[e] * mean[e];
        r.aux *= E * alpha;
        return r;
    }
    // seq_aux: ce = zeros(B, E).scatter_add_(1, idx.view(B, -1), 1).div_(T*K/E);
    //          aux = (ce * scores.view(B, T, E).mean(1)).sum(1).mean() * alpha
    const int T = N / B;
    for (int b = 0; b < B; ++b) {
        std::vector<double> ce(std::size_t(E), 0.0), mean(std::size_t(E), 0.0);
        for (int i = 0; i < T * K; ++i) ce[r.indices[b * T * K + i]] += 1;
        for (int e = 0; e < E; ++e) ce[e] /= double(T * K) / E;
        for (int t = 0; t < T; ++t)
            for (int e = 0; e < E; ++e) mean[e] += r.scores[(b * T + t) * E + e] / T;
        for (int e = 0; e < E; ++e) r.aux += ce[e] * mean[e] / B;
    }
    r.aux *= alpha;
    return r;
}

std::vector<int> to_ints(const Tensor& t) {
    return std::vector<int>(t.data<std::int32_t>(), t.data<std::int32_t>() + t.numel());
}

/// One MoE layer without shared experts: route, dispatch, one linear expert each, combine.
struct MoeConfig {
    int B, T, C, M, E, K;  // M: expert output width
    bool norm = true;
    double alpha = 0.1;
};

/// With `with_aux`, the output is y flattened with aux appended: one tensor that carries both gradients.
Var& moe_layer(Graph<CPU>& g, Var& x, Var& logits, Var* const* W, const MoeConfig& c, bool with_aux) {
    Routing r = moe_router(g, logits, c.B, c.K, c.norm, c.alpha);
    Dispatch d = moe_dispatch(g, x, r.indices, c.E);
    Var& ye = moe_experts(g, d, [&](Graph<CPU>& g, int e, Var& rows) -> Var& { return linear(g, rows, *W[e]); });
    Var& y = moe_combine(g, ye, r.weights, d.slot);
    if (!with_aux) return y;
    Var* parts[2] = {&reshape(g, y, Shape{y.data.numel(), 1}), &reshape(g, r.aux, Shape{1, 1})};
    return concat_rows(g, parts, 2);
}

/// y[n] = sum_k w[n, k] * W_{idx[n, k]} x[n], with the reference router.
std::vector<double> ref_moe(const std::vector<double>& x, const std::vector<double>& logits,
                            const std::vector<std::vector<double>>& W, const MoeConfig& c) {
    const int N = c.B * c.T;
    RefRouting r = ref_router(logits, N, c.E, c.B, c.K, c.norm, c.alpha);
    std::vector<double> y(std::size_t(N * c.M), 0.0);
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < c.K; ++k) {
            const auto& w = W[r.indices[n * c.K + k]];
            for (int m = 0; m < c.M; ++m) {
                double acc = 0;
                for (int j = 0; j < c.C; ++j) acc += w[m * c.C + j] * x[n * c.C + j];
                y[n * c.M + m] += r.weights[n * c.K + k] * acc;
            }
        }
    return y;
}

/// gradcheck of the whole layer: inputs x, logits, W_0 .. W_{E-1}; `frozen` experts need no gradient.
void gradcheck_layer(const MoeConfig& c, Buffer<CPU>& x, Buffer<CPU>& logits, std::vector<Buffer<CPU>>& W,
                     bool with_aux, const std::vector<int>& frozen = {}, GradcheckOptions opt = {}) {
    std::vector<GradInput> in{{&x}, {&logits}};
    for (int e = 0; e < c.E; ++e)
        in.push_back({&W[e], std::find(frozen.begin(), frozen.end(), e) == frozen.end()});
    gradcheck(in, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return moe_layer(g, *v[0], *v[1], v.data() + 2, c, with_aux);
    }, opt);
}

}  // namespace

// ---- router -----------------------------------------------------------------------------------------

TEST_CASE("moe_router: forward equals MiniMind's MoEGate (softmax, top-k, renormalization, seq_aux)") {
    Rng rng{21};
    const int B = 2, T = 5, E = 6, N = B * T;
    for (auto [K, norm] : {std::pair{1, true}, {2, true}, {2, false}, {3, true}, {6, true}})
        for (DType dt : {DType::f64, DType::f32}) {
            CAPTURE(K);
            CAPTURE(norm);
            CAPTURE(dtype_name(dt));
            auto l64 = randn({N, E}, rng, 1.5);
            auto logits = converted(l64, dt);
            const double alpha = 0.37;
            RefRouting want = ref_router(to_vector(logits), N, E, B, K, norm, alpha);
            Graph<CPU> g;
            Routing r = moe_router(g, g.leaf(logits, true), B, K, norm, alpha);
            REQUIRE(r.weights.data.shape == Shape{N, K});
            REQUIRE(r.indices.shape == Shape{N, K});
            REQUIRE(r.aux.data.shape == Shape{1});
            const double tol = dt == DType::f64 ? 1e-12 : 1e-6;
            CHECK(to_ints(r.indices) == want.indices);
            check_close(to_vector(r.scores), want.scores, tol, tol, "scores");
            check_close(to_vector(r.weights.data), want.weights, tol, tol, "weights");
            check_close(to_vector(r.aux.data), {want.aux}, tol, tol, "aux");
            CHECK(r.aux.requires_grad);
            if (K == E && norm) {  // every expert chosen by everyone: ce = 1, aux = alpha exactly
                CHECK(to_vector(r.aux.data)[0] == doctest::Approx(alpha).epsilon(tol));
            }
        }
}

TEST_CASE("moe_router: MiniMind-3's rules (top-1 renormalized to 1, one balancing loss over the batch)") {
    Rng rng{29};
    const int B = 3, T = 4, E = 4, N = B * T;
    for (int K : {1, 2})
        for (DType dt : {DType::f64, DType::f32}) {
            CAPTURE(K);
            CAPTURE(dtype_name(dt));
            auto logits = converted(randn({N, E}, rng, 1.5), dt);
            const double alpha = 0.29;
            RefRouting want = ref_router(to_vector(logits), N, E, B, K, true, alpha, RouterRules::minimind3);
            RefRouting seq = ref_router(to_vector(logits), N, E, B, K, true, alpha);
            Graph<CPU> g;
            Routing r = moe_router(g, g.leaf(logits, true), B, K, true, alpha, RouterRules::minimind3);
            const double tol = dt == DType::f64 ? 1e-12 : 1e-6;
            CHECK(to_ints(r.indices) == want.indices);
            check_close(to_vector(r.weights.data), want.weights, tol, tol, "weights");
            check_close(to_vector(r.aux.data), {want.aux}, tol, tol, "aux");
            // The two rules really differ on this batch: the per-sequence loss is another number.
            CHECK(std::abs(want.aux - seq.aux) > 1e-3 * want.aux);
            if (K == 1)
                for (double w : to_vector(r.weights.data)) CHECK(w == 1.0);  // s / (s + 1e-20) rounds to 1
        }
    // Gradients: through aux (all of the gate's gradient for top-1) and through the renormalized weights.
    for (int K : {1, 2}) {
        CAPTURE(K);
        auto logits = separated_logits(N, E, rng);
        gradcheck({{&logits}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            return moe_router(g, *v[0], B, K, true, 0.3, RouterRules::minimind3).aux;
        });
        gradcheck({{&logits}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            Routing r = moe_router(g, *v[0], B, K, true, 0.3, RouterRules::minimind3);
            Var* parts[2] = {&reshape(g, r.weights, Shape{N * K, 1}), &reshape(g, r.aux, Shape{1, 1})};
            return concat_rows(g, parts, 2);
        });
    }
}

TEST_CASE("moe_router: the balancing loss is not a constant (skewed routing costs more)") {
    // Tokens of sequence 0 all prefer expert 0: ce[0, 0] = E and the loss exceeds the balanced value alpha.
    const int B = 2, T = 4, E = 4, K = 1, N = B * T;
    Buffer<CPU> logits(Shape{N, E}, DType::f64);
    for (int n = 0; n < N; ++n)
        for (int e = 0; e < E; ++e) logits.data<double>()[n * E + e] = n < T ? (e == 0 ? 3.0 : 0.0) : (e == n % E ? 3.0 : 0.0);
    Graph<CPU> g;
    Routing r = moe_router(g, g.leaf(logits, true), B, K, true, 1.0);
    RefRouting want = ref_router(to_vector(logits), N, E, B, K, true, 1.0);
    CHECK(to_vector(r.aux.data)[0] == doctest::Approx(want.aux).epsilon(1e-12));
    CHECK(want.aux > 1.2);
}

TEST_CASE("moe_router: ties go to the lower expert index, in descending score order") {
    const int E = 4, K = 3, N = 4;
    const double rows[N][E] = {{0, 0, 0, 0}, {1, 3, 3, 0}, {2, 5, 2, 5}, {-1, 7, 9, 7}};
    const int want[N][K] = {{0, 1, 2}, {1, 2, 0}, {1, 3, 0}, {2, 1, 3}};
    Buffer<CPU> logits(Shape{N, E}, DType::f64);
    for (int n = 0; n < N; ++n)
        for (int e = 0; e < E; ++e) logits.data<double>()[n * E + e] = rows[n][e];
    Graph<CPU> g;
    Routing r = moe_router(g, g.leaf(logits), 1, K, false, 0.0);
    auto got = to_ints(r.indices);
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) CHECK_MESSAGE(got[n * K + k] == want[n][k], "token " << n << ", choice " << k);
    auto w = to_vector(r.weights.data);
    CHECK(w[0] == doctest::Approx(0.25));  // softmax of equal logits, not renormalized
    CHECK(w[1] == w[0]);
}

TEST_CASE("moe_router: without training or with alpha = 0 the aux loss is 0 and needs no gradient") {
    Rng rng{22};
    auto logits = separated_logits(6, 5, rng);
    for (bool training : {false, true}) {
        Graph<CPU> g;
        g.set_training(training);
        Var& l = g.leaf(logits, true);
        Routing r = moe_router(g, l, 2, 2, true, training ? 0.0 : 0.5);
        CHECK(to_vector(r.aux.data)[0] == 0.0);
        CHECK_FALSE(r.aux.requires_grad);
        CHECK(r.weights.requires_grad);
        Buffer<CPU> up(r.weights.data.shape, DType::f64);
        fill(CPU{}, up, 1.0);
        g.backward(r.weights, up.tensor());  // sum of renormalized weights = 1: the gradient vanishes
        auto dl = to_vector(l.grad);
        check_close(dl, std::vector<double>(dl.size(), 0.0), 0, 1e-12, "d(sum of weights)/dlogits");
    }
}

TEST_CASE("moe_router: gradients through the weights, through aux, and through both") {
    Rng rng{23};
    const int B = 2, T = 5, E = 6, N = B * T;
    for (auto [K, norm] : {std::pair{1, true}, {2, true}, {2, false}, {3, true}}) {
        CAPTURE(K);
        CAPTURE(norm);
        auto logits = separated_logits(N, E, rng);
        gradcheck({{&logits}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            return moe_router(g, *v[0], B, K, norm, 0.3).weights;
        });
        gradcheck({{&logits}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            return moe_router(g, *v[0], B, K, norm, 0.3).aux;
        });
        gradcheck({{&logits}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            Routing r = moe_router(g, *v[0], B, K, norm, 0.3);
            Var* parts[2] = {&reshape(g, r.weights, Shape{N * K, 1}), &reshape(g, r.aux, Shape{1, 1})};
            return concat_rows(g, parts, 2);
        });
    }
}

TEST_CASE("moe_router: the logits' gradient is written (=) or added (+=) as the tape asks") {
    Rng rng{24};
    auto logits = separated_logits(8, 4, rng), other = randn({8, 4}, rng);
    // logits also feed an add: recorded after the router, the add's backward runs first and the router's
    // backward must add to the buffer it created; recorded before, the router's backward writes first.
    for (bool router_first : {true, false}) {
        CAPTURE(router_first);
        gradcheck({{&logits}, {&other, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            Var* twice = router_first ? nullptr : &add(g, *v[0], *v[1]);
            Routing r = moe_router(g, *v[0], 2, 2, true, 0.5);
            if (router_first) twice = &add(g, *v[0], *v[1]);
            Var* parts[3] = {&reshape(g, r.weights, Shape{16, 1}), &reshape(g, r.aux, Shape{1, 1}),
                             &reshape(g, *twice, Shape{32, 1})};
            return concat_rows(g, parts, 3);
        });
    }
}

// ---- dispatch / combine -----------------------------------------------------------------------------

TEST_CASE("moe_dispatch: rows grouped by expert, ascending token order, slot is a bijection") {
    Rng rng{31};
    const int N = 13, C = 5, E = 4, K = 2;
    auto x = randn({N, C}, rng);
    auto logits = randn({N, E}, rng);
    Graph<CPU> g;
    Routing r = moe_router(g, g.leaf(logits), 1, K, true, 0.0);
    Dispatch d = moe_dispatch(g, g.leaf(x), r.indices, E);
    REQUIRE(d.xe.data.shape == Shape{N * K, C});
    auto idx = to_ints(r.indices), slot = to_ints(d.slot), off = to_ints(d.offsets);
    REQUIRE(off.size() == std::size_t(E + 1));
    CHECK(off[0] == 0);
    CHECK(off[E] == N * K);
    for (int e = 0; e <= E; ++e) CHECK(d.host_offsets[e] == off[e]);
    std::vector<int> seen(std::size_t(N * K), 0), owner(std::size_t(N * K), -1);
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
            const int s = slot[n * K + k], e = idx[n * K + k];
            REQUIRE(s >= 0);
            REQUIRE(s < N * K);
            ++seen[s];
            owner[s] = n;
            CHECK_MESSAGE(off[e] <= s, "token " << n << " expert " << e);
            CHECK_MESSAGE(s < off[e + 1], "token " << n << " expert " << e);
            for (int j = 0; j < C; ++j) CHECK(d.xe.data.data<double>()[s * C + j] == x.data<double>()[n * C + j]);
        }
    for (int s = 0; s < N * K; ++s) CHECK(seen[s] == 1);
    for (int e = 0; e < E; ++e)
        for (int s = off[e] + 1; s < off[e + 1]; ++s) CHECK_MESSAGE(owner[s - 1] < owner[s], "expert " << e);
    // counts agree with a direct count of the routing
    for (int e = 0; e < E; ++e) CHECK(d.rows(e) == std::count(idx.begin(), idx.end(), e));
}

TEST_CASE("moe_dispatch / moe_combine: gradients of each op alone") {
    Rng rng{32};
    const int N = 9, C = 4, E = 3, K = 2;
    auto x = randn({N, C}, rng), ye = randn({N * K, C}, rng), w = randn({N, K}, rng);
    auto logits = separated_logits(N, E, rng);
    Graph<CPU> route;
    Routing r = moe_router(route, route.leaf(logits), 1, K, true, 0.0);
    gradcheck({{&x}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return moe_dispatch(g, *v[0], r.indices, E).xe;
    });
    // The slot table of that routing, then combine alone.
    Graph<CPU> gd;
    Dispatch d = moe_dispatch(gd, gd.leaf(x), r.indices, E);
    gradcheck({{&ye}, {&w}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return moe_combine(g, *v[0], *v[1], d.slot);
    });
    gradcheck({{&ye}, {&w, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return moe_combine(g, *v[0], *v[1], d.slot);
    });
    gradcheck({{&ye, false}, {&w}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return moe_combine(g, *v[0], *v[1], d.slot);
    });
}

TEST_CASE("moe_dispatch / moe_combine: gradients added (+=) to a buffer another consumer created") {
    // Each input also feeds an add recorded after the op under test: the add's backward runs first, so
    // the dispatch/combine backward must add to the gradient instead of overwriting it.
    Rng rng{39};
    const int N = 7, C = 2, E = 3, K = 2;
    auto x = randn({N, C}, rng), ox = randn({N, C}, rng);
    auto ye = randn({N * K, C}, rng), oye = randn({N * K, C}, rng);
    auto w = randn({N, K}, rng), ow = randn({N, K}, rng);
    auto logits = separated_logits(N, E, rng);
    Graph<CPU> route;
    Routing r = moe_router(route, route.leaf(logits), 1, K, true, 0.0);
    gradcheck({{&x}, {&ox, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var& xe = moe_dispatch(g, *v[0], r.indices, E).xe;
        Var* parts[2] = {&xe, &add(g, *v[0], *v[1])};
        return concat_rows(g, parts, 2);
    });
    Graph<CPU> gd;
    Dispatch d = moe_dispatch(gd, gd.leaf(x), r.indices, E);
    gradcheck({{&ye}, {&w}, {&oye, false}, {&ow, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var& y = moe_combine(g, *v[0], *v[1], d.slot);
        Var* parts[3] = {&y, &add(g, *v[0], *v[2]), &reshape(g, add(g, *v[1], *v[3]), Shape{N * K / C, C})};
        return concat_rows(g, parts, 3);
    });
}

TEST_CASE("moe layer: forward equals the per-token loop y[n] = sum_k w[n,k] W_idx x[n]") {
    Rng rng{33};
    for (MoeConfig c : {MoeConfig{2, 5, 6, 5, 4, 2}, MoeConfig{3, 7, 8, 8, 5, 3, false}, MoeConfig{1, 6, 3, 4, 3, 1}}) {
        const int N = c.B * c.T;
        auto x = randn({N, c.C}, rng), logits = randn({N, c.E}, rng);
        std::vector<Buffer<CPU>> W;
        std::vector<std::vector<double>> Wv;
        std::vector<Var*> Wvars;
        Graph<CPU> g;
        for (int e = 0; e < c.E; ++e) {
            W.push_back(randn({c.M, c.C}, rng, 0.5));
            Wv.push_back(to_vector(W.back()));
            Wvars.push_back(&g.leaf(W.back(), true));
        }
        Var& y = moe_layer(g, g.leaf(x, true), g.leaf(logits, true), Wvars.data(), c, false);
        REQUIRE(y.data.shape == Shape{N, c.M});
        check_close(to_vector(y.data), ref_moe(to_vector(x), to_vector(logits), Wv, c), 1e-12, 1e-12, "moe forward");
    }
}

TEST_CASE("moe layer: gradients w.r.t. x, router logits and every expert's weight, with and without aux") {
    Rng rng{34};
    for (MoeConfig c : {MoeConfig{2, 5, 6, 5, 4, 2}, MoeConfig{2, 4, 5, 3, 5, 3, false, 0.2},
                        MoeConfig{1, 7, 4, 4, 3, 1}}) {
        CAPTURE(c.E);
        CAPTURE(c.K);
        const int N = c.B * c.T;
        auto x = randn({N, c.C}, rng);
        auto logits = separated_logits(N, c.E, rng);
        std::vector<Buffer<CPU>> W;
        for (int e = 0; e < c.E; ++e) W.push_back(randn({c.M, c.C}, rng, 0.5));
        gradcheck_layer(c, x, logits, W, false);
        gradcheck_layer(c, x, logits, W, true);
    }
}

TEST_CASE("moe layer: sizes large enough for the multi-threaded loops, forward and gradients") {
    Rng rng{40};
    const MoeConfig c{2, 1024, 16, 16, 8, 2};  // N*E = N*K*C/2 = 16384: every kernel crosses its grain
    const int N = c.B * c.T;
    auto x = randn({N, c.C}, rng);
    auto logits = separated_logits(N, c.E, rng);
    std::vector<Buffer<CPU>> W;
    std::vector<std::vector<double>> Wv;
    for (int e = 0; e < c.E; ++e) {
        W.push_back(randn({c.M, c.C}, rng, 0.3));
        Wv.push_back(to_vector(W.back()));
    }
    {
        Graph<CPU> g;
        std::vector<Var*> Wvars;
        for (auto& w : W) Wvars.push_back(&g.leaf(w));
        Var& y = moe_layer(g, g.leaf(x), g.leaf(logits), Wvars.data(), c, false);
        check_close(to_vector(y.data), ref_moe(to_vector(x), to_vector(logits), Wv, c), 1e-12, 1e-12, "forward");
        Routing r = moe_router(g, g.leaf(logits), c.B, c.K, c.norm, c.alpha);
        RefRouting want = ref_router(to_vector(logits), N, c.E, c.B, c.K, c.norm, c.alpha);
        check_close(to_vector(r.aux.data), {want.aux}, 1e-12, 1e-12, "aux");
    }
    // Few probes (each is two forward passes); the objective sums 32768 products, so finite differences
    // carry ~1e-8 of rounding noise: an absolute tolerance of 1e-6 against gradients of order 1e-2.
    GradcheckOptions opt;
    opt.max_probes = 6;
    opt.atol = 1e-6;
    gradcheck_layer(c, x, logits, W, true, {}, opt);
}

TEST_CASE("moe layer: the gate as a linear layer of x (x reaches the loss through routing too)") {
    Rng rng{35};
    const MoeConfig c{2, 4, 5, 5, 4, 2};
    const int N = c.B * c.T;
    auto x = randn({N, c.C}, rng), wg = randn({c.E, c.C}, rng);
    std::vector<Buffer<CPU>> W;
    for (int e = 0; e < c.E; ++e) W.push_back(randn({c.M, c.C}, rng, 0.5));
    std::vector<GradInput> in{{&x}, {&wg}};
    for (auto& w : W) in.push_back({&w});
    gradcheck(in, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return moe_layer(g, *v[0], linear(g, *v[0], *v[1]), v.data() + 2, c, true);
    });
}

TEST_CASE("moe layer: an expert that receives no token is skipped and gets no gradient") {
    Rng rng{36};
    const MoeConfig c{2, 5, 4, 3, 5, 2};
    const int N = c.B * c.T, idle = 2;
    auto x = randn({N, c.C}, rng);
    auto logits = separated_logits(N, c.E, rng);
    for (int n = 0; n < N; ++n) logits.data<double>()[n * c.E + idle] = -30;
    std::vector<Buffer<CPU>> W;
    std::vector<std::vector<double>> Wv;
    for (int e = 0; e < c.E; ++e) {
        W.push_back(randn({c.M, c.C}, rng, 0.5));
        Wv.push_back(to_vector(W.back()));
    }
    {
        Graph<CPU> g;
        std::vector<Var*> Wvars;
        for (auto& w : W) Wvars.push_back(&g.leaf(w, true));
        Routing r = moe_router(g, g.leaf(logits, true), c.B, c.K, c.norm, c.alpha);
        Dispatch d = moe_dispatch(g, g.leaf(x, true), r.indices, c.E);
        CHECK(d.rows(idle) == 0);
        const std::size_t tape = g.tape_size();
        Var& ye = moe_experts(g, d, [&](Graph<CPU>& g, int e, Var& rows) -> Var& { return linear(g, rows, *Wvars[e]); });
        // (E - 1) experts: slice + linear each, then one concat
        CHECK(g.tape_size() - tape == std::size_t(2 * (c.E - 1) + 1));
        Var& y = moe_combine(g, ye, r.weights, d.slot);
        check_close(to_vector(y.data), ref_moe(to_vector(x), to_vector(logits), Wv, c), 1e-12, 1e-12, "forward");
        g.backward(y, randn(y.data.shape, rng).tensor());
        CHECK_FALSE(Wvars[idle]->grad.defined());
        for (int e = 0; e < c.E; ++e)
            if (e != idle) CHECK(Wvars[e]->grad.defined());
    }
    gradcheck_layer(c, x, logits, W, true, {idle});
}

TEST_CASE("moe layer: every token on one expert (the others idle), K = 1") {
    Rng rng{37};
    const MoeConfig c{2, 3, 4, 4, 3, 1};
    const int N = c.B * c.T;
    auto x = randn({N, c.C}, rng);
    auto logits = separated_logits(N, c.E, rng);
    // A margin of 1.3 over the next logit: always chosen, yet the softmax is not saturated (its gradient
    // stays large enough for the f32-vs-f64 comparison).
    for (int n = 0; n < N; ++n) logits.data<double>()[n * c.E + 1] = 2.0;
    std::vector<Buffer<CPU>> W;
    for (int e = 0; e < c.E; ++e) W.push_back(randn({c.M, c.C}, rng, 0.5));
    gradcheck_layer(c, x, logits, W, true, {0, 2});
}

TEST_CASE("moe_dispatch: an expert index outside [0, E) is an error") {
    Rng rng{38};
    auto x = randn({3, 2}, rng);
    Buffer<CPU> idx(Shape{3, 1}, DType::i32);
    idx.data<std::int32_t>()[0] = 0;
    idx.data<std::int32_t>()[1] = 4;
    idx.data<std::int32_t>()[2] = 1;
    Graph<CPU> g;
    CHECK_THROWS_AS(moe_dispatch(g, g.leaf(x), idx, 4), Error);
}

// ---- row ops ----------------------------------------------------------------------------------------

TEST_CASE("slice_rows: a view of the input's rows") {
    Rng rng{41};
    auto x = randn({6, 3}, rng);
    Graph<CPU> g;
    Var& s = slice_rows(g, g.leaf(x), 2, 5);
    CHECK(s.data.shape == Shape{3, 3});
    CHECK(s.data.ptr == x.data<double>() + 6);
    CHECK(slice_rows(g, g.leaf(x), 4, 4).data.shape == Shape{0, 3});
    CHECK_THROWS_AS(slice_rows(g, g.leaf(x), 4, 7), Error);
}

TEST_CASE("slice_rows / concat_rows: gradients with overlapping, empty, reordered and partial slices") {
    Rng rng{42};
    auto x = randn({7, 3}, rng);
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var* parts[4] = {&slice_rows(g, *v[0], 4, 7), &slice_rows(g, *v[0], 0, 2), &slice_rows(g, *v[0], 2, 2),
                         &slice_rows(g, *v[0], 1, 5)};
        return concat_rows(g, parts, 4);
    });
    // Rows 0 and 5..6 are never read: their gradient must be exactly zero.
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return slice_rows(g, *v[0], 1, 5); });
    // The whole input: the slice hands its gradient buffer over.
    gradcheck({{&x}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return slice_rows(g, *v[0], 0, 7); });
    // Rank 3: rows are the first dimension.
    auto x3 = randn({4, 2, 3}, rng);
    gradcheck({{&x3}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var* parts[2] = {&slice_rows(g, *v[0], 3, 4), &slice_rows(g, *v[0], 0, 2)};
        return concat_rows(g, parts, 2);
    });
}

TEST_CASE("slice_rows: another consumer of the input, before or after the slices on the tape") {
    Rng rng{43};
    auto x = randn({5, 4}, rng), other = randn({5, 4}, rng);
    for (bool slice_first : {true, false}) {
        CAPTURE(slice_first);
        gradcheck({{&x}, {&other, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            Var* s = nullptr;
            Var* sum = nullptr;
            if (slice_first) {
                s = &slice_rows(g, *v[0], 1, 3);
                sum = &add(g, *v[0], *v[1]);
            } else {
                sum = &add(g, *v[0], *v[1]);
                s = &slice_rows(g, *v[0], 1, 3);
            }
            Var* parts[2] = {s, sum};
            return concat_rows(g, parts, 2);
        });
    }
}

TEST_CASE("slice_rows: rows outside the slice get a zero gradient even from a recycled, dirty buffer") {
    // Step 1 leaves non-zero gradients in the graph's memory; step 2's gradient of x reuses that memory.
    Rng rng{44};
    auto x = randn({6, 4}, rng), w = randn({6, 4}, rng);
    Graph<CPU> g;
    {
        Var& y = add(g, g.leaf(x, true), g.leaf(w, true));
        Buffer<CPU> up(y.data.shape, DType::f64);
        fill(CPU{}, up, 3.0);
        g.backward(y, up.tensor());
    }
    g.reset();
    Var& xv = g.leaf(x, true);
    Var& s = slice_rows(g, xv, 2, 4);
    Buffer<CPU> up(s.data.shape, DType::f64);
    fill(CPU{}, up, 1.0);
    g.backward(s, up.tensor());
    auto dx = to_vector(xv.grad);
    for (int r = 0; r < 6; ++r)
        for (int c = 0; c < 4; ++c) CHECK(dx[r * 4 + c] == (r >= 2 && r < 4 ? 1.0 : 0.0));
}

TEST_CASE("concat_rows: separate inputs, one of them twice, and mixed requires_grad") {
    Rng rng{45};
    auto a = randn({2, 4}, rng), b = randn({5, 4}, rng);
    gradcheck({{&a}, {&b}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var* parts[3] = {v[0], v[1], v[0]};
        return concat_rows(g, parts, 3);
    });
    gradcheck({{&a, false}, {&b}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var* parts[2] = {v[1], v[0]};
        return concat_rows(g, parts, 2);
    });
    Graph<CPU> g;
    Var& va = g.leaf(a);
    Var* one[1] = {&va};
    CHECK(&concat_rows(g, one, 1) == &va);  // a single part is not copied
    auto c = randn({2, 3}, rng);
    Var* bad[2] = {&va, &g.leaf(c)};
    CHECK_THROWS_AS(concat_rows(g, bad, 2), Error);
}
