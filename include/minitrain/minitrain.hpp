// minitrain/minitrain.hpp
// The umbrella header: include this and nothing else.
//
//   core/      tensors, element types, errors, randomness
//   memory/    arena (per-step activations), parameter slabs
//   autograd/  Var and the tape (Graph)
//   backend/   kernels per backend: cpu/ (Eigen + OpenMP), cuda/ (cuBLAS, bf16)
//   ops/       differentiable ops, written once for every backend
//   nn/        the Model policy, the Transformer, generation
//   optim/     optimizers and gradient clipping;  schedule/  learning-rate schedules
//   tokenizer/ byte-level BPE (Hugging Face tokenizer.json)
//   io/        safetensors, checkpoints, GGUF export, atomic files;  data/  JSONL, ChatML, shards and loaders
//   dist/      launcher environment, communicators (LocalComm; MpiComm with minitrain::mpi), run_main
//   train/     the Trainer and its task policies
#pragma once

#include "fwd.hpp"

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "core/shape.hpp"
#include "core/tensor.hpp"

#include "memory/arena.hpp"
#include "memory/parameters.hpp"

#include "autograd/graph.hpp"
#include "autograd/var.hpp"

#include "backend/cpu/ops.hpp"

#include "ops/ops.hpp"

#include "nn/generate.hpp"
#include "nn/lora.hpp"
#include "nn/model.hpp"
#include "nn/presets.hpp"
#include "nn/transformer.hpp"

#include "optim/adamw.hpp"
#include "optim/clip.hpp"
#include "optim/sgd.hpp"
#include "schedule/schedule.hpp"

#include "tokenizer/tokenizer.hpp"

#include "data/chat.hpp"
#include "data/jsonl.hpp"
#include "data/packing.hpp"
#include "data/prepare.hpp"
#include "data/sft.hpp"
#include "data/shards.hpp"
#include "data/token_loader.hpp"
#include "io/atomic_file.hpp"
#include "io/checkpoint.hpp"
#include "io/gguf.hpp"
#include "io/json.hpp"
#include "io/peft.hpp"
#include "io/safetensors.hpp"

#include "dist/dist.hpp"

#include "log/plot.hpp"
#include "log/progress_bar.hpp"
#include "log/run_log.hpp"
#include "log/tensorboard.hpp"

#include "train/config.hpp"
#include "train/lora.hpp"
#include "train/distill.hpp"
#include "train/dpo.hpp"
#include "train/grpo.hpp"
#include "train/ppo.hpp"
#include "train/pretrain.hpp"
#include "train/reward.hpp"
#include "train/sft.hpp"
#include "train/trainer.hpp"
#include "train/evaluate.hpp"
