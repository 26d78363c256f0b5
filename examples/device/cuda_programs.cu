// cuda_programs.cu: the GPU path of the programs (pretrain, sft, lora, dpo, eval, generate, chat with
// --device cuda), in one nvcc translation unit: the library minitrain_cuda_programs that CMake links into
// the programs when MINITRAIN_CUDA_PROGRAMS is ON. The declarations, and why this is a separate
// library, are in minitrain/util/device.hpp.
//
// Each entry point instantiates the same function template the program's CPU path runs (train_stage,
// evaluate_folder, generate, load_chat) with the CUDA backend, once per preset of MINITRAIN_CUDA_PRESETS
// (a ';'- or ','-separated list of names from nn/presets.hpp): each preset here costs nvcc time for every
// task below, so the default list is short.
#include <cstddef>
#include <string_view>
#include <tuple>
#include <utility>

#include <minitrain/cuda.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/util/device.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

#if !defined(MINITRAIN_CUDA_PRESETS)
#error "define MINITRAIN_CUDA_PRESETS (CMake does: -DMINITRAIN_CUDA_PRESETS=...)"
#endif

namespace minitrain {
namespace {

/// Whether `name` is one of the entries of the ';'- or ','-separated `list`.
constexpr bool listed(std::string_view list, std::string_view name) {
    std::size_t begin = 0;
    while (begin <= list.size()) {
        std::size_t end = list.find_first_of(";,", begin);
        if (end == std::string_view::npos) end = list.size();
        if (list.substr(begin, end - begin) == name) return true;
        begin = end + 1;
    }
    return false;
}

constexpr std::size_t preset_count = std::tuple_size_v<std::remove_cvref_t<decltype(detail::preset_list)>>;

/// with_preset (util/presets.hpp) over the CUDA presets only: f.template operator()<Net>() for the one
/// named `name`. check_device() has already refused any other name.
template <class F>
void with_cuda_preset(std::string_view name, F&& f) {
    bool found = false;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        (
            [&] {
                constexpr const auto& entry = std::get<I>(detail::preset_list);
                if constexpr (listed(MINITRAIN_CUDA_PRESETS, entry.name)) {
                    if (!found && name == entry.name) {
                        found = true;
                        f.template operator()<typename std::remove_cvref_t<decltype(entry)>::type>();
                    }
                }
            }(),
            ...);
    }(std::make_index_sequence<preset_count>{});
    MT_CHECK(found, "--device cuda: preset ", name, " is not compiled for CUDA (MINITRAIN_CUDA_PRESETS is ",
             MINITRAIN_CUDA_PRESETS, ")");
}

// Every name in the list must be a preset: a typo would otherwise just compile nothing for it.
constexpr bool every_listed_name_is_a_preset() {
    constexpr std::string_view list = MINITRAIN_CUDA_PRESETS;
    std::size_t begin = 0;
    while (begin <= list.size()) {
        std::size_t end = list.find_first_of(";,", begin);
        if (end == std::string_view::npos) end = list.size();
        const std::string_view name = list.substr(begin, end - begin);
        bool known = false;
        std::apply([&](const auto&... p) { ((known = known || p.name == name), ...); }, detail::preset_list);
        if (!known) return false;
        begin = end + 1;
    }
    return true;
}
static_assert(every_listed_name_is_a_preset(),
              "MINITRAIN_CUDA_PRESETS names a preset that nn/presets.hpp does not have (check the spelling)");

}  // namespace

namespace cuda_programs {

bool has_preset(std::string_view preset) {
    bool found = false;
    std::apply([&](const auto&... p) { ((found = found || (p.name == preset && listed(MINITRAIN_CUDA_PRESETS, p.name))), ...); },
               detail::preset_list);
    return found;
}

void train(std::string_view task, std::string_view preset, const TrainConfig& cfg, const std::string& schedule,
           Comm& comm) {
    with_cuda_preset(preset, [&]<class Net>() {
        if (task == "pretrain_adamw") train_stage<Net, Pretrain, CUDA, AdamW>(cfg, schedule, comm);
        else if (task == "pretrain_sgd") train_stage<Net, Pretrain, CUDA, SGD>(cfg, schedule, comm);
        else if (task == "sft") train_stage<Net, SFT, CUDA>(cfg, schedule, comm);
        else if (task == "dpo") train_stage<Net, DPO, CUDA>(cfg, schedule, comm);
        else if (task == "lora_8_attention") train_stage<Net, LoRA<8, 16, LoRAAttention>, CUDA>(cfg, schedule, comm);
        else if (task == "lora_8_attention_mlp") train_stage<Net, LoRA<8, 16, LoRAAttentionMLP>, CUDA>(cfg, schedule, comm);
        else if (task == "lora_16_attention") train_stage<Net, LoRA<16, 32, LoRAAttention>, CUDA>(cfg, schedule, comm);
        else if (task == "lora_16_attention_mlp") train_stage<Net, LoRA<16, 32, LoRAAttentionMLP>, CUDA>(cfg, schedule, comm);
        else detail::fail("cuda_programs::train: unknown task \"", task, "\"");
    });
}

EvalSummary evaluate(std::string_view preset, const EvalOptions& options,
                     const std::function<void(const EvalSummary&)>& before) {
    EvalSummary s;
    with_cuda_preset(preset, [&]<class Net>() { s = evaluate_folder<Net, CUDA>(options, before); });
    return s;
}

std::vector<std::int32_t> generate(std::string_view preset, const std::string& dir, std::span<const std::int32_t> prompt,
                                   const SampleOptions& options, const std::function<bool(std::int32_t)>& on_token) {
    std::vector<std::int32_t> out;
    with_cuda_preset(preset, [&]<class Net>() {
        Transformer<Net, CUDA> model(load_model_config(dir));
        load_pretrained(dir, model);
        out = minitrain::generate(model, prompt, options, on_token);
    });
    return out;
}

std::unique_ptr<AnyChat> chat(std::string_view preset, const std::string& dir, const std::string& adapter,
                              const std::string& tokenizer, const SampleOptions& options, const std::string& system) {
    std::unique_ptr<AnyChat> c;
    with_cuda_preset(preset, [&]<class Net>() { c = load_chat<Net, CUDA>(dir, adapter, tokenizer, options, system); });
    return c;
}

}  // namespace cuda_programs
}  // namespace minitrain
