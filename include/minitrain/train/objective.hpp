// minitrain/train/objective.hpp
// An objective turns a task's data into a loss for the Trainer: one micro-batch for training, one
// validation batch for evaluation. Pretrain and SFT share LanguageModeling (next-token cross-entropy
// over the targets the data marks, -100 elsewhere); DPO brings its own.
//
// What the Trainer asks of an objective O (constructed as O(const TrainConfig&, Model&)):
//   ParameterSet<B>& parameters()                 what the optimizer trains
//   MicroResult train(Model&, Graph&, Data&)       draw a batch, build the loss (recorded on the tape)
//   EvalBatch eval(Model&, Graph&, Data&)          one validation batch under NoGrad
//   std::span<const std::int32_t> sample_prompt()  a few tokens of recent data to start samples from
#pragma once

#include <cstdint>
#include <span>

#include "../autograd/graph.hpp"
#include "../memory/arena.hpp"
#include "config.hpp"

namespace minitrain {

/// A host batch as the backend sees it: the host buffer itself on the CPU, a device copy otherwise.
template <class Backend>
const Tensor& host_batch_on(Buffer<CPU>& host, Buffer<Backend>& dev) {
    if constexpr (Backend::device == Device::cpu) {
        (void)dev;
        return host.tensor();
    } else {
        Backend::from_host(dev.tensor(), host.data<std::int32_t>());
        return dev.tensor();
    }
}

/// A task-specific number of one micro-batch for the progress line and metrics.jsonl (DPO: the reward
/// margin and accuracy). `name` is a string literal; a slot whose name is null is unused.
struct Metric {
    const char* name = nullptr;
    double value = 0;
};

/// Task metrics per micro-batch (DPO uses 4, GRPO 6).
inline constexpr int max_task_metrics = 6;

/// One micro-batch's loss and what the progress line reports about it.
struct MicroResult {
    Var* loss = nullptr;  // (1) what backward starts from
    double aux = 0;       // MoE balancing loss included in `loss`
    std::int64_t tokens = 0;
    double weight = 1;    // what `loss` is a mean over (language modeling: the counted target tokens), so that
                          // ranks holding different amounts combine into the mean over the global batch
    Metric metrics[max_task_metrics];  // the same names in every micro-batch of a run; averaged over a step's micro-batches
};

/// One validation batch: summed negative log-likelihood over the counted target tokens.
struct EvalBatch {
    double nats = 0;
    std::int64_t tokens = 0;
};

template <class Model, class Data>
class LanguageModeling {
public:
    using Backend = typename Model::backend;

    LanguageModeling(const TrainConfig& c, Model& model)
        : model_(model), ids_(Shape{c.batch_size, c.max_seq_len}, DType::i32),
          targets_(Shape{c.batch_size, c.max_seq_len}, DType::i32) {
        if constexpr (Backend::device != Device::cpu) {
            dev_ids_ = Buffer<Backend>(ids_.tensor().shape, DType::i32);
            dev_targets_ = Buffer<Backend>(ids_.tensor().shape, DType::i32);
        }
    }

    ParameterSet<Backend>& parameters() { return model_.params(); }

    MicroResult train(Model& m, Graph<Backend>& g, Data& data) {
        data.next(ids_, targets_);
        auto out = m.forward(g, device(ids_, dev_ids_), &device(targets_, dev_targets_));
        MicroResult r;
        r.loss = out.loss;
        if (out.aux) r.aux = scalar(out.aux->data);
        r.tokens = ids_.tensor().numel();
        r.weight = double(count_targets());
        return r;
    }

    EvalBatch eval(Model& m, Graph<Backend>& g, Data& data) {
        data.val_next(ids_, targets_);
        auto out = m.forward(g, device(ids_, dev_ids_), &device(targets_, dev_targets_));
        EvalBatch e;
        e.tokens = count_targets();
        e.nats = scalar(out.ce->data) * double(e.tokens);
        return e;
    }

    /// The first tokens of the last batch seen.
    std::span<const std::int32_t> sample_prompt(int n) const {
        return {ids_.data<std::int32_t>(), std::size_t(std::min<std::int64_t>(n, ids_.tensor().shape[1]))};
    }

    static double scalar(const Tensor& t) {
        float v = 0;
        Backend::to_host(&v, t);
        return v;
    }

private:
    const Tensor& device(Buffer<CPU>& host, Buffer<Backend>& dev) { return host_batch_on(host, dev); }

    std::int64_t count_targets() const {
        std::int64_t n = 0;
        const std::int32_t* t = targets_.data<std::int32_t>();
        for (std::int64_t i = 0; i < targets_.tensor().numel(); ++i) n += t[i] != -100;
        return n;
    }

    Model& model_;
    Buffer<CPU> ids_, targets_;               // (B, T) i32 host batch
    Buffer<Backend> dev_ids_, dev_targets_;   // the same on the device (non-CPU backends)
};

}  // namespace minitrain
