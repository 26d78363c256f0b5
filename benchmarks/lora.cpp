// bench_lora: memory and step time of LoRA fine-tuning against full fine-tuning.
//
// A step is Trainer::train_step without data loading: zero_grad over the trained set, forward with the
// loss, backward, clip_grad_norm(1.0), AdamW step. One fixed random batch. Modes:
//   full        every base parameter trained (gradient slab and AdamW moments for all of them)
//   lora-attn   LoRA<8> (q, k, v, o), base frozen
//   lora-all    LoRA<8, 16, LoRAAttentionMLP>, base frozen
//
//   bench_lora                       the driver: each mode in its own process (peak RSS only grows), a table
//   bench_lora --mode M [--batch B --seq T --threads N --steps N --warmup N]   one mode, a JSON line
//
// Memory is reported three ways: the slabs (parameters, gradients, optimizer state: exact), the
// activation arena's high-water mark (activations + activation gradients), and the process's RSS now
// and at its peak (VmRSS, VmHWM). Model: MiniMind2-Small, vocabulary 6400; default batch 4 x 256, 2 threads.
#include <minitrain/minitrain.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>

using namespace minitrain;

namespace {

using Net = MiniMind2Small;
using Model = Transformer<Net>;

struct Options {
    std::string mode;  // empty: driver
    int B = 4, T = 256, V = 6400, threads = 2, steps = 8, warmup = 2;
};

double loadavg1() {
    double l = 0;
    std::ifstream("/proc/loadavg") >> l;
    return l;
}

/// VmRSS or VmHWM of this process in MiB.
double status_mib(const char* key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string(key).size() + 1)) / 1024.0;
    return 0;
}

/// CPU seconds used by the process (all threads): on a busy machine, the work a step did, whatever the wait.
double process_cpu_s() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

/// Runs the steps over `trained` (the set the optimizer updates) and prints one JSON line.
int measure(const Options& o, Model& m, ParameterSet<CPU>& trained, std::size_t adapter_count) {
    Rng rng{7};
    Buffer<CPU> ids(Shape{o.B, o.T}, DType::i32), targets(Shape{o.B, o.T}, DType::i32);
    for (std::int64_t i = 0; i < ids.tensor().numel(); ++i) {
        ids.data<std::int32_t>()[i] = std::int32_t(rng.below(std::uint64_t(o.V)));
        targets.data<std::int32_t>()[i] = std::int32_t(rng.below(std::uint64_t(o.V)));
    }
    Optimizer<AdamW> opt(trained, {.lr = 1e-4, .weight_decay = 0.0});
    Graph<CPU> g;
    std::vector<double> times, cpu;
    double first = 0, last = 0;
    for (int step = 0; step < o.warmup + o.steps; ++step) {
        auto t0 = std::chrono::steady_clock::now();
        const double c0 = process_cpu_s();
        trained.zero_grad();
        g.reset();
        auto out = m.forward(g, ids.tensor(), &targets.tensor());
        g.backward(*out.loss);
        clip_grad_norm(trained, 1.0);
        opt.step();
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        last = out.loss->data.data<float>()[0];
        if (step == 0) first = last;
        if (step >= o.warmup) {
            times.push_back(dt);
            cpu.push_back(process_cpu_s() - c0);
        }
    }
    const double mib = 1.0 / 1048576;
    const double base = double(m.params().count()) * 4;
    const double grads = double(trained.trainable_count() + (adapter_count ? m.params().trainable_count() : 0)) * 4;
    nlohmann::json j;
    j["mode"] = o.mode;
    j["B"] = o.B, j["T"] = o.T, j["threads"] = o.threads;
    j["base_params"] = m.params().count();
    j["trained_params"] = trained.trainable_count();
    j["params_mib"] = (base + double(adapter_count) * 4) * mib;
    j["grads_mib"] = grads * mib;
    j["adam_mib"] = 2 * double(trained.trainable_count()) * 4 * mib;
    j["arena_mib"] = double(g.peak_bytes()) * mib;
    j["rss_mib"] = status_mib("VmRSS:");
    j["hwm_mib"] = status_mib("VmHWM:");
    j["step_ms"] = median(times) * 1e3;
    j["cpu_ms"] = median(cpu) * 1e3;
    j["tokens_per_s"] = o.B * o.T / median(times);
    j["loss_first_last"] = {first, last};
    j["load"] = loadavg1();
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

template <class Policy>
int run_lora(const Options& o) {
    Model m(ModelConfig{o.V, o.T});
    m.init(1);
    LoRAAdapters<Policy, Model> a(m, 2);  // freezes the base
    return measure(o, m, a.params(), a.params().count());
}

int run_mode(const Options& o) {
    CPU::set_threads(o.threads);
    if (o.mode == "full") {
        Model m(ModelConfig{o.V, o.T});
        m.init(1);
        return measure(o, m, m.params(), 0);
    }
    if (o.mode == "lora-attn") return run_lora<LoRA<8>>(o);
    if (o.mode == "lora-all") return run_lora<LoRA<8, 16, LoRAAttentionMLP>>(o);
    std::fprintf(stderr, "bench_lora: unknown mode %s (full, lora-attn, lora-all)\n", o.mode.c_str());
    return 2;
}

nlohmann::json run_child(const std::string& cmd) {
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return nullptr;
    std::string out;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    pclose(f);
    std::stringstream ss(out);
    std::string line;
    nlohmann::json last = nullptr;
    while (std::getline(ss, line))
        if (!line.empty() && line[0] == '{') last = nlohmann::json::parse(line, nullptr, false);
    if (last.is_null() || last.is_discarded()) std::fprintf(stderr, "%s failed:\n%s\n", cmd.c_str(), out.c_str());
    return last;
}

int run_driver(const Options& o) {
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 1;
    exe[n] = 0;
    std::printf("bench_lora: MiniMind2-Small, V %d, batch %d x %d, %d threads, median of %d steps after %d; load %.2f "
                "(%ld cpus)\n",
                o.V, o.B, o.T, o.threads, o.steps, o.warmup, loadavg1(), sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("%-10s %10s %9s %8s %8s %8s %9s %9s %9s %8s %9s %10s %6s\n", "mode", "trained", "params", "grads", "adam",
                "arena", "RSS now", "RSS peak", "step ms", "CPU ms", "tok/s", "loss", "load");
    for (const char* mode : {"full", "lora-attn", "lora-all"}) {
        std::string cmd = std::string(exe) + " --mode " + mode + " --batch " + std::to_string(o.B) + " --seq " +
                          std::to_string(o.T) + " --threads " + std::to_string(o.threads) + " --steps " +
                          std::to_string(o.steps) + " --warmup " + std::to_string(o.warmup);
        auto j = run_child(cmd);
        if (j.is_null() || j.is_discarded()) return 1;
        std::printf("%-10s %10lld %7.1fMB %6.1fMB %6.1fMB %6.1fMB %7.1fMB %7.1fMB %9.0f %8.0f %9.0f %4.2f>%4.2f %6.2f\n", mode,
                    j["trained_params"].get<long long>(), j["params_mib"].get<double>(), j["grads_mib"].get<double>(),
                    j["adam_mib"].get<double>(), j["arena_mib"].get<double>(), j["rss_mib"].get<double>(),
                    j["hwm_mib"].get<double>(), j["step_ms"].get<double>(), j["cpu_ms"].get<double>(),
                    j["tokens_per_s"].get<double>(),
                    j["loss_first_last"][0].get<double>(), j["loss_first_last"][1].get<double>(), j["load"].get<double>());
    }
    std::printf("(MB = MiB; params/grads/adam: slab bytes; arena: activations + activation gradients at peak; CPU ms:\n"
                " process CPU time per step, all threads; load %.2f at end)\n", loadavg1());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench_lora: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--mode") o.mode = value();
        else if (a == "--batch") o.B = std::stoi(value());
        else if (a == "--seq") o.T = std::stoi(value());
        else if (a == "--threads") o.threads = std::stoi(value());
        else if (a == "--steps") o.steps = std::stoi(value());
        else if (a == "--warmup") o.warmup = std::stoi(value());
        else {
            std::fprintf(stderr, "usage: bench_lora [--mode full|lora-attn|lora-all] [--batch B] [--seq T] [--threads N] "
                                 "[--steps N] [--warmup N]\n");
            return 2;
        }
    }
    try {
        return o.mode.empty() ? run_driver(o) : run_mode(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_lora: %s\n", e.what());
        return 1;
    }
}
