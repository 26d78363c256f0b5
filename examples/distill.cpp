// distill: knowledge distillation of a student from a frozen teacher of another size (MiniMind's
// train_distillation.py): loss = alpha x CE(student, data) + (1 - alpha) x T^2 x KL(teacher || student) at
// temperature T, MiniMind's alpha 0.5, T 1.5.
//
//   distill --teacher out/pretrain/final --preset tiny --data_path data/shards/train_*.bin --out_dir out/distill
//   distill --teacher out/sft/final --from_weight out/small_sft/final --data_path sft.jsonl --alpha 0.3
//
// --teacher is a minitrain model folder (config.json picks its preset, any size); the student starts from
// --from_weight (a model folder) or from scratch (--preset). Both must use one tokenizer: the vocabulary
// sizes must agree, and the teacher's tokenizer.json must describe the same vocabulary as the student's
// (--tokenizer, else the one inside --from_weight; from scratch without --tokenizer the teacher's is used).
// --data_path: token shards (prepare_data; the loss on every token) or, for a name ending in .jsonl, SFT
// conversations (the loss on the assistant replies only). The progress line adds ce (the hard-label loss)
// and kl (the soft part, before T^2); the eval line is the student's plain cross-entropy, comparable with a
// student trained on the hard labels alone.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/train/distill.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

/// The parts of a tokenizer.json that decide the token ids (the BPE model and the added tokens).
nlohmann::json vocabulary_of(const fs::path& file) {
    std::ifstream in(file);
    MT_CHECK(in, file.string(), ": cannot open the tokenizer");
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    MT_CHECK(!j.is_discarded() && j.is_object(), file.string(), ": not a tokenizer.json (JSON object expected)");
    return nlohmann::json{{"model", j.value("model", nlohmann::json())},
                          {"added_tokens", j.value("added_tokens", nlohmann::json())}};
}

/// Refuses a teacher whose vocabulary is not the student's, naming both files.
void check_same_tokenizer(const TrainConfig& cfg, const std::string& student_config, int student_vocab) {
    const fs::path teacher_config = fs::path(cfg.teacher) / "config.json";
    const ModelConfig tm = load_model_config(cfg.teacher);
    MT_CHECK(tm.vocab_size == student_vocab, "--teacher: ", teacher_config.string(), " has vocab_size ", tm.vocab_size,
             " but the student's is ", student_vocab, " (", student_config,
             "): distillation compares the two models' next-token distributions, so both need one tokenizer");
    const fs::path teacher_tok = fs::path(cfg.teacher) / "tokenizer.json";
    if (cfg.tokenizer.empty() || !fs::exists(teacher_tok)) return;  // token ids only: the vocabulary size is all there is
    MT_CHECK(vocabulary_of(teacher_tok) == vocabulary_of(cfg.tokenizer), "--teacher: ", teacher_tok.string(),
             " and the student's tokenizer ", cfg.tokenizer,
             " are different tokenizers (their vocabularies or merges differ): distillation needs one tokenizer "
             "for both models");
}

}  // namespace

int main(int argc, char** argv) {
    return run_main([&](Comm& comm) {
        auto say = [&](const std::string& s) {
            if (comm.is_root()) std::printf("distill: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/distill";
        // Stage::pretrain's flags: a student from scratch (--preset) or from a folder (--from_weight).
        StageFlags sf(Stage::pretrain, cfg);
        std::string data_kind = "auto";
        Flags flags("distill", "Knowledge distillation: a student model (from scratch or --from_weight) trained on "
                               "a frozen teacher's softened next-token distributions mixed with the hard labels, "
                               "on token shards or SFT conversations. Writes what pretrain / sft write; the val "
                               "loss is the student's plain cross-entropy.\n\n" + knob_table(Stage::pretrain));
        sf.bind(flags, cfg, "token shards (prepare_data) or SFT JSONL conversations (a name ending in .jsonl)");
        flags.section("Distillation");
        flags.bind("teacher", cfg.teacher, "the teacher's model folder (required; any preset, the same tokenizer)");
        flags.bind("alpha", cfg.distill_alpha, "weight of the hard-label cross-entropy; 1 - alpha weighs the teacher's soft targets");
        flags.bind("temperature", cfg.distill_temperature, "softens both distributions of the KL term (its gradient is scaled by T^2)");
        flags.bind("val_fraction", cfg.val_fraction, "SFT data without --val_data: hold out this fraction of the examples");
        flags.bind("skip_bad_records", cfg.skip_bad_records, "SFT data: skip (and count) malformed JSONL records instead of stopping");
        flags.bind_choice("data", data_kind, {"auto", "shards", "sft"},
                          "what --data_path holds: auto (.jsonl: sft, else shards), token shards, or SFT conversations");
        flags.parse(argc, argv);
        MT_CHECK(!cfg.teacher.empty(), "--teacher is required: the model folder of the frozen teacher (see --help)");
        MT_CHECK(!cfg.train_data.empty(), "--data_path is required: token shards or SFT JSONL (see --help)");
        const bool sft = data_kind == "sft" || (data_kind == "auto" && cfg.train_data.ends_with(".jsonl"));
        // The student's vocabulary: from its folder, or from the teacher when it starts from scratch.
        const bool from_folder = !cfg.init_from.empty() || (cfg.resume && latest_checkpoint(cfg.out_dir));
        const ModelConfig tm = load_model_config(cfg.teacher);
        std::string student_config = "--vocab_size";
        if (!from_folder && !flags.was_set("vocab_size")) cfg.vocab_size = tm.vocab_size, student_config = "the teacher's";
        if (cfg.tokenizer.empty() && cfg.init_from.empty() && fs::exists(fs::path(cfg.teacher) / "tokenizer.json")) {
            cfg.tokenizer = (fs::path(cfg.teacher) / "tokenizer.json").string();
            say("--tokenizer: the teacher's, " + cfg.tokenizer);
        }
        const std::string preset = sf.resolve(flags, cfg, say);  // also: --tokenizer from --from_weight
        if (from_folder)
            student_config = ((cfg.init_from.empty() ? fs::path(cfg.out_dir) / "checkpoints" : fs::path(cfg.init_from)) /
                              "config.json").string();
        MT_CHECK(!sft || !cfg.tokenizer.empty(), "--data_path ", cfg.train_data, ": SFT conversations need a tokenizer: "
                 "give --tokenizer, or a --teacher / --from_weight folder that has a tokenizer.json");
        check_same_tokenizer(cfg, student_config, cfg.vocab_size);
        const std::string teacher_preset = preset_for_folder(cfg.teacher);
        say("teacher " + cfg.teacher + " (preset " + teacher_preset + "), student preset " + preset + ", alpha " +
            detail::flag_real_text(cfg.distill_alpha) + ", T " + detail::flag_real_text(cfg.distill_temperature) + ", on " +
            (sft ? "SFT conversations (assistant tokens)" : "token shards"));
        // The distillation loss and the teacher run on the CPU only so far.
        MT_CHECK(sf.device == "cpu", "--device ", sf.device, ": distill runs on the CPU only so far (the distillation "
                 "loss has no CUDA kernel yet); use --device cpu");
        with_preset(teacher_preset, [&]<class TNet>() { AnyTeacher::use<TNet>(); });
        with_preset(preset, [&]<class Net>() {
            if (sft)
                train_stage<Net, Distill<AnyTeacher, SFT>>(cfg, sf.schedule, comm);
            else
                train_stage<Net, Distill<AnyTeacher, Pretrain>>(cfg, sf.schedule, comm);
        });
    });
}
