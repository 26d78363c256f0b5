// minitrain/backend/cuda/dpo.hpp
// The DPO loss on the GPU (formula and statistics: backend/cpu/dpo.hpp). B is a handful of pairs, so the
// forward is one thread running the CPU backend's serial loop in double; the backward is elementwise.
//
// B = preference pairs.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda.hpp"

namespace minitrain {

namespace cuda::dpo {

/// softplus(x) = log(1 + exp(x)), stable for any x.
__device__ inline double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
/// 1 / (1 + exp(-x)), stable for any x.
__device__ inline double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    const double e = exp(x);
    return e / (1.0 + e);
}

template <class R>
__global__ void forward_kernel(R* loss, R* c, double* stats, const R* pc, const R* pr, const R* rc, const R* rr,
                               std::int64_t B, double beta) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double sum = 0, chosen = 0, rejected = 0, wins = 0;
    for (std::int64_t b = 0; b < B; ++b) {
        const double rc_b = beta * (double(pc[b]) - double(rc[b]));
        const double rr_b = beta * (double(pr[b]) - double(rr[b]));
        const double z = rc_b - rr_b;
        sum += softplus(-z);
        c[b] = R(-beta * sigmoid(-z) / double(B));
        chosen += rc_b;
        rejected += rr_b;
        wins += rc_b > rr_b;
    }
    loss[0] = R(sum / double(B));
    stats[0] = chosen / double(B);
    stats[1] = rejected / double(B);
    stats[2] = (chosen - rejected) / double(B);
    stats[3] = wins / double(B);
}

template <class R>
__global__ void backward_kernel(R* g, bool accumulate, const R* c, const R* dloss, R sign, std::int64_t B) {
    const R dl = dloss[0];
    MT_CUDA_GRID_LOOP(b, B) g[b] = (accumulate ? g[b] : R(0)) + sign * c[b] * dl;
}

}  // namespace cuda::dpo

/// loss[0] = mean_b softplus(-z[b]); coef[b] = d loss / d pc[b] = -beta sigmoid(-z[b]) / B; stats = {mean
/// chosen reward, mean rejected reward, margin, accuracy} in f64 (a device tensor).
/// loss (1)  coef (B)  stats (4) f64  policy_chosen, policy_rejected, ref_chosen, ref_rejected (B)
inline void dpo_loss_forward(CUDA, const Tensor& loss, const Tensor& coef, const Tensor& stats,
                             const Tensor& policy_chosen, const Tensor& policy_rejected, const Tensor& ref_chosen,
                             const Tensor& ref_rejected, double beta) {
    const std::int64_t B = policy_chosen.numel();
    MT_CHECK(B >= 1, "dpo_loss: need at least one pair, found policy_chosen ", policy_chosen.shape);
    for (const Tensor* t : {&policy_rejected, &ref_chosen, &ref_rejected})
        check_same(*t, policy_chosen, "dpo_loss", "log-probabilities", "policy_chosen");
    check_shape(coef, Shape{B}, "dpo_loss", "coef");
    check_shape(loss, Shape{1}, "dpo_loss", "loss");
    MT_CHECK(stats.numel() == 4 && stats.dtype == DType::f64, "dpo_loss: stats must be 4 f64, found ", stats.shape, " ",
             dtype_name(stats.dtype));
    for (const Tensor* t : {&loss, &coef, &stats, &policy_chosen, &policy_rejected, &ref_chosen, &ref_rejected})
        CUDA::on_device(*t, "dpo_loss", "operand");
    dispatch_floating(policy_chosen.dtype, "dpo_loss", [&]<class R>() {
        cuda::dpo::forward_kernel<R><<<1, 32, 0, CUDA::stream()>>>(
            loss.data<R>(), coef.data<R>(), stats.data<double>(), policy_chosen.data<R>(), policy_rejected.data<R>(),
            ref_chosen.data<R>(), ref_rejected.data<R>(), B, beta);
        MT_CUDA_LAUNCHED();
    });
}

/// dpolicy_chosen (=|+=) coef * dloss[0], dpolicy_rejected (=|+=) -coef * dloss[0]. Either may be
/// undefined (not needed).  dpolicy_chosen, dpolicy_rejected, coef (B)  dloss (1)
inline void dpo_loss_backward(CUDA, GradOut dpolicy_chosen, GradOut dpolicy_rejected, const Tensor& coef,
                              const Tensor& dloss) {
    check_shape(dloss, Shape{1}, "dpo_loss_backward", "loss gradient");
    CUDA::on_device(coef, "dpo_loss_backward", "coef");
    CUDA::on_device(dloss, "dpo_loss_backward", "loss gradient");
    const std::int64_t B = coef.numel();
    dispatch_floating(coef.dtype, "dpo_loss_backward", [&]<class R>() {
        auto write = [&](const GradOut& d, R sign) {
            if (!d) return;
            check_shape(d.t, Shape{B}, "dpo_loss_backward", "log-probability gradient");
            CUDA::on_device(d.t, "dpo_loss_backward", "log-probability gradient");
            if (!B) return;
            cuda::dpo::backward_kernel<R><<<cuda::grid_for(B), cuda::threads, 0, CUDA::stream()>>>(
                d.t.data<R>(), d.accumulate, coef.data<R>(), dloss.data<R>(), sign, B);
            MT_CUDA_LAUNCHED();
        };
        write(dpolicy_chosen, R(1));
        write(dpolicy_rejected, R(-1));
    });
}

}  // namespace minitrain
