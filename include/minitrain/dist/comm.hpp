// minitrain/dist/comm.hpp
// The communicator the trainer talks to: a small, backend-neutral set of collectives over one group of
// processes (ranks 0 .. W-1), and LocalComm, the one-process communicator that is always available.
// MpiComm (dist/mpi.hpp, CPU buffers over MPI) and NcclComm (dist/nccl.hpp, GPU buffers over NCCL)
// implement the same interface, so a Trainer holding a `Comm&` runs unchanged on 1 process, N CPU
// processes or N GPUs.
//
// Rules every implementation follows:
//   - Collectives are called by every rank, in the same order, with the same n (and root). A rank that
//     skips one hangs the others; that is why errors end the whole job (run_main, Comm::abort).
//   - Buffers are reduced in place: the gradient slab is one contiguous f32 buffer and is reduced as one
//     call, never copied per parameter.
//   - Sharding (ZeRO-1): a slab of n elements is cut into W shards of stride c = ceil(n / W); shard r
//     covers [r*c, min(n, (r+1)*c)). The last shards may be shorter or empty (n = 7, W = 3: [0,3) [3,6)
//     [6,7); n = 1, W = 3: [0,1) [1,1) [1,1)). No padding is needed in the caller's buffer.
//   - Errors are minitrain::Error naming the collective and the backend's own message.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"

namespace minitrain {

/// The reductions all_reduce offers. mean = sum / world size (floating-point types only).
enum class ReduceOp { sum, mean, min, max };

/// A half-open element range [begin, end) of a sharded buffer.
struct Shard {
    std::size_t begin = 0;
    std::size_t end = 0;
    std::size_t size() const { return end - begin; }
};

/// The shard stride c = ceil(n / world): every shard but the last ones has c elements.
inline std::size_t shard_stride(std::size_t n, int world) {
    MT_CHECK(world >= 1, "shard_stride: world size ", world, ", expected >= 1");
    return (n + std::size_t(world) - 1) / std::size_t(world);
}

/// Rank r's shard of n elements split over `world` ranks: [r*c, min(n, (r+1)*c)), c = ceil(n / world).
inline Shard shard_of(std::size_t n, int world, int rank) {
    MT_CHECK(rank >= 0 && rank < world, "shard_of: rank ", rank, " outside [0, ", world, ")");
    const std::size_t c = shard_stride(n, world);
    return Shard{std::min(n, std::size_t(rank) * c), std::min(n, (std::size_t(rank) + 1) * c)};
}

/// An error raised with the same message on every rank at once (each rank found it, or learned it from
/// a collective), such as a configuration mismatch. run_main reports it once, from rank 0, and every
/// rank exits with status 1; no rank needs to abort the others.
class CollectiveError : public Error {
public:
    explicit CollectiveError(const std::string& what) : Error(what) {}
};

template <class T>
inline constexpr bool is_comm_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>;

/// A group of processes and its collectives. Hold it as `Comm&`; implementations: LocalComm (below),
/// MpiComm (dist/mpi.hpp), NcclComm (dist/nccl.hpp).
class Comm {
public:
    virtual ~Comm() = default;

    /// This process's rank in [0, world_size()).
    virtual int rank() const = 0;
    virtual int world_size() const = 0;
    /// This process's index among the ranks on the same node (picks the GPU), and their number.
    virtual int local_rank() const = 0;
    virtual int local_world_size() const = 0;
    /// "local", "mpi" or "nccl".
    virtual const char* backend() const = 0;
    bool is_root() const { return rank() == 0; }

    /// In-place reduction of data[0, n) over all ranks; every rank gets the result.
    /// T: float, double or std::int64_t (mean: floating point only).
    template <class T>
    void all_reduce(T* data, std::size_t n, ReduceOp op) {
        static_assert(is_comm_type_v<T>, "Comm::all_reduce: the element type must be float, double or std::int64_t");
        if constexpr (std::is_same_v<T, std::int64_t>)
            MT_CHECK(op != ReduceOp::mean, "Comm::all_reduce: mean of int64 values is not defined; reduce the sum");
        check_buffer("all_reduce", data, n);
        if (n) all_reduce_impl(data, n, op);
    }
    template <class T> void all_reduce_sum(T* data, std::size_t n) { all_reduce(data, n, ReduceOp::sum); }
    template <class T> void all_reduce_mean(T* data, std::size_t n) { all_reduce(data, n, ReduceOp::mean); }
    template <class T> void all_reduce_sum(std::vector<T>& v) { all_reduce(v.data(), v.size(), ReduceOp::sum); }
    template <class T> void all_reduce_mean(std::vector<T>& v) { all_reduce(v.data(), v.size(), ReduceOp::mean); }
    /// One value, summed over ranks (a token count, a loss sum).
    template <class T> T all_reduce_sum(T value) {
        all_reduce(&value, 1, ReduceOp::sum);
        return value;
    }
    /// One value, reduced with op over ranks (max of a flag: "did any rank run out of data?").
    template <class T> T all_reduce(T value, ReduceOp op) {
        all_reduce(&value, 1, op);
        return value;
    }

    /// This rank's shard of an n-element buffer (see the file comment).
    Shard shard(std::size_t n) const { return shard_of(n, world_size(), rank()); }

    /// ZeRO-1 gradient step, in place on data[0, n): afterwards data[shard(n)] holds the sum over all
    /// ranks of that range; the rest of data is unspecified (overwritten with partial sums).
    void reduce_scatter_sum(float* data, std::size_t n) {
        check_buffer("reduce_scatter_sum", data, n);
        if (n) reduce_scatter_impl(data, n);
    }
    /// ZeRO-1 parameter step, in place on data[0, n): on entry each rank's data[shard(n)] is valid; on
    /// return every rank holds all shards, i.e. the whole buffer.
    void all_gather(float* data, std::size_t n) {
        check_buffer("all_gather", data, n);
        if (n) all_gather_impl(data, n);
    }

    /// Copies `bytes` bytes at data from rank `root` to every rank.
    void broadcast(void* data, std::size_t bytes, int root = 0) {
        check_root("broadcast", root);
        check_buffer("broadcast", data, bytes);
        if (bytes) broadcast_impl(data, bytes, root);
    }
    /// Rank root's string on every rank (its length travels first: other ranks may hold any string).
    void broadcast(std::string& s, int root = 0) {
        check_root("broadcast", root);
        std::int64_t len = std::int64_t(s.size());
        broadcast(&len, sizeof len, root);
        s.resize(std::size_t(len));
        broadcast(s.data(), s.size(), root);
    }

    /// Returns when every rank has called it.
    virtual void barrier() = 0;

    /// Ends the whole job now: prints "rank R: message" to stderr and makes every process exit with
    /// exit_code (MPI_Abort for MPI). Never returns and never waits for the other ranks.
    [[noreturn]] virtual void abort(std::string_view message, int exit_code = 1) noexcept = 0;

protected:
    virtual void all_reduce_impl(float* data, std::size_t n, ReduceOp op) = 0;
    virtual void all_reduce_impl(double* data, std::size_t n, ReduceOp op) = 0;
    virtual void all_reduce_impl(std::int64_t* data, std::size_t n, ReduceOp op) = 0;
    virtual void reduce_scatter_impl(float* data, std::size_t n) = 0;
    virtual void all_gather_impl(float* data, std::size_t n) = 0;
    virtual void broadcast_impl(void* data, std::size_t bytes, int root) = 0;

    /// The line abort() prints: "rank R: message" (just "error: message" for a one-process job).
    std::string abort_line(std::string_view message) const {
        std::string line = world_size() > 1 ? "rank " + std::to_string(rank()) + ": " : std::string("error: ");
        line.append(message);
        line += '\n';
        return line;
    }

private:
    void check_buffer(const char* what, const void* data, std::size_t n) const {
        MT_CHECK(data || n == 0, "Comm::", what, ": null buffer of ", n, " elements");
    }
    void check_root(const char* what, int root) const {
        MT_CHECK(root >= 0 && root < world_size(), "Comm::", what, ": root ", root, " outside [0, ", world_size(), ")");
    }
};

/// One process, no MPI: every collective leaves the buffer as it is (the sum over one rank is the value).
class LocalComm final : public Comm {
public:
    int rank() const override { return 0; }
    int world_size() const override { return 1; }
    int local_rank() const override { return 0; }
    int local_world_size() const override { return 1; }
    const char* backend() const override { return "local"; }
    void barrier() override {}
    [[noreturn]] void abort(std::string_view message, int exit_code = 1) noexcept override {
        const std::string line = abort_line(message);
        std::fputs(line.c_str(), stderr);
        std::fflush(stderr);
        std::exit(exit_code);
    }

protected:
    void all_reduce_impl(float*, std::size_t, ReduceOp) override {}
    void all_reduce_impl(double*, std::size_t, ReduceOp) override {}
    void all_reduce_impl(std::int64_t*, std::size_t, ReduceOp) override {}
    void reduce_scatter_impl(float*, std::size_t) override {}
    void all_gather_impl(float*, std::size_t) override {}
    void broadcast_impl(void*, std::size_t, int) override {}
};

/// A process-wide LocalComm, for a default argument: `Trainer(cfg, Comm& comm = local_comm())`.
inline LocalComm& local_comm() {
    static LocalComm comm;
    return comm;
}

}  // namespace minitrain
