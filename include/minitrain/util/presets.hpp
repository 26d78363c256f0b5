// minitrain/util/presets.hpp
// The model presets a program's user picks by name (--preset tiny), and the preset a saved model folder
// was trained as (its config.json).
//
// A Model policy fixes the architecture at compile time, so a program can only build the models it was
// compiled with; the list minitrain's programs are compiled with is nn/presets.hpp (add yours there:
// one line). with_preset() turns a name into a type:
//
//   with_preset("minimind2-small", [&]<class Net>() { Transformer<Net> model(cfg); ... });
//
// instantiating the lambda body once per preset (that is the compile-time cost of a preset: keep the
// list short, and call with_preset from programs, not from tests). preset_for_config() reads a
// config.json and names the preset it describes, or says which field no preset has.
#pragma once

#include <filesystem>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/checkpoint.hpp"
#include "../io/hf_config.hpp"
#include "../io/json.hpp"
#include "../nn/model.hpp"
#include "../nn/presets.hpp"

namespace minitrain {

namespace detail {

/// Calls f.template operator()<Net>(name) for every preset, in order.
template <class F>
void for_each_preset(F&& f) {
    std::apply([&](const auto&... p) { (f.template operator()<typename std::remove_cvref_t<decltype(p)>::type>(p.name), ...); },
               preset_list);
}

/// A copy of cfg with the defaults that depend on other keys written out (num_key_value_heads,
/// head_dim), so that every key can be compared on its own.
inline nlohmann::json with_derived_defaults(nlohmann::json cfg) {
    auto absent = [&](const char* k) { return !cfg.contains(k) || cfg[k].is_null(); };
    auto integer = [&](const char* k) { return !absent(k) && cfg[k].is_number_integer(); };
    if (absent("num_key_value_heads") && integer("num_attention_heads")) cfg["num_key_value_heads"] = cfg["num_attention_heads"];
    if (absent("head_dim") && integer("hidden_size") && integer("num_attention_heads") &&
        cfg["num_attention_heads"].get<std::int64_t>() > 0)
        cfg["head_dim"] = cfg["hidden_size"].get<std::int64_t>() / cfg["num_attention_heads"].get<std::int64_t>();
    return cfg;
}

/// The config.json keys that describe the architecture, in the order config_mismatch checks them.
inline constexpr std::string_view architecture_keys[] = {
    "model_type",        "num_hidden_layers", "hidden_size",    "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "rms_norm_eps",   "rope_theta",          "rope_scaling",        "tie_word_embeddings",
    "attention_bias",    "mlp_bias",       "use_moe",             "n_routed_experts",    "num_experts_per_tok",
    "n_shared_experts",  "norm_topk_prob", "aux_loss_alpha",      "scoring_func",        "seq_aux"};
inline constexpr std::size_t first_moe_key = 13;  // use_moe; the keys after it exist in MoE configs only
static_assert(architecture_keys[first_moe_key] == "use_moe");

/// Whether `cfg` (with derived defaults) agrees with Net on `key` alone, by config_mismatch's rules
/// (defaults included): Net's own config.json with that one key taken from cfg must still match.
template <ModelPolicy Net>
bool agrees_on(const nlohmann::json& cfg, std::string_view key) {
    nlohmann::json probe = hf_config<Net>(ModelConfig{});
    const std::string k(key);
    if (cfg.contains(k))
        probe[k] = cfg[k];
    else
        probe.erase(k);
    return config_mismatch<Net>(probe).empty();
}

}  // namespace detail

/// The preset names, in the order --help lists them.
inline std::vector<std::string> preset_names() {
    std::vector<std::string> names;
    std::apply([&](const auto&... p) { (names.emplace_back(p.name), ...); }, detail::preset_list);
    return names;
}

/// "  tiny                 4 layers x 128, ...\n" for every preset: a block for --help texts.
inline std::string preset_descriptions() {
    std::string s;
    std::apply([&](const auto&... p) {
        ((s += "  " + std::string(p.name) + std::string(p.name.size() < 21 ? 21 - p.name.size() : 1, ' ') +
               std::string(p.about) + "\n"),
         ...);
    }, detail::preset_list);
    return s;
}

/// Calls f.template operator()<Net>() with the Model policy of preset `name`; Error listing the valid
/// names when there is none of that name.
template <class F>
void with_preset(std::string_view name, F&& f) {
    bool found = false;
    detail::for_each_preset([&]<class Net>(std::string_view n) {
        if (found || n != name) return;
        found = true;
        f.template operator()<Net>();
    });
    if (!found) {
        std::string list;
        for (const auto& n : preset_names()) list += (list.empty() ? "" : ", ") + n;
        detail::fail("unknown preset \"", name, "\"; the compiled presets are ", list);
    }
}

/// The name of the preset whose architecture `cfg` (a parsed config.json) describes; vocab_size and
/// max_position_embeddings are run-time sizes and do not matter. Otherwise Error, named after `where`:
/// for the preset that agrees with cfg on the most keys, the first key it differs in, and when no preset
/// has cfg's value for that key, every preset's value, e.g.
///   "config.json: num_hidden_layers is 6; no compiled preset has that (tiny has 4, test has 2, ...)".
/// A config.json written by minitrain names its preset ("minitrain": {"preset": "quickstart"}); that name
/// wins when it is compiled in and the architecture agrees with it.
inline std::string preset_for_config(const nlohmann::json& cfg, const std::string& where = "config.json") {
    std::string named;
    if (cfg.is_object() && cfg.contains("minitrain") && cfg["minitrain"].is_object() &&
        cfg["minitrain"].contains("preset") && cfg["minitrain"]["preset"].is_string())
        named = cfg["minitrain"]["preset"].get<std::string>();
    std::string match, named_error;
    detail::for_each_preset([&]<class Net>(std::string_view name) {
        if (name == named) named_error = detail::config_mismatch_at<Net>(where, cfg, nullptr);
    });
    if (!named.empty() && named_error.empty()) {
        bool compiled = false;
        for (const auto& n : preset_names()) compiled = compiled || n == named;
        if (compiled) return named;
    }
    detail::for_each_preset([&]<class Net>(std::string_view name) {
        if (match.empty() && detail::config_mismatch_at<Net>(where, cfg, nullptr).empty()) match = std::string(name);
    });
    if (!match.empty()) return match;
    if (!named.empty() && named_error.empty()) {  // a preset of another build: say how to add it
        std::string list;
        for (const auto& n : preset_names()) list += (list.empty() ? "" : ", ") + n;
        detail::fail(where, ": the model was trained as preset \"", named, "\", which this program was not compiled with "
                     "(the compiled presets are ", list, "); add its line to include/minitrain/nn/presets.hpp and rebuild");
    }
    if (!cfg.is_object()) throw Error(detail::config_mismatch_at<TinyModel>(where, cfg, nullptr));
    // Another architecture altogether (architectures, model_type, hidden_act) is said as it is.
    {
        detail::ConfigCheck family(where, cfg);
        detail::check_family(family);
        if (!family.ok()) throw Error(family.error());
    }

    // The closest preset: the fewest architecture keys in disagreement (the first such preset on a tie).
    // A dense preset has no MoE keys; against an MoE config each of them counts as a difference, so an MoE
    // config is closer to an MoE preset with one other expert count than to the dense twin.
    const nlohmann::json full = detail::with_derived_defaults(cfg);
    const bool cfg_moe = full.contains("use_moe") && full["use_moe"].is_boolean() && full["use_moe"].get<bool>();
    std::string closest, closest_error, key;
    std::size_t fewest = std::numeric_limits<std::size_t>::max();
    detail::for_each_preset([&]<class Net>(std::string_view name) {
        std::size_t off = 0;
        std::string first_off;
        for (std::size_t i = 0; i < std::size(detail::architecture_keys); ++i) {
            const std::string_view k = detail::architecture_keys[i];
            const bool moe_key = i > detail::first_moe_key;
            const bool differs = moe_key && !Net::moe ? cfg_moe : !detail::agrees_on<Net>(full, k);
            if (!differs) continue;
            ++off;
            if (first_off.empty()) first_off = std::string(k);
        }
        if (off < fewest) {
            fewest = off;
            closest = std::string(name);
            closest_error = detail::config_mismatch_at<Net>(where, cfg, nullptr);
            key = first_off;
        }
    });
    if (key.empty()) throw Error(closest_error);  // not expected: every key agrees with some preset

    bool someone_has_it = false;
    std::string values;
    nlohmann::json example;  // a preset's value for the key, for its JSON type
    detail::for_each_preset([&]<class Net>(std::string_view name) {
        nlohmann::json own = hf_config<Net>(ModelConfig{});
        own["use_moe"] = Net::moe;  // dense configs leave it out, meaning false
        someone_has_it = someone_has_it || (own.contains(key) && detail::agrees_on<Net>(full, key));
        if (own.contains(key) && example.is_null()) example = own[key];
        values += (values.empty() ? "" : ", ") + std::string(name) + " has " +
                  (own.contains(key) ? detail::show_json(own[key]) : std::string("no ") + key);
    });
    const bool given = cfg.contains(key) && !cfg[key].is_null();
    if (!someone_has_it && given) {
        // A value of the wrong JSON type ("32" for 32, 6.0 for 6) is malformed rather than unsupported.
        auto kind = [](const nlohmann::json& v) {
            return v.is_number_integer() ? 0 : v.is_number() ? 1 : v.is_boolean() ? 2 : v.is_string() ? 3 : 4;
        };
        const int want = kind(example), got = kind(cfg[key]);
        if (got != want && !(want == 1 && got == 0)) throw Error(closest_error);
        detail::fail(where, ": ", key, " is ", detail::show_json(cfg[key]), "; no compiled preset has that (", values, ")");
    }
    std::string why = closest_error;
    if (why.starts_with(where + ": ")) why.erase(0, where.size() + 2);
    detail::fail(where, ": no compiled preset matches; the closest is ", closest, ", where ", why);
}

/// preset_for_config for a model folder (DIR/config.json: a final/ folder or a checkpoint step folder).
/// When DIR holds no config.json but looks like a run's out_dir, the error says which folders to use.
inline std::string preset_for_folder(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    const fs::path cfg = dir / "config.json";
    std::error_code ec;
    if (!fs::exists(cfg, ec)) {
        std::string hint;
        if (fs::exists(dir / "final" / "config.json", ec)) hint = "; the run's final model is in " + (dir / "final").string();
        if (auto latest = latest_checkpoint(dir)) hint += "; its latest checkpoint is " + latest->string();
        detail::fail(cfg.string(), ": no such file (expected a model folder holding config.json and model.safetensors",
                     hint.empty() ? ")" : ")" + hint);
    }
    return preset_for_config(detail::read_json_file(cfg), cfg.string());
}

/// True when --init_from names a weights file alone (MiniMind's out/*.pth, a torch.save() or .safetensors
/// state dict) rather than a model folder: it has no config.json, so the architecture comes from --preset.
inline bool is_weights_file(const std::filesystem::path& p) {
    std::error_code ec;
    return std::filesystem::is_regular_file(p, ec);
}

/// The vocabulary of a weights file: the rows of its model.embed_tokens.weight.
inline int weights_file_vocab(const std::filesystem::path& p) {
    const SafeTensorsFolder st(p);
    const char* const emb = "model.embed_tokens.weight";
    MT_CHECK(st.contains(emb), p.string(), ": no tensor \"", emb, "\": not a MiniMind / Llama state dict");
    const auto& s = st.file(emb).info(emb).shape;
    MT_CHECK(s.size() == 2 && s[0] > 0 && s[0] <= std::numeric_limits<int>::max(), p.string(), ": tensor \"", emb,
             "\" has shape ", detail::shape_str(s), ", expected (vocab_size, hidden_size)");
    return int(s[0]);
}

}  // namespace minitrain
