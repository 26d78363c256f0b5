// minitrain/backend/cpu/rope.hpp
// Rotary position embedding on the CPU, in the Hugging Face `rotate_half` layout used by Llama and
// MiniMind: a head vector x = [x1 | x2] (two halves of D/2) is rotated pair-wise, element i of x1 with
// element i of x2, by the angle pos * inv_freq[i], inv_freq[i] = 1 / theta^(2i / D):
//     y1 = x1 cos - x2 sin        y2 = x2 cos + x1 sin
// (= x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x2, x1)).
// A rotation is orthogonal, so the backward is the rotation by the negative angle and needs nothing saved.
//
// The cos/sin tables are computed once (rope_table) for every position up to Tmax; pos0 selects the rows
// of a sequence that starts later (decoding with a KV cache).
//
// B = batch, T = time, H = heads, D = head dim, Tmax = table length.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu.hpp"

namespace minitrain {

/// cos[t, i] = cos(t * inv_freq[i]), sin likewise;  inv_freq[i] = 1 / theta^(2i / D), D = 2 * (D/2).
/// cos, sin: (Tmax, D/2), f32 or f64. Angles are computed in double and rounded once when stored.
inline void rope_table(CPU, const Tensor& cos, const Tensor& sin, double theta) {
    MT_CHECK(cos.shape.rank == 2, "rope_table: cos must be (Tmax, D/2), found ", cos.shape);
    check_same(sin, cos, "rope_table", "sin", "cos");
    MT_CHECK(theta > 0, "rope_table: theta must be positive, found ", theta);
    const std::int64_t Tmax = cos.shape[0], half = cos.shape[1];
    const double D = double(2 * half);
    dispatch_floating(cos.dtype, "rope_table", [&]<class T>() {
        T* cp = cos.data<T>();  // (Tmax, D/2)
        T* sp = sin.data<T>();  // (Tmax, D/2)
#pragma omp parallel for schedule(static) if (Tmax * half >= (1 << 12))
        for (std::int64_t t = 0; t < Tmax; ++t)
            for (std::int64_t i = 0; i < half; ++i) {
                const double a = double(t) * (1.0 / std::pow(theta, double(2 * i) / D));
                cp[t * half + i] = T(std::cos(a));
                sp[t * half + i] = T(std::sin(a));
            }
    });
}

namespace cpu {
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
}

/// out = rotation of in by sign * angle, over all (b, t, h) rows; out may alias in (element i of both
/// halves is read before it is written, and no other element is touched).
template <class T>
void rope_rotate(T* out, const T* in, const T* cp, const T* sp, std::int64_t B, std::int64_t Tn, std::int64_t H,
                 std::int64_t D, std::int64_t pos0, T sign, bool accumulate) {
    const std::int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (B * Tn * H * D >= (1 << 15))
    for (std::int64_t bt = 0; bt < B * Tn; ++bt) {
        const T* c = cp + (pos0 + bt % Tn) * half;  // (D/2) row of this position
        const T* s = sp + (pos0 + bt % Tn) * half;
        for (std::int64_t h = 0; h < H; ++h) {
            const T* x = in + (bt * H + h) * D;
            T* y = out + (bt * H + h) * D;
            if (accumulate) {
#pragma omp simd
                for (std::int64_t i = 0; i < half; ++i) {
                    const T x1 = x[i], x2 = x[i + half], si = sign * s[i];
                    y[i] += x1 * c[i] - x2 * si;
                    y[i + half] += x2 * c[i] + x1 * si;
                }
            } else {
#pragma omp simd
                for (std::int64_t i = 0; i < half; ++i) {
                    const T x1 = x[i], x2 = x[i + half], si = sign * s[i];
                    y[i] = x1 * c[i] - x2 * si;
                    y[i + half] = x2 * c[i] + x1 * si;
                }
            }
        }
    }
}
}  // namespace cpu

/// y = rope(x) at positions pos0 .. pos0 + T - 1.   x, y: (B, T, H, D), y may alias x.
/// cos, sin: (Tmax, D/2) from rope_table, same type as x, pos0 + T <= Tmax.
inline void rope_forward(CPU, const Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, int pos0) {
    cpu::check_rope(x, cos, sin, pos0, "rope");
    check_same(y, x, "rope", "output", "input");
    dispatch_floating(x.dtype, "rope", [&]<class T>() {
        cpu::rope_rotate<T>(y.data<T>(), x.data<T>(), cos.data<T>(), sin.data<T>(), x.shape[0], x.shape[1],
                            x.shape[2], x.shape[3], pos0, T(1), false);
    });
}

/// dx (=|+=) dy rotated by the negative angle:  dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin.
inline void rope_backward(CPU, GradOut dx, const Tensor& dy, const Tensor& cos, const Tensor& sin, int pos0) {
    if (!dx) return;
    cpu::check_rope(dy, cos, sin, pos0, "rope_backward");
    check_same(dx.t, dy, "rope_backward", "dx", "dy");
    dispatch_floating(dy.dtype, "rope_backward", [&]<class T>() {
        cpu::rope_rotate<T>(dx.t.data<T>(), dy.data<T>(), cos.data<T>(), sin.data<T>(), dy.shape[0], dy.shape[1],
                            dy.shape[2], dy.shape[3], pos0, T(-1), dx.accumulate);
    });
}

}  // namespace minitrain
