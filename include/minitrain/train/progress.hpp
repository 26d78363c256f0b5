// minitrain/train/progress.hpp
// The progress line and the metrics file: what a run tells the person watching it and the tools after it.
#pragma once

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace minitrain {

/// "1h02m03s", "4m05s", "12s".
inline std::string format_duration(double seconds) {
    if (!(seconds >= 0) || seconds > 1e8) return "?";
    long s = long(seconds + 0.5), h = s / 3600, m = s % 3600 / 60;
    char buf[32];
    if (h)
        std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", h, m, s % 60);
    else if (m)
        std::snprintf(buf, sizeof buf, "%ldm%02lds", m, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%lds", s);
    return buf;
}

/// Appends one JSON object per line to <out_dir>/metrics.jsonl (flushed each line: a crash loses nothing).
class MetricsLog {
public:
    explicit MetricsLog(const std::filesystem::path& path) : path_(path) {
        std::filesystem::create_directories(path.parent_path());
        out_.open(path, std::ios::app);
        MT_CHECK(out_.good(), path.string(), ": cannot open the metrics file for appending");
    }
    void write(const nlohmann::json& j) {
        out_ << j.dump() << '\n';
        out_.flush();
    }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    std::ofstream out_;
};

/// Wall-clock timer for steps; the ETA uses the mean over recent steps (the first, warm-up step excluded).
class StepTimer {
public:
    using clock = std::chrono::steady_clock;
    void start() { t0_ = clock::now(); }
    double stop() {
        double s = std::chrono::duration<double>(clock::now() - t0_).count();
        ++count_;
        if (count_ > 1 || first_is_all_) {
            mean_ = mean_n_ ? 0.9 * mean_ + 0.1 * s : s;
            ++mean_n_;
        } else {
            mean_ = s;
        }
        return s;
    }
    double mean() const { return mean_; }

private:
    clock::time_point t0_;
    long count_ = 0, mean_n_ = 0;
    double mean_ = 0;
    bool first_is_all_ = false;
};

}  // namespace minitrain
