// minitrain/backend/cpu/linear.hpp
// Linear layer and plain matrix product on the CPU, through cpu::gemm (Eigen's kernels, our threads and
// packing buffers). Transposed operands are read in place, never copied. The f32 products go through
// cpu::autocast_gemm, so inside an Autocast(bf16) scope they take bf16 inputs (core/precision.hpp).
// N = rows (batch x time), K = input features, M = output features.
#pragma once

#include "cpu.hpp"
#include "gemm.hpp"

namespace minitrain {

/// y = x w^T.   x: (N, K)  w: (M, K) as PyTorch stores it  y: (N, M)
/// x may be bf16 (an activation stored in bf16 under autocast, core/precision.hpp): w and y are then f32 and the
/// product is the bf16 one, packed from x's bits (the same result as from the floats they were rounded from).
inline void linear_forward(CPU, const Tensor& y, const Tensor& x, const Tensor& w) {
    const std::int64_t N = x.shape.rows(), K = x.shape.cols(), M = w.shape[0];
    MT_CHECK(w.shape.rank == 2 && w.shape[1] == K, "linear: weight has shape ", w.shape, ", input has ", K,
             " features");
    check_shape(y, [&] { Shape s = x.shape; s.dims[s.rank - 1] = M; return s; }(), "linear", "output");
    if (x.dtype == DType::bf16) {
        MT_CHECK(w.dtype == DType::f32 && y.dtype == DType::f32, "linear: a bf16 input needs an f32 weight and output, "
                 "found weight ", dtype_name(w.dtype), ", output ", dtype_name(y.dtype));
        cpu::bf16_gemm(false, true, N, M, K, static_cast<const std::uint16_t*>(x.ptr), K, w.data<float>(), K,
                       y.data<float>(), M, false);
        return;
    }
    dispatch_floating(x.dtype, "linear", [&]<class T>() {
        cpu::autocast_gemm<T>(false, true, N, M, K, x.data<T>(), K, w.data<T>(), K, y.data<T>(), M, false);
    });
}

/// dx (=|+=) dy w;  dw += dy^T x. Either destination may be undefined (no gradient needed: skipped).
/// A bf16 x (see linear_forward): dx and dw are f32, and both products are bf16 ones; dw packs x's bits.
inline void linear_backward(CPU, GradOut dx, GradOut dw, const Tensor& x, const Tensor& w, const Tensor& dy) {
    const std::int64_t N = x.shape.rows(), K = x.shape.cols(), M = w.shape[0];
    if (x.dtype == DType::bf16) {
        const float* DY = dy.data<float>();
        if (dx) cpu::bf16_gemm(false, false, N, K, M, DY, M, w.data<float>(), K, dx.t.data<float>(), K, dx.accumulate);
        if (dw)
            cpu::bf16_gemm(true, false, M, K, N, DY, M, static_cast<const std::uint16_t*>(x.ptr), K, dw.t.data<float>(),
                           K, dw.accumulate);
        return;
    }
    dispatch_floating(x.dtype, "linear_backward", [&]<class T>() {
        const T* DY = dy.data<T>();
        if (dx) cpu::autocast_gemm<T>(false, false, N, K, M, DY, M, w.data<T>(), K, dx.t.data<T>(), K, dx.accumulate);
        if (dw) cpu::autocast_gemm<T>(true, false, M, K, N, DY, M, x.data<T>(), K, dw.t.data<T>(), K, dw.accumulate);
    });
}

/// c = a b.   a: (M, K)  b: (K, N)  c: (M, N)
inline void matmul_forward(CPU, const Tensor& c, const Tensor& a, const Tensor& b) {
    MT_CHECK(a.shape.rank == 2 && b.shape.rank == 2 && a.shape[1] == b.shape[0], "matmul: cannot multiply ",
             a.shape, " by ", b.shape);
    check_shape(c, Shape{a.shape[0], b.shape[1]}, "matmul", "output");
    const std::int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1];
    dispatch_floating(a.dtype, "matmul", [&]<class T>() {
        cpu::autocast_gemm<T>(false, false, M, N, K, a.data<T>(), K, b.data<T>(), N, c.data<T>(), N, false);
    });
}

/// da (=|+=) dc b^T;  db (=|+=) a^T dc.
inline void matmul_backward(CPU, GradOut da, GradOut db, const Tensor& a, const Tensor& b, const Tensor& dc) {
    const std::int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1];
    dispatch_floating(a.dtype, "matmul_backward", [&]<class T>() {
        const T* DC = dc.data<T>();
        if (da) cpu::autocast_gemm<T>(false, true, M, K, N, DC, N, b.data<T>(), N, da.t.data<T>(), K, da.accumulate);
        if (db) cpu::autocast_gemm<T>(true, false, K, N, M, a.data<T>(), K, DC, N, db.t.data<T>(), N, db.accumulate);
    });
}

}  // namespace minitrain
