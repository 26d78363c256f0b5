// minitrain/data/packing.hpp
// How training sequences are made from documents.
//
// Pretraining packs: documents are concatenated into one token stream, each document followed by the
// end-of-text token (<|endoftext|>; GPT-2 style, the EOT closes a document, so "<|endoftext|>" marks
// "a new document starts here" to the model), and the stream is cut into llm.c shards of a fixed number
// of tokens. A document may continue from one shard into the next. The TokenLoader then cuts the shards
// into windows of T + 1 tokens that cross document boundaries freely: no padding, no token wasted.
//
// SFT does not pack: every conversation is its own row of T positions, padded with the pad id and with
// ignore_index targets on the padding (chat.hpp, shift_sequence).
//
// ShardWriter writes the stream: DIR/<prefix>_000000.bin, DIR/<prefix>_000001.bin, ... holding
// shard_tokens tokens each, except the last. The last shard is never shorter than half a shard: a
// shorter tail is appended to the previous shard instead (so it may hold up to 1.5 x shard_tokens), which
// keeps every shard long enough for the TokenLoader (it needs B*T + 1 tokens per shard). At most one
// shard of tokens is held in memory (plus, once, the previous shard while merging the tail).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "shards.hpp"

namespace minitrain {

/// Appends a document and the end-of-text id to a token stream (the packing rule above).
inline void pack_document(std::vector<std::int32_t>& stream, std::span<const std::int32_t> document, std::int32_t eot_id) {
    stream.insert(stream.end(), document.begin(), document.end());
    stream.push_back(eot_id);
}

class ShardWriter {
public:
    /// Shards go to dir/<prefix>_NNNNNN.bin (the directory is created). vocab_size picks the token width.
    ShardWriter(std::filesystem::path dir, std::string prefix, std::int64_t shard_tokens, int vocab_size)
        : dir_(std::move(dir)), prefix_(std::move(prefix)), shard_tokens_(shard_tokens), vocab_(vocab_size) {
        MT_CHECK(shard_tokens >= 2, "ShardWriter: shard_tokens must be at least 2, got ", shard_tokens);
        MT_CHECK(vocab_size > 0, "ShardWriter: vocab_size must be positive, got ", vocab_size);
        std::filesystem::create_directories(dir_);
    }

    /// Appends tokens to the stream; every full shard is written as it fills.
    void append(std::span<const std::int32_t> tokens) {
        MT_CHECK(!finished_, "ShardWriter(", pattern(), "): append after finish");
        std::size_t i = 0;
        while (i < tokens.size()) {
            if (buf_.capacity() == 0) buf_.reserve(std::size_t(shard_tokens_));
            std::size_t room = std::size_t(shard_tokens_) - buf_.size();
            std::size_t n = std::min(room, tokens.size() - i);
            for (std::size_t k = 0; k < n; ++k) {
                const std::int32_t t = tokens[i + k];
                MT_CHECK(t >= 0 && t < vocab_, "ShardWriter(", pattern(), "): token ", t, " outside the vocabulary (size ", vocab_, ")");
                buf_.push_back(std::uint32_t(t));
            }
            i += n;
            total_ += std::int64_t(n);
            if (buf_.size() == std::size_t(shard_tokens_)) flush();
        }
    }
    void append(std::int32_t token) { append(std::span<const std::int32_t>(&token, 1)); }

    /// Writes the last, partial shard (or merges it into the previous one, see the top of this file).
    /// Idempotent. Without any token, no file is written.
    void finish() {
        if (finished_) return;
        finished_ = true;
        if (buf_.empty()) return;
        if (!files_.empty() && std::int64_t(buf_.size()) * 2 < shard_tokens_) {
            const std::filesystem::path last = files_.back();
            std::vector<std::uint32_t> merged;
            {
                TokenShard prev(last);
                merged.resize(std::size_t(prev.size()) + buf_.size());
                // int32 and uint32 may alias; every token is < vocab_size <= 2^31, so the bits are the value.
                prev.read(0, prev.size(), reinterpret_cast<std::int32_t*>(merged.data()));
            }
            std::copy(buf_.begin(), buf_.end(), merged.begin() + std::ptrdiff_t(merged.size() - buf_.size()));
            write_token_shard(last, merged, vocab_);
        } else {
            flush();
        }
        buf_.clear();
        buf_.shrink_to_fit();
    }

    /// Tokens appended so far.
    std::int64_t tokens() const { return total_; }
    /// Shard files written so far (all of them after finish()).
    const std::vector<std::filesystem::path>& files() const { return files_; }
    /// The glob that matches this writer's shards: "dir/<prefix>_*.bin".
    std::string pattern() const { return (dir_ / (prefix_ + "_*.bin")).string(); }

    /// dir/<prefix>_<index, 6 digits>.bin
    static std::filesystem::path shard_path(const std::filesystem::path& dir, const std::string& prefix, std::size_t index) {
        char name[32];
        std::snprintf(name, sizeof name, "_%06zu.bin", index);
        return dir / (prefix + name);
    }

private:
    void flush() {
        std::filesystem::path p = shard_path(dir_, prefix_, files_.size());
        write_token_shard(p, buf_, vocab_);
        files_.push_back(p);
        buf_.clear();
    }

    std::filesystem::path dir_;
    std::string prefix_;
    std::int64_t shard_tokens_;
    int vocab_;
    std::vector<std::uint32_t> buf_;  // (<= shard_tokens) the shard being filled
    std::vector<std::filesystem::path> files_;
    std::int64_t total_ = 0;
    bool finished_ = false;
};

}  // namespace minitrain
