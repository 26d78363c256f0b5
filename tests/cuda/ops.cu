// Every CUDA kernel against the CPU backend on random inputs: each op runs through the autograd graph on
// both backends with the same inputs and the same upstream gradient, and the GPU's output and input
// gradients must match the CPU's, relative to each tensor's largest element: 1e-5 in f32 (cuBLAS runs
// without TF32 by default), 1e-11 in f64. Dropout masks must match bit for bit. Also: rope tables,
// optimizer kernels, device-side data errors, host tensors handed to the GPU.
//
// Without a CUDA device every test case reports "[skipped] no CUDA device: <reason>" and passes.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include <minitrain/cuda.hpp>

#include "support/gradcheck.hpp"

using namespace minitrain;
using namespace mt_test;

namespace {

/// True when a GPU can run the test; otherwise says why (doctest MESSAGE) and the test returns early.
bool have_gpu() {
    static std::string reason;
    static const bool ok = CUDA::available(&reason);
    if (!ok) MESSAGE("[skipped] no CUDA device: " << reason);
    return ok;
}
#define MT_REQUIRE_GPU() \
    if (!have_gpu()) return

/// A backend copy of a host tensor.
template <class B>
Buffer<B> upload(const Tensor& host) {
    Buffer<B> b(host.shape, host.dtype);
    B::from_host(b.tensor(), host.ptr);
    return b;
}

/// A host copy of a tensor of either backend.
Buffer<CPU> host_copy(const Tensor& t) {
    Buffer<CPU> h(t.shape, t.dtype);
    if (t.device == Device::cuda)
        CUDA::to_host(h.tensor().ptr, t);
    else
        CPU::to_host(h.tensor().ptr, t);
    return h;
}
std::vector<double> download(const Tensor& t) { return to_vector(host_copy(t)); }
std::vector<std::int32_t> download_i32(const Tensor& t) {
    Buffer<CPU> h = host_copy(t);
    return std::vector<std::int32_t>(h.data<std::int32_t>(), h.data<std::int32_t>() + t.numel());
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

/// got vs want relative to want's largest element (as tests/model.cpp compares); rtol 0 = bitwise.
void check_tensor(const std::vector<double>& got, const std::vector<double>& want, double rtol, const std::string& what) {
    check_close(got, want, rtol, rtol * max_abs(want) + (rtol > 0 ? 1e-30 : 0.0), what);
}

/// Random normal host tensor of the given type.
Buffer<CPU> rnd(Shape s, DType dt, Rng& rng, double scale = 1.0) { return randn(s, rng, scale, dt); }

/// An op input: floating tensors become graph leaves (with or without gradient), i32 tensors are passed
/// as plain tensors (ids, targets).
struct Input {
    const Tensor* host;
    bool grad = true;
};

struct Result {
    std::vector<double> out;
    std::vector<std::vector<double>> grads;  // per input; empty when none
};

/// Runs fwd(g, vars, tensors) -> Var& on backend B, then backward from a fixed random upstream gradient.
template <class B, class F>
Result run_on(const std::vector<Input>& ins, F& fwd, std::uint64_t seed) {
    std::vector<Buffer<B>> bufs;
    bufs.reserve(ins.size());
    Graph<B> g(0, 0, seed);
    std::vector<Var*> vars;
    std::vector<Tensor> ts;
    for (const Input& in : ins) {
        bufs.push_back(upload<B>(*in.host));
        ts.push_back(bufs.back().tensor());
        vars.push_back(in.host->dtype == DType::i32 ? nullptr : &g.leaf(bufs.back().tensor(), in.grad));
    }
    Var& out = fwd(g, vars, ts);
    Result r;
    r.out = download(out.data);
    if (out.requires_grad) {
        Rng rng{4242, 0};
        Buffer<CPU> up = rnd(out.data.shape, out.data.dtype, rng);
        Buffer<B> dup = upload<B>(up);
        g.backward(out, dup.tensor());
        for (Var* v : vars) r.grads.push_back(v && v->grad.defined() ? download(v->grad) : std::vector<double>{});
    }
    return r;
}

/// The op on the CPU and on the GPU; outputs and every input gradient must agree.
template <class F>
void compare(const std::string& what, const std::vector<Input>& ins, F fwd, double rtol, std::uint64_t seed = 7) {
    INFO(what);
    const Result c = run_on<CPU>(ins, fwd, seed);
    const Result d = run_on<CUDA>(ins, fwd, seed);
    check_tensor(d.out, c.out, rtol, what + ": output");
    REQUIRE(c.grads.size() == d.grads.size());
    for (std::size_t i = 0; i < c.grads.size(); ++i) {
        CHECK_MESSAGE(c.grads[i].empty() == d.grads[i].empty(), what << ": input " << i << " gradient presence differs");
        if (!c.grads[i].empty() && !d.grads[i].empty())
            check_tensor(d.grads[i], c.grads[i], rtol, what + ": gradient of input " + std::to_string(i));
    }
}

struct TypeTolerance {
    DType dtype;
    double rtol;
    const char* name;
};
const TypeTolerance precisions[] = {{DType::f32, 1e-5, "f32"}, {DType::f64, 1e-11, "f64"}};

template <class G>
using backend_of = typename std::remove_reference_t<G>::backend;

}  // namespace

// ---- products and plumbing --------------------------------------------------------------------------

TEST_CASE("cuda: linear and matmul match the CPU (cuBLAS, row-major, accumulate flag)") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{1, 0};
        auto x = rnd({3, 5, 7}, p.dtype, rng), w = rnd({11, 7}, p.dtype, rng);
        auto lin = [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return linear(g, *v[0], *v[1]); };
        compare(std::string("linear ") + p.name, {{&x.tensor()}, {&w.tensor()}}, lin, p.rtol);
        compare(std::string("linear, frozen weight ") + p.name, {{&x.tensor()}, {&w.tensor(), false}}, lin, p.rtol);
        compare(std::string("linear, input without gradient ") + p.name, {{&x.tensor(), false}, {&w.tensor()}}, lin,
                p.rtol);
        auto big_x = rnd({64, 96}, p.dtype, rng), big_w = rnd({80, 96}, p.dtype, rng);
        compare(std::string("linear 64x96x80 ") + p.name, {{&big_x.tensor()}, {&big_w.tensor()}}, lin, p.rtol);
        // The same weight twice: its gradient is written, then accumulated.
        auto twice = [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
            return add(g, linear(g, *v[0], *v[1]), linear(g, *v[0], *v[1]));
        };
        compare(std::string("linear twice ") + p.name, {{&x.tensor()}, {&w.tensor()}}, twice, p.rtol);

        auto a = rnd({6, 9}, p.dtype, rng), b = rnd({9, 4}, p.dtype, rng);
        compare(std::string("matmul ") + p.name, {{&a.tensor()}, {&b.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return matmul(g, *v[0], *v[1]); },
                p.rtol);
    }
}

TEST_CASE("cuda: add, reshape, slice_rows and concat_rows match the CPU") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{2, 0};
        auto x = rnd({5, 6}, p.dtype, rng), y = rnd({4, 6}, p.dtype, rng);
        compare(std::string("add/slice/concat ") + p.name, {{&x.tensor()}, {&y.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
                    Var& a = add(g, *v[0], *v[0]);  // the same Var twice: = then +=
                    Var* parts[2] = {&slice_rows(g, a, 3, 5), &slice_rows(g, *v[1], 0, 2)};
                    Var& c = concat_rows(g, parts, 2);  // (4, 6); rows of x's gradient outside 3..5 are zero
                    return reshape(g, c, Shape{2, 12});
                },
                p.rtol);
    }
}

// ---- layers -----------------------------------------------------------------------------------------

TEST_CASE("cuda: embedding matches the CPU, repeated ids included") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{3, 0};
        auto ids = randint({2, 7}, rng, 0, 5);  // 14 tokens over 5 of the 13 rows: many repeats
        auto table = rnd({13, 10}, p.dtype, rng);
        compare(std::string("embedding ") + p.name, {{&ids.tensor()}, {&table.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>& t) -> Var& { return embedding(g, t[0], *v[1]); },
                p.rtol);
    }
}

TEST_CASE("cuda: rmsnorm matches the CPU (row blocks, chunked dw)") {
    MT_REQUIRE_GPU();
    auto op = [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return rmsnorm(g, *v[0], *v[1], 1e-5); };
    for (const TypeTolerance& p : precisions) {
        Rng rng{4, 0};
        auto x = rnd({4, 6, 40}, p.dtype, rng), w = rnd({40}, p.dtype, rng);
        compare(std::string("rmsnorm ") + p.name, {{&x.tensor()}, {&w.tensor()}}, op, p.rtol);
        compare(std::string("rmsnorm, dx only ") + p.name, {{&x.tensor()}, {&w.tensor(), false}}, op, p.rtol);
        compare(std::string("rmsnorm, dw only ") + p.name, {{&x.tensor(), false}, {&w.tensor()}}, op, p.rtol);
        // More rows than chunks (512) and a width that is not a multiple of the block.
        auto xl = rnd({700, 300}, p.dtype, rng), wl = rnd({300}, p.dtype, rng);
        compare(std::string("rmsnorm 700 x 300 ") + p.name, {{&xl.tensor()}, {&wl.tensor()}}, op, p.rtol);
    }
}

TEST_CASE("cuda: rope tables are bit-identical to the CPU's, and rope matches") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Buffer<CPU> cc({9, 4}, p.dtype), cs({9, 4}, p.dtype);
        rope_table(CPU{}, cc, cs, 1e4);
        Buffer<CUDA> gc({9, 4}, p.dtype), gs({9, 4}, p.dtype);
        rope_table(CUDA{}, gc, gs, 1e4);
        check_tensor(download(gc), to_vector(cc), 0, "cos table");
        check_tensor(download(gs), to_vector(cs), 0, "sin table");

        Rng rng{5, 0};
        auto x = rnd({2, 5, 3, 8}, p.dtype, rng);
        compare(std::string("rope at position 2 ") + p.name, {{&x.tensor()}, {&cc.tensor(), false}, {&cs.tensor(), false}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>& t) -> Var& { return rope(g, *v[0], t[1], t[2], 2); },
                p.rtol);
    }
}

TEST_CASE("cuda: swiglu matches the CPU") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{6, 0};
        auto h = rnd({3, 4, 42}, p.dtype, rng, 3.0);
        compare(std::string("swiglu ") + p.name, {{&h.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return swiglu(g, *v[0]); }, p.rtol);
    }
}

TEST_CASE("cuda: dropout masks and outputs are bit-identical to the CPU's") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{7, 0};
        auto x = rnd({1000}, p.dtype, rng), y = rnd({3, 37}, p.dtype, rng);
        auto op = [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
            // Two dropouts in a row: the second draws from the next indices of the graph's stream.
            return dropout(g, reshape(g, dropout(g, *v[0], 0.3), Shape{10, 100}), 0.5);
        };
        compare(std::string("dropout ") + p.name, {{&x.tensor()}}, op, 0.0, 11);
        compare(std::string("dropout p = 1 ") + p.name, {{&y.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return dropout(g, *v[0], 1.0); }, 0.0);
        // The mask is not trivial: about 30% dropped.
        Graph<CUDA> g(0, 0, 3);
        Buffer<CUDA> xd = upload<CUDA>(x);
        auto out = download(dropout(g, g.leaf(xd), 0.3).data);
        const auto zeros = std::count(out.begin(), out.end(), 0.0);
        CHECK(zeros > 220);
        CHECK(zeros < 380);
    }
}

TEST_CASE("cuda: cross_entropy matches the CPU, ignored rows included") {
    MT_REQUIRE_GPU();
    auto op = [](auto& g, std::vector<Var*>& v, std::vector<Tensor>& t) -> Var& { return cross_entropy(g, *v[0], t[1]); };
    for (const TypeTolerance& p : precisions) {
        Rng rng{8, 0};
        auto logits = rnd({2, 9, 31}, p.dtype, rng, 3.0);
        auto targets = randint({2, 9}, rng, 0, 31);
        for (int i = 0; i < 18; i += 4) targets.data<std::int32_t>()[i] = -100;
        compare(std::string("cross_entropy ") + p.name, {{&logits.tensor()}, {&targets.tensor()}}, op, p.rtol);
        compare(std::string("cross_entropy_rows ") + p.name, {{&logits.tensor(), false}, {&targets.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>& t) -> Var& { return cross_entropy_rows(g, *v[0], t[1]); },
                p.rtol);
        auto none = randint({2, 9}, rng, 0, 1);
        for (int i = 0; i < 18; ++i) none.data<std::int32_t>()[i] = -100;
        compare(std::string("cross_entropy, every row ignored ") + p.name, {{&logits.tensor()}, {&none.tensor()}}, op,
                p.rtol);
        // A large vocabulary: several passes of the block over a row.
        auto wide = rnd({5, 3001}, p.dtype, rng, 4.0);
        auto wt = randint({5}, rng, 0, 3001);
        compare(std::string("cross_entropy V = 3001 ") + p.name, {{&wide.tensor()}, {&wt.tensor()}}, op, p.rtol);
    }
}

TEST_CASE("cuda: attention matches the CPU (GQA, long rows, KV cache, shared inputs, wide heads)") {
    MT_REQUIRE_GPU();
    auto op = [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return attention(g, *v[0], *v[1], *v[2]); };
    for (const TypeTolerance& p : precisions) {
        Rng rng{9, 0};
        auto q = rnd({2, 7, 4, 8}, p.dtype, rng), k = rnd({2, 7, 2, 8}, p.dtype, rng), v = rnd({2, 7, 2, 8}, p.dtype, rng);
        compare(std::string("attention GQA ") + p.name, {{&q.tensor()}, {&k.tensor()}, {&v.tensor()}}, op, p.rtol);
        compare(std::string("attention, dq only ") + p.name,
                {{&q.tensor()}, {&k.tensor(), false}, {&v.tensor(), false}}, op, p.rtol);
        compare(std::string("attention, dv only ") + p.name,
                {{&q.tensor(), false}, {&k.tensor(), false}, {&v.tensor()}}, op, p.rtol);
        // More keys and more (head, row) items than one block holds.
        auto ql = rnd({1, 150, 2, 32}, p.dtype, rng), kl = rnd({1, 150, 1, 32}, p.dtype, rng),
             vl = rnd({1, 150, 1, 32}, p.dtype, rng);
        compare(std::string("attention T = 150 ") + p.name, {{&ql.tensor()}, {&kl.tensor()}, {&vl.tensor()}}, op, p.rtol);
        // KV cache: 3 queries at the end of 8 valid keys out of 10 allocated; rows 8, 9 of dk, dv are zero.
        auto qc = rnd({2, 3, 4, 16}, p.dtype, rng), kc = rnd({2, 10, 2, 16}, p.dtype, rng),
             vc = rnd({2, 10, 2, 16}, p.dtype, rng);
        compare(std::string("attention with a KV cache ") + p.name, {{&qc.tensor()}, {&kc.tensor()}, {&vc.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
                    return attention(g, *v[0], *v[1], *v[2], 8);
                },
                p.rtol);
        // One Var as q, k and v: its three gradients share a buffer.
        auto x = rnd({1, 9, 2, 8}, p.dtype, rng);
        compare(std::string("attention(x, x, x) ") + p.name, {{&x.tensor()}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& { return attention(g, *v[0], *v[0], *v[0]); },
                p.rtol);
        // Head dims above one block (two columns per thread), odd and the largest supported.
        for (int D : {130, 256}) {
            auto qw = rnd({1, 5, 2, D}, p.dtype, rng), kw = rnd({1, 5, 1, D}, p.dtype, rng),
                 vw = rnd({1, 5, 1, D}, p.dtype, rng);
            compare(std::string("attention D = ") + std::to_string(D) + " " + p.name,
                    {{&qw.tensor()}, {&kw.tensor()}, {&vw.tensor()}}, op, p.rtol);
        }
    }
}

// ---- mixture of experts -------------------------------------------------------------------------------

TEST_CASE("cuda: MoE router, dispatch, experts and combine match the CPU") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        for (int K : {1, 2}) {
            for (bool norm : {true, false}) {
                Rng rng{10, std::uint64_t(K)};
                auto x = rnd({12, 8}, p.dtype, rng), wg = rnd({4, 8}, p.dtype, rng);
                std::vector<Buffer<CPU>> experts;
                for (int e = 0; e < 4; ++e) experts.push_back(rnd({8, 8}, p.dtype, rng));
                std::vector<Input> ins = {{&x.tensor()}, {&wg.tensor()}};
                for (auto& e : experts) ins.push_back({&e.tensor()});
                // through the mixing weights
                auto moe = [K, norm](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
                    Var& logits = linear(g, *v[0], *v[1]);  // (12, 4)
                    Routing r = moe_router(g, logits, 2, K, norm, 0.01);
                    Dispatch d = moe_dispatch(g, *v[0], r.indices, 4);
                    Var& ye = moe_experts(g, d, [&](auto& g, int e, Var& in) -> Var& { return linear(g, in, *v[2 + e]); });
                    return moe_combine(g, ye, r.weights, d.slot);
                };
                const std::string tag = std::string(p.name) + " K = " + std::to_string(K) + (norm ? " norm" : "");
                compare("moe combine " + tag, ins, moe, p.rtol);
                // through the balancing loss only
                auto aux = [K, norm](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
                    return moe_router(g, linear(g, *v[0], *v[1]), 2, K, norm, 0.01).aux;
                };
                compare("moe aux " + tag, {{&x.tensor()}, {&wg.tensor()}}, aux, p.rtol);

                // The routing itself: indices and offsets exactly, in the CPU's order.
                Graph<CPU> gc;
                Graph<CUDA> gd;
                Buffer<CUDA> xd = upload<CUDA>(x), wd = upload<CUDA>(wg);
                Routing rc = moe_router(gc, linear(gc, gc.leaf(x), gc.leaf(wg)), 2, K, norm, 0.01);
                Routing rd = moe_router(gd, linear(gd, gd.leaf(xd), gd.leaf(wd)), 2, K, norm, 0.01);
                CHECK(download_i32(rd.indices) == download_i32(rc.indices));
                Dispatch dc = moe_dispatch(gc, gc.leaf(x), rc.indices, 4);
                Dispatch dd = moe_dispatch(gd, gd.leaf(xd), rd.indices, 4);
                CHECK(std::vector<std::int32_t>(dd.host_offsets, dd.host_offsets + 5) ==
                      std::vector<std::int32_t>(dc.host_offsets, dc.host_offsets + 5));
                CHECK(download_i32(dd.slot) == download_i32(dc.slot));
                check_tensor(download(dd.xe.data), to_vector(dc.xe.data), 0, "dispatched rows (copies)");
            }
        }
    }
}

// ---- LoRA, sequence log-probabilities, DPO ------------------------------------------------------------

TEST_CASE("cuda: the LoRA projection matches the CPU (fused gate|up, dropout)") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{11, 0};
        auto x = rnd({5, 12}, p.dtype, rng), w = rnd({12, 12}, p.dtype, rng);
        auto a0 = rnd({3, 12}, p.dtype, rng), b0 = rnd({6, 3}, p.dtype, rng);
        auto a1 = rnd({3, 12}, p.dtype, rng), b1 = rnd({6, 3}, p.dtype, rng);
        for (double drop : {0.0, 0.25}) {
            compare(std::string("lora_linear, 2 parts, dropout ") + std::to_string(drop) + " " + p.name,
                    {{&x.tensor()}, {&w.tensor(), false}, {&a0.tensor()}, {&b0.tensor()}, {&a1.tensor()}, {&b1.tensor()}},
                    [drop](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
                        const LoRAAdapter parts[2] = {{v[2], v[3]}, {v[4], v[5]}};
                        return lora_linear(g, *v[0], *v[1], parts, 2, 0.5, drop);
                    },
                    p.rtol);
        }
    }
}

TEST_CASE("cuda: sequence log-probabilities and the DPO loss match the CPU") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{12, 0};
        auto logits = rnd({4, 6, 17}, p.dtype, rng, 2.0);
        auto targets = randint({4, 6}, rng, 0, 17);
        for (int i = 0; i < 24; i += 5) targets.data<std::int32_t>()[i] = -100;
        for (bool average : {false, true})
            compare(std::string("sequence_logprobs ") + (average ? "averaged " : "") + p.name,
                    {{&logits.tensor()}, {&targets.tensor()}},
                    [average](auto& g, std::vector<Var*>& v, std::vector<Tensor>& t) -> Var& {
                        return sequence_logprobs(g, *v[0], t[1], average);
                    },
                    p.rtol);
        auto pc = rnd({3}, p.dtype, rng, 5), pr = rnd({3}, p.dtype, rng, 5), rc = rnd({3}, p.dtype, rng, 5),
             rr = rnd({3}, p.dtype, rng, 5);
        compare(std::string("dpo_loss ") + p.name,
                {{&pc.tensor()}, {&pr.tensor()}, {&rc.tensor(), false}, {&rr.tensor(), false}},
                [](auto& g, std::vector<Var*>& v, std::vector<Tensor>&) -> Var& {
                    DpoStats s;
                    Var& l = dpo_loss(g, *v[0], *v[1], v[2]->data, v[3]->data, 0.1, &s);
                    CHECK(std::isfinite(s.margin));
                    return l;
                },
                p.rtol);
    }
}

// ---- optimizer kernels --------------------------------------------------------------------------------

TEST_CASE("cuda: AdamW, SGD, sum_squares, scale and fill match the CPU") {
    MT_REQUIRE_GPU();
    for (const TypeTolerance& p : precisions) {
        Rng rng{13, 0};
        const Shape s{1003};
        auto p0 = rnd(s, p.dtype, rng), g0 = rnd(s, p.dtype, rng, 1e-2), m0 = rnd(s, p.dtype, rng, 1e-2),
             v0 = rnd(s, p.dtype, rng, 1e-2);
        for (std::int64_t i = 0; i < s.numel(); ++i)  // second moments are non-negative
            dispatch_floating(p.dtype, "abs", [&]<class T>() { v0.data<T>()[i] = std::abs(v0.data<T>()[i]); });
        for (double wd : {0.0, 0.1}) {
            Buffer<CPU> pc = upload<CPU>(p0), mc = upload<CPU>(m0), vc = upload<CPU>(v0);
            Buffer<CUDA> pd = upload<CUDA>(p0), gd = upload<CUDA>(g0), md = upload<CUDA>(m0), vd = upload<CUDA>(v0);
            for (std::int64_t step = 1; step <= 3; ++step) {
                adamw_update(CPU{}, pc, g0, mc, vc, 1e-3, 0.9, 0.95, 1e-8, wd, step);
                adamw_update(CUDA{}, pd, gd, md, vd, 1e-3, 0.9, 0.95, 1e-8, wd, step);
            }
            check_tensor(download(pd), to_vector(pc), p.rtol, "adamw param");
            check_tensor(download(md), to_vector(mc), p.rtol, "adamw exp_avg");
            check_tensor(download(vd), to_vector(vc), p.rtol, "adamw exp_avg_sq");
        }
        for (double momentum : {0.0, 0.9})
            for (bool nesterov : {false, true}) {
                if (nesterov && momentum == 0) continue;
                Buffer<CPU> pc = upload<CPU>(p0), bc = upload<CPU>(m0);
                Buffer<CUDA> pd = upload<CUDA>(p0), gd = upload<CUDA>(g0), bd = upload<CUDA>(m0);
                for (int step = 0; step < 3; ++step) {
                    sgd_update(CPU{}, pc, g0, bc, 0.1, momentum, 0.1 * (1 - nesterov), 0.01, nesterov, step == 0);
                    sgd_update(CUDA{}, pd, gd, bd, 0.1, momentum, 0.1 * (1 - nesterov), 0.01, nesterov, step == 0);
                }
                check_tensor(download(pd), to_vector(pc), p.rtol, "sgd param");
                if (momentum > 0) check_tensor(download(bd), to_vector(bc), p.rtol, "sgd momentum buffer");
            }
        auto big = rnd({100003}, p.dtype, rng);
        Buffer<CUDA> bigd = upload<CUDA>(big);
        CHECK(sum_squares(CUDA{}, bigd) == doctest::Approx(sum_squares(CPU{}, big)).epsilon(1e-12));
        CHECK(sum_squares(CUDA{}, bigd) == sum_squares(CUDA{}, bigd));  // deterministic
        scale(CPU{}, big, 0.37);
        scale(CUDA{}, bigd, 0.37);
        check_tensor(download(bigd), to_vector(big), 0, "scale");
        fill(CUDA{}, bigd, -2.5);
        auto filled = download(bigd);
        CHECK(std::all_of(filled.begin(), filled.end(), [](double x) { return x == -2.5; }));
    }
}

// ---- errors -------------------------------------------------------------------------------------------

TEST_CASE("cuda: bad ids and targets found on the GPU throw at the next synchronization; host tensors are refused") {
    MT_REQUIRE_GPU();
    Rng rng{14, 0};
    auto table = rnd({13, 4}, DType::f32, rng);
    auto ids = randint({6}, rng, 0, 13);
    ids.data<std::int32_t>()[4] = 13;
    Buffer<CUDA> td = upload<CUDA>(table), idd = upload<CUDA>(ids);
    {
        Graph<CUDA> g;
        embedding(g, idd.tensor(), g.leaf(td));
        CHECK_THROWS_WITH_AS(CUDA::synchronize(), doctest::Contains("token id 13 at position 4"), Error);
        CHECK_NOTHROW(CUDA::synchronize());  // reported once, then cleared
    }
    {
        auto logits = rnd({3, 5}, DType::f32, rng);
        auto targets = randint({3}, rng, 0, 5);
        targets.data<std::int32_t>()[1] = 7;
        Buffer<CUDA> ld = upload<CUDA>(logits), tgd = upload<CUDA>(targets);
        Graph<CUDA> g;
        CHECK_THROWS_WITH_AS(cross_entropy(g, g.leaf(ld), tgd.tensor()), doctest::Contains("target of row 1 is 7"),
                             Error);
        CHECK_NOTHROW(CUDA::synchronize());
    }
    {
        Graph<CUDA> g;
        CHECK_THROWS_WITH_AS(embedding(g, ids.tensor(), g.leaf(td)), doctest::Contains("ids is a cpu tensor"), Error);
    }
}

// ---- launch shapes (host code: runs without a GPU) ------------------------------------------------------

TEST_CASE("cuda: launch shapes stay within the grid limits at B*T*V sizes; MoE copy words respect alignment") {
    // B = 64, T = 1024, V = 50304: 3.3e9 logits, past 2^31. Grids are 1-D; x allows 2^31 - 1 blocks.
    const std::int64_t logits = std::int64_t(64) * 1024 * 50304;
    CHECK(cuda::grid_for(0) == 1u);
    CHECK(cuda::grid_for(1) == 1u);
    CHECK(cuda::grid_for(cuda::threads) == 1u);
    CHECK(cuda::grid_for(cuda::threads + 1) == 2u);
    CHECK(cuda::grid_for(logits) == 65536u);  // capped: grid-stride loops (64-bit indices) take the rest
    CHECK(cuda::grid_rows(0) == 1u);
    CHECK(cuda::grid_rows(64 * 1024) == 65536u);
    CHECK(cuda::grid_rows(logits) == 1u << 20);
    CHECK(cuda::as_int(INT_MAX, "test", "n") == INT_MAX);
    CHECK_THROWS_AS(cuda::as_int(std::int64_t(INT_MAX) + 1, "test", "n"), Error);

    alignas(16) static unsigned char buf[64];
    CHECK(cuda::moe::dispatch_word_bytes(8, buf, buf + 16) == 4);
    CHECK(cuda::moe::dispatch_word_bytes(8, buf, buf + 2) == 2);   // a bf16 view 2 bytes past a boundary
    CHECK(cuda::moe::dispatch_word_bytes(8, buf + 6, buf) == 2);
    CHECK(cuda::moe::dispatch_word_bytes(6, buf, buf) == 2);       // three bf16 channels
    CHECK(cuda::moe::dispatch_word_bytes(12, buf + 1, buf) == 1);
}
