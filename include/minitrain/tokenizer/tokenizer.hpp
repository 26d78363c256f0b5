// minitrain/tokenizer/tokenizer.hpp
// Tokenizer: byte-level BPE (the GPT-2 / MiniMind / nanochat family), compatible with Hugging Face
// tokenizer.json files. text -> split on special tokens -> pre-tokens (PCRE2 regex) -> UTF-8 bytes
// mapped to GPT-2's printable byte alphabet -> merges applied lowest rank first -> ids. decode is the
// reverse and is exact for any byte string, invalid UTF-8 included (every byte is a base token).
//
// The pieces: bytes.hpp (the byte alphabet), pretokenize.hpp (PCRE2 regex), bpe.hpp (tables, merge loop,
// word cache, decode), train.hpp (vocabulary training), hf_json.hpp (tokenizer.json).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../io/json.hpp"
#include "../io/mmap.hpp"
#include "bpe.hpp"
#include "hf_json.hpp"
#include "train.hpp"

#include <nlohmann/json.hpp>

namespace minitrain {

/// A byte-level BPE tokenizer. Immutable after construction: every const member is thread-safe
/// (encoding caches are thread_local, keyed by tokenizer instance), so many threads may encode with
/// one Tokenizer at once. Cheap to copy (the tables are shared, immutable).
class Tokenizer {
public:
    /// Loads a Hugging Face tokenizer.json with a ByteLevel BPE model (model.vocab, model.merges as
    /// "a b" strings or [a, b] pairs, added_tokens, a ByteLevel or Split/Sequence pre_tokenizer, a
    /// ByteLevel decoder). Unsupported components throw Error naming the file and the field.
    static Tokenizer load(const std::filesystem::path& tokenizer_json);

    /// Writes a tokenizer.json that Hugging Face tokenizers loads (version "1.0", ByteLevel
    /// pre-tokenizer and decoder, BPE model with vocab and merges). Atomic: readers see the old or
    /// the new file, never a half-written one.
    void save(const std::filesystem::path& tokenizer_json) const;

    struct TrainOptions {
        int vocab_size = 6400;  ///< total, special tokens and the 256 byte tokens included
        std::vector<std::string> special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};  ///< ids 0, 1, 2 ...
        int min_frequency = 2;  ///< a pair seen fewer times than this is never merged (training stops)
        int threads = 0;        ///< word counting threads; 0 = hardware concurrency. Does not change the result.
        bool progress = false;  ///< print progress to stderr
        tok::Pattern pattern = tok::Pattern::gpt2;  ///< pre-tokenization regex: GPT-2 (as MiniMind) or GPT-4 (cl100k)
        std::size_t max_record_bytes = jsonl_max_record_bytes;  ///< a longer .jsonl line is an Error
    };

    /// Trains a tokenizer on text files; a file whose name ends in .jsonl is read as one JSON object
    /// per line and its "text" field is used. Deterministic: the same input gives the same tokenizer.
    /// Ids: special tokens first (in the order given), then the 256 byte tokens, then one per merge.
    /// Ties between equally frequent pairs go to the smallest (left id, right id), Hugging Face's rule;
    /// byte tokens are numbered in code-point order, so among byte pairs that is the lexicographically
    /// smallest pair of token strings. The thread count does not change the result.
    static Tokenizer train(const std::vector<std::filesystem::path>& files, const TrainOptions& options);

    /// Trains on in-memory texts (each one a document); otherwise as train().
    static Tokenizer train_from_texts(const std::vector<std::string>& texts, const TrainOptions& options);

    /// Encodes text to ids. When allow_special, occurrences of special tokens in the text become their ids
    /// (leftmost, then longest match first) and are never split; otherwise they are encoded as plain text.
    /// Added tokens that are not special (e.g. "<think>" in minimind3) are always matched, as Hugging
    /// Face does. No BOS/EOS is added.
    std::vector<std::int32_t> encode(std::string_view text, bool allow_special = true) const;

    /// As encode(), but appends to `out`; no allocation per call once `out` and the thread's word cache
    /// have grown (steady state).
    void encode_into(std::string_view text, std::vector<std::int32_t>& out, bool allow_special = true) const;

    /// Ids to bytes, exactly: decode(encode(x)) == x for any byte string x. Throws Error on an id
    /// outside [0, vocab_size()).
    std::string decode(std::span<const std::int32_t> ids) const;

    /// Number of ids, special/added tokens included (max id + 1).
    int vocab_size() const;

    /// The id of a token given as its vocabulary string (byte-level form for regular tokens, e.g.
    /// "Ġthe", or the content of a special token). Throws Error when absent.
    std::int32_t token_id(std::string_view token) const;

    /// As token_id(), but nullopt when absent.
    std::optional<std::int32_t> find(std::string_view token) const;

    /// The vocabulary string of an id (byte-level form; special tokens as written). Error when out of range.
    std::string_view token(std::int32_t id) const;

    /// The contents of the added tokens (special ones and the others), in id order.
    const std::vector<std::string>& special_tokens() const;

    /// An empty tokenizer: every member but the static constructors throws Error.
    Tokenizer();

    /// The tables (advanced use: tests, tools).
    const tok::TokenizerData& data() const;

private:
    explicit Tokenizer(std::shared_ptr<const tok::TokenizerData> d) : d_(std::move(d)) {}

    std::shared_ptr<const tok::TokenizerData> d_;
};

// ---- implementation ---------------------------------------------------------------------------------

inline Tokenizer::Tokenizer() = default;

inline const tok::TokenizerData& Tokenizer::data() const {
    MT_CHECK(d_, "Tokenizer: empty tokenizer (use Tokenizer::load or Tokenizer::train)");
    return *d_;
}

inline Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json) {
    return Tokenizer(tok::load_hf_json(tokenizer_json));
}

inline void Tokenizer::save(const std::filesystem::path& tokenizer_json) const { tok::save_hf_json(data(), tokenizer_json); }

namespace tok {
inline TrainConfig train_config(const Tokenizer::TrainOptions& o) {
    return TrainConfig{o.vocab_size, o.special_tokens, o.min_frequency, o.threads, o.progress, o.pattern};
}
}  // namespace tok

inline Tokenizer Tokenizer::train(const std::vector<std::filesystem::path>& files, const TrainOptions& options) {
    std::vector<MappedFile> maps;       // plain text files, read in place
    std::vector<std::string> records;   // texts from .jsonl files
    maps.reserve(files.size());
    for (const auto& f : files) {
        MappedFile m(f);
        if (f.extension() != ".jsonl") {
            maps.push_back(std::move(m));
            continue;
        }
        std::string_view all(reinterpret_cast<const char*>(m.data()), m.size());
        std::size_t line_no = 0;
        for (std::size_t pos = 0; pos < all.size();) {
            std::size_t eol = all.find('\n', pos);
            if (eol == std::string_view::npos) eol = all.size();
            std::string_view line = all.substr(pos, eol - pos);
            pos = eol + 1;
            ++line_no;
            MT_CHECK(line.size() <= options.max_record_bytes, f.string(), ":", line_no, ": record too long: ", line.size(),
                     " bytes, the limit is ", options.max_record_bytes,
                     " bytes per JSONL record (split the record, or raise max_record_bytes)");
            if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
            const nlohmann::json j = detail::parse_json(line, f.string() + ":" + std::to_string(line_no));
            auto t = j.is_object() ? j.find("text") : j.end();
            MT_CHECK(j.is_object() && t != j.end() && t->is_string(), f.string(), ":", line_no,
                     ": expected an object with a string field \"text\"");
            records.push_back(t->get<std::string>());
        }
    }
    std::vector<std::string_view> docs;
    for (const auto& m : maps) docs.emplace_back(reinterpret_cast<const char*>(m.data()), m.size());
    for (const auto& r : records) docs.emplace_back(r);
    return Tokenizer(tok::train_on_docs(docs, tok::train_config(options)));
}

inline Tokenizer Tokenizer::train_from_texts(const std::vector<std::string>& texts, const TrainOptions& options) {
    std::vector<std::string_view> docs(texts.begin(), texts.end());
    return Tokenizer(tok::train_on_docs(docs, tok::train_config(options)));
}

inline std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
    std::vector<std::int32_t> out;
    out.reserve(text.size() / 3 + 4);
    encode_into(text, out, allow_special);
    return out;
}

inline void Tokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out, bool allow_special) const {
    tok::encode_text(data(), text, out, allow_special);
}

inline std::string Tokenizer::decode(std::span<const std::int32_t> ids) const { return tok::decode_ids(data(), ids); }

inline int Tokenizer::vocab_size() const { return data().n_ids; }

inline std::optional<std::int32_t> Tokenizer::find(std::string_view token) const {
    const auto& d = data();
    if (auto it = d.added_ids.find(token); it != d.added_ids.end()) return it->second;
    if (auto it = d.model_ids.find(token); it != d.model_ids.end()) return it->second;
    return std::nullopt;
}

inline std::int32_t Tokenizer::token_id(std::string_view token) const {
    auto id = find(token);
    MT_CHECK(id, "Tokenizer::token_id: \"", token, "\" is not in the vocabulary");
    return *id;
}

inline std::string_view Tokenizer::token(std::int32_t id) const {
    const auto& d = data();
    MT_CHECK(id >= 0 && id < d.n_ids && d.id_valid[std::size_t(id)], "Tokenizer::token: id ", id,
             " is not in the vocabulary (size ", d.n_ids, ")");
    return d.id_text[std::size_t(id)];
}

inline const std::vector<std::string>& Tokenizer::special_tokens() const { return data().added_contents; }

}  // namespace minitrain
