// minitrain/train/sft.hpp
// The SFT task policy: supervised fine-tuning on conversations (MiniMind's JSONL
// {"conversations": [{"role", "content"}, ...]}), rendered with ChatML; the loss covers the assistant
// replies only (data/chat.hpp marks every other target -100). Everything else -- logging, evaluation,
// checkpoints, resume -- is the Pretrain trainer's.
#pragma once

#include <memory>
#include <optional>

#include "../data/sft.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "config.hpp"
#include "objective.hpp"

namespace minitrain {

struct SFT {
    static constexpr const char* name = "sft";
    class Data;
    /// Next-token prediction on the supervised (assistant) positions.
    template <class Model>
    using Objective = LanguageModeling<Model, Data>;

    class Data {
    public:
        using Position = ExampleLoader::Position;

        explicit Data(const TrainConfig& c, DataShard shard = {}) : Data(c, ExampleKind::sft, shard) {}

        void next(const Tensor& ids, const Tensor& targets) { loader_->next(ids, targets); }
        std::int64_t batches_per_epoch() const { return loader_->batches_per_epoch(); }
        std::int64_t epoch() const { return loader_->epoch(); }
        Position position() const { return loader_->position(); }
        void seek(const Position& p) { loader_->seek(p); }

        bool has_val() const { return val_loader_ != nullptr; }
        std::int64_t val_batches() const { return val_loader_ ? val_loader_->batches_per_epoch() : 0; }
        void val_reset() { val_loader_->reset(); }
        void val_next(const Tensor& ids, const Tensor& targets) { val_loader_->next(ids, targets); }
        /// Conversations carry no byte counts: bits per byte are not reported.
        double bytes_per_token() const { return 0; }

        const Tokenizer& tokenizer() const { return tokenizer_; }
        const ExampleStats& stats() const { return stats_; }
        std::size_t train_examples() const { return train_.size(); }
        std::size_t val_examples() const { return val_.size(); }

    protected:
        /// Shared with DPO, whose examples are (chosen, rejected) pairs of the same conversations.
        Data(const TrainConfig& c, ExampleKind kind, DataShard shard) : tokenizer_(load_tokenizer(c)), kind_(kind) {
            MT_CHECK(!c.train_data.empty(), name_of(kind), ": train_data is empty: give a JSONL file (or a glob)");
            MT_CHECK(tokenizer_.vocab_size() <= c.vocab_size, c.tokenizer, ": the tokenizer has ", tokenizer_.vocab_size(),
                     " tokens but vocab_size is ", c.vocab_size);
            ExampleOptions o;
            o.max_seq_len = c.max_seq_len;
            o.on_error = c.skip_bad_records ? OnError::skip : OnError::fail;
            ExampleSet all = load_examples(kind, {c.train_data}, tokenizer_, o, &stats_);
            if (!c.val_data.empty()) {
                train_ = std::move(all);
                val_ = load_examples(kind, {c.val_data}, tokenizer_, o);
            } else if (c.val_fraction > 0) {
                auto split = split_examples(all, ValSplit{c.val_fraction, 0, c.seed});
                train_ = std::move(split.train);
                val_ = std::move(split.val);
            } else {
                train_ = std::move(all);
            }
            loader_ = std::make_unique<ExampleLoader>(train_, c.batch_size, c.shuffle, c.seed, true, shard.rank, shard.world);
            if (val_.size() > 0)
                val_loader_ = std::make_unique<ExampleLoader>(val_, c.batch_size, false, 0, false, shard.rank, shard.world);
        }

    private:
        static const char* name_of(ExampleKind k) { return k == ExampleKind::dpo ? "dpo" : "sft"; }
        static Tokenizer load_tokenizer(const TrainConfig& c) {
            MT_CHECK(!c.tokenizer.empty(), "the ", c.train_data,
                     " conversations need a tokenizer: give --tokenizer tokenizer.json");
            return Tokenizer::load(c.tokenizer);
        }

        Tokenizer tokenizer_;
        ExampleKind kind_;
        ExampleStats stats_;
        ExampleSet train_, val_;
        std::unique_ptr<ExampleLoader> loader_, val_loader_;  // point into train_ / val_: Data does not move
    };
};

}  // namespace minitrain
