// minitrain/train/progress.hpp
// The progress line and the metrics file: what a run tells the person watching it and the tools after it.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include <fcntl.h>
#include <unistd.h>

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

/// Appends one JSON object per line to <out_dir>/metrics.jsonl. Each line goes to the file in one write(2)
/// on an O_APPEND descriptor (nothing is buffered in the process: a crash loses nothing written), and a
/// failed or short write (a full disk, a quota) is an Error naming the file, so a run never goes on
/// with its metrics silently lost.
class MetricsLog {
public:
    explicit MetricsLog(const std::filesystem::path& path) : path_(path) {
        std::error_code ec;
        if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
        if (fd_ < 0) {
            const int err = errno;
            detail::fail(path.string(), ": cannot open the metrics file for appending: ", std::strerror(err));
        }
    }
    MetricsLog(const MetricsLog&) = delete;
    MetricsLog& operator=(const MetricsLog&) = delete;
    ~MetricsLog() {
        if (fd_ >= 0) ::close(fd_);
    }

    void write(const nlohmann::json& j) {
        // A sample cut inside a UTF-8 sequence is not valid UTF-8: write U+FFFD for the broken bytes.
        const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + '\n';
        const char* p = line.data();
        std::size_t left = line.size();
        while (left > 0) {
            const ssize_t w = ::write(fd_, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                const int err = w < 0 ? errno : ENOSPC;
                detail::fail(path_.string(), ": cannot append to the metrics file: ", std::strerror(err),
                             " (the run stops rather than lose its metrics; free space and resume)");
            }
            p += w;
            left -= std::size_t(w);
        }
        if (on_write) on_write(j);
    }
    const std::filesystem::path& path() const { return path_; }

    /// Called with every line once it is in the file (the Trainer's RunLog: TensorBoard events).
    std::function<void(const nlohmann::json&)> on_write;

private:
    std::filesystem::path path_;
    int fd_ = -1;
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
