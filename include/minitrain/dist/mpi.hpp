// minitrain/dist/mpi.hpp
// MpiComm: the Comm interface over MPI, for CPU buffers (host memory). Compiled only in programs that
// link minitrain::mpi (which defines MINITRAIN_HAS_MPI=1 and brings MPI::MPI_CXX); minitrain itself never
// needs MPI.
//
// MPI is initialized once per process, by the first MpiComm (MPI_Init_thread, MPI_THREAD_SERIALIZED:
// collectives come from one thread at a time, OpenMP threads never call MPI), and finalized at exit. A
// program that initialized MPI itself keeps that: MpiComm then neither initializes nor finalizes it, and
// leaves MPI_COMM_WORLD's error handler alone.
//
// Each MpiComm works on its own duplicate of the parent communicator (MPI_COMM_WORLD by default), so its
// collectives never match a user's messages, with MPI_ERRORS_RETURN set: a failed call becomes a
// minitrain::Error carrying MPI's error string instead of MPI's default abort.
//
// Collectives work on MPI_IN_PLACE buffers: MPI_Allreduce (in chunks of at most 2^30 elements, MPI counts
// are int), MPI_Reduce_scatter_block / MPI_Allgather when the shards are equal, the v-variants otherwise.
#pragma once

#if !defined(MINITRAIN_HAS_MPI)
#error "minitrain/dist/mpi.hpp needs MPI: link the program with minitrain::mpi (find_package(minitrain COMPONENTS mpi)), which defines MINITRAIN_HAS_MPI"
#endif

// Only MPI's C API: skip the deprecated C++ bindings (and their warnings) when mpi.h offers them.
#if !defined(OMPI_SKIP_MPICXX)
#define OMPI_SKIP_MPICXX 1
#endif
#if !defined(MPICH_SKIP_MPICXX)
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "comm.hpp"

namespace minitrain {

namespace detail {

inline std::string mpi_error_string(int code) {
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
    return std::string(buf, std::size_t(len));
}

/// Throws Error "MPI: <call> failed: <MPI's error string>" unless code is MPI_SUCCESS.
inline void mpi_check(int code, const char* call) {
    if (code != MPI_SUCCESS) fail("MPI: ", call, " failed: ", mpi_error_string(code));
}

/// MPI for this process: initialized on first use, finalized when the process exits (static destructor),
/// unless the program had initialized it itself.
class MpiRuntime {
public:
    static MpiRuntime& get() {
        static MpiRuntime runtime;
        return runtime;
    }
    MpiRuntime(const MpiRuntime&) = delete;
    MpiRuntime& operator=(const MpiRuntime&) = delete;

    /// Whether minitrain initialized MPI (and so finalizes it).
    bool owned() const { return owned_; }
    /// The thread support MPI provides (MPI_THREAD_SINGLE .. MPI_THREAD_MULTIPLE).
    int thread_level() const { return thread_level_; }

private:
    MpiRuntime() {
        int finalized = 0, initialized = 0;
        mpi_check(MPI_Finalized(&finalized), "MPI_Finalized");
        MT_CHECK(!finalized, "MPI: MPI_Finalize was already called in this process; an MpiComm cannot start MPI again");
        mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
        if (initialized) {
            mpi_check(MPI_Query_thread(&thread_level_), "MPI_Query_thread");
            return;
        }
        mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &thread_level_), "MPI_Init_thread");
        owned_ = true;
        mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler(MPI_COMM_WORLD)");
    }
    ~MpiRuntime() {
        int finalized = 1;
        if (owned_ && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
    }

    bool owned_ = false;
    int thread_level_ = MPI_THREAD_SINGLE;
};

inline MPI_Op mpi_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::min: return MPI_MIN;
        case ReduceOp::max: return MPI_MAX;
        case ReduceOp::sum:
        case ReduceOp::mean: break;
    }
    return MPI_SUM;
}

template <class T> MPI_Datatype mpi_type();
template <> inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <> inline MPI_Datatype mpi_type<std::int64_t>() { return MPI_INT64_T; }

}  // namespace detail

/// Comm over MPI for host buffers. One per group of processes; create it early in main (it starts MPI).
class MpiComm final : public Comm {
public:
    /// A communicator over the processes of `parent` (every one of them must construct it).
    explicit MpiComm(MPI_Comm parent = MPI_COMM_WORLD) {
        detail::MpiRuntime::get();
        detail::mpi_check(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
        detail::mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
        detail::mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        detail::mpi_check(MPI_Comm_size(comm_, &world_), "MPI_Comm_size");
        // The ranks that share this node's memory: the local rank picks this process's GPU.
        MPI_Comm node = MPI_COMM_NULL;
        detail::mpi_check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
                          "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
        detail::mpi_check(MPI_Comm_rank(node, &local_rank_), "MPI_Comm_rank(node)");
        detail::mpi_check(MPI_Comm_size(node, &local_world_), "MPI_Comm_size(node)");
        MPI_Comm_free(&node);
        counts_.resize(std::size_t(world_));
        displs_.resize(std::size_t(world_));
    }
    ~MpiComm() override {
        int finalized = 1;
        if (comm_ != MPI_COMM_NULL && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Comm_free(&comm_);
    }
    MpiComm(const MpiComm&) = delete;
    MpiComm& operator=(const MpiComm&) = delete;

    int rank() const override { return rank_; }
    int world_size() const override { return world_; }
    int local_rank() const override { return local_rank_; }
    int local_world_size() const override { return local_world_; }
    const char* backend() const override { return "mpi"; }
    /// The duplicated MPI communicator, for a program's own MPI calls.
    MPI_Comm handle() const { return comm_; }

    void barrier() override { detail::mpi_check(MPI_Barrier(comm_), "MPI_Barrier"); }

    [[noreturn]] void abort(std::string_view message, int exit_code = 1) noexcept override {
        const std::string line = abort_line(message);
        std::fputs(line.c_str(), stderr);
        std::fflush(stderr);
        MPI_Abort(comm_ != MPI_COMM_NULL ? comm_ : MPI_COMM_WORLD, exit_code);
        std::_Exit(exit_code);  // MPI_Abort does not return; if an implementation does, still end this rank
    }

protected:
    void all_reduce_impl(float* data, std::size_t n, ReduceOp op) override { all_reduce_typed(data, n, op); }
    void all_reduce_impl(double* data, std::size_t n, ReduceOp op) override { all_reduce_typed(data, n, op); }
    void all_reduce_impl(std::int64_t* data, std::size_t n, ReduceOp op) override { all_reduce_typed(data, n, op); }

    void reduce_scatter_impl(float* data, std::size_t n) override {
        if (world_ == 1) return;
        const std::size_t c = shard_stride(n, world_);
        MT_CHECK(c <= std::size_t(INT_MAX), "MpiComm::reduce_scatter_sum: shards of ", c,
                 " elements exceed MPI's int counts (", INT_MAX, ")");
        // In place, MPI takes the input from the whole buffer and leaves this rank's block at its start;
        // it then moves to the shard's own place, where all_gather and the optimizer expect it.
        if (n % std::size_t(world_) == 0) {
            detail::mpi_check(MPI_Reduce_scatter_block(MPI_IN_PLACE, data, int(c), MPI_FLOAT, MPI_SUM, comm_),
                              "MPI_Reduce_scatter_block");
        } else {
            fill_counts(n);
            detail::mpi_check(MPI_Reduce_scatter(MPI_IN_PLACE, data, counts_.data(), MPI_FLOAT, MPI_SUM, comm_),
                              "MPI_Reduce_scatter");
        }
        const Shard s = shard(n);
        if (s.begin != 0 && s.size()) std::memmove(data + s.begin, data, s.size() * sizeof(float));
    }

    void all_gather_impl(float* data, std::size_t n) override {
        if (world_ == 1) return;
        const std::size_t c = shard_stride(n, world_);
        if (n % std::size_t(world_) == 0) {
            MT_CHECK(c <= std::size_t(INT_MAX), "MpiComm::all_gather: shards of ", c,
                     " elements exceed MPI's int counts (", INT_MAX, ")");
            detail::mpi_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, int(c), MPI_FLOAT, comm_),
                              "MPI_Allgather");
            return;
        }
        MT_CHECK(n <= std::size_t(INT_MAX), "MpiComm::all_gather: ", n,
                 " elements need displacements beyond MPI's int (", INT_MAX, "); make n a multiple of the world size");
        fill_counts(n);
        detail::mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts_.data(), displs_.data(),
                                         MPI_FLOAT, comm_),
                          "MPI_Allgatherv");
    }

    void broadcast_impl(void* data, std::size_t bytes, int root) override {
        auto* p = static_cast<unsigned char*>(data);
        for (std::size_t off = 0; off < bytes; off += chunk) {
            const int len = int(std::min(chunk, bytes - off));
            detail::mpi_check(MPI_Bcast(p + off, len, MPI_BYTE, root, comm_), "MPI_Bcast");
        }
    }

private:
    static constexpr std::size_t chunk = std::size_t(1) << 30;  // elements (or bytes) per MPI call

    template <class T>
    void all_reduce_typed(T* data, std::size_t n, ReduceOp op) {
        if (world_ == 1) return;
        for (std::size_t off = 0; off < n; off += chunk)
            detail::mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off, int(std::min(chunk, n - off)), detail::mpi_type<T>(),
                                            detail::mpi_op(op), comm_),
                              "MPI_Allreduce");
        if constexpr (!std::is_same_v<T, std::int64_t>) {
            if (op == ReduceOp::mean) {
                const T w = T(world_);
                for (std::size_t i = 0; i < n; ++i) data[i] /= w;
            }
        }
    }

    void fill_counts(std::size_t n) {
        for (int r = 0; r < world_; ++r) {
            const Shard s = shard_of(n, world_, r);
            counts_[std::size_t(r)] = int(s.size());
            displs_[std::size_t(r)] = int(s.begin);
        }
    }

    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1;
    std::vector<int> counts_, displs_;  // per rank, reused by the v-collectives (no allocation per step)
};

}  // namespace minitrain
