// bench_train_step: tokens per second and peak memory of a full training step, against PyTorch.
//
// A step is what Trainer::train_step does without data loading: zero_grad, forward (embedding ... loss),
// backward, clip_grad_norm(1.0), AdamW step. The batch is one fixed random (B, T+1) draw, as in
// benchmarks/pytorch_train_step.py, so both sides time exactly the same work.
//
//   bench_train_step --preset tiny [--batch B --seq T --vocab V] [--threads 2] [--steps 10] [--warmup 3]
//       one preset in this process: a human line and a JSON line {"impl": "minitrain", ...}
//   bench_train_step [--all | --presets tiny,minimind2-small] [--rounds 1] [--wait-policy auto] [--no-torch]
//       the driver: runs each preset in its own process (peak RSS is per process and only grows), then
//       PyTorch's step with the same preset, batch, threads and OMP_WAIT_POLICY right after it, and
//       prints both with the ratios against the targets (>= 1.5x PyTorch tokens/s on tiny, >= 1.3x on
//       MiniMind2-Small, <= 0.6x PyTorch's peak RSS).
//
// Presets: tiny = Model<4, 128, 4, false, Knobs<2>>, V 512, 8 x 128; minimind2-small = MiniMind2Small,
// V 6400, 4 x 512; minimind2-small-moe = MiniMind2SmallMoE, V 6400, 4 x 512; gpt2-124m = GPT2Small,
// V 50304, 4 x 512 (--all adds the last two).
// B = batch, T = time (sequence), V = vocab, P = parameters.
#include <minitrain/minitrain.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

using namespace minitrain;

namespace {

using TinyBench = Model<4, 128, 4, false, Knobs<2>>;

struct Preset {
    const char* name;
    int B, T, V;
};
constexpr Preset presets[] = {
    {"tiny", 8, 128, 512},
    {"minimind2-small", 4, 512, 6400},
    {"minimind2-small-moe", 4, 512, 6400},
    {"gpt2-124m", 4, 512, 50304},
};

const Preset* find_preset(const std::string& name) {
    for (const Preset& p : presets)
        if (name == p.name) return &p;
    return nullptr;
}

struct Options {
    std::string preset;               // one preset in this process; empty: driver
    std::vector<std::string> list;    // driver: presets to run
    int B = 0, T = 0, V = 0;          // 0: the preset's
    int threads = 2, steps = 10, warmup = 3, rounds = 1;
    double clip = 1.0;
    std::string wait_policy = "auto";  // driver: auto | passive | active | inherit
    bool torch = true;
    std::string torch_script;          // default: pytorch_train_step.py beside this source file
    std::string dtype = "f32";         // one preset: the precision of the products (core/precision.hpp)
    bool mixed = false;                // driver: ours f32, ours bf16, PyTorch f32, PyTorch autocast bf16
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            MT_CHECK(i + 1 < argc, "bench_train_step: ", a, " needs a value");
            return argv[++i];
        };
        if (a == "--preset") o.preset = value();
        else if (a == "--presets") {
            std::stringstream ss(value());
            std::string p;
            while (std::getline(ss, p, ',')) o.list.push_back(p);
        } else if (a == "--all") o.list = {"tiny", "minimind2-small", "minimind2-small-moe", "gpt2-124m"};
        else if (a == "--batch") o.B = std::stoi(value());
        else if (a == "--seq") o.T = std::stoi(value());
        else if (a == "--vocab") o.V = std::stoi(value());
        else if (a == "--threads") o.threads = std::stoi(value());
        else if (a == "--steps") o.steps = std::stoi(value());
        else if (a == "--warmup") o.warmup = std::stoi(value());
        else if (a == "--rounds") o.rounds = std::stoi(value());
        else if (a == "--clip") o.clip = std::stod(value());
        else if (a == "--wait-policy") o.wait_policy = value();
        else if (a == "--no-torch") o.torch = false;
        else if (a == "--torch-script") o.torch_script = value();
        else if (a == "--dtype") o.dtype = std::string(precision_name(cpu_precision(value())));
        else if (a == "--mixed") o.mixed = true;
        else if (a == "--f32-activations") set_bf16_activations(false);  // bf16: keep every activation f32, as before
        else if (a == "-h" || a == "--help") {
            std::printf(
                "usage: bench_train_step --preset NAME [--batch B] [--seq T] [--vocab V] [--threads N] [--steps N]\n"
                "                        [--warmup N] [--clip X] [--dtype f32|bf16] [--f32-activations]\n"
                "       bench_train_step --mixed [--presets a,b] [--rounds N] ...: per preset and round, ours f32, ours\n"
                "                        bf16, PyTorch f32 and PyTorch CPU autocast bf16 (OPENBLAS_CORETYPE and\n"
                "                        OPENBLAS_L2_SIZE unset for PyTorch), with the bf16 targets\n"
                "       bench_train_step [--all | --presets a,b] [--rounds N] [--wait-policy auto|passive|active|inherit]\n"
                "                        [--no-torch] [--torch-script PATH] [--threads N] [--steps N] [--warmup N]\n"
                "presets: tiny, minimind2-small, minimind2-small-moe, gpt2-124m\n");
            std::exit(0);
        } else {
            MT_CHECK(false, "bench_train_step: unknown argument ", a, " (try --help)");
        }
    }
    if (o.list.empty()) o.list = {"tiny", "minimind2-small"};
    MT_CHECK(o.threads >= 1 && o.steps >= 1 && o.warmup >= 0 && o.rounds >= 1,
             "bench_train_step: threads, steps and rounds must be >= 1");
    MT_CHECK(o.preset.empty() || find_preset(o.preset), "bench_train_step: unknown preset ", o.preset);
    for (auto& p : o.list) MT_CHECK(find_preset(p), "bench_train_step: unknown preset ", p);
    return o;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double process_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
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
long minor_faults() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- one preset, in this process ----------------------------------------------------------------

template <class Net>
int run_one(const Options& o, const Preset& p) {
    const int B = o.B ? o.B : p.B, T = o.T ? o.T : p.T, V = o.V ? o.V : p.V;
    const double load = loadavg1();
    CPU::set_threads(o.threads);

    Transformer<Net> model(ModelConfig{V, std::max(T, 512)});
    model.init(0);
    ParameterSet<CPU>& params = model.params();
    AdamW::Options ao;
    ao.lr = 1e-4;  // as the PyTorch script: betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices
    Optimizer<AdamW> opt(params, ao);

    // One random batch (B, T+1): inputs are the first T tokens, targets the last T.
    Buffer<CPU> ids(Shape{B, T}, DType::i32), targets(Shape{B, T}, DType::i32);
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t) {
            ids.data<std::int32_t>()[b * T + t] = std::int32_t(hash64(1, std::uint64_t(b * (T + 1) + t)) % V);
            targets.data<std::int32_t>()[b * T + t] = std::int32_t(hash64(1, std::uint64_t(b * (T + 1) + t + 1)) % V);
        }

    Graph<CPU> g(0, 0, /*seed=*/0);
    Autocast autocast(parse_precision(o.dtype));  // the products of every step (f32 by default)
    std::vector<double> times, cpu_share;
    long faults = 0;  // minor page faults during the timed steps: memory first touched (or returned and retaken)
    double first_loss = 0, last_loss = 0;
    for (int step = 0; step < o.warmup + o.steps; ++step) {
        const double t0 = now_s(), c0 = process_cpu_s();
        const long f0 = minor_faults();
        params.zero_grad();
        g.reset();
        auto out = model.forward(g, ids, &targets.tensor());
        g.backward(*out.loss);
        clip_grad_norm(params, o.clip);
        opt.step();
        const double dt = now_s() - t0;
        const double loss = double(out.loss->data.template data<float>()[0]);
        if (step == 0) first_loss = loss;
        last_loss = loss;
        if (step >= o.warmup) {
            times.push_back(dt);
            cpu_share.push_back((process_cpu_s() - c0) / (dt * o.threads));
            faults += minor_faults() - f0;
        }
    }
    const double med = median(times);
    const double P = double(params.count());
    const char* wp = std::getenv("OMP_WAIT_POLICY");
    std::printf("minitrain %s %s%s: B=%d T=%d V=%d P=%.1fM threads=%d: %.1f tokens/s (median step %.1f ms), peak RSS %.1f "
                "MiB (params+grads+adam %.1f MiB, activations+grads arena %.1f MiB), %ld page faults/step, CPU share %.0f%%, "
                "load %.2f, OMP_WAIT_POLICY=%s\n",
                p.name, o.dtype.c_str(), o.dtype == "bf16" && !bf16_activations_enabled() ? " (f32 activations)" : "", B, T, V, P / 1e6, o.threads, B * T / med, med * 1e3, peak_rss_mib(), 4 * 4 * P / 1048576,
                double(g.peak_bytes()) / 1048576, faults / o.steps, 100 * median(cpu_share), load, wp ? wp : "default");
    nlohmann::json j;
    j["impl"] = "minitrain";
    j["dtype"] = o.dtype;
    j["bf16_activations"] = o.dtype == "bf16" && bf16_activations_enabled();
    j["avx512_bf16"] = cpu::bf16gemm::has_avx512_bf16();
    j["preset"] = p.name;
    j["params"] = std::int64_t(P);
    j["B"] = B, j["T"] = T, j["V"] = V, j["L"] = Net::layers, j["C"] = Net::hidden, j["F"] = Net::ffn;
    j["moe"] = Net::moe;
    j["threads"] = o.threads, j["steps"] = o.steps, j["warmup"] = o.warmup, j["clip"] = o.clip;
    j["tokens_per_s"] = std::round(B * T / med * 10) / 10;
    j["step_ms_median"] = std::round(med * 1e5) / 100;
    std::vector<double> ms;
    for (double t : times) ms.push_back(std::round(t * 1e4) / 10);
    j["steps_ms"] = ms;
    j["cpu_share_median"] = std::round(median(cpu_share) * 100) / 100;
    j["peak_rss_mib"] = std::round(peak_rss_mib() * 10) / 10;
    j["arena_peak_mib"] = std::round(double(g.peak_bytes()) / 1048576 * 10) / 10;
    j["page_faults_per_step"] = faults / o.steps;
    j["loss_first_last"] = {std::round(first_loss * 1e4) / 1e4, std::round(last_loss * 1e4) / 1e4};
    j["omp_wait_policy"] = wp ? wp : "default";
    j["loadavg"] = load;
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

int run_preset(const Options& o) {
    const Preset& p = *find_preset(o.preset);
    const std::string n = p.name;
    if (n == "tiny") return run_one<TinyBench>(o, p);
    if (n == "minimind2-small") return run_one<MiniMind2Small>(o, p);
    if (n == "minimind2-small-moe") return run_one<MiniMind2SmallMoE>(o, p);
    return run_one<GPT2Small>(o, p);
}

// ---- the driver ---------------------------------------------------------------------------------

double children_cpu_s() {
    rusage u{};
    getrusage(RUSAGE_CHILDREN, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/// Runs a command, returns the last line of its stdout that parses as a JSON object (null on failure),
/// with "process_cpu_share" added: the child's CPU time / (its wall time x threads), start-up included.
nlohmann::json run_json(const std::string& cmd, int threads) {
    std::fprintf(stderr, "$ %s\n", cmd.c_str());
    const double w0 = now_s(), c0 = children_cpu_s();
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return nullptr;
    std::string out;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    const int rc = pclose(f);
    const double share = (children_cpu_s() - c0) / ((now_s() - w0) * threads);
    nlohmann::json last = nullptr;
    std::stringstream ss(out);
    std::string line;
    while (std::getline(ss, line)) {
        if (line.empty() || line[0] != '{') continue;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded()) last = j;
    }
    if (rc != 0 || last.is_null()) {
        std::fprintf(stderr, "command failed (status %d):\n%s\n", rc, out.c_str());
        return nullptr;
    }
    last["process_cpu_share"] = share;
    return last;
}

std::string self_exe() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    MT_CHECK(n > 0, "bench_train_step: cannot read /proc/self/exe");
    return std::string(buf, std::size_t(n));
}

std::string default_torch_script() {
    std::string here = __FILE__;  // .../benchmarks/train_step.cpp (absolute in CMake builds)
    const auto slash = here.find_last_of('/');
    return (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/pytorch_train_step.py";
}

int run_driver(Options o) {
    // The wait policy must be in the environment before either runtime starts its thread pool.
    const double load = loadavg1();
    std::string policy;
    if (o.wait_policy == "inherit") policy = std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "";
    else if (o.wait_policy == "passive") policy = "PASSIVE";
    else if (o.wait_policy == "active") policy = "ACTIVE";
    else {
        MT_CHECK(o.wait_policy == "auto", "bench_train_step: --wait-policy must be auto, passive, active or inherit");
        // Spinning threads on an oversubscribed machine burn the time slices the working threads need.
        // The load counts runnable threads, including a benchmark that just ran: only more than the cores is "loaded".
        policy = load > double(std::thread::hardware_concurrency()) + 0.5 ? "PASSIVE" : "";
        if (std::getenv("OMP_WAIT_POLICY")) policy = std::getenv("OMP_WAIT_POLICY");
    }
    if (policy.empty()) unsetenv("OMP_WAIT_POLICY");
    else setenv("OMP_WAIT_POLICY", policy.c_str(), 1);

    const std::string script = o.torch_script.empty() ? default_torch_script() : o.torch_script;
    const bool torch = o.torch && std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0 &&
                       std::ifstream(script).good();
    if (o.torch && !torch) std::fprintf(stderr, "PyTorch (/usr/bin/python3 + torch) or %s not found: minitrain only\n",
                                        script.c_str());
    std::printf("bench_train_step: %d threads, OMP_WAIT_POLICY=%s, %d timed steps after %d warm-up, %d round(s), load "
                "%.2f at start, %u logical cpus\n",
                o.threads, policy.empty() ? "default" : policy.c_str(), o.steps, o.warmup, o.rounds, load,
                std::thread::hardware_concurrency());

    auto common = [&] {
        std::string s = " --threads " + std::to_string(o.threads) + " --steps " + std::to_string(o.steps) +
                        " --warmup " + std::to_string(o.warmup);
        if (o.B) s += " --batch " + std::to_string(o.B);
        if (o.T) s += " --seq " + std::to_string(o.T);
        if (o.V) s += " --vocab " + std::to_string(o.V);
        return s;
    };
    struct Row {
        std::string preset;
        std::vector<double> ours, theirs, ratio;
        std::vector<double> cpu_ratio;  // ratio of tokens per CPU-second (process CPU shares), load-independent
        double ours_rss = 0, theirs_rss = 0, ours_share = 0;
        int B = 0, T = 0;
        double load_min = 1e9, load_max = 0;
    };
    std::vector<Row> rows;
    for (auto& name : o.list) {
        Row row;
        row.preset = name;
        rows.push_back(row);
    }
    // Rounds alternate minitrain and PyTorch per preset, so slow drifts in the machine's load hit both.
    for (int r = 0; r < o.rounds; ++r)
        for (Row& row : rows) {
            nlohmann::json a = run_json(self_exe() + " --preset " + row.preset + common() + " --clip " +
                                        std::to_string(o.clip) + " 2>&1",
                                        o.threads);
            if (a.is_null()) return 1;
            std::printf("  %-20s round %d minitrain %8.1f tokens/s  peak RSS %7.1f MiB  CPU share %3.0f%% (steps), %3.0f%% "
                        "(process)  load %.2f\n",
                        row.preset.c_str(), r + 1, a["tokens_per_s"].get<double>(), a["peak_rss_mib"].get<double>(),
                        100 * a["cpu_share_median"].get<double>(), 100 * a["process_cpu_share"].get<double>(),
                        a["loadavg"].get<double>());
            row.ours.push_back(a["tokens_per_s"].get<double>());
            row.ours_rss = std::max(row.ours_rss, a["peak_rss_mib"].get<double>());
            row.ours_share += a["cpu_share_median"].get<double>() / o.rounds;
            row.B = a["B"].get<int>(), row.T = a["T"].get<int>();
            row.load_min = std::min(row.load_min, a["loadavg"].get<double>());
            row.load_max = std::max(row.load_max, a["loadavg"].get<double>());
            if (!torch) continue;
            nlohmann::json b = run_json("/usr/bin/python3 " + script + " --preset " + row.preset + common() +
                                        " --clip " + std::to_string(o.clip) + " 2>/dev/null",
                                        o.threads);
            if (b.is_null()) return 1;
            std::printf("  %-20s round %d pytorch   %8.1f tokens/s  peak RSS %7.1f MiB  CPU share       %3.0f%% "
                        "(process)  load %.2f  sgemm %.1f GFLOP/s\n",
                        row.preset.c_str(), r + 1, b["tokens_per_s"].get<double>(), b["peak_rss_mib"].get<double>(),
                        100 * b["process_cpu_share"].get<double>(), b["loadavg"].get<double>(),
                        b["sgemm_gflops"].get<double>());
            row.theirs.push_back(b["tokens_per_s"].get<double>());
            row.ratio.push_back(row.ours.back() / row.theirs.back());
            row.cpu_ratio.push_back(row.ratio.back() * b["process_cpu_share"].get<double>() /
                                    a["process_cpu_share"].get<double>());
            row.theirs_rss = std::max(row.theirs_rss, b["peak_rss_mib"].get<double>());
            row.load_min = std::min(row.load_min, b["loadavg"].get<double>());
            row.load_max = std::max(row.load_max, b["loadavg"].get<double>());
        }

    std::printf("\n%-20s %9s %12s %12s %8s %8s %7s %10s %10s %7s %7s  %s\n", "preset", "B x T", "ours tok/s",
                "torch tok/s", "speed", "per-CPU", "target", "ours MiB", "torch MiB", "memory", "target", "load");
    bool all_met = true;
    for (Row& row : rows) {
        const double ours = median(row.ours);
        const double speed_target = row.preset == "tiny" ? 1.5 : row.preset == "minimind2-small" ? 1.3 : 0;
        std::string bt = std::to_string(row.B) + "x" + std::to_string(row.T);
        if (row.theirs.empty()) {
            std::printf("%-20s %9s %12.1f %12s %8s %8s %7s %10.1f %10s %7s %7s  %.1f-%.1f\n", row.preset.c_str(),
                        bt.c_str(), ours, "-", "-", "-", "-", row.ours_rss, "-", "-", "-", row.load_min, row.load_max);
            continue;
        }
        const double theirs = median(row.theirs), speed = median(row.ratio), mem = row.ours_rss / row.theirs_rss;
        const bool speed_ok = speed_target == 0 || speed >= speed_target, mem_ok = mem <= 0.6;
        if (speed_target > 0) all_met = all_met && speed_ok && mem_ok;
        char st[16] = "-";
        if (speed_target > 0) std::snprintf(st, sizeof st, ">=%.1fx", speed_target);
        std::printf("%-20s %9s %12.1f %12.1f %7.2fx %7.2fx %7s %10.1f %10.1f %6.2fx %7s  %.1f-%.1f  %s%s\n",
                    row.preset.c_str(), bt.c_str(), ours, theirs, speed, median(row.cpu_ratio), st, row.ours_rss,
                    row.theirs_rss, mem, "<=0.6x", row.load_min, row.load_max,
                    speed_target == 0 ? "" : speed_ok ? "speed MET" : "speed MISSED",
                    mem_ok ? ", memory MET" : ", memory MISSED");
    }
    if (torch)
        std::printf("speed = median over rounds of ours/PyTorch tokens/s (wall clock) within a round; per-CPU = the same "
                    "for tokens per CPU-second (each process's tokens/s divided by its CPU share, start-up included): "
                    "what a loaded machine does not distort; memory = peak RSS ratio. Targets are judged on speed.\n");
    std::printf("load %.2f at end\n", loadavg1());
    (void)all_met;  // reported above; a benchmark does not fail on a missed target
    return 0;
}

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

/// --mixed: per preset and round, back to back in this order: ours f32, ours bf16, PyTorch f32, PyTorch CPU
/// autocast bf16 (fp32 weights, bf16 forward: how MiniMind trains). PyTorch runs with OPENBLAS_CORETYPE and
/// OPENBLAS_L2_SIZE unset, which this machine sets and which hold OpenBLAS to its AVX2 kernels; the script
/// checks its sgemm against f64 first. Ratios are taken within a round, medians over rounds.
int run_mixed(Options o) {
    const double load = loadavg1();
    if (!std::getenv("OMP_WAIT_POLICY") && load > double(std::thread::hardware_concurrency()) + 0.5)
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    const char* wp = std::getenv("OMP_WAIT_POLICY");
    const std::string script = o.torch_script.empty() ? default_torch_script() : o.torch_script;
    const bool torch = o.torch && std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0 &&
                       std::ifstream(script).good();
    std::printf("bench_train_step --mixed: %s, AVX512-BF16 %s, %d threads, OMP_WAIT_POLICY=%s, %d timed steps after %d "
                "warm-up, %d round(s), load %.2f at start; PyTorch with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset "
                "(here: %s, %s)\n",
                cpu_model().c_str(), cpu::bf16gemm::has_avx512_bf16() ? "yes" : "no", o.threads, wp ? wp : "default",
                o.steps, o.warmup, o.rounds, load, std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "unset",
                std::getenv("OPENBLAS_L2_SIZE") ? std::getenv("OPENBLAS_L2_SIZE") : "unset");
    std::string common = " --threads " + std::to_string(o.threads) + " --steps " + std::to_string(o.steps) + " --warmup " +
                         std::to_string(o.warmup) + " --clip " + std::to_string(o.clip);
    if (o.B) common += " --batch " + std::to_string(o.B);
    if (o.T) common += " --seq " + std::to_string(o.T);
    if (o.V) common += " --vocab " + std::to_string(o.V);
    const char* names[4] = {"minitrain f32", "minitrain bf16", "pytorch f32", "pytorch autocast bf16"};
    for (const std::string& preset : o.list) {
        std::vector<double> tps[4], rss[4], loads;
        std::vector<double> r_self, r_torch16, r_torch32, r_mem, r_theirs;
        for (int r = 0; r < o.rounds; ++r) {
            nlohmann::json j[4];
            for (int k = 0; k < 4; ++k) {
                if (k >= 2 && !torch) break;
                const std::string cmd =
                    k < 2 ? self_exe() + " --preset " + preset + common + " --dtype " + (k ? "bf16" : "f32") + " 2>&1"
                          : "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 " + script + " --preset " +
                                preset + common + (k == 3 ? " --autocast bf16" : "") + " 2>/dev/null";
                j[k] = run_json(cmd, o.threads);
                if (j[k].is_null()) return 1;
                tps[k].push_back(j[k]["tokens_per_s"].get<double>());
                rss[k].push_back(j[k]["peak_rss_mib"].get<double>());
                loads.push_back(j[k]["loadavg"].get<double>());
                std::printf("  %-16s round %d %-22s %8.1f tokens/s  peak RSS %7.1f MiB  load %.2f%s\n", preset.c_str(),
                            r + 1, names[k], tps[k].back(), rss[k].back(), loads.back(),
                            k >= 2 ? (" sgemm " + j[k]["sgemm_gflops"].dump() + " GFLOP/s, rel err vs f64 " +
                                      j[k]["sgemm_rel_err_vs_f64"].dump()).c_str()
                                   : "");
            }
            r_self.push_back(tps[1].back() / tps[0].back());
            r_mem.push_back(rss[1].back() / rss[0].back());
            if (torch) {
                r_torch16.push_back(tps[1].back() / tps[3].back());
                r_torch32.push_back(tps[0].back() / tps[2].back());
                r_theirs.push_back(tps[3].back() / tps[2].back());
            }
        }
        const double lmin = *std::min_element(loads.begin(), loads.end()), lmax = *std::max_element(loads.begin(), loads.end());
        std::printf("\n%s (load %.2f-%.2f), medians over %d round(s):\n", preset.c_str(), lmin, lmax, o.rounds);
        for (int k = 0; k < 4; ++k)
            if (!tps[k].empty())
                std::printf("  %-22s %8.1f tokens/s  peak RSS %7.1f MiB\n", names[k], median(tps[k]), median(rss[k]));
        auto verdict = [](bool ok) { return ok ? "MET" : "MISSED"; };
        std::printf("  ours bf16 / ours f32          %5.2fx  (target >= 1.5x: %s)\n", median(r_self),
                    verdict(median(r_self) >= 1.5));
        std::printf("  ours bf16 RSS / ours f32 RSS  %5.2fx  (target <= 0.8x: %s)\n", median(r_mem),
                    verdict(median(r_mem) <= 0.8));
        if (torch) {
            std::printf("  ours bf16 / PyTorch autocast  %5.2fx  (target >= 2.5x: %s)\n", median(r_torch16),
                        verdict(median(r_torch16) >= 2.5));
            std::printf("  ours f32 / PyTorch f32        %5.2fx\n", median(r_torch32));
            std::printf("  PyTorch autocast / f32        %5.2fx\n", median(r_theirs));
        }
    }
    std::printf("load %.2f at end\n", loadavg1());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear as they come, even through a pipe
    try {
        Options o = parse(argc, argv);
        if (!o.preset.empty()) return run_preset(o);
        return o.mixed ? run_mixed(o) : run_driver(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_train_step: %s\n", e.what());
        return 1;
    }
}
