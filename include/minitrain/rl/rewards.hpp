// minitrain/rl/rewards.hpp
// Rewards for policy-gradient fine-tuning (GRPO / CISPO): a reward is any C++ callable that scores one
// sampled completion, and the rule rewards the programs offer by name:
//
//   exact_match   1 if the reply, trimmed of surrounding white space, equals the reference answer (the last
//                 assistant message of the prompt's JSONL record), else 0
//   final_number  1 if the last number in the reply equals the last number in the reference, else 0: the
//                 answer is read off the end, as GSM8K is scored, so a reply may show its working first
//                 ("7 x 8 = 56" and "56" both earn it for a reference "56")
//   format        1 if the reply ended with <|im_end|> within the generation budget, else 0 (it finished)
//   length        -length_penalty per generated token (keeps replies short)
//
// "exact_match+format" sums them. A reward model trained on preference pairs plugs in as a callable too
// (reward_model_reward, train/reward.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace minitrain {

/// One sampled completion, as a reward sees it.
struct Completion {
    std::string_view prompt;     // the whole prompt as ChatML text (its ids decoded), ending "<|im_start|>assistant\n"
    std::string_view text;       // the reply, decoded, without the end-of-turn token
    std::string_view reference;  // the record's reference answer ("" when it has none)
    int tokens = 0;              // generated tokens (the end-of-turn token included)
    bool finished = false;       // it ended with the end-of-turn token rather than running out of budget
};

/// Scores one completion; must be deterministic for runs to reproduce.
using RewardFn = std::function<double(const Completion&)>;

namespace detail {
inline std::string_view trim(std::string_view s) {
    const auto ws = " \t\r\n";
    const auto b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}
}  // namespace detail

inline double exact_match_reward(const Completion& c) {
    return !c.reference.empty() && detail::trim(c.text) == detail::trim(c.reference) ? 1.0 : 0.0;
}
inline double format_reward(const Completion& c) { return c.finished ? 1.0 : 0.0; }

/// The last number in a text: its last run of digits, with a '-' directly before it; "" when there is none.
inline std::string_view last_number(std::string_view s) {
    const auto is_digit = [](char ch) { return ch >= '0' && ch <= '9'; };
    std::size_t end = s.size();
    while (end > 0 && !is_digit(s[end - 1])) --end;
    std::size_t begin = end;
    while (begin > 0 && is_digit(s[begin - 1])) --begin;
    if (begin > 0 && begin < end && s[begin - 1] == '-') --begin;
    return s.substr(begin, end - begin);
}

inline double final_number_reward(const Completion& c) {
    const std::string_view want = last_number(c.reference);
    return !want.empty() && last_number(c.text) == want ? 1.0 : 0.0;
}

/// The sum of the named rule rewards, e.g. "exact_match+format" or "exact_match+length".
inline RewardFn rule_reward(const std::string& spec, double length_penalty = 0.0) {
    std::vector<RewardFn> parts;
    std::size_t at = 0;
    while (at <= spec.size()) {
        const std::size_t end = std::min(spec.find('+', at), spec.size());
        const std::string name(detail::trim(std::string_view(spec).substr(at, end - at)));
        if (name == "exact_match")
            parts.push_back(exact_match_reward);
        else if (name == "final_number")
            parts.push_back(final_number_reward);
        else if (name == "format")
            parts.push_back(format_reward);
        else if (name == "length")
            parts.push_back([length_penalty](const Completion& c) { return -length_penalty * c.tokens; });
        else
            detail::fail("reward: unknown rule reward '", name, "' in '", spec,
                         "' (expected exact_match, final_number, format or length, joined with '+')");
        at = end + 1;
    }
    return [parts = std::move(parts)](const Completion& c) {
        double r = 0;
        for (const RewardFn& f : parts) r += f(c);
        return r;
    };
}

}  // namespace minitrain
