// minitrain/train/pretrain.hpp
// The Pretrain task policy: batches of B x T tokens from llm.c token shards, targets shifted by one.
// A task policy provides `Data`: a resumable source of training batches and a validation set.
#pragma once

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "../data/shards.hpp"
#include "../data/token_loader.hpp"
#include "../io/json.hpp"
#include "config.hpp"
#include "objective.hpp"

namespace minitrain {

struct Pretrain {
    static constexpr const char* name = "pretrain";
    class Data;
    /// Next-token prediction on every position.
    template <class Model>
    using Objective = LanguageModeling<Model, Data>;

    class Data {
    public:
        using Position = TokenLoader::Position;

        explicit Data(const TrainConfig& c, DataShard shard = {})
            : train_(check_path(c.train_data, "train_data"), c.vocab_size),
              loader_(train_, c.batch_size, c.max_seq_len, c.shuffle, c.seed, shard.rank, shard.world) {
            if (!c.val_data.empty()) {
                val_.emplace(c.val_data, c.vocab_size);
                val_loader_.emplace(*val_, c.batch_size, c.max_seq_len, false, 0, shard.rank, shard.world);
                bytes_per_token_ = read_bytes_per_token(c.val_data);
            }
        }

        /// Next training batch into host tensors ids, targets: (B, T) i32.
        void next(const Tensor& ids, const Tensor& targets) { loader_.next(ids, targets); }
        std::int64_t batches_per_epoch() const { return loader_.batches_per_epoch(); }
        std::int64_t epoch() const { return loader_.epoch(); }
        Position position() const { return loader_.position(); }
        void seek(const Position& p) { loader_.seek(p); }

        bool has_val() const { return val_loader_.has_value(); }
        std::int64_t val_batches() const { return val_loader_ ? val_loader_->batches_per_epoch() : 0; }
        void val_reset() { val_loader_->reset(); }
        void val_next(const Tensor& ids, const Tensor& targets) { val_loader_->next(ids, targets); }
        /// Average UTF-8 bytes per validation token, when the data preparation recorded it (0 otherwise).
        double bytes_per_token() const { return bytes_per_token_; }

    private:
        static const std::string& check_path(const std::string& p, const char* flag) {
            MT_CHECK(!p.empty(), "pretrain: ", flag, " is empty: give a token shard file or a glob of shards");
            return p;
        }
        /// `<shard or glob>.meta.json` with {"bytes": ..., "tokens": ...}, written by the data preparation.
        static double read_bytes_per_token(const std::string& pattern) {
            std::filesystem::path meta = pattern + ".meta.json";
            if (!std::filesystem::exists(meta)) return 0;
            const nlohmann::json j = detail::read_json(meta);
            MT_CHECK(j.is_object() && j.contains("bytes") && j.contains("tokens") && j["bytes"].is_number() &&
                         j["tokens"].is_number(),
                     meta.string(), ": expected an object with numbers \"bytes\" and \"tokens\", found ",
                     detail::short_json_error(j.dump()));
            double t = j["tokens"].get<double>();
            return t > 0 ? j["bytes"].get<double>() / t : 0;
        }

        TokenDataset train_;
        TokenLoader loader_;
        std::optional<TokenDataset> val_;
        std::optional<TokenLoader> val_loader_;
        double bytes_per_token_ = 0;
    };
};

}  // namespace minitrain
