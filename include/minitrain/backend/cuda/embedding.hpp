// minitrain/backend/cuda/embedding.hpp
// Token embedding lookup on the GPU: the forward gathers table rows, the backward scatter-adds gradient
// rows with atomicAdd.
//
// Determinism: several tokens may share an id, and their float atomicAdds into the same dtable row land
// in whatever order the hardware runs them, so dtable can differ in the last bits from run to run (the
// CPU backend is bitwise reproducible). Every other CUDA kernel here is deterministic.
//
// Ids are checked on the device: an id outside [0, V) is recorded in the CUDA status word (reported as
// minitrain::Error at the next synchronization point, see cuda.hpp) and its row is written as zeros in
// the forward and skipped in the backward.
//
// N = tokens (all leading dimensions of ids), V = vocab, C = channels.
#pragma once

#include "cuda.hpp"

namespace minitrain {

namespace cuda {
template <class T>
__global__ void embedding_forward_kernel(T* y, const std::int32_t* ids, const T* table, std::int64_t N,
                                         std::int64_t V, std::int64_t C, Status* status) {
    MT_CUDA_GRID_LOOP(i, N * C) {
        const std::int64_t n = i / C, c = i % C;
        const std::int32_t id = ids[n];
        if (id < 0 || id >= V) {
            if (c == 0) report(status, status_bad_token, n, id, V);
            y[i] = T(0);
        } else {
            y[i] = table[std::int64_t(id) * C + c];
        }
    }
}

template <class T>
__global__ void embedding_backward_kernel(T* dtable, const std::int32_t* ids, const T* dy, std::int64_t N,
                                          std::int64_t V, std::int64_t C, Status* status) {
    MT_CUDA_GRID_LOOP(i, N * C) {
        const std::int64_t n = i / C, c = i % C;
        const std::int32_t id = ids[n];
        if (id < 0 || id >= V) {
            if (c == 0) report(status, status_bad_token, n, id, V);
            continue;
        }
        atomicAdd(dtable + std::int64_t(id) * C + c, dy[i]);
    }
}
}  // namespace cuda

/// y[n, :] = table[ids[n], :].   ids: (N) i32 (any shape with N elements)  table: (V, C)  y: (N, C)
/// (any shape with N rows of C).
inline void embedding_forward(CUDA, const Tensor& y, const Tensor& ids, const Tensor& table) {
    MT_CHECK(table.shape.rank == 2, "embedding: table must be (V, C), found ", table.shape);
    const std::int64_t N = ids.numel(), V = table.shape[0], C = table.shape[1];
    MT_CHECK(y.numel() == N * C && y.shape.cols() == C && y.dtype == table.dtype, "embedding: output ",
             y.shape, " ", dtype_name(y.dtype), " does not hold ", N, " rows of ", C, " ",
             dtype_name(table.dtype));
    MT_CHECK(ids.dtype == DType::i32, "embedding: ids must be i32, found ", dtype_name(ids.dtype));
    CUDA::on_device(y, "embedding", "output");
    CUDA::on_device(ids, "embedding", "ids");
    CUDA::on_device(table, "embedding", "table");
    dispatch_floating(table.dtype, "embedding", [&]<class T>() {
        if (!N || !C) return;
        cuda::embedding_forward_kernel<T><<<cuda::grid_for(N * C), cuda::threads, 0, CUDA::stream()>>>(
            y.data<T>(), ids.data<std::int32_t>(), table.data<T>(), N, V, C, CUDA::status());
        MT_CUDA_LAUNCHED();
    });
}

/// dtable (=|+=) scatter-add of dy rows: dtable[ids[n], :] += dy[n, :].   dy: (N, C)  dtable: (V, C)
/// Rows of dtable that no id touches are zeroed when dtable.accumulate is false.
inline void embedding_backward(CUDA, GradOut dtable, const Tensor& ids, const Tensor& dy) {
    if (!dtable) return;
    MT_CHECK(dtable.t.shape.rank == 2, "embedding_backward: dtable must be (V, C), found ", dtable.t.shape);
    const std::int64_t N = ids.numel(), V = dtable.t.shape[0], C = dtable.t.shape[1];
    MT_CHECK(dy.numel() == N * C && dy.shape.cols() == C && dy.dtype == dtable.t.dtype, "embedding_backward: dy ",
             dy.shape, " ", dtype_name(dy.dtype), " does not hold ", N, " rows of ", C, " ",
             dtype_name(dtable.t.dtype));
    MT_CHECK(ids.dtype == DType::i32, "embedding_backward: ids must be i32, found ", dtype_name(ids.dtype));
    CUDA::on_device(dtable.t, "embedding_backward", "dtable");
    CUDA::on_device(ids, "embedding_backward", "ids");
    CUDA::on_device(dy, "embedding_backward", "dy");
    if (!dtable.accumulate) CUDA::zero(dtable.t);
    dispatch_floating(dy.dtype, "embedding_backward", [&]<class T>() {
        if (!N || !C) return;
        cuda::embedding_backward_kernel<T><<<cuda::grid_for(N * C), cuda::threads, 0, CUDA::stream()>>>(
            dtable.t.data<T>(), ids.data<std::int32_t>(), dy.data<T>(), N, V, C, CUDA::status());
        MT_CUDA_LAUNCHED();
    });
}

}  // namespace minitrain
