// The Pretrain trainer end to end on a small synthetic corpus: the loss falls, the run directory holds
// metrics and checkpoints, and stopping + resuming reproduces the uninterrupted run bit for bit.
#include <filesystem>
#include <fstream>

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
    CHECK_THROWS_WITH_AS(Train{reshaped}, doctest::Contains("batch_size = 4, this one has 2"), Error);
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
    c.dtype = "bf16";
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("CUDA backend"), Error);
    c = small_config(dir);
    c.val_data.clear();
    c.vocab_size = 20;  // the corpus has ids up to 49
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("train.bin"), Error);
    c = small_config(dir);
    c.val_data.clear();
    c.max_seq_len = 4000;  // more than the corpus holds
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("one batch needs"), Error);
}
