// minitrain/train/evaluate.hpp
// evaluate_folder: the mean loss of a saved model over token shards, scored exactly as the trainer's
// evaluation scores them (Pretrain's validation loader: B x T windows of consecutive tokens, in order, no
// shuffling; Pretrain's objective), so the numbers agree with pretrain's "val loss" lines for the same
// batch_size and max_seq_len. On any backend: eval runs it on the CPU, and on the GPU through
// util/device.hpp's cuda_programs::evaluate.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>

#include "../io/checkpoint.hpp"
#include "pretrain.hpp"

namespace minitrain {

struct EvalOptions {
    std::string checkpoint;        // model folder
    std::string data;              // token shard file or glob
    int batch_size = 8;
    int max_seq_len = 0;           // 0: the model's max_position_embeddings
    std::int64_t max_batches = 0;  // 0: all
};

struct EvalSummary {
    std::int64_t batches = 0;
    int batch_size = 0, seq_len = 0;
    double nats = 0;                // summed over the scored tokens
    std::int64_t tokens = 0;        // target tokens scored
    double bytes_per_token = 0;     // of the shards, when their .meta.json records it (0: unknown)
    std::size_t parameters = 0;

    double loss() const { return nats / double(tokens); }
    double perplexity() const { return std::exp(loss()); }
    double bits_per_byte() const { return bytes_per_token > 0 ? loss() / std::log(2.0) / bytes_per_token : 0.0; }
};

/// Loads the model in o.checkpoint as Transformer<Net, Backend> and scores o.data with it. `before` is
/// called once the batch count is known (to print what is about to run).
template <ModelPolicy Net, class Backend = CPU, class Before = std::nullptr_t>
EvalSummary evaluate_folder(const EvalOptions& o, Before before = nullptr) {
    const std::filesystem::path dir = o.checkpoint;
    ModelConfig mc = load_model_config(dir);
    if (o.max_seq_len > 0) mc.max_seq_len = o.max_seq_len;
    // Pretrain's data with the shards as both sets: its validation half is the evaluation loader.
    TrainConfig c;
    c.train_data = c.val_data = o.data;
    c.vocab_size = mc.vocab_size;
    c.batch_size = o.batch_size;
    c.max_seq_len = mc.max_seq_len;
    c.shuffle = false;
    Pretrain::Data data(c);
    Transformer<Net, Backend> model(mc);
    load_pretrained(dir, model);
    cpu::Bf16WeightCopy bf16_copy;  // eval --dtype bf16 on the CPU: the weights rounded once for every batch
    if constexpr (Backend::device == Device::cpu)
        cpu::use_bf16_weights_for_inference(bf16_copy, model.params().data().template data<float>(),
                                            model.params().count());

    EvalSummary s;
    s.batches = data.val_batches();
    if (o.max_batches > 0) s.batches = std::min(s.batches, o.max_batches);
    s.batch_size = c.batch_size;
    s.seq_len = c.max_seq_len;
    s.bytes_per_token = data.bytes_per_token();
    s.parameters = model.params().count();
    if constexpr (!std::is_same_v<Before, std::nullptr_t>) before(s);

    Pretrain::Objective<Transformer<Net, Backend>> objective(c, model);
    Graph<Backend> g;
    NoGrad<Backend> no_grad(g);
    g.set_training(false);
    data.val_reset();
    for (std::int64_t i = 0; i < s.batches; ++i) {
        g.reset();
        EvalBatch e = objective.eval(model, g, data);
        s.nats += e.nats;
        s.tokens += e.tokens;
    }
    MT_CHECK(s.tokens > 0, "eval: no target tokens in ", s.batches, " batches");
    MT_CHECK(std::isfinite(s.loss()), "the mean loss over ", s.tokens, " tokens is ", s.loss(),
             ": the model overflows on this data (its weights are finite; it probably diverged while training)");
    return s;
}

}  // namespace minitrain
