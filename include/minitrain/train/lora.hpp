// minitrain/train/lora.hpp
// LoRA<Rank, Alpha, Targets, Base> as a Trainer task: fine-tune adapters on Base's data and loss.
//
//   Trainer<MiniMind2Small, Optimizer<AdamW>, Schedule<Cosine>, LoRA<8>> t(cfg);   // cfg.init_from = base
//
// The policy is itself the task: Data is Base's, and its Objective wraps Base's objective. The Trainer
// builds the objective after the model and before the optimizer; the objective then builds the adapters
// (nn/lora.hpp), which freeze the base model and attach to it, and hands the adapter ParameterSet to the
// optimizer as `parameters()`: gradients and optimizer state exist for the adapters only.
//
// Checkpoints (Trainer hooks, see trainer.hpp): a step folder is the usual resumable checkpoint (config,
// base weights, training state with the optimizer's adapter-sized moments) plus the adapter folder files
// (adapter_model.safetensors, adapter_config.json), written as one atomic folder; resume restores all of
// it. The final folder <out_dir>/final is a PEFT adapter folder (merge_adapter + save_pretrained export
// a plain model).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "../io/checkpoint.hpp"
#include "../io/peft.hpp"
#include "../nn/lora.hpp"
#include "config.hpp"
#include "pretrain.hpp"
#include "sft.hpp"  // the default Base

namespace minitrain {


template <int Rank, int Alpha, class Targets, class Base>
struct LoRA {
    static_assert(Rank >= 1, "LoRA<Rank, ...>: Rank must be at least 1: the adapters are (out x Rank) and "
                             "(Rank x in) matrices");
    static_assert(Alpha >= 1, "LoRA<Rank, Alpha, ...>: Alpha must be at least 1: the update is scaled by "
                              "Alpha / Rank, so 0 would switch the adapters off");
    static_assert(LoRATargetSet<Targets>, "LoRA<Rank, Alpha, Targets>: Targets must be LoRAAttention, "
                                          "LoRAAttentionMLP or LoRATargets<LoRATarget::..., ...>");

    static constexpr int rank = Rank;
    static constexpr int alpha = Alpha;
    static constexpr double scaling = double(Alpha) / double(Rank);
    using targets = Targets;
    using base_task = Base;

    static constexpr const char* name = "lora";

    /// Base's data source. A class of its own rather than an alias, so that naming LoRA<...> (e.g. as a
    /// template argument found by argument-dependent lookup) does not need Base to be complete.
    class Data : public Base::Data {
    public:
        using Base::Data::Data;
    };

    /// Base's objective with adapters: same batches and loss, but only the adapters are trained.
    template <class Model>
    class Objective : public Base::template Objective<Model> {
        using Inner = typename Base::template Objective<Model>;

    public:
        using Backend = typename Model::backend;
        using Adapters = LoRAAdapters<LoRA, Model>;

        /// Builds the adapters (A seeded from init_seed, B = 0; dropout from TrainConfig::lora_dropout when
        /// the config has it), which freezes the base model and attaches to it.
        Objective(const TrainConfig& c, Model& model)
            : Inner(c, model), adapters_(model, hash64(c.init_seed, 0x4c6f5241 /* "LoRA" */), c.lora_dropout),
              base_model_(c.init_from) {}

        /// What the optimizer trains: the adapters only.
        ParameterSet<Backend>& parameters() { return adapters_.params(); }
        Adapters& adapters() { return adapters_; }

        // ---- Trainer hooks --------------------------------------------------------------------------

        /// A resumable checkpoint folder, atomically: save_checkpoint's files (the frozen base weights, the
        /// training state with the adapters' optimizer moments) plus the adapter folder files.
        template <class Optim>
        void save_checkpoint(const std::filesystem::path& dir, const Model& model, const Optim& optim,
                             const TrainingState& state) {
            detail::write_directory_atomic(dir, [&](const std::filesystem::path& tmp) {
                minitrain::save_checkpoint(tmp, model, optim, state);  // replaces tmp: write it first
                save_adapter(tmp, adapters_, base_model_);
            });
        }

        /// Restores what save_checkpoint wrote: base weights, adapters, optimizer state; returns the state.
        template <class Optim>
        TrainingState load_checkpoint(const std::filesystem::path& dir, Model& model, Optim& optim) {
            TrainingState s = minitrain::load_checkpoint(dir, model, optim);
            load_adapter(dir, adapters_);
            return s;
        }

        /// <out_dir>/final: the PEFT adapter folder.
        void save_final(const std::filesystem::path& dir, const Model&) { save_adapter(dir, adapters_, base_model_); }

    private:
        Adapters adapters_;
        std::string base_model_;  // base_model_name_or_path in adapter_config.json
    };
};

}  // namespace minitrain
