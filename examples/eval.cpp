// eval: the mean loss, perplexity and bits per byte of a trained model over token shards.
//
//   eval --checkpoint out/final --data data/val.bin
//   eval --checkpoint out/checkpoints/step_00001000 --data "data/val_*.bin" --max_batches 100
//
// The batches and the scoring are the trainer's own (Pretrain's validation loader: B x T windows of
// consecutive tokens, in order, no shuffling; Pretrain's objective), so the numbers agree with pretrain's
// "val loss" lines for the same batch_size and max_seq_len. Bits per byte are printed when <data>.meta.json records the shards'
// byte count (see train/pretrain.hpp).
#include <cmath>
#include <cstdio>
#include <string>

#include <minitrain/minitrain.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

struct Options {
    std::string checkpoint, data;
    int batch_size = 8;
    int max_seq_len = 0;  // 0: the model's max_position_embeddings
    std::int64_t max_batches = 0;
};

template <ModelPolicy Net>
void run(const Options& a, std::string_view preset) {
    const fs::path dir = a.checkpoint;
    ModelConfig mc = load_model_config(dir);
    if (a.max_seq_len > 0) mc.max_seq_len = a.max_seq_len;

    // Pretrain's data with the shards as both sets: its validation half is the evaluation loader.
    TrainConfig c;
    c.train_data = c.val_data = a.data;
    c.vocab_size = mc.vocab_size;
    c.batch_size = a.batch_size;
    c.max_seq_len = mc.max_seq_len;
    c.shuffle = false;
    Pretrain::Data data(c);

    Transformer<Net, CPU> model(mc);
    load_pretrained(dir, model);

    std::int64_t n = data.val_batches();
    if (a.max_batches > 0) n = std::min(n, a.max_batches);
    std::printf("eval: %s (preset %s) on %s: %lld batches of %d x %d tokens\n", dir.string().c_str(),
                std::string(preset).c_str(), a.data.c_str(), (long long)n, c.batch_size, c.max_seq_len);
    std::fflush(stdout);

    // Pretrain's objective scores a validation batch exactly as the trainer's evaluation does.
    Pretrain::Objective<Transformer<Net, CPU>> objective(c, model);
    Graph<CPU> g;
    NoGrad<CPU> no_grad(g);
    g.set_training(false);
    double nats = 0;
    std::int64_t tokens = 0;
    data.val_reset();
    for (std::int64_t i = 0; i < n; ++i) {
        g.reset();
        EvalBatch e = objective.eval(model, g, data);
        nats += e.nats;
        tokens += e.tokens;
    }
    MT_CHECK(tokens > 0, "eval: no target tokens in ", n, " batches");
    const double loss = nats / double(tokens);
    MT_CHECK(std::isfinite(loss), "the mean loss over ", tokens, " tokens is ", loss,
             ": the model overflows on this data (its weights are finite; it probably diverged while training)");
    std::printf("loss %.4f | ppl %.2f", loss, std::exp(loss));
    if (data.bytes_per_token() > 0) std::printf(" | bpb %.4f", loss / std::log(2.0) / data.bytes_per_token());
    std::printf(" | %lld tokens\n", (long long)tokens);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Options a;
        int threads = 0;
        std::string dtype = "f32";
        Flags flags("eval", "Mean loss, perplexity and bits per byte of a trained model over llm.c token shards.");
        flags.bind("checkpoint", a.checkpoint,
                   "model folder: OUT_DIR/final, OUT_DIR/checkpoints/step_N, or a Hugging Face Llama folder");
        flags.bind("data", a.data, "token shard file or glob");
        flags.bind("batch_size", a.batch_size, "sequences per batch");
        flags.bind("max_seq_len", a.max_seq_len, "tokens per sequence (0: the model's max_position_embeddings)");
        flags.bind("max_batches", a.max_batches, "evaluate at most this many batches (0: all)");
        flags.bind("threads", threads, "CPU threads (0: OpenMP's default)");
        flags.bind_dtype("dtype", dtype, "precision of the matrix products: f32, or bf16 (bf16 weights and inputs, f32 accumulation; fast on CPUs with AVX512-BF16)");
        flags.require("checkpoint");
        flags.require("data");
        flags.parse(argc, argv);

        MT_CHECK(a.batch_size >= 1, "--batch_size must be at least 1, got ", a.batch_size);
        MT_CHECK(a.max_seq_len >= 0, "--max_seq_len must be >= 0, got ", a.max_seq_len);
        if (threads > 0) CPU::set_threads(threads);
        Autocast autocast(cpu_precision(dtype));  // core/precision.hpp: for every product of this run

        const std::string preset = preset_for_folder(a.checkpoint);
        with_preset(preset, [&]<class Net>() { run<Net>(a, preset); });
        return 0;
    } catch (const std::exception& e) {  // minitrain::Error, and the standard library's (filesystem, memory)
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
