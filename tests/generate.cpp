// Incremental decoding and sampling: the KV cache gives the same logits as a full forward pass, and each
// sampling rule does what it says.
#include <minitrain/nn/generate.hpp>

#include "support/gradcheck.hpp"

using namespace minitrain;
using namespace mt_test;

namespace {
/// Returns the full forward's logits. `p`: the precision of the products (core/precision.hpp).
template <class Net>
std::vector<double> check_cache_matches_full_forward(Precision p = Precision::f32) {
    Autocast autocast(p);
    Transformer<Net> model(ModelConfig{61, 40});
    model.init(5);
    Rng rng{9};
    const int B = 2, T = 11;
    auto ids = randint({B, T}, rng, 0, 61);
    Graph<CPU> g;
    NoGrad<CPU> ng(g);
    g.set_training(false);
    auto full = to_vector(model.forward(g, ids).logits->data);  // (B, T, V)

    // Prefill 4 positions, then 1, then 3, then the rest one by one.
    auto cache = model.make_cache(B, 20);
    std::vector<double> cached(full.size());
    int pos = 0;
    for (int n : {4, 1, 3, 1, 1, 1}) {
        Buffer<CPU> chunk(Shape{B, n}, DType::i32);
        for (int b = 0; b < B; ++b)
            for (int t = 0; t < n; ++t) chunk.data<std::int32_t>()[b * n + t] = ids.data<std::int32_t>()[b * T + pos + t];
        g.reset();
        auto out = to_vector(model.forward(g, chunk, nullptr, &cache).logits->data);
        for (int b = 0; b < B; ++b)
            for (int t = 0; t < n; ++t)
                for (int v = 0; v < 61; ++v)
                    cached[std::size_t((b * T + pos + t) * 61 + v)] = out[std::size_t((b * n + t) * 61 + v)];
        pos += n;
    }
    REQUIRE(pos == T);
    CHECK(cache.length == T);
    // bf16: the products round the same inputs in both paths and sum over k in the same order, so the two
    // agree to f32 rounding here too (1e-5 relative: the tile shapes differ, not the sums).
    check_close(cached, full, 1e-5, 1e-5, "cached decoding vs full forward");
    return full;
}
}  // namespace

TEST_CASE("KV-cache decoding reproduces the full forward's logits (dense)") {
    check_cache_matches_full_forward<Model<2, 32, 4, false, Knobs<2>>>();
}

TEST_CASE("bf16 (generate/chat/serve --dtype bf16): KV-cache decoding reproduces the bf16 full forward, which is "
          "within bf16 rounding of f32") {
    using Net = Model<2, 32, 4, false, Knobs<2>>;
    const auto f32 = check_cache_matches_full_forward<Net>(Precision::f32);
    const auto bf16 = check_cache_matches_full_forward<Net>(Precision::bf16);
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < f32.size(); ++i) worst = std::max(worst, std::fabs(f32[i] - bf16[i])), scale = std::max(scale, std::fabs(f32[i]));
    MESSAGE("logits: max |bf16 - f32| = " << worst << " (max |logit| " << scale << ")");
    CHECK(worst > 1e-6 * scale);  // the products ran in bf16
    CHECK(worst < 0.02 * scale);  // a few bf16 roundings (2^-9 each) through two layers
}

TEST_CASE("KV-cache decoding reproduces the full forward's logits (MoE)") {
    check_cache_matches_full_forward<Model<2, 32, 4, true, Knobs<2, 48>>>();
}

TEST_CASE("sampler: greedy takes the argmax, after the repetition penalty") {
    SampleOptions o;
    o.temperature = 0;
    Sampler s(o);
    std::vector<float> logits = {0.1f, 2.0f, 1.9f, -3.0f};
    std::vector<std::int32_t> none;
    CHECK(s.sample(logits, none) == 1);
    o.repetition_penalty = 1.2;
    Sampler p(o);
    logits = {0.1f, 2.0f, 1.9f, -3.0f};
    std::vector<std::int32_t> ctx = {1, 3};
    CHECK(p.sample(logits, ctx) == 2);  // 2.0 / 1.2 < 1.9
    CHECK(logits[1] == doctest::Approx(2.0 / 1.2));
    CHECK(logits[3] == doctest::Approx(-3.0 * 1.2));  // negative logits are multiplied
}

TEST_CASE("sampler: top-k and top-p restrict the candidates; a seed fixes the stream") {
    const std::vector<float> base = {3.0f, 2.9f, 2.8f, 0.0f, -1.0f, 1.0f};
    std::vector<std::int32_t> none;
    auto draw = [&](SampleOptions o, int n) {
        Sampler s(o);
        std::vector<int> counts(base.size());
        for (int i = 0; i < n; ++i) {
            auto l = base;
            ++counts[std::size_t(s.sample(l, none))];
        }
        return counts;
    };
    SampleOptions o;
    o.top_k = 2;
    auto k2 = draw(o, 2000);
    CHECK(k2[0] + k2[1] == 2000);
    CHECK(k2[0] > 0);
    CHECK(k2[1] > 0);
    o.top_k = 0;
    o.top_p = 0.5;  // p(0) ~ 0.35, p(0) + p(1) ~ 0.67 >= 0.5: two candidates
    auto p5 = draw(o, 2000);
    CHECK(p5[0] + p5[1] == 2000);
    o.top_p = 1.0;
    auto all = draw(o, 4000);
    CHECK(all[5] > 0);  // without cuts every token can appear
    o.seed = 77;
    CHECK(draw(o, 50) == draw(o, 50));
    SampleOptions other = o;
    other.seed = 78;
    CHECK(draw(o, 200) != draw(other, 200));
}

TEST_CASE("generate: seeded, stops at max_new_tokens and at the end token, streams every token") {
    Transformer<Model<2, 32, 4, false, Knobs<2>>> model(ModelConfig{40, 64});
    model.init(3);
    std::vector<std::int32_t> prompt = {1, 2, 3};
    SampleOptions o;
    o.seed = 5;
    o.max_new_tokens = 10;
    std::vector<std::int32_t> streamed;
    auto a = generate(model, std::span<const std::int32_t>(prompt), o, [&](std::int32_t t) {
        streamed.push_back(t);
        return true;
    });
    CHECK(a.size() == 10);
    CHECK(streamed == a);
    CHECK(generate(model, std::span<const std::int32_t>(prompt), o) == a);
    o.eos_token = a[3];
    auto stopped = generate(model, std::span<const std::int32_t>(prompt), o);
    CHECK(stopped.size() <= 4);
    CHECK(stopped.back() == a[3]);
    CHECK_THROWS_AS(generate(model, std::span<const std::int32_t>(), o), Error);
}

TEST_CASE("generate_group: G rows decoded together give each row's one-at-a-time tokens (greedy and sampled)") {
    Transformer<Model<2, 32, 4, false, Knobs<2>>> model(ModelConfig{40, 64});
    model.init(3);
    std::vector<std::int32_t> prompt = {1, 2, 3, 4, 5};
    // Greedy rows with different end tokens: rows stop at different steps while the others go on.
    SampleOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 12;
    const auto free_run = generate(model, std::span<const std::int32_t>(prompt), greedy);
    REQUIRE(free_run.size() == 12);
    std::vector<SampleOptions> os(4, greedy);
    os[1].eos_token = free_run[2];
    os[2].eos_token = free_run[7];
    os[3].repetition_penalty = 1.5;  // a rule that reads each row's own context
    auto rows = generate_group(model, std::span<const std::int32_t>(prompt), std::span<const SampleOptions>(os));
    REQUIRE(rows.size() == 4);
    for (int j = 0; j < 4; ++j) {
        INFO("greedy row " << j);
        CHECK(rows[std::size_t(j)] == generate(model, std::span<const std::int32_t>(prompt), os[std::size_t(j)]));
    }
    CHECK(rows[1].size() <= 3);
    CHECK(rows[0].size() == 12);
    // Sampled rows, each with its own seed: the same streams as generate() with that seed.
    std::vector<SampleOptions> sampled(6);
    for (int j = 0; j < 6; ++j) {
        sampled[std::size_t(j)].temperature = 1.5;
        sampled[std::size_t(j)].seed = 100 + std::uint64_t(j);
        sampled[std::size_t(j)].max_new_tokens = 10;
        sampled[std::size_t(j)].eos_token = 7;
    }
    rows = generate_group(model, std::span<const std::int32_t>(prompt), std::span<const SampleOptions>(sampled));
    bool differ = false;
    for (int j = 0; j < 6; ++j) {
        INFO("sampled row " << j);
        CHECK(rows[std::size_t(j)] == generate(model, std::span<const std::int32_t>(prompt), sampled[std::size_t(j)]));
        differ = differ || rows[std::size_t(j)] != rows[0];
    }
    CHECK(differ);  // the seeds matter: not one stream copied G times
    std::vector<SampleOptions> uneven(2, greedy);
    uneven[1].max_new_tokens = 3;
    CHECK_THROWS_WITH_AS(generate_group(model, std::span<const std::int32_t>(prompt), std::span<const SampleOptions>(uneven)),
                         doctest::Contains("same max_new_tokens"), Error);
}
