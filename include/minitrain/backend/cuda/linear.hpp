// minitrain/backend/cuda/linear.hpp
// Linear layer and plain matrix product on the GPU, every product one cuBLAS GEMM on CUDA::stream().
//
// cuBLAS is column-major; our tensors are row-major. A row-major (R, C) matrix with row stride ld is the
// column-major (C, R) matrix with the same ld, so the row-major product C = op(A) op(B) is computed as the
// column-major product C^T = op(B)^T op(A)^T: swap the operands, keep each one's transpose flag.
// The GradOut accumulate flag becomes beta = 1 (add) or beta = 0 (overwrite; C is then never read).
//
// N = rows (batch x time), K = input features, M = output features.
#pragma once

#include "cuda.hpp"

namespace minitrain {

namespace cuda {

inline cublasStatus_t gemm_call(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                                const float* A, int lda, const float* B, int ldb, const float* beta, float* C,
                                int ldc) {
    return cublasSgemm(CUDA::blas(), ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline cublasStatus_t gemm_call(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                                const double* A, int lda, const double* B, int ldb, const double* beta, double* C,
                                int ldc) {
    return cublasDgemm(CUDA::blas(), ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/// C (M, N) = op(A) (M, K) . op(B) (K, N)  [+ C when accumulate], all row-major with row strides
/// lda, ldb, ldc in elements; op(A) = A^T when trans_a (A is then stored (K, M)), likewise for B.
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda,
          const T* B, std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
    if (M == 0 || N == 0) return;
    if (K == 0) {  // an empty sum: C = 0, or C unchanged
        if (!accumulate)
            MT_CUDA_CHECK(cudaMemset2DAsync(C, std::size_t(ldc) * sizeof(T), 0, std::size_t(N) * sizeof(T),
                                            std::size_t(M), CUDA::stream()));
        return;
    }
    const T one = T(1), beta = accumulate ? T(1) : T(0);
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    MT_CUBLAS_CHECK(gemm_call(op_b, op_a, as_int(N, "gemm", "N"), as_int(M, "gemm", "M"), as_int(K, "gemm", "K"), &one,
                              B, as_int(ldb, "gemm", "ldb"), A, as_int(lda, "gemm", "lda"), &beta, C,
                              as_int(ldc, "gemm", "ldc")));
}

}  // namespace cuda

/// y = x w^T.   x: (N, K)  w: (M, K) as PyTorch stores it  y: (N, M)
inline void linear_forward(CUDA, const Tensor& y, const Tensor& x, const Tensor& w) {
    const std::int64_t N = x.shape.rows(), K = x.shape.cols(), M = w.shape[0];
    MT_CHECK(w.shape.rank == 2 && w.shape[1] == K, "linear: weight has shape ", w.shape, ", input has ", K,
             " features");
    check_shape(y, [&] { Shape s = x.shape; s.dims[s.rank - 1] = M; return s; }(), "linear", "output");
    MT_CHECK(w.dtype == x.dtype && y.dtype == x.dtype, "linear: input, weight and output must share a type");
    CUDA::on_device(y, "linear", "output");
    CUDA::on_device(x, "linear", "input");
    CUDA::on_device(w, "linear", "weight");
    dispatch_floating(x.dtype, "linear", [&]<class T>() {
        cuda::gemm<T>(false, true, N, M, K, x.data<T>(), K, w.data<T>(), K, y.data<T>(), M, false);
    });
}

/// dx (=|+=) dy w;  dw (=|+=) dy^T x. Either destination may be undefined (no gradient needed: skipped).
inline void linear_backward(CUDA, GradOut dx, GradOut dw, const Tensor& x, const Tensor& w, const Tensor& dy) {
    const std::int64_t N = x.shape.rows(), K = x.shape.cols(), M = w.shape[0];
    // Every operand cuBLAS reads, not only the gradients: a host pointer there is an illegal address that
    // kills the context, instead of an Error naming the operand.
    CUDA::on_device(dy, "linear_backward", "dy");
    if (dw) CUDA::on_device(x, "linear_backward", "input");
    if (dx) CUDA::on_device(w, "linear_backward", "weight");
    if (dx) CUDA::on_device(dx.t, "linear_backward", "dx");
    if (dw) CUDA::on_device(dw.t, "linear_backward", "dw");
    dispatch_floating(x.dtype, "linear_backward", [&]<class T>() {
        const T* DY = dy.data<T>();
        if (dx) cuda::gemm<T>(false, false, N, K, M, DY, M, w.data<T>(), K, dx.t.data<T>(), K, dx.accumulate);
        if (dw) cuda::gemm<T>(true, false, M, K, N, DY, M, x.data<T>(), K, dw.t.data<T>(), K, dw.accumulate);
    });
}

/// c = a b.   a: (M, K)  b: (K, N)  c: (M, N)
inline void matmul_forward(CUDA, const Tensor& c, const Tensor& a, const Tensor& b) {
    MT_CHECK(a.shape.rank == 2 && b.shape.rank == 2 && a.shape[1] == b.shape[0], "matmul: cannot multiply ",
             a.shape, " by ", b.shape);
    check_shape(c, Shape{a.shape[0], b.shape[1]}, "matmul", "output");
    CUDA::on_device(c, "matmul", "output");
    CUDA::on_device(a, "matmul", "a");
    CUDA::on_device(b, "matmul", "b");
    const std::int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1];
    dispatch_floating(a.dtype, "matmul", [&]<class T>() {
        cuda::gemm<T>(false, false, M, N, K, a.data<T>(), K, b.data<T>(), N, c.data<T>(), N, false);
    });
}

/// da (=|+=) dc b^T;  db (=|+=) a^T dc.
inline void matmul_backward(CUDA, GradOut da, GradOut db, const Tensor& a, const Tensor& b, const Tensor& dc) {
    const std::int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1];
    CUDA::on_device(dc, "matmul_backward", "dc");  // and every other operand cuBLAS reads (see linear_backward)
    if (da) CUDA::on_device(da.t, "matmul_backward", "da"), CUDA::on_device(b, "matmul_backward", "b");
    if (db) CUDA::on_device(db.t, "matmul_backward", "db"), CUDA::on_device(a, "matmul_backward", "a");
    dispatch_floating(a.dtype, "matmul_backward", [&]<class T>() {
        const T* DC = dc.data<T>();
        if (da) cuda::gemm<T>(false, true, M, K, N, DC, N, b.data<T>(), N, da.t.data<T>(), K, da.accumulate);
        if (db) cuda::gemm<T>(true, false, K, N, M, a.data<T>(), K, DC, N, db.t.data<T>(), N, db.accumulate);
    });
}

}  // namespace minitrain
