// Learning-rate schedules: values at chosen steps worked out by hand (the closed forms at the ends,
// the midpoint and the warmup edges), Python's rounding in WSD, validation messages naming the field.
#include <doctest/doctest.h>

#include <minitrain/schedule/schedule.hpp>

#include <cmath>
#include <cstdint>

using namespace minitrain;

namespace {
struct NotASchedule {};
static_assert(ScheduleKind<Cosine> && ScheduleKind<WarmupCosine> && ScheduleKind<WSD> && ScheduleKind<Constant>);
static_assert(!ScheduleKind<NotASchedule> && !ScheduleKind<int>);
static_assert(Schedule<Cosine>::name == "cosine" && Schedule<WSD>::name == "wsd");

/// A user-defined kind plugs in like the built-in ones.
struct Halving {
    static constexpr std::string_view name = "halving";
    static void validate(const ScheduleOptions&) {}
    static double lr(const ScheduleOptions& o, std::int64_t t) { return o.lr / double(std::int64_t(1) << t); }
};

doctest::Approx near(double x) { return doctest::Approx(x).epsilon(1e-13); }
}  // namespace

TEST_CASE("Cosine (MiniMind): lr at 0, 0.55 lr at T/2, lr/10 at T and after") {
    Schedule<Cosine> s({.lr = 1e-3, .total_steps = 100});
    CHECK(s(0) == near(1e-3));
    CHECK(s(50) == near(0.55e-3));
    CHECK(s(100) == near(1e-4));
    CHECK(s(250) == near(1e-4));
    // cos(pi/4) = sqrt(2)/2 and cos(3pi/4) = -sqrt(2)/2
    CHECK(s(25) == near(1e-3 * (0.1 + 0.45 * (1 + std::sqrt(2.0) / 2))));
    CHECK(s(75) == near(1e-3 * (0.1 + 0.45 * (1 - std::sqrt(2.0) / 2))));
    for (std::int64_t t = 1; t <= 100; ++t) CHECK(s(t) < s(t - 1));
}

TEST_CASE("WarmupCosine (nanoGPT): linear warmup to lr, cosine to min_lr at decay_steps, min_lr after") {
    Schedule<WarmupCosine> s({.lr = 6e-4, .min_lr = 6e-5, .warmup_steps = 10, .total_steps = 110});
    CHECK(s(0) == near(6e-4 / 11));
    CHECK(s(4) == near(6e-4 * 5 / 11));
    CHECK(s(9) == near(6e-4 * 10 / 11));
    CHECK(s(10) == near(6e-4));                         // ratio 0: the peak
    CHECK(s(60) == near(6e-5 + 0.5 * (6e-4 - 6e-5)));   // ratio 1/2
    CHECK(s(85) == near(6e-5 + 0.5 * (1 - std::sqrt(2.0) / 2) * (6e-4 - 6e-5)));  // ratio 3/4
    CHECK(s(110) == near(6e-5));                        // ratio 1
    CHECK(s(111) == 6e-5);
    CHECK(s(100000) == 6e-5);

    // An explicit decay_steps ends the decay early; no warmup starts at the peak.
    Schedule<WarmupCosine> early({.lr = 1.0, .min_lr = 0.0, .warmup_steps = 0, .total_steps = 1000, .decay_steps = 40});
    CHECK(early(0) == near(1.0));
    CHECK(early(20) == near(0.5));
    CHECK(early(40) == doctest::Approx(0.0).epsilon(1e-13));
    CHECK(early(41) == 0.0);
    CHECK(early(500) == 0.0);
}

TEST_CASE("WSD (nanochat): warmup, plateau, linear warmdown to final_lr_frac") {
    // T = 100: warmup round(0.1 * 100) = 10 steps, warmdown round(0.2 * 100) = 20 steps.
    Schedule<WSD> s({.lr = 1e-3, .total_steps = 100, .warmup_ratio = 0.1, .warmdown_ratio = 0.2, .final_lr_frac = 0.1});
    CHECK(s(0) == near(1e-4));    // (0 + 1) / 10
    CHECK(s(4) == near(5e-4));
    CHECK(s(9) == near(1e-3));
    for (std::int64_t t = 10; t <= 80; ++t) CHECK(s(t) == 1e-3);  // plateau up to T - warmdown
    CHECK(s(81) == near(1e-3 * (0.95 + 0.05 * 0.1)));   // progress 19/20
    CHECK(s(90) == near(1e-3 * (0.5 + 0.5 * 0.1)));     // progress 1/2
    CHECK(s(100) == near(1e-4));                        // final_lr_frac * lr
    CHECK(s(120) == near(1e-4));                        // held after T

    // Python rounds halves to even: round(2.5) == 2 for both warmup and warmdown here.
    Schedule<WSD> r({.lr = 1.0, .total_steps = 10, .warmup_ratio = 0.25, .warmdown_ratio = 0.25, .final_lr_frac = 0.0});
    CHECK(r(0) == near(0.5));   // (0 + 1) / 2, not 1/3
    CHECK(r(1) == near(1.0));
    CHECK(r(8) == 1.0);         // 8 <= 10 - 2
    CHECK(r(9) == near(0.5));   // progress (10 - 9) / 2
    CHECK(r(10) == 0.0);
    // ... and 3.5 goes up to 4.
    Schedule<WSD> up({.lr = 1.0, .total_steps = 14, .warmup_ratio = 0.25, .warmdown_ratio = 0.0});
    CHECK(up(2) == near(0.75));  // (2 + 1) / 4
    CHECK(up(14) == 1.0);        // no warmdown: flat to the end

    // Defaults: no warmup, warmdown over the last 20%, down to zero.
    Schedule<WSD> d({.lr = 2.0, .total_steps = 50});
    CHECK(d(0) == 2.0);
    CHECK(d(40) == 2.0);
    CHECK(d(45) == near(1.0));
    CHECK(d(50) == 0.0);
}

TEST_CASE("Constant, and a user-defined kind") {
    Schedule<Constant> c({.lr = 3e-4});
    CHECK(c(0) == 3e-4);
    CHECK(c(123456789) == 3e-4);
    Schedule<Halving> h({.lr = 1.0});
    CHECK(h(3) == 0.125);
    CHECK(Schedule<Halving>::name == "halving");
}

TEST_CASE("schedule options are validated, errors name the field") {
    CHECK_THROWS_WITH_AS(Schedule<Cosine>({.lr = 1e-3}), doctest::Contains("total_steps"), Error);
    CHECK_THROWS_WITH_AS(Schedule<Cosine>({.lr = -1.0, .total_steps = 10}), doctest::Contains("lr"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WarmupCosine>({.warmup_steps = 10, .total_steps = 10}),
                         doctest::Contains("warmup_steps"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WarmupCosine>({.warmup_steps = -1, .total_steps = 10}),
                         doctest::Contains("warmup_steps"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WarmupCosine>({.min_lr = -1.0, .total_steps = 10}), doctest::Contains("min_lr"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WarmupCosine>({.total_steps = 0}), doctest::Contains("total_steps"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WSD>({.total_steps = 0}), doctest::Contains("total_steps"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WSD>({.total_steps = 10, .warmdown_ratio = 1.5}), doctest::Contains("warmdown_ratio"),
                         Error);
    CHECK_THROWS_WITH_AS(Schedule<WSD>({.total_steps = 10, .warmup_ratio = -0.1}), doctest::Contains("warmup_ratio"),
                         Error);
    CHECK_THROWS_WITH_AS(Schedule<WSD>({.total_steps = 10, .warmup_ratio = 0.7, .warmdown_ratio = 0.5}),
                         doctest::Contains("warmup_ratio + warmdown_ratio"), Error);
    CHECK_THROWS_WITH_AS(Schedule<WSD>({.total_steps = 10, .final_lr_frac = -1.0}), doctest::Contains("final_lr_frac"),
                         Error);
    Schedule<Constant> c({.lr = 1.0});
    CHECK_THROWS_WITH_AS(c(-1), doctest::Contains("step"), Error);
}
