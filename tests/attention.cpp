// Causal grouped-query attention: forward and log-sum-exp against a plain double loop, gradients against
// finite differences (GQA, tile boundaries, KV-cache decoding, one Var passed as several inputs), and
// results that do not depend on the thread count.
#include "support/gradcheck.hpp"

#include <array>
#include <limits>
#include <optional>
#include <tuple>

using namespace minitrain;
using namespace mt_test;

namespace {

// B = batch, Tq = query rows, Tk = key rows allocated, L = valid key rows, H, KV = heads, D = head dim.
struct Case {
    int B, Tq, Tk, L, H, KV, D;
};

std::string name(const Case& c) {
    return "B=" + std::to_string(c.B) + " Tq=" + std::to_string(c.Tq) + " Tk=" + std::to_string(c.Tk) +
           " L=" + std::to_string(c.L) + " H=" + std::to_string(c.H) + " KV=" + std::to_string(c.KV) +
           " D=" + std::to_string(c.D);
}

struct Inputs {
    Buffer<CPU> q, k, v;  // (B, Tq, H, D), (B, Tk, KV, D), (B, Tk, KV, D)
};

/// Random q, k, v; key rows at or past L hold NaN, so any read of them shows up in the results.
Inputs make_inputs(const Case& c, Rng& rng) {
    Inputs in{randn({c.B, c.Tq, c.H, c.D}, rng), randn({c.B, c.Tk, c.KV, c.D}, rng),
              randn({c.B, c.Tk, c.KV, c.D}, rng)};
    for (int b = 0; b < c.B; ++b)
        for (int t = c.L; t < c.Tk; ++t)
            for (int i = 0; i < c.KV * c.D; ++i) {
                in.k.data<double>()[(b * c.Tk + t) * c.KV * c.D + i] = std::numeric_limits<double>::quiet_NaN();
                in.v.data<double>()[(b * c.Tk + t) * c.KV * c.D + i] = std::numeric_limits<double>::quiet_NaN();
            }
    return in;
}

/// The definition, one query row at a time: explicit softmax over the keys j <= position, in double.
void reference(const Case& c, const Inputs& in, std::vector<double>& out, std::vector<double>& lse) {
    const double* q = in.q.data<double>();
    const double* k = in.k.data<double>();
    const double* v = in.v.data<double>();
    const double scale = 1.0 / std::sqrt(double(c.D));
    out.assign(std::size_t(c.B) * c.Tq * c.H * c.D, 0.0);
    lse.assign(std::size_t(c.B) * c.H * c.Tq, 0.0);
    std::vector<double> s(std::size_t(c.L));
    for (int b = 0; b < c.B; ++b)
        for (int h = 0; h < c.H; ++h)
            for (int i = 0; i < c.Tq; ++i) {
                const int pos = c.L - c.Tq + i, kvh = h / (c.H / c.KV);
                double m = -INFINITY;
                for (int j = 0; j <= pos; ++j) {
                    double dot = 0;
                    for (int e = 0; e < c.D; ++e)
                        dot += q[((b * c.Tq + i) * c.H + h) * c.D + e] * k[((b * c.Tk + j) * c.KV + kvh) * c.D + e];
                    s[j] = dot * scale;
                    m = std::max(m, s[j]);
                }
                double z = 0;
                for (int j = 0; j <= pos; ++j) z += std::exp(s[j] - m);
                lse[(b * c.H + h) * c.Tq + i] = m + std::log(z);
                for (int j = 0; j <= pos; ++j)
                    for (int e = 0; e < c.D; ++e)
                        out[((b * c.Tq + i) * c.H + h) * c.D + e] +=
                            std::exp(s[j] - m) / z * v[((b * c.Tk + j) * c.KV + kvh) * c.D + e];
            }
}

/// The kernel itself, so that lse can be checked too; inputs converted to `dtype` first.
void kernel_forward(const Case& c, const Inputs& in, DType dtype, std::vector<double>& out, std::vector<double>& lse) {
    auto q = converted(in.q, dtype), k = converted(in.k, dtype), v = converted(in.v, dtype);
    Buffer<CPU> o(q.tensor().shape, dtype), l(Shape{c.B, c.H, c.Tq}, dtype);
    Buffer<CPU> scratch(attention_scratch_shape(CPU{}, q, k, false), dtype);
    attention_forward(CPU{}, o, l, q, k, v, c.L, 1.0 / std::sqrt(double(c.D)), scratch);
    out = to_vector(o);
    lse = to_vector(l);
}

Var& attend(Graph<CPU>& g, std::vector<Var*>& v, int kv_len) { return attention(g, *v[0], *v[1], *v[2], kv_len); }

}  // namespace

TEST_CASE("attention: forward and lse equal the definition, f64 and f32") {
    Rng rng{21};
    for (int T : {1, 7, 33, 130})
        for (auto [H, KV] : {std::pair{2, 2}, {4, 1}})
            for (int D : {6, 16}) {
                const Case c{2, T, T, T, H, KV, D};
                INFO(name(c));
                Inputs in = make_inputs(c, rng);
                std::vector<double> want_out, want_lse, out, lse;
                reference(c, in, want_out, want_lse);
                kernel_forward(c, in, DType::f64, out, lse);
                check_close(out, want_out, 1e-12, 1e-12, "f64 output");
                check_close(lse, want_lse, 1e-12, 1e-12, "f64 lse");
                kernel_forward(c, in, DType::f32, out, lse);
                check_close(out, want_out, 1e-4, 1e-5, "f32 output");
                check_close(lse, want_lse, 1e-5, 1e-5, "f32 lse");
            }
}

TEST_CASE("attention: decoding against a KV cache reads only the valid rows and matches full attention") {
    Rng rng{22};
    for (int Tq : {1, 3}) {
        const Case c{2, Tq, 12, 9, 4, 2, 6};  // 9 valid rows of a 12-row cache; rows 9..11 hold NaN
        INFO(name(c));
        Inputs in = make_inputs(c, rng);
        std::vector<double> want_out, want_lse, out, lse;
        reference(c, in, want_out, want_lse);
        kernel_forward(c, in, DType::f64, out, lse);
        check_close(out, want_out, 1e-12, 1e-12, "output vs definition");
        check_close(lse, want_lse, 1e-12, 1e-12, "lse vs definition");

        // The same queries as the last rows of a training-style pass over the 9 valid positions.
        const Case full{2, 9, 9, 9, 4, 2, 6};
        Inputs all{randn({2, 9, 4, 6}, rng), Buffer<CPU>({2, 9, 2, 6}, DType::f64),
                   Buffer<CPU>({2, 9, 2, 6}, DType::f64)};
        for (int b = 0; b < 2; ++b) {
            for (int i = 0; i < 9 * 2 * 6; ++i) {
                all.k.data<double>()[b * 9 * 12 + i] = in.k.data<double>()[b * 12 * 12 + i];
                all.v.data<double>()[b * 9 * 12 + i] = in.v.data<double>()[b * 12 * 12 + i];
            }
            for (int i = 0; i < Tq * 4 * 6; ++i)
                all.q.data<double>()[(b * 9 + 9 - Tq) * 24 + i] = in.q.data<double>()[b * Tq * 24 + i];
        }
        std::vector<double> full_out, full_lse;
        kernel_forward(full, all, DType::f64, full_out, full_lse);
        std::vector<double> tail;
        for (int b = 0; b < 2; ++b)
            for (int i = 0; i < Tq * 24; ++i) tail.push_back(full_out[std::size_t((b * 9 + 9 - Tq) * 24 + i)]);
        check_close(out, tail, 1e-12, 1e-12, "decoding output vs the last rows of full attention");
    }
}

TEST_CASE("attention: gradients of q, k and v, with and without grouped heads") {
    Rng rng{23};
    for (const Case& c : {Case{2, 5, 5, 5, 2, 2, 4}, Case{2, 7, 7, 7, 4, 1, 6}, Case{2, 6, 6, 6, 6, 2, 3},
                          Case{1, 70, 70, 70, 2, 1, 3}}) {  // 70 rows: two query tiles
        INFO(name(c));
        Inputs in = make_inputs(c, rng);
        gradcheck({{&in.q}, {&in.k}, {&in.v}},
                  [L = c.L](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return attend(g, v, L); });
    }
}

TEST_CASE("attention: gradients when decoding from a cache, and rows past kv_len get zero") {
    Rng rng{24};
    for (int Tq : {1, 3}) {
        const Case c{2, Tq, 12, 9, 4, 2, 5};
        INFO(name(c));
        Inputs in = make_inputs(c, rng);
        // Finite differences cannot step through NaN: give the unused rows finite values for this check.
        for (auto* t : {&in.k, &in.v})
            for (std::int64_t i = 0; i < t->tensor().numel(); ++i)
                if (std::isnan(t->data<double>()[i])) t->data<double>()[i] = 0.5;
        gradcheck({{&in.q}, {&in.k}, {&in.v}},
                  [L = c.L](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return attend(g, v, L); },
                  {.max_probes = 400});

        Graph<CPU> g;
        Var &q = g.leaf(in.q, true), &k = g.leaf(in.k, true), &v = g.leaf(in.v, true);
        Var& out = attention(g, q, k, v, c.L);
        Buffer<CPU> up = randn(out.data.shape, rng);
        g.backward(out, up);
        for (Var* x : {&k, &v}) {
            auto grad = to_vector(x->grad);
            for (int b = 0; b < c.B; ++b)
                for (int i = c.L * c.KV * c.D; i < c.Tk * c.KV * c.D; ++i)
                    REQUIRE(grad[std::size_t(b * c.Tk * c.KV * c.D + i)] == 0.0);
        }
    }
}

TEST_CASE("attention: inputs that need no gradient get none; one Var as several inputs accumulates") {
    Rng rng{25};
    const Case c{2, 9, 9, 9, 3, 3, 4};
    Inputs in = make_inputs(c, rng);
    auto f = [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return attend(g, v, -1); };
    gradcheck({{&in.q, false}, {&in.k}, {&in.v}}, f);
    gradcheck({{&in.q}, {&in.k, false}, {&in.v, false}}, f);
    gradcheck({{&in.q}, {&in.k}, {&in.v, false}}, f);
    // Self-attention on one tensor: dq, dk and dv land in a single buffer.
    gradcheck({{&in.q}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return attention(g, *v[0], *v[0], *v[0]); });
    // k doubling as v, with grouped heads.
    auto q6 = randn({2, 9, 6, 4}, rng);
    gradcheck({{&q6}, {&in.k}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return attention(g, *v[0], *v[1], *v[1]);
    });
}

TEST_CASE("attention: the kernel honours each flag when dq, dk and dv share one buffer") {
    // Which of the three arrives first (and so overwrites) depends on the order the op's closure
    // evaluates grad_of, which C++ leaves unspecified: every choice must give the same sum.
    Rng rng{28};
    const Shape s{2, 70, 2, 3};
    auto x = randn(s, rng), dout = randn(s, rng);
    const double scale = 0.7;
    Buffer<CPU> out(s, DType::f64), lse({2, 2, 70}, DType::f64);
    Buffer<CPU> fwd(attention_scratch_shape(CPU{}, x, x, false), DType::f64);
    Buffer<CPU> bwd(attention_scratch_shape(CPU{}, x, x, true), DType::f64);
    attention_forward(CPU{}, out, lse, x, x, x, -1, scale, fwd);
    std::vector<double> want(std::size_t(x.tensor().numel()), 0.0);
    for (int which = 0; which < 3; ++which) {
        Buffer<CPU> d(s, DType::f64);
        GradOut none{}, only{d, false};
        attention_backward(CPU{}, which == 0 ? only : none, which == 1 ? only : none, which == 2 ? only : none, x, x, x,
                           out, lse, dout, -1, scale, bwd);
        auto part = to_vector(d);
        for (std::size_t i = 0; i < want.size(); ++i) want[i] += part[i];
    }
    for (int first = 0; first < 4; ++first) {  // first == 3: all three add to what is there
        INFO("destination written first: " << (first < 3 ? "dq dk dv"[first * 3 + 1] : '-'));
        Buffer<CPU> d = randn(s, rng);
        auto before = to_vector(d);
        GradOut g[3] = {{d, first != 0}, {d, first != 1}, {d, first != 2}};
        attention_backward(CPU{}, g[0], g[1], g[2], x, x, x, out, lse, dout, -1, scale, bwd);
        auto got = to_vector(d);
        if (first == 3)
            for (std::size_t i = 0; i < got.size(); ++i) got[i] -= before[i];
        check_close(got, want, 1e-12, 1e-12, "shared gradient buffer");
    }
}

TEST_CASE("attention: results are identical on 1 and 2 threads, and run to run") {
    Rng rng{26};
    const Case c{2, 130, 130, 130, 4, 2, 16};
    Inputs in = make_inputs(c, rng);
    Buffer<CPU> up = randn({2, 130, 4, 16}, rng);
    auto run = [&](int threads) {
        CPU::set_threads(threads);
        Graph<CPU> g;
        Var &q = g.leaf(in.q, true), &k = g.leaf(in.k, true), &v = g.leaf(in.v, true);
        Var& out = attention(g, q, k, v);
        std::vector<std::vector<double>> r{to_vector(out.data)};
        g.backward(out, up);
        for (Var* x : {&q, &k, &v}) r.push_back(to_vector(x->grad));
        return r;
    };
    const int before = CPU::threads();
    auto one = run(1), two = run(2), again = run(2);
    CPU::set_threads(before);
    for (std::size_t i = 0; i < one.size(); ++i) {
        INFO("result " << i << " (output, dq, dk, dv)");
        CHECK(one[i] == two[i]);
        CHECK(two[i] == again[i]);
    }
}

TEST_CASE("attention: bad shapes and kv_len are reported") {
    Rng rng{27};
    Graph<CPU> g;
    auto q = randn({1, 4, 3, 8}, rng), k = randn({1, 6, 2, 8}, rng), k4 = randn({1, 6, 1, 8}, rng);
    auto q4 = randn({1, 4, 4, 8}, rng);
    CHECK_THROWS_WITH_AS(attention(g, g.leaf(q), g.leaf(k), g.leaf(k)),
                         "attention: 3 query heads cannot be shared by 2 kv heads", Error);
    CHECK_THROWS_WITH_AS(attention(g, g.leaf(q4), g.leaf(k4), g.leaf(k4), 7),
                         "attention: kv_len 7 must lie between the 4 query rows and the 6 key rows of k", Error);
    CHECK_THROWS_WITH_AS(attention(g, g.leaf(q4), g.leaf(k4), g.leaf(k4), 3),
                         "attention: kv_len 3 must lie between the 4 query rows and the 6 key rows of k", Error);
    CHECK_NOTHROW(attention(g, g.leaf(q4), g.leaf(k4), g.leaf(k4), 4));
}

// ---- bf16 autocast (core/precision.hpp): the products of linear and attention in bf16, against f64 ----------

namespace {

/// |a - b| <= bound[i] for every element; reports the first few failures and the worst ratio.
void check_within(const std::vector<double>& got, const std::vector<double>& want, const std::vector<double>& bound,
                  const char* what) {
    REQUIRE(got.size() == want.size());
    int bad = 0;
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double e = std::fabs(got[i] - want[i]);
        worst = std::max(worst, e / bound[i]);
        if (!(e <= bound[i]) && bad++ < 3)
            FAIL_CHECK(what << "[" << i << "]: got " << got[i] << ", want " << want[i] << ", bound " << bound[i]);
    }
    MESSAGE(std::string(what) << ": worst error / bound = " << worst);
}

double rel_l2(const std::vector<double>& got, const std::vector<double>& want) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < got.size(); ++i) num += (got[i] - want[i]) * (got[i] - want[i]), den += want[i] * want[i];
    return std::sqrt(num / den);
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// Rounding an input to bf16 changes it by at most u = 2^-9 relative, so one product a b moves by at most
// (2u + u^2)|a||b|; the f32 accumulation of K terms adds at most K 2^-24 sum |a||b|. Hence for a dot product
//   |bf16 result - exact| <= (2^-8 + 2^-18 + K 2^-24) sum_k |a_k||b_k|.
constexpr double u_bf16 = 1.0 / 512;
double dot_bound(double sum_abs, int K) { return (2 * u_bf16 + u_bf16 * u_bf16 + K * 0x1p-24) * sum_abs + 1e-30; }

}  // namespace

TEST_CASE("bf16 autocast: linear forward and backward within the rounding bound of the f64 product") {
    Rng rng{41};
    const int N = 37, K = 70, M = 29;  // odd sizes: padding of the bf16 pairs and of the 12 x 32 tiles
    auto x = randn({N, K}, rng), w = randn({M, K}, rng), dy = randn({N, M}, rng);
    auto xf = converted(x, DType::f32), wf = converted(w, DType::f32), dyf = converted(dy, DType::f32);
    Buffer<CPU> y({N, M}, DType::f32), dx({N, K}, DType::f32), dw({M, K}, DType::f32);
    Buffer<CPU> y32({N, M}, DType::f32);
    linear_forward(CPU{}, y32, xf, wf);  // f32 before the scope
    {
        Autocast bf16(Precision::bf16);
        REQUIRE(matmul_precision() == Precision::bf16);
        linear_forward(CPU{}, y, xf, wf);
        linear_backward(CPU{}, GradOut{dx, false}, GradOut{dw, false}, xf, wf, dyf);
    }
    CHECK(matmul_precision() == Precision::f32);  // the scope restores f32
    const double *X = x.data<double>(), *W = w.data<double>(), *DY = dy.data<double>();
    std::vector<double> want, bound;
    for (int n = 0; n < N; ++n)
        for (int m = 0; m < M; ++m) {
            double s = 0, a = 0;
            for (int k = 0; k < K; ++k) s += X[n * K + k] * W[m * K + k], a += std::fabs(X[n * K + k] * W[m * K + k]);
            want.push_back(s), bound.push_back(dot_bound(a, K));
        }
    check_within(to_vector(y), want, bound, "y = x w^T");
    // The bf16 path is really taken: its error is far above f32's (about 1e-6 relative here).
    CHECK(max_abs_diff(to_vector(y), to_vector(y32)) > 1e-3);
    want.clear(), bound.clear();
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
            double s = 0, a = 0;
            for (int m = 0; m < M; ++m) s += DY[n * M + m] * W[m * K + k], a += std::fabs(DY[n * M + m] * W[m * K + k]);
            want.push_back(s), bound.push_back(dot_bound(a, M));
        }
    check_within(to_vector(dx), want, bound, "dx = dy w");
    want.clear(), bound.clear();
    for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) {
            double s = 0, a = 0;
            for (int n = 0; n < N; ++n) s += DY[n * M + m] * X[n * K + k], a += std::fabs(DY[n * M + m] * X[n * K + k]);
            want.push_back(s), bound.push_back(dot_bound(a, N));
        }
    check_within(to_vector(dw), want, bound, "dw = dy^T x");
}

TEST_CASE("bf16 autocast: attention forward within the stated bound of the definition, backward within 1.5%") {
    Rng rng{42};
    const Case c{2, 70, 70, 70, 4, 2, 16};  // crosses the 64-row tile; grouped heads
    Inputs in = make_inputs(c, rng);
    std::vector<double> want_out, want_lse, out, lse, out32, lse32;
    reference(c, in, want_out, want_lse);
    kernel_forward(c, in, DType::f32, out32, lse32);
    {
        Autocast bf16(Precision::bf16);
        kernel_forward(c, in, DType::f32, out, lse);
    }
    // Bound, per query row (first order in u = 2^-9): each score s_j = scale q.k_j moves by at most
    // e_s = scale (2u + K 2^-24) max_j sum |q||k_j| (dot_bound), which moves each probability by at most a
    // factor e^(2 e_s); P and V are then rounded for P V, 2u more. So
    //   |out_d - exact_d| <= ((e^(2 e_s) - 1) + 2u + 2^-20) sum_j p_j |v_jd|  (+ f32 noise).
    const double* q = in.q.data<double>();
    const double* k = in.k.data<double>();
    const double* v = in.v.data<double>();
    const double scale = 1.0 / std::sqrt(double(c.D));
    std::vector<double> bound(want_out.size());
    for (int b = 0; b < c.B; ++b)
        for (int h = 0; h < c.H; ++h)
            for (int i = 0; i < c.Tq; ++i) {
                const int kvh = h / (c.H / c.KV);
                double es = 0;
                std::vector<double> p(std::size_t(i + 1));
                for (int j = 0; j <= i; ++j) {
                    double a = 0, s = 0;
                    for (int e = 0; e < c.D; ++e) {
                        const double qe = q[((b * c.Tq + i) * c.H + h) * c.D + e], ke = k[((b * c.Tk + j) * c.KV + kvh) * c.D + e];
                        a += std::fabs(qe * ke), s += qe * ke;
                    }
                    es = std::max(es, scale * dot_bound(a, c.D));
                    p[j] = std::exp(s * scale - want_lse[(b * c.H + h) * c.Tq + i]);
                }
                for (int e = 0; e < c.D; ++e) {
                    double pv = 0;
                    for (int j = 0; j <= i; ++j) pv += p[j] * std::fabs(v[((b * c.Tk + j) * c.KV + kvh) * c.D + e]);
                    bound[((b * c.Tq + i) * c.H + h) * c.D + e] = (std::expm1(2 * es) + 2 * u_bf16 + 0x1p-20) * pv + 1e-6;
                }
            }
    check_within(out, want_out, bound, "attention output");
    CHECK(max_abs_diff(out, out32) > 1e-4);  // the bf16 path is taken
    // lse comes from the f32 softmax of bf16-product scores: within e_s of the exact one (<= 0.05 here).
    CHECK(max_abs_diff(lse, want_lse) < 0.05);

    // Backward: the f64 kernel (the definition to 1e-12, tested above) against the f32 kernel under bf16.
    // Every gradient passes through two or three bf16 products (2u relative each), so elements move by up to
    // about 1.2%; in the L2 norm over all elements the errors partly cancel. Measured: about 0.3%.
    auto dout = randn({c.B, c.Tq, c.H, c.D}, rng);
    auto grads = [&](DType dt, bool autocast) {
        auto qd = converted(in.q, dt), kd = converted(in.k, dt), vd = converted(in.v, dt), dod = converted(dout, dt);
        Buffer<CPU> o(qd.tensor().shape, dt), l(Shape{c.B, c.H, c.Tq}, dt);
        Buffer<CPU> dq(qd.tensor().shape, dt), dk(kd.tensor().shape, dt), dv(vd.tensor().shape, dt);
        std::optional<Autocast> scope;
        if (autocast) scope.emplace(Precision::bf16);
        Buffer<CPU> s1(attention_scratch_shape(CPU{}, qd, kd, false), dt), s2(attention_scratch_shape(CPU{}, qd, kd, true), dt);
        const double sc = 1.0 / std::sqrt(double(c.D));
        attention_forward(CPU{}, o, l, qd, kd, vd, c.L, sc, s1);
        attention_backward(CPU{}, GradOut{dq, false}, GradOut{dk, false}, GradOut{dv, false}, qd, kd, vd, o, l, dod, c.L,
                           sc, s2);
        return std::array<std::vector<double>, 3>{to_vector(dq), to_vector(dk), to_vector(dv)};
    };
    const auto exact = grads(DType::f64, false), mixed = grads(DType::f32, true);
    const char* names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i) {
        const double r = rel_l2(mixed[i], exact[i]);
        MESSAGE(std::string(names[i]) << ": relative L2 error " << r);
        CHECK(r < 0.015);
        CHECK(r > 1e-4);  // bf16, not f32 (f32 gives about 1e-6)
    }
}
