// The whole model against PyTorch: logits, losses, every parameter gradient, and three AdamW steps
// with gradient clipping, for a dense, an MoE, a q/k-norm (MiniMind-3) and a MiniMind-3 MoE configuration (tests/golden/make_golden.py wrote
// the files from a from-scratch PyTorch implementation with Hugging Face parameter names); MiniMind's
// torch.save() weights (tests/golden/torch/, make_golden_torch.py) loaded into the q/k-norm model.
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include <minitrain/io/checkpoint.hpp>
#include <minitrain/io/safetensors.hpp>
#include <minitrain/io/torch_pickle.hpp>
#include <minitrain/nn/transformer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/optim/clip.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;

namespace {

const std::filesystem::path golden_dir = std::filesystem::path(__FILE__).parent_path() / "golden";

std::vector<double> read(const SafeTensors& st, const std::string& name) {
    const auto& info = st.info(name);
    Shape s;
    for (auto d : info.shape) s.dims[s.rank++] = d;
    if (s.rank == 0) s = Shape{1};
    Buffer<CPU> b(s, DType::f32);
    st.read_into(name, b);
    return to_vector(b);
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

template <class Net>
struct Golden {
    SafeTensors st;
    nlohmann::json cfg;
    Transformer<Net> model;
    Buffer<CPU> ids, targets;

    explicit Golden(const std::string& file)
        : st(golden_dir / file),
          cfg(nlohmann::json::parse(st.metadata().at("config"))),
          model(ModelConfig{cfg.at("vocab_size").get<int>(), cfg.at("max_position_embeddings").get<int>()}) {
        REQUIRE(cfg.at("hidden_size").get<int>() == Net::hidden);
        REQUIRE(cfg.at("num_hidden_layers").get<int>() == Net::layers);
        REQUIRE(cfg.at("intermediate_size").get<int>() == Net::ffn);
        for (auto& p : model.params().all()) st.read_into(p.name, p.var.data);
        auto shape = [&](const std::string& n) {
            auto& i = st.info(n);
            return Shape{i.shape[0], i.shape[1]};
        };
        ids = Buffer<CPU>(shape("input_ids"), DType::i32);
        targets = Buffer<CPU>(shape("targets"), DType::i32);
        st.read_into("input_ids", ids);
        st.read_into("targets", targets);
    }
};

template <class Net>
void check_forward_backward(const std::string& file) {
    Golden<Net> gold(file);
    Graph<CPU> g;
    auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
    check_tensor(to_vector(out.logits->data), read(gold.st, "logits"), 1e-4, "logits");
    check_tensor(to_vector(out.loss->data), read(gold.st, "loss"), 1e-4, "loss");
    check_tensor(to_vector(out.ce->data), read(gold.st, "ce_loss"), 1e-4, "ce_loss");
    if (Net::moe) {
        REQUIRE(out.aux != nullptr);
        check_tensor(to_vector(out.aux->data), read(gold.st, "aux_loss"), 1e-4, "aux_loss");
    }
    g.backward(*out.loss);
    int checked = 0;
    for (auto& p : gold.model.params().all()) {
        check_tensor(to_vector(p.var.grad), read(gold.st, "grad." + p.name), 1e-3, "gradient of " + p.name);
        ++checked;
    }
    CHECK(checked == int(gold.st.names().size() > 0 ? gold.model.params().all().size() : 0));
}

template <class Net>
void check_adamw_steps(const std::string& file) {
    Golden<Net> gold(file);
    nlohmann::json opt_cfg = nlohmann::json::parse(gold.st.metadata().at("optimizer"));
    AdamW::Options o;
    o.lr = opt_cfg.at("lr").get<double>();
    o.beta1 = opt_cfg.at("betas")[0].get<double>();
    o.beta2 = opt_cfg.at("betas")[1].get<double>();
    o.eps = opt_cfg.at("eps").get<double>();
    o.weight_decay = opt_cfg.at("weight_decay").get<double>();
    Optimizer<AdamW> opt(gold.model.params(), o);
    auto losses = read(gold.st, "adamw.loss"), norms = read(gold.st, "adamw.grad_norm");
    Graph<CPU> g;
    for (std::size_t s = 0; s < losses.size(); ++s) {
        g.reset();
        gold.model.params().zero_grad();
        auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
        CHECK(to_vector(out.loss->data)[0] == doctest::Approx(losses[s]).epsilon(1e-4));
        g.backward(*out.loss);
        double norm = clip_grad_norm(gold.model.params(), opt_cfg.at("grad_clip").get<double>());
        CHECK(norm == doctest::Approx(norms[s]).epsilon(1e-4));
        opt.step(o.lr);
    }
    for (auto& p : gold.model.params().all())
        check_tensor(to_vector(p.var.data), read(gold.st, "adamw.after." + p.name), 1e-4, "after AdamW: " + p.name);
}

using GoldenDense = Model<2, 32, 4, false, Knobs<2>>;
using GoldenMoE = Model<2, 32, 4, true, Knobs<2, 36>>;
using GoldenQKNorm = TinyQKNormModel;  // GoldenDense with MiniMind-3's q_norm / k_norm
/// GoldenQKNorm with MiniMind-3's MoE: 4 experts of width 36, top-1, no shared expert, MiniMind-3's router.
struct GoldenMoE3Knobs : Knobs<2, 36, 4, 1, 0> {
    static constexpr bool qk_norm = true;
    static constexpr RouterRules router = RouterRules::minimind3;
};
using GoldenMoE3 = Model<2, 32, 4, true, GoldenMoE3Knobs>;

}  // namespace

TEST_CASE("dense model: logits, loss and every gradient match PyTorch") {
    check_forward_backward<GoldenDense>("tiny_dense.safetensors");
}

TEST_CASE("MoE model: logits, losses (ce + aux) and every gradient match PyTorch") {
    check_forward_backward<GoldenMoE>("tiny_moe.safetensors");
}

TEST_CASE("dense model: three clipped AdamW steps match PyTorch") { check_adamw_steps<GoldenDense>("tiny_dense.safetensors"); }

TEST_CASE("MoE model: three clipped AdamW steps match PyTorch") { check_adamw_steps<GoldenMoE>("tiny_moe.safetensors"); }

TEST_CASE("q/k norm model (MiniMind-3's attention): logits, loss and every gradient match PyTorch") {
    check_forward_backward<GoldenQKNorm>("tiny_qknorm.safetensors");
}

TEST_CASE("q/k norm model: three clipped AdamW steps match PyTorch") {
    check_adamw_steps<GoldenQKNorm>("tiny_qknorm.safetensors");
}

TEST_CASE("MiniMind-3 MoE model (q/k norm, top-1 renormalized, batch-level balancing loss) matches PyTorch") {
    check_forward_backward<GoldenMoE3>("tiny_moe3.safetensors");
    check_adamw_steps<GoldenMoE3>("tiny_moe3.safetensors");
}

TEST_CASE("q/k norm model: the gradients of q_norm and k_norm equal central finite differences (f32)") {
    // The golden's gradients come from PyTorch's autograd; this checks ours against the loss itself.
    Golden<GoldenQKNorm> gold("tiny_qknorm.safetensors");
    Graph<CPU> g;
    auto loss_now = [&] {
        g.reset();
        return double(to_vector(gold.model.forward(g, gold.ids, &gold.targets.tensor()).loss->data)[0]);
    };
    gold.model.params().zero_grad();
    g.reset();
    auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
    g.backward(*out.loss);
    int checked = 0;
    for (auto& p : gold.model.params().all()) {
        if (!p.name.ends_with("q_norm.weight") && !p.name.ends_with("k_norm.weight")) continue;
        const std::vector<double> grad = to_vector(p.var.grad);
        float* w = p.var.data.data<float>();
        for (int i : {0, 3, 7}) {
            const float old = w[i], h = 1e-2f;
            w[i] = old + h;
            const double up = loss_now();
            w[i] = old - h;
            const double down = loss_now();
            w[i] = old;
            const double fd = (up - down) / (2.0 * double(h));
            INFO(p.name << "[" << i << "]: autograd " << grad[std::size_t(i)] << ", finite difference " << fd);
            CHECK(std::abs(fd - grad[std::size_t(i)]) <= 2e-4 + 2e-2 * std::abs(fd));  // gradients here are 4e-3 to 4e-2
            ++checked;
        }
    }
    CHECK(checked == 2 * 2 * 3);  // 2 layers x (q_norm, k_norm) x 3 coordinates
}

TEST_CASE("model policy: MiniMind's FFN rule and the presets' sizes") {
    CHECK(MiniMind2Small::ffn == 1408);
    CHECK(GPT2Small::ffn == 2048);
    CHECK(GoldenDense::ffn == 128);
    Transformer<MiniMind2Small> mm(ModelConfig{6400, 64});
    // embedding 6400*512 + 8 layers x (q 512*512 + k, v 2*128*512 + o 512*512 + MLP 3*512*1408 + 2 norms 512)
    // + final norm 512: MiniMind reports 25.83M for MiniMind2-Small.
    CHECK(mm.params().count() == 6400 * 512 + 8 * (2 * 512 * 512 + 2 * 128 * 512 + 3 * 512 * 1408 + 2 * 512) + 512);
    CHECK(mm.params().count() == 25'829'888);

    // MiniMind-3 (jingyaogong/minimind HEAD, "64M" / "198M-A64M"), from the policy alone (not allocated here):
    // embedding 6400*768 + 8 layers x (q, o 2*768*768 + k, v 2*384*768 + MLP 3*768*2432 + 2 norms 768 + q/k
    // norms 2*96) + final norm 768.
    static_assert(MiniMind3::head_dim == 96 && MiniMind3::kv_heads == 4 && MiniMind3::ffn == 2432 && MiniMind3::qk_norm);
    static_assert(MiniMind3::rms_eps == 1e-6 && MiniMind3::rope_theta == 1e6 && !MiniMind3::moe);
    static_assert(MiniMind3MoE::moe && MiniMind3MoE::experts == 4 && MiniMind3MoE::top_k == 1 &&
                  MiniMind3MoE::shared_experts == 0 && MiniMind3MoE::aux_alpha == 5e-4 && MiniMind3MoE::qk_norm &&
                  MiniMind3MoE::router == RouterRules::minimind3);
    const long per_layer = 2L * 768 * 768 + 2L * 384 * 768 + 3L * 768 * 2432 + 2 * 768 + 2 * 96;
    CHECK(6400L * 768 + 8 * per_layer + 768 == 63'912'192);  // 64M
    const long moe_layer = per_layer - 3L * 768 * 2432 + 4 * 3L * 768 * 2432 + 4 * 768;  // 4 experts + router
    CHECK(6400L * 768 + 8 * moe_layer + 768 == 198'416'640);  // 198M
}

// ---- bf16 autocast against PyTorch's CPU autocast bf16 (tests/golden/make_golden_bf16.py) -------------------

namespace {
double rel_l2(const std::vector<double>& got, const std::vector<double>& want) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < got.size(); ++i) num += (got[i] - want[i]) * (got[i] - want[i]), den += want[i] * want[i];
    return std::sqrt(num / den);
}
}  // namespace

TEST_CASE("dense model in bf16: loss, logits and every gradient match PyTorch's CPU autocast bf16") {
    // Tolerance, and why: both runs round to bf16 (8 significant bits), but at different places: autocast
    // rounds every matmul's output to bf16 as well (so the attention inputs, the residual branches and the
    // logits), minitrain rounds the matmul inputs only (core/precision.hpp). Two such runs differ by about as
    // much as either differs from f32, so each quantity must lie within 2 x autocast's own distance from
    // f32 (the golden's bf16_vs_f32, measured per tensor: 0.03% for the loss, 0.1-0.8% for gradients) of
    // autocast's value, plus 2^-9 (one bf16 rounding) of slack for quantities that bf16 hardly moves.
    Golden<GoldenDense> gold("tiny_dense.safetensors");
    SafeTensors bf(golden_dir / "tiny_dense_bf16.safetensors");
    const nlohmann::json spread = nlohmann::json::parse(bf.metadata().at("bf16_vs_f32"));
    Graph<CPU> g;
    std::vector<double> loss, logits;
    {
        Autocast autocast(Precision::bf16);
        auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
        g.backward(*out.loss);
        loss = to_vector(out.loss->data);
        logits = to_vector(out.logits->data);
    }
    auto tol = [&](const std::string& key) { return 2 * spread.at(key).get<double>() + 1.0 / 512; };
    const double want_loss = read(bf, "loss")[0];
    MESSAGE("loss: ours " << loss[0] << ", autocast " << want_loss << ", f32 " << read(gold.st, "loss")[0]);
    CHECK(std::fabs(loss[0] - want_loss) / want_loss <= 2 * spread.at("loss").get<double>() + 1e-4);
    const double e_logits = rel_l2(logits, read(bf, "logits"));
    MESSAGE("logits: relative L2 " << e_logits << " (autocast vs f32 " << spread.at("logits").get<double>() << ")");
    CHECK(e_logits <= tol("logits"));
    CHECK(rel_l2(logits, read(gold.st, "logits")) > 1e-4);  // bf16 ran: f32 agrees with f32 to 1e-6
    double worst = 0;
    int checked = 0;
    for (auto& p : gold.model.params().all()) {
        const std::string key = "grad." + p.name;
        const double e = rel_l2(to_vector(p.var.grad), read(bf, key));
        INFO(key << ": relative L2 " << e << ", autocast vs f32 " << spread.at(key).get<double>());
        CHECK(e <= tol(key));
        worst = std::max(worst, e / tol(key));
        ++checked;
    }
    MESSAGE("gradients: worst error / tolerance " << worst << " over " << checked << " tensors");
    CHECK(checked == int(spread.size()) - 2);  // every gradient in the golden (plus loss and logits)
}

TEST_CASE("dense model in bf16: activations stored in bf16 give the same loss, logits and gradients bit for bit") {
    // core/precision.hpp: the RMSNorm outputs before q/k/v and the FFN and SwiGLU's output are read only by
    // products, which round them to bf16 anyway, so storing them rounded changes no bit; the graph's activation
    // memory falls by half of those tensors' bytes.
    Golden<GoldenDense> gold("tiny_dense.safetensors");
    struct Run {
        std::vector<float> loss, logits;
        std::vector<std::vector<float>> grads;
        std::size_t peak = 0;
    };
    auto run = [&](bool bf16_activations) {
        set_bf16_activations(bf16_activations);
        for (auto& p : gold.model.params().all()) CPU::zero(p.var.grad);
        Graph<CPU> g;
        Run r;
        {
            Autocast autocast(Precision::bf16);
            auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
            g.backward(*out.loss);
            r.loss = {out.loss->data.data<float>()[0]};
            r.logits.assign(out.logits->data.data<float>(), out.logits->data.data<float>() + out.logits->data.numel());
        }
        for (auto& p : gold.model.params().all())
            r.grads.emplace_back(p.var.grad.data<float>(), p.var.grad.data<float>() + p.var.grad.numel());
        r.peak = g.peak_bytes();
        set_bf16_activations(true);
        return r;
    };
    const Run f32_stored = run(false), bf16_stored = run(true);
    MESSAGE("graph peak: " << f32_stored.peak << " bytes with f32 activations, " << bf16_stored.peak << " with bf16");
    CHECK(std::memcmp(&bf16_stored.loss[0], &f32_stored.loss[0], sizeof(float)) == 0);
    CHECK(bf16_stored.logits == f32_stored.logits);
    REQUIRE(bf16_stored.grads.size() == f32_stored.grads.size());
    int same = 0;
    for (std::size_t i = 0; i < f32_stored.grads.size(); ++i)
        same += std::memcmp(bf16_stored.grads[i].data(), f32_stored.grads[i].data(),
                            f32_stored.grads[i].size() * sizeof(float)) == 0;
    CHECK(same == int(f32_stored.grads.size()));
    // The stored tensors did shrink: per layer, 2 RMSNorm outputs of (B T C) and SwiGLU's (B T F), 2 bytes each.
    const std::size_t rows = std::size_t(gold.ids.tensor().numel());
    const std::size_t saved = std::size_t(GoldenDense::layers) * rows * (2 * GoldenDense::hidden + GoldenDense::ffn) * 2;
    CHECK(f32_stored.peak - bf16_stored.peak >= saved * 9 / 10);
}

TEST_CASE("MiniMind's torch.save() weights (.pth, pytorch_model.bin) load into the q/k norm model exactly") {
    // tests/golden/torch/minimind3_*.pth: tiny_qknorm's weights under MiniMind's state_dict names (lm_head
    // tied to the embedding), saved by torch.save in f32, f16 (MiniMind's trainer) and bf16.
    const auto torch_dir = golden_dir / "torch";
    Golden<GoldenQKNorm> gold("tiny_qknorm.safetensors");
    Graph<CPU> g0;
    const auto ours = to_vector(gold.model.forward(g0, gold.ids, &gold.targets.tensor()).logits->data);
    auto round_as = [](const std::string& dt, float x) {
        if (dt == "f16") return minitrain::detail::f16_to_f32(minitrain::detail::f32_to_f16(x));
        if (dt == "bf16") return float(bf16(x));
        return x;
    };
    for (const std::string dt : {"f32", "f16", "bf16"}) {
        CAPTURE(dt);
        Transformer<GoldenQKNorm> m(gold.model.config());
        load_pretrained(torch_dir / ("minimind3_" + dt + ".pth"), m);
        std::size_t values = 0, equal = 0;
        for (const Parameter& p : m.params().all()) {
            const float* got = p.var.data.data<float>();
            const float* want = gold.model.params().find(p.name).var.data.data<float>();
            for (std::int64_t i = 0; i < p.shape.numel(); ++i, ++values) {
                const float w = round_as(dt, want[i]);
                equal += std::memcmp(&got[i], &w, sizeof w) == 0;
            }
        }
        CHECK(values == std::size_t(m.params().count()));
        CHECK(equal == values);  // every value, bit for bit, as torch rounded it
        Graph<CPU> g;
        const auto logits = to_vector(m.forward(g, gold.ids, &gold.targets.tensor()).logits->data);
        if (dt == "f32") {
            CHECK(logits == ours);  // the same weights: the same logits, bit for bit
            check_tensor(logits, read(gold.st, "logits"), 1e-4, "logits of the imported .pth vs PyTorch");
        } else {
            // Rounded weights move the logits by about the rounding (2^-11 f16, 2^-8 bf16), not more.
            check_tensor(logits, ours, dt == "f16" ? 2e-2 : 1e-1, "logits of the " + dt + " .pth vs f32");
            CHECK(logits != ours);
        }
    }

    // A transformers folder with pytorch_model.bin (save_pretrained(..., safe_serialization=False)): config.json
    // is checked as for safetensors, the weights come from the pickle.
    mt_test::TempDir dir;
    { std::ofstream(dir / "config.json") << gold.cfg.dump(); }
    std::filesystem::copy_file(torch_dir / "minimind3_bf16.pth", dir / "pytorch_model.bin");
    Transformer<GoldenQKNorm> hf(gold.model.config());
    load_pretrained(dir.path, hf);
    const Parameter& q = hf.params().find("model.layers.1.self_attn.q_norm.weight");
    const float* want = gold.model.params().find(q.name).var.data.data<float>();
    for (std::int64_t i = 0; i < q.shape.numel(); ++i) CHECK(q.var.data.data<float>()[i] == float(bf16(want[i])));

    // The preset must match the file: a model without q/k norm is told which tensor it has no place for.
    Transformer<GoldenDense> dense(gold.model.config());
    CHECK_THROWS_WITH_AS(load_pretrained(torch_dir / "minimind3_f32.pth", dense),
                         doctest::Contains("minimind3_f32.pth: unexpected tensor \"model.layers.0.self_attn.q_norm.weight\""),
                         Error);
}
