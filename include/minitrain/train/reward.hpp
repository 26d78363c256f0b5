// minitrain/train/reward.hpp
// A reward model as a Trainer task: a transformer with a scalar head, trained on preference pairs with
// the Bradley-Terry loss, and the functions that load it back and score sequences with it.
//
//   r(x)  = w . h(x)[last]                h: the final-norm hidden state (Transformer::hidden), w: (1, C)
//   r(x)  = w . mean_t h(x)[t]            reward_pooling "mean": t over the supervised positions
//   loss  = mean over pairs of -log sigmoid(r(chosen) - r(rejected))
//
// Data: DPO's (train/dpo.hpp): MiniMind's DPO JSONL {"chosen": [...], "rejected": [...]}, rendered with
// ChatML, rows [0, P) chosen, [P, R) rejected.
//
// Legend: P = pairs per micro-batch (batch_size), R = 2P rows, T = max_seq_len, C = hidden.
//
// Decisions:
//  - Where the score is read: at the LAST SUPERVISED POSITION of each row, the last t whose target is not
//    -100. ChatML supervises an assistant reply's content, <|im_end|> and the "\n" after it
//    (data/chat.hpp), so that position's input is the reply's <|im_end|>: it has read the whole reply and
//    its end (a truncated reply: everything that fit). It is defined by the targets alone: the pad id and
//    padding do not matter. A row without a supervised position has no score (an error, except for the padding pairs of
//    the last validation batch, which are not counted).
//  - Or (TrainConfig::reward_pooling "mean") the MEAN over every supervised position: the reply's header
//    "\n", its tokens and its <|im_end|>. A slip in one digit is then visible at the positions that read
//    it, and need not be carried to the end of the reply: on finetune_demo's sums it ranks 87.5% of the
//    pairs with one digit changed right, the last-position head 69.7% (benchmarks/RESULTS.md, session 11).
//    Both are weights over the positions (score_weights: a one-hot, or 1/n on n), read by pool_positions.
//  - The head is score.weight (1, C), no bias, normal(0, init_std) from hash64(init_seed, "score") (as
//    transformers' LlamaForSequenceClassification: a bias would cancel in every difference r_c - r_r).
//    It is appended to the model's own ParameterSet (ParameterSet::append) when the objective is built,
//    so the optimizer, gradient clipping, the divergence guard and the checkpoints (step_N/
//    model.safetensors holds it) treat it like every other weight, and a resume restores it bit for bit.
//  - init_from (an SFT folder, which has no head) loads the trunk through the Trainer's load_init hook;
//    the head is then initialized from the seed.
//  - The Bradley-Terry loss is dpo_loss (ops/dpo.hpp) with beta 1 and a zero reference: softplus(-(rc -
//    rr)) is exactly DPO's softplus(-beta ((pc - pr) - (rc - rr))) there, including its stable forms and
//    its statistics (mean chosen / rejected reward, margin, pair accuracy). One tested op, not two.
//  - MoE trunks add their balancing loss, as in pretraining.
//
// Saved format, <out_dir>/final (save_reward_model / load_reward_model):
//    the model folder of the trunk, exactly what sft writes (config.json, model.safetensors without the
//    head, tokenizer files): it loads anywhere a model folder does (generate, eval, grpo --init_from);
//    reward_head.safetensors: one tensor "score.weight" F32 (1, C), metadata {"format": "pt",
//    "minitrain_reward_head": JSON {"hidden": C, "position": "last_supervised" or "mean_supervised",
//    "loss": "bradley_terry"}}.
// Loading both reproduces the trained rewards exactly (the weights are f32 and never rounded).
//
// Logged per step (MicroResult::metrics): reward_accuracy, reward_margin, chosen_reward, rejected_reward.
// Validation (the Trainer's "val loss"): the mean Bradley-Terry loss per held-out pair; evaluate_pairs()
// adds the held-out pair accuracy and margin.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../io/checkpoint.hpp"
#include "../io/safetensors.hpp"
#include "../nn/transformer.hpp"
#include "../ops/dpo.hpp"
#include "../ops/select.hpp"
#include "../rl/rewards.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "../backend/cpu/dpo.hpp"
#include "config.hpp"
#include "dpo.hpp"
#include "objective.hpp"

namespace minitrain {

// ---- the score and the loss ------------------------------------------------------------------------------

namespace reward {

inline constexpr const char* head_name = "score.weight";
inline constexpr const char* head_file = "reward_head.safetensors";
inline constexpr const char* head_metadata_key = "minitrain_reward_head";

/// Where the head reads a row (TrainConfig::reward_pooling): its last supervised position, or their mean.
enum class Pooling { last, mean };

inline Pooling parse_pooling(std::string_view s) {
    if (s == "last") return Pooling::last;
    if (s == "mean") return Pooling::mean;
    detail::fail("reward_pooling \"", s, "\": expected \"last\" (the last supervised position) or \"mean\" (over them)");
}
/// The name saved in reward_head.safetensors' metadata ("position").
inline const char* position_name(Pooling p) { return p == Pooling::last ? "last_supervised" : "mean_supervised"; }

/// The position each row's score is read at: the last t with targets[b, t] != -100, or -1 when the row
/// has none.   targets: (R, T) i32 host  ->  positions: (R) i32 host
inline void score_positions(const Tensor& targets, const Tensor& positions) {
    MT_CHECK(targets.shape.rank == 2 && targets.dtype == DType::i32, "reward: targets must be (R, T) i32, found ",
             targets.shape, " ", dtype_name(targets.dtype));
    const std::int64_t R = targets.shape[0], T = targets.shape[1];
    check_shape(positions, Shape{R}, "reward", "positions");
    const std::int32_t* tgt = targets.data<std::int32_t>();
    std::int32_t* pos = positions.data<std::int32_t>();
    for (std::int64_t b = 0; b < R; ++b) {
        pos[b] = -1;
        for (std::int64_t t = T - 1; t >= 0; --t)
            if (tgt[b * T + t] != ignore_index) {
                pos[b] = std::int32_t(t);
                break;
            }
    }
}

/// The weights each row's score reads its positions with: a one-hot at score_positions' position
/// (Pooling::last) or 1/n on each of the row's n supervised positions (Pooling::mean); all zero for a row
/// without one. Returns, per row, whether it has a score.   targets: (R, T) i32 host  ->  weights: (R, T) f32 host
inline std::vector<char> score_weights(const Tensor& targets, Pooling pooling, const Tensor& weights) {
    const std::int64_t R = targets.shape[0], T = targets.shape[1];
    check_shape(weights, Shape{R, T}, "reward", "weights");
    MT_CHECK(weights.dtype == DType::f32, "reward: weights must be f32, found ", dtype_name(weights.dtype));
    Buffer<CPU> pos(Shape{R}, DType::i32);
    score_positions(targets, pos);
    const std::int32_t* tgt = targets.data<std::int32_t>();
    float* w = weights.data<float>();
    std::fill(w, w + R * T, 0.0f);
    std::vector<char> scored(static_cast<std::size_t>(R));
    for (std::int64_t b = 0; b < R; ++b) {
        const std::int32_t last = pos.data<std::int32_t>()[b];
        scored[std::size_t(b)] = last >= 0;
        if (last < 0) continue;
        if (pooling == Pooling::last) {
            w[b * T + last] = 1.0f;
            continue;
        }
        std::int64_t n = 0;
        for (std::int64_t t = 0; t < T; ++t) n += tgt[b * T + t] != ignore_index;
        for (std::int64_t t = 0; t < T; ++t)
            if (tgt[b * T + t] != ignore_index) w[b * T + t] = float(1.0 / double(n));
    }
    return scored;
}

/// A host tensor as the backend sees it: itself on the CPU, a copy in `dev` (sized on demand) otherwise.
template <class Backend>
const Tensor& on_backend(const Tensor& host, Buffer<Backend>& dev) {
    if constexpr (Backend::device == Device::cpu) {
        (void)dev;
        return host;
    } else {
        if (dev.tensor().shape != host.shape || dev.tensor().dtype != host.dtype) dev = Buffer<Backend>(host.shape, host.dtype);
        Backend::from_host(dev.tensor(), host.ptr);
        return dev.tensor();
    }
}

/// The head's initial values: normal(0, init_std), from the seed alone.
template <class Backend>
void init_head(Var& head, double std, std::uint64_t seed) {
    std::vector<float> host(std::size_t(head.data.numel()));
    Rng rng{hash64(seed, 0x73636f7265 /* "score" */), 0};
    for (auto& x : host) x = float(std * rng.normal());
    Backend::from_host(head.data, host.data());
}

}  // namespace reward

/// The rewards of R sequences: w . sum_t weights[b, t] hidden[b, t, :].   ids: (R, T) i32, weights: (R, T)
/// f32 (reward::score_weights; both on the backend), head: (1, C)  ->  (R). `aux`, when given, receives the
/// MoE balancing loss (null for dense models).
template <class Model>
Var& reward_scores(Graph<typename Model::backend>& g, Model& model, Var& head, const Tensor& ids,
                   const Tensor& weights, Var** aux = nullptr) {
    Var& h = model.hidden(g, ids, nullptr, aux);                          // (R, T, C)
    Var& read = pool_positions(g, h, weights);                            // (R, C)
    return reshape(g, linear(g, read, head), {ids.shape[0]});             // (R, 1) -> (R)
}

/// A reward model's head: its weight score.weight (1, C), one of the model's parameters, and where it reads.
struct RewardHead {
    Var* weight = nullptr;
    reward::Pooling pooling = reward::Pooling::last;
};

/// mean_b -log sigmoid(r_chosen[b] - r_rejected[b])  ->  (1); `stats` as dpo_loss's (beta 1: rewards are
/// the scores themselves). Both inputs (P) of one floating type; the gradient flows into both.
template <class B>
Var& bradley_terry_loss(Graph<B>& g, Var& chosen, Var& rejected, DpoStats* stats = nullptr) {
    Tensor zero = g.scratch(chosen.data.shape, chosen.data.dtype);  // the "reference" of dpo_loss
    B::zero(zero);
    return dpo_loss(g, chosen, rejected, zero, zero, 1.0, stats);
}

// ---- saving and loading ----------------------------------------------------------------------------------

/// Writes `dir` as a reward model folder (the format above): the trunk of `model` (every parameter but
/// score.weight) as a model folder with `files`, and the head. Not atomic by itself: the Trainer writes
/// final/ through write_directory_atomic.
template <ModelPolicy Net, class Backend>
void save_reward_model(const std::filesystem::path& dir, const Transformer<Net, Backend>& model, const RewardHead& rh,
                       const SaveOptions& files) {
    const Var& head = *rh.weight;
    const auto& ps = model.params();
    Transformer<Net, Backend> trunk(model.config());
    const std::int64_t n = std::int64_t(trunk.params().count());
    MT_CHECK(std::int64_t(ps.count()) == n + head.data.numel(), dir.string(), ": the reward model has ", ps.count(),
             " values, expected the trunk's ", n, " + the head's ", head.data.numel());
    Backend::copy(trunk.params().data(), ps.data().rows(0, n));  // the head was appended: the trunk is the prefix
    save_pretrained(dir, trunk, files);
    std::vector<float> w(std::size_t(head.data.numel()));
    Backend::to_host(w.data(), head.data);
    const nlohmann::json meta = {
        {"hidden", Net::hidden}, {"position", reward::position_name(rh.pooling)}, {"loss", "bradley_terry"}};
    save_safetensors(dir / reward::head_file, {{reward::head_name, detail::host_f32(w.data(), head.data.shape)}},
                     {{"format", "pt"}, {reward::head_metadata_key, meta.dump()}});
}

/// Loads a folder written by save_reward_model into `model` (freshly constructed with the folder's sizes):
/// the trunk, then the head appended to its parameters. Returns the head: its weight (1, C) and pooling.
template <ModelPolicy Net, class Backend>
RewardHead load_reward_model(const std::filesystem::path& dir, Transformer<Net, Backend>& model) {
    MT_CHECK(!model.params().try_find(reward::head_name), dir.string(), ": the model already has a ", reward::head_name);
    load_pretrained(dir, model);
    const auto path = dir / reward::head_file;
    std::error_code ec;
    MT_CHECK(std::filesystem::is_regular_file(path, ec), path.string(), ": no reward head in this folder (",
             dir.string(), " is a model folder, not a reward model: train one with build/reward)");
    SafeTensors st(path);
    MT_CHECK(st.contains(reward::head_name), path.string(), ": missing tensor \"", reward::head_name, "\"");
    const auto& shape = st.info(reward::head_name).shape;
    MT_CHECK(shape.size() == 2 && shape[0] == 1 && shape[1] == Net::hidden, path.string(), ": tensor \"",
             reward::head_name, "\" has shape ", detail::shape_str(shape), ", expected [1, ", Net::hidden, "]");
    Var& head = model.params().append(reward::head_name, Shape{1, Net::hidden});
    std::vector<float> w(std::size_t(Net::hidden));
    st.read_into(reward::head_name, detail::host_f32(w.data(), Shape{1, Net::hidden}));
    if (auto bad = find_non_finite(reward::head_name, w.data(), std::int64_t(w.size())))
        detail::fail(path.string(), ": refusing to load a reward head with non-finite values: ", describe(*bad));
    Backend::from_host(head.data, w.data());
    RewardHead rh{&head};
    const auto meta = st.metadata().find(reward::head_metadata_key);
    MT_CHECK(meta != st.metadata().end(), path.string(), ": no \"", reward::head_metadata_key, "\" metadata (where the head "
             "reads its sequence)");
    const auto j = nlohmann::json::parse(meta->second, nullptr, false);
    const std::string position =
        j.is_object() && j.contains("position") && j["position"].is_string() ? j["position"].get<std::string>() : "";
    if (position == reward::position_name(reward::Pooling::mean))
        rh.pooling = reward::Pooling::mean;
    else
        MT_CHECK(position == reward::position_name(reward::Pooling::last), path.string(), ": metadata \"",
                 reward::head_metadata_key, "\" field \"position\" is \"", position, "\", expected \"last_supervised\" or "
                 "\"mean_supervised\"");
    return rh;
}

/// The rewards of R sequences given as host (R, T) ids and targets (every row with a supervised
/// position), under NoGrad in eval mode on a graph of its own. Returns R numbers.
template <class Model>
std::vector<double> score_sequences(Model& model, const RewardHead& head, const Tensor& ids, const Tensor& targets) {
    using Backend = typename Model::backend;
    const std::int64_t R = ids.shape[0];
    Buffer<CPU> w(targets.shape, DType::f32);
    const std::vector<char> scored = reward::score_weights(targets, head.pooling, w);
    for (std::int64_t b = 0; b < R; ++b)
        MT_CHECK(scored[std::size_t(b)], "reward: row ", b, " has no supervised token to read its score at");
    Buffer<Backend> dev_ids, dev_w;
    Graph<Backend> g;
    NoGrad<Backend> no_grad(g);
    g.set_training(false);
    Var& r = reward_scores(g, model, *head.weight, reward::on_backend(ids, dev_ids), reward::on_backend(w.tensor(), dev_w));
    std::vector<float> out(static_cast<std::size_t>(R));
    Backend::to_host(out.data(), r.data);
    return std::vector<double>(out.begin(), out.end());
}

/// Pair statistics of a reward model over held-out preference pairs.
struct PairEvaluation {
    std::int64_t pairs = 0;
    double accuracy = 0;  // fraction of pairs with r(chosen) > r(rejected)
    double margin = 0;    // mean r(chosen) - r(rejected)
    double loss = 0;      // mean Bradley-Terry loss
};

/// Scores every validation pair of `data` (DPO::Data or RewardModel::Data: val_reset / val_batches /
/// val_next in the pair layout, padding pairs last) with `model` + `head`, under NoGrad in eval mode.
/// `batch` = pairs per validation batch (the data's batch_size), T = its max_seq_len.
template <class Model, class Source>
PairEvaluation evaluate_pairs(Model& model, const RewardHead& head, Source& data, int batch, int T) {
    using Backend = typename Model::backend;
    MT_CHECK(data.has_val(), "evaluate_pairs: no held-out pairs (give val_data or val_fraction)");
    const std::int64_t R = 2 * std::int64_t(batch);
    Buffer<CPU> ids(Shape{R, T}, DType::i32), tgt(Shape{R, T}, DType::i32), w(Shape{R, T}, DType::f32);
    Buffer<Backend> dev_ids, dev_w;
    Graph<Backend> g;
    NoGrad<Backend> no_grad(g);
    g.set_training(false);
    PairEvaluation e;
    double wins = 0, margin = 0, loss = 0;
    data.val_reset();
    for (std::int64_t i = 0; i < data.val_batches(); ++i) {
        data.val_next(ids, tgt);
        const std::vector<char> scored = reward::score_weights(tgt, head.pooling, w);
        std::int64_t n = 0;
        while (n < batch && (scored[std::size_t(n)] || scored[std::size_t(batch + n)])) ++n;
        for (std::int64_t b = 0; b < R; ++b)  // the rows of padding pairs have no score and are not counted
            MT_CHECK(b % batch >= n || scored[std::size_t(b)], "evaluate_pairs: a held-out ", b < batch ? "chosen" : "rejected",
                     " sequence of pair ", b % batch, " has no assistant token to read its score at");
        g.reset();
        Var& r = reward_scores(g, model, *head.weight, reward::on_backend(ids.tensor(), dev_ids),
                               reward::on_backend(w.tensor(), dev_w));
        std::vector<float> host(static_cast<std::size_t>(R));
        Backend::to_host(host.data(), r.data);
        for (std::int64_t k = 0; k < n; ++k) {
            const double d = double(host[std::size_t(k)]) - double(host[std::size_t(batch + k)]);
            wins += d > 0;
            margin += d;
            loss += cpu::dpo::softplus(-d);
        }
        e.pairs += n;
    }
    if (e.pairs) {
        e.accuracy = wins / double(e.pairs);
        e.margin = margin / double(e.pairs);
        e.loss = loss / double(e.pairs);
    }
    return e;
}

// ---- the task --------------------------------------------------------------------------------------------

struct RewardModel {
    static constexpr const char* name = "reward";
    /// DPO's preference pairs (train/dpo.hpp).
    class Data : public DPO::Data {
    public:
        using DPO::Data::Data;
    };
    template <class Model>
    class Objective;
};

template <class Model>
class RewardModel::Objective {
public:
    using Backend = typename Model::backend;
    using Net = typename Model::net;

    /// What one batch's loss is made of.
    struct Pairs {
        Var* loss = nullptr;     // (1) Bradley-Terry loss (+ MoE aux in training)
        Var* bt = nullptr;       // (1) the Bradley-Terry loss alone
        Var* aux = nullptr;      // (1) MoE balancing loss, or null
        Var* rewards = nullptr;  // (R) chosen rows, then rejected rows
        DpoStats stats;          // over the counted pairs: rewards, margin, accuracy
        std::int64_t pairs = 0;  // counted pairs
    };

    /// Appends the head to `model`'s parameters (before the Trainer builds the optimizer or loads weights).
    Objective(const TrainConfig& c, Model& model)
        : params_(model.params()), head_(&params_.append(reward::head_name, Shape{1, Net::hidden})),
          pooling_(reward::parse_pooling(c.reward_pooling)), seed_(c.init_seed), P_(c.batch_size),
          ids_(Shape{2 * c.batch_size, c.max_seq_len}, DType::i32),
          targets_(Shape{2 * c.batch_size, c.max_seq_len}, DType::i32),
          weights_(Shape{2 * c.batch_size, c.max_seq_len}, DType::f32) {
        files_.tokenizer = c.tokenizer;
        files_.dtype = parse_save_dtype(c.save_dtype);
        CPU::zero(ids_.tensor());
        CPU::zero(targets_.tensor());
    }

    /// What the optimizer trains: the whole model, head included.
    ParameterSet<Backend>& parameters() { return params_; }
    Var& head() { return *head_; }
    RewardHead reward_head() { return {head_, pooling_}; }

    template <class Source>
    MicroResult train(Model& m, Graph<Backend>& g, Source& data) {
        data.next(ids_, targets_);
        Pairs p = loss(m, g, ids_, targets_, P_);
        MicroResult r;
        r.loss = p.loss;
        if (p.aux) r.aux = scalar(p.aux->data);
        r.tokens = ids_.tensor().numel();
        r.metrics[0] = {"reward_accuracy", p.stats.accuracy};
        r.metrics[1] = {"reward_margin", p.stats.margin};
        r.metrics[2] = {"chosen_reward", p.stats.chosen_reward};
        r.metrics[3] = {"rejected_reward", p.stats.rejected_reward};
        return r;
    }

    /// One validation batch: nats = summed loss of its real pairs, tokens = their number. The batch's
    /// statistics are kept for evaluate_pairs (last_eval()).
    template <class Source>
    EvalBatch eval(Model& m, Graph<Backend>& g, Source& data) {
        data.val_next(ids_, targets_);
        const std::int64_t n = real_pairs();
        last_eval_ = {};
        EvalBatch e;
        if (n == 0) return e;
        last_eval_ = loss(m, g, ids_, targets_, n);
        e.tokens = n;
        e.nats = scalar(last_eval_.bt->data) * double(n);
        return e;
    }
    /// The pairs of the last eval() call (its validation batch).
    const Pairs& last_eval() const { return last_eval_; }

    static double scalar(const Tensor& t) { return DPO::Objective<Model>::scalar(t); }

    /// The first chosen conversation's prompt, at most n tokens (what samples continue).
    std::span<const std::int32_t> sample_prompt(int n) const {
        const std::int64_t T = ids_.tensor().shape[1];
        const std::int32_t* tgt = targets_.data<std::int32_t>();
        std::int64_t len = T;
        for (std::int64_t t = 0; t < T; ++t)
            if (tgt[t] != ignore_index) {
                len = t + 1;
                break;
            }
        return {ids_.data<std::int32_t>(), std::size_t(std::min<std::int64_t>(n, len))};
    }

    /// The loss of one host batch (R, T) in the pair layout; only pairs [0, pairs) count.
    Pairs loss(Model& model, Graph<Backend>& g, const Buffer<CPU>& ids, const Buffer<CPU>& targets, std::int64_t pairs) {
        const std::int64_t R = ids.tensor().shape[0], P = R / 2;
        MT_CHECK(R % 2 == 0 && 1 <= pairs && pairs <= P, "reward: ", pairs, " pairs counted out of a batch of ", R, " rows");
        if (weights_.tensor().shape != ids.tensor().shape) weights_ = Buffer<CPU>(ids.tensor().shape, DType::f32);
        const std::vector<char> scored = reward::score_weights(targets, pooling_, weights_);
        for (std::int64_t b = 0; b < R; ++b)  // the rows of a padding pair have no score and are not counted
            MT_CHECK(b % P >= pairs || scored[std::size_t(b)], "reward: the ", b < P ? "chosen" : "rejected",
                     " sequence of pair ", b % P, " has no assistant token to read its score at (its reply is empty or "
                     "truncated away: raise max_seq_len)");
        Var* aux = nullptr;
        Pairs p;
        p.pairs = pairs;
        p.rewards = &reward_scores(g, model, *head_, reward::on_backend(ids.tensor(), dev_ids_),
                                   reward::on_backend(weights_.tensor(), dev_weights_), &aux);
        Var& rc = slice_rows(g, *p.rewards, 0, pairs);
        Var& rr = slice_rows(g, *p.rewards, P, P + pairs);
        p.bt = &bradley_terry_loss(g, rc, rr, &p.stats);
        p.loss = p.bt;
        if (aux && g.training()) {
            p.aux = aux;
            p.loss = &add(g, *p.bt, *aux);
        }
        return p;
    }

    // ---- Trainer hooks ------------------------------------------------------------------------------

    /// init_from: the trunk from a model folder (an SFT model has no head), the head from the seed.
    void load_init(const std::filesystem::path& dir, Model& model) {
        Model trunk(model.config());
        load_pretrained(dir, trunk);
        Backend::copy(model.params().data().rows(0, std::int64_t(trunk.params().count())), trunk.params().data());
        reward::init_head<Backend>(*head_, Net::init_std, seed_);
    }

    /// <out_dir>/final: the reward model folder (the format above).
    void save_final(const std::filesystem::path& dir, const Model& model) { save_reward_model(dir, model, RewardHead{head_, pooling_}, files_); }

private:
    std::int64_t real_pairs() const {
        const std::int64_t R = targets_.tensor().shape[0], T = targets_.tensor().shape[1], P = R / 2;
        const std::int32_t* tgt = targets_.data<std::int32_t>();
        auto counted = [&](std::int64_t row) {
            return std::any_of(tgt + row * T, tgt + (row + 1) * T, [](std::int32_t y) { return y != ignore_index; });
        };
        std::int64_t n = 0;
        while (n < P && (counted(n) || counted(P + n))) ++n;
        return n;
    }

    ParameterSet<Backend>& params_;
    Var* head_;
    reward::Pooling pooling_;
    std::uint64_t seed_;
    int P_;
    SaveOptions files_;
    Buffer<CPU> ids_, targets_, weights_;     // (R, T) i32, i32, f32 host
    Buffer<Backend> dev_ids_, dev_weights_;   // the same on the device (non-CPU backends)
    Pairs last_eval_;
};

// ---- a reward model as the reward of RL (GRPO, PPO) ------------------------------------------------------

/// A trained reward model folder (save_reward_model) that scores (prompt, reply) texts: its own frozen
/// Transformer in eval mode, no gradient. A reply is scored exactly as reward training scored a pair's
/// conversation: the prompt's messages (parse_chatml_prompt) plus the reply as the last assistant
/// message, encoded with ChatTemplate and the folder's own tokenizer.json, in the training view with T =
/// the folder's max_position_embeddings (the max_seq_len it was trained with), read where the folder's head
/// reads (the last supervised position: the reply's <|im_end|>, or the last token that fits; or their mean). A reply that ran out
/// of generation budget is scored as if it had ended there (its <|im_end|> appended), as a truncated
/// reply in training would have been read at its last token; rule rewards (format) can penalize it.
/// One sequence per call (the batch of one training used for no pair): correctness first.
template <ModelPolicy Net, class Backend = CPU>
class RewardModelScorer {
public:
    explicit RewardModelScorer(const std::filesystem::path& dir)
        : dir_(dir), config_(load_model_config(dir)), model_(config_), chat_(load_tokenizer(dir, config_)) {
        head_ = load_reward_model(dir, model_);
        model_.params().freeze_all();
    }

    /// The training view of (prompt, reply): inputs and targets (1, T) host, as reward training made them.
    void tokens(std::string_view prompt, std::string_view reply, Buffer<CPU>& ids, Buffer<CPU>& targets) const {
        Conversation c = parse_chatml_prompt(prompt);
        c.push_back(Message{Role::assistant, std::string(reply)});
        const ChatTokens t = chat_.tokenize(c, config_.max_seq_len);
        MT_CHECK(t.supervised > 0, dir_.string(), ": the prompt fills all ", config_.max_seq_len,
                 " positions of the reward model: no reply token to read its score at");
        const Shape s{1, std::int64_t(config_.max_seq_len)};
        ids = Buffer<CPU>(s, DType::i32);
        targets = Buffer<CPU>(s, DType::i32);
        std::copy(t.inputs.begin(), t.inputs.end(), ids.data<std::int32_t>());
        std::copy(t.targets.begin(), t.targets.end(), targets.data<std::int32_t>());
    }

    /// The reward model's score of `reply` to the ChatML `prompt` (which ends "<|im_start|>assistant\n").
    double score(std::string_view prompt, std::string_view reply) {
        Buffer<CPU> ids, targets;
        tokens(prompt, reply, ids, targets);
        return score_sequences(model_, head_, ids, targets)[0];
    }

    Transformer<Net, Backend>& model() { return model_; }
    const RewardHead& head() const { return head_; }
    const ChatTemplate& chat() const { return chat_; }
    const ModelConfig& config() const { return config_; }
    std::filesystem::path tokenizer_path() const { return dir_ / "tokenizer.json"; }

private:
    static Tokenizer load_tokenizer(const std::filesystem::path& dir, const ModelConfig& mc) {
        const auto path = dir / "tokenizer.json";
        std::error_code ec;
        MT_CHECK(std::filesystem::is_regular_file(path, ec), path.string(), ": no such file (a reward model folder "
                 "scores text and needs the tokenizer it was trained with; build/reward writes it into final/)");
        Tokenizer tok = Tokenizer::load(path);
        MT_CHECK(tok.vocab_size() <= mc.vocab_size, path.string(), ": ", tok.vocab_size(), " tokens, but ",
                 (dir / "config.json").string(), " has vocab_size ", mc.vocab_size);
        return tok;
    }

    std::filesystem::path dir_;
    ModelConfig config_;
    Transformer<Net, Backend> model_;
    RewardHead head_;
    ChatTemplate chat_;
};

/// Refuses a reward model folder whose tokenizer.json is not byte for byte `policy_tokenizer` (the file the
/// policy's samples were decoded with): the Error names both files.
inline void check_reward_tokenizer(const std::filesystem::path& dir, const std::filesystem::path& policy_tokenizer) {
    auto bytes = [](const std::filesystem::path& p) {
        std::ifstream in(p, std::ios::binary);
        MT_CHECK(in, p.string(), ": cannot open (a reward model folder holds the tokenizer.json it was trained with)");
        return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    };
    const auto rm = dir / "tokenizer.json";
    MT_CHECK(bytes(rm) == bytes(policy_tokenizer), "reward model: its tokenizer ", rm.string(), " differs from the policy's ",
             policy_tokenizer.string(), ": the two models would not read the same tokens; train the reward model from "
             "the same SFT model (or tokenizer)");
}

/// The reward model in `dir` as a RewardFn: the score of Completion::text as the reply to
/// Completion::prompt (RewardModelScorer). Copies share one scorer; it is deterministic.
template <ModelPolicy Net, class Backend = CPU>
RewardFn reward_model_reward(const std::filesystem::path& dir) {
    auto scorer = std::make_shared<RewardModelScorer<Net, Backend>>(dir);
    return [scorer](const Completion& c) { return scorer->score(c.prompt, c.text); };
}

}  // namespace minitrain
