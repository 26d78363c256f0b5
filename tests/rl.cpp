// The RL and distillation stages. GRPO / CISPO: group-relative advantages (against the formula), the
// policy loss (its value against a plain double loop, its gradient against finite differences through
// both clip branches and the KL term), a tiny model's loss and every gradient against PyTorch
// (tests/golden/tiny_grpo.safetensors), the rule rewards, and the GRPO task trained end to end: the
// reward rises, a seeded run reproduces itself, a stopped run resumes bit for bit, and LoRA trains the
// adapters only. Distillation: the loss against PyTorch at three temperatures
// (tests/golden/tiny_distill.safetensors) and finite differences, and the task: the student moves
// toward the teacher.
#include "support/gradcheck.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include <minitrain/io/safetensors.hpp>
#include <minitrain/nn/transformer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/train/distill.hpp>
#include <minitrain/train/grpo.hpp>
#include <minitrain/train/lora.hpp>
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

/// The loss from its definition (backend/cpu/grpo.hpp), in long double.
double reference_loss(PolicyLoss kind, const std::vector<double>& lp, const std::vector<double>& old,
                      const std::vector<double>& ref, const std::vector<double>& adv, const Tensor& targets,
                      double beta, double eps, double eps_high) {
    const std::int64_t R = targets.shape[0], T = targets.shape[1];
    long double total = 0;
    for (std::int64_t b = 0; b < R; ++b) {
        long double row = 0;
        int n = 0;
        for (std::int64_t t = 0; t < T; ++t) {
            const std::size_t i = std::size_t(b * T + t);
            if (targets.data<std::int32_t>()[i] == -100) continue;
            const long double r = std::exp((long double)lp[i] - old[i]), A = adv[std::size_t(b)];
            long double obj;
            if (kind == PolicyLoss::grpo) {
                const long double rc = std::min<long double>(std::max<long double>(r, 1 - eps), 1 + eps);
                obj = std::min(r * A, rc * A);
            } else {
                obj = std::min<long double>(r, eps_high) * A * lp[i];
            }
            const long double d = (long double)ref[i] - lp[i];
            row += -(obj - beta * (std::exp(d) - d - 1));
            ++n;
        }
        if (n) total += row / n;
    }
    return double(total / R);
}

}  // namespace

// ---- advantages -----------------------------------------------------------------------------------------

TEST_CASE("group_advantages: (r - group mean) / (unbiased group std + 1e-4), clamped; equal rewards give 0") {
    const std::vector<double> r = {1, 0, 0, 1, 3, 3, 3, 3};
    std::vector<float> a(r.size());
    RewardStats s = group_advantages(r, 4, a);
    const double sd = std::sqrt(1.0 / 3.0);  // {1, 0, 0, 1}: mean 0.5, unbiased variance 1/3
    for (int i = 0; i < 4; ++i) CHECK(a[std::size_t(i)] == doctest::Approx((r[std::size_t(i)] - 0.5) / (sd + 1e-4)).epsilon(1e-6));
    for (int i = 4; i < 8; ++i) CHECK(a[std::size_t(i)] == 0.0f);
    CHECK(s.mean == doctest::Approx(1.75));
    CHECK(s.group_std == doctest::Approx(sd / 2));
    // A lone success among 128 samples is (1 - 1/128) sqrt(128) = 11.2 standard deviations out: clamped to 10.
    std::vector<double> lone(128, 0.0);
    lone[127] = 1;
    std::vector<float> t(128);
    group_advantages(lone, 128, t);
    CHECK(t[127] == 10.0f);
    CHECK(t[0] == doctest::Approx(-(1.0 / 128) / (1 / std::sqrt(128.0) + 1e-4)).epsilon(1e-5));
    CHECK_THROWS_WITH_AS(group_advantages(std::vector<double>(5, 0.0), 2, std::span<float>(a.data(), 5)),
                         doctest::Contains("not a whole number of groups of 2"), Error);
}

// ---- the loss -------------------------------------------------------------------------------------------

namespace {
struct LossCase {
    Buffer<CPU> lp, old, ref, adv, targets;
    int R = 4, T = 6;
};
LossCase loss_case(std::uint64_t seed) {
    Rng rng{seed};
    LossCase c;
    c.lp = randn({c.R * c.T}, rng, 1.0);
    c.old = randn({c.R * c.T}, rng, 0.35);  // noise: ratios exp(-noise) land on both sides of both clips
    c.ref = randn({c.R * c.T}, rng, 0.5);
    c.adv = randn({c.R}, rng, 1.0);
    c.targets = randint({c.R, c.T}, rng, 0, 50);
    double *lp = c.lp.data<double>(), *old = c.old.data<double>(), *ref = c.ref.data<double>();
    for (int i = 0; i < c.R * c.T; ++i) {
        lp[i] = -std::abs(lp[i]) - 0.1;  // log-probabilities are negative
        old[i] += lp[i];
        ref[i] += lp[i];
    }
    std::int32_t* y = c.targets.data<std::int32_t>();
    for (int i = 1; i < c.R * c.T; i += 4) y[i] = -100;
    for (int t = 0; t < c.T; ++t) y[2 * c.T + t] = -100;  // row 2 generated nothing
    return c;
}
}  // namespace

TEST_CASE("grpo_loss: value and statistics follow the formula, both surrogates, a row without tokens") {
    for (PolicyLoss kind : {PolicyLoss::grpo, PolicyLoss::cispo}) {
        LossCase c = loss_case(11);
        PolicyLossOptions o{kind, 0.05, 0.2, 1.2};
        Graph<CPU> g;
        PolicyLossStats st;
        Var& loss = grpo_loss(g, g.leaf(c.lp.tensor()), c.old.tensor(), c.ref.tensor(), c.adv.tensor(),
                              c.targets.tensor(), o, &st);
        const double want = reference_loss(kind, to_vector(c.lp), to_vector(c.old), to_vector(c.ref), to_vector(c.adv),
                                           c.targets.tensor(), o.beta, o.epsilon, o.epsilon_high);
        INFO(policy_loss_name(kind));
        CHECK(to_vector(loss.data)[0] == doctest::Approx(want).epsilon(1e-12));
        CHECK(st.tokens == 14);  // 24 positions, 6 masked by the stride, 4 more in row 2 (2 of its 6 were already)
        CHECK(st.clip_fraction > 0.05);
        CHECK(st.clip_fraction < 0.95);
        CHECK(st.kl > 0);
    }
    // Without a KL term the reference is not read (an undefined tensor is fine); with beta = 0 and the
    // ratio 1 (old = lp), both surrogates give the same gradient A / (n R) per token.
    LossCase c = loss_case(12);
    for (PolicyLoss kind : {PolicyLoss::grpo, PolicyLoss::cispo}) {
        Graph<CPU> g;
        Var& lp = g.leaf(c.lp.tensor(), true);
        Var& loss = grpo_loss(g, lp, c.lp.tensor(), Tensor{}, c.adv.tensor(), c.targets.tensor(), {kind, 0.0, 0.2, 5.0});
        g.backward(loss);
        const double* d = lp.grad.data<double>();
        CHECK(d[0] == doctest::Approx(-c.adv.data<double>()[0] / (4.0 * 4.0)));  // row 0: 4 counted tokens of R = 4 rows
        CHECK(d[2 * 6] == 0.0);  // row 2: none
    }
}

TEST_CASE("grpo_loss: gradient matches finite differences through both clip branches and the KL term") {
    // GRPO: the ratio is differentiated (old is constant), so the surrogate's kinks are where the clip acts.
    LossCase c = loss_case(13);
    gradcheck({{&c.lp}, {&c.old, false}, {&c.ref, false}, {&c.adv, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        return grpo_loss(g, *v[0], v[1]->data, v[2]->data, v[3]->data, c.targets.tensor(), {PolicyLoss::grpo, 0.1, 0.2, 5.0});
    });
    // CISPO detaches its importance weight, which finite differences cannot do; moving old with lp
    // (old = lp - delta) holds the weight fixed, so the difference quotient is the detached gradient.
    // delta spans both sides of epsilon_high = 1.2 (weights e^delta from 0.5 to 2).
    Rng rng{15};
    Buffer<CPU> delta = randn({c.R * c.T}, rng, 0.5);
    gradcheck({{&c.lp}, {&c.ref, false}, {&c.adv, false}, {&delta, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
        Tensor old = g.scratch(v[0]->data.shape, v[0]->data.dtype);
        dispatch_floating(old.dtype, "test", [&]<class F>() {
            for (std::int64_t i = 0; i < old.numel(); ++i)
                old.data<F>()[i] = v[0]->data.data<F>()[i] - v[3]->data.data<F>()[i];
        });
        return grpo_loss(g, *v[0], old, v[1]->data, v[2]->data, c.targets.tensor(), {PolicyLoss::cispo, 0.1, 0.2, 1.2});
    });
}

TEST_CASE("grpo_loss: bad inputs are errors that name what is wrong") {
    LossCase c = loss_case(14);
    Graph<CPU> g;
    Var& lp = g.leaf(c.lp.tensor());
    CHECK_THROWS_WITH_AS(grpo_loss(g, lp, c.old.tensor(), c.ref.tensor(), c.adv.tensor().rows(0, 3), c.targets.tensor(), {}),
                         doctest::Contains("advantages (R)"), Error);
    CHECK_THROWS_WITH_AS(grpo_loss(g, lp, c.old.tensor(), c.ref.tensor(), c.adv.tensor(), c.targets.tensor(),
                                   {PolicyLoss::grpo, 0.0, 1.5, 5.0}),
                         doctest::Contains("epsilon must be in (0, 1)"), Error);
    CHECK_THROWS_WITH_AS(grpo_loss(g, lp, c.old.tensor(), Tensor{}, c.adv.tensor(), c.targets.tensor(), {}),
                         doctest::Contains("reference log-probabilities"), Error);  // beta > 0 needs the reference
}

TEST_CASE("GRPO and CISPO against PyTorch: advantages, per-token log-probabilities, loss, KL, clip fraction, every gradient") {
    SafeTensors dense(golden_dir / "tiny_dense.safetensors"), st(golden_dir / "tiny_grpo.safetensors");
    auto cfg = nlohmann::json::parse(st.metadata().at("config"));
    const auto& shape = st.info("input_ids").shape;
    Buffer<CPU> ids(Shape{shape[0], shape[1]}, DType::i32), targets(Shape{shape[0], shape[1]}, DType::i32);
    st.read_into("input_ids", ids);
    st.read_into("targets", targets);
    const std::int64_t R = shape[0], T = shape[1];
    const int G = std::stoi(st.metadata().at("group_size"));
    REQUIRE(R == 6);
    REQUIRE(G == 3);
    const ModelConfig mc{cfg.at("vocab_size").get<int>(), cfg.at("max_position_embeddings").get<int>()};

    // The group normalization of the golden rewards.
    std::vector<double> rewards = read(st, "rewards");
    std::vector<float> adv(static_cast<std::size_t>(R));
    group_advantages(rewards, G, adv);
    check_close(std::vector<double>(adv.begin(), adv.end()), read(st, "advantages"), 1e-5, 1e-6, "advantages");
    Buffer<CPU> adv_t(Shape{R}, DType::f32);
    std::copy(adv.begin(), adv.end(), adv_t.data<float>());
    Buffer<CPU> old(Shape{R * T}, DType::f32);
    st.read_into("old_logprobs", old);
    const Tensor tok_targets = targets.tensor().view(Shape{R * T, 1});

    // The reference's per-token log-probabilities.
    Net reference(mc);
    for (auto& p : reference.params().all()) st.read_into("ref." + p.name, p.var.data);
    Buffer<CPU> ref_lp(Shape{R * T}, DType::f32);
    {
        Graph<CPU> g;
        NoGrad<CPU> no_grad(g);
        g.set_training(false);
        auto out = reference.forward(g, ids);
        CPU::copy(ref_lp.tensor(), sequence_logprobs(g, *out.logits, tok_targets).data);
    }
    check_close(to_vector(ref_lp), read(st, "reference_logprobs"), 1e-5, 1e-5, "reference log-probabilities");

    PolicyLossOptions o;
    o.beta = std::stod(st.metadata().at("beta"));
    o.epsilon = std::stod(st.metadata().at("epsilon"));
    o.epsilon_high = std::stod(st.metadata().at("epsilon_high"));
    for (PolicyLoss kind : {PolicyLoss::grpo, PolicyLoss::cispo}) {
        const std::string k = policy_loss_name(kind);
        INFO(k);
        o.kind = kind;
        Net policy(mc);
        for (auto& p : policy.params().all()) dense.read_into(p.name, p.var.data);  // tiny_dense's initial weights
        Graph<CPU> g;
        auto out = policy.forward(g, ids);
        Var& lp = sequence_logprobs(g, *out.logits, tok_targets);
        check_close(to_vector(lp.data), read(st, "policy_logprobs"), 1e-5, 1e-5, "policy log-probabilities");
        PolicyLossStats s;
        Var& loss = grpo_loss(g, lp, old.tensor(), ref_lp.tensor(), adv_t.tensor(), targets.tensor(), o, &s);
        const double got = to_vector(loss.data)[0], want = read(st, k + ".loss")[0];
        INFO("loss " << got << ", PyTorch " << want);
        CHECK(std::abs(got - want) < 1e-4 * std::abs(want) + 1e-6);
        CHECK(s.kl == doctest::Approx(read(st, k + ".kl")[0]).epsilon(1e-4));
        CHECK(s.clip_fraction == doctest::Approx(read(st, k + ".clip_fraction")[0]).epsilon(1e-6));
        CHECK(s.clip_fraction > 0.05);  // both branches of the clip are in the batch
        g.backward(loss);
        int checked = 0;
        for (auto& p : policy.params().all()) {
            const auto want_g = read(st, k + ".grad." + p.name);
            check_close(to_vector(p.var.grad), want_g, 1e-3, 1e-3 * max_abs(want_g) + 1e-30, k + " gradient of " + p.name);
            ++checked;
        }
        CHECK(checked == int(policy.params().all().size()));
    }
}

// ---- rewards --------------------------------------------------------------------------------------------

TEST_CASE("rule rewards: exact match (trimmed), format, length penalty; an unknown name is an error") {
    Completion c{"", " 56\n", "56", 3, true};
    CHECK(rule_reward("exact_match")(c) == 1.0);
    CHECK(rule_reward("exact_match+format")(c) == 2.0);
    CHECK(rule_reward("exact_match+length", 0.1)(c) == doctest::Approx(0.7));
    Completion wrong{"", "65", "56", 8, false};
    CHECK(rule_reward("exact_match+format")(wrong) == 0.0);
    Completion no_ref{"", "", "", 1, true};
    CHECK(rule_reward("exact_match")(no_ref) == 0.0);  // an empty reference matches nothing
    CHECK_THROWS_WITH_AS(rule_reward("exact_match+bleu"), doctest::Contains("unknown rule reward 'bleu'"), Error);
}

TEST_CASE("rule rewards: final_number reads the answer off the end of the reply, working shown or not") {
    CHECK(last_number("7 x 8 = 56") == "56");
    CHECK(last_number("56.") == "56");
    CHECK(last_number("it is -12, I think") == "-12");
    CHECK(last_number("8-3") == "-3");  // a '-' right before the digits is read as a sign
    CHECK(last_number("no digits") == "");
    CHECK(last_number("") == "");
    const RewardFn r = rule_reward("final_number");
    CHECK(r(Completion{"", "7 x 8 = 56", "56", 9, true}) == 1.0);
    CHECK(r(Completion{"", " 56 ", "56", 3, true}) == 1.0);
    CHECK(r(Completion{"", "56 x 1 = 57", "56", 9, true}) == 0.0);  // the last number, not any number
    CHECK(r(Completion{"", "156", "56", 4, true}) == 0.0);          // whole numbers, not a suffix
    CHECK(r(Completion{"", "the answer", "56", 3, true}) == 0.0);
    CHECK(r(Completion{"", "", "", 1, true}) == 0.0);  // a reference without a number matches nothing
    CHECK(r(Completion{"", "7 x 8 = 56", "7 x 8 = 56.", 9, true}) == 1.0);
    CHECK(rule_reward("final_number+format")(Completion{"", "56", "56", 2, false}) == 1.0);
}

// ---- the task end to end ----------------------------------------------------------------------------------

namespace {

using GrpoTrainer = Trainer<GoldenDense, Optimizer<AdamW>, Schedule<Constant>, GRPO>;
using GrpoLoRA = LoRA<8, 16, LoRAAttention, GRPO>;

/// Prompts "say N" whose reference answer is "N"; a tokenizer; an init_from model folder.
TrainConfig grpo_run(const TempDir& dir) {
    std::vector<std::string> texts;
    for (int i = 0; i < 60; ++i) texts.push_back("say " + std::to_string(i) + " a b c aa ab ba");
    Tokenizer::TrainOptions to;
    to.vocab_size = 300;
    Tokenizer tok = Tokenizer::train_from_texts(texts, to);
    tok.save(dir.path / "tokenizer.json");
    for (auto [name, n] : {std::pair{"train.jsonl", 12}, {"val.jsonl", 4}}) {
        std::ofstream out(dir.path / name);
        for (int i = 0; i < n; ++i) {
            const std::string k = std::to_string(i + (n == 4 ? 30 : 0));
            nlohmann::json conv = {{{"role", "user"}, {"content", "say " + k}}, {{"role", "assistant"}, {"content", k}}};
            out << nlohmann::json{{"conversations", conv}}.dump() << "\n";
        }
    }
    TrainConfig c;
    c.train_data = (dir.path / "train.jsonl").string();
    c.val_data = (dir.path / "val.jsonl").string();
    c.tokenizer = (dir.path / "tokenizer.json").string();
    c.vocab_size = tok.vocab_size();
    c.max_seq_len = 24;
    c.batch_size = 2;
    c.num_generations = 4;
    c.max_gen_len = 6;
    c.learning_rate = 1e-2;
    c.weight_decay = 0;
    c.log_interval = 0;
    c.save_interval = 0;
    c.quiet = true;
    c.seed = 3;
    Net init(ModelConfig{c.vocab_size, c.max_seq_len});
    init.init(5);
    save_pretrained(dir.path / "sft", init);
    c.init_from = (dir.path / "sft").string();
    c.out_dir = (dir.path / "run").string();
    return c;
}

/// A dense reward with spread inside every group: the share of 'a' among the reply's characters.
double share_of_a(const Completion& c) {
    if (c.text.empty()) return 0.0;
    return double(std::count(c.text.begin(), c.text.end(), 'a')) / double(c.text.size());
}

std::vector<float> weights(GrpoTrainer& t) {
    auto& d = t.model().params().data();
    return std::vector<float>(d.data<float>(), d.data<float>() + d.numel());
}

}  // namespace

TEST_CASE("GRPO trainer: the reward rises; rollouts, targets and metrics are what they claim") {
    TempDir dir;
    TrainConfig c = grpo_run(dir);
    c.max_steps = 30;
    GrpoTrainer t(c);
    t.objective().set_reward(share_of_a);
    std::vector<double> rewards;
    for (int i = 0; i < 30; ++i) {
        t.train_step();
        rewards.push_back(t.objective().rollout().stats.mean);
    }
    const auto& ro = t.objective().rollout();
    REQUIRE(ro.prompts.size() == 2);
    REQUIRE(ro.tokens.size() == 8);
    const Tokenizer tok = Tokenizer::load(c.tokenizer);
    CHECK(ro.prompts[0].text.starts_with("<|im_start|>user\nsay "));
    CHECK(ro.prompts[0].text.ends_with("<|im_start|>assistant\n"));
    // "<|im_start|>user\nsay N<|im_end|>...": the reference answer is N
    CHECK("say " + ro.prompts[0].reference == ro.prompts[0].text.substr(17, ro.prompts[0].text.find("<|im_end|>") - 17));
    for (const auto& s : ro.tokens) CHECK(s.size() <= 6);
    double first = 0, last = 0;
    for (int i = 0; i < 5; ++i) first += rewards[std::size_t(i)] / 5, last += rewards[std::size_t(25 + i)] / 5;
    INFO("mean reward, first 5 steps " << first << ", last 5 " << last);
    CHECK(last > first + 0.15);
    CHECK(t.objective().loss_stats().ratio == doctest::Approx(1.0).epsilon(1e-6));  // one pass: old == policy
    CHECK(t.objective().loss_stats().kl > 0);  // the policy moved away from the reference
    auto val = t.evaluate();
    CHECK(val.tokens == 4);  // one greedy reply per validation prompt
    CHECK(val.loss <= 0);    // minus the mean reward
}

TEST_CASE("GRPO trainer: a seeded run reproduces itself, and resumes bit for bit (samples included)") {
    TempDir dir;
    TrainConfig straight = grpo_run(dir);
    straight.loss_type = "grpo";
    straight.grpo_iterations = 2;
    straight.max_steps = 8;
    straight.save_interval = 4;
    straight.out_dir = (dir.path / "straight").string();
    GrpoTrainer a(straight);
    a.objective().set_reward(share_of_a);
    for (int i = 0; i < 8; ++i) a.train_step();
    CHECK(a.objective().loss_stats().ratio != 1.0);  // the second pass over a batch of samples sees ratios != 1

    TrainConfig again = straight;
    again.out_dir = (dir.path / "again").string();
    GrpoTrainer b(again);
    b.objective().set_reward(share_of_a);
    for (int i = 0; i < 8; ++i) b.train_step();
    auto wa = weights(a), wb = weights(b);
    CHECK(std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float)) == 0);

    TrainConfig first = straight;
    first.out_dir = (dir.path / "split").string();
    {
        GrpoTrainer s(first);
        s.objective().set_reward(share_of_a);
        for (int i = 0; i < 4; ++i) s.train_step();
        s.save();
    }
    TrainConfig second = first;
    second.resume = true;
    GrpoTrainer r(second);
    r.objective().set_reward(share_of_a);
    REQUIRE(r.step() == 4);
    for (int i = 0; i < 4; ++i) r.train_step();
    auto wr = weights(r);
    CHECK(std::memcmp(wa.data(), wr.data(), wa.size() * sizeof(float)) == 0);
    CHECK(a.last_loss() == r.last_loss());
    CHECK(a.objective().rollout().tokens == r.objective().rollout().tokens);

    TrainConfig odd = straight;
    odd.save_interval = 3;
    CHECK_THROWS_WITH_AS(GrpoTrainer{odd}, doctest::Contains("save_interval must be a multiple"), Error);
}

TEST_CASE("parse_chatml_prompt: the messages of a rendered prompt before the open assistant header; bad text is named") {
    const Conversation c = {{Role::system, "be brief"}, {Role::user, "hi\nthere"}, {Role::assistant, "hello"}, {Role::user, ""}};
    const std::string text = render_chatml(c) + "<|im_start|>assistant\n";
    CHECK(parse_chatml_prompt(text) == c);
    CHECK_THROWS_WITH_AS(parse_chatml_prompt(render_chatml(c)), doctest::Contains("to end with"), Error);
    CHECK_THROWS_WITH_AS(parse_chatml_prompt("<|im_start|>tool\nx<|im_end|>\n<|im_start|>assistant\n"),
                         doctest::Contains("at byte 12 of a 51-byte prompt: unknown role"), Error);
    CHECK_THROWS_WITH_AS(parse_chatml_prompt("<|im_start|>assistant\n"), doctest::Contains("no message"), Error);
}

namespace {

/// A reward model folder beside grpo_run's files: a random trunk (max_seq_len 40, not the policy's 24)
/// and a head wide enough that replies score apart, reading with `pooling`.
fs::path write_reward_model(const TempDir& dir, const TrainConfig& c, reward::Pooling pooling) {
    Net rm(ModelConfig{c.vocab_size, 40});
    rm.init(11);
    Var& head = rm.params().append(reward::head_name, Shape{1, GoldenDense::hidden});
    reward::init_head<CPU>(head, 1.0, 12);
    SaveOptions files;
    files.tokenizer = c.tokenizer;
    save_reward_model(dir.path / "rm", rm, RewardHead{&head, pooling}, files);
    return dir.path / "rm";
}

}  // namespace

TEST_CASE("reward model as GRPO's reward: each sample's reward is score_sequences of its conversation in the "
          "reward-training view, exactly, with either pooling; the run is deterministic; another tokenizer is refused") {
    reward::Pooling pooling = reward::Pooling::last;
    SUBCASE("the head reads the last reply token") {}
    SUBCASE("the head reads the mean over the reply") { pooling = reward::Pooling::mean; }
    TempDir dir;
    TrainConfig c = grpo_run(dir);
    c.max_steps = 3;
    const fs::path rm_dir = write_reward_model(dir, c, pooling);
    check_reward_tokenizer(rm_dir, c.tokenizer);  // the same file: accepted
    GrpoTrainer t(c);
    t.objective().set_reward(reward_model_reward<GoldenDense>(rm_dir));
    t.train_step();
    const auto& ro = t.objective().rollout();

    // The reference: the conversation built from the record's text, encoded as reward training encodes a
    // pair (ChatTemplate::tokenize at the folder's max_seq_len), scored by a separately loaded model.
    const Tokenizer tok = Tokenizer::load(c.tokenizer);
    const ChatTemplate chat(tok);
    Net rm(ModelConfig{c.vocab_size, 40});
    const RewardHead head = load_reward_model(rm_dir, rm);
    CHECK(head.pooling == pooling);
    std::set<double> distinct;
    for (int row = 0; row < 8; ++row) {
        const auto& pr = ro.prompts[std::size_t(row / 4)];
        std::vector<std::int32_t> reply = ro.tokens[std::size_t(row)];
        const bool finished = !reply.empty() && reply.back() == *tok.find("<|im_end|>");
        if (finished) reply.pop_back();
        const std::string text = tok.decode(reply);
        const Conversation conv = {{Role::user, "say " + pr.reference}, {Role::assistant, text}};
        const ChatTokens ct = chat.tokenize(conv, 40);
        Buffer<CPU> ids(Shape{1, 40}, DType::i32), tgt(Shape{1, 40}, DType::i32);
        std::copy(ct.inputs.begin(), ct.inputs.end(), ids.data<std::int32_t>());
        std::copy(ct.targets.begin(), ct.targets.end(), tgt.data<std::int32_t>());
        INFO("row " << row << " reply \"" << text << "\"");
        CHECK(ro.rewards[std::size_t(row)] == score_sequences(rm, head, ids, tgt)[0]);  // exactly
        distinct.insert(ro.rewards[std::size_t(row)]);
    }
    CHECK(distinct.size() >= 4);  // the head tells replies apart: the advantages are not all zero
    // Combined with a rule reward, the model's score is one term.
    RewardFn rm_fn = reward_model_reward<GoldenDense>(rm_dir);
    const std::string prompt = render_chatml({{Role::user, "say 3"}}) + "<|im_start|>assistant\n";
    const Completion done{prompt, "3", "3", 2, true};
    CHECK(rm_fn(done) == rm_fn(done));
    CHECK(rm_fn(done) != rm_fn(Completion{prompt, "4", "3", 2, true}));

    // A seeded run with the reward model reproduces itself bit for bit.
    for (int i = 1; i < 3; ++i) t.train_step();
    TrainConfig again = c;
    again.out_dir = (dir.path / "again").string();
    GrpoTrainer u(again);
    u.objective().set_reward(reward_model_reward<GoldenDense>(rm_dir));
    for (int i = 0; i < 3; ++i) u.train_step();
    auto wt = weights(t), wu = weights(u);
    CHECK(std::memcmp(wt.data(), wu.data(), wt.size() * sizeof(float)) == 0);
    CHECK(t.objective().rollout().rewards == u.objective().rollout().rewards);
    CHECK(t.last_loss() == u.last_loss());

    // A reward model trained with another tokenizer is refused, naming both files.
    std::vector<std::string> texts = {"other words entirely", "nothing like the prompts"};
    Tokenizer::TrainOptions to;
    to.vocab_size = 280;
    Tokenizer::train_from_texts(texts, to).save(dir.path / "other.json");
    const std::string other = (dir.path / "other.json").string();
    const std::string named = (rm_dir / "tokenizer.json").string() + " differs from the policy's " + other;
    CHECK_THROWS_WITH_AS(check_reward_tokenizer(rm_dir, other), doctest::Contains(named.c_str()), Error);
}

TEST_CASE("GRPO with LoRA: only the adapters train; the base and the reference stay as they were") {
    TempDir dir;
    TrainConfig c = grpo_run(dir);
    c.max_steps = 3;
    Trainer<GoldenDense, Optimizer<AdamW>, Schedule<Constant>, GrpoLoRA> t(c);
    t.objective().set_reward(share_of_a);
    auto& d = t.model().params().data();
    const std::vector<float> base(d.data<float>(), d.data<float>() + d.numel());
    const std::size_t adapters = t.objective().parameters().trainable_count();
    CHECK(adapters > 0);
    CHECK(adapters < t.model().params().count() / 4);
    for (int i = 0; i < 3; ++i) t.train_step();
    CHECK(std::memcmp(base.data(), d.data<float>(), base.size() * sizeof(float)) == 0);
    CHECK(t.last_grad_norm() > 0);
}

// ---- distillation -----------------------------------------------------------------------------------------

TEST_CASE("distill_loss against PyTorch at temperatures 1, 1.5 and 4: loss and gradient") {
    SafeTensors st(golden_dir / "tiny_distill.safetensors");
    Buffer<CPU> student(Shape{7, 11}, DType::f32), teacher(Shape{7, 11}, DType::f32), targets(Shape{7}, DType::i32);
    st.read_into("student", student);
    st.read_into("teacher", teacher);
    st.read_into("targets", targets);
    const double alpha = std::stod(st.metadata().at("alpha"));
    CHECK(alpha == 0.5);
    for (double T : {1.0, 1.5, 4.0}) {
        const std::string k = "T" + std::string(T == 1.0 ? "1.0" : T == 1.5 ? "1.5" : "4.0");
        INFO(k);
        Graph<CPU> g;
        Var& s = g.leaf(student.tensor(), true);
        DistillStats ds;
        Var& loss = distill_loss(g, s, teacher.tensor(), targets.tensor(), alpha, T, &ds);
        CHECK(to_vector(loss.data)[0] == doctest::Approx(read(st, k + ".loss")[0]).epsilon(1e-5));
        CHECK(ds.positions == 5);  // two of the seven targets are -100
        g.backward(loss);
        const auto want = read(st, k + ".grad");
        check_close(to_vector(s.grad), want, 1e-4, 1e-6, "gradient " + k);
    }
}

TEST_CASE("distill_loss: gradient matches finite differences; alpha 1 is the plain cross-entropy") {
    Rng rng{31};
    auto s = randn({5, 9}, rng, 2.0), t = randn({5, 9}, rng, 2.0);
    Buffer<CPU> y = randint({5}, rng, 0, 9);
    y.data<std::int32_t>()[1] = -100;
    for (double T : {1.0, 2.5})
        gradcheck({{&s}, {&t, false}}, [&](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            return distill_loss(g, *v[0], v[1]->data, y.tensor(), 0.3, T);
        });
    Graph<CPU> g;
    Var& a = distill_loss(g, g.leaf(s.tensor()), t.tensor(), y.tensor(), 1.0, 1.5);
    Var& b = cross_entropy(g, g.leaf(s.tensor()), y.tensor());
    CHECK(to_vector(a.data)[0] == doctest::Approx(to_vector(b.data)[0]).epsilon(1e-12));
    CHECK_THROWS_WITH_AS(distill_loss(g, g.leaf(s.tensor()), t.tensor(), y.tensor(), 0.5, 0.0),
                         doctest::Contains("temperature must be positive"), Error);
}

TEST_CASE("Distill task: the student's KL to the teacher falls; validation is the student's cross-entropy") {
    TempDir dir;
    TrainConfig c = grpo_run(dir);  // the same conversations and tokenizer; the "sft" folder is the teacher
    c.teacher = c.init_from;
    c.init_from.clear();
    c.init_seed = 77;  // a student that differs from the teacher
    c.batch_size = 4;
    c.max_steps = 25;
    c.learning_rate = 3e-3;
    c.distill_alpha = 0.0;  // soft targets only: the student should approach the teacher
    using DistillTrainer = Trainer<GoldenDense, Optimizer<AdamW>, Schedule<Constant>, Distill<GoldenDense, SFT>>;
    DistillTrainer t(c);
    const double first = t.train_step();
    for (int i = 1; i < 25; ++i) t.train_step();
    INFO("soft loss " << first << " -> " << t.last_loss());
    CHECK(t.last_loss() < 0.5 * first);
    CHECK(t.objective().teacher().params().trainable_count() == 0);
    auto val = t.evaluate();
    CHECK(val.tokens > 0);
    CHECK(val.loss > 0);
    TrainConfig bad = c;
    bad.teacher.clear();
    CHECK_THROWS_WITH_AS(DistillTrainer{bad}, doctest::Contains("teacher's model folder"), Error);
}
