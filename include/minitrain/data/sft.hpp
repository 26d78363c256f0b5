// minitrain/data/sft.hpp
// Tokenized SFT and DPO examples and the loader that batches them.
//
// Legend: N = examples, B = batch, T = time (max_seq_len), A = arity (sequences per example: 1 for SFT,
// 2 for DPO: chosen, then rejected).
//
// ExampleSet stores every sequence unpadded (at most T + 1 ids, see chat.hpp's training view) in one flat
// array, the supervision flag in the top bit of each id, so memory is 4 bytes per real token; rows of T
// positions are built per batch.
//
// ExampleLoader: per epoch, the examples are visited in the order of a permutation drawn from
// Rng{hash64(seed, epoch)} (or in order without shuffling), B at a time. next() fills ids and targets of
// shape (A*B, T): rows [k*B, (k+1)*B) hold sequence k of the batch's examples, so for DPO the first B
// rows are the chosen replies and the next B the rejected ones (one forward pass for both; the mask of
// a row is targets != -100). With drop_last (the default for training) a final partial batch is not used;
// without it (validation) the missing rows are padding with every target -100. Position {epoch, index,
// seed} (index = examples of the epoch's order already served) resumes exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "chat.hpp"
#include "jsonl.hpp"

namespace minitrain {

// ---- the examples -------------------------------------------------------------------------------------

/// Where an ExampleSet came from, for the messages of a loader that finds too few examples.
struct ExampleOrigin {
    std::string files;                 // the inputs, as given ("" for a set built in memory)
    std::int64_t records = 0;          // well-formed records read
    std::int64_t skipped = 0;          // malformed records skipped (OnError::skip)
    std::string skipped_by_kind;       // "3 not valid JSON, 1 missing field \"conversations\""
    std::string first_skipped;         // the first skipped record's message (file:line: what)
    std::int64_t unsupervised = 0;     // dropped: no supervised target left after truncation
    int max_seq_len = 0;
    std::string part;                  // "" for everything loaded, else e.g. "the training part of a split"

    /// "from sft.jsonl: 5 records read, 5 malformed and skipped (5 not valid JSON)"; "" when unknown.
    std::string text() const {
        if (files.empty()) return "";
        std::string s = (part.empty() ? "" : part + " of the examples ") + std::string("from ") + files + ": " +
                        std::to_string(records + skipped) + (records + skipped == 1 ? " record" : " records") + " read";
        if (records + skipped == 0) s += " (no record at all: the input is empty or holds only blank lines)";
        if (skipped) s += ", " + std::to_string(skipped) + " malformed and skipped (" + skipped_by_kind + ")";
        if (unsupervised)
            s += ", " + std::to_string(unsupervised) + " dropped because truncation to max_seq_len " +
                 std::to_string(max_seq_len) + " left no assistant token to train on";
        return s;
    }
    /// What to do about it, for a set of `have` examples that needed `need`.
    std::string advice(std::size_t have, std::int64_t need) const {
        if (files.empty()) return "";
        if (records + skipped == 0) return "give a JSONL file with one record per line";
        if (have == 0 && skipped > 0 && records == 0)
            return "every record was malformed: fix the file (the first one: " + first_skipped + ")";
        if (have == 0 && unsupervised > 0) return "raise max_seq_len, or shorten the prompts";
        return "give at least " + std::to_string(need) + " examples, or a smaller batch size";
    }
};

class ExampleSet {
public:
    ExampleSet() = default;
    /// seq_len = T; arity 1 (SFT) or 2 (DPO).
    ExampleSet(int seq_len, int arity, std::int32_t pad_id) : T_(seq_len), arity_(arity), pad_(pad_id) {
        MT_CHECK(seq_len >= 1, "ExampleSet: seq_len must be positive, got ", seq_len);
        MT_CHECK(arity == 1 || arity == 2, "ExampleSet: arity must be 1 (SFT) or 2 (DPO), got ", arity);
    }

    /// Appends one sequence: ids (L) and their supervision flags (L); only the first T + 1 are kept.
    /// arity() consecutive calls make one example.
    void add_sequence(std::span<const std::int32_t> ids, std::span<const std::uint8_t> supervised) {
        MT_CHECK(arity_ > 0, "ExampleSet: default-constructed set");
        MT_CHECK(ids.size() == supervised.size(), "ExampleSet::add_sequence: ", ids.size(), " ids but ", supervised.size(), " flags");
        const std::size_t L = std::min(ids.size(), std::size_t(T_) + 1);
        for (std::size_t i = 0; i < L; ++i) {
            MT_CHECK(ids[i] >= 0, "ExampleSet::add_sequence: negative id ", ids[i]);
            tok_.push_back(std::uint32_t(ids[i]) | (supervised[i] ? sup_bit : 0u));
        }
        start_.push_back(tok_.size());
    }

    /// Complete examples.
    std::size_t size() const { return arity_ ? (start_.size() - 1) / std::size_t(arity_) : 0; }
    bool empty() const { return size() == 0; }
    int seq_len() const { return T_; }
    int arity() const { return arity_; }
    std::int32_t pad_id() const { return pad_; }
    /// Stored (non-pad) tokens over all sequences.
    std::int64_t tokens() const { return std::int64_t(tok_.size()); }
    /// Where the examples came from (set by load_examples; empty for a set built in memory).
    const ExampleOrigin& origin() const { return origin_; }
    void set_origin(ExampleOrigin o) { origin_ = std::move(o); }

    /// inputs (T) and targets (T) of sequence `which` (0, or 1 = rejected for DPO) of example i.
    /// Returns the number of supervised targets.
    int fill(std::size_t i, int which, std::int32_t* inputs, std::int32_t* targets) const {
        MT_CHECK(i < size() && 0 <= which && which < arity_, "ExampleSet::fill: example ", i, " sequence ", which,
                 " outside ", size(), " x ", arity_);
        const std::size_t s = i * std::size_t(arity_) + std::size_t(which);
        const std::uint32_t* p = tok_.data() + start_[s];
        const std::size_t L = start_[s + 1] - start_[s];
        int count = 0;
        for (std::size_t t = 0; t < std::size_t(T_); ++t) {
            inputs[t] = t < L ? std::int32_t(p[t] & ~sup_bit) : pad_;
            const bool sup = t + 1 < L && (p[t + 1] & sup_bit);
            targets[t] = sup ? std::int32_t(p[t + 1] & ~sup_bit) : ignore_index;
            count += sup;
        }
        return count;
    }

    /// Sequence `which` of example i in the training view (chat.hpp).
    ChatTokens get(std::size_t i, int which = 0) const {
        ChatTokens c;
        c.inputs.resize(std::size_t(T_));
        c.targets.resize(std::size_t(T_));
        c.supervised = fill(i, which, c.inputs.data(), c.targets.data());
        const std::size_t s = i * std::size_t(arity_) + std::size_t(which);
        c.length = int(std::min<std::size_t>(start_[s + 1] - start_[s], std::size_t(T_)));
        return c;
    }

    /// The examples at `indices`, in that order.
    ExampleSet select(std::span<const std::size_t> indices) const {
        ExampleSet out(T_, arity_, pad_);
        out.origin_ = origin_;
        for (std::size_t i : indices) {
            MT_CHECK(i < size(), "ExampleSet::select: example ", i, " outside [0, ", size(), ")");
            for (int k = 0; k < arity_; ++k) {
                const std::size_t s = i * std::size_t(arity_) + std::size_t(k);
                out.tok_.insert(out.tok_.end(), tok_.begin() + std::ptrdiff_t(start_[s]), tok_.begin() + std::ptrdiff_t(start_[s + 1]));
                out.start_.push_back(out.tok_.size());
            }
        }
        return out;
    }

private:
    static constexpr std::uint32_t sup_bit = 0x80000000u;

    int T_ = 0, arity_ = 0;
    std::int32_t pad_ = 0;
    std::vector<std::uint32_t> tok_;           // all sequences back to back: id | supervised << 31
    std::vector<std::size_t> start_ = {0};     // (sequences + 1) offsets into tok_
    ExampleOrigin origin_;
};

// ---- loading from JSONL -------------------------------------------------------------------------------

enum class ExampleKind { sft, dpo };

struct ExampleOptions {
    int max_seq_len = 512;             // T
    OnError on_error = OnError::fail;  // malformed records: stop, or skip and count
    int threads = 0;                   // tokenization threads; 0 = one per hardware thread. The result does not depend on it.
    bool keep_unsupervised = false;    // keep examples left without any supervised target by truncation
    ChatTemplate::TokenNames tokens;   // ChatML markers and the pad token
    std::size_t max_record_bytes = jsonl_max_record_bytes;  // a longer line is a malformed record (jsonl.hpp)
};

struct ExampleStats {
    std::int64_t records = 0;       // well-formed records read
    std::int64_t examples = 0;      // examples kept
    std::int64_t truncated = 0;     // examples with a sequence longer than T + 1 tokens (cut on the right)
    std::int64_t unsupervised = 0;  // examples whose supervised tokens were all cut off (dropped unless kept)
    SkipLog skipped;                // malformed records (OnError::skip)

    std::string summary() const {
        std::string s = std::to_string(examples) + " examples";
        if (truncated) s += ", " + std::to_string(truncated) + " truncated";
        if (unsupervised) s += ", " + std::to_string(unsupervised) + " without a supervised token after truncation";
        if (skipped.count) s += "\n" + skipped.summary();
        return s;
    }
};

/// Reads SFT or DPO records from JSONL files (paths or globs; every file is read as JSONL), renders them
/// with ChatML and tokenizes them on opt.threads threads. Errors name file and line (see jsonl.hpp).
inline ExampleSet load_examples(ExampleKind kind, const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                                const ExampleOptions& opt = {}, ExampleStats* stats = nullptr) {
    MT_CHECK(opt.max_seq_len >= 1, "load_examples: max_seq_len must be positive, got ", opt.max_seq_len);
    const ChatTemplate chat(tokenizer, opt.tokens);
    const int arity = kind == ExampleKind::dpo ? 2 : 1;
    ExampleSet set(opt.max_seq_len, arity, chat.pad_id());
    ExampleStats st;
    struct Encoded {
        std::vector<std::int32_t> ids[2];
        std::vector<std::uint8_t> sup[2];
    };
    const std::vector<InputFile> files = resolve_inputs(inputs, InputFormat::jsonl);
    ReadOptions ro;
    ro.on_error = opt.on_error;
    ro.max_record_bytes = opt.max_record_bytes;
    WorkerPool pool(opt.threads);
    const std::size_t T1 = std::size_t(opt.max_seq_len) + 1;
    process_records<Encoded>(
        files, ro, pool, st.skipped,
        [&](std::string_view line, const InputFile&, Encoded& e) {
            nlohmann::json j = parse_json_record(line);
            for (int k = 0; k < 2; ++k) {
                e.ids[k].clear();
                e.sup[k].clear();
            }
            if (kind == ExampleKind::sft) {
                chat.encode(parse_sft_record(j), e.ids[0], e.sup[0]);
            } else {
                DpoPair p = parse_dpo_record(j);
                chat.encode(p.chosen, e.ids[0], e.sup[0]);
                chat.encode(p.rejected, e.ids[1], e.sup[1]);
            }
        },
        [&](Encoded& e, const RecordSource&) {
            ++st.records;
            bool truncated = false, unsupervised = false;
            for (int k = 0; k < arity; ++k) {
                truncated = truncated || e.ids[k].size() > T1;
                // Targets see tokens 1..min(L, T+1)-1: is any of them supervised?
                const std::size_t L = std::min(e.ids[k].size(), T1);
                unsupervised = unsupervised || std::find(e.sup[k].begin() + (L > 0 ? 1 : 0), e.sup[k].begin() + std::ptrdiff_t(L),
                                                         std::uint8_t(1)) == e.sup[k].begin() + std::ptrdiff_t(L);
            }
            st.truncated += truncated;
            st.unsupervised += unsupervised;
            if (unsupervised && !opt.keep_unsupervised) return;
            for (int k = 0; k < arity; ++k) set.add_sequence(e.ids[k], e.sup[k]);
            ++st.examples;
        },
        [](std::uint64_t) {});
    ExampleOrigin origin;
    for (std::size_t i = 0; i < inputs.size(); ++i) origin.files += (i ? ", " : "") + inputs[i];
    origin.records = st.records;
    origin.skipped = st.skipped.count;
    origin.skipped_by_kind = st.skipped.by_reason();
    if (!st.skipped.first.empty()) origin.first_skipped = st.skipped.first.front();
    origin.unsupervised = opt.keep_unsupervised ? 0 : st.unsupervised;
    origin.max_seq_len = opt.max_seq_len;
    set.set_origin(std::move(origin));
    if (stats) *stats = std::move(st);
    return set;
}

inline ExampleSet load_sft(const std::vector<std::string>& inputs, const Tokenizer& tokenizer, const ExampleOptions& opt = {},
                           ExampleStats* stats = nullptr) {
    return load_examples(ExampleKind::sft, inputs, tokenizer, opt, stats);
}
inline ExampleSet load_dpo(const std::vector<std::string>& inputs, const Tokenizer& tokenizer, const ExampleOptions& opt = {},
                           ExampleStats* stats = nullptr) {
    return load_examples(ExampleKind::dpo, inputs, tokenizer, opt, stats);
}

// ---- validation split ---------------------------------------------------------------------------------

/// Which examples are held out for validation (at most one of fraction and last):
///   fraction  round(fraction * N) examples (at least 1 when fraction > 0 and N >= 2), chosen by a
///             permutation drawn from `seed`; both parts keep the input order
///   last      the last `last` examples of the input
struct ValSplit {
    double fraction = 0;
    std::int64_t last = 0;
    std::uint64_t seed = 0;
};

struct SplitExamples {
    ExampleSet train, val;
};

inline SplitExamples split_examples(const ExampleSet& all, const ValSplit& s) {
    MT_CHECK(s.fraction >= 0 && s.fraction < 1, "split_examples: fraction must be in [0, 1), got ", s.fraction);
    MT_CHECK(s.last >= 0, "split_examples: last must be >= 0, got ", s.last);
    MT_CHECK(s.fraction == 0 || s.last == 0, "split_examples: give a fraction or a count of last examples, not both");
    const std::size_t n = all.size();
    std::vector<std::uint8_t> is_val(n, 0);
    if (s.last > 0) {
        MT_CHECK(std::size_t(s.last) < n, "split_examples: holding out the last ", s.last, " of ", n, " examples leaves none to train on");
        for (std::size_t i = n - std::size_t(s.last); i < n; ++i) is_val[i] = 1;
    } else if (s.fraction > 0 && n >= 2) {
        std::size_t k = std::max<std::size_t>(1, std::size_t(std::llround(s.fraction * double(n))));
        k = std::min(k, n - 1);
        std::vector<std::size_t> order(n);
        std::iota(order.begin(), order.end(), std::size_t(0));
        Rng rng{hash64(s.seed, 0x76616c5f73706c74ull)};  // a stream of its own ("val_splt")
        for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[std::size_t(rng.below(i))]);
        for (std::size_t i = 0; i < k; ++i) is_val[order[i]] = 1;
    }
    std::vector<std::size_t> tr, va;
    for (std::size_t i = 0; i < n; ++i) (is_val[i] ? va : tr).push_back(i);
    SplitExamples out{all.select(tr), all.select(va)};
    for (auto [set, part] : {std::pair{&out.train, "the training part"}, std::pair{&out.val, "the validation part"}}) {
        if (va.empty()) break;  // nothing held out: the training part is everything
        ExampleOrigin o = set->origin();
        o.part = std::string(part) + " (" + std::to_string(set->size()) + " of " + std::to_string(n) + ")";
        set->set_origin(std::move(o));
    }
    return out;
}

// ---- the loader ---------------------------------------------------------------------------------------

class ExampleLoader {
public:
    /// Where the next batch comes from; stored in checkpoints as JSON (to_json / from_json below).
    struct Position {
        std::int64_t epoch = 0;
        std::int64_t index = 0;  // examples of this epoch's order already served
        std::uint64_t seed = 0;
        bool operator==(const Position&) const = default;
    };

    /// `data` must outlive the loader and stay at its address.
    /// With world > 1 the loader serves one rank's part of global batches of B x world examples: rank r gets
    /// examples [r*B, (r+1)*B) of each, so W ranks of batch B see exactly the batches of one process of
    /// batch W x B, and a Position (counted in examples) means the same for any W with the same B x W.
    ExampleLoader(const ExampleSet& data, int B, bool shuffle, std::uint64_t seed, bool drop_last = true, int rank = 0,
                  int world = 1)
        : data_(&data), B_(B), rank_(rank), G_(B * world), shuffle_(shuffle), drop_last_(drop_last), seed_(seed) {
        MT_CHECK(world >= 1 && rank >= 0 && rank < world, "ExampleLoader: rank ", rank, " outside [0, ", world, ")");
        MT_CHECK(B >= 1, "ExampleLoader: batch size must be positive, got ", B);
        MT_CHECK(data.arity() > 0, "ExampleLoader: empty example set");
        if (batches_per_epoch() == 0) {
            const ExampleOrigin& o = data.origin();
            detail::fail("ExampleLoader: ", data.size(), data.size() == 1 ? " example does" : " examples do",
                         " not make one batch of ", G_, world > 1 ? " (batch size x processes)" : "",
                         drop_last ? " (drop_last)" : "",
                         o.files.empty() ? std::string() : "; " + o.text() + ": " + o.advice(data.size(), G_));
        }
        reset();
    }

    /// Fills ids and targets, (A*B, T) i32 host tensors, with the next batch and advances.
    void next(const Tensor& ids, const Tensor& targets) {
        const int A = data_->arity(), T = data_->seq_len();
        check_shape(ids, Shape{A * B_, T}, "ExampleLoader::next", "ids");
        check_shape(targets, Shape{A * B_, T}, "ExampleLoader::next", "targets");
        MT_CHECK(ids.device == Device::cpu && targets.device == Device::cpu,
                 "ExampleLoader::next: ids and targets must be host tensors (copy them to the device afterwards)");
        std::int32_t* in = ids.data<std::int32_t>();       // (A*B, T)
        std::int32_t* tgt = targets.data<std::int32_t>();  // (A*B, T)
        const std::int64_t n = std::int64_t(data_->size());
        for (int b = 0; b < B_; ++b) {
            const std::int64_t k = index_ + std::int64_t(rank_) * B_ + b;
            for (int a = 0; a < A; ++a) {
                const std::size_t row = std::size_t(a) * std::size_t(B_) + std::size_t(b);
                std::int32_t* ri = in + row * std::size_t(T);
                std::int32_t* rt = tgt + row * std::size_t(T);
                if (k < n) {
                    data_->fill(example_at(k), a, ri, rt);
                } else {  // the last partial batch without drop_last: padding rows
                    std::fill(ri, ri + T, data_->pad_id());
                    std::fill(rt, rt + T, ignore_index);
                }
            }
        }
        index_ += G_;
        if (end_of_epoch()) {
            ++epoch_;
            index_ = 0;
            plan();
        }
    }

    /// Dataset index of the k-th example of the current epoch's order.
    std::size_t example_at(std::int64_t k) const { return shuffle_ ? std::size_t(order_[std::size_t(k)]) : std::size_t(k); }

    std::int64_t batches_per_epoch() const {
        const std::int64_t n = std::int64_t(data_->size());
        return drop_last_ ? n / G_ : (n + G_ - 1) / G_;
    }
    std::int64_t epoch() const { return epoch_; }
    int batch_size() const { return B_; }
    int seq_len() const { return data_->seq_len(); }
    int arity() const { return data_->arity(); }
    const ExampleSet& data() const { return *data_; }

    Position position() const { return {epoch_, index_, seed_}; }

    /// Continues from a saved position; its seed replaces the loader's.
    void seek(const Position& p) {
        MT_CHECK(p.epoch >= 0, "ExampleLoader::seek: negative epoch ", p.epoch);
        MT_CHECK(0 <= p.index && p.index <= std::int64_t(data_->size()), "ExampleLoader::seek: index ", p.index,
                 " outside [0, ", data_->size(), "] (was the position saved with other data?)");
        seed_ = p.seed;
        epoch_ = p.epoch;
        index_ = p.index;
        if (end_of_epoch()) {
            ++epoch_;
            index_ = 0;
        }
        plan();
    }

    /// Back to the first batch of epoch 0.
    void reset() { seek({0, 0, seed_}); }

private:
    bool end_of_epoch() const {
        const std::int64_t n = std::int64_t(data_->size());
        return drop_last_ ? index_ + G_ > n : index_ >= n;
    }
    void plan() {
        if (!shuffle_) return;
        const std::size_t n = data_->size();
        order_.resize(n);
        std::iota(order_.begin(), order_.end(), std::uint32_t(0));
        Rng rng{hash64(seed_, std::uint64_t(epoch_))};
        for (std::size_t i = n; i > 1; --i) std::swap(order_[i - 1], order_[std::size_t(rng.below(i))]);
    }

    const ExampleSet* data_;
    int B_, rank_, G_;  // this rank's batch, its rank, the global batch B x world
    bool shuffle_, drop_last_;
    std::uint64_t seed_;
    std::int64_t epoch_ = 0, index_ = 0;
    std::vector<std::uint32_t> order_;  // (N) dataset index of each step of the epoch (shuffle only)
};

/// {"epoch", "index", "seed"}; the seed as a decimal string so that all 64 bits survive JSON.
inline void to_json(nlohmann::json& j, const ExampleLoader::Position& p) {
    j = {{"epoch", p.epoch}, {"index", p.index}, {"seed", std::to_string(p.seed)}};
}
inline void from_json(const nlohmann::json& j, ExampleLoader::Position& p) {
    try {
        p.epoch = j.at("epoch").get<std::int64_t>();
        p.index = j.at("index").get<std::int64_t>();
        p.seed = std::stoull(j.at("seed").get<std::string>());
    } catch (const std::exception& e) {
        detail::fail("example loader position ", detail::show_json(j), ": expected {epoch, index, seed} (", e.what(), ")");
    }
}

}  // namespace minitrain
