// MpiComm under mpirun: every rank runs this program (tests/dist/mpirun_test.cmake starts it with
// `mpirun -np 2` and `-np 3`). argv[1] picks the mode:
//   collectives      sum / mean / min / max all-reduce on f32, f64, i64 at sizes 1, 7, 1000003, and the
//                    same bits on every rank where f32 sums round;
//                    reduce-scatter + all-gather round trips on sizes the world size does not divide;
//                    string and byte broadcasts from rank 0 and from the last rank; barrier; local rank.
//                    Expected values are computed here from the formula each rank used, exactly.
//   config_match     check_same_config with equal configurations passes.
//   config_mismatch  rank 1 has --batch_size 8 (and rank 2 another lr): the job must fail everywhere with
//                    "rank 1: --batch_size is 8, rank 0 has 4".
//   throw            rank 1 throws while the others wait in an all-reduce: the job must end with rank 1's
//                    message.
//   kill             rank 1 dies by SIGKILL while the others wait in an all-reduce: mpirun must end the job.
//   user_init        the program calls MPI_Init and MPI_Finalize itself, around two MpiComms.
//   bench            (not a test) all-reduce and reduce-scatter + all-gather times of a 25.8M-float slab.
// Prints "PASS <mode>" from rank 0 when a passing mode passes; "FAIL ..." lines otherwise.
#include <minitrain/dist/dist.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using namespace minitrain;

namespace {

int failures = 0;

template <class... Parts>
void expect(bool ok, const Comm& comm, const Parts&... parts) {
    if (ok) return;
    ++failures;
    if (failures > 20) return;  // enough to diagnose
    std::ostringstream os;
    (os << ... << parts);
    std::fprintf(stderr, "FAIL rank %d: %s\n", comm.rank(), os.str().c_str());
}

// The value rank r puts at element i: integers and quarters, so that sums over ranks are exact in f32.
float f32_value(int r, std::size_t i) { return float(std::int64_t((i * 7919 + std::size_t(r) * 104729) % 2001) - 1000) * 0.25f; }
double f64_value(int r, std::size_t i) { return double(i % 977) * 0.5 + double(r) * 1048576.0 + 1.0 / 1024.0; }
std::int64_t i64_value(int r, std::size_t i) { return (std::int64_t(r) + 1) * (std::int64_t(1) << 40) - std::int64_t(i); }

template <class T, class F>
void check_all_reduce(Comm& comm, const char* type, std::size_t n, F value) {
    const int W = comm.world_size(), me = comm.rank();
    std::vector<T> sum(n), mean(n), mn(n), mx(n);
    for (std::size_t i = 0; i < n; ++i) sum[i] = mean[i] = mn[i] = mx[i] = value(me, i);
    comm.all_reduce_sum(sum.data(), n);
    if constexpr (!std::is_same_v<T, std::int64_t>) comm.all_reduce_mean(mean);
    comm.all_reduce(mn.data(), n, ReduceOp::min);
    comm.all_reduce(mx.data(), n, ReduceOp::max);
    std::size_t bad = 0, first = n;
    for (std::size_t i = 0; i < n; ++i) {
        T s = 0, lo = value(0, i), hi = value(0, i);
        for (int r = 0; r < W; ++r) {
            s += value(r, i);
            lo = std::min(lo, value(r, i));
            hi = std::max(hi, value(r, i));
        }
        bool ok = sum[i] == s && mn[i] == lo && mx[i] == hi;
        if constexpr (!std::is_same_v<T, std::int64_t>) ok = ok && mean[i] == s / T(W);
        if (!ok && bad++ == 0) first = i;
    }
    expect(bad == 0, comm, "all_reduce ", type, " n=", n, ": ", bad, " wrong elements, first at ", first);
}

// ZeRO-1: reduce-scatter the "gradients", each rank updates its own shard, all-gather the "parameters".
void check_shards(Comm& comm, std::size_t n) {
    const int W = comm.world_size(), me = comm.rank();
    std::vector<float> g(n);
    for (std::size_t i = 0; i < n; ++i) g[i] = f32_value(me, i);
    comm.reduce_scatter_sum(g.data(), n);
    const Shard s = comm.shard(n);
    expect(s.begin == std::min(n, std::size_t(me) * ((n + std::size_t(W) - 1) / std::size_t(W))), comm, "shard begin");
    std::size_t bad = 0;
    for (std::size_t i = s.begin; i < s.end; ++i) {
        float want = 0;
        for (int r = 0; r < W; ++r) want += f32_value(r, i);
        bad += g[i] != want;
        g[i] = want * 0.5f + float(me);  // the "update": depends on the owner, so the gather is visible
    }
    expect(bad == 0, comm, "reduce_scatter_sum n=", n, ": ", bad, " wrong elements in shard [", s.begin, ", ", s.end, ")");
    comm.all_gather(g.data(), n);
    bad = 0;
    for (int r = 0; r < W; ++r) {
        const Shard o = shard_of(n, W, r);
        for (std::size_t i = o.begin; i < o.end; ++i) {
            float want = 0;
            for (int q = 0; q < W; ++q) want += f32_value(q, i);
            bad += g[i] != want * 0.5f + float(r);
        }
    }
    expect(bad == 0, comm, "all_gather n=", n, ": ", bad, " wrong elements");
}

void collectives(Comm& comm) {
    const int W = comm.world_size(), me = comm.rank();
    const LaunchInfo info = launch_info();
    expect(info.world_size == W && info.rank == me, comm, "launch_info says rank ", info.rank, " of ", info.world_size,
           ", MPI says ", me, " of ", W);
    expect(comm.local_rank() >= 0 && comm.local_rank() < comm.local_world_size(), comm, "local rank ", comm.local_rank(),
           " of ", comm.local_world_size());
    if (info.local_world_size > 0)
        expect(comm.local_rank() == info.local_rank, comm, "local rank ", comm.local_rank(), ", launcher says ",
               info.local_rank);

    for (std::size_t n : {std::size_t(1), std::size_t(7), std::size_t(1000003)}) {
        check_all_reduce<float>(comm, "f32", n, f32_value);
        check_all_reduce<double>(comm, "f64", n, f64_value);
        check_all_reduce<std::int64_t>(comm, "i64", n, i64_value);
    }
    // Replicas stay identical only if every rank receives the same bits, also where the sum rounds.
    for (std::size_t n : {std::size_t(7), std::size_t(1000003)}) {
        std::vector<float> g(n);
        std::uint64_t x = 0x9e3779b97f4a7c15ull * std::uint64_t(me + 1);
        for (float& v : g) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v = float(double(x >> 11) / 9007199254740992.0 - 0.5) * 1e-3f;
        }
        comm.all_reduce_sum(g.data(), n);
        std::uint64_t hash = 0;
        for (float v : g) {
            std::uint32_t u;
            std::memcpy(&u, &v, 4);
            hash = hash * 31 + u;
        }
        const std::int64_t bits = std::int64_t(hash >> 1);
        expect(comm.all_reduce(bits, ReduceOp::min) == comm.all_reduce(bits, ReduceOp::max), comm,
               "all_reduce_sum n=", n, " of rounding values: the ranks received different bits");
    }
    expect(comm.all_reduce_sum(double(me + 1)) == W * (W + 1) / 2.0, comm, "all_reduce_sum of one double");
    expect(comm.all_reduce(std::int64_t(me), ReduceOp::max) == W - 1, comm, "all_reduce max of one int64");

    for (std::size_t n : {std::size_t(1), std::size_t(2), std::size_t(5), std::size_t(7), std::size_t(6), std::size_t(12),
                          std::size_t(1000003), std::size_t(W) * 1000})
        check_shards(comm, n);

    // Strings of other lengths on the receivers: the length travels first.
    std::string s = me == 0 ? "config 3f2a9c, rank 0's" : std::string(std::size_t(me) * 100, 'x');
    comm.broadcast(s);
    expect(s == "config 3f2a9c, rank 0's", comm, "broadcast from rank 0: got '", s, "'");
    std::string last = me == W - 1 ? "from the last rank" : "";
    comm.broadcast(last, W - 1);
    expect(last == "from the last rank", comm, "broadcast from rank ", W - 1, ": got '", last, "'");
    std::string empty = me == 0 ? "" : "stale";
    comm.broadcast(empty);
    expect(empty.empty(), comm, "broadcast of an empty string: got '", empty, "'");
    unsigned char id[128];
    for (int i = 0; i < 128; ++i) id[i] = (unsigned char)(me == 0 ? i * 3 : 0);
    comm.broadcast(id, sizeof id);
    bool id_ok = true;
    for (int i = 0; i < 128; ++i) id_ok = id_ok && id[i] == (unsigned char)(i * 3);
    expect(id_ok, comm, "broadcast of 128 bytes (an NCCL unique id)");
    comm.barrier();
}

// Not a test: seconds per collective on a MiniMind2-Small gradient slab (25.8M f32), median of 5.
void bench(Comm& comm) {
    const std::size_t n = 25'830'000;
    std::vector<float> g(n, 1.0f);
    auto time = [&](auto&& op) {
        std::vector<double> t;
        for (int i = 0; i < 6; ++i) {
            comm.barrier();
            const auto a = std::chrono::steady_clock::now();
            op();
            t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
        }
        std::sort(t.begin() + 1, t.end());  // the first run warms up
        return t[3];
    };
    const double ar = time([&] { comm.all_reduce_sum(g.data(), n); });
    const double rs = time([&] { comm.reduce_scatter_sum(g.data(), n); });
    const double ag = time([&] { comm.all_gather(g.data(), n); });
    if (comm.is_root())
        std::printf("%d ranks, %zu floats (%.1f MB): all_reduce %.1f ms (%.2f GB/s of slab), reduce_scatter %.1f ms, "
                    "all_gather %.1f ms\n",
                    comm.world_size(), n, n * 4e-6, ar * 1e3, n * 4e-9 / ar, rs * 1e3, ag * 1e3);
}

nlohmann::json config_of(int rank, bool differ) {
    nlohmann::json c = {{"batch_size", 4}, {"learning_rate", 5e-4}, {"model", {{"dim", 64}, {"layers", 2}}},
                        {"train_data", "data/train_*.bin"}};
    if (differ && rank == 1) c["batch_size"] = 8;
    if (differ && rank == 2) c["learning_rate"] = 1e-3;  // a higher rank differs too: the lowest one is named
    return c;
}

}  // namespace

// The program started MPI itself: MpiComm must neither initialize nor finalize it, and two MpiComms
// (each on its own duplicate of MPI_COMM_WORLD) must not disturb each other.
int user_init(int argc, char** argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    {
        MpiComm a, b;
        expect(!detail::MpiRuntime::get().owned(), a, "MpiComm took ownership of an MPI the program started");
        double x = a.rank() + 1.0;
        a.all_reduce_sum(&x, 1);
        std::string s = b.is_root() ? "from b" : "";
        b.broadcast(s);
        expect(x == a.world_size() * (a.world_size() + 1) / 2.0 && s == "from b", a, "two communicators");
        const std::int64_t total = b.all_reduce_sum(std::int64_t(failures));
        if (a.is_root()) std::printf("%s user_init (%d ranks)\n", total == 0 ? "PASS" : "FAIL", a.world_size());
        if (total) failures = 1;
    }
    int finalized = 0;
    MPI_Finalize();
    MPI_Finalized(&finalized);
    return failures == 0 && finalized ? 0 : 1;
}

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "user_init") return user_init(argc, argv);
    const auto t0 = std::chrono::steady_clock::now();
    return run_main([&](Comm& comm) -> int {
        MT_CHECK(comm.world_size() > 1, "run this under mpirun with 2 or more processes (world size is ",
                 comm.world_size(), ")");
        if (mode == "collectives") {
            collectives(comm);
        } else if (mode == "config_match") {
            check_same_config(comm, config_of(comm.rank(), false), "--");
        } else if (mode == "config_mismatch") {
            check_same_config(comm, config_of(comm.rank(), true), "--");
            ++failures;
            std::fprintf(stderr, "FAIL rank %d: check_same_config accepted differing configurations\n", comm.rank());
        } else if (mode == "throw") {
            if (comm.rank() == 1) throw Error("bad shard data/train_001.bin");
            double x = 1;
            comm.all_reduce_sum(&x, 1);  // never completes: rank 1 is gone
            ++failures;
        } else if (mode == "kill") {
            comm.barrier();
            if (comm.rank() == 1) std::raise(SIGKILL);
            std::vector<float> g(1000);
            for (int step = 0; step < 1000000; ++step) comm.all_reduce_sum(g.data(), g.size());
            ++failures;
        } else if (mode == "bench") {
            bench(comm);
        } else {
            detail::fail("unknown mode '", mode, "': collectives, config_match, config_mismatch, throw, kill, user_init or bench");
        }
        const std::int64_t total = comm.all_reduce_sum(std::int64_t(failures));
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (comm.is_root())
            std::printf("%s %s (%d ranks, %.0f ms)\n", total == 0 ? "PASS" : "FAIL", mode.c_str(), comm.world_size(), ms);
        return total == 0 ? 0 : 1;
    });
}
