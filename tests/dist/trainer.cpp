// The Trainer over MPI (tests/dist/mpirun_test.cmake starts it under mpirun). argv[1] picks the mode:
//   equivalence   np 2: 2 ranks of batch b train on exactly the global batches of 1 process of batch 2b:
//                 after 20 steps the weights agree to rounding (<= 1e-5 relative, max norm); ZeRO-1 agrees
//                 with plain data parallelism; a run saved by 2 ranks resumes on 1 (batch 2b), and a run
//                 saved by 1 resumes on 2, both ending where the uninterrupted run ends; SFT, whose ranks
//                 hold different numbers of assistant tokens, agrees with 1 process too, and so do LoRA
//                 (adapters over SFT) and DPO.
//   zero3         np 3: ZeRO-1 with uneven shards (the slab is not a multiple of 3) against plain data
//                 parallelism and against 1 process of batch 3b.
//   mismatch      np 2: rank 1 has another learning rate: every rank stops, naming --learning_rate.
// Every comparison runs the one-process reference on rank 0 alone (LocalComm) in the same job. Prints
// "PASS <mode>" from rank 0; "FAIL ..." and a non-zero exit otherwise.
#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/train/dpo.hpp>
#include <minitrain/train/lora.hpp>
#include <minitrain/train/sft.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

using Net = Model<2, 32, 4, false, Knobs<2>>;
template <class Task>
using TrainerOf = Trainer<Net, Optimizer<AdamW>, Schedule<Cosine>, Task>;
constexpr int b = 2, steps = 20;
int failures = 0;

void expect(bool ok, const std::string& what) {
    if (ok) return;
    ++failures;
    std::fprintf(stderr, "FAIL %s\n", what.c_str());
}

/// max |a - b| / max |a|: the relative difference of two weight vectors in the max norm.
double rel_diff(const std::vector<float>& a, const std::vector<float>& c) {
    if (a.size() != c.size()) return INFINITY;
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, double(std::fabs(a[i] - c[i])));
        den = std::max(den, double(std::fabs(a[i])));
    }
    return den > 0 ? num / den : num;
}

/// What the run trains: the model's parameters, or LoRA's adapters.
template <class T>
std::vector<float> weights(T& t) {
    const auto& d = t.objective().parameters().data();
    return std::vector<float>(d.template data<float>(), d.template data<float>() + d.numel());
}

void compare(Comm& comm, const std::vector<float>& want, const std::vector<float>& got, const std::string& what) {
    if (!comm.is_root()) return;
    const double d = rel_diff(want, got);
    std::printf("%-44s relative difference %.3g\n", what.c_str(), d);
    expect(d <= 1e-5, what + ": relative difference " + std::to_string(d) + " > 1e-5");
}

/// A folder every rank sees: rank 0 makes it and broadcasts its name.
fs::path shared_dir(Comm& comm) {
    std::string path;
    if (comm.is_root()) {
        char tmpl[] = "/tmp/minitrain-dist-XXXXXX";
        MT_CHECK(::mkdtemp(tmpl) != nullptr, "mkdtemp failed");
        path = tmpl;
    }
    comm.broadcast(path);
    return path;
}

void write_corpus(const fs::path& path, int tokens, std::uint64_t seed) {
    Rng rng{seed};
    std::vector<std::uint32_t> t(static_cast<std::size_t>(tokens));
    std::uint32_t x = 0;
    for (auto& v : t) v = x = rng.below(8) == 0 ? std::uint32_t(rng.below(50)) : (x + 1) % 50;
    write_token_shard(path, t, 50);
}

TrainConfig pretrain_config(const fs::path& dir, const std::string& run, int batch) {
    TrainConfig c;
    c.train_data = (dir / "train.bin").string();
    c.val_data = (dir / "val.bin").string();
    c.vocab_size = 50;
    c.batch_size = batch;
    c.max_seq_len = 16;
    c.accumulation_steps = 2;
    c.learning_rate = 3e-3;
    c.max_steps = steps;
    c.log_interval = 0;
    c.save_interval = 0;
    c.out_dir = (dir / run).string();
    c.threads = 1;
    c.quiet = true;
    return c;
}

/// Conversations whose replies differ in length (1 to ~12 tokens), so ranks hold uneven token counts.
void write_conversations(const fs::path& file, int n, std::uint64_t seed) {
    Rng rng{seed};
    std::ofstream out(file);
    for (int i = 0; i < n; ++i) {
        const int a = int(rng.below(10)), c = int(rng.below(10));
        std::string reply = std::to_string(a + c);
        for (int k = int(rng.below(4)); k > 0; --k) reply += " and " + std::to_string(a * c);
        nlohmann::json conv = nlohmann::json::array();
        conv.push_back({{"role", "user"}, {"content", "add " + std::to_string(a) + " " + std::to_string(c)}});
        conv.push_back({{"role", "assistant"}, {"content", reply}});
        out << nlohmann::json{{"conversations", conv}}.dump() << "\n";
    }
}

/// Preference pairs: the right sum (chosen) against a wrong one (rejected).
void write_pairs(const fs::path& file, int n, std::uint64_t seed) {
    Rng rng{seed};
    std::ofstream out(file);
    for (int i = 0; i < n; ++i) {
        const int a = int(rng.below(10)), c = int(rng.below(10));
        const nlohmann::json user = {{"role", "user"}, {"content", "add " + std::to_string(a) + " " + std::to_string(c)}};
        std::string wrong = std::to_string(a + c + 1 + int(rng.below(3)));
        for (int k = int(rng.below(3)); k > 0; --k) wrong += " and " + std::to_string(a);
        out << nlohmann::json{{"chosen", {user, {{"role", "assistant"}, {"content", std::to_string(a + c)}}}},
                              {"rejected", {user, {{"role", "assistant"}, {"content", wrong}}}}}
                   .dump()
            << "\n";
    }
}

/// Trains to step n (from a resumed step, if any); saves a checkpoint there when n stops short of the run or
/// `save` is set.
template <class Task>
std::vector<float> train(const TrainConfig& c, Comm& comm, int n = steps, bool save = false) {
    TrainerOf<Task> t(c, comm);
    while (t.step() < n) t.train_step();
    if (save || n < c.max_steps) t.save();
    return weights(t);
}

void equivalence(Comm& comm) {
    const fs::path dir = shared_dir(comm);
    if (comm.is_root()) {
        write_corpus(dir / "train.bin", 12000, 1);
        write_corpus(dir / "val.bin", 2000, 2);
    }
    comm.barrier();
    const int W = comm.world_size();

    // The one-process reference, batch W x b, on rank 0 alone.
    std::vector<float> single;
    if (comm.is_root()) single = train<Pretrain>(pretrain_config(dir, "single", W * b), local_comm());
    comm.barrier();

    const std::vector<float> ddp = train<Pretrain>(pretrain_config(dir, "ddp", b), comm);
    compare(comm, single, ddp, "2 ranks x batch 2 vs 1 x batch 4");
    TrainConfig z = pretrain_config(dir, "zero", b);
    z.zero_stage = 1;
    const std::vector<float> zero = train<Pretrain>(z, comm, steps, /*save=*/true);
    compare(comm, ddp, zero, "ZeRO-1 vs plain data parallelism");
    if (comm.is_root()) {  // ZeRO-1's checkpoint holds the whole optimizer state, loadable by one process
        TrainConfig r = pretrain_config(dir, "zero", W * b);
        r.resume = true;
        TrainerOf<Pretrain> back(r, local_comm());
        expect(back.step() == steps, "a ZeRO-1 checkpoint resumes on one process at its step");
        const auto st = back.optimizer().state();
        bool finite_nonzero = !st.empty();
        for (const auto& [name, t] : st) {
            const float* p = t.template data<float>();
            double s = 0;
            for (std::int64_t i = 0; i < t.numel(); ++i) s += std::fabs(p[i]);
            finite_nonzero = finite_nonzero && std::isfinite(s) && s > 0;
        }
        expect(finite_nonzero, "the gathered optimizer state is whole (every moment restored, none zero)");
    }
    comm.barrier();

    // Saved by 2 ranks, resumed by 1 (batch 2b); saved by 1, resumed by 2.
    TrainConfig half = pretrain_config(dir, "two-then-one", b);
    train<Pretrain>(half, comm, steps / 2);
    comm.barrier();
    if (comm.is_root()) {
        TrainConfig r = pretrain_config(dir, "two-then-one", W * b);
        r.resume = true;
        compare(comm, single, train<Pretrain>(r, local_comm()), "saved by 2 ranks, resumed by 1");
    }
    comm.barrier();
    if (comm.is_root()) train<Pretrain>(pretrain_config(dir, "one-then-two", W * b), local_comm(), steps / 2);
    comm.barrier();
    TrainConfig r = pretrain_config(dir, "one-then-two", b);
    r.resume = true;
    compare(comm, single, train<Pretrain>(r, comm), "saved by 1 process, resumed by 2 ranks");

    // SFT: the gradient is the mean over the global batch's assistant tokens, not the mean of rank means.
    if (comm.is_root()) {
        std::vector<std::string> texts;
        for (int i = 0; i < 60; ++i) texts.push_back("add " + std::to_string(i % 10) + " " + std::to_string(i / 6) + " and");
        Tokenizer::TrainOptions to;
        to.vocab_size = 300;
        Tokenizer::train_from_texts(texts, to).save(dir / "tokenizer.json");
        write_conversations(dir / "train.jsonl", 96, 3);
    }
    comm.barrier();
    auto sft_config = [&](const std::string& run, int batch) {
        TrainConfig c = pretrain_config(dir, run, batch);
        c.tokenizer = (dir / "tokenizer.json").string();
        c.train_data = (dir / "train.jsonl").string();
        c.val_data.clear();
        c.vocab_size = 300;
        c.max_seq_len = 40;
        c.max_steps = 8;
        return c;
    };
    std::vector<float> sft_single;
    if (comm.is_root()) sft_single = train<SFT>(sft_config("sft-single", W * b), local_comm(), 8);
    comm.barrier();
    compare(comm, sft_single, train<SFT>(sft_config("sft-ddp", b), comm, 8), "SFT, uneven assistant tokens per rank");
    std::vector<float> lora_single;
    if (comm.is_root()) lora_single = train<LoRA<4>>(sft_config("lora-single", W * b), local_comm(), 8);
    comm.barrier();
    compare(comm, lora_single, train<LoRA<4>>(sft_config("lora-ddp", b), comm, 8), "LoRA (rank 4) over SFT");

    if (comm.is_root()) write_pairs(dir / "pairs.jsonl", 64, 7);
    comm.barrier();
    auto dpo_config = [&](const std::string& run, int batch) {
        TrainConfig c = sft_config(run, batch);
        c.train_data = (dir / "pairs.jsonl").string();
        c.learning_rate = 1e-3;
        return c;
    };
    std::vector<float> dpo_single;
    if (comm.is_root()) dpo_single = train<DPO>(dpo_config("dpo-single", W * b), local_comm(), 8);
    comm.barrier();
    compare(comm, dpo_single, train<DPO>(dpo_config("dpo-ddp", b), comm, 8), "DPO");
    if (comm.is_root()) fs::remove_all(dir);
}

void zero3(Comm& comm) {
    const fs::path dir = shared_dir(comm);
    if (comm.is_root()) {
        write_corpus(dir / "train.bin", 12000, 4);
        write_corpus(dir / "val.bin", 2000, 5);
    }
    comm.barrier();
    std::vector<float> single;
    if (comm.is_root()) single = train<Pretrain>(pretrain_config(dir, "single", comm.world_size() * b), local_comm());
    comm.barrier();
    const std::vector<float> ddp = train<Pretrain>(pretrain_config(dir, "ddp", b), comm);
    TrainConfig z = pretrain_config(dir, "zero", b);
    z.zero_stage = 1;
    const std::vector<float> zero = train<Pretrain>(z, comm);
    compare(comm, single, ddp, "3 ranks x batch 2 vs 1 x batch 6");
    compare(comm, ddp, zero, "ZeRO-1 (uneven shards) vs plain, 3 ranks");
    if (comm.is_root()) fs::remove_all(dir);
}

void mismatch(Comm& comm) {
    const fs::path dir = shared_dir(comm);
    if (comm.is_root()) write_corpus(dir / "train.bin", 4000, 6);
    comm.barrier();
    TrainConfig c = pretrain_config(dir, "run", b);
    c.val_data.clear();
    if (comm.rank() == 1) c.learning_rate = 1e-3;
    try {
        TrainerOf<Pretrain> t(c, comm);
    } catch (...) {
        if (comm.is_root()) fs::remove_all(dir);
        throw;
    }
    expect(false, "a rank with another learning rate was accepted");
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    return run_main([&](Comm& comm) -> int {
        MT_CHECK(comm.world_size() > 1, "run this under mpirun with 2 or more processes");
        if (mode == "equivalence")
            equivalence(comm);
        else if (mode == "zero3")
            zero3(comm);
        else if (mode == "mismatch")
            mismatch(comm);
        else
            detail::fail("unknown mode '", mode, "': equivalence, zero3 or mismatch");
        const int all = int(comm.all_reduce_sum(std::int64_t(failures)));
        if (comm.is_root()) std::printf(all == 0 ? "PASS %s\n" : "FAIL %s: %d failures\n", mode.c_str(), all);
        return all == 0 ? 0 : 1;
    });
}
