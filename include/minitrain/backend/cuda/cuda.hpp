// minitrain/backend/cuda/cuda.hpp
// The CUDA backend policy: device memory, one compute stream, one cuBLAS handle, error checking, and the
// device-side helpers (block reductions, launch shapes) the kernels beside this file share. Its ops live
// one group per file as overloads `<op>_forward(CUDA, ...)` / `<op>_backward(CUDA, ...)`, mirroring
// backend/cpu, so model code written against a backend tag finds them by overload resolution.
//
// Ordering: every kernel, copy and cuBLAS call goes to CUDA::stream(), so they run in issue order and
// no kernel needs an event. The host waits only where it needs a value: to_host, synchronize, and the
// few kernels whose result is returned to the caller (cross_entropy_forward's row count, sum_squares).
//
// Data errors found on the device (a token id outside the vocabulary, a target outside the classes, an
// expert index outside [0, E)) cannot throw where they happen. The kernel records the first one in a
// small device status word and skips the bad element; the next host synchronization point (to_host,
// synchronize, cross_entropy_forward, sum_squares) reads the word and throws minitrain::Error naming the
// op, position and value. So an error surfaces at the latest when the step's loss is read.
//
// One device per process: the stream, the handle and the scratch words belong to the device that was
// current when they were first used.
#pragma once

#if !defined(__CUDACC__)
#error "minitrain/backend/cuda needs a .cu translation unit compiled by nvcc (include minitrain/cuda.hpp from a .cu file; .cpp files compiled by the host compiler can use the CPU backend only)"
#endif

#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "../../core/tensor.hpp"

/// MT_CUDA_CHECK(call): throws minitrain::Error "file:line: call: cudaErrorX: description" on failure.
#define MT_CUDA_CHECK(...)                                                                              \
    do {                                                                                                \
        const cudaError_t mt_cuda_err_ = (__VA_ARGS__);                                                 \
        if (mt_cuda_err_ != cudaSuccess)                                                                \
            ::minitrain::detail::fail(__FILE__, ":", __LINE__, ": ", #__VA_ARGS__, ": ",                \
                                      cudaGetErrorName(mt_cuda_err_), ": ", cudaGetErrorString(mt_cuda_err_)); \
    } while (0)

/// MT_CUBLAS_CHECK(call): the same for cuBLAS status codes.
#define MT_CUBLAS_CHECK(...)                                                                            \
    do {                                                                                                \
        const cublasStatus_t mt_cublas_st_ = (__VA_ARGS__);                                             \
        if (mt_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                     \
            ::minitrain::detail::fail(__FILE__, ":", __LINE__, ": ", #__VA_ARGS__, ": ",                \
                                      cublasGetStatusName(mt_cublas_st_), ": ",                         \
                                      cublasGetStatusString(mt_cublas_st_));                            \
    } while (0)

/// After a kernel launch: a bad launch configuration is reported here, with the kernel's call site.
#define MT_CUDA_LAUNCHED() MT_CUDA_CHECK(cudaGetLastError())

namespace minitrain {

namespace cuda {

/// The first data error a kernel found (see the file comment). code 0 = none.
struct Status {
    int code;
    int pad;
    long long a, b, c;  // meaning depends on code
};

enum StatusCode : int {
    status_ok = 0,
    status_bad_token = 1,   // a = position, b = id, c = vocabulary size
    status_bad_target = 2,  // a = row, b = target, c = classes
    status_bad_expert = 3,  // a = token, b = expert, c = experts
    status_bad_logprob_target = 4,  // a = row, b = target, c = classes
    status_busy = -1,       // being written
};

/// Records a data error unless an earlier one is already recorded: the first one wins.
__device__ inline void report(Status* s, int code, long long a, long long b, long long c) {
    if (atomicCAS(&s->code, status_ok, status_busy) == status_ok) {
        s->a = a;
        s->b = b;
        s->c = c;
        __threadfence();
        atomicExch(&s->code, code);
    }
}

inline std::string status_message(const Status& s) {
    std::ostringstream os;
    switch (s.code) {
        case status_bad_token:
            os << "embedding: token id " << s.b << " at position " << s.a << " is outside the vocabulary [0, " << s.c
               << ")";
            break;
        case status_bad_target:
            os << "cross_entropy: target of row " << s.a << " is " << s.b << ", expected a class in [0, " << s.c
               << ") or the ignore index";
            break;
        case status_bad_expert:
            os << "moe_dispatch: token " << s.a << " routes to expert " << s.b << ", outside [0, " << s.c << ")";
            break;
        case status_bad_logprob_target:
            os << "sequence_logprobs: target of row " << s.a << " is " << s.b << ", expected a class in [0, " << s.c
               << ") or the ignore index";
            break;
        default: os << "CUDA kernel reported unknown status " << s.code; break;
    }
    os << " (found on the GPU; the elements concerned were skipped)";
    return os.str();
}

}  // namespace cuda

/// CUDA backend: cuBLAS for matrix products, plain kernels elsewhere, all on one stream.
struct CUDA {
    static constexpr Device device = Device::cuda;
    /// cudaMalloc returns 256-byte aligned memory; arenas keep that alignment for every tensor.
    static constexpr std::size_t alignment = 256;

    /// True when a CUDA device can be used; otherwise `reason` (if given) says why.
    static bool available(std::string* reason = nullptr) {
        int n = 0;
        const cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            if (reason) *reason = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
            (void)cudaGetLastError();  // clear it: it is not sticky, but leave nothing behind
            return false;
        }
        if (n == 0) {
            if (reason) *reason = "cudaGetDeviceCount found no device";
            return false;
        }
        return true;
    }

    /// Device memory (never managed memory). Counted in allocations(): a steady-state training step
    /// allocates nothing (tests/cuda/model.cu checks), since cudaMalloc synchronizes the device.
    static void* allocate(std::size_t bytes) {
        allocations().fetch_add(1, std::memory_order_relaxed);
        void* p = nullptr;
        const cudaError_t e = cudaMalloc(&p, std::max(bytes, alignment));
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            detail::fail("CUDA::allocate: cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorName(e), ": ",
                         cudaGetErrorString(e));
        }
        return p;
    }
    /// How many times allocate() has been called.
    static std::atomic<long>& allocations() {
        static std::atomic<long> n{0};
        return n;
    }
    /// cudaFree waits for the device, so no kernel still uses the memory. Errors (the runtime may already be
    /// shut down at exit) are ignored: a destructor cannot report them.
    static void deallocate(void* p, std::size_t) noexcept {
        if (p) (void)cudaFree(p);
    }

    static void zero(const Tensor& t) {
        on_device(t, "CUDA::zero", "tensor");
        if (t.bytes()) MT_CUDA_CHECK(cudaMemsetAsync(t.ptr, 0, t.bytes(), stream()));
    }
    static void copy(const Tensor& dst, const Tensor& src) {
        MT_CHECK(dst.bytes() == src.bytes(), "CUDA::copy: ", src.bytes(), " bytes into ", dst.bytes());
        on_device(dst, "CUDA::copy", "destination");
        on_device(src, "CUDA::copy", "source");
        if (src.bytes() && dst.ptr != src.ptr)
            MT_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, src.ptr, src.bytes(), cudaMemcpyDeviceToDevice, stream()));
    }
    /// Waits for everything queued before, copies, and reports a pending device data error (Error).
    static void to_host(void* host, const Tensor& src) {
        on_device(src, "CUDA::to_host", "source");
        read_back(host, src.ptr, src.bytes(), "CUDA::to_host");
    }
    /// Returns once the copy is done, so the host buffer may be reused or freed at once.
    static void from_host(const Tensor& dst, const void* host) {
        on_device(dst, "CUDA::from_host", "destination");
        if (!dst.bytes()) return;
        MT_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, host, dst.bytes(), cudaMemcpyHostToDevice, stream()));
        MT_CUDA_CHECK(cudaStreamSynchronize(stream()));
    }
    /// Waits for the stream; throws on a kernel fault or a pending device data error.
    static void synchronize() { read_back(nullptr, nullptr, 0, "CUDA::synchronize"); }

    /// Kept for the Backend interface: GPU parallelism is not set by a thread count.
    static void set_threads(int n) {
        MT_CHECK(n >= 1, "CUDA::set_threads: thread count must be at least 1, got ", n);
    }
    static int threads() { return 1; }

    /// The compute stream, created on first use (a blocking stream: it stays ordered with the legacy
    /// default stream that plain cudaMemcpy uses). Never destroyed: at exit the runtime may be gone first.
    static cudaStream_t stream() {
        static cudaStream_t s = [] {
            cudaStream_t st = nullptr;
            MT_CUDA_CHECK(cudaStreamCreate(&st));
            return st;
        }();
        return s;
    }

    /// The cuBLAS handle, bound to stream(). Default math: fp32 products stay fp32 (no TF32), so results
    /// match the CPU to rounding; set_tf32(true) trades that for tensor-core speed.
    static cublasHandle_t blas() {
        static cublasHandle_t h = [] {
            cublasHandle_t handle = nullptr;
            MT_CUBLAS_CHECK(cublasCreate(&handle));
            MT_CUBLAS_CHECK(cublasSetStream(handle, stream()));
            MT_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
            return handle;
        }();
        return h;
    }
    static void set_tf32(bool on) {
        MT_CUBLAS_CHECK(cublasSetMathMode(blas(), on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    }

    /// Device status word kernels report data errors to (see the file comment).
    static cuda::Status* status() { return words().status; }

    /// A small device scratch area (scratch_bytes) for kernels that return a few numbers to the host; its
    /// users copy their result back and synchronize before returning, so one area serves them all.
    static constexpr std::size_t scratch_bytes = 16384;
    static void* scratch() { return words().scratch; }

    /// Copies `bytes` from device `src` to `host` after all queued work, then checks the status word.
    static void read_back(void* host, const void* src, std::size_t bytes, const char* where) {
        Words& w = words();
        cudaStream_t s = stream();
        if (bytes) MT_CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, s));
        MT_CUDA_CHECK(cudaMemcpyAsync(w.host_status, w.status, sizeof(cuda::Status), cudaMemcpyDeviceToHost, s));
        const cudaError_t e = cudaStreamSynchronize(s);
        if (e != cudaSuccess)
            detail::fail(where, ": a kernel failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
        if (w.host_status->code != cuda::status_ok) {
            const cuda::Status found = *w.host_status;
            MT_CUDA_CHECK(cudaMemsetAsync(w.status, 0, sizeof(cuda::Status), s));
            MT_CUDA_CHECK(cudaStreamSynchronize(s));
            w.host_status->code = cuda::status_ok;
            throw Error(cuda::status_message(found));
        }
    }

    static void on_device(const Tensor& t, const char* op, const char* name) {
        MT_CHECK(t.device == Device::cuda, op, ": ", name, " is a ", device_name(t.device),
                 " tensor, expected cuda (upload it with CUDA::from_host into a Buffer<CUDA>)");
    }

private:
    struct Words {
        cuda::Status* status = nullptr;       // device
        cuda::Status* host_status = nullptr;  // pinned host mirror
        void* scratch = nullptr;              // device, scratch_bytes
    };
    static Words& words() {
        static Words w = [] {
            Words n;
            MT_CUDA_CHECK(cudaMalloc(&n.status, sizeof(cuda::Status)));
            // On stream() and waited for, not plain cudaMemset: that goes to the default stream, which with
            // nvcc --default-stream per-thread is not ordered with stream(), so the first kernel to report
            // could race the clearing.
            MT_CUDA_CHECK(cudaMemsetAsync(n.status, 0, sizeof(cuda::Status), stream()));
            MT_CUDA_CHECK(cudaStreamSynchronize(stream()));
            MT_CUDA_CHECK(cudaMallocHost(&n.host_status, sizeof(cuda::Status)));
            n.host_status->code = cuda::status_ok;
            MT_CUDA_CHECK(cudaMalloc(&n.scratch, scratch_bytes));
            return n;
        }();
        return w;
    }
};

namespace cuda {

// ---- launch shapes ----------------------------------------------------------------------------------

/// Threads per block of the elementwise (grid-stride) kernels and of the row kernels.
inline constexpr int threads = 256;
static_assert(threads % 32 == 0 && threads <= 1024, "block_sum / block_max need whole warps, at most 32 of them");

/// Blocks for a grid-stride loop over n elements (capped: each thread then takes several elements).
inline unsigned grid_for(std::int64_t n, int block = threads) {
    return unsigned(std::clamp<std::int64_t>((n + block - 1) / block, 1, std::int64_t(1) << 16));
}
/// Blocks for a one-block-per-row kernel over n rows (capped: each block then loops over rows).
inline unsigned grid_rows(std::int64_t n) { return unsigned(std::clamp<std::int64_t>(n, 1, std::int64_t(1) << 20)); }

/// i over [0, n) in grid-stride order, in 64-bit so that no tensor size overflows an index.
#define MT_CUDA_GRID_LOOP(i, n)                                                                          \
    for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                 \
         i += std::int64_t(gridDim.x) * blockDim.x)
/// row over [0, n) in block-stride order: one block per row.
#define MT_CUDA_ROW_LOOP(row, n) for (std::int64_t row = blockIdx.x; row < (n); row += gridDim.x)

// ---- reductions -------------------------------------------------------------------------------------
// Fixed shuffle trees: the result depends only on the data and blockDim, never on timing.

template <class T>
__device__ inline T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <class T>
__device__ inline T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        const T u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

/// Sum over the block, returned to every thread. Every thread must call it (it holds barriers);
/// blockDim.x must be a multiple of 32. Safe to call back to back (it waits before reusing its memory).
template <class T>
__device__ T block_sum(T v) {
    __shared__ T part[32];
    __shared__ T total;
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    v = warp_sum(v);
    __syncthreads();  // readers of the previous call's `total` are done
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T s = lane < int(blockDim.x >> 5) ? part[lane] : T(0);
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

/// Maximum over the block, returned to every thread (same rules as block_sum). -inf for an empty block.
template <class T>
__device__ T block_max(T v) {
    __shared__ T part[32];
    __shared__ T total;
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T s = lane < int(blockDim.x >> 5) ? part[lane] : -T(INFINITY);
        s = warp_max(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// ---- host-side checks -------------------------------------------------------------------------------

/// cuBLAS and some launch shapes take int: sizes must fit.
inline int as_int(std::int64_t v, const char* op, const char* what) {
    MT_CHECK(v >= 0 && v <= INT_MAX, op, ": ", what, " = ", v, " does not fit the 32-bit size cuBLAS takes");
    return int(v);
}

template <class T>
__global__ void fill_kernel(T* x, std::int64_t n, T value) {
    MT_CUDA_GRID_LOOP(i, n) x[i] = value;
}

}  // namespace cuda

/// Fill a floating tensor with a constant.
inline void fill(CUDA, const Tensor& t, double value) {
    CUDA::on_device(t, "fill", "tensor");
    dispatch_floating(t.dtype, "fill", [&]<class T>() {
        const std::int64_t n = t.numel();
        if (!n) return;
        cuda::fill_kernel<T><<<cuda::grid_for(n), cuda::threads, 0, CUDA::stream()>>>(t.data<T>(), n, T(value));
        MT_CUDA_LAUNCHED();
    });
}

}  // namespace minitrain
