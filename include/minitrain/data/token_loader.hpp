// minitrain/data/token_loader.hpp
// TokenLoader: pretraining batches from a TokenDataset, with llm.c's dataloader semantics.
//
// Legend: B = batch, T = time (sequence length), W = world (number of processes), r = this process's rank.
//
// A shard is cut into slots of B*T*W tokens. Slot i of a shard serves one global batch: rank r reads the
// B*T+1 consecutive tokens starting at i*B*T*W + r*B*T; its inputs are tokens [0, B*T) of that window seen
// as (B, T) and its targets tokens [1, B*T+1), so row b of the batch is the window of T+1 tokens starting
// at b*T and consecutive rows continue each other. A shard of n tokens has floor((n - 1) / (B*T*W)) slots
// (a slot is usable while its start + B*T*W + 1 <= n); after the last slot the loader moves to the next
// shard, and after the last shard the epoch ends and the loader wraps to the first shard, epoch + 1.
//
// Shuffling (one rule): per epoch, the order of the shards is permuted, and per (epoch, shard) the order of
// the slots within that shard is permuted. Windows never move: every batch is still the B*T+1 consecutive
// tokens of a slot, rows consecutive inside it (as in llm.c's shuffled loader, which permutes whole
// batch-sized samples), so a shuffled epoch yields exactly the batches of an unshuffled one, in another
// order. Permutations come from Rng seeded with hash64(seed, epoch) and do not depend on the rank, so all
// ranks step through the same global batches and read disjoint slices of them (llm.c seeds with the rank;
// we do not, on purpose). Because the order is a pure function of (seed, epoch, shard), Position is all
// that is needed to resume a run exactly.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "../io/json.hpp"
#include "shards.hpp"

namespace minitrain {

class TokenLoader {
public:
    /// Where the next batch comes from: a resumable cursor (store it in checkpoints).
    struct Position {
        std::int64_t epoch = 0;
        std::int64_t shard = 0;           // step in the epoch's shard order (= shard index when not shuffled)
        std::int64_t batch_in_shard = 0;  // step in the shard's slot order (= slot index when not shuffled)
        std::uint64_t seed = 0;
    };

    /// `data` must outlive the loader and stay at its address. Every shard must hold at least one slot
    /// (B*T*world + 1 tokens), as llm.c requires.
    TokenLoader(const TokenDataset& data, int B, int T, bool shuffle, std::uint64_t seed, int rank = 0, int world = 1)
        : data_(&data), B_(B), T_(T), rank_(rank), world_(world), shuffle_(shuffle), seed_(seed) {
        MT_CHECK(B >= 1 && T >= 1, "TokenLoader: B and T must be positive, got B=", B, ", T=", T);
        MT_CHECK(world >= 1 && 0 <= rank && rank < world, "TokenLoader: rank ", rank, " outside [0, ", world, ")");
        MT_CHECK(data.size() > 0, "TokenLoader: dataset \"", data.pattern(), "\" has no shards");
        const std::int64_t slot = slot_tokens();
        std::int64_t most = 0;
        per_epoch_ = 0;
        for (const TokenShard& s : data.shards()) {
            MT_CHECK(s.size() >= slot + 1, s.path().string(), ": ", s.size(), " tokens, but one batch needs B*T*world + 1 = ",
                     slot + 1, " (B=", B, ", T=", T, ", world=", world, ")");
            std::int64_t n = (s.size() - 1) / slot;
            batches_.push_back(n);
            per_epoch_ += n;
            most = std::max(most, n);
        }
        // Sized once, so that moving to a new shard or epoch reuses the storage.
        if (shuffle_) {
            shard_order_.reserve(data.size());
            batch_order_.reserve(std::size_t(most));
        }
        reset();
    }

    /// Fills inputs and targets, both (B, T) i32 CPU tensors, with the next batch and advances.
    void next(const Tensor& inputs, const Tensor& targets) {
        check_shape(inputs, Shape{B_, T_}, "TokenLoader::next", "inputs");
        check_shape(targets, Shape{B_, T_}, "TokenLoader::next", "targets");
        MT_CHECK(inputs.device == Device::cpu && targets.device == Device::cpu,
                 "TokenLoader::next: inputs and targets must be host tensors (copy them to the device afterwards)");
        std::int32_t* in = inputs.data<std::int32_t>();    // (B, T)
        std::int32_t* tgt = targets.data<std::int32_t>();  // (B, T)
        Location at = peek();
        const TokenShard& s = data_->shard(at.shard);
        const std::int64_t n = std::int64_t(B_) * T_;
        s.read(at.token, n, in);
        s.read(at.token + 1, n, tgt);
        advance();
    }

    /// Where the next batch starts for this rank: the shard's index in the dataset and the token offset.
    struct Location {
        std::size_t shard;
        std::int64_t token;
    };
    Location peek() const {
        std::size_t f = file();
        std::int64_t slot = shuffle_ ? batch_order_[std::size_t(batch_)] : batch_;
        return {f, slot * slot_tokens() + std::int64_t(rank_) * B_ * T_};
    }

    /// Batches in one pass over every shard (the same for every rank).
    std::int64_t batches_per_epoch() const { return per_epoch_; }
    /// Batches shard `i` of the dataset provides per epoch.
    std::int64_t batches_in_shard(std::size_t i) const { return batches_.at(i); }
    std::int64_t epoch() const { return epoch_; }
    int batch_size() const { return B_; }
    int seq_len() const { return T_; }

    Position position() const { return {epoch_, shard_, batch_, seed_}; }

    /// Continues from a saved position. The position's seed replaces the loader's, since the saved order is
    /// what must be continued. batch_in_shard may equal the shard's batch count (end of shard).
    void seek(const Position& p) {
        MT_CHECK(p.epoch >= 0, "TokenLoader::seek: negative epoch ", p.epoch);
        MT_CHECK(0 <= p.shard && p.shard < std::int64_t(data_->size()), "TokenLoader::seek: shard ", p.shard,
                 " outside [0, ", data_->size(), ") for dataset \"", data_->pattern(), "\"");
        std::size_t f = std::size_t(p.shard);
        if (shuffle_) {
            std::vector<std::int32_t> order;
            permutation(order, data_->size(), shard_order_seed(p.seed, p.epoch));
            f = std::size_t(order[f]);
        }
        MT_CHECK(0 <= p.batch_in_shard && p.batch_in_shard <= batches_[f], "TokenLoader::seek: batch ", p.batch_in_shard,
                 " outside [0, ", batches_[f], "] for ", data_->shard(f).path().string(),
                 " (was the position saved with other B, T, world or data?)");
        seed_ = p.seed;
        epoch_ = p.epoch;
        shard_ = p.shard;
        batch_ = p.batch_in_shard;
        plan_epoch();
        plan_shard();
        if (batch_ == batches_[f]) {
            batch_ = batches_[f] - 1;
            advance();
        }
    }

    /// Back to the first batch of epoch 0 (the same batches as a fresh loader with this seed).
    void reset() { seek({0, 0, 0, seed_}); }

private:
    std::int64_t slot_tokens() const { return std::int64_t(B_) * T_ * world_; }
    std::size_t file() const { return shuffle_ ? std::size_t(shard_order_[std::size_t(shard_)]) : std::size_t(shard_); }

    static std::uint64_t shard_order_seed(std::uint64_t seed, std::int64_t epoch) {
        return hash64(hash64(seed, std::uint64_t(epoch)), ~std::uint64_t(0));
    }
    static std::uint64_t batch_order_seed(std::uint64_t seed, std::int64_t epoch, std::size_t file) {
        return hash64(hash64(seed, std::uint64_t(epoch)), file);
    }

    /// out = a uniformly random permutation of 0..n-1 (Fisher-Yates). Reuses out's capacity.
    template <class I>
    static void permutation(std::vector<I>& out, std::size_t n, std::uint64_t seed) {
        out.resize(n);
        std::iota(out.begin(), out.end(), I(0));
        Rng rng{seed};
        for (std::size_t i = n; i > 1; --i) std::swap(out[i - 1], out[std::size_t(rng.below(i))]);
    }

    void plan_epoch() {
        if (shuffle_) permutation(shard_order_, data_->size(), shard_order_seed(seed_, epoch_));
    }
    void plan_shard() {
        if (shuffle_) {
            std::size_t f = file();
            permutation(batch_order_, std::size_t(batches_[f]), batch_order_seed(seed_, epoch_, f));
        }
    }

    void advance() {
        if (++batch_ < batches_[file()]) return;
        batch_ = 0;
        if (++shard_ == std::int64_t(data_->size())) {
            shard_ = 0;
            ++epoch_;
            plan_epoch();
        }
        plan_shard();
    }

    const TokenDataset* data_;
    int B_, T_, rank_, world_;
    bool shuffle_;
    std::uint64_t seed_;
    std::vector<std::int64_t> batches_;  // (shards) slots per shard, in dataset order
    std::int64_t per_epoch_ = 0;
    std::int64_t epoch_ = 0, shard_ = 0, batch_ = 0;
    std::vector<std::int32_t> shard_order_;  // (shards) dataset index of each step of the epoch (shuffle only)
    std::vector<std::int64_t> batch_order_;  // (slots of the current shard) slot of each step (shuffle only)
};

/// Positions travel in checkpoints as JSON; the seed as a decimal string so all 64 bits survive.
inline void to_json(nlohmann::json& j, const TokenLoader::Position& p) {
    j = {{"epoch", p.epoch}, {"shard", p.shard}, {"batch_in_shard", p.batch_in_shard}, {"seed", std::to_string(p.seed)}};
}
inline void from_json(const nlohmann::json& j, TokenLoader::Position& p) {
    try {
        p.epoch = j.at("epoch").get<std::int64_t>();
        p.shard = j.at("shard").get<std::int64_t>();
        p.batch_in_shard = j.at("batch_in_shard").get<std::int64_t>();
        p.seed = std::stoull(j.at("seed").get<std::string>());
    } catch (const std::exception& e) {
        detail::fail("data position ", detail::show_json(j), ": expected {epoch, shard, batch_in_shard, seed} (", e.what(), ")");
    }
}

}  // namespace minitrain
