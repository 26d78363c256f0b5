// Model folders and training checkpoints: config.json contents and the mismatch check field by field,
// bit-exact save/load round trips (dense and MoE), one test per kind of bad folder (each error must name
// the file and the tensor or key), an AdamW run interrupted by a checkpoint that continues bit for bit,
// the checkpoint folder helpers, and, when /usr/bin/python3 has torch, the PyTorch reference
// (tests/golden/minimind_ref.py) loading our folders and computing the same logits (and we loading its).
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <minitrain/io/checkpoint.hpp>
#include <minitrain/tokenizer/tokenizer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/optim/sgd.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {


bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// The message of the Error `f` throws; fails the test when it throws nothing.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    FAIL("expected minitrain::Error, nothing was thrown");
    return {};
}

std::vector<char> bytes_of(const Tensor& t) {
    std::vector<char> v(t.bytes());
    if (!v.empty()) std::memcpy(v.data(), t.ptr, v.size());
    return v;
}

std::vector<char> slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const fs::path& p, const std::vector<char>& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}

void spit(const fs::path& p, const std::string& text) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
}

json read_json(const fs::path& p) {
    std::ifstream f(p);
    return json::parse(f);
}

const ModelConfig tiny_rc{64, 16};

/// The model's parameters as a tensor list, for writing deliberately broken files.
template <class Net>
std::vector<NamedTensor> named(Transformer<Net>& m) {
    std::vector<NamedTensor> v;
    for (auto& p : m.params().all()) v.push_back({p.name, p.var.data});
    return v;
}

/// `n` training steps on random tokens drawn from state.rng (so the data itself is part of what a
/// checkpoint must restore); advances state.step, state.micro_step and state.rng.
template <class Net, class Algo>
void train(Transformer<Net>& m, Optimizer<Algo>& opt, Graph<CPU>& g, TrainingState& state, int n) {
    for (int s = 0; s < n; ++s) {
        auto ids = randint({2, 8}, state.rng, 0, m.config().vocab_size);
        auto targets = randint({2, 8}, state.rng, 0, m.config().vocab_size);
        g.reset();
        m.params().zero_grad();
        auto out = m.forward(g, ids, &targets.tensor());
        g.backward(*out.loss);
        opt.step(1e-2);
        ++state.step;
        ++state.micro_step;
    }
}

std::string run_python(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
    return out;
}

}  // namespace

// ---- config.json --------------------------------------------------------------------------------------

TEST_CASE("hf_config: a dense policy is a LlamaForCausalLM config") {
    HFTokenIds tok;
    tok.bos_token_id = 1;
    tok.eos_token_id = 2;
    json j = hf_config<TinyModel>(tiny_rc, tok);
    CHECK(j.at("architectures") == json::array({"LlamaForCausalLM"}));
    CHECK(j.at("model_type") == "llama");
    CHECK(j.at("vocab_size") == 64);
    CHECK(j.at("hidden_size") == 32);
    CHECK(j.at("intermediate_size") == TinyModel::ffn);
    CHECK(j.at("num_hidden_layers") == 2);
    CHECK(j.at("num_attention_heads") == 4);
    CHECK(j.at("num_key_value_heads") == 2);
    CHECK(j.at("head_dim") == 8);
    CHECK(j.at("hidden_act") == "silu");
    CHECK(j.at("max_position_embeddings") == 16);
    CHECK(j.at("rms_norm_eps").get<double>() == 1e-5);
    CHECK(j.at("rope_theta").get<double>() == 1e6);
    CHECK(j.at("tie_word_embeddings") == true);
    CHECK(j.at("attention_bias") == false);
    CHECK(j.at("mlp_bias") == false);
    CHECK(j.at("torch_dtype") == "float32");
    CHECK(j.at("bos_token_id") == 1);
    CHECK(j.at("eos_token_id") == 2);
    CHECK_FALSE(j.contains("pad_token_id"));
    CHECK(j.at("minitrain").at("version") == 1);
    for (const char* k : {"use_moe", "n_routed_experts", "num_experts_per_tok", "n_shared_experts"})
        CHECK_MESSAGE(!j.contains(k), k);
    CHECK(config_mismatch<TinyModel>(j, &tiny_rc).empty());
    CHECK(model_config_from(j).vocab_size == 64);
    CHECK(model_config_from(j).max_seq_len == 16);
}

TEST_CASE("hf_config: an MoE policy is a MiniMind config with its MoE keys") {
    using Net = Model<2, 32, 4, true, Knobs<2, 48, 6, 3, 2>>;
    json j = hf_config<Net>(tiny_rc);
    CHECK(j.at("architectures") == json::array({"MiniMindForCausalLM"}));
    CHECK(j.at("model_type") == "minimind");
    CHECK(j.at("intermediate_size") == 48);
    CHECK(j.at("use_moe") == true);
    CHECK(j.at("n_routed_experts") == 6);
    CHECK(j.at("num_experts_per_tok") == 3);
    CHECK(j.at("n_shared_experts") == 2);
    CHECK(j.at("norm_topk_prob") == true);
    CHECK(j.at("aux_loss_alpha").get<double>() == 0.01);
    CHECK(j.at("scoring_func") == "softmax");
    CHECK(j.at("seq_aux") == true);
    CHECK_FALSE(j.contains("bos_token_id"));
    CHECK(config_mismatch<Net>(j, &tiny_rc).empty());
    CHECK_FALSE(config_mismatch<TinyMoEModel>(j).empty());
}

/// MiniMind-3-MoE's shapes with MiniMind2's router.
struct QKNormMiniMind2Router : MiniMind3Knobs {
    static constexpr RouterRules router = RouterRules::minimind2;
};

TEST_CASE("hf_config: q/k-norm policies are Qwen3 / Qwen3-MoE configs, as MiniMind's convert script writes MiniMind-3") {
    // scripts/convert_model.py (jingyaogong/minimind HEAD): Qwen3Config(vocab_size, hidden_size, intermediate_size,
    // num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, max_position_embeddings, rms_norm_eps,
    // rope_theta, tie_word_embeddings, use_sliding_window=False, sliding_window=None); for MoE Qwen3MoeConfig with
    // num_experts, num_experts_per_tok, moe_intermediate_size, norm_topk_prob.
    const ModelConfig rc{6400, 8192};
    json j = hf_config<MiniMind3>(rc);
    CHECK(j.at("architectures") == json::array({"Qwen3ForCausalLM"}));
    CHECK(j.at("model_type") == "qwen3");
    CHECK(j.at("hidden_size") == 768);
    CHECK(j.at("intermediate_size") == 2432);
    CHECK(j.at("num_attention_heads") == 8);
    CHECK(j.at("num_key_value_heads") == 4);
    CHECK(j.at("head_dim") == 96);
    CHECK(j.at("rms_norm_eps").get<double>() == 1e-6);
    CHECK(j.at("rope_theta").get<double>() == 1e6);
    CHECK(j.at("tie_word_embeddings") == true);
    CHECK(j.at("use_sliding_window") == false);
    CHECK(j.at("sliding_window").is_null());
    CHECK_FALSE(j.contains("use_moe"));
    CHECK(config_mismatch<MiniMind3>(j, &rc).empty());
    CHECK(contains(config_mismatch<MiniMind2Small>(j), "model_type is \"qwen3\" (with q_norm / k_norm"));
    json llama = j;
    llama["model_type"] = "llama";
    CHECK(contains(config_mismatch<MiniMind3>(llama), "model_type is \"llama\" (without q_norm / k_norm in every attention "
                                                      "layer), the compiled model is with them"));

    json m = hf_config<MiniMind3MoE>(rc);
    CHECK(m.at("architectures") == json::array({"Qwen3MoeForCausalLM"}));
    CHECK(m.at("model_type") == "qwen3_moe");
    CHECK(m.at("num_experts") == 4);
    CHECK(m.at("num_experts_per_tok") == 1);
    CHECK(m.at("moe_intermediate_size") == 2432);
    CHECK(m.at("norm_topk_prob") == true);
    CHECK(m.at("router_aux_loss_coef").get<double>() == 5e-4);
    CHECK(m.at("decoder_sparse_step") == 1);
    CHECK(m.at("mlp_only_layers") == json::array());
    CHECK_FALSE(m.contains("n_shared_experts"));
    CHECK(config_mismatch<MiniMind3MoE>(m, &rc).empty());
    // Qwen3MoeConfig's defaults are not MiniMind-3's: a file relying on them is another model.
    json d = m;
    d.erase("num_experts");
    CHECK(contains(config_mismatch<MiniMind3MoE>(d), "num_experts is absent, which means 128 (Qwen3MoeConfig default)"));
    d = m;
    d["mlp_only_layers"] = json::array({0});
    CHECK(contains(config_mismatch<MiniMind3MoE>(d), "mlp_only_layers is [0]"));
    CHECK(contains(config_mismatch<MiniMind3>(m), "model_type is \"qwen3_moe\", the compiled model is dense"));
    // The same shapes with MiniMind2's router compute another function (top-1 weight = score): refused, and
    // written as MiniMind's own config instead.
    using Other = Model<8, 768, 8, true, QKNormMiniMind2Router>;
    CHECK(contains(config_mismatch<Other>(m), "the compiled model is a mixture of experts with MiniMind2's router"));
    CHECK(hf_config<Other>(rc).at("model_type") == "minimind");
    CHECK(hf_config<Other>(rc).at("seq_aux") == true);

    // transformers 5 writes rope_parameters instead of rope_theta / rope_scaling, and layer_types.
    json v5 = j;
    v5.erase("rope_theta");
    v5.erase("rope_scaling");
    v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
    v5["layer_types"] = json::array();
    for (int l = 0; l < 8; ++l) v5["layer_types"].push_back("full_attention");
    CHECK(config_mismatch<MiniMind3>(v5, &rc).empty());
    v5["rope_parameters"]["rope_theta"] = 1e4;
    CHECK(contains(config_mismatch<MiniMind3>(v5), "rope_theta is 10000, the compiled model has 1e+06"));
    v5["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 16}};
    CHECK(contains(config_mismatch<MiniMind3>(v5), "rope_scaling is"));
    v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
    v5["layer_types"][7] = "sliding_attention";
    CHECK(contains(config_mismatch<MiniMind3>(v5), "layer_types is"));
}

TEST_CASE("config_mismatch: every architectural key is checked and named with both values") {
    struct Case {
        const char* key;
        json value;
        std::string expect;
    };
    const json dense = hf_config<TinyModel>(tiny_rc);
    const std::vector<Case> dense_cases = {
        {"num_hidden_layers", 3, "config.json: num_hidden_layers is 3, the compiled model has 2"},
        {"hidden_size", 64, "config.json: hidden_size is 64, the compiled model has 32"},
        {"num_attention_heads", 8, "config.json: num_attention_heads is 8, the compiled model has 4"},
        {"num_key_value_heads", 4, "config.json: num_key_value_heads is 4, the compiled model has 2"},
        {"intermediate_size", 96, "config.json: intermediate_size is 96, the compiled model has 128"},
        {"head_dim", 16, "config.json: head_dim is 16, the compiled model has 8"},
        {"rms_norm_eps", 1e-6, "config.json: rms_norm_eps is 1e-06, the compiled model has 1e-05"},
        {"rope_theta", 10000.0, "config.json: rope_theta is 10000, the compiled model has 1e+06"},
        {"hidden_act", "gelu", "config.json: hidden_act is \"gelu\", minitrain implements only \"silu\""},
        {"model_type", "qwen2", "config.json: model_type is \"qwen2\""},
        {"tie_word_embeddings", false, "config.json: tie_word_embeddings is false, the compiled model has true"},
        {"attention_bias", true, "config.json: attention_bias is true, the compiled model has false"},
        {"mlp_bias", true, "config.json: mlp_bias is true, the compiled model has false"},
        {"use_moe", true, "config.json: use_moe is true, the compiled model has false"},
        {"rope_scaling", json{{"type", "linear"}, {"factor", 2.0}}, "config.json: rope_scaling is {"},
        {"num_hidden_layers", "2", "config.json: num_hidden_layers must be an integer, found string \"2\""},
        {"num_hidden_layers", 2.5, "config.json: num_hidden_layers must be an integer"},
    };
    for (const Case& c : dense_cases) {
        json j = dense;
        j[c.key] = c.value;
        std::string why = config_mismatch<TinyModel>(j, &tiny_rc);
        CHECK_MESSAGE(contains(why, c.expect), c.key, " -> ", why);
    }

    using MoE = TinyMoEModel;  // 4 experts, top-2, 1 shared
    const json moe = hf_config<MoE>(tiny_rc);
    const std::vector<Case> moe_cases = {
        {"n_routed_experts", 8, "config.json: n_routed_experts is 8, the compiled model has 4"},
        {"num_experts_per_tok", 1, "config.json: num_experts_per_tok is 1, the compiled model has 2"},
        {"n_shared_experts", 0, "config.json: n_shared_experts is 0, the compiled model has 1"},
        {"norm_topk_prob", false, "config.json: norm_topk_prob is false, the compiled model has true"},
        {"aux_loss_alpha", 0.1, "config.json: aux_loss_alpha is 0.1, the compiled model has 0.01"},
        {"scoring_func", "sigmoid", "config.json: scoring_func is \"sigmoid\", minitrain implements only \"softmax\""},
        {"seq_aux", false, "config.json: seq_aux is false, the compiled model has true"},
        {"use_moe", false, "config.json: use_moe is false, the compiled model has true"},
    };
    for (const Case& c : moe_cases) {
        json j = moe;
        j[c.key] = c.value;
        std::string why = config_mismatch<MoE>(j, &tiny_rc);
        CHECK_MESSAGE(contains(why, c.expect), c.key, " -> ", why);
    }

    // A dense config for an MoE model: use_moe is absent, which means false.
    CHECK(contains(config_mismatch<MoE>(dense), "use_moe is absent, which means false; the compiled model has true"));
    // The run-time sizes: the vocabulary must match, max_position_embeddings may differ either way.
    const ModelConfig other_vocab{100, 16}, longer{64, 1024}, shorter{64, 4};
    CHECK(config_mismatch<TinyModel>(dense, &other_vocab) ==
          "config.json: vocab_size is 64, the model's ModelConfig has 100");
    CHECK(config_mismatch<TinyModel>(dense, &longer).empty());
    CHECK(config_mismatch<TinyModel>(dense, &shorter).empty());
    CHECK(config_mismatch<TinyModel>(dense).empty());
    CHECK(contains(config_mismatch<TinyModel>(json::array()), "config.json: must be a JSON object"));
}

TEST_CASE("config_mismatch: missing keys take HF's defaults; the sizes are required") {
    json j = hf_config<TinyModel>(tiny_rc);
    j.erase("num_hidden_layers");
    CHECK(config_mismatch<TinyModel>(j) ==
          "config.json: num_hidden_layers is missing (it is required); the compiled model has 2");

    j = hf_config<TinyModel>(tiny_rc);
    j.erase("intermediate_size");
    CHECK(contains(config_mismatch<TinyModel>(j), "config.json: intermediate_size is missing"));

    // num_key_value_heads defaults to num_attention_heads: 4, but TinyModel has 2 KV heads.
    j = hf_config<TinyModel>(tiny_rc);
    j.erase("num_key_value_heads");
    CHECK(config_mismatch<TinyModel>(j) ==
          "config.json: num_key_value_heads is absent, which means 4 (HF default: num_attention_heads = 4); the "
          "compiled model has 2");
    // ... which is right for a model without grouped-query attention. A minimal hand-written config
    // (no kv heads, head_dim, hidden_act, tie, biases, rope_scaling) describes it; null counts as absent.
    using NoGQA = Model<2, 32, 4, false, Knobs<4>>;
    json minimal = {{"vocab_size", 64},        {"hidden_size", 32},      {"intermediate_size", 128},
                    {"num_hidden_layers", 2},  {"num_attention_heads", 4}, {"rms_norm_eps", 1e-5},
                    {"rope_theta", 1e6},       {"head_dim", nullptr}};
    CHECK(config_mismatch<NoGQA>(minimal, &tiny_rc).empty());
    // rms_norm_eps absent means HF's 1e-6.
    minimal.erase("rms_norm_eps");
    CHECK(contains(config_mismatch<NoGQA>(minimal), "rms_norm_eps is absent, which means 1e-06 (HF default)"));
    // A value rounded through f32 still matches.
    minimal["rms_norm_eps"] = double(float(1e-5));
    CHECK(config_mismatch<NoGQA>(minimal).empty());

    // model_config_from: vocab_size required, max_position_embeddings defaults to 2048.
    CHECK(model_config_from(minimal).max_seq_len == 2048);
    json no_vocab = minimal;
    no_vocab.erase("vocab_size");
    CHECK(contains(error_of([&] { model_config_from(no_vocab, "x/config.json"); }),
                   "x/config.json: vocab_size is missing"));
    json zero_vocab = minimal;
    zero_vocab["vocab_size"] = 0;
    CHECK(contains(error_of([&] { model_config_from(zero_vocab); }), "config.json: vocab_size is 0"));
}

// ---- model folders --------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("save_pretrained / load_pretrained: a fresh model gets every parameter bit for bit", Net, TinyModel,
                   TinyMoEModel, TinyQKNormModel) {
    TempDir tmp;
    const fs::path dir = tmp / "nested" / "model";  // created by save_pretrained
    Transformer<Net> a(tiny_rc);
    a.init(11);
    save_pretrained(dir, a);
    CHECK(fs::is_regular_file(dir / "config.json"));
    CHECK(fs::is_regular_file(dir / "model.safetensors"));
    int entries = 0;
    for (auto& e : fs::directory_iterator(dir)) {
        (void)e;
        ++entries;
    }
    CHECK(entries == 3);  // config.json, model.safetensors, generation_config.json: no temporary files left behind

    const json cfg = read_json(dir / "config.json");
    CHECK(cfg == hf_config<Net>(tiny_rc));
    SafeTensors st(dir / "model.safetensors");
    CHECK(st.metadata().at("format") == "pt");
    CHECK(st.size() == a.params().all().size());
    for (auto& p : a.params().all()) {
        CHECK(st.info(p.name).dtype == "F32");
        CHECK(st.info(p.name).shape ==
              std::vector<std::int64_t>(p.shape.dims.begin(), p.shape.dims.begin() + p.shape.rank));
    }
    CHECK_FALSE(st.contains("lm_head.weight"));

    Transformer<Net> b(load_model_config(dir));
    b.init(12);
    CHECK(bytes_of(b.params().data()) != bytes_of(a.params().data()));
    load_pretrained(dir, b);
    CHECK(bytes_of(b.params().data()) == bytes_of(a.params().data()));

    // A longer context than the one saved is allowed (no weight depends on it).
    Transformer<Net> c(ModelConfig{64, 32});
    c.init(13);
    load_pretrained(dir, c);
    CHECK(bytes_of(c.params().data()) == bytes_of(a.params().data()));
}

TEST_CASE("load_pretrained: a bad folder is an Error naming the file and the tensor or key; the model is untouched") {
    TempDir tmp;
    const fs::path dir = tmp / "model";
    Transformer<TinyModel> a(tiny_rc);
    a.init(21);
    save_pretrained(dir, a);
    const fs::path weights = dir / "model.safetensors", config = dir / "config.json";
    const auto good_weights = slurp(weights);
    const std::string good_config = read_json(config).dump();

    Transformer<TinyModel> b(tiny_rc);
    b.init(22);
    const auto before = bytes_of(b.params().data());
    auto load_error = [&] { return error_of([&] { load_pretrained(dir, b); }); };
    auto restore = [&] {
        write_bytes(weights, good_weights);
        spit(config, good_config);
    };

    SUBCASE("a tensor with the wrong shape") {
        auto t = named(a);
        Buffer<CPU> wrong(Shape{16, 32}, DType::f32);  // k_proj is (KV*D, C) = (16, 32); give q_proj that shape
        CPU::zero(wrong);
        for (auto& nt : t)
            if (nt.name == "model.layers.1.self_attn.q_proj.weight") nt.tensor = wrong;
        save_safetensors(weights, t);
        std::string e = load_error();
        CHECK(contains(e, weights.string()));
        CHECK(contains(e, "\"model.layers.1.self_attn.q_proj.weight\" has shape (16, 32), the model needs (32, 32)"));
    }
    SUBCASE("an unknown tensor") {
        auto t = named(a);
        Buffer<CPU> bias(Shape{32}, DType::f32);
        CPU::zero(bias);
        t.push_back({"model.layers.0.self_attn.q_proj.bias", bias});
        save_safetensors(weights, t);
        std::string e = load_error();
        CHECK(contains(e, weights.string()));
        CHECK(contains(e, "unexpected tensor \"model.layers.0.self_attn.q_proj.bias\""));
    }
    SUBCASE("a missing tensor") {
        auto t = named(a);
        t.erase(std::remove_if(t.begin(), t.end(), [](auto& nt) { return nt.name == "model.norm.weight"; }), t.end());
        save_safetensors(weights, t);
        std::string e = load_error();
        CHECK(contains(e, weights.string()));
        CHECK(contains(e, "missing tensor \"model.norm.weight\""));
    }
    SUBCASE("an F64 tensor") {
        auto t = named(a);
        auto& norm = a.params().find("model.norm.weight");
        Buffer<CPU> d = converted(norm.var.data, DType::f64);
        for (auto& nt : t)
            if (nt.name == norm.name) nt.tensor = d;
        save_safetensors(weights, t);
        CHECK(contains(load_error(), "tensor \"model.norm.weight\" is F64, expected F32, BF16 or F16"));
    }
    SUBCASE("a truncated model.safetensors") {
        write_bytes(weights, std::vector<char>(good_weights.begin(), good_weights.end() - 100));
        std::string e = load_error();
        CHECK(contains(e, weights.string()));
        CHECK(contains(e, "truncated"));
    }
    SUBCASE("a corrupted header") {
        auto bytes = good_weights;
        bytes[20] = '\x01';
        write_bytes(weights, bytes);
        CHECK(contains(load_error(), weights.string()));
    }
    SUBCASE("config.json is not JSON") {
        spit(config, "{\"hidden_size\": 32,");
        std::string e = load_error();
        CHECK(contains(e, config.string() + ": not valid JSON"));
    }
    SUBCASE("config.json is missing") {
        fs::remove(config);
        CHECK(load_error() == config.string() + ": no such file");
    }
    SUBCASE("config.json describes another model") {
        json j = json::parse(good_config);
        j["num_key_value_heads"] = 4;
        spit(config, j.dump());
        CHECK(load_error() == config.string() + ": num_key_value_heads is 4, the compiled model has 2");
    }
    SUBCASE("another vocabulary") {
        Transformer<TinyModel> v(ModelConfig{65, 16});
        std::string e = error_of([&] { load_pretrained(dir, v); });
        CHECK(e == config.string() + ": vocab_size is 64, the model's ModelConfig has 65");
    }
    SUBCASE("lm_head.weight: accepted when it equals the embedding, an Error otherwise") {
        auto t = named(a);
        auto& emb = a.params().find("model.embed_tokens.weight");
        t.push_back({"lm_head.weight", emb.var.data});
        save_safetensors(weights, t);
        load_pretrained(dir, b);
        CHECK(bytes_of(b.params().data()) == bytes_of(a.params().data()));

        Buffer<CPU> other(emb.shape, DType::f32);
        CPU::copy(other, emb.var.data);
        other.data<float>()[5] += 1.0f;
        t.back().tensor = other;
        save_safetensors(weights, t);
        b.init(22);
        std::string e = load_error();
        CHECK(contains(e, weights.string()));
        CHECK(contains(e, "\"lm_head.weight\" differs from \"model.embed_tokens.weight\""));
    }
    CHECK(bytes_of(b.params().data()) == before);  // a failed load copies nothing
    restore();
    load_pretrained(dir, b);
    CHECK(bytes_of(b.params().data()) == bytes_of(a.params().data()));
}

TEST_CASE("load_pretrained: BF16 weights are widened exactly") {
    TempDir tmp;
    Transformer<TinyModel> a(tiny_rc);
    a.init(31);
    save_pretrained(tmp.path, a);
    // Rewrite the weights in BF16; the loaded model holds exactly the widened BF16 values.
    std::vector<Buffer<CPU>> halves;
    std::vector<NamedTensor> t;
    for (auto& p : a.params().all()) {
        auto& h = halves.emplace_back(p.shape, DType::bf16);
        for (std::int64_t i = 0; i < p.shape.numel(); ++i) h.data<bf16>()[i] = bf16(p.var.data.data<float>()[i]);
        t.push_back({p.name, h});
    }
    save_safetensors(tmp / "model.safetensors", t);
    Transformer<TinyModel> b(tiny_rc);
    load_pretrained(tmp.path, b);
    std::size_t k = 0;
    bool same = true;
    for (auto& p : b.params().all()) {
        for (std::int64_t i = 0; i < p.shape.numel(); ++i)
            same = same && p.var.data.data<float>()[i] == float(halves[k].data<bf16>()[i]);
        ++k;
    }
    CHECK(same);
}

// ---- complete Hugging Face folders (issue 14, section 2) -------------------------------------------------

namespace {

/// A small byte-level tokenizer with MiniMind's three special tokens (ids 0, 1, 2), saved as tokenizer.json.
fs::path small_tokenizer(const fs::path& dir) {
    Tokenizer::TrainOptions o;
    o.vocab_size = 300;
    o.progress = false;
    const Tokenizer tok = Tokenizer::train_from_texts({"hello world, hello minitrain", "the quick brown fox"}, o);
    const fs::path p = dir / "tok" / "tokenizer.json";
    fs::create_directories(p.parent_path());
    tok.save(p);
    return p;
}

/// `model`'s weights written as transformers does for a big model: two shards and their index, the first
/// in `first` (BF16 or F16) with a copy of the tied embedding as lm_head.weight (as some writers do), the
/// second in F32.
template <class Net>
void write_sharded(const fs::path& dir, Transformer<Net>& model, const char* first) {
    std::vector<NamedTensor> a, b;
    std::vector<std::vector<std::uint16_t>> halves;
    json map = json::object();
    const auto& all = model.params().all();
    for (std::size_t i = 0; i < all.size(); ++i) {
        const Parameter& p = all[i];
        if (i < all.size() / 2) {
            auto& h = halves.emplace_back(std::size_t(p.shape.numel()));
            for (std::size_t k = 0; k < h.size(); ++k) {
                const float x = p.var.data.data<float>()[k];
                h[k] = std::string(first) == "BF16" ? bf16(x).bits : minitrain::detail::f32_to_f16(x);
            }
            Tensor t = p.var.data;
            t.ptr = h.data();
            t.dtype = DType::bf16;
            a.push_back({p.name, t, first});
            map[p.name] = "model-00001-of-00002.safetensors";
        } else {
            b.push_back({p.name, p.var.data});
            map[p.name] = "model-00002-of-00002.safetensors";
        }
    }
    // The embedding is parameter 0, so in the first shard: its tied copy goes there too, in the same type.
    a.push_back({"lm_head.weight", a.front().tensor, first});
    map["lm_head.weight"] = "model-00001-of-00002.safetensors";
    fs::create_directories(dir);
    save_safetensors(dir / "model-00001-of-00002.safetensors", a, {{"format", "pt"}});
    save_safetensors(dir / "model-00002-of-00002.safetensors", b, {{"format", "pt"}});
    spit(dir / "model.safetensors.index.json", json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2));
}

/// What a 16-bit file holds for x, widened back.
float through(const char* type, float x) {
    return std::string(type) == "BF16" ? float(bf16(x)) : minitrain::detail::f16_to_f32(minitrain::detail::f32_to_f16(x));
}

}  // namespace

TEST_CASE("save_pretrained with the run's tokenizer writes a folder transformers loads as it is") {
    TempDir tmp;
    const fs::path tok = small_tokenizer(tmp.path);
    const ModelConfig rc{300, 24};
    Transformer<TinyModel> m(rc);
    m.init(3);
    SaveOptions o;
    o.tokenizer = tok;
    save_pretrained(tmp / "final", m, o);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "generation_config.json"})
        CHECK_MESSAGE(fs::is_regular_file(tmp / "final" / f), f);
    CHECK(slurp(tmp / "final" / "tokenizer.json") == slurp(tok));

    const json cfg = read_json(tmp / "final" / "config.json");
    CHECK(cfg.at("architectures") == json::array({"LlamaForCausalLM"}));
    CHECK(cfg.at("torch_dtype") == "float32");
    CHECK(cfg.at("bos_token_id") == 1);  // <|im_start|>, as MiniMind's config
    CHECK(cfg.at("eos_token_id") == 2);  // <|im_end|>
    CHECK(cfg.at("pad_token_id") == 0);  // <|endoftext|>
    const json tc = read_json(tmp / "final" / "tokenizer_config.json");
    CHECK(tc.at("tokenizer_class") == "PreTrainedTokenizerFast");
    CHECK(tc.at("bos_token") == "<|im_start|>");
    CHECK(tc.at("eos_token") == "<|im_end|>");
    CHECK(tc.at("pad_token") == "<|endoftext|>");
    CHECK(tc.at("unk_token") == "<|endoftext|>");
    CHECK(tc.at("model_max_length") == 24);
    CHECK(tc.at("add_bos_token") == false);
    CHECK(tc.at("chat_template") == default_chat_template);
    CHECK(tc.at("added_tokens_decoder").at("1").at("content") == "<|im_start|>");
    CHECK(tc.at("added_tokens_decoder").at("1").at("special") == true);
    const json sm = read_json(tmp / "final" / "special_tokens_map.json");
    CHECK(sm.at("eos_token").at("content") == "<|im_end|>");
    const json gc = read_json(tmp / "final" / "generation_config.json");
    CHECK(gc.at("eos_token_id") == 2);
    CHECK(gc.at("bos_token_id") == 1);

    // The next stage's folder keeps the source folder's chat template (here a custom one).
    json custom = tc;
    custom["chat_template"] = "{{ messages[0]['content'] }}";
    spit(tmp / "final" / "tokenizer_config.json", custom.dump());
    o.tokenizer = tmp / "final" / "tokenizer.json";
    save_pretrained(tmp / "sft", m, o);
    CHECK(read_json(tmp / "sft" / "tokenizer_config.json").at("chat_template") == "{{ messages[0]['content'] }}");

    // The folder loads back, tokenizer files and all.
    Transformer<TinyModel> back(load_model_config(tmp / "final"));
    load_pretrained(tmp / "final", back);
    CHECK(bytes_of(back.params().data()) == bytes_of(m.params().data()));
}

TEST_CASE("save_pretrained: --save_dtype bf16 / f16 rounds every weight to nearest even, and loads back widened") {
    TempDir tmp;
    Transformer<TinyModel> m(tiny_rc);
    m.init(4);
    for (auto [dtype, type, torch] : {std::tuple{SaveDType::bf16, "BF16", "bfloat16"}, {SaveDType::f16, "F16", "float16"}}) {
        const fs::path dir = tmp / type;
        SaveOptions o;
        o.dtype = dtype;
        save_pretrained(dir, m, o);
        CHECK(read_json(dir / "config.json").at("torch_dtype") == torch);
        SafeTensors st(dir / "model.safetensors");
        for (auto& p : m.params().all()) CHECK(st.info(p.name).dtype == type);
        CHECK(fs::file_size(dir / "model.safetensors") < m.params().count() * 2 + 4096);
        Transformer<TinyModel> back(tiny_rc);
        load_pretrained(dir, back);
        bool same = true;
        for (std::size_t k = 0; k < m.params().count(); ++k)
            same = same && back.params().data().data<float>()[k] == through(type, m.params().data().data<float>()[k]);
        CHECK_MESSAGE(same, type);
    }
    CHECK(contains(error_of([] { parse_save_dtype("fp8"); }), "--save_dtype \"fp8\": expected f32, bf16 or f16"));
    // A checkpoint folder stays F32 whatever is asked: resuming must continue from the exact weights.
    Optimizer<AdamW> opt(m.params(), AdamW::Options{});
    TrainingState st0;
    SaveOptions o;
    o.dtype = SaveDType::bf16;
    save_checkpoint(tmp / "ckpt", m, opt, st0, o);
    CHECK(SafeTensors(tmp / "ckpt" / "model.safetensors").info("model.norm.weight").dtype == "F32");
}

TEST_CASE("load_pretrained: a folder written by transformers (sharded, BF16 / F16, index, no minitrain key)") {
    TempDir tmp;
    Transformer<TinyModel> m(tiny_rc);
    m.init(5);
    for (const char* first : {"BF16", "F16"}) {
        const fs::path dir = tmp / first;
        write_sharded(dir, m, first);
        json cfg = hf_config<TinyModel>(tiny_rc);  // as LlamaConfig.to_json_string writes it
        cfg.erase("minitrain");
        cfg["torch_dtype"] = std::string(first) == "BF16" ? "bfloat16" : "float16";
        cfg["transformers_version"] = "4.57.1";
        cfg["pretraining_tp"] = 1;
        cfg["bos_token_id"] = 1;
        spit(dir / "config.json", cfg.dump(2));
        Transformer<TinyModel> back(load_model_config(dir));
        back.init(6);
        load_pretrained(dir, back);
        const auto& all = m.params().all();
        bool same = true;
        for (std::size_t i = 0; i < all.size(); ++i) {
            const Parameter& p = all[i];
            const float* want = p.var.data.data<float>();
            const float* got = back.params().find(p.name).var.data.data<float>();
            for (std::int64_t k = 0; k < p.shape.numel(); ++k)
                same = same && got[k] == (i < all.size() / 2 ? through(first, want[k]) : want[k]);
        }
        CHECK_MESSAGE(same, first);
    }

    // A bad index names the file and the tensor.
    const fs::path dir = tmp / "BF16";
    json index = read_json(dir / "model.safetensors.index.json");
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
    spit(dir / "model.safetensors.index.json", index.dump());
    Transformer<TinyModel> back(tiny_rc);
    std::string e = error_of([&] { load_pretrained(dir, back); });
    CHECK(contains(e, "model-00002-of-00002.safetensors: tensor \"model.norm.weight\" is in this shard"));
    index["weight_map"]["model.norm.weight"] = "../model.safetensors";
    spit(dir / "model.safetensors.index.json", index.dump());
    e = error_of([&] { load_pretrained(dir, back); });
    CHECK(contains(e, "is not a file of the folder"));
    index["weight_map"].erase("model.norm.weight");
    spit(dir / "model.safetensors.index.json", index.dump());
    e = error_of([&] { load_pretrained(dir, back); });
    CHECK(contains(e, "does not list it"));
}

TEST_CASE("load_pretrained: a folder of another architecture is refused, naming the field") {
    TempDir tmp;
    Transformer<TinyModel> m(tiny_rc);
    m.init(7);
    save_pretrained(tmp.path, m);
    const json good = read_json(tmp / "config.json");
    auto refusal = [&](const char* key, const json& value) {
        json cfg = good;
        cfg[key] = value;
        spit(tmp / "config.json", cfg.dump());
        Transformer<TinyModel> back(tiny_rc);
        return error_of([&] { load_pretrained(tmp.path, back); });
    };
    std::string e = refusal("architectures", json::array({"Qwen2ForCausalLM"}));
    CHECK(contains(e, "config.json: architectures is [\"Qwen2ForCausalLM\"]: minitrain implements only LlamaForCausalLM, "
                      "Qwen3ForCausalLM, Qwen3MoeForCausalLM, MiniMindForCausalLM"));
    e = refusal("model_type", "gpt_neox");
    CHECK(contains(e, "config.json: model_type is \"gpt_neox\", minitrain implements only"));
    e = refusal("model_type", "qwen3");
    CHECK(contains(e, "model_type is \"qwen3\" (with q_norm / k_norm in every attention layer), the compiled model is "
                      "without them"));
    e = refusal("tie_word_embeddings", false);
    CHECK(contains(e, "tie_word_embeddings is false"));
    e = refusal("use_sliding_window", true);
    CHECK(contains(e, "use_sliding_window is true"));

    // Weights only as a pickle (MiniMind's convert script with safe_serialization=False): read by
    // io/torch_pickle.hpp (tests/model.cpp loads real ones); a file that is not torch.save's is named.
    spit(tmp / "config.json", good.dump());
    fs::remove(tmp / "model.safetensors");
    spit(tmp / "pytorch_model.bin", "not a zip archive, 32 bytes long");
    Transformer<TinyModel> back(tiny_rc);
    e = error_of([&] { load_pretrained(tmp.path, back); });
    CHECK(contains(e, "pytorch_model.bin: no zip end-of-central-directory record: not a torch.save() zip archive"));
}

// ---- training checkpoints -------------------------------------------------------------------------------

TEST_CASE("checkpoint: an AdamW run restored from a checkpoint continues bit for bit") {
    TempDir tmp;
    AdamW::Options o;
    o.weight_decay = 0.1;
    Graph<CPU> g;

    Transformer<TinyModel> a(tiny_rc);
    a.init(41);
    const auto initial = bytes_of(a.params().data());
    Optimizer<AdamW> oa(a.params(), o);
    TrainingState st;
    st.epoch = 3;
    st.rng = Rng{0xfedcba9876543210ull, 0xfffffffffffffff0ull};  // 64-bit values that a double would round
    st.data = TokenLoader::Position{3, 1, 4, 0xffffffffffffff01ull};
    st.world_size = 2;
    st.threads = 3;
    st.extra = {{"schedule", "cosine"}, {"warmup", 10}, {"lr", 0.01}};
    train(a, oa, g, st, 2);
    REQUIRE(st.step == 2);
    const fs::path dir = checkpoint_dir(tmp.path, st.step);
    CHECK(dir == tmp.path / "checkpoints" / "step_00000002");
    save_checkpoint(dir, a, oa, st);
    const TrainingState saved = st;
    const auto w_saved = bytes_of(a.params().data());
    const auto m_saved = bytes_of(oa.state()[0].second), v_saved = bytes_of(oa.state()[1].second);
    CHECK(w_saved != initial);  // the run did change the weights, and the moments are not zero
    CHECK(m_saved != std::vector<char>(m_saved.size(), 0));

    // The files: a model folder plus the training state, nothing else.
    CHECK(fs::is_regular_file(dir / "config.json"));
    CHECK(fs::is_regular_file(dir / "model.safetensors"));
    SafeTensors ts(dir / "training_state.safetensors");
    CHECK(ts.names() == std::vector<std::string>{"optimizer.exp_avg", "optimizer.exp_avg_sq"});
    json meta = json::parse(ts.metadata().at("minitrain.training_state"));
    CHECK(meta.at("step") == 2);
    CHECK(meta.at("rng").at("seed") == "18364758544493064720");
    CHECK(meta.at("optimizer").at("algorithm") == "adamw");
    CHECK(meta.at("optimizer").at("steps") == 2);
    int entries = 0;
    for (auto& e : fs::directory_iterator(tmp / "checkpoints")) {
        CHECK(e.path() == dir);
        ++entries;
    }
    CHECK(entries == 1);

    // Uninterrupted: two more steps.
    train(a, oa, g, st, 2);
    const auto w1 = bytes_of(a.params().data());
    const auto m1 = bytes_of(oa.state()[0].second), v1 = bytes_of(oa.state()[1].second);
    CHECK(w1 != w_saved);

    // Restored into a fresh model and optimizer: exactly the saved state ...
    Transformer<TinyModel> b(tiny_rc);
    b.init(42);
    Optimizer<AdamW> ob(b.params(), o);
    TrainingState sb = load_checkpoint(dir, b, ob);
    CHECK(bytes_of(b.params().data()) == w_saved);
    CHECK(bytes_of(ob.state()[0].second) == m_saved);
    CHECK(bytes_of(ob.state()[1].second) == v_saved);
    CHECK(ob.steps() == 2);
    CHECK(sb.step == saved.step);
    CHECK(sb.epoch == saved.epoch);
    CHECK(sb.micro_step == saved.micro_step);
    CHECK(sb.rng.seed == saved.rng.seed);
    CHECK(sb.rng.counter == saved.rng.counter);
    auto pos = sb.data.get<TokenLoader::Position>();
    CHECK(pos.epoch == 3);
    CHECK(pos.shard == 1);
    CHECK(pos.batch_in_shard == 4);
    CHECK(pos.seed == 0xffffffffffffff01ull);
    CHECK(sb.world_size == 2);
    CHECK(sb.threads == 3);
    CHECK(sb.extra == saved.extra);
    // ... and the same two steps give the same bits as the uninterrupted run.
    train(b, ob, g, sb, 2);
    CHECK(bytes_of(b.params().data()) == w1);
    CHECK(bytes_of(ob.state()[0].second) == m1);
    CHECK(bytes_of(ob.state()[1].second) == v1);
    CHECK(ob.steps() == 4);
    CHECK(sb.rng.counter == st.rng.counter);
}

TEST_CASE("checkpoint: SGD with momentum round trip, and optimizer mismatches are Errors that change nothing") {
    TempDir tmp;
    Graph<CPU> g;
    Transformer<TinyMoEModel> a(tiny_rc);
    a.init(51);
    SGD::Options so;
    so.momentum = 0.9;
    Optimizer<SGD> sgd(a.params(), so);
    TrainingState st;
    train(a, sgd, g, st, 2);
    const fs::path dir = checkpoint_dir(tmp.path, 2);
    save_checkpoint(dir, a, sgd, st);

    Transformer<TinyMoEModel> b(tiny_rc);
    b.init(52);
    Optimizer<SGD> sb(b.params(), so);
    load_checkpoint(dir, b, sb);
    CHECK(bytes_of(b.params().data()) == bytes_of(a.params().data()));
    CHECK(bytes_of(sb.state()[0].second) == bytes_of(sgd.state()[0].second));
    CHECK(sb.steps() == 2);

    const std::string state_file = (dir / "training_state.safetensors").string();
    Transformer<TinyMoEModel> c(tiny_rc);
    c.init(53);
    const auto before = bytes_of(c.params().data());

    // Each of these fails before anything is copied (checked against `before` at the end).
    {
        INFO("another algorithm");
        Optimizer<AdamW> adam(c.params());
        std::string e = error_of([&] { load_checkpoint(dir, c, adam); });
        CHECK(e == state_file + ": optimizer.algorithm is \"sgd\", the optimizer being restored is \"adamw\"");
        CHECK(bytes_of(adam.state()[0].second) == std::vector<char>(adam.state()[0].second.bytes(), 0));
    }
    {
        INFO("SGD without momentum has no momentum buffer");
        Optimizer<SGD> plain(c.params());
        std::string e = error_of([&] { load_checkpoint(dir, c, plain); });
        CHECK(contains(e, state_file + ": unexpected tensor \"optimizer.momentum_buffer\""));
    }
    {
        INFO("other trainable parameters");
        Transformer<TinyMoEModel> f(tiny_rc);
        f.params().freeze([](const Parameter& p) { return p.name.find("embed_tokens") != std::string::npos; });
        Optimizer<SGD> frozen(f.params(), so);
        std::string e = error_of([&] { load_checkpoint(dir, f, frozen); });
        CHECK(contains(e, state_file + ": tensor \"optimizer.momentum_buffer\" has shape ("));
        CHECK(frozen.steps() == 0);
    }
    {
        INFO("weights of another model: caught by the optimizer slab's shape, before the weights");
        Transformer<TinyModel> dense(tiny_rc);
        Optimizer<SGD> o(dense.params(), so);
        CHECK(contains(error_of([&] { load_checkpoint(dir, dense, o); }),
                       "tensor \"optimizer.momentum_buffer\" has shape"));
    }
    {
        INFO("not a folder");
        Optimizer<SGD> o(c.params(), so);
        CHECK(error_of([&] { load_checkpoint(tmp / "nope", c, o); }) ==
              (tmp / "nope").string() + ": no such checkpoint folder");
    }
    {
        INFO("a checkpoint without momentum into SGD with momentum");
        Optimizer<SGD> plain(a.params());
        save_checkpoint(dir, a, plain, st);
        Optimizer<SGD> with(c.params(), so);
        std::string e = error_of([&] { load_checkpoint(dir, c, with); });
        CHECK(contains(e, state_file + ": missing tensor \"optimizer.momentum_buffer\""));
        CHECK(bytes_of(with.state()[0].second) == std::vector<char>(with.state()[0].second.bytes(), 0));
    }
    {
        INFO("no training state");
        fs::remove(dir / "training_state.safetensors");
        Optimizer<SGD> o(c.params(), so);
        CHECK(contains(error_of([&] { load_checkpoint(dir, c, o); }), state_file + ": cannot open"));
    }
    CHECK(bytes_of(c.params().data()) == before);
}

TEST_CASE("checkpoint folders: replace in place, latest_checkpoint and prune_checkpoints") {
    TempDir tmp;
    CHECK_FALSE(latest_checkpoint(tmp / "nothing-here").has_value());
    CHECK_FALSE(latest_checkpoint(tmp.path).has_value());
    Graph<CPU> g;
    Transformer<TinyModel> m(tiny_rc);
    m.init(61);
    Optimizer<AdamW> opt(m.params());
    TrainingState st;
    for (int s = 1; s <= 3; ++s) {
        train(m, opt, g, st, 1);
        save_checkpoint(checkpoint_dir(tmp.path, st.step), m, opt, st);
    }
    const fs::path root = tmp / "checkpoints";
    CHECK(latest_checkpoint(tmp.path) == root / "step_00000003");

    // Debris that must be ignored: an incomplete newer folder, a leftover temporary folder holding all
    // three files, a plain file with a checkpoint's name, and an unrelated folder.
    fs::create_directories(root / "step_00000004");
    spit(root / "step_00000004" / "config.json", "{}");
    fs::create_directories(root / "step_00000005.tmp-999");
    for (const char* f : {"config.json", "model.safetensors", "training_state.safetensors"})
        fs::copy_file(root / "step_00000003" / f, root / "step_00000005.tmp-999" / f);
    spit(root / "step_00000006", "not a folder");
    fs::create_directories(root / "step_7x");
    CHECK(latest_checkpoint(tmp.path) == root / "step_00000003");
    auto all = list_checkpoints(tmp.path);
    REQUIRE(all.size() == 3);
    CHECK(all[0].first == 1);
    CHECK(all[2].first == 3);

    // Saving a step that exists replaces it whole.
    TrainingState again = st;
    again.step = 2;
    again.extra = {{"replaced", true}};
    save_checkpoint(checkpoint_dir(tmp.path, 2), m, opt, again);
    Transformer<TinyModel> r(tiny_rc);
    Optimizer<AdamW> ro(r.params());
    CHECK(load_checkpoint(root / "step_00000002", r, ro).extra == again.extra);
    CHECK(bytes_of(r.params().data()) == bytes_of(m.params().data()));
    for (auto& e : fs::directory_iterator(root)) {
        const std::string name = e.path().filename().string();
        CHECK_MESSAGE(!contains(name, ".old-"), name);
        CHECK_MESSAGE((!contains(name, ".tmp-") || name == "step_00000005.tmp-999"), name);
    }

    prune_checkpoints(tmp.path, 0);  // keeps all
    CHECK(list_checkpoints(tmp.path).size() == 3);
    prune_checkpoints(tmp.path, 2);
    CHECK_FALSE(fs::exists(root / "step_00000001"));
    CHECK(fs::exists(root / "step_00000002"));
    CHECK(fs::exists(root / "step_00000003"));
    CHECK(fs::exists(root / "step_00000004"));          // incomplete: not ours to judge
    CHECK(fs::exists(root / "step_00000005.tmp-999"));  // may belong to a running process
    CHECK(fs::exists(root / "step_00000006"));
    prune_checkpoints(tmp.path, 1);
    CHECK(list_checkpoints(tmp.path).size() == 1);
    CHECK(latest_checkpoint(tmp.path) == root / "step_00000003");
    prune_checkpoints(tmp.path, 5);
    CHECK(list_checkpoints(tmp.path).size() == 1);
}

// ---- the PyTorch reference reads our folders, and we read its ------------------------------------------

TEST_CASE("PyTorch reference (minimind_ref.py) loads our model folders and computes the same logits") {
    const char* env = std::getenv("MINITRAIN_PYTHON");
    const std::string python = env && *env ? env : "/usr/bin/python3";
    const fs::path script = fs::path(__FILE__).parent_path() / "golden" / "minimind_ref.py";
    if (!fs::exists(python)) {
        MESSAGE("skipped: ", python, " not found (set MINITRAIN_PYTHON to a Python with torch)");
        return;
    }
    TempDir tmp;
    const ModelConfig rc{64, 16};
    Transformer<TinyModel> dense(rc);
    dense.init(71);
    save_pretrained(tmp / "dense", dense);
    Transformer<TinyMoEModel> moe(rc);
    moe.init(72);
    save_pretrained(tmp / "moe", moe);
    Transformer<TinyQKNormModel> qk(rc);  // a Qwen3ForCausalLM folder (MiniMind-3's attention)
    qk.init(74);
    for (auto& p : qk.params().all())  // gains of 1 would not show a q_norm / k_norm mix-up
        if (p.name.ends_with("q_norm.weight") || p.name.ends_with("k_norm.weight"))
            for (std::int64_t i = 0; i < p.shape.numel(); ++i)
                p.var.data.data<float>()[i] = 0.5f + 0.1f * float(i) + (p.name.ends_with("k_norm.weight") ? 0.3f : 0.0f);
    save_pretrained(tmp / "qknorm", qk);

    // Two sequences of 7 tokens; the reference's default targets are the next tokens, the last ignored.
    Rng rng{73};
    auto ids = randint({2, 7}, rng, 0, rc.vocab_size);
    Buffer<CPU> targets(Shape{2, 7}, DType::i32);
    std::string ids_arg;
    for (int b = 0; b < 2; ++b)
        for (int t = 0; t < 7; ++t) {
            const int id = ids.data<std::int32_t>()[b * 7 + t];
            if (t || b) ids_arg += t ? ',' : ';';
            ids_arg += std::to_string(id);
            targets.data<std::int32_t>()[b * 7 + t] = t < 6 ? ids.data<std::int32_t>()[b * 7 + t + 1] : -100;
        }

    // One Python process runs the script's CLI five times through its main(argv), so torch is imported
    // once: eval of our dense folder, eval of our MoE folder, `init` of a PyTorch-written folder, its eval,
    // eval of our q/k-norm (Qwen3) folder.
    // Each prints one JSON line.
    const std::string ids_list = "'--ids', '" + ids_arg + "'";
    std::ostringstream cmd;
    cmd << "'" << python << "' -c \"import sys; sys.path.insert(0, '" << script.parent_path().string()
        << "'); import minimind_ref as m; "
        << "m.main(['eval', '" << (tmp / "dense").string() << "', " << ids_list << "]); "
        << "m.main(['eval', '" << (tmp / "moe").string() << "', " << ids_list << "]); "
        << "m.main(['init', '" << (tmp / "torch").string() << "', '--seed', '5', '--vocab_size', '64', "
        << "'--hidden_size', '32', '--num_hidden_layers', '2', '--num_attention_heads', '4', "
        << "'--num_key_value_heads', '2', '--max_position_embeddings', '16']); "
        << "m.main(['eval', '" << (tmp / "torch").string() << "', " << ids_list << "]); "
        << "m.main(['eval', '" << (tmp / "qknorm").string() << "', " << ids_list << "])\" 2>&1";
    const std::string out = run_python(cmd.str());
    if (contains(out, "No module named 'torch'")) {
        MESSAGE("skipped: ", python, " has no torch module");
        return;
    }
    std::vector<json> results;
    {
        std::istringstream lines(out);
        for (std::string line; std::getline(lines, line);) {
            json j = json::parse(line, nullptr, false);
            if (!j.is_discarded() && j.is_object()) results.push_back(j);
        }
    }
    INFO("python output: ", out);
    REQUIRE(results.size() == 5);
    for (int i : {0, 1, 3, 4}) REQUIRE(results[std::size_t(i)].contains("logits"));
    auto flat = [](const json& logits) {
        std::vector<double> v;
        for (auto& row : logits)
            for (auto& pos : row)
                for (auto& x : pos) v.push_back(x.get<double>());
        return v;
    };
    auto compare = [&](auto& model, const json& ref, const char* what) {
        Graph<CPU> g;
        auto out = model.forward(g, ids, &targets.tensor());
        auto got = to_vector(out.logits->data), want = flat(ref.at("logits"));
        REQUIRE(got.size() == want.size());
        double scale = 0;
        for (double x : want) scale = std::max(scale, std::abs(x));
        check_close(got, want, 1e-4, 1e-4 * scale, std::string(what) + " logits");
        const double ce = ref.at("ce_loss").get<double>();
        CHECK_MESSAGE(to_vector(out.ce->data)[0] == doctest::Approx(ce).epsilon(1e-5), what);
    };
    compare(dense, results[0], "dense (ours, read by PyTorch)");
    compare(moe, results[1], "MoE (ours, read by PyTorch)");
    compare(qk, results[4], "q/k norm, a Qwen3 folder (ours, read by PyTorch)");

    // The PyTorch-written folder (no "minitrain" key, its own key order and extras) loads here.
    Transformer<TinyModel> theirs(load_model_config(tmp / "torch"));
    load_pretrained(tmp / "torch", theirs);
    compare(theirs, results[3], "dense (PyTorch's, read by us)");
}

// ---- crash-safe lifecycle: leftovers, prune, failed writes -------------------------------------------------

TEST_CASE("remove_checkpoint_leftovers: dead processes' temporary folders and files and torn folders go, live ones stay") {
    TempDir tmp;
    Graph<CPU> g;
    Transformer<TinyModel> m(tiny_rc);
    m.init(71);
    Optimizer<AdamW> opt(m.params());
    TrainingState st;
    for (int s = 1; s <= 2; ++s) {
        train(m, opt, g, st, 1);
        save_checkpoint(checkpoint_dir(tmp.path, st.step), m, opt, st);
    }
    const fs::path root = tmp / "checkpoints";
    // A pid that cannot be running: fork a child that exits at once and reap it.
    const pid_t dead = ::fork();
    if (dead == 0) ::_exit(0);
    ::waitpid(dead, nullptr, 0);
    const std::string d = std::to_string(dead), live = std::to_string(::getppid());
    for (const char* kind : {".tmp-", ".old-", ".del-"}) {
        fs::create_directories(root / ("step_00000003" + std::string(kind) + d));
        fs::create_directories(root / ("step_00000004" + std::string(kind) + live));
    }
    fs::create_directories(root / "step_00000005");  // torn: only one of its three files
    spit(root / "step_00000005" / "config.json", "{}");
    spit(root / "step_00000002" / ("model.safetensors.tmp." + d), "partial");
    fs::create_directories(tmp / "final");
    spit(tmp / "final" / ("config.json.tmp." + d), "partial");
    fs::create_directories(tmp / ("final.tmp-" + d));
    spit(tmp / ("metrics.jsonl"), "{}\n");

    const auto notes = remove_checkpoint_leftovers(tmp.path);
    CHECK(notes.size() == 7);
    for (const char* kind : {".tmp-", ".old-", ".del-"}) {
        CHECK_FALSE(fs::exists(root / ("step_00000003" + std::string(kind) + d)));
        CHECK(fs::exists(root / ("step_00000004" + std::string(kind) + live)));  // its process still runs
    }
    CHECK_FALSE(fs::exists(root / "step_00000005"));
    CHECK_FALSE(fs::exists(root / "step_00000002" / ("model.safetensors.tmp." + d)));
    CHECK_FALSE(fs::exists(tmp / "final" / ("config.json.tmp." + d)));
    CHECK_FALSE(fs::exists(tmp / ("final.tmp-" + d)));
    CHECK(fs::exists(tmp / "metrics.jsonl"));
    CHECK(list_checkpoints(tmp.path).size() == 2);
    CHECK(remove_checkpoint_leftovers(tmp.path).empty());

    // Prune deletes whole folders: no step_N is ever seen half deleted, nothing is left behind.
    for (const char* kind : {".tmp-", ".old-", ".del-"}) fs::remove_all(root / ("step_00000004" + std::string(kind) + live));
    prune_checkpoints(tmp.path, 1);
    for (auto& e : fs::directory_iterator(root)) CHECK_MESSAGE(!contains(e.path().filename().string(), ".del-"), e.path());
    CHECK(latest_checkpoint(tmp.path) == root / "step_00000002");
}

TEST_CASE("a checkpoint that cannot be written names the checkpoint folder, not the temporary one") {
    TempDir tmp;
    const fs::path dir = checkpoint_dir(tmp.path, 9);
    std::string msg;
    try {
        minitrain::detail::write_directory_atomic(dir, [&](const fs::path& t) {
            write_file_atomic(t / "model.safetensors", [](std::ostream&) { throw Error("No space left on device"); });
        });
    } catch (const Error& e) {
        msg = e.what();
    }
    INFO(msg);
    CHECK(contains(msg, dir.string() + ": not saved (nothing was written)"));
    CHECK(contains(msg, (dir / "model.safetensors").string()));
    CHECK_FALSE(contains(msg, ".tmp-"));
    CHECK_FALSE(fs::exists(dir));
    for (auto& e : fs::directory_iterator(tmp / "checkpoints")) CHECK_MESSAGE(false, "left behind: ", e.path());
}

TEST_CASE("load_checkpoint: a negative step in the training state is an Error naming the file") {
    TempDir tmp;
    Graph<CPU> g;
    Transformer<TinyModel> m(tiny_rc);
    m.init(73);
    Optimizer<AdamW> opt(m.params());
    TrainingState st;
    train(m, opt, g, st, 1);
    const fs::path dir = checkpoint_dir(tmp.path, 1);
    save_checkpoint(dir, m, opt, st);
    // Rewrite the state with step -5 (metadata only; the tensors stay).
    SafeTensors st_file(dir / "training_state.safetensors");
    auto meta = nlohmann::json::parse(st_file.metadata().at("minitrain.training_state"));
    meta["step"] = -5;
    std::vector<NamedTensor> named;
    for (const auto& [n, t] : opt.state()) named.push_back({"optimizer." + n, t});
    save_safetensors(dir / "training_state.safetensors", named, {{"format", "pt"}, {"minitrain.training_state", meta.dump()}});
    Transformer<TinyModel> r(tiny_rc);
    Optimizer<AdamW> ro(r.params());
    CHECK_THROWS_WITH_AS(load_checkpoint(dir, r, ro),
                         doctest::Contains("training_state.safetensors: training state counters must be >= 0, found step -5"),
                         Error);
}
