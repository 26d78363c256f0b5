// minitrain/dist/nccl.hpp
// NcclComm: the Comm interface over NCCL, for GPU buffers. Only in CUDA builds with NCCL (minitrain::cuda
// defines MINITRAIN_HAS_NCCL=1 when NCCL is found); host code, so a .cpp or a .cu file may include it.
//
// One process per GPU. The ranks meet through a ncclUniqueId that rank 0 makes and the others receive:
//   - over a host communicator: NcclComm(host) with an MpiComm (mpirun / srun), or a LocalComm for a
//     one-GPU job; the host communicator then also serves barrier() and abort();
//   - without MPI (torchrun, a hand-written launcher), through a file on a filesystem every rank sees:
//     NcclComm::from_file(path): rank 0 writes the id atomically (a temporary file renamed into place), the
//     others poll for it with a timeout; rank and world size come from launch_info(). A run key
//     (MINITRAIN_RUN_ID, TORCHELASTIC_RUN_ID or SLURM_JOB_ID.SLURM_STEP_ID) inside the file keeps a stale
//     file of an earlier run from being taken; rank 0 removes the file once every rank has joined.
//
// Buffers: device pointers (cudaMalloc or managed) are reduced in place, asynchronously, on stream()
// (the caller orders its kernels with that stream, e.g. by passing the compute stream in); host pointers
// (a few doubles of loss sums and token counts) are staged through a device scratch buffer and the call
// returns with the result in host memory. reduce_scatter_sum / all_gather follow comm.hpp's shard rule:
// ncclReduceScatter / ncclAllGather in place when W divides n, otherwise a group of W ncclReduce /
// ncclBroadcast calls, one per shard (no padding needed). Errors: minitrain::Error with NCCL's error
// string and its last-error detail.
//
// abort(): ncclCommAbort (releases kernels waiting on dead peers), then the host communicator's abort
// (MPI_Abort). Without one, this process exits; its peers are ended by the launcher (torchrun stops
// the other workers when one fails).
#pragma once

#if !defined(MINITRAIN_HAS_NCCL)
#error "minitrain/dist/nccl.hpp needs NCCL: link minitrain::cuda from a build where NCCL was found (MINITRAIN_HAS_NCCL)"
#endif

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>

#include "../core/error.hpp"
#include "comm.hpp"
#include "launch.hpp"

/// MT_NCCL_CHECK(call): throws minitrain::Error "file:line: call: <NCCL's error string>: <last error>".
#define MT_NCCL_CHECK(...)                                                                              \
    do {                                                                                                \
        const ncclResult_t mt_nccl_res_ = (__VA_ARGS__);                                                \
        if (mt_nccl_res_ != ncclSuccess && mt_nccl_res_ != ncclInProgress)                              \
            ::minitrain::detail::fail(__FILE__, ":", __LINE__, ": ", #__VA_ARGS__, ": ",                \
                                      ncclGetErrorString(mt_nccl_res_), ::minitrain::detail::nccl_detail()); \
    } while (0)

namespace minitrain {

namespace detail {

/// NCCL's last error message (what failed, in words), as " (<message>)", or "" when it has none.
inline std::string nccl_detail() {
    const char* last = ncclGetLastError(nullptr);
    return last && *last ? std::string(" (") + last + ")" : std::string();
}

inline void nccl_cuda_check(cudaError_t e, const char* call) {
    if (e != cudaSuccess) fail("NcclComm: ", call, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

inline ncclRedOp_t nccl_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::mean: return ncclAvg;
        case ReduceOp::min: return ncclMin;
        case ReduceOp::max: return ncclMax;
        case ReduceOp::sum: break;
    }
    return ncclSum;
}

template <class T> ncclDataType_t nccl_type();
template <> inline ncclDataType_t nccl_type<float>() { return ncclFloat32; }
template <> inline ncclDataType_t nccl_type<double>() { return ncclFloat64; }
template <> inline ncclDataType_t nccl_type<std::int64_t>() { return ncclInt64; }

inline constexpr char nccl_id_magic[] = "minitrain nccl id v1\n";

/// The run key that tells this run's id file from an earlier run's: MINITRAIN_RUN_ID, else torchrun's
/// TORCHELASTIC_RUN_ID, else Slurm's job and step, else "" (no protection against a stale file).
inline std::string nccl_run_key() {
    if (const char* k = std::getenv("MINITRAIN_RUN_ID")) return k;
    if (const char* k = std::getenv("TORCHELASTIC_RUN_ID")) return k;
    const char* job = std::getenv("SLURM_JOB_ID");
    const char* step = std::getenv("SLURM_STEP_ID");
    if (job) return std::string(job) + "." + (step ? step : "");
    return "";
}

}  // namespace detail

/// Rank 0's side of the file rendezvous: writes `id` under `key` to `path` atomically (the readers see
/// no file or the whole file).
inline void write_nccl_id_file(const std::string& path, const ncclUniqueId& id, const std::string& key) {
    MT_CHECK(key.find('\n') == std::string::npos, "NcclComm: the run key must be one line, got '", key, "'");
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        MT_CHECK(out, "NcclComm: cannot create ", tmp, " (the NCCL id file's directory must exist and be writable)");
        out << detail::nccl_id_magic << key << '\n';
        out.write(id.internal, sizeof id.internal);
        out.flush();
        MT_CHECK(out, "NcclComm: writing ", tmp, " failed");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::filesystem::remove(tmp);
        detail::fail("NcclComm: cannot rename ", tmp, " to ", path, ": ", ec.message());
    }
}

/// The other ranks' side: waits until `path` holds an id written under `key`, polling every 10 ms, and
/// returns it; an Error after `timeout`.
inline ncclUniqueId read_nccl_id_file(const std::string& path, const std::string& key, std::chrono::milliseconds timeout,
                                      int rank = -1) {
    const std::string header = std::string(detail::nccl_id_magic) + key + "\n";
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string found = "no file";
    for (;;) {
        std::ifstream in(path, std::ios::binary);
        if (in) {
            std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            if (text.size() == header.size() + sizeof(ncclUniqueId) && text.compare(0, header.size(), header) == 0) {
                ncclUniqueId id;
                std::memcpy(id.internal, text.data() + header.size(), sizeof id.internal);
                return id;
            }
            found = text.compare(0, std::strlen(detail::nccl_id_magic), detail::nccl_id_magic) == 0
                        ? "a file of another run (run key differs)"
                        : "a file that is not a minitrain NCCL id";
        }
        if (std::chrono::steady_clock::now() >= deadline)
            detail::fail("NcclComm: rank ", rank, " waited ", timeout.count() / 1000.0, " s for rank 0's NCCL id in ",
                         path, " and found ", found, " (is rank 0 running, and do all ranks see the same filesystem?)");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

/// Comm over NCCL for GPU buffers (and small host buffers, staged). See the file comment.
class NcclComm final : public Comm {
public:
    /// The general constructor: every rank passes the same id and world size and its own rank.
    /// device < 0: GPU local_rank. stream nullptr: a stream of its own. host (optional, not owned): the
    /// communicator that serves barrier() and abort().
    NcclComm(const ncclUniqueId& id, int rank, int world, int local_rank, int local_world, int device = -1,
             cudaStream_t stream = nullptr, Comm* host = nullptr)
        : rank_(rank), world_(world), local_rank_(local_rank), local_world_(local_world), host_(host) {
        MT_CHECK(world >= 1 && rank >= 0 && rank < world, "NcclComm: rank ", rank, " of ", world, " is not a valid place");
        int count = 0;
        detail::nccl_cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
        device_ = device >= 0 ? device : local_rank;
        const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
        MT_CHECK(device_ < count, "NcclComm: rank ", rank, " (local rank ", local_rank, ") needs GPU ", device_,
                 ", but this process sees ", count, " GPU(s) (CUDA_VISIBLE_DEVICES=", visible ? visible : "(unset)",
                 "); start at most as many processes per node as GPUs");
        detail::nccl_cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        if (stream) {
            stream_ = stream;
        } else {
            detail::nccl_cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
            owns_stream_ = true;
        }
        try {
            MT_NCCL_CHECK(ncclCommInitRank(&comm_, world, id, rank));
        } catch (...) {
            if (owns_stream_) cudaStreamDestroy(stream_);
            throw;
        }
    }

    /// Bootstraps over a host communicator (MpiComm, or LocalComm for one GPU): rank 0's id is broadcast.
    explicit NcclComm(Comm& host, int device = -1, cudaStream_t stream = nullptr)
        : NcclComm(bootstrap_id(host), host.rank(), host.world_size(), host.local_rank(), host.local_world_size(),
                   device, stream, &host) {}

    /// Without MPI: the file rendezvous of the file comment. path "" -> $MINITRAIN_NCCL_ID_FILE.
    static std::unique_ptr<NcclComm> from_file(std::string path = "", const LaunchInfo& info = launch_info(),
                                               std::chrono::milliseconds timeout = std::chrono::minutes(5),
                                               int device = -1, cudaStream_t stream = nullptr) {
        if (path.empty())
            if (const char* p = std::getenv("MINITRAIN_NCCL_ID_FILE")) path = p;
        MT_CHECK(!path.empty(), "NcclComm::from_file: no path given and MINITRAIN_NCCL_ID_FILE is not set (a file "
                                "every rank can see, e.g. on the shared filesystem)");
        const std::string key = detail::nccl_run_key();
        ncclUniqueId id;
        if (info.rank == 0) {
            MT_NCCL_CHECK(ncclGetUniqueId(&id));
            write_nccl_id_file(path, id, key);
        } else {
            id = read_nccl_id_file(path, key, timeout, info.rank);
        }
        auto comm = std::make_unique<NcclComm>(id, info.rank, info.world_size, info.local_rank,
                                               info.local_world_size > 0 ? info.local_world_size : 1, device, stream);
        if (info.rank == 0) {  // ncclCommInitRank returned: every rank has read the id
            std::error_code ec;
            std::filesystem::remove(path, ec);
        }
        return comm;
    }

    ~NcclComm() override {
        if (scratch_) cudaFree(scratch_);
        if (event_) cudaEventDestroy(event_);
        if (comm_) {
            // Unwinding after an error: peers may be gone, and a clean destroy would wait for them.
            if (std::uncaught_exceptions() > 0)
                ncclCommAbort(comm_);
            else
                ncclCommDestroy(comm_);
        }
        if (owns_stream_) cudaStreamDestroy(stream_);
    }
    NcclComm(const NcclComm&) = delete;
    NcclComm& operator=(const NcclComm&) = delete;

    int rank() const override { return rank_; }
    int world_size() const override { return world_; }
    int local_rank() const override { return local_rank_; }
    int local_world_size() const override { return local_world_; }
    const char* backend() const override { return "nccl"; }

    ncclComm_t handle() const { return comm_; }
    int device() const { return device_; }
    /// The stream collectives on device buffers are enqueued on.
    cudaStream_t stream() const { return stream_; }
    /// Use another stream from now on (e.g. a second stream to overlap reduction with backward).
    void set_stream(cudaStream_t s) {
        MT_CHECK(s != nullptr, "NcclComm::set_stream: use an explicit stream, not the legacy default stream");
        stream_ = s;
    }
    /// Waits until every collective enqueued so far has finished.
    void synchronize() { detail::nccl_cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

    /// Overlap on two streams, without blocking the host. wait_for(compute): the collectives enqueued
    /// from now on start after the work already enqueued on `compute` (a bucket's gradients are done);
    /// then_on(compute): work enqueued on `compute` from now on starts after the collectives enqueued so
    /// far (the optimizer step reads the reduced gradients).
    void wait_for(cudaStream_t compute) { order(compute, stream_); }
    void then_on(cudaStream_t compute) { order(stream_, compute); }

    void barrier() override {
        synchronize();
        if (host_ && host_->world_size() == world_) {
            host_->barrier();
            return;
        }
        float one = 1;
        all_reduce_sum(&one, 1);  // host value: staged, returns when every rank contributed
    }

    [[noreturn]] void abort(std::string_view message, int exit_code = 1) noexcept override {
        if (comm_) ncclCommAbort(comm_);
        comm_ = nullptr;
        if (host_ && host_->world_size() == world_) host_->abort(message, exit_code);
        const std::string line = abort_line(message);
        std::fputs(line.c_str(), stderr);
        std::fflush(stderr);
        std::_Exit(exit_code);
    }

protected:
    void all_reduce_impl(float* data, std::size_t n, ReduceOp op) override { all_reduce_typed(data, n, op); }
    void all_reduce_impl(double* data, std::size_t n, ReduceOp op) override { all_reduce_typed(data, n, op); }
    void all_reduce_impl(std::int64_t* data, std::size_t n, ReduceOp op) override { all_reduce_typed(data, n, op); }

    void reduce_scatter_impl(float* data, std::size_t n) override {
        if (world_ == 1) return;
        on_device(data, n * sizeof(float), [&](void* p) {
            float* d = static_cast<float*>(p);
            const std::size_t c = shard_stride(n, world_);
            if (n % std::size_t(world_) == 0) {
                MT_NCCL_CHECK(ncclReduceScatter(d, d + std::size_t(rank_) * c, c, ncclFloat32, ncclSum, comm_, stream_));
                return;
            }
            MT_NCCL_CHECK(ncclGroupStart());
            for (int r = 0; r < world_; ++r) {
                const Shard s = shard_of(n, world_, r);
                if (s.size()) MT_NCCL_CHECK(ncclReduce(d + s.begin, d + s.begin, s.size(), ncclFloat32, ncclSum, r, comm_, stream_));
            }
            MT_NCCL_CHECK(ncclGroupEnd());
        });
    }

    void all_gather_impl(float* data, std::size_t n) override {
        if (world_ == 1) return;
        on_device(data, n * sizeof(float), [&](void* p) {
            float* d = static_cast<float*>(p);
            const std::size_t c = shard_stride(n, world_);
            if (n % std::size_t(world_) == 0) {
                MT_NCCL_CHECK(ncclAllGather(d + std::size_t(rank_) * c, d, c, ncclFloat32, comm_, stream_));
                return;
            }
            MT_NCCL_CHECK(ncclGroupStart());
            for (int r = 0; r < world_; ++r) {
                const Shard s = shard_of(n, world_, r);
                if (s.size()) MT_NCCL_CHECK(ncclBroadcast(d + s.begin, d + s.begin, s.size(), ncclFloat32, r, comm_, stream_));
            }
            MT_NCCL_CHECK(ncclGroupEnd());
        });
    }

    void broadcast_impl(void* data, std::size_t bytes, int root) override {
        if (world_ == 1) return;
        on_device(data, bytes, [&](void* p) { MT_NCCL_CHECK(ncclBroadcast(p, p, bytes, ncclUint8, root, comm_, stream_)); });
    }

private:
    static ncclUniqueId bootstrap_id(Comm& host) {
        ncclUniqueId id;
        std::memset(&id, 0, sizeof id);
        if (host.is_root()) MT_NCCL_CHECK(ncclGetUniqueId(&id));
        host.broadcast(&id, sizeof id, 0);
        return id;
    }

    template <class T>
    void all_reduce_typed(T* data, std::size_t n, ReduceOp op) {
        if (world_ == 1) return;
        on_device(data, n * sizeof(T), [&](void* p) {
            MT_NCCL_CHECK(ncclAllReduce(p, p, n, detail::nccl_type<T>(), detail::nccl_op(op), comm_, stream_));
        });
    }

    /// Work enqueued on `second` from now on waits for the work enqueued on `first` so far.
    void order(cudaStream_t first, cudaStream_t second) {
        if (first == second) return;
        if (!event_)
            detail::nccl_cuda_check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        detail::nccl_cuda_check(cudaEventRecord(event_, first), "cudaEventRecord");
        detail::nccl_cuda_check(cudaStreamWaitEvent(second, event_, 0), "cudaStreamWaitEvent");
    }

    static bool is_device_pointer(const void* p) {
        cudaPointerAttributes a{};
        if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
            cudaGetLastError();  // older drivers report plain host memory as an error: clear it
            return false;
        }
        return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    }

    /// Runs enqueue(device pointer): directly on a device buffer (asynchronous), or on a device copy of a
    /// host buffer that is copied back before returning.
    template <class F>
    void on_device(void* data, std::size_t bytes, F&& enqueue) {
        if (is_device_pointer(data)) {
            enqueue(data);
            return;
        }
        if (bytes > scratch_bytes_) {
            if (scratch_) detail::nccl_cuda_check(cudaFree(scratch_), "cudaFree");
            scratch_ = nullptr;
            scratch_bytes_ = 0;
            detail::nccl_cuda_check(cudaMalloc(&scratch_, bytes), "cudaMalloc (staging a host buffer)");
            scratch_bytes_ = bytes;
        }
        detail::nccl_cuda_check(cudaMemcpyAsync(scratch_, data, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
        enqueue(scratch_);
        detail::nccl_cuda_check(cudaMemcpyAsync(data, scratch_, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
        synchronize();
    }

    ncclComm_t comm_ = nullptr;
    cudaStream_t stream_ = nullptr;
    bool owns_stream_ = false;
    int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1, device_ = 0;
    Comm* host_ = nullptr;
    cudaEvent_t event_ = nullptr;  // for wait_for / then_on
    void* scratch_ = nullptr;  // device staging for host buffers, grown on demand
    std::size_t scratch_bytes_ = 0;
};

}  // namespace minitrain
