// minitrain/nn/presets.hpp
// The registry of named Model policies: the one list every minitrain program is compiled with, and the
// name config.json records ("minitrain": {"preset": "quickstart"}) so that a saved model folder says
// which compiled architecture it is.
//
// A Model policy fixes the architecture at compile time, so a program can build only the models it was
// compiled with. util/presets.hpp turns a name into a type for the programs (with_preset), and
// io/hf_config.hpp writes preset_name<Net>() into config.json.
//
// Adding your own architecture is one line in preset_list below, e.g.
//     PresetEntry<Model<6, 384, 6, false, Knobs<2>>>{"my6", "6 layers x 384, 6 heads (2 KV): mine"},
// then rebuild: every program (pretrain, sft, lora, dpo, eval, generate, chat, merge_lora) knows it.
// Each entry is compiled into every program once per task it trains (the compile-time cost of a preset:
// keep the list short).
#pragma once

#include <string_view>
#include <tuple>
#include <type_traits>

#include "model.hpp"

namespace minitrain {

/// The benchmark's "tiny" model (benchmarks/pytorch_train_step.py): 4 layers, 128 wide, 4 heads, 2 KV heads.
using TinyBenchModel = Model<4, 128, 4, false, Knobs<2>>;
/// The quickstart's model: 4 layers x 256, 8 heads sharing 4 KV heads (3.5M parameters at vocabulary 2048).
using QuickstartModel = Model<4, 256, 8, false, Knobs<4>>;

namespace detail {

template <ModelPolicy Net>
struct PresetEntry {
    using type = Net;
    std::string_view name;
    std::string_view about;
};

/// Every compiled preset, in the order --help lists them.
inline constexpr auto preset_list = std::tuple{
    PresetEntry<TinyBenchModel>{"tiny", "4 layers x 128, 4 heads (2 KV): the benchmark's tiny model"},
    PresetEntry<TinyModel>{"test", "2 layers x 32, 4 heads (2 KV): for tests and trying things out"},
    PresetEntry<TinyQKNormModel>{"test-qknorm", "the test preset with MiniMind-3's q/k norm (a Qwen3 folder): for tests"},
    PresetEntry<TinyMoE3Model>{"test-moe3", "test-qknorm with MiniMind-3's MoE: 4 experts, top-1 (a Qwen3-MoE folder): for tests"},
    PresetEntry<QuickstartModel>{"quickstart", "4 layers x 256, 8 heads (4 KV): the quickstart's model, 3.5M at vocab 2048"},
    PresetEntry<MiniMind2Small>{"minimind2-small", "8 layers x 512, 8 heads (2 KV): MiniMind2-Small, 26M at vocab 6400"},
    PresetEntry<MiniMind2SmallMoE>{"minimind2-small-moe", "MiniMind2-Small with 4 routed experts (top-2) + 1 shared"},
    PresetEntry<MiniMind3>{"minimind3", "8 layers x 768, 8 heads (4 KV) of 96, q/k norm: MiniMind-3, 64M at vocab 6400"},
    PresetEntry<MiniMind3MoE>{"minimind3-moe", "MiniMind-3 with 4 routed experts (top-1), no shared expert"},
    PresetEntry<GPT2Small>{"gpt2-small", "12 layers x 768, 12 heads: GPT-2 small's size, 124M at vocab 50304"},
};

}  // namespace detail

/// The registered name of Net ("quickstart"), or "" when Net is not in the registry.
template <ModelPolicy Net>
constexpr std::string_view preset_name() {
    std::string_view found;
    std::apply([&](const auto&... p) {
        ((found = found.empty() && std::is_same_v<typename std::remove_cvref_t<decltype(p)>::type, Net> ? p.name : found),
         ...);
    }, detail::preset_list);
    return found;
}

}  // namespace minitrain
