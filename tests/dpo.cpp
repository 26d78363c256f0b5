// DPO: sequence log-probabilities (against a plain double loop, finite differences, bad targets), the DPO
// loss (its formula, its gradient, huge margins, the reward statistics), the policy and reference
// gradients of a tiny model against PyTorch (tests/golden/tiny_dpo.safetensors), and the DPO task trained
// end to end on synthetic preference pairs.
#include "support/gradcheck.hpp"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <minitrain/io/safetensors.hpp>
#include <minitrain/nn/transformer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/train/dpo.hpp>
#include <minitrain/train/trainer.hpp>

#include "support/count_allocations.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;

namespace {

/// Random targets in [0, V) (B, T), with positions masked (-100): a few scattered ones, and every
/// position of sequence `empty` when it is in range (a sequence without counted positions).
Buffer<CPU> masked_targets(int B, int T, int V, Rng& rng, int empty = -1) {
    Buffer<CPU> t = randint({B, T}, rng, 0, V);
    std::int32_t* p = t.data<std::int32_t>();
    for (int n = 1; n < B * T; n += 3) p[n] = -100;
    if (0 <= empty && empty < B)
        for (int s = 0; s < T; ++s) p[empty * T + s] = -100;
    return t;
}

/// Per sequence, the sum (or mean) over counted positions of log softmax(logits)[target], in double.
std::vector<double> reference_logprobs(const Tensor& logits, const Tensor& targets, bool average) {
    const std::int64_t B = targets.shape[0], T = targets.shape[1], V = logits.shape.cols();
    auto x = to_vector(logits);
    std::vector<double> out(std::size_t(B), 0.0);
    for (std::int64_t b = 0; b < B; ++b) {
        int count = 0;
        for (std::int64_t t = 0; t < T; ++t) {
            const int y = targets.data<std::int32_t>()[b * T + t];
            if (y == -100) continue;
            const double* row = x.data() + (b * T + t) * V;
            double m = -INFINITY, z = 0;
            for (std::int64_t j = 0; j < V; ++j) m = std::max(m, row[j]);
            for (std::int64_t j = 0; j < V; ++j) z += std::exp(row[j] - m);
            out[std::size_t(b)] += row[y] - m - std::log(z);
            ++count;
        }
        if (average && count) out[std::size_t(b)] /= count;
    }
    return out;
}

/// The DPO loss and statistics, straight from the definition (long double, stable softplus).
struct DpoReference {
    double loss = 0, chosen = 0, rejected = 0, margin = 0, accuracy = 0;
};
DpoReference reference_dpo(const std::vector<double>& pc, const std::vector<double>& pr, const std::vector<double>& rc,
                           const std::vector<double>& rr, double beta) {
    DpoReference r;
    const std::size_t B = pc.size();
    for (std::size_t b = 0; b < B; ++b) {
        const long double z = beta * ((static_cast<long double>(pc[b]) - pr[b]) - (static_cast<long double>(rc[b]) - rr[b]));
        // -logsigmoid(z) = log(1 + exp(-z)), written both ways round so that exp never overflows
        const long double nls = z >= 0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z));
        r.loss += double(nls);
        const double c = beta * (pc[b] - rc[b]), j = beta * (pr[b] - rr[b]);
        r.chosen += c;
        r.rejected += j;
        r.accuracy += c > j;
    }
    r.loss /= double(B);
    r.chosen /= double(B);
    r.rejected /= double(B);
    r.margin = r.chosen - r.rejected;
    r.accuracy /= double(B);
    return r;
}

}  // namespace

// ---- sequence_logprobs ------------------------------------------------------------------------------

TEST_CASE("sequence_logprobs: sums (and means) of log softmax at the targets, masked positions excluded") {
    Rng rng{71};
    for (auto [B, T, V] : {std::tuple{1, 1, 1}, {3, 7, 37}, {2, 5, 6400}}) {
        INFO("B=" << B << " T=" << T << " V=" << V);
        auto x = randn({B, T, V}, rng, 3.0);
        auto t = masked_targets(B, T, V, rng, B > 1 ? 1 : -1);
        for (bool average : {false, true}) {
            auto want = reference_logprobs(x, t, average);
            for (DType dt : {DType::f64, DType::f32}) {
                INFO(dtype_name(dt) << (average ? " mean" : " sum"));
                auto xd = converted(x, dt);
                Graph<CPU> g;
                Var& lp = sequence_logprobs(g, g.leaf(xd, true), t, average);
                REQUIRE(lp.data.shape == Shape{B});
                REQUIRE(lp.data.dtype == dt);
                check_close(to_vector(lp.data), want, dt == DType::f64 ? 1e-12 : 1e-5, 1e-12, "log-probabilities");
                if (B > 1) CHECK(to_vector(lp.data)[1] == 0.0);  // sequence 1 has no counted position
                for (double v : to_vector(lp.data)) CHECK(v <= 0.0);
            }
        }
    }
}

TEST_CASE("sequence_logprobs: huge logits stay finite") {
    Rng rng{5};
    auto x = randn({2, 3, 17}, rng, 1.0);
    for (std::int64_t i = 0; i < x.tensor().numel(); i += 2) x.data<double>()[i] *= 1e4;
    auto t = masked_targets(2, 3, 17, rng);
    Graph<CPU> g;
    Var& lp = sequence_logprobs(g, g.leaf(x, true), t);
    check_close(to_vector(lp.data), reference_logprobs(x, t, false), 1e-12, 1e-9, "log-probabilities");
}

TEST_CASE("sequence_logprobs: gradient matches finite differences, with a per-sequence upstream gradient") {
    Rng rng{9};
    for (bool average : {false, true}) {
        INFO((average ? "mean" : "sum"));
        auto x = randn({3, 5, 13}, rng, 2.0);
        auto t = masked_targets(3, 5, 13, rng, 2);
        gradcheck({{&x}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            return sequence_logprobs(g, *v[0], t, average);
        }, {.max_probes = 96});
    }
}

TEST_CASE("sequence_logprobs: a second use of the logits accumulates into their gradient") {
    // The second op's backward adds (+=) into the buffer the first wrote: its masked rows must be left
    // as they are, not zeroed.
    Rng rng{10};
    auto x = randn({2, 4, 9}, rng, 2.0);
    auto t1 = masked_targets(2, 4, 9, rng, 0);
    auto t2 = masked_targets(2, 4, 9, rng, 1);
    gradcheck({{&x}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return add(g, sequence_logprobs(g, *v[0], t1), sequence_logprobs(g, *v[0], t2, true));
    }, {.max_probes = 72});
}

TEST_CASE("sequence_logprobs: a target outside the vocabulary is an error naming sequence, position and value") {
    Rng rng{3};
    auto x = randn({2, 3, 5}, rng);
    auto t = masked_targets(2, 3, 5, rng);
    t.data<std::int32_t>()[1 * 3 + 2] = 5;
    Graph<CPU> g;
    Var& logits = g.leaf(x, true);
    try {
        sequence_logprobs(g, logits, t);
        FAIL("expected an Error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("sequence 1 position 2") != std::string::npos);
        CHECK(msg.find(" is 5,") != std::string::npos);
        CHECK(msg.find("[0, 5)") != std::string::npos);
    }
    t.data<std::int32_t>()[1 * 3 + 2] = -7;
    CHECK_THROWS_AS(sequence_logprobs(g, logits, t), Error);
    Buffer<CPU> wrong = randint({2, 4}, rng, 0, 5);  // (B, T) does not match the logits' rows
    CHECK_THROWS_AS(sequence_logprobs(g, logits, wrong), Error);
}

// ---- dpo_loss -----------------------------------------------------------------------------------------

TEST_CASE("dpo_loss: value and reward statistics follow the formula") {
    Rng rng{21};
    const int B = 5;
    const double beta = 0.15;
    auto pc = randn({B}, rng, 20.0), pr = randn({B}, rng, 20.0), rc = randn({B}, rng, 20.0), rr = randn({B}, rng, 20.0);
    auto want = reference_dpo(to_vector(pc), to_vector(pr), to_vector(rc), to_vector(rr), beta);
    for (DType dt : {DType::f64, DType::f32}) {
        INFO(dtype_name(dt));
        auto a = converted(pc, dt), b = converted(pr, dt), c = converted(rc, dt), d = converted(rr, dt);
        Graph<CPU> g;
        DpoStats s;
        Var& loss = dpo_loss(g, g.leaf(a, true), g.leaf(b, true), c, d, beta, &s);
        REQUIRE(loss.data.shape == Shape{1});
        const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
        CHECK(to_vector(loss.data)[0] == doctest::Approx(want.loss).epsilon(tol));
        CHECK(s.chosen_reward == doctest::Approx(want.chosen).epsilon(tol));
        CHECK(s.rejected_reward == doctest::Approx(want.rejected).epsilon(tol));
        CHECK(s.margin == doctest::Approx(want.margin).epsilon(tol));
        CHECK(s.accuracy == want.accuracy);
        CHECK(s.accuracy > 0.0);
        CHECK(s.accuracy < 1.0);  // this seed gives both wins and losses
    }
}

TEST_CASE("dpo_loss: log(2) when policy equals reference; gradient -beta/2/B per pair") {
    Rng rng{22};
    auto p = randn({4}, rng, 10.0), q = randn({4}, rng, 10.0);
    Graph<CPU> g;
    DpoStats s;
    Var& pc = g.leaf(p, true);
    Var& pr = g.leaf(q, true);
    Var& loss = dpo_loss(g, pc, pr, p, q, 0.1, &s);
    CHECK(to_vector(loss.data)[0] == std::log(2.0));
    CHECK(s.margin == 0.0);
    CHECK(s.accuracy == 0.0);  // ties are not wins
    g.backward(loss);
    for (double v : to_vector(pc.grad)) CHECK(v == doctest::Approx(-0.1 * 0.5 / 4).epsilon(1e-15));
    for (double v : to_vector(pr.grad)) CHECK(v == doctest::Approx(0.1 * 0.5 / 4).epsilon(1e-15));
}

TEST_CASE("dpo_loss: gradient matches finite differences") {
    Rng rng{23};
    auto pc = randn({6}, rng, 3.0), pr = randn({6}, rng, 3.0), rc = randn({6}, rng, 3.0), rr = randn({6}, rng, 3.0);
    gradcheck({{&pc}, {&pr}, {&rc, false}, {&rr, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return dpo_loss(g, *v[0], *v[1], v[2]->data, v[3]->data, 0.7);
    });
    // One of the two inputs frozen: only the other gets a gradient.
    gradcheck({{&pc, false}, {&pr}, {&rc, false}, {&rr, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return dpo_loss(g, *v[0], *v[1], v[2]->data, v[3]->data, 0.2);
    });
}

TEST_CASE("dpo_loss: huge margins are stable (no overflow, no NaN, exact limits)") {
    // z = beta * margin = +-1000: softplus(-z) is 0 or 1000 and the gradient saturates at 0 or -beta/B.
    Buffer<CPU> pc(Shape{2}, DType::f32), pr(Shape{2}, DType::f32), zero(Shape{2}, DType::f32);
    pc.data<float>()[0] = 5000, pr.data<float>()[0] = -5000;  // z = +1000: chosen far ahead
    pc.data<float>()[1] = -5000, pr.data<float>()[1] = 5000;  // z = -1000: rejected far ahead
    CPU::zero(zero);
    Graph<CPU> g;
    Var& a = g.leaf(pc, true);
    Var& b = g.leaf(pr, true);
    DpoStats s;
    Var& loss = dpo_loss(g, a, b, zero, zero, 0.1, &s);
    CHECK(to_vector(loss.data)[0] == doctest::Approx(500.0).epsilon(1e-6));  // (0 + 1000) / 2
    CHECK(s.accuracy == 0.5);
    CHECK(s.margin == doctest::Approx(0.0).epsilon(1e-9));
    g.backward(loss);
    auto da = to_vector(a.grad), db = to_vector(b.grad);
    CHECK(all_finite(da));
    CHECK(all_finite(db));
    CHECK(da[0] == 0.0);
    CHECK(da[1] == doctest::Approx(-0.1 / 2).epsilon(1e-6));
    CHECK(db[1] == doctest::Approx(0.1 / 2).epsilon(1e-6));

    // A moderate z where the naive log(sigmoid(z)) already loses everything in f32.
    pc.data<float>()[0] = 200, pr.data<float>()[0] = 0;
    pc.data<float>()[1] = 0, pr.data<float>()[1] = 200;
    g.reset();
    Var& l2 = dpo_loss(g, g.leaf(pc, true), g.leaf(pr, true), zero, zero, 0.5, nullptr);
    auto want = reference_dpo({200, 0}, {0, 200}, {0, 0}, {0, 0}, 0.5);
    CHECK(to_vector(l2.data)[0] == doctest::Approx(want.loss).epsilon(1e-6));
}

TEST_CASE("dpo_loss: bad inputs are errors") {
    Rng rng{24};
    auto a = randn({3}, rng), b = randn({3}, rng), c = randn({4}, rng);
    Graph<CPU> g;
    Var& pa = g.leaf(a, true);
    Var& pb = g.leaf(b, true);
    CHECK_THROWS_AS(dpo_loss(g, pa, pb, a, c, 0.1), Error);  // 3 pairs vs 4 reference values
    CHECK_THROWS_AS(dpo_loss(g, pa, pb, a, b, 0.0), Error);  // beta must be positive
    auto f = converted(a, DType::f32);
    CHECK_THROWS_AS(dpo_loss(g, pa, pb, f, b, 0.1), Error);  // mixed element types
}

// ---- against PyTorch ----------------------------------------------------------------------------------

namespace {

const std::filesystem::path golden_dir = std::filesystem::path(__FILE__).parent_path() / "golden";

using GoldenDense = Model<2, 32, 4, false, Knobs<2>>;

std::vector<double> read(const SafeTensors& st, const std::string& name) {
    const auto& info = st.info(name);
    Shape s;
    for (auto d : info.shape) s.dims[s.rank++] = d;
    Buffer<CPU> b(s, DType::f32);
    st.read_into(name, b);
    return to_vector(b);
}

Buffer<CPU> read_i32(const SafeTensors& st, const std::string& name) {
    const auto& info = st.info(name);
    Buffer<CPU> b(Shape{info.shape[0], info.shape[1]}, DType::i32);
    st.read_into(name, b);
    return b;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

/// Relative error below rtol, measured against the tensor's own scale for elements near zero.
void check_tensor(const std::vector<double>& got, const std::vector<double>& want, double rtol, const std::string& what) {
    check_close(got, want, rtol, rtol * max_abs(want) + 1e-30, what);
}

double mean(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / double(v.size());
}

}  // namespace

TEST_CASE("DPO against PyTorch: log-probabilities, loss, rewards and every policy gradient") {
    using Net = Transformer<GoldenDense>;
    SafeTensors dense(golden_dir / "tiny_dense.safetensors"), st(golden_dir / "tiny_dpo.safetensors");
    auto cfg = nlohmann::json::parse(st.metadata().at("config"));
    Buffer<CPU> ids = read_i32(st, "input_ids"), targets = read_i32(st, "targets");  // (2P, T)
    const std::int64_t P = ids.tensor().shape[0] / 2;
    REQUIRE(P == 2);

    TrainConfig c;
    c.vocab_size = cfg.at("vocab_size").get<int>();
    c.max_seq_len = int(ids.tensor().shape[1]);
    c.batch_size = int(P);
    c.dpo_beta = std::stod(st.metadata().at("beta"));
    CHECK(c.dpo_beta == 0.15);
    Net policy(ModelConfig{c.vocab_size, cfg.at("max_position_embeddings").get<int>()});
    for (auto& p : policy.params().all()) dense.read_into(p.name, p.var.data);  // tiny_dense's initial weights
    DPO::Objective<Net> obj(c, policy);
    for (auto& p : obj.reference().params().all()) st.read_into("ref." + p.name, p.var.data);

    Graph<CPU> g;
    auto r = obj.loss(policy, g, ids, targets, P);
    check_tensor(to_vector(r.policy_logprobs->data), read(st, "policy_logprobs"), 1e-5, "policy log-probabilities");
    check_tensor(to_vector(obj.reference_logprobs()), read(st, "reference_logprobs"), 1e-5, "reference log-probabilities");
    const double loss = to_vector(r.loss->data)[0], want = read(st, "loss")[0];
    INFO("loss " << loss << ", PyTorch " << want);
    CHECK(std::abs(loss - want) < 1e-4 * want);
    CHECK(std::abs(loss - std::log(2.0)) > 0.1);  // the reference differs from the policy
    auto chosen = read(st, "chosen_rewards"), rejected = read(st, "rejected_rewards");
    CHECK(r.stats.chosen_reward == doctest::Approx(mean(chosen)).epsilon(1e-4));
    CHECK(r.stats.rejected_reward == doctest::Approx(mean(rejected)).epsilon(1e-4));
    CHECK(r.stats.margin == doctest::Approx(mean(chosen) - mean(rejected)).epsilon(1e-4));
    double acc = 0;
    for (std::size_t i = 0; i < chosen.size(); ++i) acc += chosen[i] > rejected[i];
    CHECK(r.stats.accuracy == acc / double(chosen.size()));

    g.backward(*r.loss);
    int checked = 0;
    for (auto& p : policy.params().all()) {
        check_tensor(to_vector(p.var.grad), read(st, "grad." + p.name), 1e-3, "gradient of " + p.name);
        ++checked;
    }
    CHECK(checked == int(policy.params().all().size()));
    CHECK(obj.reference().params().trainable_count() == 0);

    // MiniMind's variant: log-probabilities divided by the reply length, from the same golden numbers.
    obj.set_length_normalized(true);
    g.reset();
    auto rn = obj.loss(policy, g, ids, targets, P);
    auto pol = read(st, "policy_logprobs"), ref = read(st, "reference_logprobs");
    double want_norm = 0;
    for (std::int64_t b = 0; b < P; ++b) {
        auto len = [&](std::int64_t row) {
            int n = 0;
            for (std::int64_t t = 0; t < ids.tensor().shape[1]; ++t) n += targets.data<std::int32_t>()[row * ids.tensor().shape[1] + t] != -100;
            return double(n);
        };
        const double lc = len(b), lr = len(P + b);
        const double z = c.dpo_beta * ((pol[b] / lc - pol[P + b] / lr) - (ref[b] / lc - ref[P + b] / lr));
        want_norm += std::log1p(std::exp(-z)) / double(P);
    }
    CHECK(to_vector(rn.loss->data)[0] == doctest::Approx(want_norm).epsilon(1e-5));
    CHECK(std::abs(to_vector(rn.loss->data)[0] - want) > 1e-3);  // a different loss from the summed one
}

// ---- the DPO task end to end ------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;
using SmallNet = Model<2, 32, 4, false, Knobs<2>>;
using SmallModel = Transformer<SmallNet>;


/// Synthetic preference pairs of token ids (vocabulary V, pad 0): a prompt of random tokens, a chosen
/// reply that counts up from the prompt's last token, a rejected reply of random tokens. Replies (and the
/// token after them) are supervised; the prompt is not.
ExampleSet synthetic_pairs(int n, int T, int V, std::uint64_t seed) {
    Rng rng{seed};
    ExampleSet set(T, 2, 0);
    for (int i = 0; i < n; ++i) {
        std::vector<std::int32_t> prompt;
        for (int k = 0, len = 3 + int(rng.below(3)); k < len; ++k) prompt.push_back(1 + std::int32_t(rng.below(V - 1)));
        const int reply = 4 + int(rng.below(4));
        for (int which = 0; which < 2; ++which) {
            std::vector<std::int32_t> ids = prompt;
            std::vector<std::uint8_t> sup(prompt.size(), 0);
            for (int k = 0; k < reply; ++k) {
                ids.push_back(which == 0 ? 1 + (prompt.back() + k) % (V - 1) : 1 + std::int32_t(rng.below(V - 1)));
                sup.push_back(1);
            }
            set.add_sequence(ids, sup);
        }
    }
    return set;
}

}  // namespace

TEST_CASE("DPO objective: log 2 exactly at the start, then the loss falls and the reward accuracy rises") {
    TrainConfig c;
    c.vocab_size = 40;
    c.max_seq_len = 16;
    c.batch_size = 4;
    c.dpo_beta = 0.15;
    c.init_seed = 99;
    const ExampleSet pairs = synthetic_pairs(4, c.max_seq_len, c.vocab_size, 1);
    ExampleLoader data(pairs, c.batch_size, /*shuffle=*/false, 0);
    CHECK(data.batches_per_epoch() == 1);  // the same 4 pairs every step
    SmallModel policy(ModelConfig{c.vocab_size, c.max_seq_len});
    policy.init(c.init_seed);  // what the Trainer does without init_from: the reference starts equal
    DPO::Objective<SmallModel> obj(c, policy);
    AdamW::Options o;
    o.lr = 3e-3;
    o.weight_decay = 0;
    Optimizer<AdamW> opt(policy.params(), o);
    Graph<CPU> g;
    std::vector<double> losses, accuracy, margin;
    for (int step = 0; step < 12; ++step) {
        g.reset();
        policy.params().zero_grad();
        MicroResult r = obj.train(policy, g, data);
        losses.push_back(obj.scalar(r.loss->data));
        REQUIRE(r.metrics[0].name == std::string("reward_margin"));
        REQUIRE(r.metrics[1].name == std::string("reward_accuracy"));
        margin.push_back(r.metrics[0].value);
        accuracy.push_back(r.metrics[1].value);
        CHECK(r.tokens == 2 * 4 * 16);
        g.backward(*r.loss);
        opt.step(o.lr);
    }
    INFO("losses " << losses[0] << " " << losses[1] << " ... " << losses.back() << ", accuracy " << accuracy[0]
                   << " -> " << accuracy.back() << ", margin " << margin.back());
    CHECK(losses[0] == float(std::log(2.0)));  // policy == reference, bit for bit: z = 0 exactly
    CHECK(margin[0] == 0.0);
    CHECK(accuracy[0] == 0.0);  // every pair ties
    for (std::size_t i = 1; i < losses.size(); ++i) CHECK(losses[i] < losses[i - 1]);
    CHECK(losses.back() < 0.5 * std::log(2.0));
    CHECK(accuracy.back() == 1.0);
    CHECK(margin.back() > 0.5);
    // The reference stayed where it was: its log-probabilities of this batch are those of the start.
    SmallModel fresh(ModelConfig{c.vocab_size, c.max_seq_len});
    fresh.init(c.init_seed);
    auto& a = fresh.params().data();
    auto& b = obj.reference().params().data();
    CHECK(std::memcmp(a.ptr, b.ptr, a.bytes()) == 0);
}

TEST_CASE("DPO objective: a steady-state step (reference, policy, loss, backward, AdamW) allocates nothing") {
    TrainConfig c;
    c.vocab_size = 40;
    c.max_seq_len = 16;
    c.batch_size = 2;
    const ExampleSet pairs = synthetic_pairs(6, c.max_seq_len, c.vocab_size, 4);
    ExampleLoader data(pairs, c.batch_size, /*shuffle=*/true, 7);  // epochs end and reshuffle on the way
    SmallModel policy(ModelConfig{c.vocab_size, c.max_seq_len});
    policy.init(c.init_seed);
    DPO::Objective<SmallModel> obj(c, policy);
    Optimizer<AdamW> opt(policy.params(), AdamW::Options{});
    Graph<CPU> g;
    auto step = [&] {
        g.reset();
        policy.params().zero_grad();
        MicroResult r = obj.train(policy, g, data);
        g.backward(*r.loss);
        opt.step(1e-3);
    };
    {
        const long a = allocations_now();
        Buffer<CPU> b({4}, DType::f32);
        REQUIRE(allocations_now() > a);  // the counter sees allocations, so the zero below means something
    }
    for (int i = 0; i < 4; ++i) step();
    const long before = allocations_now();
    for (int i = 0; i < 7; ++i) step();
    CHECK(allocations_now() - before == 0);
}

TEST_CASE("DPO objective: an MoE policy adds its balancing loss; the reference's is not counted") {
    using MoENet = Model<2, 32, 4, true, Knobs<2, 36>>;
    using MoEModel = Transformer<MoENet>;
    TrainConfig c;
    c.vocab_size = 40;
    c.max_seq_len = 16;
    c.batch_size = 4;
    c.init_seed = 3;
    const ExampleSet pairs = synthetic_pairs(4, c.max_seq_len, c.vocab_size, 2);
    ExampleLoader data(pairs, c.batch_size, /*shuffle=*/false, 0);
    MoEModel policy(ModelConfig{c.vocab_size, c.max_seq_len});
    policy.init(c.init_seed);
    DPO::Objective<MoEModel> obj(c, policy);
    Graph<CPU> g;
    MicroResult r = obj.train(policy, g, data);
    CHECK(r.aux > 0);
    CHECK(obj.scalar(r.loss->data) == doctest::Approx(std::log(2.0) + r.aux).epsilon(1e-6));
    g.backward(*r.loss);
    double router = 0;  // the balancing loss reaches the router
    for (double v : to_vector(policy.layers()[0].router->grad)) router += std::abs(v);
    CHECK(router > 0);
}

namespace {

/// MiniMind-format DPO JSONL: "add A and B" -> chosen "the sum is A+B.", rejected "no idea.".
void write_pairs(const fs::path& path, int n, int offset) {
    std::ofstream out(path);
    for (int i = 0; i < n; ++i) {
        const int a = (7 * i + offset) % 50, b = (3 * i + 2 * offset) % 50;
        const std::string user = "add " + std::to_string(a) + " and " + std::to_string(b);
        nlohmann::json chosen = {{{"role", "user"}, {"content", user}},
                                 {{"role", "assistant"}, {"content", "the sum is " + std::to_string(a + b) + "."}}};
        nlohmann::json rejected = {{{"role", "user"}, {"content", user}}, {{"role", "assistant"}, {"content", "no idea."}}};
        out << nlohmann::json{{"chosen", chosen}, {"rejected", rejected}}.dump() << "\n";
    }
}

using DpoTrainer = Trainer<SmallNet, Optimizer<AdamW>, Schedule<Cosine>, DPO>;

/// A run folder with a tokenizer, train/val JSONL and an init_from model folder.
TrainConfig dpo_run(const TempDir& dir) {
    std::vector<std::string> texts;
    for (int i = 0; i < 100; ++i) texts.push_back("add " + std::to_string(i) + " and " + std::to_string(99 - i) + " the sum is no idea.");
    Tokenizer::TrainOptions to;
    to.vocab_size = 300;
    Tokenizer::train_from_texts(texts, to).save(dir.path / "tokenizer.json");
    write_pairs(dir.path / "train.jsonl", 16, 0);
    write_pairs(dir.path / "val.jsonl", 6, 1);  // not a multiple of the batch: the last batch is padded

    TrainConfig c;
    c.train_data = (dir.path / "train.jsonl").string();
    c.val_data = (dir.path / "val.jsonl").string();
    c.tokenizer = (dir.path / "tokenizer.json").string();
    c.vocab_size = 300;
    c.max_seq_len = 48;
    c.batch_size = 4;
    c.learning_rate = 2e-3;
    c.weight_decay = 0;
    c.log_interval = 0;
    c.save_interval = 0;
    c.quiet = true;
    SmallModel init(ModelConfig{c.vocab_size, c.max_seq_len});
    init.init(5);
    save_pretrained(dir.path / "sft", init);  // the "SFT checkpoint" DPO starts from
    c.init_from = (dir.path / "sft").string();
    c.out_dir = (dir.path / "run").string();
    return c;
}

std::vector<float> weights(DpoTrainer& t) {
    auto& d = t.model().params().data();
    return std::vector<float>(d.data<float>(), d.data<float>() + d.numel());
}

}  // namespace

TEST_CASE("DPO trainer: JSONL pairs through the tokenizer; training lowers the validation DPO loss") {
    TempDir dir;
    TrainConfig c = dpo_run(dir);
    c.max_steps = 16;
    DpoTrainer t(c);
    const auto& stats = t.data().stats();
    CHECK(stats.examples == 16);
    CHECK(stats.truncated == 0);
    CHECK(t.data().train_examples() == 16);
    CHECK(t.data().val_examples() == 6);
    CHECK(t.data().val_batches() == 2);
    auto before = t.evaluate();
    CHECK(before.tokens == 6);  // pairs, the padding of the last batch excluded
    CHECK(before.loss == doctest::Approx(std::log(2.0)).epsilon(1e-6));  // policy == reference
    const double first = t.train_step();
    CHECK(first == float(std::log(2.0)));
    t.fit();
    auto after = t.evaluate();
    INFO("val DPO loss " << before.loss << " -> " << after.loss << ", last train loss " << t.last_loss());
    CHECK(after.loss < 0.5 * before.loss);
    CHECK(t.last_loss() < 0.5 * first);
    CHECK(fs::exists(fs::path(c.out_dir) / "final" / "model.safetensors"));
    // Samples start from the prompt of the latest pair, through the assistant header.
    const std::string prompt = Tokenizer::load(c.tokenizer).decode(t.objective().sample_prompt(100));
    CHECK(prompt.starts_with("<|im_start|>user\nadd "));
    CHECK(prompt.ends_with("<|im_end|>\n<|im_start|>assistant\n"));

    // Without val_data, val_fraction holds out pairs (SFT's data, arity 2).
    TrainConfig frac = c;
    frac.val_data.clear();
    frac.val_fraction = 0.25;
    DPO::Data held_out(frac);
    CHECK(held_out.train_examples() == 12);
    CHECK(held_out.val_examples() == 4);
    // A missing tokenizer is named.
    TrainConfig bad = c;
    bad.tokenizer.clear();
    CHECK_THROWS_WITH_AS(DpoTrainer{bad}, doctest::Contains("tokenizer"), Error);
}

TEST_CASE("DPO trainer: stop and resume equals the uninterrupted run bit for bit (the reference is rebuilt)") {
    TempDir dir;
    TrainConfig straight = dpo_run(dir);
    straight.max_steps = 8;
    straight.out_dir = (dir.path / "straight").string();
    DpoTrainer a(straight);
    for (int i = 0; i < 8; ++i) a.train_step();

    TrainConfig first = straight;
    first.out_dir = (dir.path / "split").string();
    {
        DpoTrainer b(first);
        for (int i = 0; i < 4; ++i) b.train_step();
        b.save();
    }
    TrainConfig second = first;
    second.resume = true;
    DpoTrainer c(second);
    REQUIRE(c.step() == 4);
    for (int i = 0; i < 4; ++i) c.train_step();
    auto wa = weights(a), wc = weights(c);
    REQUIRE(wa.size() == wc.size());
    CHECK(std::memcmp(wa.data(), wc.data(), wa.size() * sizeof(float)) == 0);
    CHECK(a.last_loss() == c.last_loss());
    CHECK(a.last_loss() < std::log(2.0));
}
