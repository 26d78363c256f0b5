// minitrain/optim/grad_scaler.hpp
// Dynamic loss scaling for fp16 training (torch.cuda.amp.GradScaler's rules), written once for every
// backend: it only scales the loss's gradient seed, and reads and rescales the gradient slab through the
// backend's sum_squares and scale.
//
//   backward(loss * scale)                   the seed of backward is multiplied by scale()
//   found_inf = unscale(grads)               grads *= 1 / scale; found_inf when any is Inf or NaN
//   found_inf ? skip the optimizer step : step
//   update(found_inf)                        Inf/NaN: scale x 0.5, the clean-step count restarts, the skip
//                                            is counted; growth_interval clean steps in a row: scale x 2
//
// Why: fp16 keeps 5 exponent bits, so gradients below 2^-24 flush to zero; multiplying the loss by 2^16
// lifts them into range, and halving on overflow finds the largest scale that does not overflow. bf16
// has f32's exponent range and needs none of this (the trainer leaves the scaler off for bf16 and f32).
// The state (scale, clean steps, skipped steps) goes into checkpoints so that a resume continues exactly.
#pragma once

#include <cmath>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "../backend/cpu/optim.hpp"
#include "../memory/parameters.hpp"

namespace minitrain {

namespace detail {
// Outside the class, whose scale() would hide the backend's scale(B, tensor, factor).
template <class B>
bool grads_finite(const Tensor& g) { return std::isfinite(sum_squares(B{}, g)); }
template <class B>
void rescale_grads(const Tensor& g, double factor) { scale(B{}, g, factor); }
}  // namespace detail

class GradScaler {
public:
    struct Options {
        double init_scale = 65536.0;         // 2^16, as torch
        double growth_factor = 2.0;
        double backoff_factor = 0.5;
        std::int64_t growth_interval = 2000;  // clean steps in a row before the scale doubles
    };

    GradScaler() : GradScaler(Options{}) {}
    explicit GradScaler(Options o) : o_(o), scale_(o.init_scale) {
        MT_CHECK(o.init_scale > 0 && std::isfinite(o.init_scale), "GradScaler: init_scale must be positive and finite, got ",
                 o.init_scale);
        MT_CHECK(o.growth_factor > 1, "GradScaler: growth_factor must be > 1, got ", o.growth_factor);
        MT_CHECK(o.backoff_factor > 0 && o.backoff_factor < 1, "GradScaler: backoff_factor must be in (0, 1), got ",
                 o.backoff_factor);
        MT_CHECK(o.growth_interval >= 1, "GradScaler: growth_interval must be at least 1, got ", o.growth_interval);
    }

    /// The factor the loss's gradient is multiplied by in backward.
    double scale() const { return scale_; }
    /// Optimizer steps skipped for an Inf/NaN gradient so far.
    std::int64_t skipped() const { return skipped_; }
    /// Clean steps since the last change of scale.
    std::int64_t clean_steps() const { return clean_; }

    /// Divides the trained gradients by scale() and says whether any of them is Inf or NaN (the step must
    /// then be skipped). One pass to test (the sum of squares is not finite exactly when an element is
    /// not: f32 squares cannot overflow a double), one to rescale.
    template <class Backend>
    bool unscale(ParameterSet<Backend>& params) const {
        const Tensor& grads = params.grads();
        if (!grads.defined()) return false;
        if (!detail::grads_finite<Backend>(grads)) return true;
        detail::rescale_grads<Backend>(grads, 1.0 / scale_);
        return false;
    }

    /// After the step: the new scale per the rules above.
    void update(bool found_inf) {
        if (found_inf) {
            scale_ *= o_.backoff_factor;
            clean_ = 0;
            ++skipped_;
            return;
        }
        if (++clean_ >= o_.growth_interval) {
            scale_ *= o_.growth_factor;
            clean_ = 0;
        }
    }

    nlohmann::json state() const { return {{"scale", scale_}, {"clean_steps", clean_}, {"skipped", skipped_}}; }
    void restore(const nlohmann::json& j, const std::string& where) {
        MT_CHECK(j.is_object() && j.contains("scale") && j["scale"].is_number() && j.contains("clean_steps") &&
                     j["clean_steps"].is_number_integer() && j.contains("skipped") && j["skipped"].is_number_integer(),
                 where, ": grad_scaler must be {\"scale\": number, \"clean_steps\": int, \"skipped\": int}, found ",
                 j.dump());
        const double s = j["scale"].get<double>();
        MT_CHECK(s > 0 && std::isfinite(s), where, ": grad_scaler.scale must be positive and finite, found ", s);
        scale_ = s;
        clean_ = j["clean_steps"].get<std::int64_t>();
        skipped_ = j["skipped"].get<std::int64_t>();
    }

private:
    Options o_;
    double scale_;
    std::int64_t clean_ = 0, skipped_ = 0;
};

}  // namespace minitrain
