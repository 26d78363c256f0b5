// minitrain/io/gguf.hpp
// GGUF export: a model folder (config.json + model.safetensors + tokenizer.json) -> one GGUF v3 file that
// llama.cpp (and so ollama, LM Studio, node-llama-cpp) loads and runs, tokenizer and chat template inside.
//
//   export_gguf("out/final", "model.gguf", {.dtype = GgufDType::f16});
//
// The file (little-endian):
//   "GGUF" | u32 version 3 | u64 tensor count | u64 key count
//   keys:    string key | u32 value type | value        (string = u64 length + bytes, no terminator;
//                                                         array = u32 element type + u64 count + elements)
//   tensors: string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset into the data
//   padding to general.alignment (32), then the tensor data, each tensor starting on a multiple of it.
//
// What llama.cpp's loader decides on (checked against a real llama.cpp by tests/gguf/, which runs
// node-llama-cpp's prebuilt llama.cpp on exported models):
//   - sizes and counts in the metadata are u32 (a u64 llama.block_count is refused); floats are f32.
//   - ne is written innermost first: an HF weight [out, in] (row-major) is ne = {in, out}, same bytes.
//   - arch "llama" applies RoPE to adjacent pairs (x[2i], x[2i+1]); HF Llama rotates halves (x[i],
//     x[i + D/2]). The rows of q_proj and k_proj are permuted per head so that HF's pair (i, i + D/2)
//     becomes rows (2i, 2i+1), exactly as convert_hf_to_gguf.py does; k with the KV head count.
//   - tokenizer.ggml.model "gpt2" (byte-level BPE): tokens as tokenizer.json spells them ("Ġthe"),
//     merges as "a b" strings, token_type 3 (control) for special added tokens (<|im_start|>), else they
//     are tokenized as text, 4 (user-defined) for other added tokens (<think>), 5 (unused) for ids the
//     tokenizer lacks; tokenizer.ggml.pre "gpt-2" for the plain ByteLevel pre-tokenizer (the GPT-2 regex),
//     "llama-bpe" for a Split with the GPT-4 regex; bos / eos / padding ids written explicitly (without
//     them llama.cpp falls back to GPT-2's ids), add_bos_token false (MiniMind never adds one).
//   - 1-D tensors (the RMSNorm weights) stay F32 whatever the dtype; tied embeddings: no output.weight.
//   - a model with q/k norm (MiniMind-3, a Qwen3ForCausalLM folder) is arch "qwen3": the same keys under
//     "qwen3.", rotate-half RoPE (NEOX) so q_proj / k_proj go out unpermuted, and blk.N.attn_q_norm /
//     attn_k_norm (F32, D values) as llama.cpp's Qwen3 converter writes them.
//   - an MoE model with q/k norm and MiniMind-3's router (a Qwen3MoeForCausalLM folder, model_type
//     qwen3_moe) is arch "qwen3moe": qwen3's tensors, and per layer ffn_gate_inp (ne {C, E}: the router)
//     and the experts stacked into ffn_gate_exps / ffn_up_exps (ne {C, Fe, E}) and ffn_down_exps
//     (ne {Fe, C, E}); keys expert_count, expert_used_count, expert_feed_forward_length. llama.cpp's
//     qwen3moe always renormalizes the top-k weights (a top-1 weight is 1), as MiniMind-3 does, so a folder
//     with norm_topk_prob false is refused. MiniMind2's MoE (shared experts, top-1 weight = score) has no
//     llama.cpp architecture and is refused.
//
// Dimension legend: V = vocabulary rows, C = hidden, H / KV = query / key-value heads, D = head_dim,
// F = intermediate (FFN) size, E = experts, Fe = an expert's FFN size.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "atomic_file.hpp"
#include "hf_folder.hpp"  // default_chat_template
#include "json.hpp"
#include "safetensors.hpp"

namespace minitrain {

/// Element type of the exported 2-D weights (1-D tensors are always F32).
enum class GgufDType { f32, f16, bf16 };

inline GgufDType parse_gguf_dtype(const std::string& s) {
    if (s == "f32") return GgufDType::f32;
    if (s == "f16") return GgufDType::f16;
    if (s == "bf16") return GgufDType::bf16;
    detail::fail("gguf dtype \"", s, "\": expected f32, f16 or bf16");
}

struct GgufExportOptions {
    GgufDType dtype = GgufDType::f32;
    std::filesystem::path tokenizer;  ///< empty: DIR/tokenizer.json
    std::string name;                 ///< general.name; empty: the folder's name
    std::string chat_template;        ///< empty: tokenizer_config.json's, else ChatML (default_chat_template)
};

/// What export_gguf wrote.
struct GgufExportReport {
    std::uintmax_t bytes = 0;
    int tensors = 0;
    int vocab = 0;
    double seconds = 0;
    std::string pre;  ///< tokenizer.ggml.pre
    int bos = -1, eos = -1, pad = -1;
};

namespace gguf {

// ---- the format ----------------------------------------------------------------------------------

// Value types of the metadata (gguf.h: enum gguf_type).
enum class Type : std::uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
    u64 = 10, i64 = 11, f64 = 12
};

// Tensor element types (ggml.h: enum ggml_type) and general.file_type (llama.h: enum llama_ftype).
inline constexpr std::uint32_t ggml_f32 = 0, ggml_f16 = 1, ggml_bf16 = 30;
inline constexpr std::uint32_t ftype_all_f32 = 0, ftype_mostly_f16 = 1, ftype_mostly_bf16 = 32;

// tokenizer.ggml.token_type (llama.h: enum llama_token_type).
inline constexpr std::int32_t token_normal = 1, token_control = 3, token_user_defined = 4, token_unused = 5;

inline constexpr std::uint32_t version = 3;
inline constexpr std::uint64_t alignment = 32;

using detail::f32_to_f16;  // io/safetensors.hpp

/// A GGUF file being assembled in memory order: metadata, then tensors, then write().
class Writer {
public:
    void add_u32(const std::string& key, std::uint32_t v) { kv(key, Type::u32).pod(v); }
    void add_i32(const std::string& key, std::int32_t v) { kv(key, Type::i32).pod(v); }
    void add_f32(const std::string& key, float v) { kv(key, Type::f32).pod(v); }
    void add_bool(const std::string& key, bool v) { kv(key, Type::boolean).pod(std::uint8_t(v ? 1 : 0)); }
    void add_string(const std::string& key, const std::string& v) { kv(key, Type::string).str(v); }
    void add_strings(const std::string& key, const std::vector<std::string>& v) {
        kv(key, Type::array).pod(std::uint32_t(Type::string)).pod(std::uint64_t(v.size()));
        for (const auto& s : v) str(s);
    }
    void add_i32s(const std::string& key, const std::vector<std::int32_t>& v) {
        kv(key, Type::array).pod(std::uint32_t(Type::i32)).pod(std::uint64_t(v.size()));
        for (auto x : v) pod(x);
    }

    /// A tensor: ne innermost first, `data` its bytes (already in `type`).
    void add_tensor(const std::string& name, std::vector<std::int64_t> ne, std::uint32_t type, std::string data) {
        for (const auto& t : tensors_) MT_CHECK(t.name != name, "gguf: tensor \"", name, "\" added twice");
        tensors_.push_back({name, std::move(ne), type, std::move(data)});
    }

    std::size_t tensor_count() const { return tensors_.size(); }

    /// Writes the whole file atomically (temporary file + rename).
    void write(const std::filesystem::path& path) const {
        std::string head;
        auto put = [&](const void* p, std::size_t n) { head.append(static_cast<const char*>(p), n); };
        auto put_u32 = [&](std::uint32_t v) { put(&v, 4); };
        auto put_u64 = [&](std::uint64_t v) { put(&v, 8); };
        put("GGUF", 4);
        put_u32(version);
        put_u64(tensors_.size());
        put_u64(n_kv_);
        head += kv_;
        std::uint64_t offset = 0;  // relative to the start of the data section
        for (const auto& t : tensors_) {
            put_u64(t.name.size());
            head += t.name;
            put_u32(std::uint32_t(t.ne.size()));
            for (auto d : t.ne) put_u64(std::uint64_t(d));
            put_u32(t.type);
            put_u64(offset);
            offset += pad(t.data.size());
        }
        head.append(pad(head.size()) - head.size(), '\0');
        write_file_atomic(path, [&](std::ostream& os) {
            os.write(head.data(), std::streamsize(head.size()));
            static const char zeros[alignment] = {};
            for (const auto& t : tensors_) {
                os.write(t.data.data(), std::streamsize(t.data.size()));
                os.write(zeros, std::streamsize(pad(t.data.size()) - t.data.size()));
            }
        });
    }

private:
    struct PendingTensor {
        std::string name;
        std::vector<std::int64_t> ne;
        std::uint32_t type;
        std::string data;
    };

    static std::uint64_t pad(std::uint64_t n) { return (n + alignment - 1) / alignment * alignment; }

    Writer& kv(const std::string& key, Type t) {
        MT_CHECK(keys_.emplace(key, 0).second, "gguf: key \"", key, "\" written twice");
        ++n_kv_;
        str(key);
        return pod(std::uint32_t(t));
    }
    template <class T>
    Writer& pod(T v) {
        kv_.append(reinterpret_cast<const char*>(&v), sizeof v);
        return *this;
    }
    Writer& str(const std::string& s) {
        pod(std::uint64_t(s.size()));
        kv_ += s;
        return *this;
    }

    std::string kv_;  // the encoded key/value section
    std::uint64_t n_kv_ = 0;
    std::map<std::string, int> keys_;
    std::vector<PendingTensor> tensors_;
};

// ---- weights -------------------------------------------------------------------------------------

/// The rows of an HF q_proj / k_proj weight [heads * D, C] reordered for llama.cpp's adjacent-pair RoPE:
/// within each head, output row 2i + j is input row j * D/2 + i (i < D/2, j in {0, 1}).
inline std::vector<float> permute_rope_rows(const std::vector<float>& w, std::int64_t heads, std::int64_t cols) {
    const std::int64_t rows = std::int64_t(w.size()) / cols;
    MT_CHECK(heads > 0 && rows % (2 * heads) == 0, "gguf: cannot permute ", rows, " rows for ", heads,
             " heads of an even size");
    const std::int64_t D = rows / heads, half = D / 2;
    std::vector<float> out(w.size());
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < half; ++i)
            for (std::int64_t j = 0; j < 2; ++j)
                std::memcpy(&out[std::size_t((h * D + 2 * i + j) * cols)], &w[std::size_t((h * D + j * half + i) * cols)],
                            std::size_t(cols) * sizeof(float));
    return out;
}

/// f32 values encoded as `type` (f32, f16 or bf16) bytes.
inline std::string encode(const std::vector<float>& v, std::uint32_t type) {
    std::string out;
    if (type == ggml_f32) {
        out.assign(reinterpret_cast<const char*>(v.data()), v.size() * 4);
        return out;
    }
    out.resize(v.size() * 2);
    for (std::size_t i = 0; i < v.size(); ++i) {
        const std::uint16_t h = type == ggml_f16 ? f32_to_f16(v[i]) : bf16(v[i]).bits;
        std::memcpy(&out[i * 2], &h, 2);
    }
    return out;
}

inline std::vector<float> read_f32(const SafeTensors& st, const std::string& name) {
    const auto& info = st.info(name);
    std::int64_t n = 1;
    for (auto d : info.shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    Tensor t;
    t.ptr = v.data();
    t.shape = Shape{};
    t.shape.rank = int(info.shape.size());
    for (std::size_t i = 0; i < info.shape.size(); ++i) t.shape.dims[i] = info.shape[i];
    t.dtype = DType::f32;
    t.device = Device::cpu;
    st.read_into(name, t);
    return v;
}

// ---- the folder ----------------------------------------------------------------------------------

/// A required positive integer of config.json.
inline std::int64_t cfg_int(const nlohmann::json& cfg, const char* key, const std::string& where,
                            std::optional<std::int64_t> fallback = {}) {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) {
        MT_CHECK(fallback.has_value(), where, ": ", key, " is missing (GGUF export needs it)");
        return *fallback;
    }
    MT_CHECK(it->is_number_integer() && it->get<std::int64_t>() > 0, where, ": ", key,
             " must be a positive integer, found ", it->dump());
    return it->get<std::int64_t>();
}

inline double cfg_real(const nlohmann::json& cfg, const char* key, double fallback, const std::string& where) {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) return fallback;
    MT_CHECK(it->is_number(), where, ": ", key, " must be a number, found ", it->dump());
    return it->get<double>();
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    MT_CHECK(bool(f), p.string(), ": cannot open for reading");
    std::stringstream ss;
    ss << f.rdbuf();
    try {
        return nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
        detail::fail(p.string(), ": not valid JSON: ", e.what());
    }
}

/// The id of a token named in tokenizer_config.json (a string, or {"content": ...}), if the tokenizer has it.
inline std::optional<int> named_token(const Tokenizer& tok, const nlohmann::json& tc, const char* key) {
    auto it = tc.find(key);
    if (it == tc.end() || it->is_null()) return {};
    std::string s;
    if (it->is_string()) s = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) s = (*it)["content"].get<std::string>();
    else return {};
    if (auto id = tok.find(s)) return int(*id);
    return {};
}

using FolderTensors = SafeTensorsFolder;  // io/safetensors.hpp

}  // namespace gguf

/// Writes `out` (GGUF v3, arch "llama", "qwen3" for a model with q_norm / k_norm, "qwen3moe" for a Qwen3-MoE
/// folder) from the model folder `dir`: config.json (LlamaForCausalLM, Qwen3ForCausalLM or Qwen3MoeForCausalLM keys),
/// model.safetensors or transformers' shards with model.safetensors.index.json (F32, BF16 or F16), the tokenizer (options.tokenizer or dir/tokenizer.json), with
/// dir/tokenizer_config.json's chat_template and special tokens when the file is there. Token ids, in
/// order: tokenizer_config.json's bos/eos/pad tokens, config.json's *_token_id, then <|im_start|>,
/// <|im_end|>, <|endoftext|>. Errors name the file and the field; nothing is written on Error.
inline GgufExportReport export_gguf(const std::filesystem::path& dir, const std::filesystem::path& out,
                                    const GgufExportOptions& options = {}) {
    namespace fs = std::filesystem;
    const auto t0 = std::chrono::steady_clock::now();
    const fs::path cfg_path = dir / "config.json";
    const std::string where = cfg_path.string();
    const nlohmann::json cfg = detail::with_legacy_rope(gguf::read_json(cfg_path));  // transformers 5 rope_parameters
    MT_CHECK(cfg.is_object(), where, ": must be a JSON object");

    // ---- architecture --------------------------------------------------------------------------
    const std::string model_type = cfg.value("model_type", std::string("llama"));
    const bool qwen3_moe = model_type == "qwen3_moe";
    MT_CHECK(qwen3_moe || !cfg.value("use_moe", false), where, ": use_moe is true in a \"", model_type,
             "\" config: MiniMind2's MoE (shared experts, a top-1 weight equal to its score) has no llama.cpp "
             "architecture; MoE models are exported as Qwen3-MoE folders (q/k norm, MiniMind-3's router)");
    MT_CHECK(model_type == "llama" || model_type == "minimind" || model_type == "qwen3" || qwen3_moe, where,
             ": model_type is \"", model_type, "\", GGUF export implements \"llama\", \"qwen3\", \"qwen3_moe\" (and dense "
             "\"minimind\")");
    MT_CHECK(cfg.value("hidden_act", std::string("silu")) == "silu", where, ": hidden_act must be \"silu\"");
    MT_CHECK(!cfg.value("attention_bias", false) && !cfg.value("mlp_bias", false), where,
             ": attention_bias / mlp_bias: biases are not exported");
    MT_CHECK(!cfg.contains("rope_scaling") || cfg["rope_scaling"].is_null(), where, ": rope_scaling is ",
             cfg["rope_scaling"].dump(), ", only plain RoPE is exported");
    const std::int64_t V = gguf::cfg_int(cfg, "vocab_size", where);
    const std::int64_t C = gguf::cfg_int(cfg, "hidden_size", where);
    const std::int64_t L = gguf::cfg_int(cfg, "num_hidden_layers", where);
    const std::int64_t H = gguf::cfg_int(cfg, "num_attention_heads", where);
    const std::int64_t KV = gguf::cfg_int(cfg, "num_key_value_heads", where, H);
    const std::int64_t D = gguf::cfg_int(cfg, "head_dim", where, C / H);
    const std::int64_t F = gguf::cfg_int(cfg, "intermediate_size", where);
    const std::int64_t ctx = gguf::cfg_int(cfg, "max_position_embeddings", where, 2048);
    const double eps = gguf::cfg_real(cfg, "rms_norm_eps", 1e-6, where);
    const double theta = gguf::cfg_real(cfg, "rope_theta", 10000.0, where);
    MT_CHECK(H % KV == 0 && D % 2 == 0, where, ": num_attention_heads (", H, ") must be a multiple of num_key_value_heads (",
             KV, ") and head_dim (", D, ") even");
    std::int64_t E = 0, K = 0, Fe = 0;  // Qwen3-MoE: experts, experts per token, an expert's FFN size
    if (qwen3_moe) {
        E = gguf::cfg_int(cfg, "num_experts", where);
        K = gguf::cfg_int(cfg, "num_experts_per_tok", where);
        Fe = gguf::cfg_int(cfg, "moe_intermediate_size", where);
        MT_CHECK(K >= 1 && K <= E, where, ": num_experts_per_tok (", K, ") must be in [1, num_experts = ", E, "]");
        MT_CHECK(cfg.value("norm_topk_prob", false), where, ": norm_topk_prob must be true: llama.cpp's qwen3moe "
                 "always renormalizes the top-k router weights");
        MT_CHECK(gguf::cfg_int(cfg, "decoder_sparse_step", where, 1) == 1 &&
                     (!cfg.contains("mlp_only_layers") || cfg["mlp_only_layers"] == nlohmann::json::array()),
                 where, ": decoder_sparse_step / mlp_only_layers: every layer must have experts");
    }

    // ---- tokenizer -----------------------------------------------------------------------------
    const fs::path tok_path = options.tokenizer.empty() ? dir / "tokenizer.json" : options.tokenizer;
    MT_CHECK(fs::exists(tok_path), tok_path.string(), ": no such file (GGUF needs the tokenizer; pass its path)");
    const Tokenizer tok = Tokenizer::load(tok_path);
    const tok::TokenizerData& td = tok.data();
    MT_CHECK(td.n_ids <= V, tok_path.string(), ": the tokenizer has ", td.n_ids, " ids, the model's vocab_size is ", V);
    nlohmann::json tc = nlohmann::json::object();
    if (fs::exists(dir / "tokenizer_config.json")) tc = gguf::read_json(dir / "tokenizer_config.json");

    GgufExportReport rep;
    std::string pre;
    switch (td.pre_kind) {
        case tok::PreTokenizerKind::byte_level_regex:
            MT_CHECK(!td.pre.add_prefix_space, tok_path.string(), ": add_prefix_space true has no llama.cpp pre-tokenizer");
            pre = "gpt-2";
            break;
        case tok::PreTokenizerKind::split_then_byte_level:
            MT_CHECK(td.pre.regex.pattern() == tok::gpt4_pattern, tok_path.string(),
                     ": the Split pattern is not GPT-4's; llama.cpp knows it under no tokenizer.ggml.pre name");
            pre = "llama-bpe";  // llama.cpp's LLAMA3 pre-tokenizer: the same regex
            break;
        default: detail::fail(tok_path.string(), ": a ByteLevel pre-tokenizer without a regex has no llama.cpp equivalent");
    }
    rep.pre = pre;

    std::vector<std::string> tokens(static_cast<std::size_t>(V));
    std::vector<std::int32_t> types(static_cast<std::size_t>(V), gguf::token_unused);
    for (std::int64_t id = 0; id < V; ++id) {
        if (id < td.n_ids && td.id_valid[std::size_t(id)]) {
            tokens[std::size_t(id)] = td.id_text[std::size_t(id)];
            types[std::size_t(id)] = gguf::token_normal;
        } else {
            tokens[std::size_t(id)] = "[PAD" + std::to_string(id) + "]";
        }
    }
    for (const auto& a : td.added) types[std::size_t(a.id)] = a.special ? gguf::token_control : gguf::token_user_defined;
    std::vector<std::string> merges;
    merges.reserve(td.merges.size());
    for (auto [a, b] : td.merges) merges.push_back(td.model_vocab[std::size_t(a)] + " " + td.model_vocab[std::size_t(b)]);

    auto pick = [&](const char* tc_key, const char* cfg_key, const char* fallback) -> int {
        if (auto id = gguf::named_token(tok, tc, tc_key)) return *id;
        if (cfg.contains(cfg_key) && cfg[cfg_key].is_number_integer()) return cfg[cfg_key].get<int>();
        if (auto id = tok.find(fallback)) return int(*id);
        return -1;
    };
    rep.bos = pick("bos_token", "bos_token_id", "<|im_start|>");
    rep.eos = pick("eos_token", "eos_token_id", "<|im_end|>");
    rep.pad = pick("pad_token", "pad_token_id", "<|endoftext|>");
    std::string chat_template = options.chat_template;
    if (chat_template.empty() && tc.contains("chat_template") && tc["chat_template"].is_string())
        chat_template = tc["chat_template"].get<std::string>();
    if (chat_template.empty()) chat_template = default_chat_template;

    // ---- metadata ------------------------------------------------------------------------------
    gguf::Writer w;
    // A model with q_norm / k_norm (model_type qwen3, or a MiniMind folder that has the tensors) is llama.cpp's
    // qwen3: rotate-half RoPE (NEOX), so q and k are written as they are, plus attn_q_norm / attn_k_norm.
    const gguf::FolderTensors st(dir);
    const bool qk_norm = model_type == "qwen3" || qwen3_moe || st.contains("model.layers.0.self_attn.q_norm.weight");
    const std::string arch = qwen3_moe ? "qwen3moe" : qk_norm ? "qwen3" : "llama";
    const std::uint32_t wtype = options.dtype == GgufDType::f16 ? gguf::ggml_f16
                                : options.dtype == GgufDType::bf16 ? gguf::ggml_bf16 : gguf::ggml_f32;
    std::string name = options.name;
    if (name.empty()) name = fs::absolute(dir).lexically_normal().filename().string();
    if (name.empty()) name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
    w.add_string("general.architecture", arch);
    w.add_string("general.name", name.empty() ? "minitrain" : name);
    w.add_u32("general.alignment", std::uint32_t(gguf::alignment));
    w.add_u32("general.file_type", options.dtype == GgufDType::f16 ? gguf::ftype_mostly_f16
                                   : options.dtype == GgufDType::bf16 ? gguf::ftype_mostly_bf16 : gguf::ftype_all_f32);
    w.add_u32("general.quantization_version", 2);
    w.add_u32(arch + ".vocab_size", std::uint32_t(V));
    w.add_u32(arch + ".context_length", std::uint32_t(ctx));
    w.add_u32(arch + ".embedding_length", std::uint32_t(C));
    w.add_u32(arch + ".block_count", std::uint32_t(L));
    w.add_u32(arch + ".feed_forward_length", std::uint32_t(F));
    if (qwen3_moe) {
        w.add_u32(arch + ".expert_count", std::uint32_t(E));
        w.add_u32(arch + ".expert_used_count", std::uint32_t(K));
        w.add_u32(arch + ".expert_feed_forward_length", std::uint32_t(Fe));
    }
    w.add_u32(arch + ".attention.head_count", std::uint32_t(H));
    w.add_u32(arch + ".attention.head_count_kv", std::uint32_t(KV));
    w.add_u32(arch + ".attention.key_length", std::uint32_t(D));
    w.add_u32(arch + ".attention.value_length", std::uint32_t(D));
    w.add_u32(arch + ".rope.dimension_count", std::uint32_t(D));
    w.add_f32(arch + ".rope.freq_base", float(theta));
    w.add_f32(arch + ".attention.layer_norm_rms_epsilon", float(eps));
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", pre);
    w.add_strings("tokenizer.ggml.tokens", tokens);
    w.add_i32s("tokenizer.ggml.token_type", types);
    w.add_strings("tokenizer.ggml.merges", merges);
    if (rep.bos >= 0) w.add_u32("tokenizer.ggml.bos_token_id", std::uint32_t(rep.bos));
    if (rep.eos >= 0) w.add_u32("tokenizer.ggml.eos_token_id", std::uint32_t(rep.eos));
    if (rep.pad >= 0) w.add_u32("tokenizer.ggml.padding_token_id", std::uint32_t(rep.pad));
    w.add_bool("tokenizer.ggml.add_bos_token", false);
    w.add_bool("tokenizer.ggml.add_eos_token", false);
    w.add_string("tokenizer.chat_template", chat_template);

    // ---- tensors -------------------------------------------------------------------------------
    const std::string swhere = (dir / "model.safetensors").string();
    std::map<std::string, int> used;
    auto take = [&](const std::string& hf, std::vector<std::int64_t> shape) {
        MT_CHECK(st.contains(hf), swhere, ": no tensor \"", hf, "\"");
        const SafeTensors& f = st.file(hf);
        MT_CHECK(f.info(hf).shape == shape, f.path().string(), ": tensor \"", hf, "\" has shape ",
                 detail::shape_str(f.info(hf).shape), ", config.json implies ", detail::shape_str(shape));
        used[hf] = 1;
        return gguf::read_f32(f, hf);
    };
    auto put2 = [&](const std::string& name, std::vector<float> v, std::int64_t rows, std::int64_t cols) {
        w.add_tensor(name, {cols, rows}, wtype, gguf::encode(v, wtype));  // ne innermost first
    };
    auto put1 = [&](const std::string& name, const std::vector<float>& v) {
        w.add_tensor(name, {std::int64_t(v.size())}, gguf::ggml_f32, gguf::encode(v, gguf::ggml_f32));
    };

    const auto embed = take("model.embed_tokens.weight", {V, C});
    put2("token_embd.weight", embed, V, C);
    put1("output_norm.weight", take("model.norm.weight", {C}));
    bool tied = cfg.value("tie_word_embeddings", true);
    if (st.contains("lm_head.weight")) {
        auto head = take("lm_head.weight", {V, C});
        if (head != embed) tied = false;  // a tied head stored twice is left out
        if (!tied) put2("output.weight", std::move(head), V, C);
    } else {
        MT_CHECK(tied, swhere, ": tie_word_embeddings is false but there is no lm_head.weight");
    }
    for (std::int64_t l = 0; l < L; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        const std::string g = "blk." + std::to_string(l) + ".";
        put1(g + "attn_norm.weight", take(p + "input_layernorm.weight", {C}));
        auto q = take(p + "self_attn.q_proj.weight", {H * D, C}), k = take(p + "self_attn.k_proj.weight", {KV * D, C});
        if (qk_norm) {
            put1(g + "attn_q_norm.weight", take(p + "self_attn.q_norm.weight", {D}));
            put1(g + "attn_k_norm.weight", take(p + "self_attn.k_norm.weight", {D}));
        } else {  // llama: adjacent-pair RoPE
            q = gguf::permute_rope_rows(std::move(q), H, C);
            k = gguf::permute_rope_rows(std::move(k), KV, C);
        }
        put2(g + "attn_q.weight", std::move(q), H * D, C);
        put2(g + "attn_k.weight", std::move(k), KV * D, C);
        put2(g + "attn_v.weight", take(p + "self_attn.v_proj.weight", {KV * D, C}), KV * D, C);
        put2(g + "attn_output.weight", take(p + "self_attn.o_proj.weight", {C, H * D}), C, H * D);
        put1(g + "ffn_norm.weight", take(p + "post_attention_layernorm.weight", {C}));
        if (qwen3_moe) {
            put2(g + "ffn_gate_inp.weight", take(p + "mlp.gate.weight", {E, C}), E, C);
            // Expert e's [rows, cols] matrix is slice e of the stacked tensor: ne = {cols, rows, E}.
            auto stacked = [&](const char* proj, std::int64_t rows, std::int64_t cols) {
                std::vector<float> all;
                all.reserve(std::size_t(E * rows * cols));
                for (std::int64_t e = 0; e < E; ++e) {
                    auto m = take(p + "mlp.experts." + std::to_string(e) + "." + proj + ".weight", {rows, cols});
                    all.insert(all.end(), m.begin(), m.end());
                }
                return all;
            };
            w.add_tensor(g + "ffn_gate_exps.weight", {C, Fe, E}, wtype, gguf::encode(stacked("gate_proj", Fe, C), wtype));
            w.add_tensor(g + "ffn_up_exps.weight", {C, Fe, E}, wtype, gguf::encode(stacked("up_proj", Fe, C), wtype));
            w.add_tensor(g + "ffn_down_exps.weight", {Fe, C, E}, wtype, gguf::encode(stacked("down_proj", C, Fe), wtype));
        } else {
            put2(g + "ffn_gate.weight", take(p + "mlp.gate_proj.weight", {F, C}), F, C);
            put2(g + "ffn_up.weight", take(p + "mlp.up_proj.weight", {F, C}), F, C);
            put2(g + "ffn_down.weight", take(p + "mlp.down_proj.weight", {C, F}), C, F);
        }
    }
    for (const auto& n : st.names())
        MT_CHECK(used.count(n), st.file(n).path().string(), ": tensor \"", n, "\" has no place in a ", arch,
                 " GGUF (llama.cpp refuses extra tensors)");

    w.write(out);
    rep.tensors = int(w.tensor_count());
    rep.vocab = int(V);
    rep.bytes = fs::file_size(out);
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return rep;
}

}  // namespace minitrain
