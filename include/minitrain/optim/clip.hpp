// minitrain/optim/clip.hpp
// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_): the L2 norm of every trainable
// gradient together, from one pass over the gradient slab, and a rescale of the whole slab when the norm
// exceeds the limit. Runs after backward (and after the gradient all-reduce), before the optimizer step.
#pragma once

#include <cmath>

#include "../backend/cpu/optim.hpp"
#include "../memory/parameters.hpp"

namespace minitrain {

/// Returns the global L2 norm of the gradients BEFORE clipping (log it; a non-finite value means the
/// step should be skipped). With max_norm > 0, scales every gradient by max_norm / (norm + 1e-6) when
/// that factor is below 1, as PyTorch does; max_norm <= 0 only measures. The norm is accumulated in
/// double, deterministically (independent of the thread count on the CPU).
template <class Backend>
double clip_grad_norm(ParameterSet<Backend>& params, double max_norm) {
    const Tensor& grads = params.grads();
    if (!grads.defined()) return 0.0;
    const double norm = std::sqrt(sum_squares(Backend{}, grads));
    if (max_norm > 0) {
        const double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) scale(Backend{}, grads, coef);
    }
    return norm;
}

}  // namespace minitrain
