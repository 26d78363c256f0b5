// The reward model (train/reward.hpp): pool_positions (value, finite-difference gradient, bad weights),
// score_weights (last and mean), the score + Bradley-Terry loss through finite differences, a tiny model's
// rewards, loss, pair accuracy and every gradient (trunk and head) against PyTorch (tests/golden/tiny_reward.safetensors),
// and the task trained end to end: held-out pair accuracy rises, the saved folder loads back to the same
// rewards bit for bit with either pooling (and its trunk loads as a plain model folder; a head that reads
// nowhere known is refused), and a stopped run resumes bit for bit.
#include "support/gradcheck.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include <minitrain/io/safetensors.hpp>
#include <minitrain/nn/transformer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/train/reward.hpp>
#include <minitrain/train/trainer.hpp>

#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using GoldenDense = Model<2, 32, 4, false, Knobs<2>>;  // tiny_dense's shape; the one model type of this file
using Net = Transformer<GoldenDense>;

const fs::path golden_dir = fs::path(__FILE__).parent_path() / "golden";

std::vector<double> read(const SafeTensors& st, const std::string& name) {
    const auto& info = st.info(name);
    Shape s;
    for (auto d : info.shape) s.dims[s.rank++] = d;
    Buffer<CPU> b(s, DType::f32);
    st.read_into(name, b);
    return to_vector(b);
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

/// (rows, T) f32 weights: a one-hot at each row's position.
Buffer<CPU> one_hot(std::initializer_list<int> p, int T) {
    Buffer<CPU> b(Shape{std::int64_t(p.size()), T}, DType::f32);
    CPU::zero(b.tensor());
    int i = 0;
    for (int v : p) b.data<float>()[T * i++ + v] = 1.0f;
    return b;
}

}  // namespace

// ---- the op and the loss --------------------------------------------------------------------------------

TEST_CASE("pool_positions: a one-hot selects its position exactly, other weights sum; gradient by finite "
          "differences; bad weights are named") {
    Rng rng{3};
    Buffer<CPU> x = randn({3, 5, 4}, rng);
    const int at[3] = {4, 0, 2};
    Buffer<CPU> pick = one_hot({4, 0, 2}, 5);
    Graph<CPU> g;
    Var& xv = g.leaf(x.tensor(), true);
    Var& y = pool_positions(g, xv, pick.tensor());
    REQUIRE(y.data.shape == Shape{3, 4});
    for (int b = 0; b < 3; ++b)
        for (int c = 0; c < 4; ++c) CHECK(y.data.data<double>()[b * 4 + c] == x.data<double>()[(b * 5 + at[b]) * 4 + c]);
    gradcheck({{&x}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return pool_positions(g, *v[0], pick.tensor()); });
    Buffer<CPU> w(Shape{3, 5}, DType::f32);
    for (int i = 0; i < 15; ++i) w.data<float>()[i] = i % 3 == 0 ? 0.0f : 0.25f * float(i % 4) - 0.3f;
    Var& z = pool_positions(g, xv, w.tensor());
    for (int b = 0; b < 3; ++b)
        for (int c = 0; c < 4; ++c) {
            double want = 0;
            for (int t = 0; t < 5; ++t) want += double(w.data<float>()[b * 5 + t]) * x.data<double>()[(b * 5 + t) * 4 + c];
            CHECK(z.data.data<double>()[b * 4 + c] == doctest::Approx(want).epsilon(1e-12));
        }
    gradcheck({{&x}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& { return pool_positions(g, *v[0], w.tensor()); });
    Buffer<CPU> short_w(Shape{3, 4}, DType::f32);
    CHECK_THROWS_WITH_AS(pool_positions(g, xv, short_w.tensor()), doctest::Contains("pool_positions: weights has shape"),
                         Error);
    Buffer<CPU> int_w(Shape{3, 5}, DType::i32);
    CHECK_THROWS_WITH_AS(pool_positions(g, xv, int_w.tensor()), doctest::Contains("weights must be f32"), Error);
}

TEST_CASE("reward score + Bradley-Terry loss: value from the formula, gradient (hidden and head) by finite differences") {
    Rng rng{7};
    const int P = 3, R = 2 * P, T = 4, C = 5;
    Buffer<CPU> h = randn({R, T, C}, rng), w = randn({1, C}, rng);
    const int pos[R] = {3, 1, 2, 0, 3, 2};
    Buffer<CPU> pick = one_hot({3, 1, 2, 0, 3, 2}, T);
    auto fwd = [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Var& r = reshape(g, linear(g, pool_positions(g, *v[0], pick.tensor()), *v[1]), {R});
        return bradley_terry_loss(g, slice_rows(g, r, 0, P), slice_rows(g, r, P, R));
    };
    gradcheck({{&h}, {&w}}, fwd);
    // The value: mean softplus(-(r_c - r_r)) with r = w . h[b, pos[b]].
    Graph<CPU> g;
    std::vector<Var*> v{&g.leaf(h.tensor()), &g.leaf(w.tensor())};
    DpoStats s;
    Var& r = reshape(g, linear(g, pool_positions(g, *v[0], pick.tensor()), *v[1]), {R});
    Var& loss = bradley_terry_loss(g, slice_rows(g, r, 0, P), slice_rows(g, r, P, R), &s);
    double want = 0, wins = 0, margin = 0;
    std::vector<double> rr(R);
    for (int b = 0; b < R; ++b) {
        for (int c = 0; c < C; ++c) rr[b] += w.data<double>()[c] * h.data<double>()[(b * T + pos[b]) * C + c];
    }
    for (int p = 0; p < P; ++p) {
        const double d = rr[p] - rr[P + p];
        want += std::log1p(std::exp(-d)) / P;
        wins += (d > 0) / double(P);
        margin += d / P;
    }
    CHECK(loss.data.data<double>()[0] == doctest::Approx(want).epsilon(1e-12));
    CHECK(s.accuracy == doctest::Approx(wins));
    CHECK(s.margin == doctest::Approx(margin).epsilon(1e-12));
    CHECK(s.chosen_reward - s.rejected_reward == doctest::Approx(margin).epsilon(1e-12));
}

TEST_CASE("score_positions: the last supervised position of each row, -1 for a row without one") {
    Buffer<CPU> tgt(Shape{3, 5}, DType::i32);
    const std::int32_t v[15] = {-100, 7, 8, -100, -100, -100, -100, -100, -100, -100, 1, 2, 3, 4, 5};
    std::memcpy(tgt.data<std::int32_t>(), v, sizeof v);
    Buffer<CPU> pos(Shape{3}, DType::i32);
    reward::score_positions(tgt, pos);
    CHECK(pos.data<std::int32_t>()[0] == 2);
    CHECK(pos.data<std::int32_t>()[1] == -1);
    CHECK(pos.data<std::int32_t>()[2] == 4);

    // The weights the head reads with: a one-hot there (last), 1/n on the n supervised positions (mean), and
    // none for the row without a score.
    Buffer<CPU> w(Shape{3, 5}, DType::f32);
    const float last[15] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    CHECK(reward::score_weights(tgt, reward::Pooling::last, w) == std::vector<char>{1, 0, 1});
    CHECK(std::memcmp(w.data<float>(), last, sizeof last) == 0);
    CHECK(reward::score_weights(tgt, reward::Pooling::mean, w) == std::vector<char>{1, 0, 1});
    const float mean[15] = {0, 0.5f, 0.5f, 0, 0, 0, 0, 0, 0, 0, 0.2f, 0.2f, 0.2f, 0.2f, 0.2f};
    CHECK(std::memcmp(w.data<float>(), mean, sizeof mean) == 0);
    CHECK(reward::parse_pooling("mean") == reward::Pooling::mean);
    CHECK_THROWS_WITH_AS(reward::parse_pooling("first"), doctest::Contains("reward_pooling \"first\": expected \"last\""),
                         Error);
}

// ---- against PyTorch -----------------------------------------------------------------------------------

TEST_CASE("reward model against PyTorch: read positions, rewards, loss, accuracy, every gradient (trunk and head)") {
    SafeTensors dense(golden_dir / "tiny_dense.safetensors"), st(golden_dir / "tiny_reward.safetensors");
    auto cfg = nlohmann::json::parse(st.metadata().at("config"));
    const auto& shape = st.info("input_ids").shape;
    const std::int64_t R = shape[0], T = shape[1], P = R / 2;
    Buffer<CPU> ids(Shape{R, T}, DType::i32), targets(Shape{R, T}, DType::i32), want_pos(Shape{R}, DType::i32);
    st.read_into("input_ids", ids);
    st.read_into("targets", targets);
    st.read_into("positions", want_pos);
    Buffer<CPU> pos(Shape{R}, DType::i32), weights(Shape{R, T}, DType::f32);
    reward::score_positions(targets, pos);
    CHECK(std::memcmp(pos.data<std::int32_t>(), want_pos.data<std::int32_t>(), std::size_t(R) * 4) == 0);
    reward::score_weights(targets, reward::Pooling::last, weights);

    Net model(ModelConfig{cfg.at("vocab_size").get<int>(), cfg.at("max_position_embeddings").get<int>()});
    for (auto& p : model.params().all()) dense.read_into(p.name, p.var.data);
    Var& head = model.params().append(reward::head_name, Shape{1, GoldenDense::hidden});
    st.read_into("score.weight", head.data);
    // append kept the trunk's values
    for (auto& p : model.params().all())
        if (p.name != reward::head_name) check_close(to_vector(p.var.data), read(dense, p.name), 0, 0, "kept " + p.name);

    Graph<CPU> g;
    Var& r = reward_scores(g, model, head, ids.tensor(), weights.tensor());
    check_close(to_vector(r.data), read(st, "rewards"), 1e-5, 1e-5, "rewards");
    DpoStats s;
    Var& loss = bradley_terry_loss(g, slice_rows(g, r, 0, P), slice_rows(g, r, P, R), &s);
    const double got = to_vector(loss.data)[0], want = read(st, "loss")[0];
    INFO("loss " << got << ", PyTorch " << want);
    CHECK(std::abs(got - want) < 1e-5 * std::abs(want) + 1e-6);
    CHECK(s.accuracy == doctest::Approx(read(st, "accuracy")[0]));
    CHECK(s.accuracy > 0.0);
    CHECK(s.accuracy < 1.0);  // both signs of the margin
    CHECK(s.margin == doctest::Approx(read(st, "margin")[0]).epsilon(1e-5));
    g.backward(loss);
    int checked = 0;
    for (auto& p : model.params().all()) {
        const auto want_g = read(st, "grad." + p.name);
        check_close(to_vector(p.var.grad), want_g, 1e-3, 1e-3 * max_abs(want_g) + 1e-30, "gradient of " + p.name);
        ++checked;
    }
    CHECK(checked == int(model.params().all().size()));  // trunk + score.weight
}

// ---- the task ------------------------------------------------------------------------------------------

namespace {

/// DPO JSONL: "add A and B" -> chosen "the sum is A+B.", rejected "no idea.".
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

using RewardTrainer = Trainer<GoldenDense, Optimizer<AdamW>, Schedule<Cosine>, RewardModel>;

TrainConfig reward_run(const TempDir& dir) {
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
    c.max_seq_len = 40;
    c.batch_size = 4;
    c.learning_rate = 2e-3;
    c.weight_decay = 0;
    c.log_interval = 0;
    c.save_interval = 0;
    c.quiet = true;
    Net init(ModelConfig{c.vocab_size, c.max_seq_len});
    init.init(5);
    save_pretrained(dir.path / "sft", init);  // the "SFT model" the reward model starts from
    c.init_from = (dir.path / "sft").string();
    c.out_dir = (dir.path / "run").string();
    return c;
}

std::vector<float> weights(RewardTrainer& t) {
    auto& d = t.model().params().data();
    return std::vector<float>(d.data<float>(), d.data<float>() + d.numel());
}

}  // namespace

TEST_CASE("reward trainer, either pooling: init_from loads the trunk; training raises held-out pair accuracy; the "
          "saved folder reproduces the rewards exactly") {
    for (const std::string pooling : {"last", "mean"}) {
        CAPTURE(pooling);
        TempDir dir;
        TrainConfig c = reward_run(dir);
        c.max_steps = 12;
        c.reward_pooling = pooling;
        RewardTrainer t(c);
        {  // the trunk is the SFT folder's, the head from the seed
            Net sft(ModelConfig{c.vocab_size, c.max_seq_len});
            load_pretrained(c.init_from, sft);
            const auto n = sft.params().count();
            CHECK(t.model().params().count() == n + GoldenDense::hidden);
            CHECK(std::memcmp(t.model().params().data().data<float>(), sft.params().data().data<float>(), n * 4) == 0);
            CHECK(max_abs(to_vector(t.objective().head().data)) > 0);
        }
        auto before = t.evaluate();
        CHECK(before.tokens == 6);  // pairs, the padding of the last batch excluded
        t.fit();
        auto after = t.evaluate();
        INFO("val Bradley-Terry loss " << before.loss << " -> " << after.loss);
        CHECK(after.loss < 0.5 * before.loss);
        CHECK(after.loss < 0.3);
        CHECK(t.objective().last_eval().stats.accuracy == 1.0);  // the last validation batch: every chosen reply wins

        // Rewards of the validation pairs from the trained model, then from the saved folder.
        auto& data = t.data();
        data.val_reset();
        Buffer<CPU> ids(Shape{2 * c.batch_size, c.max_seq_len}, DType::i32), tgt(Shape{2 * c.batch_size, c.max_seq_len}, DType::i32);
        data.val_next(ids, tgt);
        const auto trained = score_sequences(t.model(), t.objective().reward_head(), ids, tgt);
        const fs::path final_dir = fs::path(c.out_dir) / "final";
        REQUIRE(fs::exists(final_dir / reward::head_file));
        Net loaded(ModelConfig{c.vocab_size, c.max_seq_len});
        const RewardHead head = load_reward_model(final_dir, loaded);
        CHECK(head.pooling == reward::parse_pooling(pooling));
        const auto again = score_sequences(loaded, head, ids, tgt);
        REQUIRE(again.size() == trained.size());
        for (std::size_t i = 0; i < trained.size(); ++i) CHECK(again[i] == trained[i]);  // bit for bit
        for (int p = 0; p < c.batch_size; ++p) CHECK(again[std::size_t(p)] > again[std::size_t(p + c.batch_size)]);
        // Held-out pair statistics of the loaded folder: every validation pair, the Trainer's validation loss.
        const PairEvaluation pe = evaluate_pairs(loaded, head, t.data(), c.batch_size, c.max_seq_len);
        INFO("held-out pair accuracy " << pe.accuracy << ", margin " << pe.margin);
        CHECK(pe.pairs == 6);
        CHECK(pe.loss == doctest::Approx(after.loss).epsilon(1e-5));
        CHECK(pe.accuracy >= 5.0 / 6.0);
        CHECK(pe.margin > 1.0);
        // The trunk alone is a plain model folder; a plain folder is not a reward model.
        Net plain(ModelConfig{c.vocab_size, c.max_seq_len});
        load_pretrained(final_dir, plain);
        Net plain2(ModelConfig{c.vocab_size, c.max_seq_len});
        CHECK_THROWS_WITH_AS(load_reward_model(c.init_from, plain2), doctest::Contains("no reward head"), Error);
        // A head whose metadata names a read position this code does not know is refused, naming the field.
        if (pooling == "mean") {
            const fs::path head_path = final_dir / reward::head_file;
            Buffer<CPU> w(Shape{1, GoldenDense::hidden}, DType::f32);
            SafeTensors(head_path).read_into(reward::head_name, w);
            save_safetensors(head_path, {{reward::head_name, w.tensor()}},
                             {{"format", "pt"}, {reward::head_metadata_key, R"({"hidden": 32, "position": "middle"})"}});
            Net plain3(ModelConfig{c.vocab_size, c.max_seq_len});
            CHECK_THROWS_WITH_AS(load_reward_model(final_dir, plain3),
                                 doctest::Contains("field \"position\" is \"middle\", expected \"last_supervised\""), Error);
        }
    }
}

TEST_CASE("reward trainer: stop and resume equals the uninterrupted run bit for bit (head included)") {
    TempDir dir;
    TrainConfig straight = reward_run(dir);
    straight.max_steps = 6;
    straight.out_dir = (dir.path / "straight").string();
    RewardTrainer a(straight);
    for (int i = 0; i < 6; ++i) a.train_step();

    TrainConfig first = straight;
    first.out_dir = (dir.path / "split").string();
    {
        RewardTrainer b(first);
        for (int i = 0; i < 3; ++i) b.train_step();
        b.save();
    }
    TrainConfig second = first;
    second.resume = true;
    RewardTrainer c(second);
    REQUIRE(c.step() == 3);
    for (int i = 0; i < 3; ++i) c.train_step();
    auto wa = weights(a), wc = weights(c);
    REQUIRE(wa.size() == wc.size());
    CHECK(std::memcmp(wa.data(), wc.data(), wa.size() * sizeof(float)) == 0);
    CHECK(a.last_loss() == c.last_loss());
    CHECK(a.last_loss() < std::log(2.0));
}
