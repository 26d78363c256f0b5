// Kill tests: a tiny pretrain is killed with SIGKILL at random instants and at every crash point of the
// checkpoint code (io/crash_point.hpp: after a folder is written, while an old one is moved aside, after the
// rename, while a pruned one is being deleted), then resumed until it finishes. The final weights must equal
// an uninterrupted run's bit for bit, and no torn or temporary folder may be left.
//
// Each run is a forked child, so a kill is a real kill -9 of a process mid-write; the parent never runs
// OpenMP code (libgomp's thread pool does not survive fork). More random trials for a soak:
//   MINITRAIN_KILL_TRIALS=200 ./build/test_kill_resume
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>

#include <minitrain/minitrain.hpp>

#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using Net = Model<2, 32, 4, false, Knobs<2>>;
using Train = Trainer<Net, Optimizer<AdamW>, Schedule<Cosine>, Pretrain>;
constexpr int steps = 12;

TrainConfig config(const fs::path& data, const fs::path& out) {
    TrainConfig c;
    c.train_data = (data / "train.bin").string();
    c.val_data = (data / "val.bin").string();
    c.vocab_size = 50;
    c.batch_size = 4;
    c.max_seq_len = 16;
    c.learning_rate = 3e-3;
    c.max_steps = steps;
    c.log_interval = 0;
    c.save_interval = 1;  // a save and a prune every step: many chances to be killed inside one
    c.keep_last = 2;
    c.dropout = 0.1;      // the dropout stream must be resumed too
    c.out_dir = out.string();
    c.threads = 1;
    c.resume = true;
    c.quiet = true;
    return c;
}

void write_corpus(const fs::path& path, int tokens, std::uint64_t seed) {
    Rng rng{seed};
    std::vector<std::uint32_t> t(static_cast<std::size_t>(tokens));
    for (auto& v : t) v = std::uint32_t(rng.below(50));
    write_token_shard(path, t, 50);
}

/// Runs the trainer (resuming) in a child with MINITRAIN_CRASH_AT = crash_at (empty: none), killing it after
/// kill_after_ms (< 0: never). Returns the child's wait status.
int run_child(const TrainConfig& c, const std::string& crash_at, int kill_after_ms) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (!crash_at.empty()) ::setenv("MINITRAIN_CRASH_AT", crash_at.c_str(), 1);
        int code = 0;
        try {
            Train t(c);
            t.fit();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "child: %s\n", e.what());
            code = 3;
        }
        std::fflush(stderr);
        ::_exit(code);
    }
    if (kill_after_ms >= 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
        ::kill(pid, SIGKILL);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

bool exited_ok(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

/// Resumes until the run finishes (a few tries at most), then checks the result and the folder.
void finish_and_check(const TrainConfig& c, const std::string& reference, const std::string& what) {
    INFO(what);
    int status = 0;
    for (int attempt = 0; attempt < 3 && !exited_ok(status = run_child(c, "", -1)); ++attempt) {}
    REQUIRE(exited_ok(status));
    const fs::path out(c.out_dir);
    CHECK(slurp(out / "final" / "model.safetensors") == reference);
    for (const auto& e : fs::directory_iterator(out / "checkpoints")) {
        const std::string name = e.path().filename().string();
        INFO(name);
        CHECK(name.find(".tmp") == std::string::npos);
        CHECK(name.find(".old-") == std::string::npos);
        CHECK(name.find(".del-") == std::string::npos);
        CHECK(fs::exists(e.path() / "training_state.safetensors"));  // no torn step_N folder
        for (const auto& f : fs::directory_iterator(e.path()))
            CHECK(f.path().filename().string().find(".tmp.") == std::string::npos);
    }
    for (const auto& f : fs::directory_iterator(out / "final"))
        CHECK(f.path().filename().string().find(".tmp.") == std::string::npos);
    CHECK(list_checkpoints(out).size() == 2);  // keep_last
}

}  // namespace

TEST_CASE("kill -9 at any point, resume: the final weights equal an uninterrupted run, nothing torn is left") {
    TempDir dir;
    write_corpus(dir.path / "train.bin", 8000, 21);
    write_corpus(dir.path / "val.bin", 1000, 22);
    const TrainConfig straight = config(dir.path, dir.path / "straight");
    REQUIRE(exited_ok(run_child(straight, "", -1)));
    const std::string reference = slurp(dir.path / "straight" / "final" / "model.safetensors");
    REQUIRE(reference.size() > 1000);

    // Every crash point, at a few of its occurrences (save.aside only happens when a step is saved again:
    // after a resume of a finished run).
    int trial = 0;
    for (const char* point : {"save.written:1", "save.written:7", "save.renamed:2", "save.renamed:13",
                              "prune.renamed:1", "prune.renamed:5"}) {
        const TrainConfig c = config(dir.path, dir.path / ("point-" + std::to_string(trial++)));
        const int status = run_child(c, point, -1);
        CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), point);
        finish_and_check(c, reference, point);
    }
    {   // A finished run resumed again saves its last step once more, replacing it: kill in the middle.
        const TrainConfig c = config(dir.path, dir.path / "aside");
        REQUIRE(exited_ok(run_child(c, "", -1)));
        const int status = run_child(c, "save.aside:1", -1);
        CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
        finish_and_check(c, reference, "save.aside:1");
    }

    // Random instants: first measure how long a run takes, then kill at uniform times within it, twice
    // per trial (the resumed run may be killed too).
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(exited_ok(run_child(config(dir.path, dir.path / "timing"), "", -1)));
    const int run_ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
    const char* env = std::getenv("MINITRAIN_KILL_TRIALS");
    const int trials = env ? std::atoi(env) : 4;
    std::mt19937 gen(12345);
    std::uniform_int_distribution<int> when(0, std::max(1, run_ms));
    for (int i = 0; i < trials; ++i) {
        const TrainConfig c = config(dir.path, dir.path / ("random-" + std::to_string(i)));
        run_child(c, "", when(gen));
        run_child(c, "", when(gen));
        finish_and_check(c, reference, "random trial " + std::to_string(i));
    }
    MESSAGE("run time ", run_ms, " ms; ", trials, " random trials");
}
