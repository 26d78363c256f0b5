// minitrain/backend/cpu/eigen.hpp
// Row-major Eigen views of tensors: matrix products on our storage without copies. A transposed operand
// is `.transpose()` on the map, which Eigen's GEMM consumes by switching storage order, not by copying.
#pragma once

#include <Eigen/Core>

#include "../../core/tensor.hpp"

namespace minitrain::cpu {

template <class T>
using MatrixRM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The tensor as a (rows, cols) matrix; rows x cols must equal its element count.
template <class T>
Eigen::Map<MatrixRM<T>> matrix(const Tensor& t, std::int64_t rows, std::int64_t cols) {
    MT_CHECK(rows * cols == t.numel(), "matrix view: ", rows, " x ", cols, " does not cover ", t.shape);
    return Eigen::Map<MatrixRM<T>>(t.data<T>(), rows, cols);
}

/// The tensor as (rows of all leading dimensions, last dimension).
template <class T>
Eigen::Map<MatrixRM<T>> matrix(const Tensor& t) {
    return matrix<T>(t, t.shape.rows(), t.shape.cols());
}

/// dst = src or dst += src, for a GradOut destination.
template <class Dst, class Src>
void assign_or_add(Dst&& dst, const Src& src, bool accumulate) {
    if (accumulate)
        dst.noalias() += src;
    else
        dst.noalias() = src;
}

}  // namespace minitrain::cpu
