// minitrain/backend/cuda/lora.hpp
// The LoRA kernels of nn/lora.hpp on the GPU: two cuBLAS GEMMs per adapter and direction, the output
// columns of one part of a fused weight addressed through the row stride (y + col0 with ld = M).
//
// Legend: N = rows (batch x time), K = input features, M = output features of the (possibly fused)
// weight, Mp = output features of one part, R = rank.
#pragma once

#include "linear.hpp"
#include "optim.hpp"  // scale()

namespace minitrain {

/// u = scaling * xd A^T;   y[:, col0 : col0 + Mp] += u B^T.
/// xd: (N, K)  A: (R, K)  B: (Mp, R)  u: (N, R) saved for the backward  y: (N, M), M >= col0 + Mp.
inline void lora_forward(CUDA, const Tensor& y, const Tensor& u, const Tensor& xd, const Tensor& a, const Tensor& b,
                         std::int64_t col0, double scaling) {
    const std::int64_t N = xd.shape.rows(), K = xd.shape.cols(), R = a.shape[0], Mp = b.shape[0], M = y.shape.cols();
    MT_CHECK(a.shape.rank == 2 && a.shape[1] == K, "lora: A has shape ", a.shape, ", input has ", K, " features");
    MT_CHECK(b.shape.rank == 2 && b.shape[1] == R, "lora: B has shape ", b.shape, ", A has rank ", R);
    MT_CHECK(col0 >= 0 && col0 + Mp <= M && y.shape.rows() == N, "lora: B's ", Mp, " outputs at column ", col0,
             " do not fit the output ", y.shape);
    check_shape(u, Shape{N, R}, "lora", "u");
    for (const Tensor* t : {&y, &u, &xd, &a, &b}) CUDA::on_device(*t, "lora", "operand");
    dispatch_floating(xd.dtype, "lora", [&]<class T>() {
        cuda::gemm<T>(false, true, N, R, K, xd.data<T>(), K, a.data<T>(), K, u.data<T>(), R, false);
        scale(CUDA{}, u, scaling);
        cuda::gemm<T>(false, true, N, Mp, R, u.data<T>(), R, b.data<T>(), R, y.data<T>() + col0, M, true);
    });
}

/// With dy_j = dy[:, col0 : col0 + Mp] and u = scaling * xd A^T from the forward:
///   dB += dy_j^T u      du = scaling * dy_j B      dA += du^T xd      dxd (=|+=) du A
/// du: (N, R) scratch. Undefined destinations are skipped (and du is not computed when neither dA nor
/// dxd needs it).
inline void lora_backward(CUDA, GradOut dxd, GradOut da, GradOut db, const Tensor& du, const Tensor& xd,
                          const Tensor& a, const Tensor& b, const Tensor& u, const Tensor& dy, std::int64_t col0,
                          double scaling) {
    const std::int64_t N = xd.shape.rows(), K = xd.shape.cols(), R = a.shape[0], Mp = b.shape[0], M = dy.shape.cols();
    for (const Tensor* t : {&du, &xd, &a, &b, &u, &dy}) CUDA::on_device(*t, "lora_backward", "operand");
    dispatch_floating(xd.dtype, "lora_backward", [&]<class T>() {
        const T* DY = dy.data<T>() + col0;  // (N, Mp) with row stride M
        if (db) cuda::gemm<T>(true, false, Mp, R, N, DY, M, u.data<T>(), R, db.t.data<T>(), R, db.accumulate);
        if (!da && !dxd) return;
        cuda::gemm<T>(false, false, N, R, Mp, DY, M, b.data<T>(), R, du.data<T>(), R, false);
        scale(CUDA{}, du, scaling);
        if (da) cuda::gemm<T>(true, false, R, K, N, du.data<T>(), R, xd.data<T>(), K, da.t.data<T>(), K, da.accumulate);
        if (dxd)
            cuda::gemm<T>(false, false, N, K, R, du.data<T>(), R, a.data<T>(), K, dxd.t.data<T>(), K, dxd.accumulate);
    });
}

}  // namespace minitrain
