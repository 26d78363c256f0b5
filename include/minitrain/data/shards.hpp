// minitrain/data/shards.hpp
// Pretokenized training data in llm.c's shard format, so that data prepared by llm.c's scripts (and by
// ours) can be used as is:
//
//   header: 256 little-endian int32   [0] magic, [1] version, [2] number of tokens, the rest zero
//   tokens: magic 20240520, version 1 -> uint16 each (GPT-2 sized vocabularies, <= 65536)
//           magic 20240801, version 7 -> uint32 each (larger vocabularies, e.g. Llama 3)
//
// TokenShard maps one file and checks its header against the file's length; TokenDataset opens one file
// or a glob of them and checks every token against the vocabulary once, at open, so a bad shard fails
// before training starts rather than as an out-of-bounds embedding lookup hours in.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <glob.h>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"
#include "../io/mmap.hpp"

namespace minitrain {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and are read in place: big-endian hosts are unsupported");

namespace shard_format {
inline constexpr int header_ints = 256;
inline constexpr std::size_t header_bytes = header_ints * sizeof(std::int32_t);
inline constexpr std::int32_t magic_u16 = 20240520, version_u16 = 1;
inline constexpr std::int32_t magic_u32 = 20240801, version_u32 = 7;
}  // namespace shard_format

/// Writes `tokens` as an llm.c shard: uint16 tokens when vocab_size <= 65536, uint32 otherwise. Every
/// token must be < vocab_size. The file is replaced atomically.
inline void write_token_shard(const std::filesystem::path& path, std::span<const std::uint32_t> tokens, int vocab_size) {
    namespace sf = shard_format;
    const std::string where = path.string();
    MT_CHECK(vocab_size > 0, where, ": vocab_size must be positive, got ", vocab_size);
    MT_CHECK(tokens.size() <= std::size_t(std::numeric_limits<std::int32_t>::max()), where, ": ", tokens.size(),
             " tokens do not fit one shard (the header stores the count as int32)");
    for (std::size_t i = 0; i < tokens.size(); ++i)
        MT_CHECK(tokens[i] < std::uint32_t(vocab_size), where, ": token at offset ", i, " is ", tokens[i],
                 ", outside the vocabulary (size ", vocab_size, ")");
    const bool narrow = vocab_size <= 65536;
    std::int32_t header[sf::header_ints] = {};
    header[0] = narrow ? sf::magic_u16 : sf::magic_u32;
    header[1] = narrow ? sf::version_u16 : sf::version_u32;
    header[2] = std::int32_t(tokens.size());

    write_file_atomic(path, [&](std::ostream& os) {
        os.write(reinterpret_cast<const char*>(header), sizeof header);
        if (!narrow) {
            os.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size_bytes()));
            return;
        }
        // Narrow in chunks through a fixed buffer rather than a copy of the whole shard.
        std::uint16_t chunk[8192];
        for (std::size_t i = 0; i < tokens.size(); i += std::size(chunk)) {
            std::size_t n = std::min(std::size(chunk), tokens.size() - i);
            for (std::size_t j = 0; j < n; ++j) chunk[j] = std::uint16_t(tokens[i + j]);
            os.write(reinterpret_cast<const char*>(chunk), std::streamsize(n * sizeof(std::uint16_t)));
        }
    });
}

/// One memory-mapped shard. The header is validated against the file length at open.
class TokenShard {
public:
    explicit TokenShard(const std::filesystem::path& path) : file_(path), where_(path.string()) {
        namespace sf = shard_format;
        const std::size_t size = file_.size();
        MT_CHECK(size >= sf::header_bytes, where_, ": file is ", size, " bytes, shorter than the ", sf::header_bytes,
                 "-byte shard header");
        std::int32_t h[3];
        std::memcpy(h, file_.data(), sizeof h);
        if (h[0] == sf::magic_u16) {
            MT_CHECK(h[1] == sf::version_u16, where_, ": shard magic ", h[0], " expects version ", sf::version_u16,
                     ", found ", h[1]);
            width_ = 2;
        } else if (h[0] == sf::magic_u32) {
            MT_CHECK(h[1] == sf::version_u32, where_, ": shard magic ", h[0], " expects version ", sf::version_u32,
                     ", found ", h[1]);
            width_ = 4;
        } else {
            detail::fail(where_, ": unknown shard magic ", h[0], " (expected ", sf::magic_u16, " for uint16 tokens or ",
                         sf::magic_u32, " for uint32 tokens)");
        }
        MT_CHECK(h[2] >= 0, where_, ": header token count is negative (", h[2], ")");
        size_ = h[2];
        std::size_t expected = sf::header_bytes + std::size_t(size_) * width_;
        MT_CHECK(size == expected, where_, ": header says ", size_, " tokens of ", width_, " bytes, so the file should be ",
                 expected, " bytes, found ", size, size < expected ? " (truncated)" : " (trailing bytes)");
        file_.advise_sequential();
    }

    const std::filesystem::path& path() const { return file_.path(); }
    /// Number of tokens.
    std::int64_t size() const { return size_; }
    /// Bytes per token on disk: 2 or 4.
    int token_bytes() const { return width_; }

    std::uint32_t token(std::int64_t i) const {
        MT_CHECK(0 <= i && i < size_, where_, ": token index ", i, " outside [0, ", size_, ")");
        return width_ == 2 ? std::uint32_t(u16()[i]) : u32()[i];
    }

    /// dst[k] = token(begin + k) for k < n, as int32 (the dtype of token tensors).
    void read(std::int64_t begin, std::int64_t n, std::int32_t* dst) const {
        MT_CHECK(0 <= begin && 0 <= n && begin + n <= size_, where_, ": tokens [", begin, ", ", begin + n,
                 ") outside [0, ", size_, ")");
        if (width_ == 2) {
            const std::uint16_t* s = u16() + begin;
            for (std::int64_t k = 0; k < n; ++k) dst[k] = std::int32_t(s[k]);
        } else {
            const std::uint32_t* s = u32() + begin;
            for (std::int64_t k = 0; k < n; ++k) dst[k] = std::int32_t(s[k]);
        }
    }

    /// Throws Error naming the file, the token offset and the value of the first token >= vocab_size.
    void validate(int vocab_size) const {
        MT_CHECK(vocab_size > 0, where_, ": vocab_size must be positive, got ", vocab_size);
        const std::uint32_t v = std::uint32_t(vocab_size);
        // One vectorizable max-reduction over the shard; only on failure look for where it happened.
        auto scan = [&](const auto* s) {
            using U = std::remove_cvref_t<decltype(*s)>;
            U mx = 0;
            for (std::int64_t i = 0; i < size_; ++i) mx = std::max(mx, s[i]);
            if (std::uint32_t(mx) < v) return;
            for (std::int64_t i = 0; i < size_; ++i)
                if (std::uint32_t(s[i]) >= v)
                    detail::fail(where_, ": token at offset ", i, " is ", std::uint32_t(s[i]),
                                 ", outside the vocabulary (size ", vocab_size, ")");
        };
        if (width_ == 2) {
            if (v >= 65536) return;  // every uint16 fits
            scan(u16());
        } else {
            scan(u32());
        }
    }

private:
    // The header is 1024 bytes into a page-aligned mapping, so the token array is aligned for both widths.
    const std::uint16_t* u16() const {
        return reinterpret_cast<const std::uint16_t*>(file_.data() + shard_format::header_bytes);
    }
    const std::uint32_t* u32() const {
        return reinterpret_cast<const std::uint32_t*>(file_.data() + shard_format::header_bytes);
    }

    MappedFile file_;
    std::string where_;
    std::int64_t size_ = 0;
    int width_ = 2;
};

/// The shards of one file or of a glob pattern (sorted by path), every token checked against the vocabulary.
class TokenDataset {
public:
    /// `pattern`: a path, or a POSIX glob such as "data/fineweb_train_*.bin".
    TokenDataset(const std::string& pattern, int vocab_size) : pattern_(pattern), vocab_(vocab_size) {
        MT_CHECK(vocab_size > 0, "TokenDataset(", pattern, "): vocab_size must be positive, got ", vocab_size);
        std::vector<std::string> paths;
        if (pattern.find_first_of("*?[") == std::string::npos) {
            paths.push_back(pattern);  // a plain path: let the open report what is wrong with it
        } else {
            glob_t g{};
            int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
            if (rc == 0)
                for (std::size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
            ::globfree(&g);
            MT_CHECK(rc != GLOB_NOMATCH, "TokenDataset: no file matches \"", pattern, "\"");
            MT_CHECK(rc == 0, "TokenDataset: glob(\"", pattern, "\") failed (", rc == GLOB_NOSPACE ? "out of memory" : "read error", ")");
            // Byte order, not the locale's collation, so every machine sees the same shard order.
            std::sort(paths.begin(), paths.end());
        }
        shards_.reserve(paths.size());
        for (auto& p : paths) {
            shards_.emplace_back(p);
            shards_.back().validate(vocab_size);
        }
    }

    std::size_t size() const { return shards_.size(); }
    const TokenShard& shard(std::size_t i) const {
        MT_CHECK(i < shards_.size(), "TokenDataset(", pattern_, "): shard ", i, " of ", shards_.size());
        return shards_[i];
    }
    const std::vector<TokenShard>& shards() const { return shards_; }
    std::int64_t total_tokens() const {
        std::int64_t n = 0;
        for (auto& s : shards_) n += s.size();
        return n;
    }
    int vocab_size() const { return vocab_; }
    const std::string& pattern() const { return pattern_; }

private:
    std::string pattern_;
    int vocab_;
    std::vector<TokenShard> shards_;
};

}  // namespace minitrain
