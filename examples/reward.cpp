// reward: train a reward model on preference pairs (the Bradley-Terry loss), starting from a fine-tuned
// model folder; the model that scores replies for RL (grpo --reward_model).
//
//   reward --data_path dpo.jsonl --from_weight out/sft/final --out_dir out/reward
//
// --data_path is MiniMind's DPO JSONL, unchanged: one {"chosen": [turns...], "rejected": [turns...]} per
// line. The model is --from_weight's transformer with a scalar head (score.weight, a Linear C -> 1 on the
// final-norm hidden state, read at the last reply token, or with --reward_pooling mean the mean over the
// reply's tokens); the loss is -log sigmoid(r(chosen) -
// r(rejected)), averaged over pairs. Held-out pairs: --val_data, or --val_fraction (default 0.1) of the
// data. The progress line adds reward_accuracy and reward_margin; at the end the program loads
// OUT_DIR/final back and prints its held-out pair accuracy. OUT_DIR/final is the trunk's model folder plus
// reward_head.safetensors (the format: include/minitrain/train/reward.hpp).
#include <cstdio>
#include <filesystem>
#include <string>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/train/reward.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
    return run_main([&](Comm& comm) {
        auto say = [&](const std::string& s) {
            if (comm.is_root()) std::printf("reward: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/reward";
        StageFlags sf(Stage::dpo, cfg);  // DPO's data and knobs (pairs per batch), but:
        cfg.learning_rate = 1e-5;        // the head starts random and the trunk must move: SFT's rate, not DPO's 5e-8
        cfg.max_seq_len = 512;
        cfg.val_fraction = 0.1;
        Flags flags("reward", "Train a reward model (a scalar head on a model folder's transformer, Bradley-Terry loss) on "
                              "MiniMind's DPO JSONL (chosen / rejected conversations). Writes what sft writes; "
                              "OUT_DIR/final also holds reward_head.safetensors. The knob table is dpo's, except "
                              "--learning_rate 1e-5, --max_seq_len 512 and --val_fraction 0.1.\n\n" +
                                  knob_table(Stage::dpo));
        sf.bind(flags, cfg, "DPO JSONL: {\"chosen\": [...], \"rejected\": [...]} per line");
        flags.section("Reward model");
        flags.bind("init_seed", cfg.init_seed, "seed of the head's initialization (normal(0, 0.02))");
        flags.bind_choice("reward_pooling", cfg.reward_pooling, {"last", "mean"}, "where the head reads each sequence: "
                          "its last reply token (<|im_end|>), or the mean over the reply's tokens");
        flags.parse(argc, argv);
        const std::string preset = sf.resolve(flags, cfg, say);
        MT_CHECK(sf.device == "cpu", "--device ", sf.device, ": reward runs on the CPU only (its score kernel has no CUDA "
                 "version yet); use --device cpu");
        check_device(sf.device, preset, comm.world_size(), cfg.dtype);
        with_preset(preset, [&]<class Net>() {
            train_stage<Net, RewardModel>(cfg, sf.schedule, comm);
            if (!comm.is_root()) return;
            const fs::path final_dir = fs::path(cfg.out_dir) / "final";
            Transformer<Net> model(ModelConfig{cfg.vocab_size, cfg.max_seq_len});
            const RewardHead head = load_reward_model(final_dir, model);
            RewardModel::Data data(cfg);
            if (!data.has_val()) {
                say("no held-out pairs (--val_data, --val_fraction): no pair accuracy");
                return;
            }
            const PairEvaluation e = evaluate_pairs(model, head, data, cfg.batch_size, cfg.max_seq_len);
            char line[200];
            std::snprintf(line, sizeof line, "held-out pair accuracy %.4f (%lld pairs) | margin %.4f | loss %.4f (of %s)",
                          e.accuracy, (long long)e.pairs, e.margin, e.loss, final_dir.string().c_str());
            say(line);
        });
    });
}
