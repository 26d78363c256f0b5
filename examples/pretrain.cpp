// pretrain: train a model on llm.c token shards, from scratch, from a model folder, or resuming a run.
//
//   pretrain --preset minimind2-small --train_data "data/train_*.bin" --val_data data/val_000000.bin
//   pretrain --resume --out_dir out ...        continue from the latest checkpoint in out/checkpoints
//   pretrain --init_from out/final ...         start from a model folder; its config.json picks the preset
//   pretrain --init_from pretrain_768.pth --preset minimind3 ...   from MiniMind's torch.save() weights
//   mpirun -np 4 pretrain ...                  data parallel over 4 processes (batch_size is per process)
//
// Every flag sets the TrainConfig field of the same name (train/config.hpp). --preset, --optimizer and
// --schedule pick the Trainer's policies: Trainer<Net, Optimizer<Algo>, Schedule<Kind>, Pretrain>. The
// preset and the optimizer are template arguments (presets x 2 Trainers compiled here); the schedule is
// picked at run time through RuntimeSchedule (util/stage.hpp), which would otherwise multiply that by 4.
// MiniMind's flag names work too: --data_path, --from_weight, --from_resume.
// Try it without data: synthetic_shard --out_dir data, then the command it prints.
#include <cstdio>
#include <string>

#include <minitrain/data/prepare.hpp>
#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

bool root = true;  // only rank 0 prints

template <class... Parts>
void say(Parts&&... parts) {
    if (!root) return;
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    std::printf("pretrain: %s\n", os.str().c_str());
    std::fflush(stdout);
}

/// What the run is, in one line.
template <ModelPolicy Net>
void describe(std::string_view preset, std::string_view optimizer, std::string_view schedule, std::string_view device,
              Comm& comm) {
    say("preset ", preset, " (", Net::layers, " layers x ", Net::hidden, ", ", Net::heads, " heads, ", Net::kv_heads,
        " KV heads, FFN ", Net::ffn, Net::moe ? ", MoE" : "", "), optimizer ", optimizer, ", schedule ", schedule,
        comm.world_size() > 1 ? ", " + std::to_string(comm.world_size()) + " processes (" + comm.backend() + ")" : std::string(),
        device == "cuda" ? ", on the GPU" : "");
}

}  // namespace

int main(int argc, char** argv) {
    // run_main: the communicator for how the program was started (one process, or mpirun / srun), and an
    // error on any rank ends the whole job with that rank's message.
    return run_main([&](Comm& comm) {
        root = comm.is_root();
        TrainConfig cfg;
        std::string preset = "minimind2-small", optimizer = "adamw", schedule = "cosine", device = "cpu";

        Flags flags("pretrain",
                    "Pretrain a decoder-only language model on llm.c token shards (train/val data as files or "
                    "globs). Writes OUT_DIR/metrics.jsonl, resumable checkpoints in OUT_DIR/checkpoints, and the "
                    "final model as a Hugging Face folder OUT_DIR/final.\n\nPresets:\n" +
                        preset_descriptions() + "\n" + knob_table(Stage::pretrain));
        flags.section("Model");
        flags.bind_choice("preset", preset, preset_names(), "the architecture (see Presets above)");
        flags.bind("init_from", cfg.init_from,
                   "start from this model folder (config.json + model.safetensors, or pytorch_model.bin); its config.json "
                   "picks the preset. Or a weights file alone (MiniMind's out/*.pth): --preset picks the architecture");
        flags.bind("from_weight", cfg.init_from, "the same as --init_from (MiniMind's name)");
        flags.bind("dropout", cfg.dropout, "dropout probability");
        flags.bind_dtype("dtype", cfg.dtype, "training precision: f32, bf16 (autocast: bf16 matmuls, f32 master weights; fast on CPUs with AVX512-BF16) or fp16 (loss scaling; CUDA)");
        flags.bind("init_seed", cfg.init_seed, "seed of the random initialization");

        flags.section("Data");
        flags.bind("train_data", cfg.train_data,
                   "token shard file or glob (prepare_data), or MiniMind's pretraining JSONL ({\"text\": ...} per line, "
                   "tokenized into OUT_DIR/data first with --tokenizer)");
        flags.bind("data_path", cfg.train_data, "the same as --train_data (MiniMind's name)");
        flags.bind("tokenizer", cfg.tokenizer, "tokenizer.json: decodes the samples, and is copied into OUT_DIR/final");
        flags.bind("val_data", cfg.val_data, "validation shard file or glob (none: no evaluation)");
        flags.bind("vocab_size", cfg.vocab_size, "vocabulary size (from config.json with --init_from / --resume)");
        flags.bind("batch_size", cfg.batch_size, "sequences per micro-batch");
        flags.bind("max_seq_len", cfg.max_seq_len, "tokens per sequence");
        flags.bind("shuffle", cfg.shuffle, "shuffle the batch order each epoch");
        flags.bind("seed", cfg.seed, "seed of the data order and of dropout");

        flags.section("Length");
        flags.bind("epochs", cfg.epochs, "passes over the training data (when --max_steps is 0)");
        flags.bind("max_steps", cfg.max_steps, "optimizer steps (> 0: wins over --epochs)");

        flags.section("Optimizer");
        flags.bind_choice("optimizer", optimizer, {"adamw", "sgd"}, "the update rule");
        flags.bind("learning_rate", cfg.learning_rate, "peak learning rate");
        flags.bind("weight_decay", cfg.weight_decay, "weight decay (AdamW: decoupled; SGD: L2)");
        flags.bind("beta1", cfg.beta1, "AdamW beta1");
        flags.bind("beta2", cfg.beta2, "AdamW beta2");
        flags.bind("eps", cfg.eps, "AdamW epsilon");
        flags.bind("momentum", cfg.momentum, "SGD momentum");
        flags.bind("grad_clip", cfg.grad_clip, "clip the global gradient norm to this (<= 0: no clipping)");
        flags.bind("accumulation_steps", cfg.accumulation_steps, "micro-batches per optimizer step");
        flags.bind("total_batch_tokens", cfg.total_batch_tokens,
                   "tokens per optimizer step (> 0: sets accumulation_steps = this / (batch_size x max_seq_len))");

        flags.section("Schedule");
        flags.bind_choice("schedule", schedule, RuntimeSchedule::names(),
                          "cosine: MiniMind's, lr -> lr/10, no warmup; warmup_cosine: nanoGPT's, warmup then cosine to "
                          "min_lr; wsd: warmup-stable-decay; constant");
        flags.bind("warmup_steps", cfg.warmup_steps, "linear warmup steps (warmup_cosine, wsd)");
        flags.bind("min_lr", cfg.min_lr, "warmup_cosine's floor (0: learning_rate / 10)");
        flags.bind("warmdown_ratio", cfg.warmdown_ratio, "wsd: fraction of the steps spent decaying");
        flags.bind("final_lr_frac", cfg.final_lr_frac, "wsd: lr multiplier at the last step");

        flags.section("Logging, evaluation, checkpoints");
        flags.bind("log_interval", cfg.log_interval, "print a progress line every this many steps (0: never)");
        flags.bind("eval_interval", cfg.eval_interval, "evaluate every this many steps (0: at the end only)");
        flags.bind("eval_batches", cfg.eval_batches, "validation batches per evaluation (0: all)");
        flags.bind("sample_interval", cfg.sample_interval, "print a generated sample every this many steps (0: never)");
        flags.bind("sample_tokens", cfg.sample_tokens, "tokens per sample");
        flags.bind("save_interval", cfg.save_interval, "save a checkpoint every this many steps (0: at the end only)");
        flags.bind("keep_last", cfg.keep_last, "checkpoints kept (<= 0: all)");
        flags.bind("out_dir", cfg.out_dir, "where metrics, checkpoints and the final model go");
        flags.bind("save_dtype", cfg.save_dtype, "element type of OUT_DIR/final/model.safetensors: f32, bf16 or f16 "
                   "(checkpoints are always f32, so that a resume is exact)");
        flags.bind("resume", cfg.resume, "continue from the latest checkpoint in out_dir (if there is one)");
        flags.bind("from_resume", cfg.resume, "the same as --resume (MiniMind's name)");
        flags.bind("allow_changed_resume", cfg.allow_changed_resume,
                   "resume even when settings, data or thread count differ from the saved run (the result then differs "
                   "from an uninterrupted run)");

        flags.section("Divergence guard");
        flags.bind("max_bad_steps", cfg.max_bad_steps,
                   "stop (exit 1) after this many skipped steps in a row; a step is skipped when its loss or gradient "
                   "norm is NaN/Inf (0: never stop)");
        flags.bind("skip_outlier_sigma", cfg.skip_outlier_sigma,
                   "also skip steps whose loss or gradient norm is this many standard deviations above the last 128 "
                   "steps' (0: off; llm.c uses 3 to 5)");

        flags.section("Run");
        flags.bind("threads", cfg.threads, "CPU threads per process (0: OpenMP's default)");
        flags.bind_choice("device", device, device_names(), device_help());
        flags.bind("zero_stage", cfg.zero_stage,
                   "with several processes (mpirun -np N): 1 shards the AdamW state across them (ZeRO-1), 0 keeps a "
                   "copy on each");
        flags.bind("quiet", cfg.quiet, "print nothing while training");
        flags.parse(argc, argv);
        MT_CHECK(!cfg.train_data.empty(), "--train_data (or --data_path) is required: token shard file or glob (see --help)");
        // MiniMind's pretraining JSONL ({"text": ...} per line) straight from the file: tokenized into
        // OUT_DIR/data first (what prepare_data does; the same shards every time, so --resume still matches).
        if (cfg.train_data.ends_with(".jsonl")) {
            MT_CHECK(!cfg.tokenizer.empty(), "--data_path ", cfg.train_data, " is JSONL text: give --tokenizer "
                     "tokenizer.json to tokenize it (or run prepare_data first and pass the shards)");
            const Tokenizer tok = Tokenizer::load(cfg.tokenizer);
            PrepareOptions po;
            po.inputs = {cfg.train_data};
            po.output_dir = fs::path(cfg.out_dir) / "data";
            // Without --val_data: the first documents, 8 validation batches' worth (enough for any corpus size).
            po.val_fraction = 0.0;
            if (cfg.val_data.empty())
                po.val_tokens = 8 * (std::int64_t(cfg.batch_size) * cfg.max_seq_len * comm.world_size() + 1);
            po.overwrite = true;
            po.progress = root;
            if (root) {
                const PrepareSummary sum = prepare_data(po, tok);
                say("tokenized ", cfg.train_data, " into ", po.output_dir.string(), ": ", sum.train.tokens, " train tokens",
                    sum.val.shards.empty() ? std::string() : ", " + std::to_string(sum.val.tokens) + " val tokens");
            }
            comm.barrier();
            cfg.train_data = (po.output_dir / "train_*.bin").string();
            if (cfg.val_data.empty() && fs::exists(po.output_dir / "val_000000.bin"))
                cfg.val_data = (po.output_dir / "val_*.bin").string();
            if (!flags.was_set("vocab_size")) cfg.vocab_size = tok.vocab_size();
        }

        // The model folder a run continues from decides the architecture and the vocabulary: the latest
        // checkpoint when resuming, else --init_from.
        fs::path source;
        const char* source_flag = nullptr;
        if (cfg.resume)
            if (auto latest = latest_checkpoint(cfg.out_dir)) source = *latest, source_flag = "--resume";
        if (source.empty() && !cfg.init_from.empty()) source = cfg.init_from, source_flag = "--init_from";
        if (!source.empty() && is_weights_file(source)) {  // MiniMind's out/*.pth: the preset says what it is
            MT_CHECK(flags.was_set("preset"), source_flag, " ", source.string(),
                     ": a weights file without config.json; give --preset (its architecture, e.g. minimind2-small or "
                     "minimind3)");
            const int vocab = weights_file_vocab(source);
            MT_CHECK(!flags.was_set("vocab_size") || cfg.vocab_size == vocab, "--vocab_size ", cfg.vocab_size,
                     " disagrees with ", source.string(), "'s model.embed_tokens.weight (", vocab, " rows)");
            say(source_flag, ": ", source.string(), ": preset ", preset, " (--preset), vocab_size ", vocab,
                " (model.embed_tokens.weight)");
            cfg.vocab_size = vocab;
        } else if (!source.empty()) {
            const std::string from = preset_for_folder(source);
            const ModelConfig mc = load_model_config(source);
            if (flags.was_set("preset") && from != preset)
                say(source_flag, ": ", (source / "config.json").string(), " describes preset ", from, "; overriding --preset ",
                    preset);
            else if (from != preset)
                say(source_flag, ": preset ", from, " (from ", (source / "config.json").string(), ")");
            MT_CHECK(!flags.was_set("vocab_size") || cfg.vocab_size == mc.vocab_size, "--vocab_size ", cfg.vocab_size,
                     " disagrees with vocab_size ", mc.vocab_size, " in ", (source / "config.json").string(),
                     " (the embedding's shape depends on it): leave --vocab_size out");
            preset = from;
            cfg.vocab_size = mc.vocab_size;
        }
        if (cfg.warmup_steps > 0 && (schedule == Cosine::name || schedule == Constant::name))
            say("note: --schedule ", schedule, " has no warmup; --warmup_steps ", cfg.warmup_steps, " is ignored");

        check_device(device, preset, comm.world_size(), cfg.dtype);
        with_preset(preset, [&]<class Net>() { describe<Net>(preset, optimizer, schedule, device, comm); });
        if (device == "cuda")
            cuda_programs::train("pretrain_" + optimizer, preset, cfg, schedule, comm);
        else
            with_preset(preset, [&]<class Net>() {
                if (optimizer == "sgd")
                    train_stage<Net, Pretrain, CPU, SGD>(cfg, schedule, comm);
                else
                    train_stage<Net, Pretrain, CPU, AdamW>(cfg, schedule, comm);
            });
    });
}
