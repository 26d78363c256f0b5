// minitrain/log/progress_bar.hpp
// A progress bar with rate and ETA for the long steps before training (tokenizer training, prepare_data).
//
//   ProgressBar bar("prepare", total_bytes, "B");
//   bar.update(done_bytes, "12034 docs");   // cheap: redraws at most 10 times a second
//   bar.finish("done");
//
// On a terminal one line is redrawn in place:
//   prepare [##########..........]  52.3% | 61.2 MB / 117 MB | 24.1 MB/s | ETA 2s | 12034 docs
// When the stream is not a terminal (a log file, CI), a plain line every 10 seconds and one at the end,
// so that logs stay readable. No library: Debian has none for C++ that is worth a dependency here.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace minitrain {

class ProgressBar {
public:
    /// `total` in `unit`s ("B" prints as kB/MB/GB; anything else as a plain count); `enabled` false: silent.
    ProgressBar(std::string label, double total, std::string unit, bool enabled = true, FILE* out = stderr)
        : label_(std::move(label)), unit_(std::move(unit)), total_(total), out_(out), on_(enabled),
          tty_(enabled && ::isatty(::fileno(out))), t0_(clock::now()), last_(t0_) {}

    /// `done` of total so far; `extra` is appended to the line.
    void update(double done, const std::string& extra = {}) {
        if (!on_) return;
        const auto now = clock::now();
        if (now - last_ < (tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000))) return;
        last_ = now;
        draw(done, extra, false);
    }

    /// The last line (the bar full, the total time); on a terminal it stays on screen.
    void finish(const std::string& extra = {}) {
        if (!on_ || finished_) return;
        finished_ = true;
        draw(total_, extra, true);
    }

    /// The line for `done` after `seconds` (what update draws; for tests).
    std::string line(double done, double seconds, const std::string& extra, bool tty) const {
        const double frac = total_ > 0 ? std::clamp(done / total_, 0.0, 1.0) : 0.0;
        const double rate = seconds > 0 ? done / seconds : 0;
        std::string s = label_ + " ";
        if (tty) {
            const int width = 24, full = int(frac * width + 0.5);
            s += "[" + std::string(std::size_t(full), '#') + std::string(std::size_t(width - full), '.') + "] ";
        }
        char b[160];
        std::snprintf(b, sizeof b, "%5.1f%% | %s / %s | %s/s", 100 * frac, amount(done).c_str(), amount(total_).c_str(),
                      amount(rate).c_str());
        s += b;
        if (rate > 0 && done < total_) s += " | ETA " + duration(std::max(0.0, total_ - done) / rate);
        else s += " | " + duration(seconds);
        if (!extra.empty()) s += " | " + extra;
        return s;
    }

private:
    using clock = std::chrono::steady_clock;

    void draw(double done, const std::string& extra, bool last) {
        const double s = std::chrono::duration<double>(clock::now() - t0_).count();
        const std::string l = line(done, s, extra, tty_);
        if (tty_) std::fprintf(out_, "\r\033[K%s%s", l.c_str(), last ? "\n" : "");
        else std::fprintf(out_, "%s\n", l.c_str());
        std::fflush(out_);
    }

    std::string amount(double x) const {
        char b[32];
        if (unit_ == "B") {
            if (x >= 1e9) std::snprintf(b, sizeof b, "%.2f GB", x / 1e9);
            else if (x >= 1e6) std::snprintf(b, sizeof b, "%.1f MB", x / 1e6);
            else std::snprintf(b, sizeof b, "%.0f kB", x / 1e3);
        } else if (x >= 1e6) {
            std::snprintf(b, sizeof b, "%.2fM %s", x / 1e6, unit_.c_str());
        } else {
            std::snprintf(b, sizeof b, "%.0f %s", x, unit_.c_str());
        }
        return b;
    }
    static std::string duration(double seconds) {
        const long t = long(seconds + 0.5);
        char b[32];
        if (t >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, t % 3600 / 60);
        else if (t >= 60) std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
        else std::snprintf(b, sizeof b, "%lds", t);
        return b;
    }

    std::string label_, unit_;
    double total_;
    FILE* out_;
    bool on_, tty_, finished_ = false;
    clock::time_point t0_, last_;
};

}  // namespace minitrain
