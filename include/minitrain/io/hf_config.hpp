// minitrain/io/hf_config.hpp
// The Hugging Face config.json of a Model policy, and the check that a config.json describes the model
// compiled into this program.
//
// A Model policy fixes every architectural size at compile time, so a checkpoint is loadable only into the
// same policy. config.json is what tells: hf_config<Net>() writes the LlamaConfig keys (plus MiniMind's MoE
// keys for an MoE policy; Qwen3Config's / Qwen3MoeConfig's for a policy with q/k norm, as MiniMind's
// convert script writes MiniMind-3) so that transformers' LlamaForCausalLM / Qwen3ForCausalLM, llama.cpp's
// converter and our PyTorch reference read our checkpoints, and config_mismatch<Net>() names the first key
// that disagrees with Net, so loading the wrong checkpoint is a one-line error instead of a shape error
// deep in the loader. "architectures", when present, must name one of LlamaForCausalLM, Qwen3ForCausalLM,
// Qwen3MoeForCausalLM, MiniMindForCausalLM; model_type qwen3 / qwen3_moe means q_norm / k_norm (the
// compiled policy must have Net::qk_norm), llama means none, minimind leaves it to the tensors.
//
// Missing keys (config_mismatch, model_config_from). A key HF's LlamaConfig gives a default takes that
// default, because that is how transformers itself would read the file:
//   num_key_value_heads -> num_attention_heads     head_dim -> hidden_size / num_attention_heads
//   hidden_act -> "silu"    rms_norm_eps -> 1e-6    rope_theta -> 10000    rope_scaling -> null
//   attention_bias, mlp_bias -> false              max_position_embeddings -> 2048
// Two exceptions. (1) The sizes vocab_size, hidden_size, intermediate_size, num_hidden_layers and
// num_attention_heads are REQUIRED: LlamaConfig's defaults describe Llama-7B, so a file without them is
// broken rather than meant. (2) tie_word_embeddings defaults to TRUE (PretrainedConfig's and MiniMind's
// default; LlamaConfig's is false): minitrain always ties lm_head to the embedding, and hf_config always
// writes the key, so only hand-written files rely on this default.
// MiniMind's MoE keys default to MiniMind's values (tests/golden/minimind_ref.py): n_routed_experts 4,
// num_experts_per_tok 2, n_shared_experts 1, norm_topk_prob true, aux_loss_alpha 0.01, scoring_func
// "softmax", seq_aux true; use_moe defaults to false (true for qwen3_moe, whose keys num_experts,
// num_experts_per_tok, moe_intermediate_size, norm_topk_prob take Qwen3MoeConfig's defaults). Keys nobody
// reads here (torch_dtype, token ids, ...) are ignored; a null value counts as absent. Real numbers (rms_norm_eps,
// rope_theta, aux_loss_alpha) match within a relative 1e-6, so a value that went through f32 still
// matches.
//
// vocab_size and max_position_embeddings are run-time sizes (ModelConfig). With a ModelConfig,
// config_mismatch also requires the same vocab_size (the embedding's shape depends on it). A different
// max_position_embeddings is accepted in both directions: no weight depends on it and RoPE here has no
// scaling that would (the model's own max_seq_len bounds the positions it uses), so a checkpoint
// pretrained at 512 tokens can be fine-tuned at 1024 or evaluated at 256.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/json.hpp"
#include "../nn/model.hpp"
#include "../nn/presets.hpp"

namespace minitrain {

/// Special token ids recorded in config.json (generation stops at eos_token_id). Unset: not written.
struct HFTokenIds {
    std::optional<int> bos_token_id, eos_token_id, pad_token_id;
};

/// Version of minitrain's additions to the files it writes (config.json "minitrain", training state).
inline constexpr int checkpoint_format_version = 1;

/// Which Hugging Face architecture a policy is written as: Llama for a dense model, Qwen3 for one with
/// q/k norm (MiniMind's convert script does the same for MiniMind-3), Qwen3-MoE for an MoE model with q/k
/// norm, no shared expert and MiniMind-3's router (RouterRules::minimind3: Qwen3-MoE renormalizes a top-1
/// weight to 1 as MiniMind-3 does), else MiniMind's own MoE config (MiniMind2's router, seq_aux).
template <ModelPolicy Net>
constexpr const char* hf_model_type() {
    if constexpr (Net::moe) {
        static_assert(Net::router == RouterRules::minimind2 || (Net::qk_norm && Net::shared_experts == 0),
                      "hf_config: a model with MiniMind-3's router is written as a Qwen3-MoE config, which has q/k "
                      "norm and no shared expert; MiniMind's own config describes MiniMind2's router only");
        return Net::router == RouterRules::minimind3 ? "qwen3_moe" : "minimind";
    } else {
        return Net::qk_norm ? "qwen3" : "llama";
    }
}

/// config.json for Net with the run-time sizes `rc`: a LlamaForCausalLM config for a dense policy, a
/// Qwen3ForCausalLM config for a dense policy with q/k norm, a Qwen3MoeForCausalLM config for an MoE one
/// with q/k norm and no shared expert, else a MiniMindForCausalLM config (model_type "minimind", use_moe
/// and MiniMind's MoE keys).
template <ModelPolicy Net>
nlohmann::json hf_config(const ModelConfig& rc, const HFTokenIds& tokens = {}) {
    nlohmann::json j;
    const std::string type = hf_model_type<Net>();
    j["architectures"] = nlohmann::json::array({type == "llama" ? "LlamaForCausalLM" : type == "qwen3" ? "Qwen3ForCausalLM"
                                                : type == "qwen3_moe" ? "Qwen3MoeForCausalLM" : "MiniMindForCausalLM"});
    j["model_type"] = type;
    j["vocab_size"] = rc.vocab_size;
    j["hidden_size"] = Net::hidden;
    j["intermediate_size"] = Net::ffn;
    j["num_hidden_layers"] = Net::layers;
    j["num_attention_heads"] = Net::heads;
    j["num_key_value_heads"] = Net::kv_heads;
    j["head_dim"] = Net::head_dim;
    j["hidden_act"] = "silu";
    j["max_position_embeddings"] = rc.max_seq_len;
    j["rms_norm_eps"] = Net::rms_eps;
    j["rope_theta"] = Net::rope_theta;
    j["rope_scaling"] = nullptr;
    j["tie_word_embeddings"] = true;
    j["attention_bias"] = false;
    j["attention_dropout"] = 0.0;
    j["mlp_bias"] = false;
    j["initializer_range"] = Net::init_std;
    j["use_cache"] = true;
    j["torch_dtype"] = "float32";
    if (tokens.bos_token_id) j["bos_token_id"] = *tokens.bos_token_id;
    if (tokens.eos_token_id) j["eos_token_id"] = *tokens.eos_token_id;
    if (tokens.pad_token_id) j["pad_token_id"] = *tokens.pad_token_id;
    if constexpr (Net::qk_norm) {  // Qwen3Config: full attention in every layer
        j["use_sliding_window"] = false;
        j["sliding_window"] = nullptr;
        j["max_window_layers"] = Net::layers;
    }
    if constexpr (std::string_view(hf_model_type<Net>()) == "qwen3_moe") {  // Qwen3MoeConfig's names
        j["use_moe"] = true;  // MiniMind's key, so that MiniMind's own loader sees an MoE model too
        j["num_experts"] = Net::experts;
        j["num_experts_per_tok"] = Net::top_k;
        j["moe_intermediate_size"] = Net::ffn;
        j["norm_topk_prob"] = Net::norm_topk;
        j["router_aux_loss_coef"] = Net::aux_alpha;
        j["decoder_sparse_step"] = 1;
        j["mlp_only_layers"] = nlohmann::json::array();
        j["output_router_logits"] = false;
    } else if constexpr (Net::moe) {
        j["use_moe"] = true;
        j["n_routed_experts"] = Net::experts;
        j["num_experts_per_tok"] = Net::top_k;
        j["n_shared_experts"] = Net::shared_experts;
        j["norm_topk_prob"] = Net::norm_topk;
        j["aux_loss_alpha"] = Net::aux_alpha;
        j["scoring_func"] = "softmax";
        j["seq_aux"] = true;
    }
    j["minitrain"] = {{"version", checkpoint_format_version}};
    if constexpr (!preset_name<Net>().empty()) j["minitrain"]["preset"] = preset_name<Net>();  // nn/presets.hpp
    return j;
}

namespace detail {

/// The shortest text that reads back as `x` ("1e-05", "10000"), so two different values never print alike.
inline std::string real_text(double x) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, x);
    return std::string(buf, r.ptr);
}

/// Reads config.json fields one at a time and keeps the first disagreement as a sentence.
class ConfigCheck {
public:
    ConfigCheck(std::string where, const nlohmann::json& cfg) : where_(std::move(where)), cfg_(cfg) {
        if (!cfg_.is_object()) fail_with("must be a JSON object, found ", cfg_.type_name());
    }

    bool ok() const { return error_.empty(); }
    const std::string& error() const { return error_; }

    /// The key's value, or nullptr when absent or null.
    const nlohmann::json* find(const char* key) const {
        if (!cfg_.is_object()) return nullptr;
        auto it = cfg_.find(key);
        return it == cfg_.end() || it->is_null() ? nullptr : &*it;
    }

    /// An integer key: its value, or `fallback` when absent (nullopt: the key is required). Records an
    /// error (and returns nullopt) for a missing required key or a non-integer value.
    std::optional<std::int64_t> integer(const char* key, std::optional<std::int64_t> fallback = {}) {
        if (!ok()) return {};
        const nlohmann::json* v = find(key);
        if (!v) {
            if (!fallback) fail_with(key, " is missing (it is required)");
            return fallback;
        }
        if (!v->is_number_integer()) {
            fail_with(key, " must be an integer, found ", v->type_name(), " ", show_json(*v));
            return {};
        }
        return v->get<std::int64_t>();
    }

    /// An integer key that must equal `want`. `fallback_note` explains where a default came from.
    void expect_int(const char* key, std::int64_t want, std::optional<std::int64_t> fallback = {},
                    std::string_view fallback_note = "") {
        if (!ok()) return;
        const bool absent = !find(key);
        if (absent && !fallback) return fail_with(key, " is missing (it is required); the compiled model has ", want);
        auto got = integer(key, fallback);
        if (!got) return;  // not an integer: integer() recorded why
        if (*got != want) {
            if (absent)
                fail_with(key, " is absent, which means ", *got, " (", fallback_note, "); the compiled model has ",
                          want);
            else
                fail_with(key, " is ", *got, ", the compiled model has ", want);
        }
    }

    void expect_real(const char* key, double want, double fallback, std::string_view fallback_note) {
        if (!ok()) return;
        const nlohmann::json* v = find(key);
        double got = fallback;
        if (v) {
            if (!v->is_number()) return fail_with(key, " must be a number, found ", v->type_name(), " ", show_json(*v));
            got = v->get<double>();
        }
        if (!(std::abs(got - want) <= 1e-6 * std::abs(want))) {
            if (!v)
                return fail_with(key, " is absent, which means ", real_text(got), " (", fallback_note,
                                 "); the compiled model has ", real_text(want));
            fail_with(key, " is ", real_text(got), ", the compiled model has ", real_text(want));
        }
    }

    void expect_bool(const char* key, bool want, bool fallback, std::string_view what_model_has = "") {
        if (!ok()) return;
        const nlohmann::json* v = find(key);
        bool got = fallback;
        if (v) {
            if (!v->is_boolean())
                return fail_with(key, " must be true or false, found ", v->type_name(), " ", show_json(*v));
            got = v->get<bool>();
        }
        if (got != want) {
            const char* g = got ? "true" : "false";
            const char* w = want ? "true" : "false";
            std::string tail = what_model_has.empty() ? std::string() : " (" + std::string(what_model_has) + ")";
            if (!v) return fail_with(key, " is absent, which means ", g, "; the compiled model has ", w, tail);
            fail_with(key, " is ", g, ", the compiled model has ", w, tail);
        }
    }

    /// A string key that must be absent or one of `allowed` (listed in the message as what we implement).
    void expect_string(const char* key, std::initializer_list<std::string_view> allowed) {
        if (!ok()) return;
        const nlohmann::json* v = find(key);
        if (!v) return;
        if (!v->is_string()) return fail_with(key, " must be a string, found ", v->type_name(), " ", show_json(*v));
        const std::string s = v->get<std::string>();
        for (std::string_view a : allowed)
            if (s == a) return;
        std::string list;
        for (std::string_view a : allowed) list += (list.empty() ? "\"" : " or \"") + std::string(a) + "\"";
        fail_with(key, " is \"", s, "\", minitrain implements only ", list);
    }

    template <class... Parts>
    void fail_with(Parts&&... parts) {
        if (!ok()) return;
        std::ostringstream os;
        os << where_ << ": ";
        (os << ... << std::forward<Parts>(parts));
        error_ = os.str();
    }

private:
    std::string where_;
    const nlohmann::json& cfg_;
    std::string error_;
};

/// The architectures minitrain reads (config.json "architectures").
inline constexpr std::string_view hf_architectures[] = {"LlamaForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
                                                        "MiniMindForCausalLM"};

/// What no compiled policy can be: an architecture, model_type or activation minitrain does not implement.
inline void check_family(ConfigCheck& c) {
    if (const nlohmann::json* a = c.find("architectures")) {
        std::string list;
        for (std::string_view n : hf_architectures) list += (list.empty() ? "" : ", ") + std::string(n);
        if (!a->is_array() || a->empty())
            return c.fail_with("architectures must be a list of class names, found ", show_json(*a));
        for (const auto& n : *a) {
            bool known = false;
            for (std::string_view k : hf_architectures) known = known || (n.is_string() && n.get<std::string>() == k);
            if (!known)
                return c.fail_with("architectures is ", show_json(*a), ": minitrain implements only ", list);
        }
    }
    c.expect_string("model_type", {"llama", "qwen3", "qwen3_moe", "minimind"});
    c.expect_string("hidden_act", {"silu"});
}

/// transformers 5 writes RoPE as "rope_parameters": {"rope_type": "default", "rope_theta": 1e6} instead of a
/// top-level rope_theta and rope_scaling (MiniMind's convert script rewrites it back for that reason). A copy
/// of cfg with rope_theta taken from there when it is not given, and rope_scaling set to rope_parameters
/// itself when its rope_type is not "default", so that both are checked like the older keys.
inline nlohmann::json with_legacy_rope(const nlohmann::json& cfg) {
    if (!cfg.is_object() || !cfg.contains("rope_parameters") || !cfg["rope_parameters"].is_object()) return cfg;
    nlohmann::json out = cfg;
    const nlohmann::json& rp = cfg["rope_parameters"];
    if ((!cfg.contains("rope_theta") || cfg["rope_theta"].is_null()) && rp.contains("rope_theta"))
        out["rope_theta"] = rp["rope_theta"];
    const std::string type = rp.contains("rope_type") && rp["rope_type"].is_string() ? rp["rope_type"].get<std::string>()
                                                                                     : std::string("default");
    if (type != "default" && (!cfg.contains("rope_scaling") || cfg["rope_scaling"].is_null())) out["rope_scaling"] = rp;
    return out;
}

/// config_mismatch with the file name used in the message (load_pretrained passes the full path).
template <ModelPolicy Net>
std::string config_mismatch_at(const std::string& where, const nlohmann::json& given, const ModelConfig* runtime) {
    // Copy only when there is something to rewrite: a copy recurses once per nesting level, and `given` may
    // come from anywhere (parse_json bounds files to 128 levels; a caller's own JSON has no bound).
    const bool legacy = given.is_object() && given.contains("rope_parameters") && given["rope_parameters"].is_object();
    const nlohmann::json converted = legacy ? with_legacy_rope(given) : nlohmann::json();
    const nlohmann::json& cfg = legacy ? converted : given;
    ConfigCheck c(where, cfg);
    check_family(c);
    if (const nlohmann::json* t = c.ok() ? c.find("model_type") : nullptr) {
        // q_norm / k_norm: Qwen3 always has them, Llama never; MiniMind's own folders may or may not (the
        // tensors decide: load_pretrained names the missing or unexpected one).
        const std::string type = t->get<std::string>();
        const bool has = type == "qwen3" || type == "qwen3_moe";
        if (type != "minimind" && has != Net::qk_norm)
            c.fail_with("model_type is \"", type, "\" (", has ? "with" : "without",
                        " q_norm / k_norm in every attention layer), the compiled model is ",
                        Net::qk_norm ? "with them (a Qwen3 / MiniMind-3 architecture)" : "without them (Llama)");
        if (c.ok() && (type == "qwen3_moe") != (std::string_view(hf_model_type<Net>()) == "qwen3_moe") && has)
            c.fail_with("model_type is \"", type, "\", the compiled model is ", Net::moe ? "a mixture of experts" : "dense",
                        Net::moe && Net::shared_experts ? " with shared experts (no Qwen3-MoE equivalent)"
                        : Net::moe ? " with MiniMind2's router (a top-1 weight is its score and the balancing loss is "
                                     "per sequence; Qwen3-MoE's top-1 weight is 1: RouterRules::minimind3)"
                                   : "");
    }
    c.expect_int("num_hidden_layers", Net::layers);
    c.expect_int("hidden_size", Net::hidden);
    c.expect_int("num_attention_heads", Net::heads);
    // Defaults that depend on other keys: read those first (a bad value there is reported above).
    const auto heads = c.integer("num_attention_heads");
    const auto hidden = c.integer("hidden_size");
    if (!c.ok()) return c.error();
    c.expect_int("num_key_value_heads", Net::kv_heads, *heads,
                 "HF default: num_attention_heads = " + std::to_string(*heads));
    if (*heads > 0)
        c.expect_int("head_dim", Net::head_dim, *hidden / *heads,
                     "HF default: hidden_size / num_attention_heads = " + std::to_string(*hidden / *heads));
    c.expect_int("intermediate_size", Net::ffn);
    c.expect_real("rms_norm_eps", Net::rms_eps, 1e-6, "HF default");
    c.expect_real("rope_theta", Net::rope_theta, 10000.0, "HF default");
    if (c.ok() && c.find("rope_scaling"))
        c.fail_with("rope_scaling is ", show_json(*c.find("rope_scaling")),
                    ", the compiled model has plain RoPE (rope_scaling null)");
    c.expect_bool("tie_word_embeddings", true, true, "lm_head is the embedding matrix");
    c.expect_bool("attention_bias", false, false, "no bias in q/k/v/o_proj");
    c.expect_bool("mlp_bias", false, false, "no bias in gate/up/down_proj");
    c.expect_bool("use_sliding_window", false, false, "full attention in every layer");
    if (const nlohmann::json* lt = c.ok() ? c.find("layer_types") : nullptr) {  // transformers 5: per layer
        bool full = lt->is_array();
        if (full)
            for (const auto& t : *lt) full = full && t.is_string() && t.get<std::string>() == "full_attention";
        if (!full) c.fail_with("layer_types is ", show_json(*lt), ", the compiled model has full attention in every layer");
    }
    const nlohmann::json* type = c.find("model_type");
    const bool qwen3_moe = type && type->is_string() && type->get<std::string>() == "qwen3_moe";
    c.expect_bool("use_moe", Net::moe, qwen3_moe);
    if (qwen3_moe) {
        // Qwen3MoeConfig's names and defaults (configuration_qwen3_moe.py); no shared expert there.
        c.expect_int("num_experts", Net::experts, 128, "Qwen3MoeConfig default");
        c.expect_int("num_experts_per_tok", Net::top_k, 8, "Qwen3MoeConfig default");
        c.expect_int("moe_intermediate_size", Net::ffn, 768, "Qwen3MoeConfig default");
        c.expect_bool("norm_topk_prob", Net::norm_topk, false);
        c.expect_int("decoder_sparse_step", 1, 1, "Qwen3MoeConfig default");
        if (c.ok() && c.find("mlp_only_layers") && !(c.find("mlp_only_layers")->is_array() && c.find("mlp_only_layers")->empty()))
            c.fail_with("mlp_only_layers is ", show_json(*c.find("mlp_only_layers")), ", the compiled model has experts in every layer");
        // router_aux_loss_coef is not compared: it weighs a training loss only, and MiniMind's convert script
        // leaves Qwen3MoeConfig's default (0.001) in the file it writes for MiniMind-3-MoE (trained with 5e-4).
    } else if constexpr (Net::moe) {
        c.expect_int("n_routed_experts", Net::experts, 4, "MiniMind default");
        c.expect_int("num_experts_per_tok", Net::top_k, 2, "MiniMind default");
        c.expect_int("n_shared_experts", Net::shared_experts, 1, "MiniMind default");
        c.expect_bool("norm_topk_prob", Net::norm_topk, true);
        c.expect_real("aux_loss_alpha", Net::aux_alpha, 0.01, "MiniMind default");
        c.expect_string("scoring_func", {"softmax"});
        c.expect_bool("seq_aux", true, true, "minitrain implements the sequence-level balancing loss");
    }
    if (runtime) {
        // Run-time sizes belong to the Transformer's ModelConfig, not to the compiled policy.
        auto vocab = c.integer("vocab_size");
        if (vocab && *vocab != runtime->vocab_size)
            c.fail_with("vocab_size is ", *vocab, ", the model's ModelConfig has ", runtime->vocab_size);
        auto mp = c.integer("max_position_embeddings", 2048);
        if (mp && *mp < 1) c.fail_with("max_position_embeddings is ", *mp, ", it must be positive");
    }
    return c.error();
}

}  // namespace detail

/// Empty when `cfg` (a parsed config.json) describes Net, and, given `runtime`, has its vocab_size;
/// otherwise one sentence naming the first mismatching key, e.g.
/// "config.json: num_key_value_heads is 4, the compiled model has 2". See the file comment for defaults.
template <ModelPolicy Net>
std::string config_mismatch(const nlohmann::json& cfg, const ModelConfig* runtime = nullptr) {
    return detail::config_mismatch_at<Net>("config.json", cfg, runtime);
}

/// The run-time sizes in a config.json: vocab_size (required) and max_position_embeddings (HF default
/// 2048). Throws Error naming `where` and the key when one is missing, not an integer, or not positive.
inline ModelConfig model_config_from(const nlohmann::json& cfg, const std::string& where = "config.json") {
    detail::ConfigCheck c(where, cfg);
    auto vocab = c.integer("vocab_size");
    auto maxpos = c.integer("max_position_embeddings", 2048);
    if (c.ok() && (*vocab < 1 || *vocab > std::numeric_limits<std::int32_t>::max()))
        c.fail_with("vocab_size is ", *vocab, ", expected a positive int");
    if (c.ok() && (*maxpos < 1 || *maxpos > std::numeric_limits<std::int32_t>::max()))
        c.fail_with("max_position_embeddings is ", *maxpos, ", expected a positive int");
    if (!c.ok()) throw Error(c.error());
    return ModelConfig{int(*vocab), int(*maxpos)};
}

}  // namespace minitrain
