// minitrain/backend/cpu/linear.hpp
// Linear layer and plain matrix product on the CPU, through Eigen's multi-threaded GEMM.
// N = rows (batch x time), K = input features, M = output features.
#pragma once

#include "cpu.hpp"
#include "eigen.hpp"

namespace minitrain {

/// y = x w^T.   x: (N, K)  w: (M, K) as PyTorch stores it  y: (N, M)
inline void linear_forward(CPU, const Tensor& y, const Tensor& x, const Tensor& w) {
    const std::int64_t N = x.shape.rows(), K = x.shape.cols(), M = w.shape[0];
    MT_CHECK(w.shape.rank == 2 && w.shape[1] == K, "linear: weight has shape ", w.shape, ", input has ", K,
             " features");
    check_shape(y, [&] { Shape s = x.shape; s.dims[s.rank - 1] = M; return s; }(), "linear", "output");
    dispatch_floating(x.dtype, "linear", [&]<class T>() {
        cpu::matrix<T>(y, N, M).noalias() = cpu::matrix<T>(x, N, K) * cpu::matrix<T>(w, M, K).transpose();
    });
}

/// dx (=|+=) dy w;  dw += dy^T x. Either destination may be undefined (no gradient needed: skipped).
inline void linear_backward(CPU, GradOut dx, GradOut dw, const Tensor& x, const Tensor& w, const Tensor& dy) {
    const std::int64_t N = x.shape.rows(), K = x.shape.cols(), M = w.shape[0];
    dispatch_floating(x.dtype, "linear_backward", [&]<class T>() {
        auto DY = cpu::matrix<T>(dy, N, M);
        if (dx) cpu::assign_or_add(cpu::matrix<T>(dx.t, N, K), DY * cpu::matrix<T>(w, M, K), dx.accumulate);
        if (dw) cpu::assign_or_add(cpu::matrix<T>(dw.t, M, K), DY.transpose() * cpu::matrix<T>(x, N, K), dw.accumulate);
    });
}

/// c = a b.   a: (M, K)  b: (K, N)  c: (M, N)
inline void matmul_forward(CPU, const Tensor& c, const Tensor& a, const Tensor& b) {
    MT_CHECK(a.shape.rank == 2 && b.shape.rank == 2 && a.shape[1] == b.shape[0], "matmul: cannot multiply ",
             a.shape, " by ", b.shape);
    check_shape(c, Shape{a.shape[0], b.shape[1]}, "matmul", "output");
    dispatch_floating(a.dtype, "matmul", [&]<class T>() {
        cpu::matrix<T>(c).noalias() = cpu::matrix<T>(a) * cpu::matrix<T>(b);
    });
}

/// da (=|+=) dc b^T;  db (=|+=) a^T dc.
inline void matmul_backward(CPU, GradOut da, GradOut db, const Tensor& a, const Tensor& b, const Tensor& dc) {
    dispatch_floating(a.dtype, "matmul_backward", [&]<class T>() {
        auto DC = cpu::matrix<T>(dc);
        if (da) cpu::assign_or_add(cpu::matrix<T>(da.t), DC * cpu::matrix<T>(b).transpose(), da.accumulate);
        if (db) cpu::assign_or_add(cpu::matrix<T>(db.t), cpu::matrix<T>(a).transpose() * DC, db.accumulate);
    });
}

}  // namespace minitrain
