// minitrain/backend/cuda/rope.hpp
// Rotary position embedding on the GPU, in the Hugging Face `rotate_half` layout (see backend/cpu/rope.hpp
// for the math): each thread rotates one pair (element i of the first half with element i of the second)
// of one (b, t, h) head vector. The backward is the rotation by the negative angle.
//
// The cos/sin table is computed on the host exactly as the CPU backend computes it (angles in double,
// rounded once) and uploaded, so both backends rotate by bit-identical tables.
//
// B = batch, T = time, H = heads, D = head dim, Tmax = table length.
#pragma once

#include <cmath>
#include <vector>

#include "cuda.hpp"

namespace minitrain {

namespace cuda {
/// out = rotation of in by sign * angle over all (b, t, h) rows; out may alias in (each thread reads its
/// pair before writing it, and no thread touches another's pair).
template <class T>
__global__ void rope_kernel(T* out, const T* in, const T* cp, const T* sp, std::int64_t rows, std::int64_t Tn,
                            std::int64_t H, std::int64_t half, std::int64_t pos0, T sign, bool accumulate) {
    MT_CUDA_GRID_LOOP(idx, rows * half) {
        const std::int64_t row = idx / half, i = idx % half;   // row = (b * T + t) * H + h
        const std::int64_t t = (row / H) % Tn;
        const T c = cp[(pos0 + t) * half + i], s = sign * sp[(pos0 + t) * half + i];
        const T* x = in + row * 2 * half;
        T* y = out + row * 2 * half;
        const T x1 = x[i], x2 = x[i + half];
        const T y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
        if (accumulate) {
            y[i] += y1;
            y[i + half] += y2;
        } else {
            y[i] = y1;
            y[i + half] = y2;
        }
    }
}

inline void check_rope(const Tensor& x, const Tensor& cos, const Tensor& sin, std::int64_t pos0, const char* op) {
    MT_CHECK(x.shape.rank == 4, op, ": input must be (B, T, H, D), found ", x.shape);
    const std::int64_t T = x.shape[1], D = x.shape[3];
    MT_CHECK(D % 2 == 0, op, ": head dim D must be even, found ", D);
    check_same(sin, cos, op, "sin", "cos");
    MT_CHECK(cos.shape.rank == 2 && cos.shape[1] == D / 2, op, ": tables must be (Tmax, ", D / 2,
             ") for head dim ", D, ", found ", cos.shape);
    MT_CHECK(cos.dtype == x.dtype, op, ": tables are ", dtype_name(cos.dtype), " but input is ",
             dtype_name(x.dtype));
    MT_CHECK(pos0 >= 0 && pos0 + T <= cos.shape[0], op, ": positions [", pos0, ", ", pos0 + T,
             ") are outside the table of ", cos.shape[0], " positions");
    CUDA::on_device(x, op, "input");
    CUDA::on_device(cos, op, "cos table");
    CUDA::on_device(sin, op, "sin table");
}

template <class T>
void rope_launch(T* out, const T* in, const Tensor& x, const Tensor& cos, const Tensor& sin, int pos0, T sign,
                 bool accumulate) {
    const std::int64_t rows = x.shape[0] * x.shape[1] * x.shape[2], half = x.shape[3] / 2;
    if (!rows || !half) return;
    rope_kernel<T><<<grid_for(rows * half), threads, 0, CUDA::stream()>>>(
        out, in, cos.data<T>(), sin.data<T>(), rows, x.shape[1], x.shape[2], half, pos0, sign, accumulate);
    MT_CUDA_LAUNCHED();
}
}  // namespace cuda

/// cos[t, i] = cos(t * inv_freq[i]), sin likewise;  inv_freq[i] = 1 / theta^(2i / D), D = 2 * (D/2).
/// cos, sin: (Tmax, D/2) device tensors, f32 or f64; computed on the host (once per model) and uploaded.
inline void rope_table(CUDA, const Tensor& cos, const Tensor& sin, double theta) {
    MT_CHECK(cos.shape.rank == 2, "rope_table: cos must be (Tmax, D/2), found ", cos.shape);
    check_same(sin, cos, "rope_table", "sin", "cos");
    MT_CHECK(theta > 0, "rope_table: theta must be positive, found ", theta);
    CUDA::on_device(cos, "rope_table", "cos");
    CUDA::on_device(sin, "rope_table", "sin");
    const std::int64_t Tmax = cos.shape[0], half = cos.shape[1];
    const double D = double(2 * half);
    dispatch_floating(cos.dtype, "rope_table", [&]<class T>() {
        std::vector<T> c(std::size_t(Tmax * half)), s(c.size());  // (Tmax, D/2) each
        for (std::int64_t t = 0; t < Tmax; ++t)
            for (std::int64_t i = 0; i < half; ++i) {
                const double a = double(t) * (1.0 / std::pow(theta, double(2 * i) / D));
                c[std::size_t(t * half + i)] = T(std::cos(a));
                s[std::size_t(t * half + i)] = T(std::sin(a));
            }
        CUDA::from_host(cos, c.data());
        CUDA::from_host(sin, s.data());
    });
}

/// y = rope(x) at positions pos0 .. pos0 + T - 1.   x, y: (B, T, H, D), y may alias x.
/// cos, sin: (Tmax, D/2) from rope_table, same type as x, pos0 + T <= Tmax.
inline void rope_forward(CUDA, const Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, int pos0) {
    cuda::check_rope(x, cos, sin, pos0, "rope");
    check_same(y, x, "rope", "output", "input");
    CUDA::on_device(y, "rope", "output");
    dispatch_floating(x.dtype, "rope", [&]<class T>() {
        cuda::rope_launch<T>(y.data<T>(), x.data<T>(), x, cos, sin, pos0, T(1), false);
    });
}

/// dx (=|+=) dy rotated by the negative angle:  dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin.
inline void rope_backward(CUDA, GradOut dx, const Tensor& dy, const Tensor& cos, const Tensor& sin, int pos0) {
    if (!dx) return;
    cuda::check_rope(dy, cos, sin, pos0, "rope_backward");
    check_same(dx.t, dy, "rope_backward", "dx", "dy");
    CUDA::on_device(dx.t, "rope_backward", "dx");
    dispatch_floating(dy.dtype, "rope_backward", [&]<class T>() {
        cuda::rope_launch<T>(dx.t.data<T>(), dy.data<T>(), dy, cos, sin, pos0, T(-1), dx.accumulate);
    });
}

}  // namespace minitrain
