// minitrain/util/rl_stage.hpp
// What the RL programs (examples/grpo.cpp, examples/ppo.cpp) share beyond StageFlags: a plain prompt
// file turned into the conversation JSONL the RL tasks read, and the reward of --reward_model DIR.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../rl/rewards.hpp"
#include "../train/config.hpp"
#include "../train/reward.hpp"
#include "presets.hpp"

namespace minitrain {

/// A plain prompt file (one prompt a line) as conversation JSONL with empty replies (no reference
/// answers), written to OUT_DIR/prompts.jsonl; returns that path.
inline std::string prompts_as_jsonl(const std::string& txt, const std::string& out_dir) {
    namespace fs = std::filesystem;
    std::ifstream in(txt);
    MT_CHECK(in, txt, ": cannot open the prompt file");
    fs::create_directories(out_dir);
    const fs::path out = fs::path(out_dir) / "prompts.jsonl";
    std::ofstream o(out);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        nlohmann::json conv = {{{"role", "user"}, {"content", line}}, {{"role", "assistant"}, {"content", ""}}};
        o << nlohmann::json{{"conversations", conv}}.dump() << '\n';
        ++n;
    }
    MT_CHECK(n > 0 && o, txt, ": no prompts (one per line expected), or ", out.string(), " could not be written");
    return out.string();
}

/// The reward of --reward_model DIR (plus the rule rewards of --reward when `with_rules`): the reward
/// model's preset from its config.json, its tokenizer checked against the policy's.
inline RewardFn reward_model_from_flags(const std::string& dir, const TrainConfig& cfg, bool with_rules) {
    MT_CHECK(!cfg.tokenizer.empty(), "--reward_model ", dir, ": the policy has no tokenizer (--tokenizer) to compare "
             "with the reward model's");
    check_reward_tokenizer(dir, cfg.tokenizer);
    RewardFn rm;
    with_preset(preset_for_folder(dir), [&]<class Net>() { rm = reward_model_reward<Net>(dir); });
    if (!with_rules) return rm;
    return [rm, rules = rule_reward(cfg.reward, cfg.length_penalty)](const Completion& c) { return rm(c) + rules(c); };
}

}  // namespace minitrain
