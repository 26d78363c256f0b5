// dpo: direct preference optimization of a fine-tuned model on preference pairs (MiniMind's train_dpo.py).
//
//   dpo --data_path dpo.jsonl --from_weight out/sft/final --out_dir out/dpo
//
// --data_path is MiniMind's DPO JSONL, unchanged: one {"chosen": [turns...], "rejected": [turns...]} per
// line, both the same conversation up to the last assistant reply. The frozen reference is --from_weight
// itself; --dpo_beta (0.15) is how far the policy may move from it. The learning rate is tiny (MiniMind:
// at most 5e-8 after an SFT at 5e-6): DPO moves a model that already answers, it does not teach it. The
// progress line adds reward_margin (chosen minus rejected, should rise) and reward_accuracy.
#include <cstdio>
#include <string>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/train/dpo.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;

int main(int argc, char** argv) {
    return run_main([&](Comm& comm) {
        auto say = [&](const std::string& s) {
            if (comm.is_root()) std::printf("dpo: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/dpo";
        StageFlags sf(Stage::dpo, cfg);
        Flags flags("dpo", "Direct preference optimization of a model folder on MiniMind's DPO JSONL (chosen / rejected "
                           "conversations), against a frozen copy of the starting model. Writes what sft writes.\n\n" +
                               knob_table(Stage::dpo));
        sf.bind(flags, cfg, "DPO JSONL: {\"chosen\": [...], \"rejected\": [...]} per line");
        flags.section("DPO");
        flags.bind("dpo_beta", cfg.dpo_beta, "beta: larger keeps the policy closer to the reference");
        flags.parse(argc, argv);
        const std::string preset = sf.resolve(flags, cfg, say);
        check_device(sf.device, preset, comm.world_size(), cfg.dtype);
        if (sf.device == "cuda")
            cuda_programs::train("dpo", preset, cfg, sf.schedule, comm);
        else
            with_preset(preset, [&]<class Net>() { train_stage<Net, DPO>(cfg, sf.schedule, comm); });
    });
}
