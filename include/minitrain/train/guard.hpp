// minitrain/train/guard.hpp
// StepGuard: decides whether an optimizer step's update is applied, and when a run has diverged.
//
//   non-finite   the step's loss or global gradient norm is NaN or Inf: always skipped (as GradScaler
//                skips an overflowed step); the weights keep their values from before the step
//   outlier      with outlier_sigma > 0, a loss or gradient norm more than outlier_sigma standard deviations
//                above the mean of the last `window` applied steps (llm.c's outlier detector): skipped
//   diverged     max_bad_steps skipped steps in a row: the trainer stops with TrainingDiverged
//
// A skipped step still consumes its batch and advances the step counter and the schedule (as in llm.c), so
// the data order does not depend on what was skipped. The guard's counters and window are part of the
// training state: a resumed run judges its steps exactly as the uninterrupted run would.
#pragma once

#include <cmath>
#include <cstdint>
#include <deque>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace minitrain {

/// Thrown by the trainer when max_bad_steps steps in a row were skipped: the run is diverging.
class TrainingDiverged : public Error {
public:
    using Error::Error;
};

class StepGuard {
public:
    enum class Verdict { apply, non_finite, outlier };

    struct Options {
        double outlier_sigma = 0;  // > 0: skip steps whose loss or norm z-score exceeds this (llm.c: 3 to 5)
        int max_bad_steps = 5;     // skipped steps in a row that stop the run
        int window = 128;          // applied steps the outlier statistics look back over
        int min_history = 16;      // no outlier judgement before this many applied steps
    };

    StepGuard() = default;
    explicit StepGuard(Options o) : o_(o) {}

    /// Judges one step from its mean loss and its gradient norm before clipping, and records the verdict.
    Verdict judge(double loss, double norm) {
        Verdict v = Verdict::apply;
        if (!std::isfinite(loss) || !std::isfinite(norm))
            v = Verdict::non_finite;
        else if (o_.outlier_sigma > 0 && (z(losses_, loss) > o_.outlier_sigma || z(norms_, norm) > o_.outlier_sigma))
            v = Verdict::outlier;
        if (v == Verdict::apply) {
            consecutive_ = 0;
            if (o_.outlier_sigma > 0) {
                push(losses_, loss);
                push(norms_, norm);
            }
        } else {
            ++consecutive_;
            ++skipped_;
            (v == Verdict::non_finite ? non_finite_ : outliers_) += 1;
        }
        return v;
    }

    /// True once max_bad_steps steps in a row have been skipped.
    bool diverged() const { return o_.max_bad_steps > 0 && consecutive_ >= o_.max_bad_steps; }
    std::int64_t skipped() const { return skipped_; }
    std::int64_t consecutive() const { return consecutive_; }
    std::int64_t non_finite() const { return non_finite_; }
    std::int64_t outliers() const { return outliers_; }
    const Options& options() const { return o_; }

    /// The z-score of `x` against the window of `which` (0 until min_history values are there).
    double loss_z(double x) const { return z(losses_, x); }
    double norm_z(double x) const { return z(norms_, x); }

    /// The counters and the window, for checkpoints (doubles round-trip exactly through JSON).
    nlohmann::json state() const {
        return {{"skipped", skipped_}, {"consecutive", consecutive_}, {"non_finite", non_finite_},
                {"outliers", outliers_}, {"losses", losses_},          {"norms", norms_}};
    }
    void restore(const nlohmann::json& j, const std::string& where) {
        try {
            skipped_ = j.at("skipped").get<std::int64_t>();
            consecutive_ = j.at("consecutive").get<std::int64_t>();
            non_finite_ = j.at("non_finite").get<std::int64_t>();
            outliers_ = j.at("outliers").get<std::int64_t>();
            losses_ = j.at("losses").get<std::deque<double>>();
            norms_ = j.at("norms").get<std::deque<double>>();
        } catch (const nlohmann::json::exception& e) {
            detail::fail(where, ": training state \"extra.guard\" is malformed: ", e.what());
        }
        MT_CHECK(skipped_ >= 0 && consecutive_ >= 0 && consecutive_ <= skipped_ && losses_.size() == norms_.size() &&
                     int(losses_.size()) <= o_.window,
                 where, ": training state \"extra.guard\" has inconsistent counters or a window longer than ", o_.window);
    }

private:
    void push(std::deque<double>& w, double x) const {
        w.push_back(x);
        while (int(w.size()) > o_.window) w.pop_front();
    }
    double z(const std::deque<double>& w, double x) const {
        if (int(w.size()) < o_.min_history) return 0;
        double mean = 0;
        for (double v : w) mean += v;
        mean /= double(w.size());
        double var = 0;
        for (double v : w) var += (v - mean) * (v - mean);
        const double sd = std::sqrt(var / double(w.size()));
        return sd > 0 ? (x - mean) / sd : 0;
    }

    Options o_;
    std::int64_t skipped_ = 0, consecutive_ = 0, non_finite_ = 0, outliers_ = 0;
    std::deque<double> losses_, norms_;  // applied steps only, newest last
};

}  // namespace minitrain
