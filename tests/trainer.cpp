// The Pretrain trainer end to end on a small synthetic corpus: the loss falls, the run directory holds
// metrics and checkpoints, and stopping + resuming reproduces the uninterrupted run bit for bit.
#include <filesystem>
#include <cstring>
#include <fstream>
#include <iterator>

#include <minitrain/minitrain.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using Net = Model<2, 32, 4, false, Knobs<2>>;
using Train = Trainer<Net, Optimizer<AdamW>, Schedule<Cosine>, Pretrain>;


/// A learnable corpus: noisy counting sequences "a, a+1, a+2, ..." modulo the vocabulary.
void write_corpus(const fs::path& path, int tokens, int vocab, std::uint64_t seed) {
    Rng rng{seed};
    std::vector<std::uint32_t> t(static_cast<std::size_t>(tokens));
    std::uint32_t x = 0;
    for (auto& v : t) {
        x = rng.below(10) == 0 ? std::uint32_t(rng.below(std::uint64_t(vocab))) : (x + 1) % std::uint32_t(vocab);
        v = x;
    }
    write_token_shard(path, t, vocab);
}

TrainConfig small_config(const TempDir& dir) {
    TrainConfig c;
    c.train_data = (dir.path / "train.bin").string();
    c.val_data = (dir.path / "val.bin").string();
    c.vocab_size = 50;
    c.batch_size = 4;
    c.max_seq_len = 16;
    c.learning_rate = 3e-3;
    c.log_interval = 0;
    c.save_interval = 0;
    c.out_dir = (dir.path / "run").string();
    c.threads = 2;
    c.quiet = true;
    return c;
}

std::vector<float> weights(Train& t) {
    auto& d = t.model().params().data();
    return std::vector<float>(d.data<float>(), d.data<float>() + d.numel());
}

}  // namespace

TEST_CASE("pretraining on a learnable corpus lowers the validation loss, and the run directory is complete") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 20000, 50, 1);
    write_corpus(dir.path / "val.bin", 3000, 50, 2);
    TrainConfig c = small_config(dir);
    c.max_steps = 60;
    c.log_interval = 20;
    Train t(c);
    double before = t.evaluate().loss;
    CHECK(before == doctest::Approx(std::log(50.0)).epsilon(0.1));  // untrained: about uniform
    t.fit();
    double after = t.evaluate().loss;
    INFO("val loss before " << before << ", after " << after);
    CHECK(after < before - 1.0);
    CHECK(fs::exists(fs::path(c.out_dir) / "metrics.jsonl"));
    CHECK(fs::exists(fs::path(c.out_dir) / "final" / "model.safetensors"));
    CHECK(fs::exists(fs::path(c.out_dir) / "final" / "config.json"));
    CHECK(latest_checkpoint(c.out_dir).has_value());
    std::ifstream metrics(fs::path(c.out_dir) / "metrics.jsonl");
    int lines = 0, evals = 0;
    for (std::string line; std::getline(metrics, line); ++lines) {
        auto j = nlohmann::json::parse(line);
        if (j.contains("val_loss")) ++evals;
        if (j.contains("loss")) {
            CHECK(j.contains("lr"));
            CHECK(j.contains("grad_norm"));
            CHECK(j.contains("tokens_per_s"));
        }
    }
    CHECK(lines >= 4);
    CHECK(evals == 1);
}

TEST_CASE("resume: N steps, stop, resume, N steps equals 2N steps bit for bit") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 6000, 50, 3);
    write_corpus(dir.path / "val.bin", 1000, 50, 4);
    const int N = 6;

    TrainConfig straight = small_config(dir);
    straight.max_steps = 2 * N;
    straight.out_dir = (dir.path / "straight").string();
    straight.accumulation_steps = 2;
    straight.dropout = 0.0;
    Train a(straight);
    for (int i = 0; i < 2 * N; ++i) a.train_step();

    TrainConfig first = straight;
    first.out_dir = (dir.path / "split").string();
    {
        Train b(first);
        for (int i = 0; i < N; ++i) b.train_step();
        b.save();
    }  // the process "stops" here
    TrainConfig second = first;
    second.resume = true;
    TrainConfig reshaped = second;
    reshaped.batch_size = 2;  // the saved data position would mean other data
    CHECK_THROWS_WITH_AS(Train{reshaped}, doctest::Contains("batch_size = 4 x 1 process = 4 sequences per global batch, this one has 2 x 1 = 2"), Error);
    Train c(second);
    REQUIRE(c.step() == N);
    for (int i = 0; i < N; ++i) c.train_step();

    auto wa = weights(a), wc = weights(c);
    REQUIRE(wa.size() == wc.size());
    CHECK(std::memcmp(wa.data(), wc.data(), wa.size() * sizeof(float)) == 0);
    CHECK(a.last_loss() == c.last_loss());
}

TEST_CASE("gradient accumulation given as total batch tokens") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 5000, 50, 5);
    write_corpus(dir.path / "val.bin", 1000, 50, 6);
    TrainConfig c = small_config(dir);
    c.max_steps = 1;
    c.total_batch_tokens = 4 * 16 * 3;
    Train t(c);
    CHECK(t.config().accumulation_steps == 3);
    c.total_batch_tokens = 100;
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("not a multiple of batch_size x max_seq_len"), Error);
}

TEST_CASE("configuration errors name the knob") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 2000, 50, 7);
    TrainConfig c = small_config(dir);
    c.val_data.clear();
    c.batch_size = 0;
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("batch_size"), Error);
    c = small_config(dir);
    c.val_data.clear();
    c.dtype = "half";
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("bf16 is this CPU's fast type: use --dtype bf16"), Error);
    c.dtype = "int8";
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("dtype: expected f32 (fp32, float32), bf16 (bfloat16)"), Error);
    c = small_config(dir);
    c.val_data.clear();
    c.vocab_size = 20;  // the corpus has ids up to 49
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("train.bin"), Error);
    c = small_config(dir);
    c.val_data.clear();
    c.max_seq_len = 4000;  // more than the corpus holds
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("one batch needs"), Error);
}

// ---- divergence guard ----------------------------------------------------------------------------------

TEST_CASE("StepGuard: non-finite steps and outliers are skipped, K in a row is divergence, state round-trips") {
    StepGuard g({.outlier_sigma = 3, .max_bad_steps = 3, .window = 32, .min_history = 8});
    CHECK(g.judge(std::nan(""), 1.0) == StepGuard::Verdict::non_finite);
    CHECK(g.judge(2.0, INFINITY) == StepGuard::Verdict::non_finite);
    CHECK(g.consecutive() == 2);
    CHECK_FALSE(g.diverged());
    // Below min_history nothing is an outlier, however large.
    for (int i = 0; i < 7; ++i) CHECK(g.judge(3.0 + 0.01 * (i % 3), 1.0 + 0.01 * (i % 2)) == StepGuard::Verdict::apply);
    CHECK(g.consecutive() == 0);
    CHECK(g.judge(1e6, 1.0) == StepGuard::Verdict::apply);  // the 8th applied step: still no judgement before it
    StepGuard h({.outlier_sigma = 3, .max_bad_steps = 3, .window = 32, .min_history = 8});
    for (int i = 0; i < 20; ++i) CHECK(h.judge(3.0 + 0.01 * (i % 3), 1.0 + 0.01 * (i % 2)) == StepGuard::Verdict::apply);
    CHECK(h.judge(3.5, 1.0) == StepGuard::Verdict::outlier);  // loss 60 sigma above
    CHECK(h.judge(3.0, 9.0) == StepGuard::Verdict::outlier);  // norm far above
    CHECK(h.judge(2.0, 0.5) == StepGuard::Verdict::apply);    // low is not an outlier: only spikes are
    CHECK(h.outliers() == 2);
    CHECK(h.skipped() == 2);
    StepGuard r({.outlier_sigma = 3, .max_bad_steps = 3, .window = 32, .min_history = 8});
    r.restore(h.state(), "test");
    CHECK(r.state() == h.state());
    CHECK(r.judge(3.5, 1.0) == h.judge(3.5, 1.0));
    CHECK(r.loss_z(3.2) == h.loss_z(3.2));
    for (int i = 0; i < 2; ++i) h.judge(NAN, NAN);
    CHECK_FALSE(h.diverged());
    h.judge(NAN, 1.0);
    CHECK(h.diverged());
    StepGuard small({.outlier_sigma = 3, .max_bad_steps = 3, .window = 4, .min_history = 2});
    CHECK_THROWS_WITH_AS(small.restore(r.state(), "ckpt/training_state.safetensors"),
                         doctest::Contains("ckpt/training_state.safetensors"), Error);
}

namespace {
bool all_finite(Train& t) { return !find_non_finite(t.model().params()).has_value(); }
std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_CASE("a diverging run stops with TrainingDiverged, keeps finite weights and writes no NaN checkpoint") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 6000, 50, 11);
    write_corpus(dir.path / "val.bin", 1000, 50, 12);
    TrainConfig c = small_config(dir);
    c.max_steps = 40;
    c.save_interval = 2;
    c.keep_last = 1;
    c.grad_clip = 0;
    c.max_bad_steps = 3;
    c.learning_rate = 1e30;  // the first update sends the weights to ~1e30: every later loss overflows
    c.log_interval = 100;
    Train t(c);
    std::string msg;
    try {
        t.fit();
    } catch (const TrainingDiverged& e) {
        msg = e.what();
    }
    INFO(msg);
    REQUIRE_FALSE(msg.empty());
    CHECK(t.step() < 40);
    CHECK(t.guard().consecutive() == 3);
    CHECK(msg.find("learning_rate (this run: 1e+30") != std::string::npos);
    CHECK(msg.find("grad_clip 1.0") != std::string::npos);
    CHECK_FALSE(fs::exists(fs::path(c.out_dir) / "final"));
    for (const auto& [step, path] : list_checkpoints(c.out_dir)) {  // every checkpoint that exists loads
        Transformer<Net> m(ModelConfig{50, 16});
        CHECK_NOTHROW(load_pretrained(path, m));
    }
    const std::string metrics = slurp(fs::path(c.out_dir) / "metrics.jsonl");
    CHECK(metrics.find("\"skipped\":\"non_finite\"") != std::string::npos);
    CHECK(metrics.find("\"skipped_steps\":3") != std::string::npos);

    // A run whose gradients turn non-finite while its weights stay finite: the weights are those of the
    // last applied step, so a checkpoint at the last good step exists and loads.
    TrainConfig d = small_config(dir);
    d.out_dir = (dir.path / "nan-grads").string();
    d.max_steps = 30;
    d.save_interval = 1;
    d.keep_last = 1;
    d.max_bad_steps = 2;
    Train u(d);
    for (int i = 0; i < 3; ++i) u.train_step();
    u.save();
    const auto before = weights(u);
    // Poison one weight with Inf: the next loss is not finite, so the step is skipped, and saving now is refused.
    u.model().params().find("model.norm.weight").var.data.data<float>()[0] = INFINITY;
    CHECK_THROWS_WITH_AS(u.train_step(), doctest::Contains("weights are no longer finite"), TrainingDiverged);
    CHECK_FALSE(u.last_step_applied());
    CHECK(latest_checkpoint(d.out_dir) == checkpoint_dir(d.out_dir, 3));  // the newest finite one is kept
    Transformer<Net> m(ModelConfig{50, 16});
    load_pretrained(*latest_checkpoint(d.out_dir), m);
    CHECK(std::memcmp(m.params().data().data<float>(), before.data(), before.size() * sizeof(float)) == 0);
    CHECK_FALSE(all_finite(u));
}

TEST_CASE("load_pretrained refuses non-finite weights, naming the tensor, and changes nothing") {
    TempDir dir;
    Transformer<Net> m(ModelConfig{50, 16});
    m.init(3);
    save_pretrained(dir.path / "ok", m);
    auto& data = m.params().data();
    const Parameter& victim = m.params().all()[2];
    data.data<float>()[victim.offset + 4] = NAN;
    CHECK_THROWS_WITH_AS(save_pretrained(dir.path / "bad", m), doctest::Contains(victim.name.c_str()), Error);
    CHECK_FALSE(fs::exists(dir.path / "bad" / "model.safetensors"));
    // Write the NaN file by hand, as a diverged run of an older version would have.
    std::vector<NamedTensor> named;
    for (const Parameter& p : m.params().all()) named.push_back({p.name, p.var.data});
    fs::create_directories(dir.path / "bad");
    save_safetensors(dir.path / "bad" / "model.safetensors", named, {{"format", "pt"}});
    fs::copy_file(dir.path / "ok" / "config.json", dir.path / "bad" / "config.json");
    Transformer<Net> fresh(ModelConfig{50, 16});
    fresh.init(9);
    const std::vector<float> w(fresh.params().data().data<float>(), fresh.params().data().data<float>() + fresh.params().count());
    CHECK_THROWS_WITH_AS(load_pretrained(dir.path / "bad", fresh),
                         doctest::Contains((victim.name + " holds 1 non-finite value").c_str()), Error);
    CHECK(std::memcmp(fresh.params().data().data<float>(), w.data(), w.size() * sizeof(float)) == 0);
}

// ---- resume checks ---------------------------------------------------------------------------------------

TEST_CASE("resume refuses changed settings, data and thread counts unless allowed; harmless changes are notes") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 6000, 50, 13);
    write_corpus(dir.path / "val.bin", 1000, 50, 14);
    TrainConfig c = small_config(dir);
    c.max_steps = 8;
    c.skip_outlier_sigma = 3;  // the guard's window goes into the checkpoint too
    {
        Train t(c);
        for (int i = 0; i < 4; ++i) t.train_step();
        t.save();
    }
    TrainConfig r = c;
    r.resume = true;
    TrainConfig lr = r;
    lr.learning_rate = 1e-3;
    CHECK_THROWS_WITH_AS(Train{lr}, doctest::Contains("learning_rate: 0.003 in the saved run, 0.001 now"), Error);
    TrainConfig thr = r;
    thr.threads = 1;
    CHECK_THROWS_WITH_AS(Train{thr}, doctest::Contains("threads: 2 in the saved run, 1 now"), Error);
    TrainConfig seed = r;
    seed.seed = 7;
    CHECK_THROWS_WITH_AS(Train{seed}, doctest::Contains("seed"), Error);
    lr.allow_changed_resume = true;
    {
        Train ok(lr);
        CHECK(ok.step() == 4);
    }
    // Other training data (same name, other contents) is refused; other validation data is only a note.
    write_corpus(dir.path / "val.bin", 1200, 50, 15);
    { Train ok(r); CHECK(ok.step() == 4); }
    write_corpus(dir.path / "train.bin", 6000, 50, 16);
    CHECK_THROWS_WITH_AS(Train{r}, doctest::Contains("train_data: 1 file starting with train.bin"), Error);
}

TEST_CASE("bad flag combinations are refused at start, naming the knob") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 2000, 50, 17);
    TrainConfig base = small_config(dir);
    base.val_data.clear();
    base.max_steps = 4;
    auto refused = [&](auto change, const char* what) {
        TrainConfig c = base;
        change(c);
        CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains(what), Error);
    };
    refused([](TrainConfig& c) { c.threads = -3; }, "threads must be >= 0");
    refused([](TrainConfig& c) { c.min_lr = 1; }, "min_lr must be between 0 and learning_rate");
    refused([](TrainConfig& c) { c.beta2 = 1; }, "beta2");
    refused([](TrainConfig& c) { c.dropout = 1.5; }, "dropout");
    refused([](TrainConfig& c) { c.warmup_steps = 10; }, "warmup_steps 10 is more than the run's 4 steps");
    refused([](TrainConfig& c) { c.save_interval = -1; }, "save_interval must be >= 0");
    refused([](TrainConfig& c) { c.skip_outlier_sigma = 0.5; }, "skip_outlier_sigma");
    refused([](TrainConfig& c) { c.max_bad_steps = -1; }, "max_bad_steps");
}

TEST_CASE("metrics: a failed write stops the run with the real file named") {
    MetricsLog log("/dev/full");  // every write fails with ENOSPC, as on a full disk
    CHECK_THROWS_WITH_AS(log.write({{"step", 1}}), doctest::Contains("/dev/full: cannot append to the metrics file"), Error);
}

// ---- mixed precision (core/precision.hpp) ------------------------------------------------------------------

TEST_CASE("bf16: trains as f32 does from the same start, keeps f32 checkpoints, resumes bit for bit, switches precision") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 20000, 50, 1);
    write_corpus(dir.path / "val.bin", 3000, 50, 2);
    TrainConfig c = small_config(dir);
    c.max_steps = 60;
    c.dropout = 0.0;
    c.out_dir = (dir.path / "f32").string();
    Train f32(c);
    const double start = f32.evaluate().loss;
    for (int i = 0; i < 60; ++i) f32.train_step();
    const double loss32 = f32.evaluate().loss;

    c.dtype = "bfloat16";  // MiniMind's spelling
    c.out_dir = (dir.path / "bf16").string();
    Train bf(c);
    CHECK(bf.precision() == Precision::bf16);
    CHECK(bf.config().dtype == "bf16");
    CHECK(bf.grad_scaler() == nullptr);  // bf16 needs no loss scaling
    CHECK(bf.evaluate().loss == doctest::Approx(start).epsilon(1e-3));  // the same start, evaluated in bf16
    for (int i = 0; i < 60; ++i) bf.train_step();
    CHECK(matmul_precision() == Precision::f32);  // the trainer's scope ends with each step
    const double loss16 = bf.evaluate().loss;
    INFO("val loss: start " << start << ", f32 " << loss32 << ", bf16 " << loss16);
    CHECK(loss16 < start - 1.0);
    CHECK(std::fabs(loss16 - loss32) / loss32 < 0.02);  // 60 steps of a tiny model; RESULTS.md has a longer run
    CHECK(weights(bf) != weights(f32));                 // the products really ran in bf16

    // Checkpoints hold the f32 master weights, and resuming a bf16 run reproduces it bit for bit.
    TrainConfig first = c;
    first.max_steps = 12;
    first.out_dir = (dir.path / "split").string();
    TrainConfig straight = first;
    straight.out_dir = (dir.path / "straight").string();
    Train a(straight);
    for (int i = 0; i < 12; ++i) a.train_step();
    {
        Train b(first);
        for (int i = 0; i < 6; ++i) b.train_step();
        const fs::path ck = b.save();
        SafeTensors st(ck / "model.safetensors");
        CHECK(st.info("model.embed_tokens.weight").dtype == "F32");
    }
    TrainConfig again = first;
    again.resume = true;
    {
        Train r(again);
        REQUIRE(r.step() == 6);
        for (int i = 0; i < 6; ++i) r.train_step();
        const auto wa = weights(a), wr = weights(r);
        CHECK(std::memcmp(wa.data(), wr.data(), wa.size() * sizeof(float)) == 0);
        r.save();
    }
    // The same checkpoint continues in f32 (a changed setting: allowed with allow_changed_resume), and back.
    TrainConfig in_f32 = again;
    in_f32.dtype = "fp32";
    in_f32.max_steps = 18;
    CHECK_THROWS_WITH_AS(Train{in_f32}, doctest::Contains("\"bf16\" in the saved run, \"f32\" now"), Error);
    in_f32.allow_changed_resume = true;
    {
        Train r(in_f32);
        REQUIRE(r.step() == 12);
        CHECK(r.precision() == Precision::f32);
        for (int i = 0; i < 6; ++i) CHECK(std::isfinite(r.train_step()));
        r.save();
    }
    TrainConfig back = in_f32;
    back.dtype = "bf16";
    back.max_steps = 24;
    Train r(back);
    REQUIRE(r.step() == 18);
    CHECK(r.precision() == Precision::bf16);
    for (int i = 0; i < 6; ++i) CHECK(std::isfinite(r.train_step()));
}

TEST_CASE("bf16: the weights are rounded once per step into a copy the products read: the same run bit for bit, "
          "and every step reads the weights as they are then (after the optimizer, load_checkpoint, an edit)") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 20000, 50, 1);
    write_corpus(dir.path / "val.bin", 3000, 50, 2);
    TrainConfig c = small_config(dir);
    c.max_steps = 20;
    c.dropout = 0.0;
    c.accumulation_steps = 2;  // one copy serves both micro-batches
    c.dtype = "bf16";
    TrainConfig o = c;
    o.out_dir = (dir.path / "other").string();
    o.init_seed = 9;
    Train other(o);  // a checkpoint with other weights, to load into both runs below
    for (int i = 0; i < 3; ++i) other.train_step();
    const fs::path ck = other.save();

    c.out_dir = (dir.path / "copy").string();
    Train with(c);
    c.out_dir = (dir.path / "rounding").string();
    Train without(c);
    REQUIRE(cpu::bf16_weight_copies_enabled());
    CHECK(with.last_bf16_weights() == nullptr);
    auto compare = [&](const char* when) {
        INFO(when);
        const auto before = weights(with);
        const double lw = with.train_step();
        cpu::set_bf16_weight_copies(false);  // `without` rounds the weights in every product, as before
        const double lo = without.train_step();
        cpu::set_bf16_weight_copies(true);
        CHECK(lw == lo);
        const auto ww = weights(with), wo = weights(without);
        CHECK(std::memcmp(ww.data(), wo.data(), ww.size() * sizeof(float)) == 0);
        // The copy the step read is the weights at its start, rounded; and it is released again.
        REQUIRE(with.last_bf16_weights() != nullptr);
        int differ = 0;
        for (std::size_t i = 0; i < before.size(); ++i) differ += with.last_bf16_weights()[i] != bf16(before[i]).bits;
        CHECK(differ == 0);
        CHECK(cpu::bf16_copy_of(with.model().params().data().data<float>(), 1) == nullptr);
    };
    for (int i = 0; i < 3; ++i) compare("after optimizer steps");
    load_checkpoint(ck, with.model(), with.optimizer());
    load_checkpoint(ck, without.model(), without.optimizer());
    compare("after load_checkpoint");
    for (Train* t : {&with, &without}) {  // an edit by hand between steps
        auto& d = t->model().params().data();
        for (std::int64_t i = 0; i < d.numel(); ++i) d.data<float>()[i] *= 1.01f;
    }
    compare("after an edit of the weights");
    const double eval_with = with.evaluate().loss;  // evaluation reads a fresh copy too
    cpu::set_bf16_weight_copies(false);
    const double eval_without = without.evaluate().loss;
    cpu::set_bf16_weight_copies(true);
    CHECK(eval_with == eval_without);
}
