// tests/support/gradcheck.hpp
// Test helpers: random inputs, and the gradient check every op goes through.
//
// gradcheck(inputs, fwd): the op under test runs in double precision on random inputs; its backward,
// seeded with a random upstream gradient R, must match central finite differences of f(x) = <op(x), R>
// computed in double. The same forward and backward then run in f32 and must agree with the f64 run.
// NaN or Inf anywhere fails the check (every comparison is written so that NaN cannot pass).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

// Only the graph and the CPU kernels: test files include the higher layers they exercise themselves,
// which keeps each test executable's compile time down.
#include <minitrain/autograd/graph.hpp>
#include <minitrain/backend/cpu/ops.hpp>
#include <minitrain/memory/parameters.hpp>
#include <minitrain/ops/ops.hpp>

namespace mt_test {

using namespace minitrain;

/// A CPU buffer of the given type filled with normal(0, scale) numbers from rng.
inline Buffer<CPU> randn(Shape shape, Rng& rng, double scale = 1.0, DType dtype = DType::f64) {
    Buffer<CPU> b(shape, dtype);
    dispatch_floating(dtype, "randn", [&]<class T>() {
        for (std::int64_t i = 0; i < b.tensor().numel(); ++i) b.data<T>()[i] = T(scale * rng.normal());
    });
    return b;
}

/// Uniform integers in [lo, hi) as an i32 buffer.
inline Buffer<CPU> randint(Shape shape, Rng& rng, int lo, int hi) {
    Buffer<CPU> b(shape, DType::i32);
    for (std::int64_t i = 0; i < b.tensor().numel(); ++i) b.data<std::int32_t>()[i] = lo + int(rng.below(hi - lo));
    return b;
}

/// Copy of a floating tensor into doubles.
inline std::vector<double> to_vector(const Tensor& t) {
    std::vector<double> v(std::size_t(t.numel()));
    dispatch_floating(t.dtype, "to_vector", [&]<class T>() {
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = double(t.data<T>()[i]);
    });
    return v;
}

/// A floating buffer converted to another floating type.
inline Buffer<CPU> converted(const Tensor& t, DType to) {
    Buffer<CPU> b(t.shape, to);
    auto v = to_vector(t);
    dispatch_floating(to, "converted", [&]<class T>() {
        for (std::size_t i = 0; i < v.size(); ++i) b.data<T>()[i] = T(v[i]);
    });
    return b;
}

inline bool all_finite(const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

/// Max |a - b| / (atol + rtol * max(|a|, |b|)) over all elements: <= 1 means close. NaN gives +inf.
inline double closeness(const std::vector<double>& a, const std::vector<double>& b, double rtol, double atol) {
    if (a.size() != b.size()) return INFINITY;
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        double diff = std::abs(a[i] - b[i]);
        double r = diff == 0 ? 0 : diff / (atol + rtol * std::max(std::abs(a[i]), std::abs(b[i])));
        if (!(r <= worst)) worst = std::isnan(r) ? INFINITY : r;
    }
    return worst;
}

/// Elementwise comparison with a doctest failure that names what differed.
inline void check_close(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol,
                        const std::string& what) {
    INFO(what);
    REQUIRE(got.size() == want.size());
    CHECK(all_finite(got));
    std::size_t worst_i = 0;
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        double diff = std::abs(got[i] - want[i]);  // NaN stays NaN; exact equality passes any tolerance
        double r = diff == 0 ? 0 : diff / (atol + rtol * std::max(std::abs(got[i]), std::abs(want[i])));
        if (!(r <= worst)) {
            worst = std::isnan(r) ? INFINITY : r;
            worst_i = i;
        }
    }
    INFO("worst element " << worst_i << ": got " << got[worst_i] << ", want " << want[worst_i]);
    CHECK(worst <= 1.0);
}

struct GradcheckOptions {
    double eps = 1e-6;
    double rtol = 1e-6, atol = 1e-8;  // finite differences vs analytic, both in f64
    double f32_rtol = 1e-4;           // f32 run vs f64 run, relative to each tensor's largest element
    std::size_t max_probes = 48;      // finite-difference probes per input (all elements if fewer)
    bool check_f32 = true;
    std::uint64_t seed = 1234;
};

/// One input of the op under test: its f64 value and whether it needs a gradient.
struct GradInput {
    Buffer<CPU>* value;
    bool requires_grad = true;
};

using Forward = std::function<Var&(Graph<CPU>&, std::vector<Var*>&)>;

namespace detail {
struct Run {
    std::vector<double> out;
    std::vector<std::vector<double>> grads;  // empty for inputs without gradient
};

inline Run run(const std::vector<Tensor>& xs, const std::vector<bool>& needs, const Forward& fwd,
               const std::vector<double>& upstream) {
    Graph<CPU> g;
    std::vector<Var*> vars;
    for (std::size_t i = 0; i < xs.size(); ++i) vars.push_back(&g.leaf(xs[i], needs[i]));
    Var& out = fwd(g, vars);
    Run r{to_vector(out.data), {}};
    Buffer<CPU> up(out.data.shape, out.data.dtype);
    dispatch_floating(out.data.dtype, "upstream", [&]<class T>() {
        for (std::size_t i = 0; i < upstream.size(); ++i) up.data<T>()[i] = T(upstream[i]);
    });
    g.backward(out, up.tensor());
    for (std::size_t i = 0; i < xs.size(); ++i) {
        CHECK_MESSAGE(vars[i]->grad.defined() == bool(needs[i]),
                      "input " << i << (needs[i] ? " needs a gradient but got none"
                                                 : " needs no gradient but one was computed"));
        r.grads.push_back(vars[i]->grad.defined() ? to_vector(vars[i]->grad) : std::vector<double>{});
    }
    return r;
}

inline double objective(const std::vector<Tensor>& xs, const Forward& fwd, const std::vector<double>& upstream) {
    Graph<CPU> g;
    NoGrad<CPU> ng(g);
    std::vector<Var*> vars;
    for (auto& x : xs) vars.push_back(&g.leaf(x, false));
    auto out = to_vector(fwd(g, vars).data);
    double f = 0;
    for (std::size_t i = 0; i < out.size(); ++i) f += out[i] * upstream[i];
    return f;
}
}  // namespace detail

/// Checks fwd's backward against finite differences (f64) and its f32 path against its f64 path.
inline void gradcheck(const std::vector<GradInput>& inputs, const Forward& fwd, GradcheckOptions opt = {}) {
    Rng rng{opt.seed, 0};
    std::vector<Tensor> xs;
    std::vector<bool> needs;
    for (auto& in : inputs) {
        xs.push_back(in.value->tensor());
        needs.push_back(in.requires_grad);
    }
    // Upstream gradient: shape of the output, found by one no-grad evaluation.
    std::vector<double> upstream;
    {
        Graph<CPU> g;
        NoGrad<CPU> ng(g);
        std::vector<Var*> vars;
        for (auto& x : xs) vars.push_back(&g.leaf(x, false));
        upstream.resize(std::size_t(fwd(g, vars).data.numel()));
        for (auto& u : upstream) u = rng.normal();
    }
    detail::Run f64 = detail::run(xs, needs, fwd, upstream);
    CHECK_MESSAGE(all_finite(f64.out), "the forward output holds NaN or Inf");

    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!needs[i] || xs[i].dtype != DType::f64) continue;
        double* x = xs[i].data<double>();
        std::size_t n = std::size_t(xs[i].numel());
        std::vector<std::size_t> probes;
        if (n <= opt.max_probes)
            for (std::size_t k = 0; k < n; ++k) probes.push_back(k);
        else
            for (std::size_t k = 0; k < opt.max_probes; ++k) probes.push_back(rng.below(n));
        std::vector<double> analytic, numeric;
        for (std::size_t k : probes) {
            double saved = x[k];
            x[k] = saved + opt.eps;
            double fp = detail::objective(xs, fwd, upstream);
            x[k] = saved - opt.eps;
            double fm = detail::objective(xs, fwd, upstream);
            x[k] = saved;
            numeric.push_back((fp - fm) / (2 * opt.eps));
            analytic.push_back(f64.grads[i][k]);
        }
        check_close(analytic, numeric, opt.rtol, opt.atol,
                    "gradient of input " + std::to_string(i) + ": backward vs central differences");
    }

    if (!opt.check_f32) return;
    std::vector<Buffer<CPU>> owned;
    std::vector<Tensor> xs32;
    for (auto& x : xs) {
        if (x.dtype == DType::f64) {
            owned.push_back(converted(x, DType::f32));
            xs32.push_back(owned.back().tensor());
        } else {
            xs32.push_back(x);
        }
    }
    detail::Run f32 = detail::run(xs32, needs, fwd, upstream);
    auto scale = [](const std::vector<double>& v) {
        double m = 0;
        for (double x : v) m = std::max(m, std::abs(x));
        return m;
    };
    check_close(f32.out, f64.out, 0, opt.f32_rtol * scale(f64.out) + 1e-30, "f32 forward vs f64 forward");
    for (std::size_t i = 0; i < inputs.size(); ++i)
        if (needs[i] && xs[i].dtype == DType::f64)
            check_close(f32.grads[i], f64.grads[i], 0, opt.f32_rtol * scale(f64.grads[i]) + 1e-30,
                        "f32 gradient of input " + std::to_string(i) + " vs f64");
}

}  // namespace mt_test
