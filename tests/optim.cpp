// Optimizers and gradient clipping: AdamW and SGD against a plain double-precision re-implementation of
// PyTorch's update formulas (parameter by parameter, so the slab/segment bookkeeping is checked too),
// bias correction by hand, frozen parameters, checkpoint round trips, option validation, clip_grad_norm
// against a naive norm.
#include "support/gradcheck.hpp"

#include <minitrain/optim/adamw.hpp>
#include <minitrain/optim/clip.hpp>
#include <minitrain/optim/grad_scaler.hpp>
#include <minitrain/optim/sgd.hpp>

#include <cstring>
#include <map>
#include <string>

using namespace minitrain;
using namespace mt_test;

namespace {

// ---- compile-time policy checks -----------------------------------------------------------------------

struct NotAnAlgo {};
struct FakeBackend {};
static_assert(OptimizerAlgo<AdamW> && OptimizerAlgo<SGD>);
static_assert(!OptimizerAlgo<NotAnAlgo> && !OptimizerAlgo<int>);
static_assert(std::is_same_v<rebind_optimizer_t<Optimizer<AdamW>, CPU>, Optimizer<AdamW, CPU>>);
static_assert(std::is_same_v<rebind_optimizer_t<Optimizer<SGD, CPU>, FakeBackend>, Optimizer<SGD, FakeBackend>>);
static_assert(is_optimizer_v<Optimizer<AdamW>> && !is_optimizer_v<AdamW>);
static_assert(std::is_same_v<Optimizer<AdamW>::Options, AdamW::Options>);

// ---- a small model's parameter set ---------------------------------------------------------------------

/// Matrices (decayed) and vectors (not) interleaved so the set has several segments of both kinds;
/// "bias" is a vector with decay forced on. Gradient scales span tiny values (where eps dominates the
/// AdamW denominator) to large ones.
struct Fixture {
    ParameterSet<CPU> ps;
    std::map<std::string, double> grad_scale = {{"embed", 1.0},  {"norm1", 1e-8}, {"wq", 1e-3}, {"wk", 1.0},
                                                {"norm2", 0.3},  {"head", 3.0},   {"bias", 2e-7}};
    explicit Fixture(Rng& rng) {
        ps.add("embed", Shape{7, 5});
        ps.add("norm1", Shape{5});
        ps.add("wq", Shape{6, 5});
        ps.add("wk", Shape{4, 5});
        ps.add("norm2", Shape{5});
        ps.add("head", Shape{3, 5});
        ps.add("bias", Shape{3}, 1);
        ps.finalize();
        float* d = ps.data().data<float>();
        for (std::size_t i = 0; i < ps.count(); ++i) d[i] = float(rng.normal());
    }
    /// New random gradients for every trainable parameter.
    void fill_grads(Rng& rng) {
        for (auto& p : ps.all()) {
            if (p.frozen) continue;
            float* g = p.var.grad.data<float>();
            for (std::int64_t i = 0; i < p.var.grad.numel(); ++i) g[i] = float(grad_scale[p.name] * rng.normal());
        }
    }
};

std::vector<float> copy_of(const Tensor& t) {
    std::vector<float> v(std::size_t(t.numel()));
    std::memcpy(v.data(), t.ptr, t.bytes());
    return v;
}

bool bit_equal(const Tensor& t, const std::vector<float>& v) {
    return std::size_t(t.numel()) == v.size() && std::memcmp(t.ptr, v.data(), t.bytes()) == 0;
}

std::vector<double> slice(const std::vector<double>& v, std::size_t offset, std::size_t n) {
    return {v.begin() + std::ptrdiff_t(offset), v.begin() + std::ptrdiff_t(offset + n)};
}

// ---- double-precision references of PyTorch's formulas -------------------------------------------------

/// torch.optim.AdamW written out plainly, per parameter. State indexed like the gradient slab.
struct RefAdamW {
    AdamW::Options o;
    std::vector<double> p, m, v;
    std::int64_t t = 0;

    RefAdamW(const ParameterSet<CPU>& ps, AdamW::Options opt) : o(opt) {
        p = to_vector(ps.data());
        m.assign(ps.trainable_count(), 0.0);
        v.assign(ps.trainable_count(), 0.0);
    }
    void step(const ParameterSet<CPU>& ps, double lr) {
        ++t;
        const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
        for (const auto& prm : ps.all()) {
            if (prm.frozen) continue;
            const float* g = prm.var.grad.data<float>();
            for (std::int64_t j = 0; j < prm.shape.numel(); ++j) {
                double& pj = p[prm.offset + std::size_t(j)];
                double& mj = m[prm.grad_offset + std::size_t(j)];
                double& vj = v[prm.grad_offset + std::size_t(j)];
                const double gj = g[j];
                if (prm.decay) pj *= 1 - lr * o.weight_decay;
                mj = o.beta1 * mj + (1 - o.beta1) * gj;
                vj = o.beta2 * vj + (1 - o.beta2) * gj * gj;
                const double denom = std::sqrt(vj) / std::sqrt(bc2) + o.eps;
                pj -= lr / bc1 * mj / denom;
            }
        }
    }
};

/// torch.optim.SGD written out plainly, per parameter.
struct RefSGD {
    SGD::Options o;
    std::vector<double> p, buf;
    std::int64_t t = 0;

    RefSGD(const ParameterSet<CPU>& ps, SGD::Options opt) : o(opt) {
        p = to_vector(ps.data());
        buf.assign(ps.trainable_count(), 0.0);
    }
    void step(const ParameterSet<CPU>& ps, double lr) {
        for (const auto& prm : ps.all()) {
            if (prm.frozen) continue;
            const float* g = prm.var.grad.data<float>();
            for (std::int64_t j = 0; j < prm.shape.numel(); ++j) {
                double& pj = p[prm.offset + std::size_t(j)];
                double& bj = buf[prm.grad_offset + std::size_t(j)];
                double d = g[j];
                if (prm.decay) d += o.weight_decay * pj;
                if (o.momentum != 0) {
                    bj = t == 0 ? d : o.momentum * bj + (1 - o.dampening) * d;
                    d = o.nesterov ? d + o.momentum * bj : bj;
                }
                pj -= lr * d;
            }
        }
        ++t;
    }
};

/// Parameters compared one by one (frozen ones must be bit-identical to `initial`).
void check_params(const Fixture& model, const std::vector<double>& want, const std::vector<float>& initial,
                  double rtol, double atol, const std::string& when) {
    auto got = to_vector(model.ps.data());
    for (const auto& p : model.ps.all()) {
        const std::size_t n = std::size_t(p.shape.numel());
        if (p.frozen) {
            INFO(when << ": frozen " << p.name);
            CHECK(std::memcmp(p.var.data.ptr, initial.data() + p.offset, n * sizeof(float)) == 0);
            continue;
        }
        check_close(slice(got, p.offset, n), slice(want, p.offset, n), rtol, atol, when + ": param " + p.name);
    }
}

/// State slab compared parameter by parameter with an absolute floor proportional to the gradient scale
/// (a moment can cancel to near zero).
void check_state(Fixture& model, const Tensor& slab, const std::vector<double>& want, int power, const std::string& what) {
    auto got = to_vector(slab);
    for (const auto& p : model.ps.all()) {
        if (p.frozen) continue;
        const std::size_t n = std::size_t(p.shape.numel());
        const double s = std::pow(model.grad_scale[p.name], power);
        check_close(slice(got, p.grad_offset, n), slice(want, p.grad_offset, n), 1e-5, 1e-6 * s, what + " of " + p.name);
    }
}

}  // namespace

// ---- AdamW ---------------------------------------------------------------------------------------------

TEST_CASE("AdamW: several steps match PyTorch's formulas computed in double") {
    for (bool freeze : {false, true}) {
        CAPTURE(freeze);
        Rng rng{101};
        Fixture model(rng);
        if (freeze) model.ps.freeze([](const Parameter& p) { return p.name == "wk" || p.name == "norm2"; });
        const auto initial = copy_of(model.ps.data());
        AdamW::Options o;  // defaults: betas (0.9, 0.95), eps 1e-8, weight decay 0.1
        Optimizer<AdamW> opt(model.ps, o);
        RefAdamW ref(model.ps, o);

        auto st = opt.state();
        REQUIRE(st.size() == 2);
        CHECK(st[0].first == "exp_avg");
        CHECK(st[1].first == "exp_avg_sq");
        CHECK(st[0].second.numel() == std::int64_t(model.ps.trainable_count()));
        CHECK(model.ps.trainable_count() == (freeze ? model.ps.count() - 25 : model.ps.count()));

        for (int t = 0; t < 6; ++t) {
            const double lr = 1e-2 * (1.0 + t) / 3.0;
            model.fill_grads(rng);
            opt.step(lr);
            ref.step(model.ps, lr);
            CHECK(opt.steps() == t + 1);
            check_params(model, ref.p, initial, 2e-6, 1e-7, "step " + std::to_string(t + 1));
        }
        check_state(model, st[0].second, ref.m, 1, "exp_avg");
        check_state(model, st[1].second, ref.v, 2, "exp_avg_sq");
    }
}

TEST_CASE("adamw_update kernel: f64 equals the formula to rounding, both lerp branches, parallel size") {
    for (double beta1 : {0.9, 0.3}) {  // lerp weight 0.1 (< 0.5) and 0.7 (>= 0.5) take different forms
        CAPTURE(beta1);
        Rng rng{7};
        const std::int64_t n = 70001;  // above the parallel threshold, odd
        auto p = randn({n}, rng), m = randn({n}, rng, 0.1), v = randn({n}, rng, 0.1);
        for (std::int64_t i = 0; i < n; ++i) v.data<double>()[i] = std::abs(v.data<double>()[i]);
        auto P = to_vector(p), M = to_vector(m), V = to_vector(v);
        const double lr = 3e-3, b2 = 0.99, eps = 1e-6, wd = 0.05;
        for (std::int64_t step = 4; step < 7; ++step) {
            auto g = randn({n}, rng);
            adamw_update(CPU{}, p, g, m, v, lr, beta1, b2, eps, wd, step);
            const double bc1 = 1 - std::pow(beta1, double(step)), bc2 = 1 - std::pow(b2, double(step));
            for (std::int64_t i = 0; i < n; ++i) {
                const double gi = g.data<double>()[i];
                P[i] *= 1 - lr * wd;
                M[i] = beta1 * M[i] + (1 - beta1) * gi;
                V[i] = b2 * V[i] + (1 - b2) * gi * gi;
                P[i] -= lr / bc1 * M[i] / (std::sqrt(V[i]) / std::sqrt(bc2) + eps);
            }
        }
        check_close(to_vector(p), P, 1e-12, 1e-14, "param");
        check_close(to_vector(m), M, 1e-12, 1e-14, "exp_avg");
        check_close(to_vector(v), V, 1e-12, 1e-14, "exp_avg_sq");
    }
}

TEST_CASE("AdamW: bias correction makes every update lr*g/(|g|+eps) under a constant gradient") {
    // m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so the corrected moments are exactly g and g^2:
    // each step moves p by lr * g / (|g| + eps), whatever t. Without the corrections the first step
    // would be lr * 0.1 g / (sqrt(0.05) |g|): about 0.45 lr.
    ParameterSet<CPU> ps;
    ps.add("gain", Shape{4});    // not decayed
    ps.add("w", Shape{2, 2});    // decayed
    ps.finalize();
    const float p0[8] = {1.0f, -2.0f, 0.5f, 3.0f, 1.0f, -1.0f, 2.0f, 0.25f};
    const float g0[8] = {0.5f, -1e-8f, 2.0f, 0.0f, -4.0f, 0.25f, 1e-3f, 8.0f};
    std::memcpy(ps.data().ptr, p0, sizeof p0);
    Optimizer<AdamW> opt(ps, {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.5});
    const double lr = 0.1, eps = 1e-8, wd = 0.5;
    double want[8];
    for (int i = 0; i < 8; ++i) want[i] = p0[i];
    for (int t = 1; t <= 3; ++t) {
        std::memcpy(ps.grads().ptr, g0, sizeof g0);
        opt.step();
        const float* p = ps.data().data<float>();
        for (int i = 0; i < 8; ++i) {
            const double g = g0[i];
            if (i >= 4) want[i] *= 1 - lr * wd;
            want[i] -= lr * g / (std::abs(g) + eps);
            CAPTURE(t);
            CAPTURE(i);
            CHECK(p[i] == doctest::Approx(want[i]).epsilon(1e-6));
        }
    }
    // By hand at step 1 for the first entries: 1 - 0.1 * 0.5 / (0.5 + 1e-8); -2 + 0.1 * 0.5 (eps = |g|);
    // 0.5 - 0.1; a zero gradient moves nothing. All of that three times.
    const float* p = ps.data().data<float>();
    CHECK(p[0] == doctest::Approx(0.7).epsilon(1e-6));
    CHECK(p[1] == doctest::Approx(-1.85).epsilon(1e-6));
    CHECK(p[2] == doctest::Approx(0.2).epsilon(1e-6));
    CHECK(p[3] == 3.0f);
}

// ---- SGD -----------------------------------------------------------------------------------------------

TEST_CASE("SGD: plain, momentum, dampening, nesterov and weight decay match PyTorch's formulas") {
    const SGD::Options configs[] = {
        {.lr = 0.05},
        {.lr = 0.05, .weight_decay = 0.1},
        {.lr = 0.05, .momentum = 0.9},
        {.lr = 0.05, .momentum = 0.9, .dampening = 0.5, .weight_decay = 0.01},
        {.lr = 0.05, .momentum = 0.8, .weight_decay = 0.1, .nesterov = true},
    };
    int k = 0;
    for (const auto& o : configs) {
        CAPTURE(k++);
        for (bool freeze : {false, true}) {
            CAPTURE(freeze);
            Rng rng{202};
            Fixture model(rng);
            if (freeze) model.ps.freeze([](const Parameter& p) { return p.name == "embed" || p.name == "bias"; });
            const auto initial = copy_of(model.ps.data());
            Optimizer<SGD> opt(model.ps, o);
            RefSGD ref(model.ps, o);
            auto st = opt.state();
            REQUIRE(st.size() == (o.momentum > 0 ? 1u : 0u));
            for (int t = 0; t < 5; ++t) {
                const double lr = o.lr / (1.0 + t);
                model.fill_grads(rng);
                const auto grads_before = copy_of(model.ps.grads());
                opt.step(lr);
                ref.step(model.ps, lr);
                CHECK(bit_equal(model.ps.grads(), grads_before));  // decay must not leak into the gradient slab
                check_params(model, ref.p, initial, 2e-6, 1e-7, "step " + std::to_string(t + 1));
            }
            if (!st.empty()) {
                CHECK(st[0].first == "momentum_buffer");
                check_state(model, st[0].second, ref.buf, 1, "momentum_buffer");
            }
        }
    }
}

// ---- frozen parameters, layout changes, checkpoints ----------------------------------------------------

TEST_CASE("optimizer state covers trainable parameters only; a layout change requires reset_state") {
    Rng rng{303};
    Fixture model(rng);
    model.ps.freeze([](const Parameter& p) { return p.name == "wq"; });
    Optimizer<AdamW> adam(model.ps);
    Optimizer<SGD> sgd(model.ps, {.momentum = 0.9});
    CHECK(adam.state()[0].second.numel() == std::int64_t(model.ps.count() - 30));
    CHECK(sgd.state()[0].second.numel() == std::int64_t(model.ps.count() - 30));
    model.fill_grads(rng);
    adam.step(1e-3);
    sgd.step(1e-3);

    model.ps.unfreeze([](const Parameter& p) { return p.name == "wq"; });
    CHECK_THROWS_WITH_AS(adam.step(1e-3), doctest::Contains("reset_state"), Error);
    CHECK_THROWS_WITH_AS(sgd.step(1e-3), doctest::Contains("reset_state"), Error);
    CHECK(adam.steps() == 1);

    adam.reset_state();
    sgd.reset_state();
    CHECK(adam.steps() == 0);
    CHECK(adam.state()[1].second.numel() == std::int64_t(model.ps.count()));
    CHECK(to_vector(adam.state()[0].second) == std::vector<double>(model.ps.count(), 0.0));
    model.fill_grads(rng);
    adam.step(1e-3);
    sgd.step(1e-3);
    CHECK(adam.steps() == 1);

    // Nothing trainable: no state, a step only counts.
    model.ps.freeze_all();
    adam.reset_state();
    CHECK(adam.state().empty());
    adam.step(1e-3);
    CHECK(adam.steps() == 1);
}

TEST_CASE("checkpoint round trip: restored state and step count continue bit-exactly") {
    auto run = [](auto make_opt) {
        Rng rng{404};
        Fixture a(rng);
        auto opt_a = make_opt(a.ps);
        Rng grads{405};
        for (int t = 0; t < 3; ++t) {
            a.fill_grads(grads);
            opt_a.step(1e-2);
        }
        // "Save": parameters, state slabs, step count.
        const auto params = copy_of(a.ps.data());
        std::vector<std::vector<float>> saved;
        for (const auto& entry : opt_a.state()) saved.push_back(copy_of(entry.second));

        // "Load" into a fresh model and optimizer.
        Rng other{999};
        Fixture b(other);
        std::memcpy(b.ps.data().ptr, params.data(), params.size() * sizeof(float));
        auto opt_b = make_opt(b.ps);
        auto st = opt_b.state();
        REQUIRE(st.size() == saved.size());
        for (std::size_t i = 0; i < st.size(); ++i) std::memcpy(st[i].second.ptr, saved[i].data(), saved[i].size() * sizeof(float));
        opt_b.set_steps(opt_a.steps());

        for (int t = 0; t < 2; ++t) {
            Rng g1{500u + unsigned(t)}, g2{500u + unsigned(t)};
            a.fill_grads(g1);
            b.fill_grads(g2);
            opt_a.step(5e-3);
            opt_b.step(5e-3);
        }
        CHECK(bit_equal(b.ps.data(), copy_of(a.ps.data())));
        CHECK(opt_b.steps() == opt_a.steps());
        CHECK(copy_of(a.ps.data()) != params);  // the continuation did move the parameters
    };
    run([](ParameterSet<CPU>& ps) { return Optimizer<AdamW>(ps); });
    run([](ParameterSet<CPU>& ps) { return Optimizer<SGD>(ps, {.momentum = 0.9, .nesterov = true}); });
}

TEST_CASE("optimizer options and arguments are validated") {
    Rng rng{606};
    Fixture model(rng);
    CHECK_THROWS_WITH_AS(Optimizer<AdamW>(model.ps, {.beta1 = 1.0}), doctest::Contains("beta1"), Error);
    CHECK_THROWS_WITH_AS(Optimizer<AdamW>(model.ps, {.beta2 = -0.1}), doctest::Contains("beta2"), Error);
    CHECK_THROWS_WITH_AS(Optimizer<AdamW>(model.ps, {.eps = -1}), doctest::Contains("eps"), Error);
    CHECK_THROWS_WITH_AS(Optimizer<AdamW>(model.ps, {.weight_decay = -0.1}), doctest::Contains("weight_decay"), Error);
    CHECK_THROWS_WITH_AS(Optimizer<SGD>(model.ps, {.nesterov = true}), doctest::Contains("nesterov"), Error);
    CHECK_THROWS_WITH_AS(Optimizer<SGD>(model.ps, {.momentum = -0.5}), doctest::Contains("momentum"), Error);
    Optimizer<AdamW> opt(model.ps);
    CHECK_THROWS_WITH_AS(opt.step(-1e-3), doctest::Contains("learning rate"), Error);
    CHECK_THROWS_WITH_AS(opt.step(NAN), doctest::Contains("learning rate"), Error);
    CHECK_THROWS_WITH_AS(opt.set_steps(-1), doctest::Contains("set_steps"), Error);

    ParameterSet<CPU> unfinished;
    unfinished.add("w", Shape{2, 2});
    CHECK_THROWS_WITH_AS(Optimizer<AdamW>{unfinished}, doctest::Contains("finalized"), Error);
}

// ---- gradient clipping ---------------------------------------------------------------------------------

TEST_CASE("clip_grad_norm: global norm, scaling only above max_norm, returns the norm before clipping") {
    Rng rng{707};
    Fixture model(rng);
    model.ps.freeze([](const Parameter& p) { return p.name == "wk"; });
    model.fill_grads(rng);
    double naive = 0;
    for (const auto& p : model.ps.all())
        if (!p.frozen)
            for (double g : to_vector(p.var.grad)) naive += g * g;
    naive = std::sqrt(naive);
    const auto before = copy_of(model.ps.grads());

    // Above the norm, or no limit: nothing changes, the norm is returned.
    CHECK(clip_grad_norm(model.ps, naive * 1.5) == doctest::Approx(naive).epsilon(1e-12));
    CHECK(bit_equal(model.ps.grads(), before));
    CHECK(clip_grad_norm(model.ps, 0.0) == doctest::Approx(naive).epsilon(1e-12));
    CHECK(clip_grad_norm(model.ps, -1.0) == doctest::Approx(naive).epsilon(1e-12));
    CHECK(bit_equal(model.ps.grads(), before));

    // Below: every gradient scaled by max_norm / (norm + 1e-6); the pre-clip norm is returned.
    const double max_norm = naive / 4;
    CHECK(clip_grad_norm(model.ps, max_norm) == doctest::Approx(naive).epsilon(1e-12));
    const double coef = max_norm / (naive + 1e-6);
    auto after = to_vector(model.ps.grads());
    std::vector<double> want(before.size());
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = double(before[i]) * coef;
    check_close(after, want, 1e-6, 0.0, "clipped gradients");
    CHECK(clip_grad_norm(model.ps, 0.0) == doctest::Approx(max_norm).epsilon(1e-6));

    // Nothing trainable: norm 0.
    model.ps.freeze_all();
    CHECK(clip_grad_norm(model.ps, 1.0) == 0.0);
}

TEST_CASE("sum_squares: accumulated in double, same result for any thread count; scale") {
    Rng rng{808};
    const std::int64_t n = 300007;  // several chunks, parallel path, ragged tail
    auto x = randn({n}, rng, 1.0, DType::f32);
    double naive = 0;
    for (std::int64_t i = 0; i < n; ++i) naive += double(x.data<float>()[i]) * double(x.data<float>()[i]);
    const int threads = CPU::threads();
    const double s_default = sum_squares(CPU{}, x);
    CPU::set_threads(1);
    const double s_one = sum_squares(CPU{}, x);
    CPU::set_threads(3);
    const double s_three = sum_squares(CPU{}, x);
    CPU::set_threads(threads);
    CHECK(s_default == doctest::Approx(naive).epsilon(1e-12));
    CHECK(s_one == s_default);
    CHECK(s_three == s_default);

    // Small integers: exact in any order.
    Buffer<CPU> small(Shape{5}, DType::f64);
    const double vals[5] = {1, -2, 3, 0, 4};
    std::memcpy(small.tensor().ptr, vals, sizeof vals);
    CHECK(sum_squares(CPU{}, small) == 30.0);
    scale(CPU{}, small, -0.5);
    CHECK(to_vector(small) == std::vector<double>{-0.5, 1, -1.5, 0, -2});
}

TEST_CASE("GradScaler: GradScaler's rules under injected overflow; unscale divides; state round-trips") {
    Rng rng{909};
    Fixture model(rng);
    GradScaler s({.init_scale = 65536.0, .growth_factor = 2.0, .backoff_factor = 0.5, .growth_interval = 3});
    CHECK(GradScaler().scale() == 65536.0);  // torch's default start, 2^16
    // A clean step: the gradients come back divided by the scale, nothing is counted.
    model.fill_grads(rng);
    const auto scaled = to_vector(model.ps.grads());
    REQUIRE_FALSE(s.unscale(model.ps));
    auto got = to_vector(model.ps.grads());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == float(scaled[i] / 65536.0));
    s.update(false);
    CHECK(s.scale() == 65536.0);
    CHECK(s.clean_steps() == 1);
    // Injected overflow (an Inf, then a NaN): found, the gradients are left alone, the scale halves each time,
    // the clean-step count restarts, both skips are counted.
    for (float bad : {INFINITY, NAN}) {
        model.fill_grads(rng);
        model.ps.grads().data<float>()[model.ps.grads().numel() / 2] = bad;
        const auto before = copy_of(model.ps.grads());
        CHECK(s.unscale(model.ps));
        CHECK(bit_equal(model.ps.grads(), before));
        s.update(true);
    }
    CHECK(s.scale() == 16384.0);
    CHECK(s.clean_steps() == 0);
    CHECK(s.skipped() == 2);
    // growth_interval clean steps in a row double it (2000 by default; 3 here).
    for (int i = 0; i < 2; ++i) s.update(false);
    CHECK(s.scale() == 16384.0);
    s.update(false);
    CHECK(s.scale() == 32768.0);
    CHECK(s.clean_steps() == 0);
    GradScaler d;
    for (int i = 0; i < 1999; ++i) d.update(false);
    CHECK(d.scale() == 65536.0);
    d.update(false);
    CHECK(d.scale() == 131072.0);
    // The state goes through a checkpoint and comes back.
    GradScaler r;
    r.restore(s.state(), "ckpt");
    CHECK(r.scale() == s.scale());
    CHECK(r.skipped() == 2);
    CHECK_THROWS_WITH_AS(r.restore(nlohmann::json{{"scale", -1}, {"clean_steps", 0}, {"skipped", 0}}, "ckpt"),
                         doctest::Contains("ckpt: grad_scaler.scale must be positive"), Error);
    CHECK_THROWS_WITH_AS(GradScaler({.backoff_factor = 1.5}), doctest::Contains("backoff_factor must be in (0, 1)"), Error);
}
