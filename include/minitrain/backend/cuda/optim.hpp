// minitrain/backend/cuda/optim.hpp
// Optimizer kernels for the GPU: the AdamW and SGD updates over one segment of the parameter slab (one
// fused elementwise kernel each), and the two reductions gradient clipping needs (sum of squares, scale).
// Semantics and the rounding of the scalar coefficients are those of backend/cpu/optim.hpp (PyTorch's
// single-tensor implementations): the coefficients are formed on the host in double exactly as there and
// passed to the kernel in the tensor's type. (nvcc contracts a*b + c into FMAs, so an element may differ
// from the CPU result by an ulp per operation.)
//
// sum_squares is deterministic: a fixed number of blocks (not derived from the GPU) each sum one
// contiguous chunk in double, and one block adds the partial sums in a fixed tree.
//
// Legend: N = elements in the segment. p = parameters, g = gradients, m / v = first / second moments.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda.hpp"

namespace minitrain {

namespace cuda {

/// Blocks of the first sum_squares pass (and partial sums of the second): a constant, for determinism.
inline constexpr int sum_squares_parts = 256;
// sum_partials_kernel runs one thread per part and reduces them with block_sum.
static_assert(sum_squares_parts % 32 == 0 && sum_squares_parts <= 1024, "block_sum needs whole warps, at most 32");

template <class T>
struct AdamWCoefficients {
    T decay_factor, w, w_complement, b2, one_minus_b2, bc2_sqrt, neg_step_size, eps;
    bool decay, small_weight;
};

template <class T>
__global__ void adamw_kernel(T* P, const T* G, T* M, T* V, std::int64_t n, AdamWCoefficients<T> k) {
    MT_CUDA_GRID_LOOP(i, n) {
        T p = P[i];
        const T g = G[i];
        if (k.decay) p = p * k.decay_factor;                                  // param.mul_(1 - lr*wd)
        T m = M[i];
        m = k.small_weight ? m + k.w * (g - m) : g - (g - m) * k.w_complement;  // exp_avg.lerp_(grad, 1 - beta1)
        const T vb = V[i] * k.b2;
        const T v = vb + k.one_minus_b2 * g * g;                              // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
        const T root = sqrt(v);
        p = p + k.neg_step_size * m / (root / k.bc2_sqrt + k.eps);            // param.addcdiv_(m, denom, -step_size)
        P[i] = p;
        M[i] = m;
        V[i] = v;
    }
}

template <class T>
__global__ void sgd_kernel(T* P, const T* G, T* B, std::int64_t n, T wd, T mu, T keep, T neg_lr, bool decay,
                           bool nesterov, bool first_step) {
    MT_CUDA_GRID_LOOP(i, n) {
        const T p = P[i];
        T d = decay ? G[i] + wd * p : G[i];
        if (B) {
            T b;
            if (first_step) {
                b = d;  // torch.clone(grad): no dampening on the first step
            } else {
                b = B[i] * mu;
                b = b + keep * d;
            }
            B[i] = b;
            d = nesterov ? d + mu * b : b;
        }
        P[i] = p + neg_lr * d;
    }
}

/// Block b sums x^2 over its chunk [b * chunk, (b+1) * chunk) into partial[b], in double.
template <class T>
__global__ void sum_squares_kernel(double* partial, const T* x, std::int64_t n, std::int64_t chunk) {
    const std::int64_t b0 = std::int64_t(blockIdx.x) * chunk, b1 = b0 + chunk < n ? b0 + chunk : n;
    double acc = 0;
    for (std::int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) {
        const double v = double(x[i]);
        acc += v * v;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/// One block of sum_squares_parts threads: total = sum of the partial sums.
template <class T>
__global__ void sum_partials_kernel(double* total, const double* partial) {
    const double s = block_sum(partial[threadIdx.x]);
    if (threadIdx.x == 0) total[0] = s;
}

template <class T>
__global__ void scale_kernel(T* x, std::int64_t n, T factor) {
    MT_CUDA_GRID_LOOP(i, n) x[i] *= factor;
}

}  // namespace cuda

// ----------------------------------------------------------------------------------------------------
// AdamW

/// One AdamW step (torch.optim.AdamW semantics, see backend/cpu/optim.hpp) on a segment, in place.
/// `step` counts updates including this one (1 on the first). p, g, m, v: (N), same type, no aliasing.
inline void adamw_update(CUDA, const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, double lr,
                         double beta1, double beta2, double eps, double weight_decay, std::int64_t step) {
    check_same(p, g, "adamw_update", "param", "grad");
    check_same(p, m, "adamw_update", "param", "exp_avg");
    check_same(p, v, "adamw_update", "param", "exp_avg_sq");
    MT_CHECK(step >= 1, "adamw_update: step counts updates including this one and must be >= 1, got ", step);
    CUDA::on_device(p, "adamw_update", "param");
    CUDA::on_device(g, "adamw_update", "grad");
    CUDA::on_device(m, "adamw_update", "exp_avg");
    CUDA::on_device(v, "adamw_update", "exp_avg_sq");
    const double bias_correction1 = 1.0 - std::pow(beta1, double(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, double(step));
    const double lerp_weight = 1.0 - beta1;
    dispatch_floating(p.dtype, "adamw_update", [&]<class T>() {
        cuda::AdamWCoefficients<T> k;
        k.decay = weight_decay != 0.0;
        k.decay_factor = T(1.0 - lr * weight_decay);
        k.w = T(lerp_weight);
        k.w_complement = T(1) - k.w;  // lerp's form for weights >= 0.5
        k.small_weight = std::abs(k.w) < T(0.5);
        k.b2 = T(beta2);
        k.one_minus_b2 = T(1.0 - beta2);
        k.bc2_sqrt = T(std::sqrt(bias_correction2));
        k.neg_step_size = T(-(lr / bias_correction1));
        k.eps = T(eps);
        const std::int64_t n = p.numel();
        if (!n) return;
        cuda::adamw_kernel<T><<<cuda::grid_for(n), cuda::threads, 0, CUDA::stream()>>>(
            p.data<T>(), g.data<T>(), m.data<T>(), v.data<T>(), n, k);
        MT_CUDA_LAUNCHED();
    });
}

// ----------------------------------------------------------------------------------------------------
// SGD

/// One SGD step (torch.optim.SGD semantics, see backend/cpu/optim.hpp) on a segment, in place.
/// `buf` (N) is used only when momentum > 0 (it may be undefined otherwise). p, g: (N).
inline void sgd_update(CUDA, const Tensor& p, const Tensor& g, const Tensor& buf, double lr, double momentum,
                       double dampening, double weight_decay, bool nesterov, bool first_step) {
    check_same(p, g, "sgd_update", "param", "grad");
    const bool use_momentum = momentum != 0.0;
    if (use_momentum) {
        check_same(p, buf, "sgd_update", "param", "momentum_buffer");
        CUDA::on_device(buf, "sgd_update", "momentum_buffer");
    }
    CUDA::on_device(p, "sgd_update", "param");
    CUDA::on_device(g, "sgd_update", "grad");
    dispatch_floating(p.dtype, "sgd_update", [&]<class T>() {
        const std::int64_t n = p.numel();
        if (!n) return;
        cuda::sgd_kernel<T><<<cuda::grid_for(n), cuda::threads, 0, CUDA::stream()>>>(
            p.data<T>(), g.data<T>(), use_momentum ? buf.data<T>() : nullptr, n, T(weight_decay), T(momentum),
            T(1.0 - dampening), T(-lr), weight_decay != 0.0, nesterov, first_step);
        MT_CUDA_LAUNCHED();
    });
}

// ----------------------------------------------------------------------------------------------------
// Gradient clipping

/// Sum of squares of all elements, accumulated in double; waits for the GPU. The same for any GPU (the
/// split into chunks is fixed), but not bitwise equal to the CPU backend's (a different split).
inline double sum_squares(CUDA, const Tensor& x) {
    CUDA::on_device(x, "sum_squares", "tensor");
    return dispatch_floating(x.dtype, "sum_squares", [&]<class T>() -> double {
        const std::int64_t n = x.numel();
        if (!n) return 0.0;
        constexpr int parts = cuda::sum_squares_parts;
        static_assert((parts + 1) * sizeof(double) <= CUDA::scratch_bytes, "sum_squares: scratch too small");
        auto* partial = static_cast<double*>(CUDA::scratch());  // (parts) chunk sums, then the total
        const std::int64_t chunk = (n + parts - 1) / parts;
        cudaStream_t s = CUDA::stream();
        cuda::sum_squares_kernel<T><<<parts, cuda::threads, 0, s>>>(partial, x.data<T>(), n, chunk);
        MT_CUDA_LAUNCHED();
        cuda::sum_partials_kernel<T><<<1, parts, 0, s>>>(partial + parts, partial);
        MT_CUDA_LAUNCHED();
        double total = 0;
        CUDA::read_back(&total, partial + parts, sizeof total, "sum_squares");
        return total;
    });
}

/// x *= s, with s rounded to the tensor's type (as PyTorch's mul_ by a clip coefficient does).
inline void scale(CUDA, const Tensor& x, double s) {
    CUDA::on_device(x, "scale", "tensor");
    dispatch_floating(x.dtype, "scale", [&]<class T>() {
        const std::int64_t n = x.numel();
        if (!n) return;
        cuda::scale_kernel<T><<<cuda::grid_for(n), cuda::threads, 0, CUDA::stream()>>>(x.data<T>(), n, T(s));
        MT_CUDA_LAUNCHED();
    });
}

}  // namespace minitrain
