// grpo: reinforcement learning of a fine-tuned model with a rule reward (MiniMind's train_grpo.py; its
// default loss CISPO, GRPO as --loss_type grpo).
//
//   grpo --data_path rlaif.jsonl --from_weight out/sft/final --out_dir out/grpo --reward exact_match
//   grpo --data_path prompts.txt --from_weight out/sft/final --reward format+length --length_penalty 0.01
//
// --data_path is MiniMind's conversation JSONL: the prompt is everything before the last assistant
// message, whose text (empty in MiniMind's RLAIF file) is the reference answer of --reward exact_match;
// or a plain text file (.txt), one user prompt per line, without references. For every prompt the
// model samples --num_generations replies at --temperature; each reply's reward is compared with its
// group's (advantage = (reward - mean) / std); the loss raises the probability of the better replies,
// with --beta times a KL penalty to the frozen starting model. The progress line adds reward_mean,
// reward_std, kl, clip_fraction, response_length and ratio.
//
//   grpo --data_path rlaif.jsonl --from_weight out/sft/final --reward_model out/reward/final
//   grpo ... --reward_model out/reward/final --reward format      (the RM's score + 1 for a finished reply)
//
// --reward_model DIR: a folder written by build/reward; its own config.json picks its preset (it may be a
// different size than the policy), and its tokenizer.json must be the policy's (--tokenizer), byte for
// byte. Each reply is scored by the reward model on the prompt + reply (train/reward.hpp,
// RewardModelScorer); the rule rewards of --reward are added when --reward is given, else the reward
// is the model's score alone. Any other score: the C++ API (GRPO::Objective::set_reward).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/train/grpo.hpp>
#include <minitrain/train/reward.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/rl_stage.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;
namespace fs = std::filesystem;


int main(int argc, char** argv) {
    return run_main([&](Comm& comm) {
        auto say = [&](const std::string& s) {
            if (comm.is_root()) std::printf("grpo: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/grpo";
        StageFlags sf(Stage::sft, cfg);
        // MiniMind's RL defaults: few prompts per step, a small learning rate, short prompts.
        cfg.learning_rate = 1e-6;
        cfg.batch_size = 2;
        cfg.max_seq_len = 256;
        cfg.save_interval = 100;
        sf.schedule = "constant";
        Flags flags("grpo", "Policy-gradient fine-tuning of a model folder with group-relative advantages (GRPO / "
                            "CISPO) on prompts from MiniMind's conversation JSONL or a text file, scored by rule "
                            "rewards and/or a reward model (--reward_model: its score, plus the --reward rules "
                            "only when --reward is given). Writes what sft writes.");
        sf.bind(flags, cfg, "conversation JSONL (the last assistant message is the reference answer) or prompts.txt");
        flags.section("GRPO");
        flags.bind_choice("loss_type", cfg.loss_type, {"cispo", "grpo"},
                          "cispo: clipped, detached importance weights (every token keeps a gradient); grpo: PPO's clipped ratio");
        flags.bind("num_generations", cfg.num_generations, "samples per prompt (the group); --batch_size counts prompts");
        flags.bind("beta", cfg.beta, "KL penalty to the starting model (0: none, and no reference model is kept)");
        flags.bind("epsilon", cfg.epsilon, "grpo: the ratio is clipped to [1 - epsilon, 1 + epsilon]");
        flags.bind("epsilon_high", cfg.epsilon_high, "cispo: the importance weight is clipped to at most this");
        flags.bind("temperature", cfg.temperature, "sampling temperature of the rollouts");
        flags.bind("top_k", cfg.top_k, "rollouts sample from the k most likely tokens (0: all)");
        flags.bind("max_gen_len", cfg.max_gen_len, "generated tokens per sample at most");
        flags.bind("grpo_iterations", cfg.grpo_iterations, "optimizer steps on each batch of samples");
        flags.bind("reward", cfg.reward, "rule rewards joined with '+': exact_match, final_number, format, length");
        flags.bind("length_penalty", cfg.length_penalty, "reward 'length': minus this per generated token");
        std::string reward_model;
        flags.bind("reward_model", reward_model, "a reward model folder (build/reward's OUT_DIR/final) scoring each reply; "
                   "the --reward rules are added only when --reward is given");
        flags.parse(argc, argv);
        if (cfg.train_data.ends_with(".txt")) cfg.train_data = prompts_as_jsonl(cfg.train_data, cfg.out_dir);
        if (cfg.val_data.ends_with(".txt")) cfg.val_data = prompts_as_jsonl(cfg.val_data, cfg.out_dir + "/val");
        const std::string preset = sf.resolve(flags, cfg, say);
        const bool rules = reward_model.empty() || flags.was_set("reward");
        say("loss " + cfg.loss_type + ", " + std::to_string(cfg.num_generations) + " samples per prompt, reward " +
            (reward_model.empty() ? "" : "model " + reward_model + (rules ? " + " : "")) + (rules ? cfg.reward : ""));
        // The GRPO loss and rollouts have CPU kernels only so far: --device cuda says so instead of training on the CPU.
        MT_CHECK(sf.device == "cpu", "--device ", sf.device, ": grpo runs on the CPU only so far (the GRPO loss has no "
                 "CUDA kernel yet); use --device cpu");
        RewardFn reward;
        if (!reward_model.empty()) reward = reward_model_from_flags(reward_model, cfg, rules);
        with_preset(preset, [&]<class Net>() {
            train_stage<Net, GRPO>(cfg, sf.schedule, comm, [&](auto& trainer) {
                if (reward) trainer.objective().set_reward(reward);
            });
        });
    });
}
