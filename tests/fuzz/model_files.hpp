// tests/fuzz/model_files.hpp
// A tiny model, its optimizer and adapters, saved once per process as a model folder, a checkpoint and
// an adapter folder: the targets for config.json, adapter_config.json and the training state replace one
// file of these folders with the input and load the folder with the real loaders.
#pragma once

#include <minitrain/io/checkpoint.hpp>
#include <minitrain/io/peft.hpp>
#include <minitrain/nn/lora.hpp>
#include <minitrain/optim/adamw.hpp>

#include "fuzz/fuzz.hpp"

namespace mt_fuzz {

using Net = minitrain::TinyModel;
inline const minitrain::ModelConfig tiny_rc{64, 16};
using Model = minitrain::Transformer<Net>;
using Adapters = minitrain::LoRAAdapters<minitrain::LoRA<4>, Model>;

struct Files {
    Model model{tiny_rc};
    minitrain::Optimizer<minitrain::AdamW> optimizer{model.params(), {}};
    Model lora_base{tiny_rc};  // adapters freeze their base model: not `model`, whose optimizer trains it all
    Adapters adapters{lora_base, 5};
    std::filesystem::path model_dir = scratch() / "model", checkpoint = scratch() / "checkpoint",
                          adapter_dir = scratch() / "adapter";
    Files() {
        model.init(1);
        minitrain::save_pretrained(model_dir, model);
        minitrain::TrainingState st;
        st.step = 3;
        st.data = {{"epoch", 0}, {"shard", 0}, {"batch_in_shard", 1}, {"seed", "7"}};
        minitrain::save_checkpoint(checkpoint, model, optimizer, st);
        minitrain::save_adapter(adapter_dir, adapters);
    }
};

inline Files& files() {
    static Files f;
    return f;
}

}  // namespace mt_fuzz
