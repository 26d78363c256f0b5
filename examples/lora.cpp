// lora: train LoRA adapters on a frozen base model (MiniMind's train_lora.py), saved as a PEFT folder.
//
//   lora --data_path lora_identity.jsonl --from_weight out/sft/final --out_dir out/lora
//   chat --checkpoint out/sft/final --adapter out/lora/final         use it
//   merge_lora --base out/sft/final --adapter out/lora/final --output out/merged
//
// --data_path is SFT JSONL ({"conversations": [...]}), as for sft. Only the adapters train: rank
// --lora_rank (8 or 16) matrices on the --lora_targets projections, scaled by lora_alpha / rank.
// OUT_DIR/final is a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) with the
// tokenizer. The rank, alpha and targets are template arguments (LoRA<Rank, Alpha, Targets>): this
// program is compiled with ranks 8 and 16, alpha = 2 x rank, and two target sets; a program of your own
// can use any (see README, "LoRA").
#include <cstdio>
#include <string>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;

int main(int argc, char** argv) {
    return run_main([&](Comm& comm) {
        auto say = [&](const std::string& s) {
            if (comm.is_root()) std::printf("lora: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/lora";
        StageFlags sf(Stage::lora, cfg);
        int rank = 8, alpha = 0;
        std::string targets = "attention";
        Flags flags("lora", "Train LoRA adapters on a frozen base model folder, on conversations in MiniMind's SFT "
                            "JSONL. Writes what sft writes; OUT_DIR/final is a PEFT adapter folder (use it with chat "
                            "--adapter, or merge_lora).\n\n" + knob_table(Stage::lora));
        sf.bind(flags, cfg, "SFT JSONL: {\"conversations\": [...]} per line");
        flags.section("LoRA");
        flags.bind("lora_rank", rank, "adapter rank r: 8 or 16");
        flags.bind("lora_alpha", alpha, "scaling = lora_alpha / r; 2 x r is compiled (0: 2 x r)");
        flags.bind_choice("lora_targets", targets, {"attention", "attention_mlp"},
                          "the adapted projections: q/k/v/o, or those and gate/up/down");
        flags.bind("lora_dropout", cfg.lora_dropout, "dropout on the adapters' input");
        flags.parse(argc, argv);
        MT_CHECK(rank == 8 || rank == 16, "--lora_rank ", rank, ": this program is compiled with ranks 8 and 16 "
                 "(LoRA<Rank> is a template argument; another rank needs a program of your own, see README)");
        if (alpha == 0) alpha = 2 * rank;
        MT_CHECK(alpha == 2 * rank, "--lora_alpha ", alpha, ": this program is compiled with lora_alpha = 2 x rank = ",
                 2 * rank, " (a different scaling is equivalent to a different --learning_rate)");
        const std::string preset = sf.resolve(flags, cfg, say);
        say("rank " + std::to_string(rank) + ", alpha " + std::to_string(alpha) + ", targets " + targets);
        check_device(sf.device, preset, comm.world_size(), cfg.dtype);
        if (sf.device == "cuda")
            return cuda_programs::train("lora_" + std::to_string(rank) + "_" + targets, preset, cfg, sf.schedule, comm);
        with_preset(preset, [&]<class Net>() {
            if (rank == 8 && targets == "attention") train_stage<Net, LoRA<8, 16, LoRAAttention>>(cfg, sf.schedule, comm);
            else if (rank == 8) train_stage<Net, LoRA<8, 16, LoRAAttentionMLP>>(cfg, sf.schedule, comm);
            else if (targets == "attention") train_stage<Net, LoRA<16, 32, LoRAAttention>>(cfg, sf.schedule, comm);
            else train_stage<Net, LoRA<16, 32, LoRAAttentionMLP>>(cfg, sf.schedule, comm);
        });
    });
}
