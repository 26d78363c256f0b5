// minitrain/train/resume.hpp
// What a checkpoint remembers of the run that wrote it, so that a resume can say what changed.
//
//   run_settings(cfg)         the TrainConfig fields that decide the weights a run produces
//   data_fingerprint(pattern) the files behind a data path or glob: names, sizes, a hash of each file's head
//   compare_runs(saved, now)  every difference, each marked as breaking exactness or not
//
// The trainer stores the first two in the training state and, on resume, refuses a run whose result would
// differ from the uninterrupted one (unless allow_changed_resume), and notes the harmless differences.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "config.hpp"

namespace minitrain {

/// The settings that change what a run computes (besides the batch shape, which the trainer checks on its
/// own, and the step count, which only stretches the schedule). Logging and checkpoint knobs are not here.
inline nlohmann::json run_settings(const TrainConfig& c) {
    return {{"vocab_size", c.vocab_size},   {"shuffle", c.shuffle},
            {"seed", std::to_string(c.seed)}, {"learning_rate", c.learning_rate},
            {"min_lr", c.min_lr},           {"weight_decay", c.weight_decay},
            {"beta1", c.beta1},             {"beta2", c.beta2},
            {"eps", c.eps},                 {"momentum", c.momentum},
            {"grad_clip", c.grad_clip},     {"warmup_steps", c.warmup_steps},
            {"warmdown_ratio", c.warmdown_ratio}, {"final_lr_frac", c.final_lr_frac},
            {"dropout", c.dropout},         {"lora_dropout", c.lora_dropout},
            {"dtype", c.dtype},             {"dpo_beta", c.dpo_beta},
            {"val_fraction", c.val_fraction}, {"skip_bad_records", c.skip_bad_records},
            {"skip_outlier_sigma", c.skip_outlier_sigma},
            {"rl", {{"loss_type", c.loss_type}, {"num_generations", c.num_generations}, {"beta", c.beta},
                    {"epsilon", c.epsilon}, {"epsilon_high", c.epsilon_high}, {"temperature", c.temperature},
                    {"top_k", c.top_k}, {"max_gen_len", c.max_gen_len}, {"grpo_iterations", c.grpo_iterations},
                    {"reward", c.reward}, {"length_penalty", c.length_penalty}}},
            {"ppo", {{"vf_coef", c.vf_coef}, {"cliprange_value", c.cliprange_value}, {"gamma", c.gamma}, {"lam", c.lam}}},
            {"distill", {{"teacher", c.teacher}, {"alpha", c.distill_alpha}, {"temperature", c.distill_temperature}}}};
}

namespace detail {

/// FNV-1a over the first `limit` bytes of a file: cheap, and enough to notice other contents (a shard's
/// header holds its token count; a JSONL file's first records are its content).
inline std::uint64_t head_hash(const std::filesystem::path& p, std::size_t limit = std::size_t(1) << 16) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    std::vector<unsigned char> buf(limit);
    std::size_t got = 0;
    while (got < limit) {
        const ssize_t r = ::read(fd, buf.data() + got, limit - got);
        if (r <= 0) break;
        got += std::size_t(r);
    }
    ::close(fd);
    for (std::size_t i = 0; i < got; ++i) h = (h ^ buf[i]) * 0x100000001b3ull;
    return h;
}

}  // namespace detail

/// [{"file": basename, "bytes": size, "head": hash}, ...] for a path or a POSIX glob, sorted by path; an
/// empty array for an empty pattern. Basenames, not paths: the same data moved to another folder matches.
inline nlohmann::json data_fingerprint(const std::string& pattern) {
    nlohmann::json out = nlohmann::json::array();
    if (pattern.empty()) return out;
    std::vector<std::string> paths;
    glob_t g{};
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
        for (std::size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (paths.empty()) paths.push_back(pattern);
    for (const std::string& p : paths) {
        std::error_code ec;
        const auto size = std::filesystem::file_size(p, ec);
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(detail::head_hash(p)));
        out.push_back({{"file", std::filesystem::path(p).filename().string()},
                       {"bytes", ec ? std::int64_t(-1) : std::int64_t(size)},
                       {"head", hex}});
    }
    return out;
}

/// One difference between the saved run and this one.
struct RunDifference {
    std::string what;     // "learning_rate", "threads", "train_data"
    std::string saved;    // the saved run's value, as JSON text or a description
    std::string now;      // this run's
    bool breaks_exactness = true;  // the continued run no longer equals the uninterrupted one
};

/// Differences between two records {"settings": run_settings, "data": {name: data_fingerprint}, "threads"};
/// a key the saved record lacks (an older checkpoint) is not compared.
inline std::vector<RunDifference> compare_runs(const nlohmann::json& saved, const nlohmann::json& now) {
    std::vector<RunDifference> out;
    auto obj = [](const nlohmann::json& j, const char* k) {
        return j.is_object() && j.contains(k) ? j.at(k) : nlohmann::json();
    };
    const nlohmann::json s_set = obj(saved, "settings"), n_set = obj(now, "settings");
    if (s_set.is_object())
        for (auto it = n_set.begin(); it != n_set.end(); ++it)
            if (s_set.contains(it.key()) && s_set.at(it.key()) != it.value())
                out.push_back({it.key(), s_set.at(it.key()).dump(), it.value().dump(), true});
    const nlohmann::json s_data = obj(saved, "data"), n_data = obj(now, "data");
    if (s_data.is_object())
        for (auto it = n_data.begin(); it != n_data.end(); ++it) {
            if (!s_data.contains(it.key()) || s_data.at(it.key()) == it.value()) continue;
            auto describe = [](const nlohmann::json& fp) {
                if (!fp.is_array() || fp.empty()) return std::string("no files");
                std::int64_t bytes = 0;
                for (const auto& f : fp) bytes += f.value("bytes", std::int64_t(0));
                return std::to_string(fp.size()) + " file" + (fp.size() == 1 ? "" : "s") + " starting with " +
                       fp[0].value("file", std::string("?")) + ", " + std::to_string(bytes) + " bytes";
            };
            const bool breaks = it.key() != std::string("val_data");  // validation data changes no weight
            out.push_back({it.key(), describe(s_data.at(it.key())), describe(it.value()), breaks});
        }
    const nlohmann::json s_thr = obj(saved, "threads"), n_thr = obj(now, "threads");
    if (s_thr.is_number_integer() && n_thr.is_number_integer() && s_thr != n_thr)
        out.push_back({"threads", s_thr.dump(), n_thr.dump(), true});
    return out;
}

}  // namespace minitrain
