// minitrain/io/peft.hpp
// LoRA adapters in Hugging Face PEFT's format, and merging them into the base weights.
//
//   save_adapter(dir, adapters[, base])  dir/adapter_model.safetensors: only the adapter tensors, under
//                                        PEFT's names ("base_model.model.model.layers.0.self_attn.q_proj.
//                                        lora_A.weight"), F32; dir/adapter_config.json: PEFT's LoraConfig
//                                        (peft_type LORA, r, lora_alpha, lora_dropout, target_modules, ...).
//                                        PeftModel.from_pretrained(base, dir) loads the folder as is.
//   load_adapter(dir, adapters)          the reverse, checked against the compiled LoRA policy: r, lora_alpha
//                                        and target_modules must match (and nothing PEFT would compute
//                                        differently may be set: use_rslora, use_dora, fan_in_fan_out, bias,
//                                        rank/alpha patterns); every tensor must exist with its shape.
//                                        All is checked before anything is copied: on Error nothing changed.
//   merge_adapter(model, adapters)       W += scaling * B A for every target, then detaches the adapters:
//                                        save_pretrained(model) then writes a plain Llama checkpoint.
//
// Each file is replaced atomically (write_file_atomic), the weights before the config, like save_pretrained;
// the folder may hold other files (a tokenizer, a checkpoint's model files), which are left alone.
#pragma once

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../nn/lora.hpp"
#include "checkpoint.hpp"
#include "json.hpp"

namespace minitrain {

namespace detail {
inline const char* const adapter_config_file = "adapter_config.json";
inline const char* const adapter_weights_file = "adapter_model.safetensors";
}  // namespace detail

/// PEFT's LoraConfig for these adapters (what save_adapter writes as adapter_config.json).
/// `base_model`: base_model_name_or_path (null when empty).
template <class Policy, class Model>
nlohmann::json adapter_config(const LoRAAdapters<Policy, Model>& adapters, const std::string& base_model = {}) {
    using A = LoRAAdapters<Policy, Model>;
    nlohmann::json j;
    j["peft_type"] = "LORA";
    j["task_type"] = "CAUSAL_LM";
    j["r"] = A::rank;
    j["lora_alpha"] = A::alpha;
    j["lora_dropout"] = adapters.dropout();
    j["target_modules"] = A::target_modules();
    j["bias"] = "none";
    j["fan_in_fan_out"] = false;
    j["init_lora_weights"] = true;
    j["inference_mode"] = true;
    j["use_rslora"] = false;
    j["use_dora"] = false;
    j["modules_to_save"] = nullptr;
    j["base_model_name_or_path"] = base_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model);
    return j;
}

/// Writes dir/adapter_model.safetensors and dir/adapter_config.json (creating dir). See the top of the file.
template <class Policy, class Model>
void save_adapter(const std::filesystem::path& dir, const LoRAAdapters<Policy, Model>& adapters,
                  const std::string& base_model = {}) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) detail::fail(dir.string(), ": cannot create folder: ", ec.message());
    std::vector<float> staging;
    save_safetensors(dir / detail::adapter_weights_file, detail::host_parameters(adapters.params(), staging),
                     {{"format", "pt"}});
    detail::write_json_file(dir / detail::adapter_config_file, adapter_config(adapters, base_model));
}

namespace detail {

/// Checks adapter_config.json against the compiled policy; the error names the file and the field.
template <class Policy, class Model>
void check_adapter_config(const std::filesystem::path& path, const nlohmann::json& j) {
    using A = LoRAAdapters<Policy, Model>;
    const std::string where = path.string();
    MT_CHECK(j.is_object(), where, ": must be a JSON object");
    auto field = [&](const char* key) -> const nlohmann::json& {
        MT_CHECK(j.contains(key) && !j.at(key).is_null(), where, ": missing field \"", key, "\"");
        return j.at(key);
    };
    const nlohmann::json& type = field("peft_type");
    MT_CHECK(type == "LORA", where, ": peft_type is ", show_json(type), ", expected \"LORA\"");
    const nlohmann::json& r = field("r");
    MT_CHECK(r.is_number_integer() && r.get<std::int64_t>() == A::rank, where, ": r is ", show_json(r),
             ", the compiled LoRA policy has Rank ", A::rank);
    const nlohmann::json& alpha = field("lora_alpha");
    MT_CHECK(alpha.is_number() && alpha.get<double>() == double(A::alpha), where, ": lora_alpha is ", show_json(alpha),
             ", the compiled LoRA policy has Alpha ", A::alpha);
    const nlohmann::json& tm = field("target_modules");
    const auto want = A::target_modules();
    std::string want_text = nlohmann::json(want).dump();
    MT_CHECK(tm.is_array(), where, ": target_modules is ", show_json(tm), ", expected the list ", want_text);
    std::set<std::string> got;
    for (const nlohmann::json& t : tm) {
        MT_CHECK(t.is_string(), where, ": target_modules holds ", show_json(t), ", expected module names");
        got.insert(t.get<std::string>());
    }
    MT_CHECK(got == std::set<std::string>(want.begin(), want.end()), where, ": target_modules is ", show_json(tm),
             ", the compiled LoRA policy targets ", want_text);
    // Settings under which PEFT would compute something else than W + (alpha / r) B A.
    auto must_be = [&](const char* key, const nlohmann::json& value, const char* why) {
        if (!j.contains(key) || j.at(key).is_null()) return;
        MT_CHECK(j.at(key) == value, where, ": ", key, " is ", show_json(j.at(key)), ", only ", show_json(value),
                 " is supported (", why, ")");
    };
    must_be("bias", "none", "no bias terms are trained");
    must_be("fan_in_fan_out", false, "weights are stored (out, in)");
    must_be("use_rslora", false, "scaling is lora_alpha / r");
    must_be("use_dora", false, "plain LoRA");
    for (const char* key : {"rank_pattern", "alpha_pattern"})
        MT_CHECK(!j.contains(key) || j.at(key).is_null() || j.at(key).empty(), where, ": ", key, " is ",
                 show_json(j.at(key)), ", only one rank and alpha for every module is supported");
    for (const char* key : {"layers_to_transform", "modules_to_save"})
        MT_CHECK(!j.contains(key) || j.at(key).is_null() || (j.at(key).is_array() && j.at(key).empty()), where, ": ",
                 key, " is ", show_json(j.at(key)), ", only adapters on every layer's target modules are supported");
}

}  // namespace detail

/// Loads an adapter folder into `adapters` (see the top of the file). The dropout is the adapters' own
/// run-time setting and is left as it is.
template <class Policy, class Model>
void load_adapter(const std::filesystem::path& dir, LoRAAdapters<Policy, Model>& adapters) {
    const auto cfg_path = dir / detail::adapter_config_file;
    detail::check_adapter_config<Policy, Model>(cfg_path, detail::read_json(cfg_path));

    using Backend = typename LoRAAdapters<Policy, Model>::Backend;
    SafeTensors st(dir / detail::adapter_weights_file);
    const std::string where = st.path().string();
    auto& ps = adapters.params();
    for (const std::string& name : st.names())
        MT_CHECK(ps.try_find(name), where, ": unexpected tensor \"", name, "\" ", detail::shape_str(st.info(name).shape),
                 ": the adapters have no parameter of that name");
    for (const Parameter& p : ps.all()) {
        MT_CHECK(st.contains(p.name), where, ": missing tensor \"", p.name, "\" (expected shape ", p.shape, ")");
        detail::check_loadable(st, p.name, p.shape, false, "the adapter");
    }
    std::vector<float> staging;
    for (const Parameter& p : ps.all()) detail::read_into_backend<Backend>(st, p.name, p.var.data, staging);
}

/// W += scaling * B A for every adapted projection of `model`, then detaches the adapters, so the model
/// alone computes what model + adapters computed (up to rounding). The adapters keep their values.
template <class Policy, class Model>
void merge_adapter(Model& model, LoRAAdapters<Policy, Model>& adapters) {
    using Backend = typename Model::backend;
    MT_CHECK(&adapters.model() == &model, "merge_adapter: the adapters were built for another model");
    std::size_t largest = 0;
    for (const auto& s : adapters.sites()) largest = std::max(largest, std::size_t(s.weight->data.numel()));
    Buffer<Backend> delta(Shape{std::int64_t(largest)}, DType::f32);  // (out * in) the largest update
    for (const auto& s : adapters.sites()) {
        const Tensor& w = s.weight->data;  // (out, in)
        const Tensor d = delta.tensor().rows(0, w.numel()).view(w.shape);
        matmul_forward(Backend{}, d, s.adapter.B->data, s.adapter.A->data);  // B (out, R) A (R, in)
        scale(Backend{}, d, LoRAAdapters<Policy, Model>::scaling);
        add_forward(Backend{}, w, w, d);
    }
    adapters.detach();
}

}  // namespace minitrain
