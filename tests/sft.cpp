// The SFT task end to end: the loss covers exactly the assistant replies (checked against a hand
// computation over the same batch), and training on a small conversation set lowers the validation loss.
#include <filesystem>
#include <fstream>

#include <minitrain/minitrain.hpp>
#include <minitrain/train/sft.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using Net = Model<2, 32, 4, false, Knobs<2>>;
using Train = Trainer<Net, Optimizer<AdamW>, Schedule<Cosine>, SFT>;


/// Conversations "add a b" -> "c": learnable, with a system turn on some of them.
void write_conversations(const fs::path& file, int n, std::uint64_t seed) {
    Rng rng{seed};
    std::ofstream out(file);
    for (int i = 0; i < n; ++i) {
        int a = int(rng.below(10)), b = int(rng.below(10));
        nlohmann::json conv = nlohmann::json::array();
        if (i % 3 == 0) conv.push_back({{"role", "system"}, {"content", "You add numbers."}});
        conv.push_back({{"role", "user"}, {"content", "add " + std::to_string(a) + " " + std::to_string(b)}});
        conv.push_back({{"role", "assistant"}, {"content", std::to_string(a + b)}});
        out << nlohmann::json{{"conversations", conv}}.dump() << "\n";
    }
}

TrainConfig config(const TempDir& dir) {
    std::vector<std::string> texts;
    for (int i = 0; i < 50; ++i) texts.push_back("add " + std::to_string(i % 10) + " " + std::to_string(i / 5) + " You add numbers.");
    Tokenizer::TrainOptions to;
    to.vocab_size = 300;
    Tokenizer::train_from_texts(texts, to).save(dir.path / "tokenizer.json");
    write_conversations(dir.path / "train.jsonl", 64, 1);
    write_conversations(dir.path / "val.jsonl", 16, 2);
    TrainConfig c;
    c.tokenizer = (dir.path / "tokenizer.json").string();
    c.train_data = (dir.path / "train.jsonl").string();
    c.val_data = (dir.path / "val.jsonl").string();
    c.vocab_size = 300;
    c.batch_size = 8;
    c.max_seq_len = 40;
    c.learning_rate = 3e-3;
    c.log_interval = 0;
    c.save_interval = 0;
    c.out_dir = (dir.path / "run").string();
    c.quiet = true;
    return c;
}

}  // namespace

TEST_CASE("SFT loss is the mean cross-entropy over the assistant replies only") {
    TempDir dir;
    Train t(config(dir));
    const Tokenizer& tok = t.data().tokenizer();
    const int B = 8, T = 40, V = 300;
    Buffer<CPU> ids(Shape{B, T}, DType::i32), targets(Shape{B, T}, DType::i32);
    t.data().val_reset();
    t.data().val_next(ids, targets);

    // By hand: the supervised targets are the tokens after "<|im_start|>assistant\n" up to and including
    // "<|im_end|>" and the newline after it; every other target is ignored.
    const auto header = tok.encode("<|im_start|>assistant\n");
    const std::int32_t im_end = tok.token_id("<|im_end|>"), im_start = tok.token_id("<|im_start|>");
    const auto newline = tok.encode("\n");
    REQUIRE(newline.size() == 1);
    Buffer<CPU> hand(Shape{B, T}, DType::i32);
    const std::int32_t* id = ids.data<std::int32_t>();
    std::int32_t* h = hand.data<std::int32_t>();
    int supervised = 0;
    for (int b = 0; b < B; ++b) {
        const std::int32_t* row = id + b * T;
        bool in_reply = false;
        for (int p = 1; p < T; ++p) {
            // Token p is supervised when it lies in a reply; target[p-1] predicts it.
            if (p >= int(header.size()) && std::equal(header.begin(), header.end(), row + p - int(header.size())))
                in_reply = true;
            const bool closes = in_reply && row[p - 1] == im_end && row[p] == newline[0];
            h[b * T + p - 1] = in_reply ? row[p] : -100;
            supervised += in_reply;
            if (closes || row[p] == im_start) in_reply = false;
        }
        // The last target predicts token T, outside the (B, T) view: take the loader's word for it.
        h[b * T + T - 1] = targets.data<std::int32_t>()[b * T + T - 1];
        supervised += h[b * T + T - 1] != -100;
    }
    REQUIRE(supervised > 0);
    std::vector<std::int32_t> a(targets.data<std::int32_t>(), targets.data<std::int32_t>() + B * T),
        want(h, h + B * T);
    // Padding rows/positions: the loader pads with the pad token, never supervised.
    CHECK(a == want);

    // And the loss the trainer optimizes equals the cross-entropy averaged over those positions.
    Graph<CPU> g;
    NoGrad<CPU> ng(g);
    g.set_training(false);
    auto out = t.model().forward(g, ids, &targets.tensor());
    Buffer<CPU> all_targets(Shape{B, T}, DType::i32);
    for (int i = 0; i < B * T; ++i) all_targets.data<std::int32_t>()[i] = (i % T == T - 1) ? want[std::size_t(i)] : id[i + 1];
    auto rows = to_vector(cross_entropy_rows(g, *out.logits, all_targets.tensor()).data);
    double sum = 0;
    for (int i = 0; i < B * T; ++i)
        if (want[std::size_t(i)] != -100) sum += rows[std::size_t(i)];
    CHECK(to_vector(out.loss->data)[0] == doctest::Approx(sum / supervised).epsilon(1e-5));
    (void)V;
}

TEST_CASE("SFT training lowers the validation loss on held-out conversations") {
    TempDir dir;
    TrainConfig c = config(dir);
    c.max_steps = 40;
    Train t(c);
    double before = t.evaluate().loss;
    t.fit();
    double after = t.evaluate().loss;
    INFO("val loss " << before << " -> " << after);
    CHECK(after < before * 0.7);
}

TEST_CASE("SFT configuration errors name the missing piece") {
    TempDir dir;
    TrainConfig c = config(dir);
    c.tokenizer.clear();
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("--tokenizer"), Error);
    c = config(dir);
    c.vocab_size = 100;  // smaller than the tokenizer
    CHECK_THROWS_WITH_AS(Train{c}, doctest::Contains("vocab_size"), Error);
}
