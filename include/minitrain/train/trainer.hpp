// minitrain/train/trainer.hpp
// Trainer<Model, Optimizer<...>, Schedule<...>, Task, Backend>: the training loop, composed from policies.
//
//   one optimizer step = accumulation_steps x (batch -> forward -> backward(loss / accumulation_steps))
//                        -> clip the global gradient norm -> lr from the schedule -> optimizer update
//
// Around it: the progress line every log_interval steps, evaluation on the validation set every
// eval_interval steps, a text sample every sample_interval steps, checkpoints every save_interval steps
// keeping the last keep_last, a final save, and metrics appended to <out_dir>/metrics.jsonl.
// A checkpoint holds everything the next step depends on (weights, optimizer moments and step, data
// position, the dropout stream), so resuming reproduces the uninterrupted run bit for bit on the CPU
// with the same thread count.
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <span>
#include <string>

#include "../io/checkpoint.hpp"
#include "../nn/generate.hpp"
#include "../nn/transformer.hpp"
#include "../optim/adamw.hpp"
#include "../optim/clip.hpp"
#include "../optim/sgd.hpp"
#include "../schedule/schedule.hpp"
#include "config.hpp"
#include "pretrain.hpp"
#include "progress.hpp"

namespace minitrain {

namespace detail {
template <class A>
typename A::Options optimizer_options(const TrainConfig& c);
template <>
inline AdamW::Options optimizer_options<AdamW>(const TrainConfig& c) {
    AdamW::Options o;
    o.lr = c.learning_rate;
    o.beta1 = c.beta1;
    o.beta2 = c.beta2;
    o.eps = c.eps;
    o.weight_decay = c.weight_decay;
    return o;
}
template <>
inline SGD::Options optimizer_options<SGD>(const TrainConfig& c) {
    SGD::Options o;
    o.lr = c.learning_rate;
    o.momentum = c.momentum;
    o.weight_decay = c.weight_decay;
    return o;
}
template <class Opt>
struct optimizer_algo;
template <class A, class B>
struct optimizer_algo<Optimizer<A, B>> {
    using type = A;
};
template <class S>
struct schedule_kind;
template <class K>
struct schedule_kind<Schedule<K>> {
    using type = K;
};
}  // namespace detail

/// Summary of an evaluation pass.
struct EvalResult {
    double loss = 0;        // mean cross-entropy per target token (nats)
    double perplexity = 0;  // exp(loss)
    double bpb = 0;         // bits per UTF-8 byte; 0 when byte counts are unknown
    std::int64_t tokens = 0;
};

template <ModelPolicy Net, class Opt, class Sched, class Task, class Backend = CPU>
class Trainer {
public:
    using Model = Transformer<Net, Backend>;
    using Algo = typename detail::optimizer_algo<Opt>::type;
    using Optim = rebind_optimizer_t<Opt, Backend>;
    using Data = typename Task::Data;
    using Objective = typename Task::template Objective<Model>;

    explicit Trainer(TrainConfig cfg) : cfg_(std::move(cfg)) {
        validate();
        if (cfg_.threads > 0) Backend::set_threads(cfg_.threads);
        data_ = std::make_unique<Data>(cfg_);
        if (cfg_.total_batch_tokens > 0) {
            const std::int64_t per = std::int64_t(cfg_.batch_size) * cfg_.max_seq_len;
            MT_CHECK(cfg_.total_batch_tokens % per == 0, "total_batch_tokens ", cfg_.total_batch_tokens,
                     " is not a multiple of batch_size x max_seq_len = ", per);
            cfg_.accumulation_steps = int(cfg_.total_batch_tokens / per);
        }
        model_ = std::make_unique<Model>(ModelConfig{cfg_.vocab_size, cfg_.max_seq_len});
        model_->set_dropout(cfg_.dropout);
        objective_ = std::make_unique<Objective>(cfg_, *model_);
        optim_ = std::make_unique<Optim>(objective_->parameters(), detail::optimizer_options<Algo>(cfg_));
        total_steps_ = cfg_.max_steps > 0
                           ? cfg_.max_steps
                           : std::max<std::int64_t>(1, data_->batches_per_epoch() * cfg_.epochs / cfg_.accumulation_steps);
        sched_.emplace(make_schedule());
        graph_ = std::make_unique<Graph<Backend>>(0, 0, cfg_.seed);
        start();
    }

    /// Train until the last step, then evaluate and save.
    void fit() {
        while (step_ < total_steps_) train_step();
        finish();
    }

    /// One optimizer step (with accumulation). Returns the mean loss over its micro-batches.
    double train_step() {
        timer_.start();
        double loss_sum = 0, aux_sum = 0;
        std::int64_t tokens = 0;
        ParameterSet<Backend>& trained = objective_->parameters();
        trained.zero_grad();
        graph_->set_training(true);
        for (int micro = 0; micro < cfg_.accumulation_steps; ++micro) {
            graph_->reset();
            MicroResult r = objective_->train(*model_, *graph_, *data_);
            graph_->backward(*r.loss, 1.0 / cfg_.accumulation_steps);
            loss_sum += Objective::scalar(r.loss->data);
            aux_sum += r.aux;
            tokens += r.tokens;
            for (int k = 0; k < 4; ++k) {
                if (!r.metrics[k].name) continue;
                if (micro == 0) last_metrics_[k] = {r.metrics[k].name, 0};
                last_metrics_[k].value += r.metrics[k].value / cfg_.accumulation_steps;
            }
        }
        last_norm_ = clip_grad_norm(trained, cfg_.grad_clip);
        last_lr_ = (*sched_)(step_);
        optim_->step(last_lr_);
        ++step_;
        double seconds = timer_.stop();
        last_loss_ = loss_sum / cfg_.accumulation_steps;
        last_aux_ = aux_sum / cfg_.accumulation_steps;
        last_tokens_per_s_ = double(tokens) / seconds;
        after_step();
        return last_loss_;
    }

    /// Mean loss, perplexity and bits per byte over the validation set (or eval_batches of it).
    EvalResult evaluate() {
        MT_CHECK(data_->has_val(), "evaluate: no val_data was given");
        NoGrad<Backend> no_grad(*graph_);
        graph_->set_training(false);
        data_->val_reset();
        std::int64_t n = data_->val_batches();
        if (cfg_.eval_batches > 0) n = std::min<std::int64_t>(n, cfg_.eval_batches);
        double nats = 0;
        std::int64_t tokens = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            graph_->reset();
            EvalBatch e = objective_->eval(*model_, *graph_, *data_);
            nats += e.nats;
            tokens += e.tokens;
        }
        graph_->set_training(true);
        EvalResult r;
        r.tokens = tokens;
        r.loss = tokens ? nats / double(tokens) : 0;
        r.perplexity = std::exp(r.loss);
        if (data_->bytes_per_token() > 0) r.bpb = r.loss / std::log(2.0) / data_->bytes_per_token();
        return r;
    }

    /// Save a resumable checkpoint of the current step into <out_dir>/checkpoints/step_XXXXXXXX.
    std::filesystem::path save() {
        auto dir = checkpoint_dir(cfg_.out_dir, step_);  // io/checkpoint.hpp: out_dir/checkpoints/step_%08d
        if constexpr (requires { objective_->save_checkpoint(dir, *model_, *optim_, state()); })
            objective_->save_checkpoint(dir, *model_, *optim_, state());  // the task adds its own files (LoRA)
        else
            save_checkpoint(dir, *model_, *optim_, state());
        prune_checkpoints(cfg_.out_dir, cfg_.keep_last);
        return dir;
    }

    Model& model() { return *model_; }
    Optim& optimizer() { return *optim_; }
    Data& data() { return *data_; }
    Objective& objective() { return *objective_; }
    const TrainConfig& config() const { return cfg_; }
    std::int64_t step() const { return step_; }
    std::int64_t total_steps() const { return total_steps_; }
    double last_loss() const { return last_loss_; }
    double last_grad_norm() const { return last_norm_; }
    /// Turns token ids into text for samples; without it, samples print the ids.
    std::function<std::string(std::span<const std::int32_t>)> decode;
    /// Prompt for samples (token ids); default: the first 8 tokens of the latest batch.
    std::vector<std::int32_t> sample_prompt;

private:
    void validate() const {
        MT_CHECK(cfg_.batch_size >= 1, "batch_size must be at least 1, got ", cfg_.batch_size);
        MT_CHECK(cfg_.max_seq_len >= 1, "max_seq_len must be at least 1, got ", cfg_.max_seq_len);
        MT_CHECK(cfg_.accumulation_steps >= 1, "accumulation_steps must be at least 1, got ", cfg_.accumulation_steps);
        MT_CHECK(cfg_.epochs >= 1 || cfg_.max_steps > 0, "epochs must be at least 1 (or give max_steps), got ", cfg_.epochs);
        MT_CHECK(cfg_.learning_rate > 0, "learning_rate must be positive, got ", cfg_.learning_rate);
        MT_CHECK(cfg_.vocab_size >= 1, "vocab_size must be positive, got ", cfg_.vocab_size);
        MT_CHECK(cfg_.dtype == "f32" || Backend::device != Device::cpu,
                 "dtype ", cfg_.dtype, " needs the CUDA backend; the CPU backend trains in f32");
        MT_CHECK(cfg_.dtype == "f32" || cfg_.dtype == "bf16" || cfg_.dtype == "fp16",
                 "dtype must be f32, bf16 or fp16, got ", cfg_.dtype);
    }

    Sched make_schedule() const {
        ScheduleOptions o;
        o.lr = cfg_.learning_rate;
        o.min_lr = cfg_.min_lr > 0 ? cfg_.min_lr : cfg_.learning_rate / 10;
        o.warmup_steps = cfg_.warmup_steps;
        o.total_steps = total_steps_;
        o.warmup_ratio = double(cfg_.warmup_steps) / double(total_steps_);
        o.warmdown_ratio = cfg_.warmdown_ratio;
        o.final_lr_frac = cfg_.final_lr_frac;
        return Sched(o);
    }

    /// Fresh start, resume from the latest checkpoint, or continue from a pretrained folder.
    void start() {
        std::filesystem::create_directories(cfg_.out_dir);
        metrics_ = std::make_unique<MetricsLog>(std::filesystem::path(cfg_.out_dir) / "metrics.jsonl");
        std::optional<std::filesystem::path> latest;
        if (cfg_.resume) latest = latest_checkpoint(cfg_.out_dir);
        if (latest) {
            TrainingState s;
            if constexpr (requires { objective_->load_checkpoint(*latest, *model_, *optim_); })
                s = objective_->load_checkpoint(*latest, *model_, *optim_);
            else
                s = load_checkpoint(*latest, *model_, *optim_);
            MT_CHECK(s.world_size == 1, latest->string(), ": the checkpoint was written by ", s.world_size,
                     " processes, this run has 1");
            // The data position means "batch i of B x T"; another batch shape would silently read other data.
            for (const char* key : {"batch_size", "max_seq_len", "accumulation_steps"}) {
                const std::int64_t now = key[0] == 'b' ? cfg_.batch_size : key[0] == 'm' ? cfg_.max_seq_len : cfg_.accumulation_steps;
                MT_CHECK(!s.extra.contains(key) || s.extra[key].get<std::int64_t>() == now, latest->string(), ": the run was ",
                         key, " = ", s.extra.value(key, nlohmann::json()).dump(), ", this one has ", now,
                         "; resume with the same value (or start a new out_dir)");
            }
            if (s.extra.contains("total_steps") && s.extra["total_steps"].get<std::int64_t>() != total_steps_)
                say("note: the checkpoint's run had ", s.extra["total_steps"].get<std::int64_t>(), " steps, this one has ",
                    total_steps_, ": the learning-rate schedule is stretched from here on");
            step_ = s.step;
            data_->seek(s.data.get<typename Data::Position>());
            graph_->rng() = s.rng;
            say("resumed from ", latest->string(), " at step ", step_, "/", total_steps_);
        } else {
            if (cfg_.resume) say("resume: no checkpoint in ", cfg_.out_dir, ", starting from scratch");
            if (!cfg_.init_from.empty()) {
                load_pretrained(cfg_.init_from, *model_);
                say("initialized from ", cfg_.init_from);
            } else {
                model_->init(cfg_.init_seed);
            }
        }
        say("model: ", model_->params().count(), " parameters (", objective_->parameters().trainable_count(),
            " trained); ", total_steps_, " steps of ", tokens_per_step(), " tokens (batch ", cfg_.batch_size, " x ",
            cfg_.max_seq_len, " x ", cfg_.accumulation_steps, " accumulation)");
    }

    void after_step() {
        const bool last = step_ == total_steps_;
        if (cfg_.log_interval > 0 && (step_ % cfg_.log_interval == 0 || last || step_ == 1)) log_progress();
        if (data_->has_val() && ((cfg_.eval_interval > 0 && step_ % cfg_.eval_interval == 0) || last)) log_eval();
        if (cfg_.sample_interval > 0 && step_ % cfg_.sample_interval == 0) log_sample();
        if (cfg_.save_interval > 0 && step_ % cfg_.save_interval == 0 && !last) save();
    }

    void finish() {
        auto dir = save();
        auto final_dir = std::filesystem::path(cfg_.out_dir) / "final";
        if constexpr (requires { objective_->save_final(final_dir, *model_); })
            objective_->save_final(final_dir, *model_);  // e.g. LoRA: a PEFT adapter folder
        else
            save_pretrained(final_dir, *model_);
        say("saved ", dir.string(), " (resumable) and ", final_dir.string(), " (Hugging Face folder); metrics in ",
            metrics_->path().string());
    }

    void log_progress() {
        double eta = timer_.mean() * double(total_steps_ - step_);
        char line[256];
        std::snprintf(line, sizeof line, "step %6lld/%lld | loss %.4f", (long long)step_, (long long)total_steps_,
                      last_loss_);
        std::string s = line;
        if (Net::moe) {
            std::snprintf(line, sizeof line, " | aux %.4f", last_aux_);
            s += line;
        }
        for (const Metric& m : last_metrics_)
            if (m.name) {
                std::snprintf(line, sizeof line, " | %s %.4f", m.name, m.value);
                s += line;
            }
        std::snprintf(line, sizeof line, " | lr %.3e | norm %.3f | %.0f tok/s | ETA %s", last_lr_, last_norm_,
                      last_tokens_per_s_, format_duration(eta).c_str());
        s += line;
        say(s);
        nlohmann::json j = {{"step", step_},         {"loss", last_loss_},         {"lr", last_lr_},
                            {"grad_norm", last_norm_}, {"tokens_per_s", last_tokens_per_s_}, {"epoch", data_->epoch()}};
        if (Net::moe) j["aux_loss"] = last_aux_;
        for (const Metric& m : last_metrics_)
            if (m.name) j[m.name] = m.value;
        metrics_->write(j);
    }

    void log_eval() {
        EvalResult r = evaluate();
        char line[160];
        std::snprintf(line, sizeof line, "eval step %lld | val loss %.4f | ppl %.2f", (long long)step_, r.loss,
                      r.perplexity);
        std::string s = line;
        if (r.bpb > 0) {
            std::snprintf(line, sizeof line, " | bpb %.4f", r.bpb);
            s += line;
        }
        say(s);
        nlohmann::json j = {{"step", step_}, {"val_loss", r.loss}, {"val_ppl", r.perplexity}, {"val_tokens", r.tokens}};
        if (r.bpb > 0) j["val_bpb"] = r.bpb;
        metrics_->write(j);
    }

    void log_sample() {
        std::vector<std::int32_t> prompt = sample_prompt;
        if (prompt.empty()) {
            auto p = objective_->sample_prompt(std::min(8, cfg_.max_seq_len - 1));
            prompt.assign(p.begin(), p.end());
        }
        SampleOptions o;
        o.temperature = 0.8;
        o.top_k = 40;
        o.seed = std::uint64_t(step_);
        o.max_new_tokens = cfg_.sample_tokens;
        auto tokens = generate(*model_, std::span<const std::int32_t>(prompt), o);
        std::vector<std::int32_t> all = prompt;
        all.insert(all.end(), tokens.begin(), tokens.end());
        std::string text;
        if (decode) {
            text = decode(all);
        } else {
            for (auto t : all) text += std::to_string(t) + " ";
        }
        say("sample step ", step_, ": ", text);
        metrics_->write({{"step", step_}, {"sample", text}});
    }

    TrainingState state() const {
        TrainingState s;
        s.step = step_;
        s.epoch = data_->epoch();
        s.rng = graph_->rng();
        s.data = data_->position();
        s.world_size = 1;
        s.threads = Backend::threads();
        s.extra = {{"task", Task::name}, {"total_steps", total_steps_}, {"learning_rate", cfg_.learning_rate},
                   {"accumulation_steps", cfg_.accumulation_steps}, {"batch_size", cfg_.batch_size},
                   {"max_seq_len", cfg_.max_seq_len}, {"seed", cfg_.seed}};
        return s;
    }

    std::int64_t tokens_per_step() const {
        return std::int64_t(cfg_.batch_size) * cfg_.max_seq_len * cfg_.accumulation_steps;
    }

    template <class... Parts>
    void say(Parts&&... parts) const {
        if (cfg_.quiet) return;
        std::ostringstream os;
        (os << ... << std::forward<Parts>(parts));
        std::printf("%s\n", os.str().c_str());
        std::fflush(stdout);
    }

    TrainConfig cfg_;
    std::unique_ptr<Data> data_;
    std::unique_ptr<Model> model_;
    std::unique_ptr<Objective> objective_;
    std::unique_ptr<Optim> optim_;
    std::optional<Sched> sched_;  // built once the step count is known
    std::unique_ptr<Graph<Backend>> graph_;
    std::unique_ptr<MetricsLog> metrics_;
    StepTimer timer_;
    std::int64_t step_ = 0, total_steps_ = 0;
    double last_loss_ = 0, last_aux_ = 0, last_norm_ = 0, last_lr_ = 0, last_tokens_per_s_ = 0;
    Metric last_metrics_[4];  // the task's own numbers (DPO: rewards), averaged over the last step
};

}  // namespace minitrain
