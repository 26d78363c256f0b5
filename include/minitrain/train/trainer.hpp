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
// position, the dropout stream, the step guard's window), so resuming reproduces the uninterrupted run bit
// for bit on the CPU with the same thread count; a resume whose settings, data or thread count differ from
// the saved run's is refused unless allow_changed_resume (train/resume.hpp).
//
// Divergence: a step whose loss or gradient norm is not finite (or, with skip_outlier_sigma, an outlier) is
// skipped without an update, and max_bad_steps skips in a row stop the run with TrainingDiverged
// (train/guard.hpp). No checkpoint or final folder is ever written with non-finite weights.
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
#include <type_traits>
#include <vector>

#include "../backend/cpu/bf16_weights.hpp"
#include "../core/precision.hpp"
#include "../io/checkpoint.hpp"
#include "../log/run_log.hpp"
#include "../nn/generate.hpp"
#include "../nn/transformer.hpp"
#include "../optim/adamw.hpp"
#include "../optim/clip.hpp"
#include "../optim/grad_scaler.hpp"
#include "../optim/sgd.hpp"
#include "../dist/comm.hpp"
#include "../dist/config_check.hpp"
#include "../schedule/schedule.hpp"
#include "config.hpp"
#include "guard.hpp"
#include "pretrain.hpp"
#include "progress.hpp"
#include "resume.hpp"

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

    /// `comm`: the processes training this model together (dist/): every rank constructs its Trainer with
    /// the same configuration; batch_size is per rank. The default is one process.
    explicit Trainer(TrainConfig cfg, Comm& comm = local_comm()) : cfg_(std::move(cfg)), comm_(&comm) {
        precision_ = parse_precision(cfg_.dtype, "dtype");  // core/precision.hpp: the rules of each
        cfg_.dtype = std::string(precision_name(precision_));  // one spelling in checkpoints and resume checks
        if (precision_ == Precision::fp16) scaler_.emplace();
        validate();
        check_same_config(*comm_, rank_config(), "--");  // every rank, or a CollectiveError naming the field
        if (cfg_.threads > 0) Backend::set_threads(cfg_.threads);
        if constexpr (std::is_constructible_v<Data, const TrainConfig&, DataShard>)
            data_ = std::make_unique<Data>(cfg_, DataShard{comm_->rank(), comm_->world_size()});
        else {
            MT_CHECK(comm_->world_size() == 1, "this task's Data type cannot be sharded across processes: give it a "
                     "constructor Data(const TrainConfig&, DataShard)");
            data_ = std::make_unique<Data>(cfg_);
        }
        if (cfg_.total_batch_tokens > 0) {
            const std::int64_t per = std::int64_t(cfg_.batch_size) * cfg_.max_seq_len * comm_->world_size();
            MT_CHECK(cfg_.total_batch_tokens % per == 0, "total_batch_tokens ", cfg_.total_batch_tokens,
                     " is not a multiple of batch_size x max_seq_len x processes = ", per);
            cfg_.accumulation_steps = int(cfg_.total_batch_tokens / per);
        }
        model_ = std::make_unique<Model>(ModelConfig{cfg_.vocab_size, cfg_.max_seq_len});
        model_->set_dropout(cfg_.dropout);
        objective_ = std::make_unique<Objective>(cfg_, *model_);
        optim_ = std::make_unique<Optim>(objective_->parameters(), detail::optimizer_options<Algo>(cfg_));
        if (cfg_.zero_stage == 1) shard_optimizer();
        total_steps_ = cfg_.max_steps > 0
                           ? cfg_.max_steps
                           : std::max<std::int64_t>(1, data_->batches_per_epoch() * cfg_.epochs / cfg_.accumulation_steps);
        MT_CHECK(cfg_.warmup_steps <= total_steps_, "warmup_steps ", cfg_.warmup_steps, " is more than the run's ",
                 total_steps_, " steps: the learning rate would never reach learning_rate");
        sched_.emplace(make_schedule());
        guard_ = StepGuard({.outlier_sigma = cfg_.skip_outlier_sigma, .max_bad_steps = cfg_.max_bad_steps});
        graph_ = std::make_unique<Graph<Backend>>(0, 0, rank_seed(cfg_.seed));
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
        Autocast autocast(precision_);  // the products of forward and backward (core/precision.hpp)
        const double loss_scale = scaler_ ? scaler_->scale() : 1.0;  // fp16: optim/grad_scaler.hpp
        double loss_sum = 0, aux_sum = 0;
        std::int64_t tokens = 0;
        ParameterSet<Backend>& trained = objective_->parameters();
        trained.zero_grad();
        graph_->set_training(true);
        const int world = comm_->world_size();
        WeightCopies copies = bf16_weights();  // bf16: the weights rounded once for all micro-batches of this step
        for (int micro = 0; micro < cfg_.accumulation_steps; ++micro) {
            graph_->reset();
            MicroResult r = objective_->train(*model_, *graph_, *data_);
            // The micro-batch's gradient is the mean over the global batch: this rank's mean weighted by its
            // share of what the mean is over (target tokens), so that the sum over ranks is the global mean.
            const double total = world > 1 ? comm_->all_reduce_sum(r.weight) : r.weight;
            const double share = total > 0 ? r.weight / total : 1.0 / world;
            graph_->backward(*r.loss, share / cfg_.accumulation_steps * loss_scale);
            loss_sum += Objective::scalar(r.loss->data) * share;
            aux_sum += r.aux / world;
            tokens += r.tokens;
            for (int k = 0; k < max_task_metrics; ++k) {
                if (!r.metrics[k].name) continue;
                if (micro == 0) last_metrics_[k] = {r.metrics[k].name, 0};
                last_metrics_[k].value += r.metrics[k].value / cfg_.accumulation_steps / world;
            }
        }
        copies.release();  // before anything writes the weights
        if (world > 1) reduce_step(loss_sum, aux_sum, tokens);
        // fp16: an Inf/NaN in the scaled gradient skips the step and halves the scale; the guard does not count
        // it (an overflow says the scale was too high, not that training diverges).
        const bool overflow = scaler_ && scaler_->unscale(trained);
        last_norm_ = overflow ? INFINITY
                     : cfg_.zero_stage == 1 ? clip_sharded(trained) : clip_grad_norm(trained, cfg_.grad_clip);
        last_lr_ = (*sched_)(step_);
        last_loss_ = loss_sum / cfg_.accumulation_steps;
        // the same global numbers, so the same verdict, on every rank
        last_verdict_ = overflow ? StepGuard::Verdict::non_finite : guard_.judge(last_loss_, last_norm_);
        if (last_verdict_ == StepGuard::Verdict::apply) {
            optim_->step(last_lr_);
            if (cfg_.zero_stage == 1) comm_->all_gather(trained.data().template data<float>(), trained.count());
        }
        if (scaler_) scaler_->update(overflow);
        ++step_;
        double seconds = timer_.stop();
        last_aux_ = aux_sum / cfg_.accumulation_steps;
        last_tokens_per_s_ = double(tokens) / seconds;
        if (last_verdict_ != StepGuard::Verdict::apply) {
            log_progress();  // a skipped step is always reported, on the console and in the metrics
            if (!overflow && guard_.diverged()) throw TrainingDiverged(divergence_message());
        }
        after_step();
        return last_loss_;
    }

    /// Mean loss, perplexity and bits per byte over the validation set (or eval_batches of it).
    EvalResult evaluate() {
        MT_CHECK(data_->has_val(), "evaluate: no val_data was given");
        Autocast autocast(precision_);
        WeightCopies copies = bf16_weights();
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
        if (comm_->world_size() > 1) {  // each rank evaluated its part of every validation batch
            double sums[2] = {nats, double(tokens)};
            comm_->all_reduce_sum(sums, 2);
            nats = sums[0];
            tokens = std::int64_t(sums[1]);
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
        if (auto bad = find_non_finite(model_->params()))  // save_checkpoint would refuse too; say why and what to do
            throw TrainingDiverged("training diverged: at step " + std::to_string(step_) + " the weights are no longer "
                                   "finite (" + describe(*bad) + "), so " + dir.string() + " was not written. " +
                                   advice());
        // ZeRO-1: every rank holds a shard of the optimizer state; gather the whole of it (a collective) so
        // that one set of files loads on any number of processes.
        std::vector<std::vector<float>> gathered;
        std::vector<std::pair<std::string, Tensor>> full;
        if (optim_->sharded()) {
            const std::size_t n = objective_->parameters().trainable_count();
            for (const auto& [name, t] : optim_->state()) {
                gathered.emplace_back(n, 0.0f);
                Backend::to_host(gathered.back().data() + optim_->shard_begin(), t);
                comm_->all_gather(gathered.back().data(), n);
                full.emplace_back(name, detail::host_f32(gathered.back().data(), Shape{std::int64_t(n)}));
            }
        }
        if (!comm_->is_root()) return dir;  // rank 0 writes for everyone
        if constexpr (requires { objective_->save_checkpoint(dir, *model_, *optim_, state()); })
            objective_->save_checkpoint(dir, *model_, *optim_, state());  // the task adds its own files (LoRA)
        else
            save_checkpoint(dir, *model_, *optim_, state(), folder_files(), full.empty() ? nullptr : &full);
        prune_checkpoints(cfg_.out_dir, cfg_.keep_last);
        return dir;
    }

    Model& model() { return *model_; }
    /// The precision the products run in (from cfg.dtype) and, for fp16, the loss scaler.
    Precision precision() const { return precision_; }
    const GradScaler* grad_scaler() const { return scaler_ ? &*scaler_ : nullptr; }
    /// bf16 on the CPU: the bf16 bits of the model's weights as the last step, evaluation or sample rounded them
    /// (nullptr before the first, and in f32). For tests.
    const std::uint16_t* last_bf16_weights() const { return model_copy_.bits(); }
    const StepGuard& guard() const { return guard_; }
    Comm& comm() const { return *comm_; }
    /// Whether the last train_step applied its update (false: skipped by the guard).
    bool last_step_applied() const { return last_verdict_ == StepGuard::Verdict::apply; }
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
    /// What every model folder of the run holds besides the weights: the run's tokenizer and its side files
    /// (io/hf_folder.hpp), so that each checkpoint and the final folder load in transformers as they are.
    SaveOptions folder_files(SaveDType dtype = SaveDType::f32) const {
        SaveOptions o;
        o.tokenizer = cfg_.tokenizer;
        o.dtype = dtype;
        return o;
    }

    void validate() const {
        parse_save_dtype(cfg_.save_dtype);  // refused now rather than after the whole run
        MT_CHECK(cfg_.batch_size >= 1, "batch_size must be at least 1, got ", cfg_.batch_size);
        MT_CHECK(cfg_.max_seq_len >= 1, "max_seq_len must be at least 1, got ", cfg_.max_seq_len);
        MT_CHECK(cfg_.accumulation_steps >= 1, "accumulation_steps must be at least 1, got ", cfg_.accumulation_steps);
        MT_CHECK(cfg_.epochs >= 1 || cfg_.max_steps > 0, "epochs must be at least 1 (or give max_steps), got ", cfg_.epochs);
        MT_CHECK(cfg_.learning_rate > 0, "learning_rate must be positive, got ", cfg_.learning_rate);
        MT_CHECK(cfg_.vocab_size >= 1, "vocab_size must be positive, got ", cfg_.vocab_size);
        MT_CHECK(precision_ != Precision::fp16 || Backend::device != Device::cpu,
                 "dtype fp16: the CPU backend has no fast half-precision arithmetic (no fp16 kernels; this CPU ",
                 cpu::bf16gemm::has_avx512_bf16() ? "has AVX512-BF16" : "lacks AVX512-BF16 too",
                 "), so bf16 is this CPU's fast type: use --dtype bf16 (f32's exponent range, no loss scaling needed)");
        // The scaler tests the whole gradient slab for Inf/NaN; under ZeRO-1 only each rank's shard is reduced, so
        // ranks could disagree on whether to skip.
        MT_CHECK(precision_ != Precision::fp16 || cfg_.zero_stage == 0, "dtype fp16 with zero_stage 1: the loss "
                 "scaler needs the whole reduced gradient on every rank; use zero_stage 0 or dtype bf16");
        MT_CHECK(cfg_.threads >= 0, "threads must be >= 0 (0: OpenMP's default), got ", cfg_.threads);
        MT_CHECK(cfg_.max_steps >= 0, "max_steps must be >= 0 (0: run for epochs), got ", cfg_.max_steps);
        MT_CHECK(cfg_.total_batch_tokens >= 0, "total_batch_tokens must be >= 0 (0: use accumulation_steps), got ",
                 cfg_.total_batch_tokens);
        MT_CHECK(cfg_.min_lr >= 0 && cfg_.min_lr <= cfg_.learning_rate, "min_lr must be between 0 and learning_rate (",
                 cfg_.learning_rate, "), got ", cfg_.min_lr);
        MT_CHECK(cfg_.weight_decay >= 0, "weight_decay must be >= 0, got ", cfg_.weight_decay);
        MT_CHECK(cfg_.beta1 >= 0 && cfg_.beta1 < 1, "beta1 must be in [0, 1), got ", cfg_.beta1);
        MT_CHECK(cfg_.beta2 >= 0 && cfg_.beta2 < 1, "beta2 must be in [0, 1), got ", cfg_.beta2);
        MT_CHECK(cfg_.eps > 0, "eps must be positive, got ", cfg_.eps);
        MT_CHECK(cfg_.momentum >= 0 && cfg_.momentum < 1, "momentum must be in [0, 1), got ", cfg_.momentum);
        MT_CHECK(cfg_.dropout >= 0 && cfg_.dropout < 1, "dropout must be in [0, 1), got ", cfg_.dropout);
        MT_CHECK(cfg_.lora_dropout >= 0 && cfg_.lora_dropout < 1, "lora_dropout must be in [0, 1), got ", cfg_.lora_dropout);
        MT_CHECK(cfg_.warmup_steps >= 0, "warmup_steps must be >= 0, got ", cfg_.warmup_steps);
        MT_CHECK(cfg_.dpo_beta > 0, "dpo_beta must be positive, got ", cfg_.dpo_beta);
        MT_CHECK(cfg_.val_fraction >= 0 && cfg_.val_fraction < 1, "val_fraction must be in [0, 1), got ", cfg_.val_fraction);
        MT_CHECK(cfg_.skip_outlier_sigma == 0 || cfg_.skip_outlier_sigma >= 1,
                 "skip_outlier_sigma must be 0 (off) or at least 1 (llm.c uses 3 to 5), got ", cfg_.skip_outlier_sigma);
        MT_CHECK(cfg_.max_bad_steps >= 0, "max_bad_steps must be >= 0 (0: never stop), got ", cfg_.max_bad_steps);
        MT_CHECK(cfg_.zero_stage == 0 || cfg_.zero_stage == 1, "zero_stage must be 0 (plain data parallelism) or 1 "
                 "(optimizer state sharded across processes), got ", cfg_.zero_stage);
        for (auto [name, v] : {std::pair{"log_interval", cfg_.log_interval}, {"eval_interval", cfg_.eval_interval},
                               {"eval_batches", cfg_.eval_batches}, {"sample_interval", cfg_.sample_interval},
                               {"save_interval", cfg_.save_interval}})
            MT_CHECK(v >= 0, name, " must be >= 0 (0: off), got ", v);
        MT_CHECK(cfg_.sample_interval == 0 || cfg_.sample_tokens >= 1, "sample_tokens must be at least 1 with sample_interval ",
                 cfg_.sample_interval, ", got ", cfg_.sample_tokens);
    }

    /// What to tell the user when the guard stops the run: what happened, where the last good state is, what to try.
    std::string divergence_message() const {
        std::ostringstream os;
        const std::int64_t first = step_ - guard_.consecutive() + 1;
        os << "training diverged: steps " << first << " to " << step_ << " were all skipped (" << guard_.consecutive()
           << " in a row; max_bad_steps is " << cfg_.max_bad_steps << "). Step " << step_ << " had loss " << last_loss_
           << " and gradient norm " << last_norm_
           << (last_verdict_ == StepGuard::Verdict::outlier ? " (an outlier)" : " (not finite)") << ". ";
        if (first > 1)
            os << "No update was applied after step " << first - 1 << "; ";
        if (auto last = latest_checkpoint(cfg_.out_dir))
            os << "the last checkpoint is " << last->string() << ". ";
        else
            os << "there is no checkpoint yet. ";
        os << advice();
        return os.str();
    }

    /// What to try after a divergence, with this run's values.
    std::string advice() const {
        std::ostringstream os;
        os << "What to try: a lower learning_rate (this run: " << cfg_.learning_rate
           << "; MiniMind pretrains at 5e-4 and fine-tunes at 1e-5 to 1e-6), gradient clipping (grad_clip 1.0; this run: "
           << cfg_.grad_clip << (cfg_.grad_clip > 0 ? "" : ", off") << "), a warmup (warmup_steps with a warmup schedule)"
           << ", bf16 rather than fp16, and check the data for broken records. Then resume from the last checkpoint "
              "(resume, with allow_changed_resume for the changed settings) or start again.";
        return os.str();
    }

    /// The record a checkpoint keeps of the run, which a resume compares with (train/resume.hpp).
    nlohmann::json run_record() const {
        nlohmann::json data = {{"train_data", data_fingerprint(cfg_.train_data)},
                               {"val_data", data_fingerprint(cfg_.val_data)}};
        if (!cfg_.tokenizer.empty()) data["tokenizer"] = data_fingerprint(cfg_.tokenizer);
        return {{"settings", run_settings(cfg_)}, {"data", data}, {"threads", Backend::threads()}};
    }

    // ---- data parallelism ---------------------------------------------------------------------------

    /// What must be the same on every rank (checked at start with one broadcast from rank 0).
    nlohmann::json rank_config() const {
        nlohmann::json j = run_settings(cfg_);
        j["model"] = {{"layers", Net::layers}, {"hidden", Net::hidden}, {"heads", Net::heads}, {"kv_heads", Net::kv_heads},
                      {"ffn", Net::ffn}, {"moe", Net::moe}};
        j["task"] = Task::name;
        j["optimizer"] = std::string(Algo::name);
        for (auto [k, v] : {std::pair{"batch_size", std::int64_t(cfg_.batch_size)}, {"max_seq_len", cfg_.max_seq_len},
                            {"accumulation_steps", cfg_.accumulation_steps}, {"total_batch_tokens", cfg_.total_batch_tokens},
                            {"max_steps", cfg_.max_steps}, {"epochs", cfg_.epochs}, {"zero_stage", cfg_.zero_stage},
                            {"max_bad_steps", cfg_.max_bad_steps}, {"save_interval", cfg_.save_interval},
                            {"eval_interval", cfg_.eval_interval}, {"eval_batches", cfg_.eval_batches},
                            {"keep_last", cfg_.keep_last}, {"resume", std::int64_t(cfg_.resume)},
                            {"allow_changed_resume", std::int64_t(cfg_.allow_changed_resume)}})
            j[k] = v;
        for (auto [k, v] : {std::pair{"train_data", &cfg_.train_data}, {"val_data", &cfg_.val_data},
                            {"tokenizer", &cfg_.tokenizer}, {"init_from", &cfg_.init_from}, {"out_dir", &cfg_.out_dir}})
            j[k] = *v;
        return j;
    }

    /// Rank r's dropout stream: rank 0 keeps the run's seed (a one-process run is unchanged), the others get
    /// streams of their own, derived deterministically. All ranks draw the same amount per step, so one
    /// saved counter resumes every stream.
    std::uint64_t rank_seed(std::uint64_t seed) const {
        return comm_->rank() == 0 ? seed : hash64(seed, 0x72616e6b00000000ull + std::uint64_t(comm_->rank()));
    }

    /// ZeRO-1: this rank keeps optimizer state for, and updates, only its shard of the trained parameters.
    void shard_optimizer() {
        ParameterSet<Backend>& ps = objective_->parameters();
        if constexpr (requires { objective_->save_checkpoint(std::filesystem::path(), *model_, *optim_, TrainingState()); })
            detail::fail("zero_stage 1: the ", Task::name, " task trains adapters on a frozen model, whose optimizer "
                         "state is small; use zero_stage 0");
        bool dense = ps.trainable_count() == ps.count();
        for (const Segment& seg : ps.segments()) dense = dense && seg.offset == seg.grad_offset;
        MT_CHECK(dense, "zero_stage 1 needs every parameter of the trained set trainable (", ps.trainable_count(),
                 " of ", ps.count(), " are): use zero_stage 0");
        const Shard sh = comm_->shard(ps.trainable_count());
        optim_->set_shard(sh.begin, sh.end);
    }

    /// After the micro-batches: the step's numbers summed over ranks, and the gradient reduced (the
    /// whole slab, or for ZeRO-1 each rank's shard of it). Shares already divide by the global weight.
    void reduce_step(double& loss_sum, double& aux_sum, std::int64_t& tokens) {
        double v[3 + max_task_metrics] = {loss_sum, aux_sum, double(tokens)};
        for (int k = 0; k < max_task_metrics; ++k) v[3 + k] = last_metrics_[k].value;
        comm_->all_reduce_sum(v, 3 + max_task_metrics);
        loss_sum = v[0];
        aux_sum = v[1];
        tokens = std::int64_t(v[2]);
        for (int k = 0; k < max_task_metrics; ++k) last_metrics_[k].value = v[3 + k];
        ParameterSet<Backend>& ps = objective_->parameters();
        if (!ps.grads().defined()) return;
        float* g = ps.grads().template data<float>();
        if (cfg_.zero_stage == 1)
            comm_->reduce_scatter_sum(g, ps.trainable_count());
        else
            comm_->all_reduce_sum(g, ps.trainable_count());
    }

    /// ZeRO-1's clip_grad_norm: the global norm from every rank's shard, the shard scaled by the same factor.
    double clip_sharded(ParameterSet<Backend>& ps) {
        if (!ps.grads().defined()) return 0.0;
        Tensor shard = ps.grads();
        shard.ptr = static_cast<std::byte*>(shard.ptr) + optim_->shard_begin() * sizeof(float);
        shard.shape = Shape{std::int64_t(optim_->shard_end() - optim_->shard_begin())};
        double sq = shard.numel() > 0 ? sum_squares(Backend{}, shard) : 0.0;
        const double norm = std::sqrt(comm_->all_reduce_sum(sq));
        if (cfg_.grad_clip > 0 && shard.numel() > 0) {
            const double coef = cfg_.grad_clip / (norm + 1e-6);
            if (coef < 1.0) scale(Backend{}, shard, coef);
        }
        return norm;
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
        // Rank 0 owns the run folder; the others read the checkpoint it names (a shared filesystem).
        std::string resume_from;
        if (comm_->is_root()) {
            std::filesystem::create_directories(cfg_.out_dir);
            for (const std::string& note : remove_checkpoint_leftovers(cfg_.out_dir)) say("note: ", note);
            metrics_ = std::make_unique<MetricsLog>(std::filesystem::path(cfg_.out_dir) / "metrics.jsonl");
            // Every metrics line also goes to TensorBoard; loss.svg at each eval, report.md at the end (log/).
            run_log_ = std::make_unique<RunLog>(cfg_.out_dir, rank_config(), RunLog::Sizes{
                std::int64_t(model_->params().count()), std::int64_t(objective_->parameters().trainable_count()),
                total_steps_, tokens_per_step(), std::string(preset_name<Net>()), Backend::device == Device::cpu});
            metrics_->on_write = [this](const nlohmann::json& j) { run_log_->record(j); };
            if (cfg_.resume)
                if (auto l = latest_checkpoint(cfg_.out_dir)) resume_from = l->string();
        }
        if (comm_->world_size() > 1) comm_->broadcast(resume_from);
        std::optional<std::filesystem::path> latest;
        if (!resume_from.empty()) latest = std::filesystem::path(resume_from);
        if (latest) {
            TrainingState s;
            if constexpr (requires { objective_->load_checkpoint(*latest, *model_, *optim_); })
                s = objective_->load_checkpoint(*latest, *model_, *optim_);
            else
                s = load_checkpoint(*latest, *model_, *optim_);
            // The data position means "global batch i of B x world x T"; another global batch shape would
            // silently read other data. The world size may change if batch_size x world stays the same.
            const int world = comm_->world_size();
            if (s.extra.contains("batch_size")) {
                const std::int64_t was = s.extra["batch_size"].get<std::int64_t>();
                MT_CHECK(was * s.world_size == std::int64_t(cfg_.batch_size) * world, latest->string(), ": the run was ",
                         "batch_size = ", was, " x ", s.world_size, " process", s.world_size == 1 ? "" : "es", " = ",
                         was * s.world_size, " sequences per global batch, this one has ", cfg_.batch_size, " x ", world,
                         " = ", std::int64_t(cfg_.batch_size) * world, "; keep batch_size x processes the same "
                         "(or start a new out_dir)");
            }
            for (const char* key : {"max_seq_len", "accumulation_steps"}) {
                const std::int64_t now = key[0] == 'm' ? cfg_.max_seq_len : cfg_.accumulation_steps;
                MT_CHECK(!s.extra.contains(key) || s.extra[key].get<std::int64_t>() == now, latest->string(), ": the run was ",
                         key, " = ", s.extra.value(key, nlohmann::json()).dump(), ", this one has ", now,
                         "; resume with the same value (or start a new out_dir)");
            }
            if (s.world_size != world)
                say("note: the checkpoint was written by ", s.world_size, " process", s.world_size == 1 ? "" : "es",
                    ", this run has ", world, ": the same global batches follow; sums are reordered, so the weights "
                    "agree with an uninterrupted run to rounding, not bit for bit");
            check_resume(*latest, s);
            if (s.extra.contains("guard")) guard_.restore(s.extra["guard"], latest->string());
            if (scaler_ && s.extra.contains("grad_scaler")) scaler_->restore(s.extra["grad_scaler"], latest->string());
            if (s.extra.contains("total_steps") && s.extra["total_steps"].get<std::int64_t>() != total_steps_)
                say("note: the checkpoint's run had ", s.extra["total_steps"].get<std::int64_t>(), " steps, this one has ",
                    total_steps_, ": the learning-rate schedule is stretched from here on");
            step_ = s.step;
            data_->seek(s.data.get<typename Data::Position>());
            graph_->rng() = Rng{rank_seed(s.rng.seed), s.rng.counter};
            say("resumed from ", latest->string(), " at step ", step_, "/", total_steps_);
        } else {
            if (cfg_.resume) say("resume: no checkpoint in ", cfg_.out_dir, ", starting from scratch");
            if (!cfg_.init_from.empty()) {
                if constexpr (requires { objective_->load_init(cfg_.init_from, *model_); })
                    objective_->load_init(cfg_.init_from, *model_);  // e.g. a reward model: trunk from the folder, head from the seed
                else
                    load_pretrained(cfg_.init_from, *model_);
                say("initialized from ", cfg_.init_from);
            } else {
                model_->init(cfg_.init_seed);
            }
        }
        say("model: ", model_->params().count(), " parameters (", objective_->parameters().trainable_count(),
            " trained); ", total_steps_, " steps of ", tokens_per_step(), " tokens (batch ", cfg_.batch_size, " x ",
            cfg_.max_seq_len, " x ", cfg_.accumulation_steps, " accumulation",
            comm_->world_size() > 1 ? " x " + std::to_string(comm_->world_size()) + " processes" : std::string(),
            cfg_.zero_stage == 1 ? ", ZeRO-1" : "", ")");
    }

    /// Refuses (or, with allow_changed_resume, notes) every difference that makes the resumed run differ from
    /// the uninterrupted one; notes the harmless ones.
    void check_resume(const std::filesystem::path& from, const TrainingState& s) {
        if (!s.extra.contains("run")) {
            say("note: ", from.string(), " records no settings (an older checkpoint): the resume is not checked");
            return;
        }
        std::string breaking;
        for (const RunDifference& d : compare_runs(s.extra["run"], run_record())) {
            if (!d.breaks_exactness || (d.what == "threads" && s.world_size != comm_->world_size())) {
                say("note: ", d.what, " differs from the saved run (", d.saved, " then, ", d.now, " now)");
                continue;
            }
            breaking += "\n  " + d.what + ": " + d.saved + " in the saved run, " + d.now + " now";
            if (d.what == "threads") breaking += " (another reduction order: the weights drift by rounding)";
        }
        if (breaking.empty()) return;
        MT_CHECK(cfg_.allow_changed_resume, from.string(), ": this run differs from the one that saved the checkpoint, "
                 "so resuming would not reproduce it:", breaking, "\nResume with the saved values, or set "
                 "allow_changed_resume (--allow_changed_resume 1) to go on with the new ones.");
        say("note: resuming with changed settings (allow_changed_resume); the result will differ from an "
            "uninterrupted run:", breaking);
    }

    void after_step() {
        const bool last = step_ == total_steps_;
        const bool logged = last_verdict_ != StepGuard::Verdict::apply;  // train_step reported the skip already
        if (!logged && cfg_.log_interval > 0 && (step_ % cfg_.log_interval == 0 || last || step_ == 1)) log_progress();
        if (data_->has_val() && ((cfg_.eval_interval > 0 && step_ % cfg_.eval_interval == 0) || last)) log_eval();
        if (cfg_.sample_interval > 0 && step_ % cfg_.sample_interval == 0) log_sample();
        if (cfg_.save_interval > 0 && step_ % cfg_.save_interval == 0 && !last) save();
    }

    void finish() {
        auto dir = save();
        if (!comm_->is_root()) {
            comm_->barrier();  // stay until rank 0 has written everything
            return;
        }
        auto final_dir = std::filesystem::path(cfg_.out_dir) / "final";
        detail::write_directory_atomic(final_dir, [&](const std::filesystem::path& tmp) {  // whole or not at all
            if constexpr (requires { objective_->save_final(tmp, *model_); })
                objective_->save_final(tmp, *model_);  // e.g. LoRA: a PEFT adapter folder
            else
                save_pretrained(tmp, *model_, folder_files(parse_save_dtype(cfg_.save_dtype)));
        });
        say("saved ", dir.string(), " (resumable) and ", final_dir.string(), " (Hugging Face folder); metrics in ",
            metrics_->path().string());
        run_log_->finish(final_dir, dir);
        say("report: ", (std::filesystem::path(cfg_.out_dir) / "report.md").string(), "; loss curve: ",
            (std::filesystem::path(cfg_.out_dir) / "loss.svg").string(), "; TensorBoard: tensorboard --logdir ", cfg_.out_dir);
        comm_->barrier();
    }

    void log_progress() {
        if (!comm_->is_root()) return;
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
        if (comm_->world_size() > 1) {
            std::snprintf(line, sizeof line, " | %d ranks", comm_->world_size());
            s += line;
        }
        if (guard_.skipped() > 0) {
            std::snprintf(line, sizeof line, " | skipped %lld", (long long)guard_.skipped());
            s += line;
        }
        if (scaler_) {
            std::snprintf(line, sizeof line, " | loss scale %g | overflow skips %lld", scaler_->scale(),
                          (long long)scaler_->skipped());
            s += line;
        }
        if (last_verdict_ != StepGuard::Verdict::apply)
            s += last_verdict_ == StepGuard::Verdict::non_finite ? " | SKIPPED: not finite" : " | SKIPPED: outlier";
        say(s);
        nlohmann::json j = {{"step", step_},         {"loss", last_loss_},         {"lr", last_lr_},
                            {"grad_norm", last_norm_}, {"tokens_per_s", last_tokens_per_s_}, {"epoch", data_->epoch()}};
        if (Net::moe) j["aux_loss"] = last_aux_;
        j["skipped_steps"] = guard_.skipped();
        if (scaler_) {
            j["loss_scale"] = scaler_->scale();
            j["overflow_skips"] = scaler_->skipped();
        }
        if (last_verdict_ != StepGuard::Verdict::apply)
            j["skipped"] = last_verdict_ == StepGuard::Verdict::non_finite ? "non_finite" : "outlier";
        for (const Metric& m : last_metrics_)
            if (m.name) j[m.name] = m.value;
        metrics_->write(j);
    }

    void log_eval() {
        EvalResult r = evaluate();  // a collective: every rank evaluates its part
        if (!comm_->is_root()) return;
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
        run_log_->picture();
    }

    void log_sample() {
        if (!comm_->is_root()) return;
        Autocast autocast(precision_);
        WeightCopies copies = bf16_weights();
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
        s.world_size = comm_->world_size();
        s.threads = Backend::threads();
        s.extra = {{"task", Task::name}, {"total_steps", total_steps_}, {"learning_rate", cfg_.learning_rate},
                   {"accumulation_steps", cfg_.accumulation_steps}, {"batch_size", cfg_.batch_size},
                   {"max_seq_len", cfg_.max_seq_len}, {"seed", cfg_.seed}, {"run", run_record()},
                   {"guard", guard_.state()}};
        if (scaler_) s.extra["grad_scaler"] = scaler_->state();
        return s;
    }

    /// The bf16 copies of the weights in use (backend/cpu/bf16_weights.hpp), released at the end of its scope.
    struct WeightCopies {
        Trainer* t;
        explicit WeightCopies(Trainer* in_use = nullptr) : t(in_use) {}
        WeightCopies(const WeightCopies&) = delete;
        WeightCopies& operator=(const WeightCopies&) = delete;
        ~WeightCopies() { release(); }
        void release() {
            if (!t) return;
            t->model_copy_.release();
            t->trained_copy_.release();
            t = nullptr;
        }
    };

    /// bf16 on the CPU: the model's weights (and the trained set, when it is another one: LoRA's adapters) rounded
    /// to bf16 now, for every product until the returned scope ends. Rounding them here, at the start of each step,
    /// evaluation and sample, means that whatever changed the weights in between (the optimizer, a resume,
    /// load_checkpoint, a LoRA merge, a user's edit) is what the products see.
    [[nodiscard]] WeightCopies bf16_weights() {
        if constexpr (Backend::device == Device::cpu) {
            if (precision_ != Precision::bf16 || !cpu::bf16_weight_copies_enabled()) return WeightCopies{};
            const bool fast = cpu::bf16gemm::has_avx512_bf16();
            ParameterSet<Backend>& all = model_->params();
            model_copy_.use(all.data().template data<float>(), all.count(), fast);
            ParameterSet<Backend>& trained = objective_->parameters();
            if (&trained != &all && trained.count() > 0)
                trained_copy_.use(trained.data().template data<float>(), trained.count(), fast);
            return WeightCopies{this};
        } else {
            return WeightCopies{};
        }
    }

    std::int64_t tokens_per_step() const {
        return std::int64_t(cfg_.batch_size) * cfg_.max_seq_len * cfg_.accumulation_steps * comm_->world_size();
    }

    template <class... Parts>
    void say(Parts&&... parts) const {
        if (cfg_.quiet || !comm_->is_root()) return;
        std::ostringstream os;
        (os << ... << std::forward<Parts>(parts));
        std::printf("%s\n", os.str().c_str());
        std::fflush(stdout);
    }

    TrainConfig cfg_;
    Comm* comm_;
    std::unique_ptr<Data> data_;
    std::unique_ptr<Model> model_;
    std::unique_ptr<Objective> objective_;
    std::unique_ptr<Optim> optim_;
    std::optional<Sched> sched_;  // built once the step count is known
    std::unique_ptr<Graph<Backend>> graph_;
    std::unique_ptr<MetricsLog> metrics_;
    std::unique_ptr<RunLog> run_log_;  // rank 0: TensorBoard events, loss.svg, report.md
    StepTimer timer_;
    StepGuard guard_;
    StepGuard::Verdict last_verdict_ = StepGuard::Verdict::apply;
    Precision precision_ = Precision::f32;
    std::optional<GradScaler> scaler_;  // fp16 only
    cpu::Bf16WeightCopy model_copy_, trained_copy_;  // bf16 on the CPU: see bf16_weights()
    std::int64_t step_ = 0, total_steps_ = 0;
    double last_loss_ = 0, last_aux_ = 0, last_norm_ = 0, last_lr_ = 0, last_tokens_per_s_ = 0;
    Metric last_metrics_[max_task_metrics];  // the task's own numbers (DPO: rewards), averaged over the last step
};

}  // namespace minitrain
