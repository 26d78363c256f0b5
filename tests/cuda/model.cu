// The whole model on the GPU: Transformer<Net, CUDA> forward, backward and AdamW against the PyTorch
// golden files (the same files and tolerances as tests/model.cpp), against the CPU backend on the same
// weights, incremental decoding against a full forward, LoRA adapters, checkpoints written from the GPU
// loaded on the CPU and back, and the Pretrain trainer on the GPU.
//
// Without a CUDA device every test case reports "[skipped] no CUDA device: <reason>" and passes; the file
// still proves that every op the model, the optimizers and the trainer use compiles for the CUDA backend.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <minitrain/cuda.hpp>
#include <minitrain/nn/lora.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

bool have_gpu() {
    static std::string reason;
    static const bool ok = CUDA::available(&reason);
    if (!ok) MESSAGE("[skipped] no CUDA device: " << reason);
    return ok;
}
#define MT_REQUIRE_GPU() \
    if (!have_gpu()) return

// MINITRAIN_GOLDEN_DIR overrides where the files are: on a GPU machine the tree is not where it was built.
const fs::path golden_dir = std::getenv("MINITRAIN_GOLDEN_DIR") ? fs::path(std::getenv("MINITRAIN_GOLDEN_DIR"))
                                                                 : fs::path(__FILE__).parent_path().parent_path() / "golden";

/// A host copy of a tensor of either backend, as doubles.
std::vector<double> download(const Tensor& t) {
    Buffer<CPU> h(t.shape, t.dtype);
    if (t.device == Device::cuda)
        CUDA::to_host(h.tensor().ptr, t);
    else
        CPU::to_host(h.tensor().ptr, t);
    return to_vector(h);
}

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

/// Relative error below rtol, measured against the tensor's own scale (tests/model.cpp's rule).
void check_tensor(const std::vector<double>& got, const std::vector<double>& want, double rtol, const std::string& what) {
    check_close(got, want, rtol, rtol * max_abs(want) + (rtol > 0 ? 1e-30 : 0.0), what);
}

/// A file tensor copied into a backend tensor of the same shape.
template <class B>
void read_into(const SafeTensors& st, const std::string& name, const Tensor& dst) {
    Buffer<CPU> h(dst.shape, dst.dtype);
    st.read_into(name, h);
    B::from_host(dst, h.tensor().ptr);
}

template <class Net, class B>
struct Golden {
    SafeTensors st;
    nlohmann::json cfg;
    Transformer<Net, B> model;
    Buffer<B> ids, targets;

    explicit Golden(const std::string& file)
        : st(golden_dir / file),
          cfg(nlohmann::json::parse(st.metadata().at("config"))),
          model(ModelConfig{cfg.at("vocab_size").get<int>(), cfg.at("max_position_embeddings").get<int>()}) {
        REQUIRE(cfg.at("hidden_size").get<int>() == Net::hidden);
        REQUIRE(cfg.at("intermediate_size").get<int>() == Net::ffn);
        for (auto& p : model.params().all()) read_into<B>(st, p.name, p.var.data);
        auto shape = [&](const std::string& n) {
            auto& i = st.info(n);
            return Shape{i.shape[0], i.shape[1]};
        };
        ids = Buffer<B>(shape("input_ids"), DType::i32);
        targets = Buffer<B>(shape("targets"), DType::i32);
        read_into<B>(st, "input_ids", ids);
        read_into<B>(st, "targets", targets);
    }
};

using GoldenDense = Model<2, 32, 4, false, Knobs<2>>;
using GoldenMoE = Model<2, 32, 4, true, Knobs<2, 36>>;
using GoldenQKNorm = TinyQKNormModel;  // MiniMind-3's q_norm / k_norm (tiny_qknorm.safetensors)

template <class Net>
void check_forward_backward(const std::string& file) {
    Golden<Net, CUDA> gold(file);
    Graph<CUDA> g;
    auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
    check_tensor(download(out.logits->data), read(gold.st, "logits"), 1e-4, "logits");
    check_tensor(download(out.loss->data), read(gold.st, "loss"), 1e-4, "loss");
    check_tensor(download(out.ce->data), read(gold.st, "ce_loss"), 1e-4, "ce_loss");
    if (Net::moe) {
        REQUIRE(out.aux != nullptr);
        check_tensor(download(out.aux->data), read(gold.st, "aux_loss"), 1e-4, "aux_loss");
    }
    g.backward(*out.loss);
    for (auto& p : gold.model.params().all())
        check_tensor(download(p.var.grad), read(gold.st, "grad." + p.name), 1e-3, "gradient of " + p.name);
}

template <class Net>
void check_adamw_steps(const std::string& file) {
    Golden<Net, CUDA> gold(file);
    nlohmann::json opt_cfg = nlohmann::json::parse(gold.st.metadata().at("optimizer"));
    AdamW::Options o;
    o.lr = opt_cfg.at("lr").get<double>();
    o.beta1 = opt_cfg.at("betas")[0].get<double>();
    o.beta2 = opt_cfg.at("betas")[1].get<double>();
    o.eps = opt_cfg.at("eps").get<double>();
    o.weight_decay = opt_cfg.at("weight_decay").get<double>();
    Optimizer<AdamW, CUDA> opt(gold.model.params(), o);
    auto losses = read(gold.st, "adamw.loss"), norms = read(gold.st, "adamw.grad_norm");
    Graph<CUDA> g;
    for (std::size_t s = 0; s < losses.size(); ++s) {
        g.reset();
        gold.model.params().zero_grad();
        auto out = gold.model.forward(g, gold.ids, &gold.targets.tensor());
        CHECK(download(out.loss->data)[0] == doctest::Approx(losses[s]).epsilon(1e-4));
        g.backward(*out.loss);
        const double norm = clip_grad_norm(gold.model.params(), opt_cfg.at("grad_clip").get<double>());
        CHECK(norm == doctest::Approx(norms[s]).epsilon(1e-4));
        opt.step(o.lr);
    }
    for (auto& p : gold.model.params().all())
        check_tensor(download(p.var.data), read(gold.st, "adamw.after." + p.name), 1e-4, "after AdamW: " + p.name);
}

/// The same golden weights and batch on both backends: logits, losses and every gradient.
template <class Net>
void check_against_cpu(const std::string& file) {
    Golden<Net, CPU> c(file);
    Golden<Net, CUDA> d(file);
    Graph<CPU> gc;
    Graph<CUDA> gd;
    auto oc = c.model.forward(gc, c.ids, &c.targets.tensor());
    auto od = d.model.forward(gd, d.ids, &d.targets.tensor());
    check_tensor(download(od.logits->data), download(oc.logits->data), 1e-5, "logits, GPU vs CPU");
    check_tensor(download(od.loss->data), download(oc.loss->data), 1e-5, "loss, GPU vs CPU");
    gc.backward(*oc.loss);
    gd.backward(*od.loss);
    auto pc = c.model.params().all().begin();
    for (auto& p : d.model.params().all()) {
        check_tensor(download(p.var.grad), download(pc->var.grad), 1e-4, "gradient of " + p.name + ", GPU vs CPU");
        ++pc;
    }
}


}  // namespace

TEST_CASE("cuda model: dense logits, loss and every gradient match PyTorch") {
    MT_REQUIRE_GPU();
    check_forward_backward<GoldenDense>("tiny_dense.safetensors");
}

TEST_CASE("cuda model: MoE logits, losses (ce + aux) and every gradient match PyTorch") {
    MT_REQUIRE_GPU();
    check_forward_backward<GoldenMoE>("tiny_moe.safetensors");
}

TEST_CASE("cuda model: three clipped AdamW steps match PyTorch (dense and MoE)") {
    MT_REQUIRE_GPU();
    check_adamw_steps<GoldenDense>("tiny_dense.safetensors");
    check_adamw_steps<GoldenMoE>("tiny_moe.safetensors");
}

TEST_CASE("cuda model: GPU and CPU agree on the same weights (dense and MoE)") {
    MT_REQUIRE_GPU();
    check_against_cpu<GoldenDense>("tiny_dense.safetensors");
    check_against_cpu<GoldenMoE>("tiny_moe.safetensors");
}

TEST_CASE("cuda model: q/k norm (MiniMind-3): logits, loss, gradients and AdamW match PyTorch, and the CPU") {
    MT_REQUIRE_GPU();
    check_forward_backward<GoldenQKNorm>("tiny_qknorm.safetensors");
    check_adamw_steps<GoldenQKNorm>("tiny_qknorm.safetensors");
    check_against_cpu<GoldenQKNorm>("tiny_qknorm.safetensors");
}

TEST_CASE("cuda model: incremental decoding with a KV cache matches the full forward") {
    MT_REQUIRE_GPU();
    Transformer<TinyModel, CUDA> m(ModelConfig{61, 32});
    m.init(5);
    const std::vector<std::int32_t> tokens = {3, 17, 42, 8, 8, 60, 1, 29, 33};
    const std::int64_t T = std::int64_t(tokens.size()), V = 61;
    Buffer<CUDA> all(Shape{1, T}, DType::i32);
    CUDA::from_host(all, tokens.data());
    Graph<CUDA> g;
    NoGrad<CUDA> ng(g);
    g.set_training(false);
    auto full = download(m.forward(g, all).logits->data);  // (1, T, V)

    auto cache = m.make_cache(1, 16);
    Buffer<CUDA> prompt(Shape{1, T - 2}, DType::i32), one(Shape{1, 1}, DType::i32);
    CUDA::from_host(prompt, tokens.data());
    g.reset();
    m.forward(g, prompt, nullptr, &cache);
    for (std::int64_t t = T - 2; t < T; ++t) {
        CUDA::from_host(one, tokens.data() + t);
        g.reset();
        auto step = download(m.forward(g, one, nullptr, &cache).logits->data);  // (1, 1, V)
        const std::vector<double> want(full.begin() + t * V, full.begin() + (t + 1) * V);
        check_tensor(step, want, 1e-5, "logits of position " + std::to_string(t) + " decoded from the cache");
    }
    // generate() runs end to end on the GPU.
    SampleOptions so;
    so.temperature = 0;
    so.max_new_tokens = 5;
    auto out = generate(m, std::span<const std::int32_t>(tokens.data(), 4), so);
    CHECK(out.size() == 5);
}

TEST_CASE("cuda model: LoRA adapters train on the GPU as on the CPU") {
    MT_REQUIRE_GPU();
    using Policy = LoRA<4, 8, LoRAAttentionMLP>;
    Transformer<TinyModel, CPU> mc(ModelConfig{61, 16});
    Transformer<TinyModel, CUDA> md(ModelConfig{61, 16});
    mc.init(9);
    md.init(9);
    LoRAAdapters<Policy, Transformer<TinyModel, CPU>> ac(mc, 3);
    LoRAAdapters<Policy, Transformer<TinyModel, CUDA>> ad(md, 3);
    Optimizer<AdamW, CPU> oc(ac.params());
    Optimizer<AdamW, CUDA> od(ad.params());
    Rng rng{21, 0};
    auto ids = randint({2, 9}, rng, 0, 61), targets = randint({2, 9}, rng, 0, 61);
    Buffer<CUDA> idd(ids.tensor().shape, DType::i32), tgd(targets.tensor().shape, DType::i32);
    CUDA::from_host(idd, ids.tensor().ptr);
    CUDA::from_host(tgd, targets.tensor().ptr);
    Graph<CPU> gc;
    Graph<CUDA> gd;
    for (int step = 0; step < 2; ++step) {  // the first step makes B non-zero, the second has every gradient
        gc.reset();
        gd.reset();
        ac.params().zero_grad();
        ad.params().zero_grad();
        auto lc = mc.forward(gc, ids, &targets.tensor()).loss;
        auto ld = md.forward(gd, idd, &tgd.tensor()).loss;
        check_tensor(download(ld->data), download(lc->data), 1e-5, "LoRA loss, GPU vs CPU");
        gc.backward(*lc);
        gd.backward(*ld);
        check_tensor(download(ad.params().grads()), download(ac.params().grads()), 1e-4, "LoRA gradients, GPU vs CPU");
        oc.step(1e-2);
        od.step(1e-2);
    }
    check_tensor(download(ad.params().data()), download(ac.params().data()), 1e-4, "LoRA weights after two steps");
}

TEST_CASE("cuda model: checkpoints move between the GPU and the CPU") {
    MT_REQUIRE_GPU();
    TempDir dir;
    Transformer<TinyMoEModel, CUDA> gpu(ModelConfig{61, 16});
    gpu.init(11);
    Transformer<TinyMoEModel, CPU> cpu(ModelConfig{61, 16});
    save_pretrained(dir.path / "from_gpu", gpu);
    load_pretrained(dir.path / "from_gpu", cpu);
    check_tensor(download(cpu.params().data()), download(gpu.params().data()), 0, "GPU -> CPU weights");

    cpu.init(12);
    save_pretrained(dir.path / "from_cpu", cpu);
    load_pretrained(dir.path / "from_cpu", gpu);
    check_tensor(download(gpu.params().data()), download(cpu.params().data()), 0, "CPU -> GPU weights");

    // Optimizer state after a step on the GPU, restored on the CPU bit for bit.
    Optimizer<AdamW, CUDA> og(gpu.params());
    Rng rng{31, 0};
    auto ids = randint({2, 8}, rng, 0, 61);
    Buffer<CUDA> idd(ids.tensor().shape, DType::i32);
    CUDA::from_host(idd, ids.tensor().ptr);
    Graph<CUDA> g;
    auto out = gpu.forward(g, idd, &idd.tensor());
    g.backward(*out.loss);
    og.step(1e-3);
    TrainingState state;
    state.step = 1;
    save_checkpoint(dir.path / "ckpt", gpu, og, state);
    Optimizer<AdamW, CPU> oc(cpu.params());
    const TrainingState back = load_checkpoint(dir.path / "ckpt", cpu, oc);
    CHECK(back.step == 1);
    CHECK(oc.steps() == 1);
    check_tensor(download(cpu.params().data()), download(gpu.params().data()), 0, "checkpoint weights");
    auto sg = og.state(), sc = oc.state();
    REQUIRE(sg.size() == sc.size());
    for (std::size_t i = 0; i < sg.size(); ++i)
        check_tensor(download(sc[i].second), download(sg[i].second), 0, "optimizer state " + sg[i].first);
}

TEST_CASE("cuda model: the Pretrain trainer lowers the loss on the GPU") {
    MT_REQUIRE_GPU();
    TempDir dir;
    auto corpus = [](const fs::path& path, int tokens, std::uint64_t seed) {  // noisy counting sequences
        Rng rng{seed, 0};
        std::vector<std::uint32_t> t(static_cast<std::size_t>(tokens));
        std::uint32_t x = 0;
        for (auto& v : t) {
            x = rng.below(10) == 0 ? std::uint32_t(rng.below(50)) : (x + 1) % 50u;
            v = x;
        }
        write_token_shard(path, t, 50);
    };
    corpus(dir.path / "train.bin", 20000, 1);
    corpus(dir.path / "val.bin", 3000, 2);
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
    c.quiet = true;
    c.max_steps = 60;
    Trainer<GoldenDense, Optimizer<AdamW>, Schedule<Cosine>, Pretrain, CUDA> t(c);
    const double before = t.evaluate().loss;
    // The first steps size the arenas; after them a step allocates no device memory (cudaMalloc would
    // synchronize the device in the middle of the step).
    for (int i = 0; i < 3; ++i) t.train_step();
    const long allocated = CUDA::allocations().load();
    for (int i = 0; i < 5; ++i) t.train_step();
    CHECK_MESSAGE(CUDA::allocations().load() == allocated, "device allocations in 5 steady-state steps: "
                                                                         << CUDA::allocations().load() - allocated);
    t.fit();
    const double after = t.evaluate().loss;
    INFO("val loss before " << before << ", after " << after);
    CHECK(after < before - 0.5);
}
