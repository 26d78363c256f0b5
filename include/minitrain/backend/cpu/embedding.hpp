// minitrain/backend/cpu/embedding.hpp
// Token embedding lookup on the CPU: forward copies table rows, backward scatter-adds gradient rows.
// The backward must be deterministic and race-free although several tokens may share an id: threads
// split the channel dimension, so each element of dtable is owned by one thread and receives its
// contributions in token order, whatever the thread count (bitwise reproducible, no atomics).
//
// N = tokens (all leading dimensions of ids), V = vocab, C = channels.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu.hpp"

namespace minitrain {

namespace cpu {
/// Every id must index a table row; checked on the host before any memory is touched.
inline void check_ids(const Tensor& ids, std::int64_t V, const char* op) {
    MT_CHECK(ids.dtype == DType::i32, op, ": ids must be i32, found ", dtype_name(ids.dtype));
    const std::int32_t* id = ids.data<std::int32_t>();
    const std::int64_t N = ids.numel();
    for (std::int64_t n = 0; n < N; ++n)
        MT_CHECK(id[n] >= 0 && id[n] < V, op, ": token id ", id[n], " at position ", n, " of ids ", ids.shape,
                 " is outside the vocabulary [0, ", V, ")");
}
}  // namespace cpu

/// y[n, :] = table[ids[n], :].   ids: (N) i32 (any shape with N elements)  table: (V, C)  y: (N, C)
/// (any shape with N rows of C). An id outside [0, V) throws minitrain::Error naming position and value.
inline void embedding_forward(CPU, const Tensor& y, const Tensor& ids, const Tensor& table) {
    MT_CHECK(table.shape.rank == 2, "embedding: table must be (V, C), found ", table.shape);
    const std::int64_t N = ids.numel(), V = table.shape[0], C = table.shape[1];
    MT_CHECK(y.numel() == N * C && y.shape.cols() == C && y.dtype == table.dtype, "embedding: output ",
             y.shape, " ", dtype_name(y.dtype), " does not hold ", N, " rows of ", C, " ",
             dtype_name(table.dtype));
    cpu::check_ids(ids, V, "embedding");
    dispatch_floating(table.dtype, "embedding", [&]<class T>() {
        const std::int32_t* id = ids.data<std::int32_t>();
        const T* tab = table.data<T>();  // (V, C)
        T* out = y.data<T>();            // (N, C)
#pragma omp parallel for schedule(static) if (N * C >= (1 << 15))
        for (std::int64_t n = 0; n < N; ++n)
            std::memcpy(out + n * C, tab + std::int64_t(id[n]) * C, std::size_t(C) * sizeof(T));
    });
}

/// dtable (=|+=) scatter-add of dy rows: dtable[ids[n], :] += dy[n, :].   dy: (N, C)  dtable: (V, C)
/// Rows of dtable that no id touches are zeroed when dtable.accumulate is false.
inline void embedding_backward(CPU, GradOut dtable, const Tensor& ids, const Tensor& dy) {
    if (!dtable) return;
    MT_CHECK(dtable.t.shape.rank == 2, "embedding_backward: dtable must be (V, C), found ", dtable.t.shape);
    const std::int64_t N = ids.numel(), V = dtable.t.shape[0], C = dtable.t.shape[1];
    MT_CHECK(dy.numel() == N * C && dy.shape.cols() == C && dy.dtype == dtable.t.dtype, "embedding_backward: dy ",
             dy.shape, " ", dtype_name(dy.dtype), " does not hold ", N, " rows of ", C, " ",
             dtype_name(dtable.t.dtype));
    cpu::check_ids(ids, V, "embedding_backward");
    if (!dtable.accumulate) CPU::zero(dtable.t);
    dispatch_floating(dy.dtype, "embedding_backward", [&]<class T>() {
        const std::int32_t* id = ids.data<std::int32_t>();
        const T* g = dy.data<T>();     // (N, C)
        T* dt = dtable.t.data<T>();    // (V, C)
        // Column blocks: one per thread, a multiple of 64 bytes wide so that no two threads share a cache line
        // of a table row.
        const std::int64_t lane = 64 / std::int64_t(sizeof(T));
        const std::int64_t nt = N * C >= (1 << 15) ? CPU::threads() : 1;
        const std::int64_t width = ((C + nt - 1) / nt + lane - 1) / lane * lane;
        const std::int64_t blocks = (C + width - 1) / width;
#pragma omp parallel for schedule(static) if (blocks > 1)
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int64_t c0 = b * width, c1 = std::min(C, c0 + width);
            for (std::int64_t n = 0; n < N; ++n) {
                T* dst = dt + std::int64_t(id[n]) * C;
                const T* src = g + n * C;
#pragma omp simd
                for (std::int64_t c = c0; c < c1; ++c) dst[c] += src[c];
            }
        }
    });
}

}  // namespace minitrain
