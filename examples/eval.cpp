// eval: the mean loss, perplexity and bits per byte of a trained model over token shards.
//
//   eval --checkpoint out/final --data data/val.bin
//   eval --checkpoint out/checkpoints/step_00001000 --data "data/val_*.bin" --max_batches 100
//
// The batches and the scoring are the trainer's own (Pretrain's validation loader: B x T windows of
// consecutive tokens, in order, no shuffling; Pretrain's objective), so the numbers agree with pretrain's
// "val loss" lines for the same batch_size and max_seq_len. Bits per byte are printed when <data>.meta.json records the shards'
// byte count (see train/pretrain.hpp).
#include <cstdio>
#include <string>

#include <minitrain/minitrain.hpp>
#include <minitrain/util/device.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;

namespace {

void print(const EvalSummary& s) {
    std::printf("loss %.4f | ppl %.2f", s.loss(), s.perplexity());
    if (s.bytes_per_token > 0) std::printf(" | bpb %.4f", s.bits_per_byte());
    std::printf(" | %lld tokens\n", (long long)s.tokens);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        EvalOptions a;
        int threads = 0;
        std::string device = "cpu";
        std::string dtype = "f32";
        Flags flags("eval", "Mean loss, perplexity and bits per byte of a trained model over llm.c token shards.");
        flags.bind("checkpoint", a.checkpoint,
                   "model folder: OUT_DIR/final, OUT_DIR/checkpoints/step_N, or a Hugging Face Llama folder");
        flags.bind("data", a.data, "token shard file or glob");
        flags.bind("batch_size", a.batch_size, "sequences per batch");
        flags.bind("max_seq_len", a.max_seq_len, "tokens per sequence (0: the model's max_position_embeddings)");
        flags.bind("max_batches", a.max_batches, "evaluate at most this many batches (0: all)");
        flags.bind("threads", threads, "CPU threads (0: OpenMP's default)");
        flags.bind_choice("device", device, device_names(), device_help());
        flags.bind_dtype("dtype", dtype, "precision of the matrix products: f32, or bf16 (bf16 weights and inputs, f32 accumulation; fast on CPUs with AVX512-BF16)");
        flags.require("checkpoint");
        flags.require("data");
        flags.parse(argc, argv);

        MT_CHECK(a.batch_size >= 1, "--batch_size must be at least 1, got ", a.batch_size);
        MT_CHECK(a.max_seq_len >= 0, "--max_seq_len must be >= 0, got ", a.max_seq_len);
        if (threads > 0) CPU::set_threads(threads);
        Autocast autocast(cpu_precision(dtype));  // core/precision.hpp: for every product of this run

        const std::string preset = preset_for_folder(a.checkpoint);
        check_device(device, preset, 1, dtype);
        auto announce = [&](const EvalSummary& s) {
            std::printf("eval: %s (preset %s%s) on %s: %lld batches of %d x %d tokens\n", a.checkpoint.c_str(),
                        preset.c_str(), device == "cuda" ? ", on the GPU" : "", a.data.c_str(), (long long)s.batches,
                        s.batch_size, s.seq_len);
            std::fflush(stdout);
        };
        if (device == "cuda")
            print(cuda_programs::evaluate(preset, a, announce));
        else
            with_preset(preset, [&]<class Net>() { print(evaluate_folder<Net>(a, announce)); });
        if (device != "cuda") std::printf("eval: %s\n", cpu::precision_report().c_str());
        return 0;
    } catch (const std::exception& e) {  // minitrain::Error, and the standard library's (filesystem, memory)
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
