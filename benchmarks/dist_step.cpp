// bench_dist_step: data-parallel training of MiniMind2-Small on the CPU: one process with 2 threads
// against 2 processes with 1 thread each (MPI), with and without ZeRO-1, and PyTorch DDP (gloo) in the
// same two layouts, side by side in one run.
//
// Every configuration trains the same global batch (B = 4 sequences of T = 512, so 2 per rank with 2
// ranks) with AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1, lr 1e-4) and grad clip 1.0, for a few
// warm-up steps and then timed steps. minitrain runs the real Trainer::train_step (data loading from a
// synthetic llm.c shard, forward, backward, the gradient all-reduce, clipping, AdamW) on a Comm wrapped in
// TimedComm below, which times every collective the Trainer makes.
//
//   bench_dist_step [--rounds N] [--steps N] [--warmup N] [--configs a,b,...] [--no-torch]
//                   [--mpirun "mpirun --oversubscribe --allow-run-as-root"] [--mpi-args "--bind-to none"]
//       the driver: writes the shard, runs each configuration in its own processes (peak RSS is per
//       process), rounds alternating the configurations, and prints the table with the ratios.
//       Configurations: mt1x2 (minitrain 1 process x 2 threads), mt2x1 (2 processes x 1 thread),
//       mt2x1z1 (the same with --zero_stage 1), pt1x2 and pt2x1 (PyTorch DDP, gloo).
//   bench_dist_step --worker --data FILE --out_dir DIR [--threads N] [--zero_stage Z] ...
//       one configuration in this process (under mpirun: one rank of it); rank 0 prints a JSON line.
//
// What the collective time means: the Trainer reduces after the backward pass (no overlap on the CPU),
// so a rank that finishes its backward first waits in the all-reduce for the slower one. TimedComm puts
// a barrier before each large collective (>= 1 MiB: the gradient slab) and times it apart ("wait": the
// ranks' imbalance), so "reduce" is the transfer and the summation alone. The small collectives (the
// token count per micro-batch, the step's sums, the norm) are "small".
// B = batch (global), T = time (sequence), V = vocab, P = parameters, W = world size (processes).
#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

struct Options {
    bool worker = false;
    std::string data, out_dir;        // worker: the shard, the Trainer's out_dir (rank 0 writes metrics.jsonl)
    int B = 4, T = 512, V = 6400;     // B: the global batch
    int threads = 2, zero_stage = 0;  // worker
    int steps = 5, warmup = 2, rounds = 1;
    double clip = 1.0;
    bool split_wait = true;           // worker: a timed barrier before each large collective
    bool torch = true;
    std::vector<std::string> configs = {"mt1x2", "mt2x1", "mt2x1z1", "pt1x2", "pt2x1"};
    std::string mpirun = "mpirun --oversubscribe --allow-run-as-root";
    std::string mpi_args = "--bind-to none";
    std::string torch_script;         // default: pytorch_ddp_step.py beside this source file
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            MT_CHECK(i + 1 < argc, "bench_dist_step: ", a, " needs a value");
            return argv[++i];
        };
        if (a == "--worker") o.worker = true;
        else if (a == "--data") o.data = value();
        else if (a == "--out_dir") o.out_dir = value();
        else if (a == "--batch") o.B = std::stoi(value());
        else if (a == "--seq") o.T = std::stoi(value());
        else if (a == "--threads") o.threads = std::stoi(value());
        else if (a == "--zero_stage") o.zero_stage = std::stoi(value());
        else if (a == "--steps") o.steps = std::stoi(value());
        else if (a == "--warmup") o.warmup = std::stoi(value());
        else if (a == "--rounds") o.rounds = std::stoi(value());
        else if (a == "--clip") o.clip = std::stod(value());
        else if (a == "--no-split-wait") o.split_wait = false;
        else if (a == "--no-torch") o.torch = false;
        else if (a == "--configs") {
            o.configs.clear();
            std::stringstream ss(value());
            for (std::string c; std::getline(ss, c, ',');) o.configs.push_back(c);
        } else if (a == "--mpirun") o.mpirun = value();
        else if (a == "--mpi-args") o.mpi_args = value();
        else if (a == "--torch-script") o.torch_script = value();
        else if (a == "-h" || a == "--help") {
            std::printf(
                "usage: bench_dist_step [--rounds N] [--steps N] [--warmup N] [--batch B] [--seq T] [--configs a,b]\n"
                "                       [--no-torch] [--mpirun CMD] [--mpi-args ARGS] [--torch-script PATH]\n"
                "       bench_dist_step --worker --data FILE --out_dir DIR [--threads N] [--zero_stage 0|1]\n"
                "                       [--batch B] [--seq T] [--steps N] [--warmup N] [--no-split-wait]\n"
                "configurations: mt1x2 mt2x1 mt2x1z1 (minitrain), pt1x2 pt2x1 (PyTorch DDP, gloo)\n"
                "--batch is the global batch (default 4), split over the processes.\n");
            std::exit(0);
        } else {
            MT_CHECK(false, "bench_dist_step: unknown argument ", a, " (try --help)");
        }
    }
    MT_CHECK(o.B >= 1 && o.T >= 1 && o.threads >= 1 && o.steps >= 1 && o.warmup >= 0 && o.rounds >= 1,
             "bench_dist_step: batch, seq, threads, steps and rounds must be >= 1, warmup >= 0");
    for (const std::string& c : o.configs)
        MT_CHECK(c == "mt1x2" || c == "mt2x1" || c == "mt2x1z1" || c == "pt1x2" || c == "pt2x1",
                 "bench_dist_step: unknown configuration ", c, " (mt1x2, mt2x1, mt2x1z1, pt1x2, pt2x1)");
    return o;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double loadavg1() {
    std::ifstream f("/proc/loadavg");
    double l = -1;
    f >> l;
    return l;
}
double peak_rss_mib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_maxrss) / 1024;  // Linux: KiB
}
double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
double round_to(double x, double unit) { return std::round(x / unit) * unit; }
/// "[1.2, 3.4]": a JSON array of numbers with one decimal.
std::string list1(const nlohmann::json& a) {
    std::string s = "[";
    char buf[32];
    for (const auto& v : a) {
        std::snprintf(buf, sizeof buf, "%s%.1f", s.size() > 1 ? ", " : "", v.get<double>());
        s += buf;
    }
    return s + "]";
}

// ---- TimedComm: a Comm that times the collectives of another ------------------------------------

/// Forwards every collective to `inner` and adds its wall time to `stats`. Large collectives (the
/// gradient slab) are preceded by a barrier timed on its own when split_wait: the time one rank waits
/// for the others to finish their backward is then "wait", not "reduce".
class TimedComm final : public Comm {
public:
    struct Stats {
        double wait_s = 0;    // barriers before the large collectives: imbalance between ranks
        double reduce_s = 0;  // the large collectives themselves (all-reduce + reduce-scatter + all-gather)
        double reduce_scatter_s = 0, all_gather_s = 0;  // the ZeRO-1 parts of reduce_s
        double small_s = 0;   // every other collective (counts, sums, the norm, broadcasts)
        std::int64_t large_bytes = 0, calls = 0;
    };
    static constexpr std::size_t large = std::size_t(1) << 20;  // bytes

    TimedComm(Comm& inner, bool split_wait) : inner_(inner), split_wait_(split_wait) {}

    int rank() const override { return inner_.rank(); }
    int world_size() const override { return inner_.world_size(); }
    int local_rank() const override { return inner_.local_rank(); }
    int local_world_size() const override { return inner_.local_world_size(); }
    const char* backend() const override { return inner_.backend(); }
    void barrier() override { timed(0, [&] { inner_.barrier(); }); }
    [[noreturn]] void abort(std::string_view message, int exit_code = 1) noexcept override {
        inner_.abort(message, exit_code);
        std::abort();  // not reached: g++ does not take a virtual call's [[noreturn]] as proof
    }

    Stats stats;

protected:
    void all_reduce_impl(float* d, std::size_t n, ReduceOp op) override {
        timed(n * sizeof *d, [&] { inner_.all_reduce(d, n, op); });
    }
    void all_reduce_impl(double* d, std::size_t n, ReduceOp op) override {
        timed(n * sizeof *d, [&] { inner_.all_reduce(d, n, op); });
    }
    void all_reduce_impl(std::int64_t* d, std::size_t n, ReduceOp op) override {
        timed(n * sizeof *d, [&] { inner_.all_reduce(d, n, op); });
    }
    void reduce_scatter_impl(float* d, std::size_t n) override {
        stats.reduce_scatter_s += timed(n * sizeof *d, [&] { inner_.reduce_scatter_sum(d, n); });
    }
    void all_gather_impl(float* d, std::size_t n) override {
        stats.all_gather_s += timed(n * sizeof *d, [&] { inner_.all_gather(d, n); });
    }
    void broadcast_impl(void* d, std::size_t bytes, int root) override {
        timed(bytes, [&] { inner_.broadcast(d, bytes, root); });
    }

private:
    /// Runs f, adds its time to the stats and returns it (the barrier before it excluded).
    template <class F>
    double timed(std::size_t bytes, F&& f) {
        const bool big = bytes >= large;
        if (big && split_wait_) {
            const double t0 = now_s();
            inner_.barrier();
            stats.wait_s += now_s() - t0;
        }
        const double t0 = now_s();
        f();
        const double dt = now_s() - t0;
        (big ? stats.reduce_s : stats.small_s) += dt;
        if (big) stats.large_bytes += std::int64_t(bytes);
        ++stats.calls;
        return dt;
    }

    Comm& inner_;
    bool split_wait_;
};

// ---- the synthetic shard ------------------------------------------------------------------------

/// Runs of consecutive ids with a random jump one time in ten (tests/trainer.cpp's write_corpus): the
/// loss falls, which shows the steps train, and the content does not change the time of a step.
void write_corpus(const fs::path& path, std::size_t tokens, int vocab, std::uint64_t seed) {
    Rng rng{seed};
    std::vector<std::uint32_t> t(tokens);
    std::uint32_t x = 0;
    for (auto& v : t) {
        x = rng.below(10) == 0 ? std::uint32_t(rng.below(std::uint64_t(vocab))) : (x + 1) % std::uint32_t(vocab);
        v = x;
    }
    write_token_shard(path, t, vocab);
}

// ---- one configuration, in this process (one rank of it) ----------------------------------------

int run_worker(const Options& o) {
    return run_main([&](Comm& comm) -> int {
        const int W = comm.world_size();
        MT_CHECK(o.B % W == 0, "bench_dist_step: the global batch ", o.B, " does not split over ", W, " processes");
        MT_CHECK(!o.data.empty() && !o.out_dir.empty(), "bench_dist_step --worker needs --data and --out_dir");
        const double load = loadavg1();
        TimedComm timed(comm, o.split_wait && W > 1);

        TrainConfig cfg;
        cfg.train_data = o.data;
        cfg.vocab_size = o.V;
        cfg.batch_size = o.B / W;  // per process
        cfg.max_seq_len = o.T;
        cfg.shuffle = false;
        cfg.max_steps = o.warmup + o.steps;
        cfg.learning_rate = 1e-4;  // as benchmarks/pytorch_ddp_step.py
        cfg.beta1 = 0.9, cfg.beta2 = 0.95, cfg.eps = 1e-8, cfg.weight_decay = 0.1;
        cfg.grad_clip = o.clip;
        cfg.log_interval = 0, cfg.save_interval = 0, cfg.eval_interval = 0, cfg.max_bad_steps = 0;
        cfg.out_dir = o.out_dir;
        cfg.threads = o.threads;
        cfg.zero_stage = o.zero_stage;
        cfg.quiet = true;
        Trainer<MiniMind2Small, Optimizer<AdamW>, Schedule<Constant>, Pretrain> trainer(cfg, timed);

        std::vector<double> step_s, wait_s, reduce_s, small_s, rs_s, ag_s;
        double first_loss = 0, last_loss = 0;
        std::int64_t large_bytes = 0;
        for (int step = 0; step < o.warmup + o.steps; ++step) {
            timed.stats = {};
            const double t0 = now_s();
            const double loss = trainer.train_step();
            const double dt = now_s() - t0;
            if (step == 0) first_loss = loss;
            last_loss = loss;
            if (step < o.warmup) continue;
            step_s.push_back(dt);
            wait_s.push_back(timed.stats.wait_s);
            reduce_s.push_back(timed.stats.reduce_s);
            small_s.push_back(timed.stats.small_s);
            rs_s.push_back(timed.stats.reduce_scatter_s);
            ag_s.push_back(timed.stats.all_gather_s);
            large_bytes = timed.stats.large_bytes;
        }

        // Each rank's medians into its slot, summed over ranks (on the untimed communicator).
        constexpr int K = 8;
        std::vector<double> slots(std::size_t(W) * K, 0.0);
        double* mine = slots.data() + std::size_t(comm.rank()) * K;
        mine[0] = median(step_s), mine[1] = median(wait_s), mine[2] = median(reduce_s), mine[3] = median(small_s);
        mine[4] = peak_rss_mib(), mine[5] = double(large_bytes), mine[6] = median(rs_s), mine[7] = median(ag_s);
        comm.all_reduce_sum(slots);
        if (!comm.is_root()) return 0;

        const double P = double(trainer.model().params().count());
        const double step = slots[0], coll = slots[1] + slots[2] + slots[3];
        const char* wp = std::getenv("OMP_WAIT_POLICY");
        std::printf("minitrain %d process%s x %d thread%s%s: B=%d (%d per process) T=%d P=%.1fM: %.1f tokens/s, step %.1f ms, "
                    "collectives %.1f ms/step (%.1f%%: wait %.1f, reduce %.1f, small %.1f), %.1f MB reduced/step, "
                    "peak RSS rank 0 %.1f MiB, loss %.3f -> %.3f, load %.2f\n",
                    W, W == 1 ? "" : "es", o.threads, o.threads == 1 ? "" : "s", o.zero_stage ? ", ZeRO-1" : "", o.B,
                    o.B / W, o.T, P / 1e6, o.B * o.T / step, step * 1e3, coll * 1e3, 100 * coll / step, slots[1] * 1e3,
                    slots[2] * 1e3, slots[3] * 1e3, slots[5] / 1e6, slots[4], first_loss, last_loss, load);
        nlohmann::json j;
        j["impl"] = "minitrain";
        j["procs"] = W, j["threads"] = o.threads, j["zero_stage"] = o.zero_stage, j["backend"] = comm.backend();
        j["B"] = o.B, j["T"] = o.T, j["V"] = o.V, j["params"] = std::int64_t(P);
        j["steps"] = o.steps, j["warmup"] = o.warmup, j["clip"] = o.clip;
        j["tokens_per_s"] = round_to(o.B * o.T / step, 0.1);
        j["step_ms"] = round_to(step * 1e3, 0.01);
        j["comm_ms"] = round_to(coll * 1e3, 0.01);
        j["wait_ms"] = round_to(slots[1] * 1e3, 0.01);
        j["reduce_ms"] = round_to(slots[2] * 1e3, 0.01);
        j["small_ms"] = round_to(slots[3] * 1e3, 0.01);
        j["reduce_scatter_ms"] = round_to(slots[6] * 1e3, 0.01);
        j["all_gather_ms"] = round_to(slots[7] * 1e3, 0.01);
        j["comm_share"] = round_to(coll / step, 0.0001);
        j["reduced_bytes_per_step"] = std::int64_t(slots[5]);
        std::vector<double> rss, per_rank_step;
        for (int r = 0; r < W; ++r) {
            rss.push_back(round_to(slots[std::size_t(r) * K + 4], 0.1));
            per_rank_step.push_back(round_to(slots[std::size_t(r) * K] * 1e3, 0.1));
        }
        j["peak_rss_mib"] = rss;
        j["step_ms_per_rank"] = per_rank_step;
        std::vector<double> ms;
        for (double t : step_s) ms.push_back(round_to(t * 1e3, 0.1));
        j["steps_ms_rank0"] = ms;
        j["loss_first_last"] = {round_to(first_loss, 1e-4), round_to(last_loss, 1e-4)};
        j["omp_wait_policy"] = wp ? wp : "default";
        j["loadavg"] = load;
        std::printf("%s\n", j.dump().c_str());
        return 0;
    });
}

// ---- the driver ---------------------------------------------------------------------------------

/// Runs a command, echoes its human lines, returns its last JSON line (null on failure).
nlohmann::json run_json(const std::string& cmd) {
    std::fprintf(stderr, "$ %s\n", cmd.c_str());
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return nullptr;
    std::string out;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    const int rc = pclose(f);
    nlohmann::json last = nullptr;
    std::stringstream ss(out);
    for (std::string line; std::getline(ss, line);) {
        if (line.empty()) continue;
        if (line[0] != '{') {
            std::printf("    %s\n", line.c_str());
            continue;
        }
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded()) last = j;
    }
    if (rc != 0 || last.is_null()) {
        std::fprintf(stderr, "command failed (status %d):\n%s\n", rc, out.c_str());
        return nullptr;
    }
    return last;
}

std::string self_exe() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    MT_CHECK(n > 0, "bench_dist_step: cannot read /proc/self/exe");
    return std::string(buf, std::size_t(n));
}

std::string beside_this_file(const char* name) {
    std::string here = __FILE__;  // .../benchmarks/dist_step.cpp (absolute in CMake builds)
    const auto slash = here.find_last_of('/');
    return (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/" + name;
}

struct Config {
    std::string name;
    bool torch;
    int procs, threads, zero;
};
Config describe(const std::string& c) {
    if (c == "mt1x2") return {c, false, 1, 2, 0};
    if (c == "mt2x1") return {c, false, 2, 1, 0};
    if (c == "mt2x1z1") return {c, false, 2, 1, 1};
    if (c == "pt1x2") return {c, true, 1, 2, 0};
    return {c, true, 2, 1, 0};
}

int run_driver(const Options& o) {
    // Spinning OpenMP threads of one process steal the core the other process (or the other
    // engineers' jobs) needs: both implementations wait passively.
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    const double load = loadavg1();
    const std::string script = o.torch_script.empty() ? beside_this_file("pytorch_ddp_step.py") : o.torch_script;
    const bool torch = o.torch && std::system("/usr/bin/python3 -c 'import torch.distributed' >/dev/null 2>&1") == 0 &&
                       std::ifstream(script).good();
    if (o.torch && !torch)
        std::fprintf(stderr, "PyTorch (/usr/bin/python3 + torch) or %s not found: minitrain only\n", script.c_str());
#if defined(MINITRAIN_HAS_MPI)
    const bool mpi = std::system((o.mpirun + " --version >/dev/null 2>&1").c_str()) == 0;
    if (!mpi) std::fprintf(stderr, "'%s --version' failed: the 2-process minitrain configurations are skipped\n",
                           o.mpirun.c_str());
#else
    const bool mpi = false;
    std::fprintf(stderr, "bench_dist_step was built without MPI (minitrain::mpi): it needs MPI for more than one "
                         "process, so the 2-process minitrain configurations are skipped; install libopenmpi-dev "
                         "(cmake/setup.sh) and reconfigure\n");
#endif

    // The shard: enough tokens for every step of one run, 2x over.
    const fs::path dir = fs::temp_directory_path() / ("bench_dist_step." + std::to_string(getpid()));
    fs::create_directories(dir);
    const fs::path shard = dir / "train_000000.bin";
    write_corpus(shard, std::size_t(2 * (o.warmup + o.steps + 1)) * std::size_t(o.B) * std::size_t(o.T + 1), o.V, 1);

    std::printf("bench_dist_step: MiniMind2-Small, B=%d global x T=%d, V=%d, AdamW, clip %.1f, %d timed steps after %d "
                "warm-up, %d round(s), OMP_WAIT_POLICY=PASSIVE, load %.2f at start, %u logical cpus\n",
                o.B, o.T, o.V, o.clip, o.steps, o.warmup, o.rounds, load, std::thread::hardware_concurrency());

    struct Row {
        Config c;
        std::vector<nlohmann::json> runs;
        double med(const char* key) const {
            std::vector<double> v;
            for (auto& j : runs) v.push_back(j[key].get<double>());
            return median(v);
        }
        double rss_max() const {
            double m = 0;
            for (auto& j : runs)
                for (auto& r : j["peak_rss_mib"]) m = std::max(m, r.get<double>());
            return m;
        }
    };
    std::vector<Row> rows;
    for (const std::string& c : o.configs) {
        Config d = describe(c);
        if (d.torch && !torch) continue;
        if (!d.torch && d.procs > 1 && !mpi) continue;
        rows.push_back({d, {}});
    }
    const std::string common = " --batch " + std::to_string(o.B) + " --seq " + std::to_string(o.T) + " --steps " +
                               std::to_string(o.steps) + " --warmup " + std::to_string(o.warmup) + " --clip " +
                               std::to_string(o.clip);
    for (int r = 0; r < o.rounds; ++r)
        for (std::size_t i = 0; i < rows.size(); ++i) {
            Row& row = rows[i];
            const Config& c = row.c;
            const std::string threads = std::to_string(c.threads);
            std::string cmd;
            if (c.torch) {
                // OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE would hold OpenBLAS to its AVX2 kernels here.
                cmd = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=" + threads + " /usr/bin/python3 " +
                      script + " --nproc " + std::to_string(c.procs) + " --threads " + threads + common;
            } else {
                const std::string out = (dir / ("run_" + c.name + "_" + std::to_string(r))).string();
                const std::string worker = self_exe() + " --worker --data " + shard.string() + " --out_dir " + out +
                                           " --threads " + threads + " --zero_stage " + std::to_string(c.zero) + common;
                cmd = c.procs == 1 ? "OMP_NUM_THREADS=" + threads + " " + worker
                                   : o.mpirun + " -np " + std::to_string(c.procs) + " " + o.mpi_args +
                                         " -x OMP_NUM_THREADS=" + threads + " -x OMP_WAIT_POLICY " + worker;
            }
            nlohmann::json j = run_json(cmd + " 2>&1");
            if (j.is_null()) return 1;
            std::printf("  %-8s round %d  %8.1f tokens/s  step %8.1f ms  collectives %7.1f ms (%4.1f%%)  peak RSS/rank %s "
                        "MiB  load %.2f\n",
                        c.name.c_str(), r + 1, j["tokens_per_s"].get<double>(), j["step_ms"].get<double>(),
                        j["comm_ms"].get<double>(), 100 * j["comm_share"].get<double>(), list1(j["peak_rss_mib"]).c_str(),
                        j["loadavg"].get<double>());
            row.runs.push_back(j);
        }

    auto find = [&](const char* name) -> const Row* {
        for (const Row& r : rows)
            if (r.c.name == name) return &r;
        return nullptr;
    };
    std::printf("\n%-8s %-9s %-22s %10s %10s %12s %7s %9s %10s %10s\n", "config", "impl", "layout", "tokens/s", "step ms",
                "collect. ms", "share", "MiB/rank", "vs torch", "vs 1x2");
    for (const Row& row : rows) {
        const Config& c = row.c;
        std::string layout = std::to_string(c.procs) + " proc x " + std::to_string(c.threads) + " thr";
        if (c.zero) layout += ", ZeRO-1";
        const Row* torch_row = find(c.torch ? "" : c.procs == 1 ? "pt1x2" : "pt2x1");
        const Row* one = find(c.torch ? "pt1x2" : "mt1x2");
        // Ratios of medians over rounds, and per round where both ran in the same round.
        auto ratio = [&](const Row* other) -> std::string {
            if (!other || other == &row) return "-";
            std::vector<double> v;
            for (std::size_t k = 0; k < std::min(row.runs.size(), other->runs.size()); ++k)
                v.push_back(row.runs[k]["tokens_per_s"].get<double>() / other->runs[k]["tokens_per_s"].get<double>());
            char s[32];
            std::snprintf(s, sizeof s, "%.2fx", median(v));
            return s;
        };
        std::printf("%-8s %-9s %-22s %10.1f %10.1f %12.1f %6.1f%% %9.1f %10s %10s\n", c.name.c_str(),
                    c.torch ? "pytorch" : "minitrain", layout.c_str(), row.med("tokens_per_s"), row.med("step_ms"),
                    row.med("comm_ms"), 100 * row.med("comm_share"), row.rss_max(), ratio(torch_row).c_str(),
                    ratio(one).c_str());
    }
    for (const Row& row : rows) {
        const nlohmann::json& j = row.runs.back();
        if (row.c.torch)
            std::printf("%s (last round): all-reduce in flight %.1f ms/step, exposed after backward %.1f ms/step, %d "
                        "buckets, %.1f MB reduced/step\n",
                        row.c.name.c_str(), j["comm_ms"].get<double>(), j["exposed_ms"].get<double>(),
                        j["buckets"].get<int>(), j["reduced_bytes_per_step"].get<double>() / 1e6);
        else if (row.c.procs > 1)
            std::printf("%s (last round): wait %.1f + reduce %.1f (reduce-scatter %.1f, all-gather %.1f) + small %.1f "
                        "ms/step, %.1f MB in large collectives/step, step ms per rank %s\n",
                        row.c.name.c_str(), j["wait_ms"].get<double>(), j["reduce_ms"].get<double>(),
                        j["reduce_scatter_ms"].get<double>(), j["all_gather_ms"].get<double>(), j["small_ms"].get<double>(),
                        j["reduced_bytes_per_step"].get<double>() / 1e6, list1(j["step_ms_per_rank"]).c_str());
    }
    std::printf("tokens/s are global (B x T / median step); ratios: median over rounds of the per-round ratio; "
                "collect. = time in collectives per step (minitrain: wait + reduce + small; PyTorch: the union of the "
                "intervals with an all-reduce in flight, overlapped with backward); MiB/rank: the largest peak RSS of "
                "any rank\nload %.2f at end\n",
                loadavg1());
    std::error_code ec;
    fs::remove_all(dir, ec);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear as they come, even through a pipe
    try {
        Options o = parse(argc, argv);
        return o.worker ? run_worker(o) : run_driver(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_dist_step: %s\n", e.what());
        return 1;
    }
}
