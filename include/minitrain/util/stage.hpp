// minitrain/util/stage.hpp
// What the stage programs (pretrain, sft, lora, dpo) share: MiniMind's flag names with each stage's usual
// defaults, the --help table of knobs, the model folder a run starts from, and the run-time schedule.
//
//   Flags flags("sft", ...);
//   StageFlags sf(Stage::sft, cfg);               // cfg takes the stage's defaults
//   sf.bind(flags, cfg);                          // --data_path/--train_data, --from_weight/--init_from, ...
//   flags.parse(argc, argv);
//   const std::string preset = sf.resolve(flags, cfg, say);   // the preset of the folder it starts from
//
// Flag names follow MiniMind's trainers (train_pretrain.py, train_full_sft.py, train_lora.py,
// train_dpo.py): --data_path, --from_weight, --epochs, --batch_size, --learning_rate,
// --accumulation_steps, --grad_clip, --max_seq_len, --log_interval, --save_interval, --dtype, --out_dir,
// --from_resume; minitrain's own names (--train_data, --init_from, --resume) are accepted too.
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../io/checkpoint.hpp"
#include "../schedule/schedule.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "../train/config.hpp"
#include "../train/trainer.hpp"
#include "device.hpp"
#include "flags.hpp"
#include "presets.hpp"

namespace minitrain {

/// A schedule kind that forwards to the kind chosen on the command line. A schedule is a pure function
/// of (options, step), so a function pointer set once before the Trainer exists is all the state needed;
/// one Trainer type then serves every schedule (instead of one per kind).
struct RuntimeSchedule {
    static constexpr std::string_view name = "runtime";
    static inline double (*lr_of)(const ScheduleOptions&, std::int64_t) = nullptr;
    static inline void (*validate_of)(const ScheduleOptions&) = nullptr;

    static void validate(const ScheduleOptions& o) { validate_of(o); }
    static double lr(const ScheduleOptions& o, std::int64_t step) { return lr_of(o, step); }

    /// Selects the kind whose name is `kind` (one of names()).
    static void choose(std::string_view kind) {
        auto pick = [&]<class K>() {
            if (K::name != kind) return false;
            lr_of = &K::lr;
            validate_of = &K::validate;
            return true;
        };
        const bool found = pick.template operator()<Cosine>() || pick.template operator()<WarmupCosine>() ||
                           pick.template operator()<WSD>() || pick.template operator()<Constant>();
        MT_CHECK(found, "--schedule: unknown schedule '", kind, "'");
    }
    static std::vector<std::string> names() {
        return {std::string(Cosine::name), std::string(WarmupCosine::name), std::string(WSD::name),
                std::string(Constant::name)};
    }
};

enum class Stage { pretrain, sft, lora, dpo };

inline const char* stage_name(Stage s) {
    switch (s) {
        case Stage::pretrain: return "pretrain";
        case Stage::sft: return "sft";
        case Stage::lora: return "lora";
        default: return "dpo";
    }
}

/// The usual value of each knob per stage (MiniMind's trainers and notes), which the programs take as
/// their defaults. Columns: pretrain, sft, lora, dpo.
struct StageDefaults {
    double learning_rate;
    int epochs, batch_size, max_seq_len, accumulation_steps, save_interval;
};
inline StageDefaults stage_defaults(Stage s) {
    switch (s) {
        case Stage::pretrain: return {5e-4, 1, 32, 512, 1, 1000};
        case Stage::sft: return {1e-5, 2, 16, 512, 1, 500};
        case Stage::lora: return {1e-4, 10, 32, 512, 1, 500};
        default: return {5e-8, 1, 4, 1024, 1, 100};
    }
}

/// The --help block: each knob, what it does, its usual value per stage (this program's column marked
/// with *), and what to change when loss does not fall, when it diverges, when memory runs out.
inline std::string knob_table(Stage self) {
    const Stage all[] = {Stage::pretrain, Stage::sft, Stage::lora, Stage::dpo};
    auto row = [&](const char* knob, const char* what, const std::string (&v)[4]) {
        char buf[256];
        std::string line;
        std::snprintf(buf, sizeof buf, "  %-20s", knob);
        line += buf;
        for (int i = 0; i < 4; ++i) {
            std::snprintf(buf, sizeof buf, " %-10s", (v[i] + (all[i] == self && v[i] != "-" ? "*" : "")).c_str());
            line += buf;
        }
        return line + " " + what + "\n";
    };
    auto num = [](double x) { return detail::flag_real_text(x); };
    std::string v[4];
    std::string s = "Knobs: the usual value per stage (* = this program's default), MiniMind's conventions:\n";
    char head[256];
    std::snprintf(head, sizeof head, "  %-20s %-10s %-10s %-10s %-10s %s\n", "flag", "pretrain", "sft", "lora", "dpo",
                  "what it does");
    s += head;
    for (int i = 0; i < 4; ++i) v[i] = num(stage_defaults(all[i]).learning_rate);
    s += row("--learning_rate", "peak step size; the first knob to turn", v);
    for (int i = 0; i < 4; ++i) v[i] = std::to_string(stage_defaults(all[i]).epochs);
    s += row("--epochs", "passes over the data (--max_steps N overrides)", v);
    for (int i = 0; i < 4; ++i) v[i] = std::to_string(stage_defaults(all[i]).batch_size);
    s += row("--batch_size", "sequences (DPO: pairs) per micro-batch", v);
    for (int i = 0; i < 4; ++i) v[i] = std::to_string(stage_defaults(all[i]).max_seq_len);
    s += row("--max_seq_len", "tokens per sequence; longer examples are cut", v);
    for (int i = 0; i < 4; ++i) v[i] = std::to_string(stage_defaults(all[i]).accumulation_steps);
    s += row("--accumulation_steps", "micro-batches per optimizer step", v);
    for (int i = 0; i < 4; ++i) v[i] = "1.0";
    s += row("--grad_clip", "clip the global gradient norm", v);
    for (int i = 0; i < 4; ++i) v[i] = "-";
    v[2] = "8";
    s += row("--lora_rank", "adapter rank (8 or 16 compiled)", v);
    v[2] = "-";
    v[3] = "0.15";
    s += row("--dpo_beta", "how far the policy may move from the reference", v);
    s += "\nWhen the loss does not fall: raise --learning_rate 3x; check that the data is what you think (the "
         "sample lines, prepare_data's summary); train longer (--epochs, --max_steps). SFT/LoRA/DPO start from "
         "--from_weight: a model that never learned the language will not learn to chat.\n"
         "When it diverges (loss jumps, norm grows, \"SKIPPED: not finite\", TrainingDiverged): lower "
         "--learning_rate 3x, keep --grad_clip 1.0, warm up (--schedule warmup_cosine --warmup_steps 100), and "
         "resume from the last good checkpoint (--resume 1).\n"
         "When memory runs out: halve --batch_size and double --accumulation_steps (the same tokens per step), or "
         "lower --max_seq_len.\n"
         "Progress line: loss (train, mean of the step), lr, norm (global gradient norm before clipping), tok/s, "
         "ETA; eval lines: val loss, ppl = exp(val loss), bpb = bits per UTF-8 byte (comparable across "
         "tokenizers); DPO adds reward_margin (chosen minus rejected reward, should rise) and reward_accuracy.\n";
    return s;
}

/// Binds the flags every stage has, with the stage's defaults, and works out the run's model folder.
class StageFlags {
public:
    /// Sets cfg's fields to the stage's usual values (before binding, so that --help shows them).
    StageFlags(Stage stage, TrainConfig& cfg) : stage_(stage) {
        const StageDefaults d = stage_defaults(stage);
        cfg.learning_rate = d.learning_rate;
        cfg.epochs = d.epochs;
        cfg.batch_size = d.batch_size;
        cfg.max_seq_len = d.max_seq_len;
        cfg.accumulation_steps = d.accumulation_steps;
        cfg.save_interval = d.save_interval;
        if (stage != Stage::pretrain) cfg.weight_decay = 0.0;  // fine-tuning: MiniMind's AdamW default is 0.01; adapters none
    }

    std::string schedule = "cosine";
    std::string device = "cpu";  // --device (util/device.hpp)
    std::string preset = "minimind2-small";  // pretrain from scratch only: fine-tuning reads it from --from_weight

    /// Every common flag. `data_help` says what --data_path holds for this stage.
    void bind(Flags& f, TrainConfig& cfg, const std::string& data_help) {
        f.section("Data");
        f.bind("data_path", cfg.train_data, data_help);
        f.bind("train_data", cfg.train_data, "the same as --data_path");
        f.bind("val_data", cfg.val_data, "validation data of the same kind (none: no evaluation, unless --val_fraction)");
        if (stage_ != Stage::pretrain) {
            f.bind("val_fraction", cfg.val_fraction, "without --val_data: hold out this fraction of the examples");
            f.bind("skip_bad_records", cfg.skip_bad_records, "skip (and count) malformed JSONL records instead of stopping");
        }
        f.bind("tokenizer", cfg.tokenizer,
               stage_ == Stage::pretrain ? "tokenizer.json: decodes the samples, and is copied into OUT_DIR/final"
                                         : "tokenizer.json (default: the one inside --from_weight)");
        f.bind("batch_size", cfg.batch_size, stage_ == Stage::dpo ? "preference pairs per micro-batch" : "sequences per micro-batch");
        f.bind("max_seq_len", cfg.max_seq_len, "tokens per sequence (longer examples are cut)");
        f.bind("shuffle", cfg.shuffle, "shuffle the batch order each epoch");
        f.bind("seed", cfg.seed, "seed of the data order and of dropout");

        f.section("Model");
        f.bind("from_weight", cfg.init_from,
               stage_ == Stage::pretrain ? "start from this model folder instead of from scratch (its config.json picks the preset), "
                                           "or from a weights file alone (MiniMind's out/*.pth; --preset picks the architecture)"
               : stage_ == Stage::lora   ? "the base model folder the adapters are trained on (required)"
                                         : "the model folder to fine-tune (required; its config.json picks the preset)");
        f.bind("init_from", cfg.init_from, "the same as --from_weight");
        if (stage_ == Stage::pretrain) {
            f.bind_choice("preset", preset, preset_names(), "the architecture when starting from scratch (see Presets above)");
            f.bind("vocab_size", cfg.vocab_size, "vocabulary size (from config.json with --from_weight / --resume)");
            f.bind("init_seed", cfg.init_seed, "seed of the random initialization");
        }
        f.bind("dropout", cfg.dropout, "dropout probability");
        f.bind_dtype("dtype", cfg.dtype, "training precision: f32, bf16 (autocast: bf16 matmuls, f32 master weights; fast on CPUs with AVX512-BF16) or fp16 (loss scaling; CUDA)");

        f.section("Length");
        f.bind("epochs", cfg.epochs, "passes over the training data (when --max_steps is 0)");
        f.bind("max_steps", cfg.max_steps, "optimizer steps (> 0: wins over --epochs)");

        f.section("Optimizer (AdamW) and schedule");
        f.bind("learning_rate", cfg.learning_rate, "peak learning rate");
        f.bind("weight_decay", cfg.weight_decay, "decoupled weight decay");
        f.bind("beta1", cfg.beta1, "AdamW beta1");
        f.bind("beta2", cfg.beta2, "AdamW beta2");
        f.bind("grad_clip", cfg.grad_clip, "clip the global gradient norm to this (<= 0: no clipping)");
        f.bind("accumulation_steps", cfg.accumulation_steps, "micro-batches per optimizer step");
        f.bind_choice("schedule", schedule, RuntimeSchedule::names(),
                      "cosine: MiniMind's, lr -> lr/10, no warmup; warmup_cosine: warmup then cosine to min_lr; "
                      "wsd: warmup-stable-decay; constant");
        f.bind("warmup_steps", cfg.warmup_steps, "linear warmup steps (warmup_cosine, wsd)");
        f.bind("min_lr", cfg.min_lr, "warmup_cosine's floor (0: learning_rate / 10)");

        f.section("Logging, evaluation, checkpoints");
        f.bind("log_interval", cfg.log_interval, "print a progress line every this many steps (0: never)");
        f.bind("eval_interval", cfg.eval_interval, "evaluate every this many steps (0: at the end only)");
        f.bind("eval_batches", cfg.eval_batches, "validation batches per evaluation (0: all)");
        f.bind("sample_interval", cfg.sample_interval, "print a generated sample every this many steps (0: never)");
        f.bind("sample_tokens", cfg.sample_tokens, "tokens per sample");
        f.bind("save_interval", cfg.save_interval, "save a checkpoint every this many steps (0: at the end only)");
        f.bind("keep_last", cfg.keep_last, "checkpoints kept (<= 0: all)");
        f.bind("out_dir", cfg.out_dir, "where metrics, TensorBoard events, loss.svg, report.md, checkpoints and final/ go");
        f.bind("save_dtype", cfg.save_dtype, "element type of OUT_DIR/final/model.safetensors: f32, bf16 or f16 "
               "(checkpoints are always f32, so that a resume is exact)");
        f.bind("resume", cfg.resume, "continue from the latest checkpoint in out_dir (if there is one)");
        f.bind("from_resume", cfg.resume, "the same as --resume (MiniMind's name)");
        f.bind("allow_changed_resume", cfg.allow_changed_resume,
               "resume even when settings, data or thread count differ from the saved run");
        f.bind("max_bad_steps", cfg.max_bad_steps, "stop after this many skipped (NaN/Inf) steps in a row (0: never)");
        f.bind("threads", cfg.threads, "CPU threads (0: OpenMP's default)");
        f.bind_choice("device", device, device_names(), device_help());
        f.bind("quiet", cfg.quiet, "print nothing while training");
    }

    /// After parsing: checks the flags, finds the model folder the run starts from (the latest checkpoint when
    /// resuming, else --from_weight), takes its preset and vocabulary, and defaults --tokenizer to the
    /// tokenizer.json inside --from_weight. Returns the preset. `say` prints a note.
    std::string resolve(const Flags& flags, TrainConfig& cfg, const std::function<void(const std::string&)>& say) {
        namespace fs = std::filesystem;
        MT_CHECK(!cfg.train_data.empty(), "--data_path is required: ", stage_ == Stage::pretrain ? "token shards (prepare_data)"
                                                                                               : "a JSONL file", " (see --help)");
        fs::path source;
        std::string source_flag;
        if (cfg.resume)
            if (auto latest = latest_checkpoint(cfg.out_dir)) source = *latest, source_flag = "--resume";
        if (source.empty() && !cfg.init_from.empty()) source = cfg.init_from, source_flag = "--from_weight";
        MT_CHECK(stage_ == Stage::pretrain || !source.empty(), "--from_weight is required: the model folder to ",
                 stage_ == Stage::lora ? "train the adapters on" : "fine-tune", " (e.g. out/pretrain/final; see --help)");
        if (cfg.tokenizer.empty() && !cfg.init_from.empty() && fs::exists(fs::path(cfg.init_from) / "tokenizer.json"))
            cfg.tokenizer = (fs::path(cfg.init_from) / "tokenizer.json").string();
        MT_CHECK(stage_ == Stage::pretrain || !cfg.tokenizer.empty(), "--tokenizer: ",
                 (fs::path(cfg.init_from) / "tokenizer.json").string(),
                 " does not exist; give the tokenizer.json the model was trained with (--tokenizer FILE)");
        if (source.empty()) return preset;
        if (is_weights_file(source)) {  // MiniMind's out/*.pth: no config.json, the preset says what it is
            MT_CHECK(stage_ == Stage::pretrain && flags.was_set("preset"), source_flag, " ", source.string(),
                     ": a weights file without config.json; ",
                     stage_ == Stage::pretrain ? "give --preset (its architecture, e.g. minimind2-small or minimind3)"
                                               : "start from it with pretrain --init_from FILE --preset P, then fine-tune "
                                                 "the model folder that run writes");
            const int vocab = weights_file_vocab(source);
            MT_CHECK(!flags.was_set("vocab_size") || cfg.vocab_size == vocab, "--vocab_size ", cfg.vocab_size,
                     " disagrees with ", source.string(), "'s model.embed_tokens.weight (", vocab, " rows)");
            say(source_flag + ": " + source.string() + ": preset " + preset + " (--preset), vocab_size " +
                std::to_string(vocab) + " (model.embed_tokens.weight)");
            cfg.vocab_size = vocab;
            return preset;
        }
        const std::string from = preset_for_folder(source);
        const ModelConfig mc = load_model_config(source);
        if (stage_ == Stage::pretrain && flags.was_set("preset") && from != preset)
            say(source_flag + ": " + (source / "config.json").string() + " describes preset " + from + "; overriding --preset " + preset);
        else
            say(source_flag + ": preset " + from + " (from " + (source / "config.json").string() + ")");
        MT_CHECK(stage_ != Stage::pretrain || !flags.was_set("vocab_size") || cfg.vocab_size == mc.vocab_size,
                 "--vocab_size ", cfg.vocab_size, " disagrees with vocab_size ", mc.vocab_size, " in ",
                 (source / "config.json").string(), " (the embedding's shape depends on it): leave --vocab_size out");
        cfg.vocab_size = mc.vocab_size;
        if (cfg.warmup_steps > 0 && (schedule == Cosine::name || schedule == Constant::name))
            say("note: --schedule " + schedule + " has no warmup; --warmup_steps " + std::to_string(cfg.warmup_steps) +
                " is ignored");
        return from;
    }

private:
    Stage stage_;
};

/// Copies the run's tokenizer into OUT_DIR/final, so that the final folder is all the next stage (and
/// chat, generate) needs.
inline void copy_tokenizer_to_final(const TrainConfig& cfg) {
    namespace fs = std::filesystem;
    if (cfg.tokenizer.empty()) return;
    const fs::path to = fs::path(cfg.out_dir) / "final" / "tokenizer.json";
    std::error_code ec;
    if (fs::exists(to.parent_path(), ec) && !fs::equivalent(cfg.tokenizer, to, ec))
        fs::copy_file(cfg.tokenizer, to, fs::copy_options::overwrite_existing);
}

/// The body of every stage program once the preset is known: Trainer<Net, Algo, RuntimeSchedule, Task,
/// Backend> on `comm`, samples decoded with the run's tokenizer, the tokenizer copied into OUT_DIR/final.
/// `before_fit` may adjust the Trainer (e.g. a sample prompt). The programs call it with the CPU backend;
/// examples/device/cuda_programs.cu with CUDA (--device cuda, util/device.hpp).
template <ModelPolicy Net, class Task, class Backend = CPU, class Algo = AdamW, class Before = std::nullptr_t>
void train_stage(const TrainConfig& cfg, const std::string& schedule, Comm& comm, Before before_fit = nullptr) {
    RuntimeSchedule::choose(schedule);
    Trainer<Net, Optimizer<Algo>, Schedule<RuntimeSchedule>, Task, Backend> trainer(cfg, comm);
    std::optional<Tokenizer> tok;
    if (!cfg.tokenizer.empty()) {
        tok.emplace(Tokenizer::load(cfg.tokenizer));
        trainer.decode = [&](std::span<const std::int32_t> ids) { return tok->decode(ids); };
    }
    if constexpr (!std::is_same_v<Before, std::nullptr_t>) before_fit(trainer);
    trainer.fit();
    if (comm.is_root()) copy_tokenizer_to_final(cfg);
}

}  // namespace minitrain
