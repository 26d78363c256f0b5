// minitrain/rl/advantages.hpp
// Group-relative advantages (GRPO, Shao et al. 2024): each prompt's G samples are scored against each
// other, so no value model is needed:
//
//   A[i] = clamp((r[i] - mean_g) / (std_g + 1e-4), -10, 10)      for sample i of group g
//
// with std the unbiased standard deviation of the group's rewards, as torch.std computes it in MiniMind's
// train_grpo.py; a group whose samples all scored the same gets advantage 0 (it teaches nothing).
// Rewards are laid out group after group: sample j of prompt p is index p * G + j.
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

}  // namespace minitrain
