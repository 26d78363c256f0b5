// minitrain/train/distill.hpp
// Distill<TeacherNet, Base> as a Trainer task: white-box knowledge distillation (MiniMind's
// train_distillation.py). A student is trained on Base's data (Pretrain: token shards; SFT: conversations,
// the assistant tokens only) with alpha x the hard-label loss + (1 - alpha) x T^2 x KL(teacher || student)
// at temperature T (ops/distill.hpp); the teacher is a frozen minitrain model folder of any size
// (TeacherNet) with the same tokenizer.
//
//   Trainer<TinyBenchModel, Optimizer<AdamW>, Schedule<Cosine>, Distill<MiniMind2Small>> t(cfg);  // cfg.teacher
//
//   AnyTeacher::use<MiniMind2Small>();          // a program: the teacher's preset chosen at run time
//   Trainer<TinyBenchModel, ..., Distill<AnyTeacher, SFT>> t(cfg);
//
// Legend: B = batch_size, T = max_seq_len, N = B x T, V = vocab.
//
// Decisions:
//  - The teacher runs first, under NoGrad in eval mode, on the Trainer's graph; its (N, V) logits are
//    copied out and the graph is reset before the student's forward (DPO's memory plan, train/dpo.hpp):
//    the price is one (N, V) buffer and the teacher's weights, no activations kept.
//  - Validation is the student's plain cross-entropy on the validation data, so the "val loss" of a
//    distilled student and of one trained on hard labels alone compare directly.
//  - Logged per step: ce (the hard-label part) and kl (the soft part, without T^2).
//  - The teacher is held through TeacherModel<Backend> (one virtual call per micro-batch), so that a program
//    choosing both presets at run time compiles presets + presets instantiations (AnyTeacher), not
//    presets x presets Trainers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

#include "../io/checkpoint.hpp"
#include "../nn/transformer.hpp"
#include "../ops/distill.hpp"
#include "config.hpp"
#include "objective.hpp"
#include "pretrain.hpp"

namespace minitrain {

// ---- the frozen teacher ------------------------------------------------------------------------------

/// What distillation needs of a teacher: its parameters (frozen, loaded) and its logits for a batch.
template <class Backend>
class TeacherModel {
public:
    virtual ~TeacherModel() = default;
    virtual ParameterSet<Backend>& params() = 0;
    /// Its weights from a model folder (load_pretrained: the architecture in config.json is checked).
    virtual void load(const std::filesystem::path& dir) = 0;
    /// ids (B, T) i32 -> logits (B, T, V) on g, under the caller's NoGrad.
    virtual Var& logits(Graph<Backend>& g, const Tensor& ids) = 0;
};

/// The teacher as a Transformer of a preset known at compile time.
template <ModelPolicy Net, class Backend>
class PresetTeacher final : public TeacherModel<Backend> {
public:
    explicit PresetTeacher(const ModelConfig& mc) : model_(mc) {}
    ParameterSet<Backend>& params() override { return model_.params(); }
    void load(const std::filesystem::path& dir) override { load_pretrained(dir, model_); }
    Var& logits(Graph<Backend>& g, const Tensor& ids) override { return *model_.forward(g, ids).logits; }

private:
    Transformer<Net, Backend> model_;
};

/// Distill<AnyTeacher, Base>: the teacher's preset is picked at run time, before the Trainer exists, with
/// AnyTeacher::use<Net, Backend>() (a program calls it inside with_preset on the teacher's config.json).
struct AnyTeacher {
    template <class Backend>
    using Maker = std::unique_ptr<TeacherModel<Backend>> (*)(const ModelConfig&);
    template <class Backend>
    static inline Maker<Backend> make = nullptr;

    template <ModelPolicy Net, class Backend = CPU>
    static void use() {
        make<Backend> = [](const ModelConfig& mc) -> std::unique_ptr<TeacherModel<Backend>> {
            return std::make_unique<PresetTeacher<Net, Backend>>(mc);
        };
    }
};

template <class TeacherNet, class Backend>
std::unique_ptr<TeacherModel<Backend>> make_teacher(const ModelConfig& mc) {
    if constexpr (std::is_same_v<TeacherNet, AnyTeacher>) {
        MT_CHECK(AnyTeacher::make<Backend> != nullptr, "distill: Distill<AnyTeacher>: call AnyTeacher::use<Net>() with "
                 "the teacher's preset before constructing the Trainer");
        return AnyTeacher::make<Backend>(mc);
    } else {
        return std::make_unique<PresetTeacher<TeacherNet, Backend>>(mc);
    }
}

// ---- the task ----------------------------------------------------------------------------------------

template <class TeacherNet, class Base = Pretrain>
    requires(ModelPolicy<TeacherNet> || std::is_same_v<TeacherNet, AnyTeacher>)
struct Distill {
    static constexpr const char* name = "distill";
    using teacher_net = TeacherNet;

    /// Base's data source.
    class Data : public Base::Data {
    public:
        using Base::Data::Data;
    };

    template <class Model>
    class Objective {
    public:
        using Backend = typename Model::backend;
        using Net = typename Model::net;
        using Teacher = TeacherModel<Backend>;

        Objective(const TrainConfig& c, Model& student)
            : student_(student), teacher_(make_teacher<TeacherNet, Backend>(teacher_config(c))), alpha_(c.distill_alpha), T_(c.distill_temperature),
              ids_(Shape{c.batch_size, c.max_seq_len}, DType::i32), targets_(Shape{c.batch_size, c.max_seq_len}, DType::i32),
              teacher_logits_(Shape{std::int64_t(c.batch_size) * c.max_seq_len, c.vocab_size}, DType::f32) {
            MT_CHECK(c.distill_alpha >= 0 && c.distill_alpha <= 1, "distill: distill_alpha must be in [0, 1], found ",
                     c.distill_alpha);
            MT_CHECK(c.distill_temperature > 0, "distill: distill_temperature must be positive, found ", c.distill_temperature);
            teacher_->params().freeze_all();
            teacher_->load(c.teacher);
            if constexpr (Backend::device != Device::cpu) {
                dev_ids_ = Buffer<Backend>(ids_.tensor().shape, DType::i32);
                dev_targets_ = Buffer<Backend>(ids_.tensor().shape, DType::i32);
            }
        }

        ParameterSet<Backend>& parameters() { return student_.params(); }

        template <class Source>
        MicroResult train(Model& m, Graph<Backend>& g, Source& data) {
            data.next(ids_, targets_);
            const Tensor& ids = device(ids_, dev_ids_);
            const Tensor& tgt = device(targets_, dev_targets_);
            const std::int64_t N = tgt.numel();
            {  // 1. the teacher's logits (N, V), copied out; then the graph is cleared
                NoGrad<Backend> no_grad(g);
                const bool training = g.training();
                g.set_training(false);
                Var& logits = teacher_->logits(g, ids);
                Backend::copy(teacher_logits_.tensor(), logits.data.view(teacher_logits_.tensor().shape));
                g.set_training(training);
            }
            g.reset();
            // 2. the student; MoE students get the targets for their balancing loss
            auto out = m.forward(g, ids, Net::moe ? &tgt : nullptr);
            Var& logits = *out.logits;
            DistillStats st;
            Var& kd = distill_loss(g, logits, teacher_logits_.tensor(), tgt.view(Shape{N}), alpha_, T_, &st);
            MicroResult r;
            r.loss = &kd;
            if (out.aux && g.training()) {
                r.aux = scalar(out.aux->data);
                r.loss = &add(g, kd, *out.aux);
            }
            r.tokens = ids_.tensor().numel();
            r.weight = st.positions;
            r.metrics[0] = {"ce", st.ce};
            r.metrics[1] = {"kl", st.kl};
            return r;
        }

        /// The student's hard-label cross-entropy on one validation batch.
        template <class Source>
        EvalBatch eval(Model& m, Graph<Backend>& g, Source& data) {
            data.val_next(ids_, targets_);
            auto out = m.forward(g, device(ids_, dev_ids_), &device(targets_, dev_targets_));
            EvalBatch e;
            const std::int32_t* t = targets_.data<std::int32_t>();
            for (std::int64_t i = 0; i < targets_.tensor().numel(); ++i) e.tokens += t[i] != -100;
            e.nats = scalar(out.ce->data) * double(e.tokens);
            return e;
        }

        std::span<const std::int32_t> sample_prompt(int n) const {
            return {ids_.data<std::int32_t>(), std::size_t(std::min<std::int64_t>(n, ids_.tensor().shape[1]))};
        }

        Teacher& teacher() { return *teacher_; }

        static double scalar(const Tensor& t) {
            float v = 0;
            Backend::to_host(&v, t);
            return v;
        }

    private:
        static ModelConfig teacher_config(const TrainConfig& c) {
            MT_CHECK(!c.teacher.empty(), "distill: give the teacher's model folder (teacher / --teacher)");
            ModelConfig mc = load_model_config(c.teacher);
            MT_CHECK(mc.vocab_size == c.vocab_size, c.teacher, ": the teacher's vocab_size is ", mc.vocab_size,
                     ", the student's ", c.vocab_size, ": distillation needs one tokenizer for both");
            return ModelConfig{mc.vocab_size, c.max_seq_len};
        }

        const Tensor& device(Buffer<CPU>& host, Buffer<Backend>& dev) { return host_batch_on(host, dev); }

        Model& student_;
        std::unique_ptr<Teacher> teacher_;
        double alpha_, T_;
        Buffer<CPU> ids_, targets_;              // (B, T) i32 host batch
        Buffer<Backend> dev_ids_, dev_targets_;  // the same on the device
        Buffer<Backend> teacher_logits_;         // (N, V) f32
    };
};

}  // namespace minitrain
