// ppo: reinforcement learning of a fine-tuned model with PPO (MiniMind's train_ppo.py): an actor, a critic
// (a value head on the actor's trunk), GAE advantages, the clipped-ratio loss with a KL penalty to the
// frozen starting model, and the clipped value loss.
//
//   ppo --data_path rlaif.jsonl --from_weight out/sft/final --reward_model out/reward/final --out_dir out/ppo
//   ppo --data_path prompts.txt --from_weight out/sft/final --reward format+length --length_penalty 0.01
//
// --data_path is MiniMind's conversation JSONL (the prompt is everything before the last assistant
// message, whose text is the reference answer of --reward exact_match) or a plain text file (.txt), one
// user prompt per line. For every prompt the actor samples one reply at --temperature; its reward is
// --reward_model's score (a folder written by build/reward, with the policy's tokenizer.json) plus the
// --reward rules when --reward is given (the rules alone without --reward_model), placed on the reply's
// last token; GAE (--gamma, --lam) over the critic's values gives each token its advantage, whitened over
// the batch. The loss: max(-A r, -A clip(r, 1 -+ clip_epsilon)) + kl_coef KL(actor || start) + vf_coef x
// the value loss clipped at --cliprange_value, --ppo_update_iters optimizer steps per batch of samples.
// The progress line adds reward_mean, reward_std, kl, clip_fraction, value_loss and response_length.
// OUT_DIR/final is the actor (a plain model folder) plus value_head.safetensors (include/minitrain/train/ppo.hpp).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/train/ppo.hpp>
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
            if (comm.is_root()) std::printf("ppo: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/ppo";
        StageFlags sf(Stage::sft, cfg);
        // MiniMind's train_ppo.py defaults: two prompts per step, a tiny learning rate, two updates per rollout.
        cfg.learning_rate = 3e-7;
        cfg.batch_size = 2;
        cfg.max_seq_len = 256;
        cfg.save_interval = 100;
        cfg.temperature = 0.8;
        cfg.grpo_iterations = 2;
        sf.schedule = "constant";
        Flags flags("ppo", "PPO fine-tuning of a model folder (actor + value-head critic, GAE, clipped ratio, KL "
                           "penalty, clipped value loss) on prompts from MiniMind's conversation JSONL or a text "
                           "file, rewarded by a reward model (--reward_model: its score, plus the --reward rules "
                           "only when --reward is given) and/or rule rewards. Writes what sft writes; OUT_DIR/final "
                           "also holds value_head.safetensors.");
        sf.bind(flags, cfg, "conversation JSONL (the last assistant message is the reference answer) or prompts.txt");
        flags.section("PPO");
        std::string reward_model;
        flags.bind("reward_model", reward_model, "a reward model folder (build/reward's OUT_DIR/final) scoring each reply");
        flags.bind("reward", cfg.reward, "rule rewards joined with '+': exact_match, final_number, format, length");
        flags.bind("length_penalty", cfg.length_penalty, "reward 'length': minus this per generated token");
        flags.bind("clip_epsilon", cfg.epsilon, "the ratio is clipped to [1 - clip_epsilon, 1 + clip_epsilon]");
        flags.bind("kl_coef", cfg.beta, "weight of the KL penalty to the starting model (0: none, no reference model kept)");
        flags.bind("vf_coef", cfg.vf_coef, "weight of the value loss");
        flags.bind("cliprange_value", cfg.cliprange_value, "the value is clipped to old value +- this");
        flags.bind("gamma", cfg.gamma, "GAE discount factor");
        flags.bind("lam", cfg.lam, "GAE lambda");
        flags.bind("ppo_update_iters", cfg.grpo_iterations, "optimizer steps on each batch of samples");
        flags.bind("temperature", cfg.temperature, "sampling temperature of the rollouts");
        flags.bind("top_k", cfg.top_k, "rollouts sample from the k most likely tokens (0: all)");
        flags.bind("max_gen_len", cfg.max_gen_len, "generated tokens per sample at most");
        flags.bind("init_seed", cfg.init_seed, "seed of the value head's initialization");
        flags.parse(argc, argv);
        if (cfg.train_data.ends_with(".txt")) cfg.train_data = prompts_as_jsonl(cfg.train_data, cfg.out_dir);
        if (cfg.val_data.ends_with(".txt")) cfg.val_data = prompts_as_jsonl(cfg.val_data, cfg.out_dir + "/val");
        const std::string preset = sf.resolve(flags, cfg, say);
        const bool rules = reward_model.empty() || flags.was_set("reward");
        say("reward " + (reward_model.empty() ? "" : "model " + reward_model + (rules ? " + " : "")) +
            (rules ? cfg.reward : "") + ", " + std::to_string(cfg.grpo_iterations) + " updates per rollout");
        MT_CHECK(sf.device == "cpu", "--device ", sf.device, ": ppo runs on the CPU only so far (its losses have no "
                 "CUDA kernels yet); use --device cpu");
        RewardFn reward;
        if (!reward_model.empty()) reward = reward_model_from_flags(reward_model, cfg, rules);
        with_preset(preset, [&]<class Net>() {
            train_stage<Net, PPO>(cfg, sf.schedule, comm, [&](auto& trainer) {
                if (reward) trainer.objective().set_reward(reward);
            });
        });
    });
}
