// minitrain/train/config.hpp
// TrainConfig: every knob of a training run, named as in MiniMind / nanoGPT / llm.c so that flags carry over.
#pragma once

#include <cstdint>
#include <string>

namespace minitrain {

struct TrainConfig {
    // ---- data
    std::string train_data;  // a file or a glob of llm.c token shards (Pretrain), a JSONL file (SFT, DPO)
    std::string val_data;    // optional; evaluation is skipped without it
    std::string tokenizer;   // tokenizer.json that renders and tokenizes chat JSONL (SFT, DPO)
    int vocab_size = 6400;
    int batch_size = 32;     // sequences per micro-batch
    int max_seq_len = 512;   // tokens per sequence (T)
    bool shuffle = true;
    double val_fraction = 0.0;      // SFT/DPO without val_data: hold out this fraction of the examples
    bool skip_bad_records = false;  // SFT/DPO: skip (and count) malformed JSONL records instead of failing
    std::uint64_t seed = 42;

    // ---- length: max_steps > 0 wins over epochs
    int epochs = 1;
    std::int64_t max_steps = 0;

    // ---- optimizer
    double learning_rate = 5e-4;
    double min_lr = 0;  // WarmupCosine's floor; 0 means learning_rate / 10
    double weight_decay = 0.1;
    double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
    double momentum = 0;  // SGD
    double grad_clip = 1.0;  // <= 0: no clipping (the norm is still reported)
    int accumulation_steps = 1;
    std::int64_t total_batch_tokens = 0;  // > 0: accumulation_steps = total / (batch_size * max_seq_len)

    // ---- schedule
    std::int64_t warmup_steps = 0;
    double warmdown_ratio = 0.2;  // WSD
    double final_lr_frac = 0.0;   // WSD

    // ---- model
    std::uint64_t init_seed = 1337;
    std::string init_from;  // a Hugging Face style folder (config.json + model.safetensors)
    double dropout = 0.0;
    double lora_dropout = 0.0;  // LoRA: dropout on the adapters' input (PEFT's lora_dropout)
    std::string dtype = "f32";  // f32, bf16 or fp16 (and their other spellings): core/precision.hpp

    // ---- preference optimization
    double dpo_beta = 0.15;  // DPO's beta: larger keeps the policy closer to the reference model

    // ---- reinforcement learning (GRPO / CISPO, train/grpo.hpp), named as MiniMind's train_grpo.py
    std::string loss_type = "cispo";  // "cispo" (clipped importance weights) or "grpo" (clipped ratio)
    int num_generations = 6;          // samples per prompt (the group); batch_size counts prompts
    double beta = 0.02;               // KL penalty to the frozen reference (0: no reference model is kept)
    double epsilon = 0.2;             // GRPO: ratio clipped to [1 - epsilon, 1 + epsilon]
    double epsilon_high = 5.0;        // CISPO: importance weight clipped to at most epsilon_high
    double temperature = 1.0;         // sampling temperature of the rollouts
    int top_k = 0;                    // rollouts: 0 = the whole vocabulary
    int max_gen_len = 64;             // generated tokens per sample at most (and the prompt must leave room)
    int grpo_iterations = 1;          // optimizer steps on each batch of samples (old log-probs kept from the first)
    std::string reward = "exact_match";  // rule rewards, '+'-joined: exact_match, final_number, format, length (rl/rewards.hpp)
    double length_penalty = 0.0;      // "length": reward -= length_penalty per generated token
    // PPO (train/ppo.hpp), named as MiniMind's train_ppo.py; it also reads epsilon (its clip_epsilon),
    // beta (its kl_coef), grpo_iterations (its ppo_update_iters), max_gen_len, temperature, top_k, reward.
    double vf_coef = 0.5;             // weight of the critic's value loss in the total loss
    double cliprange_value = 0.2;     // the value is clipped to old value +- cliprange_value
    double gamma = 1.0;               // GAE discount
    double lam = 0.95;                // GAE lambda

    // ---- knowledge distillation (train/distill.hpp), named as MiniMind's train_distillation.py
    std::string teacher;               // the teacher's model folder (same tokenizer, any size)
    double distill_alpha = 0.5;        // weight of the hard-label loss; 1 - alpha weighs the soft targets
    double distill_temperature = 1.5;  // softens both distributions of the KL term

    // ---- reward model (train/reward.hpp)
    std::string reward_pooling = "last";  // where the scalar head reads: "last" supervised position, or "mean" over them

    // ---- divergence guard (train/guard.hpp)
    double skip_outlier_sigma = 0;  // > 0: skip a step whose loss or grad norm is this many std devs above recent ones
    int max_bad_steps = 5;          // skipped steps in a row (non-finite or outlier) that stop the run; 0: never stop

    // ---- logging, evaluation, checkpoints
    int log_interval = 100;
    int eval_interval = 0;   // 0: evaluate only at the end (when val_data is given)
    int eval_batches = 0;    // 0: the whole validation set
    int sample_interval = 0; // 0: no samples during training
    int sample_tokens = 48;
    int save_interval = 1000;  // 0: only the final save
    int keep_last = 3;
    std::string out_dir = "out";
    std::string save_dtype = "f32";  // OUT_DIR/final/model.safetensors: f32, bf16 or f16 (checkpoints stay f32)
    bool resume = false;
    bool allow_changed_resume = false;  // resume even when settings that change the result differ from the saved run
    int threads = 0;  // 0: leave the thread count as it is

    // ---- data parallelism (dist/): batch_size is per process; total_batch_tokens is global
    int zero_stage = 0;  // 1: shard the optimizer state across processes (ZeRO-1)
    bool quiet = false;
};

/// Which part of every global batch this process reads: rank r of `world` takes rows [r*B, (r+1)*B) of
/// a global batch of B x world. Task Data types take it as their second constructor argument.
struct DataShard {
    int rank = 0;
    int world = 1;
};

}  // namespace minitrain
