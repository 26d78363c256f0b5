// minitrain/rl/advantages.hpp
// Group-relative advantages (GRPO, Shao et al. 2024): each prompt's G samples are scored against each
// other, so no value model is needed:
//
//   A[i] = clamp((r[i] - mean_g) / (std_g + 1e-4), -10, 10)      for sample i of group g
//
// with std the unbiased standard deviation of the group's rewards, as torch.std computes it in MiniMind's
// train_grpo.py; a group whose samples all scored the same gets advantage 0 (it teaches nothing).
// Rewards are laid out group after group: sample j of prompt p is index p * G + j.
//
// And PPO's per-token advantages from a value model (generalized advantage estimation, Schulman et al.
// 2016), as MiniMind's train_ppo.py computes them: over the n generated tokens k = 0 .. n-1 of a sequence
// (the counted positions of its row, in order), with the sequence's reward at its last token only,
//
//   delta[k] = reward[k] + gamma V[k+1] - V[k]        V[n] = 0 (nothing follows the last token)
//   A[k]     = delta[k] + gamma lambda A[k+1]          A[n] = 0
//   ret[k]   = A[k] + V[k]                            (the critic's target)
//
// then whitened over every counted token of the batch: A = (A - mean) / sqrt(var + 1e-8), var the
// population variance (MiniMind's masked mean / variance). Uncounted positions get 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.hpp"

namespace minitrain {

/// Per-batch reward statistics (host numbers, for logging).
struct RewardStats {
    double mean = 0;       // over all samples
    double std = 0;        // population standard deviation over all samples
    double group_std = 0;  // mean over groups of the within-group (unbiased) standard deviation
};

/// advantages[i] for rewards laid out group after group (groups of G); returns the statistics.
inline RewardStats group_advantages(std::span<const double> rewards, int G, std::span<float> advantages,
                                    double eps = 1e-4, double clamp = 10.0) {
    MT_CHECK(G >= 1, "group_advantages: the group size must be at least 1, found ", G);
    MT_CHECK(rewards.size() % std::size_t(G) == 0, "group_advantages: ", rewards.size(),
             " rewards are not a whole number of groups of ", G);
    MT_CHECK(advantages.size() == rewards.size(), "group_advantages: ", advantages.size(), " advantages for ",
             rewards.size(), " rewards");
    RewardStats s;
    const std::size_t n = rewards.size(), groups = n / std::size_t(G);
    for (std::size_t g = 0; g < groups; ++g) {
        const double* r = rewards.data() + g * std::size_t(G);
        double mean = 0;
        for (int j = 0; j < G; ++j) mean += r[j];
        mean /= G;
        double var = 0;
        for (int j = 0; j < G; ++j) var += (r[j] - mean) * (r[j] - mean);
        const double sd = G > 1 ? std::sqrt(var / (G - 1)) : 0.0;
        for (int j = 0; j < G; ++j)
            advantages[g * std::size_t(G) + std::size_t(j)] = float(std::clamp((r[j] - mean) / (sd + eps), -clamp, clamp));
        s.group_std += sd;
    }
    double mean = 0, var = 0;
    for (double r : rewards) mean += r;
    mean /= double(n);
    for (double r : rewards) var += (r - mean) * (r - mean);
    s.mean = mean;
    s.std = std::sqrt(var / double(n));
    s.group_std /= double(groups);
    return s;
}

/// Statistics of gae_advantages (host numbers): the advantages before whitening and the returns.
struct GaeStats {
    double advantage_mean = 0, advantage_std = 0;  // over the counted tokens, before whitening
    double return_mean = 0;
    std::int64_t tokens = 0;
};

/// Per-token GAE advantages and returns of R rows of T positions (the formula above). values (R*T): the
/// critic's value at each position; rewards (R): one per sequence, added at its last counted token;
/// counted (R*T): nonzero where a generated token is trained on. Writes advantages (whitened when
/// `whiten`) and returns (R*T), 0 where not counted. A row without counted tokens gets no reward.
inline GaeStats gae_advantages(std::span<const double> values, std::span<const double> rewards,
                               std::span<const std::uint8_t> counted, std::int64_t T, double gamma, double lambda,
                               std::span<double> advantages, std::span<double> returns, bool whiten = true,
                               double eps = 1e-8) {
    MT_CHECK(T >= 1 && values.size() % std::size_t(T) == 0, "gae_advantages: ", values.size(),
             " values are not a whole number of rows of ", T);
    const std::size_t N = values.size(), R = N / std::size_t(T);
    MT_CHECK(rewards.size() == R, "gae_advantages: ", rewards.size(), " rewards for ", R, " rows");
    MT_CHECK(counted.size() == N && advantages.size() == N && returns.size() == N, "gae_advantages: counted, "
             "advantages and returns must have ", N, " entries, found ", counted.size(), ", ", advantages.size(), ", ",
             returns.size());
    MT_CHECK(std::isfinite(gamma) && std::isfinite(lambda) && gamma >= 0 && lambda >= 0, "gae_advantages: gamma ", gamma,
             " and lambda ", lambda, " must be finite and >= 0");
    GaeStats s;
    double sum = 0, sum_ret = 0;
    for (std::size_t b = 0; b < R; ++b) {
        const std::size_t row = b * std::size_t(T);
        double next_value = 0, next_adv = 0;
        bool last = true;  // walking backwards: the first counted position met is the sequence's last token
        for (std::size_t t = std::size_t(T); t-- > 0;) {
            const std::size_t i = row + t;
            if (!counted[i]) {
                advantages[i] = returns[i] = 0;
                continue;
            }
            const double reward = last ? rewards[b] : 0.0;
            last = false;
            const double delta = reward + gamma * next_value - values[i];
            const double a = delta + gamma * lambda * next_adv;
            advantages[i] = a;
            returns[i] = a + values[i];
            next_value = values[i];
            next_adv = a;
            sum += a;
            sum_ret += returns[i];
            ++s.tokens;
        }
    }
    if (s.tokens == 0) return s;
    const double n = double(s.tokens), mean = sum / n;
    double var = 0;
    for (std::size_t i = 0; i < N; ++i)
        if (counted[i]) var += (advantages[i] - mean) * (advantages[i] - mean);
    var /= n;
    s.advantage_mean = mean;
    s.advantage_std = std::sqrt(var);
    s.return_mean = sum_ret / n;
    if (whiten) {
        const double inv = 1.0 / std::sqrt(var + eps);
        for (std::size_t i = 0; i < N; ++i) advantages[i] = counted[i] ? (advantages[i] - mean) * inv : 0.0;
    }
    return s;
}

}  // namespace minitrain
