// LoRA: the adapted projection against finite differences and a naive loop; adapters on dense and MoE
// models (zero-init identity, only adapters train, base untouched bit for bit, adapter gradients of the
// whole model against finite differences); PEFT's adapter folder (round trip, config fields, errors);
// merging; and the LoRA task in the Trainer, including resume.

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>

#include <nlohmann/json.hpp>

#include <minitrain/data/shards.hpp>
#include <minitrain/io/peft.hpp>
#include <minitrain/nn/transformer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/train/lora.hpp>
#include <minitrain/train/trainer.hpp>

#include "support/gradcheck.hpp"

#include "support/count_allocations.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using Dense = Model<2, 32, 4, false, Knobs<2>>;
using MoE = Model<2, 32, 4, true, Knobs<2>>;
constexpr int V = 50, T = 16;

template <class Net>
using Tf = Transformer<Net>;
template <class Policy, class Net>
using Adapters = LoRAAdapters<Policy, Tf<Net>>;


std::vector<float> copy_of(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Batch {
    Buffer<CPU> ids, targets;
    explicit Batch(std::uint64_t seed, int B = 2) {
        Rng rng{seed};
        ids = randint(Shape{B, T}, rng, 0, V);
        targets = randint(Shape{B, T}, rng, 0, V);
    }
};

template <class Net>
std::vector<float> logits(Tf<Net>& m, const Batch& b) {
    Graph<CPU> g;
    NoGrad<CPU> ng(g);
    g.set_training(false);
    return copy_of(m.forward(g, b.ids.tensor()).logits->data);
}

/// Loss of one forward pass (training mode, no dropout), optionally followed by backward.
template <class Net>
double loss(Tf<Net>& m, const Batch& b, Graph<CPU>& g, bool backward) {
    g.reset();
    auto out = m.forward(g, b.ids.tensor(), &b.targets.tensor());
    double l = out.loss->data.template data<float>()[0];
    if (backward) g.backward(*out.loss);
    return l;
}

/// Every adapter set to normal(0, scale) values (B included), so that the adapters change the output.
template <class A>
void randomize(A& a, std::uint64_t seed, double scale = 0.1) {
    Rng rng{seed};
    float* p = a.params().data().template data<float>();
    for (std::size_t i = 0; i < a.params().count(); ++i) p[i] = float(scale * rng.normal());
}

std::vector<double> naive_lora(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<std::vector<double>>& as, const std::vector<std::vector<double>>& bs,
                               int N, int K, int M, int R, double s) {
    const int n = int(as.size()), Mp = M / n;
    std::vector<double> y(std::size_t(N * M), 0.0);
    for (int i = 0; i < N; ++i)
        for (int o = 0; o < M; ++o) {
            double acc = 0;
            for (int k = 0; k < K; ++k) acc += x[std::size_t(i * K + k)] * w[std::size_t(o * K + k)];
            const int j = o / Mp, oo = o % Mp;
            for (int r = 0; r < R; ++r) {
                double u = 0;
                for (int k = 0; k < K; ++k) u += x[std::size_t(i * K + k)] * as[std::size_t(j)][std::size_t(r * K + k)];
                acc += s * u * bs[std::size_t(j)][std::size_t(oo * R + r)];
            }
            y[std::size_t(i * M + o)] = acc;
        }
    return y;
}

}  // namespace

// ---- the op -------------------------------------------------------------------------------------------

TEST_CASE("lora_linear: forward against a naive loop, gradients of x, W, A, B against finite differences") {
    Rng rng{11};
    const int K = 7, R = 3;
    SUBCASE("one adapted weight, (B, T, K) input, trainable W") {
        auto x = randn(Shape{2, 3, K}, rng), w = randn(Shape{5, K}, rng), a = randn(Shape{R, K}, rng),
             b = randn(Shape{5, R}, rng);
        gradcheck({{&x}, {&w}, {&a}, {&b}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            LoRAAdapter p{v[2], v[3]};
            return lora_linear(g, *v[0], *v[1], &p, 1, 1.5, 0.0);
        });
    }
    SUBCASE("the fused gate|up pair, frozen W, against a naive loop") {
        const int N = 5, M = 8;
        auto x = randn(Shape{N, K}, rng), w = randn(Shape{M, K}, rng), a0 = randn(Shape{R, K}, rng),
             b0 = randn(Shape{M / 2, R}, rng), a1 = randn(Shape{R, K}, rng), b1 = randn(Shape{M / 2, R}, rng);
        auto fwd = [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            LoRAAdapter p[2] = {{v[2], v[3]}, {v[4], v[5]}};
            return lora_linear(g, *v[0], *v[1], p, 2, 0.75, 0.0);
        };
        gradcheck({{&x}, {&w, false}, {&a0}, {&b0}, {&a1}, {&b1}}, fwd);
        Graph<CPU> g;
        std::vector<Var*> v;
        for (auto* t : {&x, &w, &a0, &b0, &a1, &b1}) v.push_back(&g.leaf(t->tensor()));
        auto got = to_vector(fwd(g, v).data);
        auto want = naive_lora(to_vector(x), to_vector(w), {to_vector(a0), to_vector(a1)}, {to_vector(b0), to_vector(b1)},
                               N, K, M, R, 0.75);
        check_close(got, want, 1e-12, 1e-12, "lora_linear vs naive loop");
    }
    SUBCASE("only the second part adapted, with dropout on the adapters' input") {
        auto x = randn(Shape{6, K}, rng), w = randn(Shape{8, K}, rng), a1 = randn(Shape{R, K}, rng),
             b1 = randn(Shape{4, R}, rng);
        gradcheck({{&x}, {&w}, {&a1}, {&b1}}, [](Graph<CPU>& g, std::vector<Var*>& v) -> Var& {
            LoRAAdapter p[2] = {{}, {v[2], v[3]}};
            return lora_linear(g, *v[0], *v[1], p, 2, 2.0, 0.3);  // a fresh graph draws the same mask each run
        });
    }
}

// ---- adapters on a model ------------------------------------------------------------------------------

template <class Net, class Policy>
void check_identity_and_training(const char* what) {
    INFO(what);
    Tf<Net> m(ModelConfig{V, T});
    m.init(5);
    const Batch batch(21);
    const auto base_logits = logits(m, batch);
    const auto base_weights = copy_of(m.params().data());

    Adapters<Policy, Net> a(m, /*seed=*/9);
    REQUIRE(m.adapters() == &a.table());
    // Zero-initialized B: the adapted model computes exactly what the base computes.
    const auto start_logits = logits(m, batch);
    REQUIRE(start_logits.size() == base_logits.size());
    bool identical = true;
    for (std::size_t i = 0; i < start_logits.size(); ++i) identical = identical && start_logits[i] == base_logits[i];
    CHECK(identical);

    // The base is frozen: no gradient slab; the adapters have one of their own size.
    CHECK(m.params().trainable_count() == 0);
    CHECK_FALSE(m.params().grads().defined());
    for (auto& p : m.params().all()) CHECK_FALSE(p.var.requires_grad);
    CHECK(a.params().trainable_count() == a.params().count());
    std::size_t expected = 0;
    for (auto& s : a.sites()) expected += std::size_t(Policy::rank * (s.weight->data.shape[0] + s.weight->data.shape[1]));
    CHECK(a.params().count() == expected);

    // A few AdamW steps on one batch: the loss falls, the base does not move, every B left zero.
    Optimizer<AdamW> opt(a.params(), {.lr = 1e-2, .weight_decay = 0.0});
    Graph<CPU> g;
    double first = 0, last = 0;
    for (int step = 0; step < 8; ++step) {
        a.params().zero_grad();
        last = loss(m, batch, g, true);
        if (step == 0) first = last;
        for (auto& p : m.params().all()) REQUIRE_FALSE(p.var.grad.defined());
        opt.step();
    }
    INFO("loss " << first << " -> " << last);
    CHECK(last < first - 0.05);
    CHECK(same_bits(copy_of(m.params().data()), base_weights));
    int moved = 0, attention_still_zero = 0;
    for (auto& s : a.sites()) {
        const auto bv = copy_of(s.adapter.B->data);
        const bool nonzero = std::any_of(bv.begin(), bv.end(), [](float v) { return v != 0; });
        moved += nonzero;
        if (!nonzero && s.module.find("self_attn") != std::string::npos) ++attention_still_zero;
    }
    CHECK(attention_still_zero == 0);
    CHECK(moved > int(a.sites().size()) / 2);  // MoE experts that got no token keep B = 0; most move

    // Detaching restores the base model's function exactly.
    a.detach();
    CHECK(logits(m, batch) == base_logits);
}

TEST_CASE("zero-initialized adapters keep the logits; training moves the adapters only (dense and MoE)") {
    check_identity_and_training<Dense, LoRA<4>>("dense, attention targets");
    check_identity_and_training<MoE, LoRA<4>>("MoE, attention targets");
    check_identity_and_training<Dense, LoRA<4, 8, LoRAAttentionMLP>>("dense, attention + MLP targets");
    check_identity_and_training<MoE, LoRA<4, 8, LoRAAttentionMLP>>("MoE, attention + MLP targets (experts too)");
}

TEST_CASE("a steady-state LoRA step (adapter dropout, fused gate|up adapters) allocates nothing") {
    Tf<Dense> m(ModelConfig{V, T});
    m.init(5);
    Adapters<LoRA<4, 8, LoRAAttentionMLP>, Dense> a(m, 9, /*dropout=*/0.1);
    Optimizer<AdamW> opt(a.params());
    const Batch batch(61);
    Graph<CPU> g;
    auto step = [&] {
        a.params().zero_grad();
        loss(m, batch, g, true);
        clip_grad_norm(a.params(), 1.0);
        opt.step();
    };
    for (int i = 0; i < 3; ++i) step();
    const long before = allocations_now();
    for (int i = 0; i < 3; ++i) step();
    CHECK(allocations_now() == before);
}

TEST_CASE("adapter names, shapes and initialization follow PEFT") {
    Tf<MoE> m(ModelConfig{V, T});
    Adapters<LoRA<4, 8, LoRAAttentionMLP>, MoE> a(m, 3);
    auto& ps = a.params();
    const Parameter& qa = ps.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    CHECK(qa.shape == Shape{4, 32});
    CHECK(ps.find("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight").shape == Shape{16, 4});
    CHECK(ps.find("base_model.model.model.layers.1.mlp.experts.3.gate_proj.lora_B.weight").shape == Shape{Dense::ffn, 4});
    CHECK(ps.find("base_model.model.model.layers.0.mlp.shared_experts.0.down_proj.lora_A.weight").shape ==
          Shape{4, MoE::ffn});
    CHECK(ps.try_find("base_model.model.model.layers.0.mlp.gate.lora_A.weight") == nullptr);  // the router
    CHECK(a.sites().size() == std::size_t(2 * (4 + 3 * (MoE::experts + MoE::shared_experts))));
    CHECK(decltype(a)::scaling == 2.0);
    CHECK(decltype(a)::target_modules() ==
          std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
    // A: uniform(-1/sqrt(in), 1/sqrt(in)), spread over the range; B: zero.
    const auto av = copy_of(qa.var.data);
    const double bound = 1 / std::sqrt(32.0);
    double lo = 1, hi = -1;
    for (float v : av) lo = std::min(lo, double(v)), hi = std::max(hi, double(v));
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);
    for (auto& s : a.sites()) {
        const auto bv = copy_of(s.adapter.B->data);
        CHECK(std::all_of(bv.begin(), bv.end(), [](float v) { return v == 0; }));
    }
    using Custom = LoRA<2, 2, LoRATargets<LoRATarget::q_proj, LoRATarget::v_proj>>;
    Tf<Dense> d(ModelConfig{V, T});
    Adapters<Custom, Dense> c(d);
    CHECK(c.sites().size() == 4);
    CHECK(decltype(c)::target_modules() == std::vector<std::string>{"q_proj", "v_proj"});
}

TEST_CASE("adapter gradients of the whole model match central differences of the loss") {
    Tf<Dense> m(ModelConfig{V, T});
    m.init(2);
    Adapters<LoRA<4, 8, LoRAAttentionMLP>, Dense> a(m, 4);
    randomize(a, 77, 0.2);  // B != 0, so that A has a gradient
    const Batch batch(31);
    Graph<CPU> g;
    a.params().zero_grad();
    loss(m, batch, g, true);
    const auto grad = copy_of(a.params().grads());
    float* p = a.params().data().data<float>();
    // The largest gradients of a few A's and B's: far above the f32 noise of a difference quotient.
    std::vector<std::size_t> probes;
    for (const char* name : {"layers.0.self_attn.q_proj.lora_A", "layers.1.self_attn.v_proj.lora_B",
                             "layers.0.mlp.up_proj.lora_A", "layers.1.mlp.gate_proj.lora_B", "layers.1.mlp.down_proj.lora_A"}) {
        const Parameter& prm = a.params().find(std::string("base_model.model.model.") + name + ".weight");
        std::size_t best = prm.grad_offset;
        for (std::size_t i = prm.grad_offset; i < prm.grad_offset + std::size_t(prm.shape.numel()); ++i)
            if (std::abs(grad[i]) > std::abs(grad[best])) best = i;
        probes.push_back(best - prm.grad_offset + prm.offset);  // grad and data layouts coincide here
        REQUIRE(prm.grad_offset == prm.offset);
    }
    const double eps = 1e-2;
    for (std::size_t k : probes) {
        const float saved = p[k];
        p[k] = saved + float(eps);
        const double up = loss(m, batch, g, false);
        p[k] = saved - float(eps);
        const double down = loss(m, batch, g, false);
        p[k] = saved;
        const double numeric = (up - down) / (2 * eps);
        INFO("element " << k << ": backward " << grad[k] << ", central difference " << numeric);
        CHECK(std::abs(grad[k]) > 1e-3);
        CHECK(std::abs(numeric - grad[k]) <= 2e-2 * std::abs(grad[k]) + 2e-4);
    }
}

// ---- PEFT folders and merging -------------------------------------------------------------------------

TEST_CASE("save_adapter -> load_adapter onto a fresh base gives identical logits; adapter_config.json is PEFT's") {
    TempDir dir;
    const Batch batch(41);
    std::vector<float> want;
    {
        Tf<MoE> m(ModelConfig{V, T});
        m.init(6);
        Adapters<LoRA<4>, MoE> a(m, 1, 0.05);
        randomize(a, 5);
        want = logits(m, batch);
        save_adapter(dir.path / "adapter", a, "minimind2-moe-base");
    }
    CHECK(fs::exists(dir.path / "adapter" / "adapter_model.safetensors"));
    auto cfg = nlohmann::json::parse(std::ifstream(dir.path / "adapter" / "adapter_config.json"));
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["task_type"] == "CAUSAL_LM");
    CHECK(cfg["r"] == 4);
    CHECK(cfg["lora_alpha"] == 8);
    CHECK(cfg["lora_dropout"].get<double>() == 0.05);
    CHECK(cfg["target_modules"] == nlohmann::json({"q_proj", "k_proj", "v_proj", "o_proj"}));
    CHECK(cfg["bias"] == "none");
    CHECK(cfg["fan_in_fan_out"] == false);
    CHECK(cfg["init_lora_weights"] == true);
    CHECK(cfg["inference_mode"] == true);
    CHECK(cfg["base_model_name_or_path"] == "minimind2-moe-base");
    SafeTensors st(dir.path / "adapter" / "adapter_model.safetensors");
    CHECK(st.names().size() == 2 * 2 * 4);  // layers x targets x {A, B}
    for (auto& n : st.names()) CHECK(n.starts_with("base_model.model.model.layers."));
    CHECK(st.info("base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight").dtype == "F32");

    Tf<MoE> fresh(ModelConfig{V, T});
    fresh.init(6);
    Adapters<LoRA<4>, MoE> b(fresh, 123);
    load_adapter(dir.path / "adapter", b);
    CHECK(same_bits(logits(fresh, batch), want));
}

TEST_CASE("merged weights compute what base + adapters compute; the merged model saves as a plain model") {
    TempDir dir;
    const Batch batch(51);
    auto check = [&]<class Net>(Tf<Net>& m, auto& a) {
        randomize(a, 8);
        const auto unmerged = logits(m, batch);
        merge_adapter(m, a);
        CHECK(m.adapters() == nullptr);
        const auto merged = logits(m, batch);
        double scale = 0;
        for (float v : unmerged) scale = std::max(scale, double(std::abs(v)));
        std::vector<double> got(merged.begin(), merged.end()), want(unmerged.begin(), unmerged.end());
        check_close(got, want, 0, 1e-5 * scale, "merged vs unmerged logits");
        return merged;
    };
    Tf<Dense> m(ModelConfig{V, T});
    m.init(3);
    Adapters<LoRA<4, 8, LoRAAttentionMLP>, Dense> a(m, 2);
    const auto merged = check(m, a);
    save_pretrained(dir.path / "merged", m);
    Tf<Dense> reloaded(ModelConfig{V, T});
    load_pretrained(dir.path / "merged", reloaded);
    CHECK(same_bits(logits(reloaded, batch), merged));

    Tf<MoE> moe(ModelConfig{V, T});
    moe.init(4);
    Adapters<LoRA<4, 8, LoRAAttentionMLP>, MoE> b(moe, 2);
    check(moe, b);
}

TEST_CASE("load_adapter refuses a mismatched policy or file, naming the field or the tensor, and changes nothing") {
    TempDir dir;
    const fs::path ad = dir.path / "adapter";
    Tf<Dense> m(ModelConfig{V, T});
    m.init(1);
    {
        Adapters<LoRA<4>, Dense> a(m, 1);
        randomize(a, 2);
        save_adapter(ad, a);
    }
    auto fails = [&](auto& adapters, const std::string& text) {
        const auto before = copy_of(adapters.params().data());
        CHECK_THROWS_WITH_AS(load_adapter(ad, adapters), doctest::Contains(text.c_str()), Error);
        CHECK(same_bits(copy_of(adapters.params().data()), before));
    };
    {
        Adapters<LoRA<8>, Dense> a(m);
        fails(a, "adapter_config.json: r is 4, the compiled LoRA policy has Rank 8");
    }
    {
        Adapters<LoRA<4, 4>, Dense> a(m);
        fails(a, "lora_alpha is 8");
    }
    {
        Adapters<LoRA<4, 8, LoRAAttentionMLP>, Dense> a(m);
        fails(a, "target_modules is [\"q_proj\",\"k_proj\",\"v_proj\",\"o_proj\"]");
    }
    Adapters<LoRA<4>, Dense> a(m);
    auto edit_config = [&](const char* key, const nlohmann::json& value) {
        auto j = nlohmann::json::parse(std::ifstream(ad / "adapter_config.json"));
        auto saved = j;
        j[key] = value;
        std::ofstream(ad / "adapter_config.json") << j.dump();
        return saved;
    };
    auto restore = [&](const nlohmann::json& j) { std::ofstream(ad / "adapter_config.json") << j.dump(); };
    auto original = edit_config("use_rslora", true);
    fails(a, "use_rslora is true");
    restore(original);
    edit_config("peft_type", "IA3");
    fails(a, "peft_type is \"IA3\"");
    restore(original);
    edit_config("target_modules", "q_proj|v_proj");
    fails(a, "target_modules is \"q_proj|v_proj\"");
    restore(original);
    load_adapter(ad, a);  // the restored folder loads

    // Tensors: a missing one, a wrong shape, an unknown one.
    const std::string q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    auto rewrite = [&](const std::function<void(std::vector<NamedTensor>&)>& edit) {
        std::vector<float> staging;
        auto tensors = minitrain::detail::host_parameters(a.params(), staging);
        edit(tensors);
        save_safetensors(ad / "adapter_model.safetensors", tensors);
    };
    Buffer<CPU> odd(Shape{3, 32}, DType::f32);
    CPU::zero(odd.tensor());
    rewrite([&](auto& t) { std::erase_if(t, [&](const NamedTensor& n) { return n.name == q_a; }); });
    fails(a, "adapter_model.safetensors: missing tensor \"" + q_a + "\"");
    rewrite([&](auto& t) {
        for (auto& n : t)
            if (n.name == q_a) n.tensor = odd.tensor();
    });
    fails(a, "tensor \"" + q_a + "\" has shape (3, 32)");
    rewrite([&](auto& t) { t.push_back({"base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight", odd.tensor()}); });
    fails(a, "unexpected tensor \"base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight\"");
    fs::remove(ad / "adapter_config.json");
    fails(a, "adapter_config.json: no such file");
}

// ---- the LoRA task in the Trainer ---------------------------------------------------------------------

namespace {

using LoRATrain = Trainer<Dense, Optimizer<AdamW>, Schedule<Cosine>, LoRA<4, 8, LoRAAttention, Pretrain>>;

// The defaults: alpha = 2 x rank, attention targets, SFT's data and loss (checked without instantiating a
// second Trainer).
static_assert(LoRA<8>::alpha == 16 && LoRA<8>::scaling == 2.0);
static_assert(std::is_same_v<LoRA<8>::targets, LoRAAttention> && std::is_same_v<LoRA<8>::base_task, SFT>);
static_assert(std::is_base_of_v<SFT::Data, LoRA<8>::Data>);
static_assert(std::is_base_of_v<SFT::Objective<Tf<Dense>>, LoRA<8>::Objective<Tf<Dense>>>);

void write_corpus(const fs::path& path, int tokens, std::uint64_t seed) {
    Rng rng{seed};
    std::vector<std::uint32_t> t(static_cast<std::size_t>(tokens));
    std::uint32_t x = 0;
    for (auto& v : t) {
        x = rng.below(10) == 0 ? std::uint32_t(rng.below(V)) : (x + 1) % std::uint32_t(V);
        v = x;
    }
    write_token_shard(path, t, V);
}

TrainConfig lora_config(const TempDir& dir) {
    TrainConfig c;
    c.train_data = (dir.path / "train.bin").string();
    c.val_data = (dir.path / "val.bin").string();
    c.init_from = (dir.path / "base").string();
    c.vocab_size = V;
    c.batch_size = 4;
    c.max_seq_len = T;
    c.learning_rate = 3e-2;
    c.log_interval = 0;
    c.save_interval = 0;
    c.threads = 1;  // tiny steps: thread barriers on a busy machine would cost more than they save
    c.quiet = true;
    return c;
}

}  // namespace

TEST_CASE("Trainer with LoRA: the base stays put, the loss falls, resume is bit for bit, final/ is an adapter folder") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 6000, 1);
    write_corpus(dir.path / "val.bin", 1000, 2);
    {
        Tf<Dense> base(ModelConfig{V, T});
        base.init(99);
        save_pretrained(dir.path / "base", base);
    }
    std::vector<float> base_weights;
    {
        Tf<Dense> base(ModelConfig{V, T});
        load_pretrained(dir.path / "base", base);
        base_weights = copy_of(base.params().data());
    }
    const int N = 8;

    TrainConfig straight = lora_config(dir);
    straight.max_steps = 2 * N;
    straight.out_dir = (dir.path / "straight").string();
    LoRATrain a(straight);
    CHECK(&a.objective().parameters() == &a.objective().adapters().params());
    CHECK(a.model().params().trainable_count() == 0);
    const double before = a.evaluate().loss;
    a.fit();  // 2N steps, then the final save
    const double after = a.evaluate().loss;
    INFO("val loss " << before << " -> " << after);
    CHECK(after < before - 0.05);  // a random base, rank-4 attention adapters, 16 steps: a small but real drop
    CHECK(same_bits(copy_of(a.model().params().data()), base_weights));
    const fs::path final_dir = fs::path(straight.out_dir) / "final";
    CHECK(fs::exists(final_dir / "adapter_model.safetensors"));
    CHECK(nlohmann::json::parse(std::ifstream(final_dir / "adapter_config.json"))["base_model_name_or_path"] ==
          straight.init_from);
    auto ckpt = latest_checkpoint(straight.out_dir);
    REQUIRE(ckpt.has_value());
    CHECK(fs::exists(*ckpt / "adapter_config.json"));
    CHECK(fs::exists(*ckpt / "training_state.safetensors"));

    TrainConfig first = straight;
    first.out_dir = (dir.path / "split").string();
    {
        LoRATrain b(first);
        for (int i = 0; i < N; ++i) b.train_step();
        b.save();
    }
    TrainConfig second = first;
    second.resume = true;
    second.init_from.clear();  // the checkpoint holds the base
    LoRATrain c(second);
    REQUIRE(c.step() == N);
    for (int i = 0; i < N; ++i) c.train_step();
    CHECK(same_bits(copy_of(c.objective().parameters().data()), copy_of(a.objective().parameters().data())));
    CHECK(same_bits(copy_of(c.model().params().data()), base_weights));
    CHECK(c.optimizer().steps() == a.optimizer().steps());
}

TEST_CASE("Trainer with LoRA in bf16: the bf16 copies of base and adapters give the same run bit for bit; "
          "after merge_adapter the evaluation reads the merged weights") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 6000, 1);
    write_corpus(dir.path / "val.bin", 1000, 2);
    {
        Tf<Dense> base(ModelConfig{V, T});
        base.init(99);
        save_pretrained(dir.path / "base", base);
    }
    TrainConfig c = lora_config(dir);
    c.max_steps = 8;
    c.dtype = "bf16";
    c.out_dir = (dir.path / "copy").string();
    LoRATrain with(c);
    c.out_dir = (dir.path / "rounding").string();
    LoRATrain without(c);
    auto off = [](auto&& f) {  // `without` rounds the weights in every product (backend/cpu/bf16_weights.hpp)
        cpu::set_bf16_weight_copies(false);
        const double r = f();
        cpu::set_bf16_weight_copies(true);
        return r;
    };
    for (int i = 0; i < 4; ++i) CHECK(with.train_step() == off([&] { return without.train_step(); }));
    CHECK(same_bits(copy_of(with.objective().parameters().data()), copy_of(without.objective().parameters().data())));
    const double unmerged = with.evaluate().loss;
    merge_adapter(with.model(), with.objective().adapters());
    merge_adapter(without.model(), without.objective().adapters());
    const double merged = with.evaluate().loss;
    CHECK(merged == off([&] { return without.evaluate().loss; }));
    CHECK(merged == doctest::Approx(unmerged).epsilon(1e-2));  // W + s B A computes what W and the adapters did
}
