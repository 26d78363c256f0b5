// minitrain/schedule/schedule.hpp
// Learning-rate schedules: `Schedule<Kind>` maps a step to a learning rate. Kind is a tag struct
// (Cosine, WarmupCosine, WSD, Constant) with a name, a validation and a pure function of
// (ScheduleOptions, step); a schedule has no state besides the step, so the step in a checkpoint is the
// whole schedule state. The formulas are those of the projects they come from, written in the same
// operation order so that the double results agree with the Python originals.
//
// A user-defined schedule is one more tag:
//   struct Linear {
//       static constexpr std::string_view name = "linear";
//       static void validate(const ScheduleOptions& o) { MT_CHECK(o.total_steps > 0, "..."); }
//       static double lr(const ScheduleOptions& o, std::int64_t t) { return o.lr * (1.0 - double(t) / o.total_steps); }
//   };
//   Schedule<Linear> s({.lr = 1e-3, .total_steps = 1000});
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>
#include <string_view>

#include "../core/error.hpp"

namespace minitrain {

/// Every knob of every schedule; each kind reads the fields it needs and validates them.
struct ScheduleOptions {
    double lr = 6e-4;                 // peak learning rate
    double min_lr = 6e-5;             // WarmupCosine: floor after decay (nanoGPT: lr / 10)
    std::int64_t warmup_steps = 0;    // WarmupCosine: linear warmup length
    std::int64_t total_steps = 0;     // steps of the run (Cosine, WSD; WarmupCosine's default decay_steps)
    double warmup_ratio = 0.0;        // WSD: warmup = round(warmup_ratio * total_steps)
    double warmdown_ratio = 0.2;      // WSD: warmdown = round(warmdown_ratio * total_steps)
    double final_lr_frac = 0.0;       // WSD: lr multiplier at the last step
    std::int64_t decay_steps = 0;     // WarmupCosine: step where min_lr is reached; 0 = total_steps
};

/// What a schedule tag must provide.
template <class Kind>
concept ScheduleKind = requires(const ScheduleOptions& o, std::int64_t t) {
    { Kind::name } -> std::convertible_to<std::string_view>;
    Kind::validate(o);
    { Kind::lr(o, t) } -> std::convertible_to<double>;
};

namespace detail {
/// Python's round(): halves go to the even neighbour (round(2.5) == 2), whatever the FP rounding mode.
inline double round_half_even(double x) {
    double r = std::round(x);  // halves away from zero
    if (std::abs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
    return r;
}
}  // namespace detail

// ----------------------------------------------------------------------------------------------------
// Kinds

/// MiniMind's cosine: lr * (0.1 + 0.45 * (1 + cos(pi * t / T))), from lr at t = 0 to lr / 10 at t = T
/// (held there after T). No warmup.
struct Cosine {
    static constexpr std::string_view name = "cosine";
    static void validate(const ScheduleOptions& o) {
        MT_CHECK(o.total_steps > 0, "Schedule<Cosine>: total_steps must be > 0, got ", o.total_steps);
    }
    static double lr(const ScheduleOptions& o, std::int64_t step) {
        const double t = double(std::min(step, o.total_steps));
        return o.lr * (0.1 + 0.45 * (1 + std::cos(std::numbers::pi * t / double(o.total_steps))));
    }
};

/// nanoGPT's warmup + cosine: lr * (t+1) / (warmup+1) during warmup, then a cosine from lr down to
/// min_lr at decay_steps (total_steps when decay_steps is 0), min_lr after.
struct WarmupCosine {
    static constexpr std::string_view name = "warmup_cosine";
    static std::int64_t decay_end(const ScheduleOptions& o) { return o.decay_steps > 0 ? o.decay_steps : o.total_steps; }
    static void validate(const ScheduleOptions& o) {
        MT_CHECK(o.warmup_steps >= 0, "Schedule<WarmupCosine>: warmup_steps must be >= 0, got ", o.warmup_steps);
        MT_CHECK(o.decay_steps >= 0, "Schedule<WarmupCosine>: decay_steps must be >= 0 (0 = total_steps), got ",
                 o.decay_steps);
        MT_CHECK(decay_end(o) > 0, "Schedule<WarmupCosine>: total_steps (or decay_steps) must be > 0, got total_steps ",
                 o.total_steps, " and decay_steps ", o.decay_steps);
        MT_CHECK(decay_end(o) > o.warmup_steps, "Schedule<WarmupCosine>: decay_steps (total_steps when decay_steps is 0) = ",
                 decay_end(o), " must exceed warmup_steps = ", o.warmup_steps);
        MT_CHECK(o.min_lr >= 0, "Schedule<WarmupCosine>: min_lr must be >= 0, got ", o.min_lr);
    }
    static double lr(const ScheduleOptions& o, std::int64_t step) {
        const std::int64_t warmup = o.warmup_steps, decay = decay_end(o);
        if (step < warmup) return o.lr * double(step + 1) / double(warmup + 1);
        if (step > decay) return o.min_lr;
        const double ratio = double(step - warmup) / double(decay - warmup);
        const double coeff = 0.5 * (1.0 + std::cos(std::numbers::pi * ratio));
        return o.min_lr + coeff * (o.lr - o.min_lr);
    }
};

/// nanochat's warmup-stable-decay: linear warmup over round(warmup_ratio*T) steps to lr, flat, then a
/// linear warmdown over the last round(warmdown_ratio*T) steps to lr * final_lr_frac at t = T (held
/// there after T). Rounding is Python's (half to even).
struct WSD {
    static constexpr std::string_view name = "wsd";
    static void validate(const ScheduleOptions& o) {
        MT_CHECK(o.total_steps > 0, "Schedule<WSD>: total_steps must be > 0, got ", o.total_steps);
        MT_CHECK(o.warmup_ratio >= 0 && o.warmup_ratio <= 1, "Schedule<WSD>: warmup_ratio must be in [0, 1], got ",
                 o.warmup_ratio);
        MT_CHECK(o.warmdown_ratio >= 0 && o.warmdown_ratio <= 1,
                 "Schedule<WSD>: warmdown_ratio must be in [0, 1], got ", o.warmdown_ratio);
        MT_CHECK(o.warmup_ratio + o.warmdown_ratio <= 1, "Schedule<WSD>: warmup_ratio + warmdown_ratio must be <= 1, got ",
                 o.warmup_ratio, " + ", o.warmdown_ratio);
        MT_CHECK(o.final_lr_frac >= 0, "Schedule<WSD>: final_lr_frac must be >= 0, got ", o.final_lr_frac);
    }
    static double multiplier(const ScheduleOptions& o, std::int64_t step) {
        const std::int64_t T = o.total_steps, t = std::min(step, T);
        const double warmup = detail::round_half_even(o.warmup_ratio * double(T));
        const double warmdown = detail::round_half_even(o.warmdown_ratio * double(T));
        if (double(t) < warmup) return double(t + 1) / warmup;
        if (double(t) <= double(T) - warmdown) return 1.0;
        const double progress = double(T - t) / warmdown;
        return progress * 1.0 + (1 - progress) * o.final_lr_frac;
    }
    static double lr(const ScheduleOptions& o, std::int64_t step) { return o.lr * multiplier(o, step); }
};

/// The same learning rate at every step.
struct Constant {
    static constexpr std::string_view name = "constant";
    static void validate(const ScheduleOptions&) {}
    static double lr(const ScheduleOptions& o, std::int64_t) { return o.lr; }
};

// ----------------------------------------------------------------------------------------------------

/// `Schedule<Cosine> s({.lr = 5e-4, .total_steps = 10000}); double lr = s(step);`
template <class Kind>
struct Schedule {
    static_assert(ScheduleKind<Kind>,
                  "minitrain::Schedule<Kind>: Kind must be a schedule tag such as Cosine, WarmupCosine, WSD or "
                  "Constant: a struct with `static constexpr std::string_view name`, `static void "
                  "validate(const ScheduleOptions&)` and `static double lr(const ScheduleOptions&, std::int64_t step)`");

    using Options = ScheduleOptions;
    static constexpr std::string_view name = Kind::name;

    /// Validates the options for this kind (minitrain::Error naming the field otherwise).
    explicit Schedule(ScheduleOptions o) : options_(o) {
        MT_CHECK(std::isfinite(o.lr) && o.lr >= 0, "Schedule<", name, ">: lr must be finite and >= 0, got ", o.lr);
        Kind::validate(options_);
    }

    /// Learning rate for optimizer step `step` (0-based: the first update uses step 0).
    double operator()(std::int64_t step) const {
        MT_CHECK(step >= 0, "Schedule<", name, ">: step must be >= 0, got ", step);
        return Kind::lr(options_, step);
    }

    const ScheduleOptions& options() const { return options_; }

private:
    ScheduleOptions options_;
};

}  // namespace minitrain
