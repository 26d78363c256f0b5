// tests/gguf.cpp: the GGUF files export_gguf writes, read back byte by byte: the layout llama.cpp's loader
// requires (u32 counts, aligned contiguous data, ne innermost first), the q/k row permutation, the
// tokenizer keys, dtypes, and the folders that are refused. That llama.cpp really runs the files is
// tests/gguf/llama_cpp_test.mjs (CTest: gguf_llama_cpp).
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include <minitrain/io/gguf.hpp>
#include <minitrain/minitrain.hpp>

#include "support/temp_dir.hpp"

using namespace minitrain;

namespace {

// ---- a small reader, written from the format description in io/gguf.hpp -----------------------------

struct Value {
    gguf::Type type{};
    gguf::Type elem{};  // arrays
    std::uint64_t u = 0;
    double f = 0;
    std::string s;
    std::vector<std::string> strs;
    std::vector<std::int64_t> ints;
};

struct TensorEntry {
    std::vector<std::int64_t> ne;
    std::uint32_t type = 0;
    std::uint64_t offset = 0;
    std::size_t order = 0;
};

struct File {
    std::uint32_t version = 0;
    std::map<std::string, Value> kv;
    std::vector<std::string> kv_order;
    std::map<std::string, TensorEntry> tensors;
    std::vector<std::string> tensor_order;
    std::uint64_t data_start = 0;
    std::string bytes;

    const char* data(const std::string& name) const { return bytes.data() + data_start + tensors.at(name).offset; }
};

struct Cursor {
    const std::string& b;
    std::size_t at = 0;
    template <class T>
    T pod() {
        REQUIRE(at + sizeof(T) <= b.size());
        T v;
        std::memcpy(&v, b.data() + at, sizeof v);
        at += sizeof v;
        return v;
    }
    std::string str() {
        auto n = pod<std::uint64_t>();
        REQUIRE(at + n <= b.size());
        std::string s = b.substr(at, n);
        at += n;
        return s;
    }
};

Value read_value(Cursor& c, gguf::Type t) {
    Value v;
    v.type = t;
    switch (t) {
        case gguf::Type::u8: case gguf::Type::boolean: v.u = c.pod<std::uint8_t>(); break;
        case gguf::Type::u32: v.u = c.pod<std::uint32_t>(); break;
        case gguf::Type::i32: v.u = std::uint64_t(c.pod<std::int32_t>()); break;
        case gguf::Type::u64: v.u = c.pod<std::uint64_t>(); break;
        case gguf::Type::f32: v.f = c.pod<float>(); break;
        case gguf::Type::string: v.s = c.str(); break;
        case gguf::Type::array: {
            v.elem = gguf::Type(c.pod<std::uint32_t>());
            auto n = c.pod<std::uint64_t>();
            for (std::uint64_t i = 0; i < n; ++i) {
                Value e = read_value(c, v.elem);
                if (v.elem == gguf::Type::string) v.strs.push_back(e.s);
                else v.ints.push_back(std::int64_t(std::int32_t(e.u)));
            }
            break;
        }
        default: FAIL("unexpected value type ", int(t));
    }
    return v;
}

File read_gguf(const std::filesystem::path& p) {
    File f;
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    f.bytes = ss.str();
    Cursor c{f.bytes};
    REQUIRE(f.bytes.compare(0, 4, "GGUF") == 0);
    c.at = 4;
    f.version = c.pod<std::uint32_t>();
    auto n_tensors = c.pod<std::uint64_t>();
    auto n_kv = c.pod<std::uint64_t>();
    for (std::uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.str();
        auto t = gguf::Type(c.pod<std::uint32_t>());
        f.kv[key] = read_value(c, t);
        f.kv_order.push_back(key);
    }
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
        std::string name = c.str();
        TensorEntry e;
        auto nd = c.pod<std::uint32_t>();
        for (std::uint32_t d = 0; d < nd; ++d) e.ne.push_back(std::int64_t(c.pod<std::uint64_t>()));
        e.type = c.pod<std::uint32_t>();
        e.offset = c.pod<std::uint64_t>();
        e.order = i;
        f.tensors[name] = e;
        f.tensor_order.push_back(name);
    }
    f.data_start = (c.at + 31) / 32 * 32;
    return f;
}

std::size_t elem_size(std::uint32_t t) { return t == gguf::ggml_f32 ? 4 : 2; }
std::int64_t numel(const std::vector<std::int64_t>& ne) {
    std::int64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
}

/// A tiny trained-looking model folder: TinyModel (2 layers x 32, 4 heads, 2 KV heads), or Net, random
/// weights, a tokenizer trained on a few lines, tokenizer.json beside the weights.
template <class Net = TinyModel>
struct FolderOf {
    mt_test::TempDir tmp;
    std::filesystem::path dir = tmp / "model";
    Tokenizer tok;
    int vocab = 0;

    FolderOf() {
        Tokenizer::TrainOptions o;
        o.vocab_size = 300;
        tok = Tokenizer::train_from_texts({"hello world, hello there", "床前明月光 疑是地上霜", "the the the cat sat"}, o);
        vocab = tok.vocab_size() + 5;  // the embedding has rows the tokenizer lacks: [PAD] entries
        Transformer<Net, CPU> model(ModelConfig{vocab, 64});
        model.init(7);
        if constexpr (Net::qk_norm) {  // gains of 1 would hide a q_norm / k_norm mix-up: make them distinct
            for (auto& p : model.params().all())
                if (p.name.ends_with("_norm.weight") && p.name.find("self_attn") != std::string::npos)
                    for (std::int64_t i = 0; i < p.shape.numel(); ++i)
                        p.var.data.template data<float>()[i] = 1.0f + 0.01f * float(i) + (p.name.find("k_norm") != std::string::npos ? 0.5f : 0.0f);
        }
        save_pretrained(dir, model, HFTokenIds{1, 2, 0});
        tok.save(dir / "tokenizer.json");
    }
};
using Folder = FolderOf<>;

}  // namespace

TEST_CASE("gguf: f32 -> f16 rounds to nearest even, overflows to inf, keeps subnormals") {
    CHECK(gguf::f32_to_f16(1.0f) == 0x3c00);
    CHECK(gguf::f32_to_f16(-2.0f) == 0xc000);
    CHECK(gguf::f32_to_f16(65504.0f) == 0x7bff);
    CHECK(gguf::f32_to_f16(65520.0f) == 0x7c00);
    CHECK(gguf::f32_to_f16(1e-7f) == 0x0002);             // 1e-7 / 2^-24 = 1.68 -> 2
    CHECK(gguf::f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);  // a tie: rounds to the even mantissa
    CHECK(gguf::f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    for (float x : {0.1f, -3.14159f, 1234.5f, 6.1e-5f, 3e-6f})
        CHECK(std::abs(detail::f16_to_f32(gguf::f32_to_f16(x)) - x) <= std::abs(x) * 1e-3f + 6e-8f);
}

TEST_CASE("gguf: header, u32 metadata, aligned contiguous data, ne innermost first") {
    Folder m;
    const auto out = m.tmp / "m.gguf";
    const GgufExportReport rep = export_gguf(m.dir, out);
    File f = read_gguf(out);
    CHECK(f.version == 3);
    CHECK(rep.tensors == 2 + 9 * TinyModel::layers);  // token_embd, output_norm, 9 per block: no output.weight
    CHECK(f.tensors.count("output.weight") == 0);
    CHECK(f.kv.at("general.architecture").s == "llama");
    for (const char* k : {"llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                          "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
                          "general.alignment", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.padding_token_id"}) {
        INFO(k);
        CHECK(f.kv.at(k).type == gguf::Type::u32);
    }
    CHECK(f.kv.at("llama.block_count").u == 2);
    CHECK(f.kv.at("llama.embedding_length").u == 32);
    CHECK(f.kv.at("llama.attention.head_count").u == 4);
    CHECK(f.kv.at("llama.attention.head_count_kv").u == 2);
    CHECK(f.kv.at("llama.feed_forward_length").u == TinyModel::ffn);
    CHECK(f.kv.at("llama.context_length").u == 64);
    CHECK(f.kv.at("llama.rope.freq_base").type == gguf::Type::f32);
    CHECK(f.kv.at("llama.rope.freq_base").f == doctest::Approx(TinyModel::rope_theta));
    CHECK(f.kv.at("llama.attention.layer_norm_rms_epsilon").f == doctest::Approx(TinyModel::rms_eps));

    // Data: in tensor-info order, each at a multiple of 32, no gap beyond the padding, file ends with the last.
    std::uint64_t next = 0;
    for (const auto& name : f.tensor_order) {
        const auto& t = f.tensors.at(name);
        INFO(name);
        CHECK(t.offset == next);
        CHECK(t.offset % 32 == 0);
        next = (t.offset + std::uint64_t(numel(t.ne)) * elem_size(t.type) + 31) / 32 * 32;
    }
    CHECK(f.data_start % 32 == 0);
    CHECK(f.data_start + next == f.bytes.size());

    // An HF weight [out, in] is ne = {in, out} with the same bytes (v_proj is not permuted).
    const auto& v = f.tensors.at("blk.1.attn_v.weight");
    CHECK(v.ne == std::vector<std::int64_t>{32, 2 * TinyModel::head_dim});
    SafeTensors st(m.dir / "model.safetensors");
    const auto& hv = st.info("model.layers.1.self_attn.v_proj.weight");
    CHECK(std::memcmp(f.data("blk.1.attn_v.weight"), hv.data, hv.bytes) == 0);
    CHECK(f.tensors.at("token_embd.weight").ne == std::vector<std::int64_t>{32, m.vocab});
}

TEST_CASE("gguf: q and k rows permuted per head for adjacent-pair RoPE (k with the KV head count)") {
    Folder m;
    const auto out = m.tmp / "m.gguf";
    export_gguf(m.dir, out);
    File f = read_gguf(out);
    SafeTensors st(m.dir / "model.safetensors");
    const int D = TinyModel::head_dim, C = 32;
    for (auto [hf, gg, heads] : {std::tuple{"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 4},
                                 std::tuple{"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", 2}}) {
        INFO(gg);
        const float* src = reinterpret_cast<const float*>(st.info(hf).data);
        const float* dst = reinterpret_cast<const float*>(f.data(gg));
        for (int h = 0; h < heads; ++h)
            for (int i = 0; i < D / 2; ++i) {
                // HF's rotate-half pair (i, i + D/2) of head h becomes the adjacent rows (2i, 2i + 1).
                CHECK(std::memcmp(dst + (h * D + 2 * i) * C, src + (h * D + i) * C, C * 4) == 0);
                CHECK(std::memcmp(dst + (h * D + 2 * i + 1) * C, src + (h * D + D / 2 + i) * C, C * 4) == 0);
            }
    }
}

TEST_CASE("gguf: f16 and bf16 matrices, F32 norms, file_type") {
    Folder m;
    SafeTensors st(m.dir / "model.safetensors");
    for (auto [dt, type, ftype] : {std::tuple{GgufDType::f16, gguf::ggml_f16, gguf::ftype_mostly_f16},
                                   std::tuple{GgufDType::bf16, gguf::ggml_bf16, gguf::ftype_mostly_bf16}}) {
        const auto out = m.tmp / "m.gguf";
        export_gguf(m.dir, out, {.dtype = dt});
        File f = read_gguf(out);
        CHECK(f.kv.at("general.file_type").u == ftype);
        CHECK(f.tensors.at("output_norm.weight").type == gguf::ggml_f32);
        CHECK(f.tensors.at("blk.0.attn_norm.weight").type == gguf::ggml_f32);
        CHECK(f.tensors.at("blk.0.ffn_norm.weight").type == gguf::ggml_f32);
        CHECK(f.tensors.at("blk.0.ffn_up.weight").type == type);
        CHECK(f.tensors.at("token_embd.weight").type == type);
        const float* src = reinterpret_cast<const float*>(st.info("model.layers.0.mlp.up_proj.weight").data);
        const char* dst = f.data("blk.0.ffn_up.weight");
        for (int i = 0; i < 64; ++i) {
            std::uint16_t h;
            std::memcpy(&h, dst + 2 * i, 2);
            CHECK(h == (type == gguf::ggml_f16 ? gguf::f32_to_f16(src[i]) : bf16(src[i]).bits));
        }
    }
}

TEST_CASE("gguf: tokenizer keys: byte-level tokens, \"a b\" merges, control tokens, ids, pre, chat template") {
    Folder m;
    const auto out = m.tmp / "m.gguf";
    export_gguf(m.dir, out);
    File f = read_gguf(out);
    CHECK(f.kv.at("tokenizer.ggml.model").s == "gpt2");
    CHECK(f.kv.at("tokenizer.ggml.pre").s == "gpt-2");
    const auto& tokens = f.kv.at("tokenizer.ggml.tokens").strs;
    const auto& types = f.kv.at("tokenizer.ggml.token_type").ints;
    REQUIRE(int(tokens.size()) == m.vocab);
    REQUIRE(types.size() == tokens.size());
    CHECK(f.kv.at("tokenizer.ggml.token_type").elem == gguf::Type::i32);
    for (int id = 0; id < m.tok.vocab_size(); ++id) CHECK(tokens[std::size_t(id)] == m.tok.token(id));
    CHECK(tokens[0] == "<|endoftext|>");
    CHECK(types[0] == gguf::token_control);
    CHECK(types[1] == gguf::token_control);
    CHECK(types[std::size_t(m.tok.token_id("Ġ"))] == gguf::token_normal);  // byte-level form, not " "
    CHECK(tokens.back() == "[PAD" + std::to_string(m.vocab - 1) + "]");
    CHECK(types.back() == gguf::token_unused);
    const auto& merges = f.kv.at("tokenizer.ggml.merges").strs;
    REQUIRE(merges.size() == m.tok.data().merges.size());
    auto [a, b] = m.tok.data().merges[0];
    CHECK(merges[0] == std::string(m.tok.token(a)) + " " + std::string(m.tok.token(b)));
    CHECK(f.kv.at("tokenizer.ggml.bos_token_id").u == 1);
    CHECK(f.kv.at("tokenizer.ggml.eos_token_id").u == 2);
    CHECK(f.kv.at("tokenizer.ggml.padding_token_id").u == 0);
    CHECK(f.kv.at("tokenizer.ggml.add_bos_token").u == 0);
    CHECK(f.kv.at("tokenizer.chat_template").s == default_chat_template);

    // tokenizer_config.json's chat template and special tokens win.
    mt_test::write_text(m.dir / "tokenizer_config.json",
                        R"({"chat_template": "{{ messages }}", "bos_token": "<|im_end|>", "eos_token": "<|endoftext|>"})");
    export_gguf(m.dir, out);
    File g = read_gguf(out);
    CHECK(g.kv.at("tokenizer.chat_template").s == "{{ messages }}");
    CHECK(g.kv.at("tokenizer.ggml.bos_token_id").u == 2);
    CHECK(g.kv.at("tokenizer.ggml.eos_token_id").u == 0);
}

TEST_CASE("gguf: an untied lm_head goes out as output.weight; a duplicate of the embedding does not") {
    Folder m;
    SafeTensors st(m.dir / "model.safetensors");
    std::vector<std::vector<float>> keep;
    std::vector<NamedTensor> ts;
    for (const auto& n : st.names()) {
        keep.push_back(gguf::read_f32(st, n));
        Tensor t;
        t.ptr = keep.back().data();
        t.shape.rank = int(st.info(n).shape.size());
        for (int i = 0; i < t.shape.rank; ++i) t.shape.dims[std::size_t(i)] = st.info(n).shape[std::size_t(i)];
        t.dtype = DType::f32;
        t.device = Device::cpu;
        ts.push_back({n, t});
    }
    auto with_head = [&](bool same) {
        std::vector<float> head = gguf::read_f32(st, "model.embed_tokens.weight");
        if (!same) head[0] += 1;
        keep.push_back(head);
        auto all = ts;
        Tensor t = all[0].tensor;
        for (auto& nt : all)
            if (nt.name == "model.embed_tokens.weight") t = nt.tensor;
        t.ptr = keep.back().data();
        all.push_back({"lm_head.weight", t});
        save_safetensors(m.tmp / "w.safetensors", all);
    };
    const auto out = m.tmp / "m.gguf";
    for (bool same : {true, false}) {
        with_head(same);
        std::filesystem::copy_file(m.tmp / "w.safetensors", m.dir / "model.safetensors",
                                   std::filesystem::copy_options::overwrite_existing);
        export_gguf(m.dir, out);
        CHECK(read_gguf(out).tensors.count("output.weight") == (same ? 0u : 1u));
    }
}

TEST_CASE("gguf: folders llama.cpp could not run are refused, naming the field") {
    Folder m;
    const auto out = m.tmp / "m.gguf";
    auto cfg = gguf::read_json(m.dir / "config.json");
    auto write_cfg = [&](nlohmann::json j) { mt_test::write_text(m.dir / "config.json", j.dump()); };
    auto j = cfg;
    j["use_moe"] = true;
    write_cfg(j);
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("use_moe is true in a \"llama\" config: MiniMind2's MoE"),
                         Error);
    j = cfg;
    j["rope_scaling"] = {{"type", "linear"}};
    write_cfg(j);
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("rope_scaling"), Error);
    j = cfg;
    j["vocab_size"] = 10;
    write_cfg(j);
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("vocab_size is 10"), Error);
    j = cfg;
    j.erase("hidden_size");
    write_cfg(j);
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("hidden_size is missing"), Error);
    write_cfg(cfg);
    std::filesystem::remove(m.dir / "tokenizer.json");
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("tokenizer.json: no such file"), Error);
    CHECK_FALSE(std::filesystem::exists(out));
    CHECK_THROWS_WITH_AS(parse_gguf_dtype("q4"), doctest::Contains("expected f32, f16 or bf16"), Error);
}

TEST_CASE("gguf: a folder of transformers shards (model.safetensors.index.json) exports as the single file does") {
    Folder m;
    const auto one = m.tmp / "one.gguf", sharded = m.tmp / "sharded.gguf";
    export_gguf(m.dir, one);
    SafeTensors st(m.dir / "model.safetensors");
    std::vector<std::vector<float>> keep;
    std::vector<NamedTensor> parts[2];
    nlohmann::json map = nlohmann::json::object();
    for (std::size_t i = 0; i < st.names().size(); ++i) {
        const std::string& n = st.names()[i];
        keep.push_back(gguf::read_f32(st, n));
        Tensor t;
        t.ptr = keep.back().data();
        t.shape.rank = int(st.info(n).shape.size());
        for (int d = 0; d < t.shape.rank; ++d) t.shape.dims[std::size_t(d)] = st.info(n).shape[std::size_t(d)];
        t.dtype = DType::f32;
        t.device = Device::cpu;
        const int shard = i % 2;
        parts[shard].push_back({n, t});
        map[n] = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
    }
    save_safetensors(m.dir / "model-00001-of-00002.safetensors", parts[0]);
    save_safetensors(m.dir / "model-00002-of-00002.safetensors", parts[1]);
    mt_test::write_text(m.dir / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
    std::filesystem::remove(m.dir / "model.safetensors");
    export_gguf(m.dir, sharded);
    CHECK(read_gguf(one).bytes == read_gguf(sharded).bytes);
    mt_test::write_text(m.dir / "model.safetensors.index.json", R"({"weight_map": {"x": "../evil.safetensors"}})");
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, sharded), doctest::Contains("is not a file of the folder"), Error);
}

TEST_CASE("gguf: a q/k-norm model (MiniMind-3, Qwen3 folder) is arch qwen3: q and k unpermuted, attn_q_norm / attn_k_norm") {
    FolderOf<TinyQKNormModel> m;
    CHECK(gguf::read_json(m.dir / "config.json").at("model_type") == "qwen3");
    const auto out = m.tmp / "m.gguf";
    const GgufExportReport rep = export_gguf(m.dir, out, {.dtype = GgufDType::f16});
    File f = read_gguf(out);
    CHECK(f.kv.at("general.architecture").s == "qwen3");
    CHECK(rep.tensors == 2 + 11 * TinyQKNormModel::layers);  // 9 per block + the two head norms
    for (const char* k : {"qwen3.context_length", "qwen3.embedding_length", "qwen3.block_count", "qwen3.feed_forward_length",
                          "qwen3.attention.head_count", "qwen3.attention.head_count_kv", "qwen3.attention.key_length"}) {
        INFO(k);
        CHECK(f.kv.at(k).type == gguf::Type::u32);
    }
    CHECK(f.kv.at("qwen3.attention.head_count_kv").u == 2);
    CHECK(f.kv.at("qwen3.rope.freq_base").f == doctest::Approx(TinyQKNormModel::rope_theta));
    for (const auto& [k, v] : f.kv) CHECK_MESSAGE(k.rfind("llama.", 0) != 0, k);
    SafeTensors st(m.dir / "model.safetensors");
    const int D = TinyQKNormModel::head_dim, C = 32;
    for (int l = 0; l < TinyQKNormModel::layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".self_attn.", g = "blk." + std::to_string(l) + ".";
        for (auto [hf, gg] : {std::pair{"q_norm.weight", "attn_q_norm.weight"}, std::pair{"k_norm.weight", "attn_k_norm.weight"}}) {
            INFO(gg);
            const TensorEntry& e = f.tensors.at(g + gg);
            CHECK(e.type == gguf::ggml_f32);  // norms stay F32
            CHECK(e.ne == std::vector<std::int64_t>{D});
            CHECK(std::memcmp(f.data(g + gg), st.info(p + hf).data, std::size_t(D) * 4) == 0);
        }
        // rotate-half RoPE in llama.cpp's qwen3 too: rows as HF has them (f16 of each value, in order).
        for (auto [hf, gg, rows] : {std::tuple{"q_proj.weight", "attn_q.weight", 4 * D}, std::tuple{"k_proj.weight", "attn_k.weight", 2 * D}}) {
            INFO(gg);
            const float* src = reinterpret_cast<const float*>(st.info(p + hf).data);
            const char* dst = f.data(g + gg);
            bool same = true;
            for (int i = 0; i < rows * C; ++i) {
                std::uint16_t h;
                std::memcpy(&h, dst + 2 * i, 2);
                same = same && h == gguf::f32_to_f16(src[i]);
            }
            CHECK(same);
        }
    }
}

TEST_CASE("gguf: MiniMind-3's MoE (a Qwen3-MoE folder) is arch qwen3moe: router, experts stacked per layer") {
    using Net = TinyMoE3Model;
    FolderOf<Net> m;
    const auto cfg = gguf::read_json(m.dir / "config.json");
    REQUIRE(cfg.at("model_type") == "qwen3_moe");
    const auto out = m.tmp / "m.gguf";
    const GgufExportReport rep = export_gguf(m.dir, out);
    File f = read_gguf(out);
    CHECK(f.kv.at("general.architecture").s == "qwen3moe");
    // per block: 2 norms + q/k/v/o + q_norm/k_norm + router + 3 stacked expert tensors; + embedding + final norm
    CHECK(rep.tensors == 2 + 12 * Net::layers);
    for (auto [k, want] : {std::pair{"qwen3moe.expert_count", Net::experts}, std::pair{"qwen3moe.expert_used_count", Net::top_k},
                           std::pair{"qwen3moe.expert_feed_forward_length", Net::ffn},
                           std::pair{"qwen3moe.feed_forward_length", Net::ffn}, std::pair{"qwen3moe.block_count", Net::layers}}) {
        INFO(k);
        CHECK(f.kv.at(k).type == gguf::Type::u32);
        CHECK(f.kv.at(k).u == std::uint64_t(want));
    }
    for (const auto& [k, v] : f.kv) CHECK_MESSAGE(k.rfind("qwen3.", 0) != 0, k);
    SafeTensors st(m.dir / "model.safetensors");
    const std::int64_t C = Net::hidden, Fe = Net::ffn, E = Net::experts;
    for (int l = 0; l < Net::layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".mlp.", g = "blk." + std::to_string(l) + ".";
        CHECK(f.tensors.at(g + "ffn_gate_inp.weight").ne == std::vector<std::int64_t>{C, E});
        CHECK(std::memcmp(f.data(g + "ffn_gate_inp.weight"), st.info(p + "gate.weight").data, std::size_t(E * C) * 4) == 0);
        for (auto [proj, gg, ne] : {std::tuple{"gate_proj", "ffn_gate_exps.weight", std::vector<std::int64_t>{C, Fe, E}},
                                    std::tuple{"up_proj", "ffn_up_exps.weight", std::vector<std::int64_t>{C, Fe, E}},
                                    std::tuple{"down_proj", "ffn_down_exps.weight", std::vector<std::int64_t>{Fe, C, E}}}) {
            INFO(gg);
            CHECK(f.tensors.at(g + gg).ne == ne);
            CHECK(f.tensors.at(g + gg).type == gguf::ggml_f32);
            const std::size_t slice = std::size_t(C * Fe) * 4;  // expert e's matrix is slice e, as HF stores it
            for (std::int64_t e = 0; e < E; ++e)
                CHECK(std::memcmp(f.data(g + gg) + std::size_t(e) * slice,
                                  st.info(p + "experts." + std::to_string(e) + "." + proj + ".weight").data, slice) == 0);
        }
        CHECK_FALSE(f.tensors.count(g + "ffn_gate.weight"));
    }
    // llama.cpp's qwen3moe renormalizes the top-k weights whatever the file says: a folder that does not is refused.
    auto j = cfg;
    j["norm_topk_prob"] = false;
    mt_test::write_text(m.dir / "config.json", j.dump());
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("norm_topk_prob must be true"), Error);
    j = cfg;
    j["mlp_only_layers"] = nlohmann::json::array({1});
    mt_test::write_text(m.dir / "config.json", j.dump());
    CHECK_THROWS_WITH_AS(export_gguf(m.dir, out), doctest::Contains("every layer must have experts"), Error);
}
