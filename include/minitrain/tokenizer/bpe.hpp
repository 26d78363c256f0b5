// minitrain/tokenizer/bpe.hpp
// The byte-level BPE model: the tables a tokenizer is made of (TokenizerData), the merge loop that turns
// one pre-tokenized word into ids, the per-thread word cache, special-token splitting, and decoding.
//
// Encoding one word (bytes b0..bn-1): start from the byte tokens, then repeatedly merge the adjacent
// pair with the lowest merge rank, leftmost first on ties, until no adjacent pair has a rank. This is
// what Hugging Face's BPE does (a priority queue of (rank, position) over a linked list of symbols),
// and what we do too: O(n log n) per word, so a long word (a Chinese sentence is one \p{L}+ run) stays
// cheap. Results for frequent words come from a bounded per-thread cache.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "bytes.hpp"
#include "pretokenize.hpp"

namespace minitrain::tok {

// ---- hashing --------------------------------------------------------------------------------------

inline std::uint64_t mix64(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/// A fast string hash (8 bytes at a time); only used inside one process, never stored.
inline std::uint64_t hash_bytes(std::string_view s) {
    std::uint64_t h = 0x9E3779B97F4A7C15ULL ^ s.size();
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        h = mix64(h ^ w) + 0x9E3779B97F4A7C15ULL;
    }
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    return mix64(h ^ w ^ (std::uint64_t(s.size() - i) << 59));
}

inline std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
}

/// Open-addressing hash map from a 64-bit key to a 64-bit value (linear probing, power-of-two table,
/// grows at 1/2 load). Keys are pairs of token ids; ~0 is reserved as the empty marker.
class PairMap {
public:
    static constexpr std::uint64_t empty = ~std::uint64_t(0);

    explicit PairMap(std::size_t expected = 16) { rehash(std::bit_ceil(std::max<std::size_t>(16, expected * 2))); }

    std::size_t size() const { return size_; }

    const std::uint64_t* find(std::uint64_t key) const {
        for (std::size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
            if (keys_[i] == key) return &vals_[i];
            if (keys_[i] == empty) return nullptr;
        }
    }
    std::uint64_t* find(std::uint64_t key) {
        return const_cast<std::uint64_t*>(static_cast<const PairMap*>(this)->find(key));
    }

    /// The value for key, inserted as `init` when absent.
    std::uint64_t& get(std::uint64_t key, std::uint64_t init = 0) {
        if ((size_ + 1) * 2 > keys_.size()) rehash(keys_.size() * 2);
        std::size_t i = mix64(key) & mask_;
        for (; keys_[i] != empty; i = (i + 1) & mask_)
            if (keys_[i] == key) return vals_[i];
        keys_[i] = key;
        vals_[i] = init;
        ++size_;
        return vals_[i];
    }

private:
    void rehash(std::size_t cap) {
        std::vector<std::uint64_t> k(cap, empty), v(cap, 0);
        std::size_t m = cap - 1;
        for (std::size_t j = 0; j < keys_.size(); ++j) {
            if (keys_[j] == empty) continue;
            std::size_t i = mix64(keys_[j]) & m;
            while (k[i] != empty) i = (i + 1) & m;
            k[i] = keys_[j];
            v[i] = vals_[j];
        }
        keys_.swap(k);
        vals_.swap(v);
        mask_ = m;
    }

    std::vector<std::uint64_t> keys_, vals_;
    std::size_t mask_ = 0, size_ = 0;
};

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::size_t(hash_bytes(s)); }
};
using StringIdMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

// ---- the tables -----------------------------------------------------------------------------------

/// A token added on top of the BPE model (Hugging Face added_tokens): matched in the text before
/// pre-tokenization and never split. `special` ones are only matched when encoding with allow_special.
struct AddedToken {
    std::int32_t id = 0;
    std::string content;
    bool special = true;
};

/// What pre_tokenizer the tokenizer.json had, to write it back the same way.
enum class PreTokenizerKind {
    byte_level_regex,     // {"type": "ByteLevel", "use_regex": true}: the GPT-2 pattern
    byte_level_no_regex,  // {"type": "ByteLevel", "use_regex": false}: no split
    split_then_byte_level // {"type": "Sequence", [Split(regex, Isolated), ByteLevel(use_regex false)]}
};

/// Everything a tokenizer is. Built once (by load or train), then immutable and shared by copies.
struct TokenizerData {
    // ---- the definition (what tokenizer.json holds) ----
    std::vector<std::string> model_vocab;                        // id -> byte-level string; "" = id not in model.vocab
    std::vector<std::pair<std::int32_t, std::int32_t>> merges;  // rank -> (left id, right id)
    std::vector<AddedToken> added;                               // sorted by id
    PreTokenizerKind pre_kind = PreTokenizerKind::byte_level_regex;
    PreTokenizer pre;         // the regex (empty when none) and add_prefix_space
    bool trim_offsets = true;  // written back only: offsets are not computed here
    bool ignore_merges = false;  // HF BPE option: a word that is itself in the vocabulary maps to it directly

    // ---- derived by finish() ----
    std::uint64_t uid = 0;                  // distinguishes instances for the per-thread caches
    int n_ids = 0;                          // max id + 1
    std::vector<std::string> id_text;       // id -> token string (added content, else model string)
    std::vector<std::uint8_t> id_valid;     // id -> 1 when the id exists
    StringIdMap model_ids;                  // byte-level string -> id
    StringIdMap added_ids;                  // added content -> id
    std::array<std::int32_t, 256> byte_id{};  // raw byte -> id of its byte token
    PairMap merge_map;                      // (left, right) -> rank << 32 | merged id
    std::string id_bytes;                   // decoded bytes of every id, concatenated
    std::vector<std::uint32_t> id_bytes_off;  // (n_ids + 1) offsets into id_bytes
    std::vector<std::string> added_contents;  // contents in id order (special_tokens())
    // added tokens to look for, longest first: [0] all (allow_special), [1] the non-special ones only
    std::array<std::vector<std::int32_t>, 2> match_order;  // indices into `added`
    std::array<std::array<std::uint8_t, 256>, 2> first_byte{};  // byte may start an added token

    /// Computes the derived tables and checks consistency; `where` prefixes error messages (a file name).
    void finish(const std::string& where);
};

inline std::uint64_t next_tokenizer_uid() {
    static std::atomic<std::uint64_t> counter{0};
    return ++counter;
}

inline void TokenizerData::finish(const std::string& where) {
    uid = next_tokenizer_uid();
    n_ids = int(model_vocab.size());
    for (const auto& a : added) n_ids = std::max(n_ids, a.id + 1);
    model_vocab.resize(std::size_t(n_ids));
    id_text.assign(std::size_t(n_ids), std::string());
    id_valid.assign(std::size_t(n_ids), 0);
    model_ids.clear();
    added_ids.clear();
    for (int id = 0; id < n_ids; ++id) {
        const std::string& s = model_vocab[std::size_t(id)];
        if (s.empty()) continue;
        MT_CHECK(model_ids.emplace(s, id).second, where, ": model.vocab: token \"", s, "\" appears twice");
        id_text[std::size_t(id)] = s;
        id_valid[std::size_t(id)] = 1;
    }
    std::sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
    added_contents.clear();
    for (const auto& a : added) {
        MT_CHECK(a.id >= 0, where, ": added_tokens: negative id ", a.id, " for \"", a.content, "\"");
        MT_CHECK(!a.content.empty(), where, ": added_tokens: id ", a.id, " has empty content");
        MT_CHECK(added_ids.emplace(a.content, a.id).second, where, ": added_tokens: \"", a.content,
                 "\" appears twice");
        MT_CHECK(&a == &added.front() || (&a)[-1].id != a.id, where, ": added_tokens: id ", a.id, " appears twice");
        id_text[std::size_t(a.id)] = a.content;
        id_valid[std::size_t(a.id)] = 1;
        added_contents.push_back(a.content);
    }

    const auto& alpha = byte_alphabet();
    for (int b = 0; b < 256; ++b) {
        auto it = model_ids.find(std::string_view(alpha.utf8[std::size_t(b)]));
        MT_CHECK(it != model_ids.end(), where, ": model.vocab: no token for byte 0x", "0123456789abcdef"[b >> 4],
                 "0123456789abcdef"[b & 15], " (\"", alpha.utf8[std::size_t(b)],
                 "\"): a byte-level BPE vocabulary must hold all 256 byte tokens");
        byte_id[std::size_t(b)] = it->second;
    }

    merge_map = PairMap(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
        auto [a, b] = merges[r];
        MT_CHECK(a >= 0 && a < n_ids && b >= 0 && b < n_ids && !model_vocab[std::size_t(a)].empty() &&
                     !model_vocab[std::size_t(b)].empty(),
                 where, ": model.merges[", r, "]: token id out of the vocabulary");
        std::string joined = model_vocab[std::size_t(a)] + model_vocab[std::size_t(b)];
        auto it = model_ids.find(joined);
        MT_CHECK(it != model_ids.end(), where, ": model.merges[", r, "]: \"", model_vocab[std::size_t(a)], " ",
                 model_vocab[std::size_t(b)], "\" makes \"", joined, "\", which is not in model.vocab");
        // A pair listed twice keeps its first (lowest) rank, as in Hugging Face.
        merge_map.get(pair_key(a, b), (std::uint64_t(r) << 32) | std::uint32_t(it->second));
    }

    // Decoded bytes of each id. A model token that is not pure byte-level text decodes to its UTF-8 text
    // (Hugging Face's ByteLevel decoder does the same); added tokens decode to their content.
    id_bytes.clear();
    id_bytes_off.assign(std::size_t(n_ids) + 1, 0);
    std::vector<std::uint8_t> is_added(std::size_t(n_ids), 0);
    for (const auto& a : added) is_added[std::size_t(a.id)] = 1;
    for (int id = 0; id < n_ids; ++id) {
        const std::string& s = id_text[std::size_t(id)];
        std::size_t mark = id_bytes.size();
        if (!is_added[std::size_t(id)] && !from_byte_level(s, id_bytes)) {
            id_bytes.resize(mark);
            id_bytes += s;
        } else if (is_added[std::size_t(id)]) {
            id_bytes += s;
        }
        id_bytes_off[std::size_t(id) + 1] = std::uint32_t(id_bytes.size());
    }

    for (int k = 0; k < 2; ++k) {
        match_order[std::size_t(k)].clear();
        first_byte[std::size_t(k)].fill(0);
        for (std::size_t i = 0; i < added.size(); ++i) {
            if (k == 1 && added[i].special) continue;
            match_order[std::size_t(k)].push_back(std::int32_t(i));
            first_byte[std::size_t(k)][std::uint8_t(added[i].content[0])] = 1;
        }
        std::stable_sort(match_order[std::size_t(k)].begin(), match_order[std::size_t(k)].end(),
                         [&](std::int32_t x, std::int32_t y) {
                             return added[std::size_t(x)].content.size() > added[std::size_t(y)].content.size();
                         });
    }
}

// ---- the merge loop -------------------------------------------------------------------------------

/// Per-thread scratch for bpe_word: grows to the longest word seen, then no more allocations.
struct BpeScratch {
    std::vector<std::int32_t> id, prev, next;
    std::vector<std::uint64_t> heap;  // rank << 32 | position: a min-heap pops lowest rank, then leftmost
};

/// The merge of (a, b): rank << 32 | merged id, or ~0 when the pair has no merge (sorts last).
inline std::uint64_t merge_of(const TokenizerData& d, std::int32_t a, std::int32_t b) {
    const std::uint64_t* v = d.merge_map.find(pair_key(a, b));
    return v ? *v : ~std::uint64_t(0);
}

/// bpe_word for short words: the ranks of the adjacent pairs sit in an array; each step merges the
/// leftmost lowest-rank pair and looks up only the two pairs it changed. O(n^2) but with tiny constants.
inline void bpe_word_short(const TokenizerData& d, std::string_view word, std::vector<std::int32_t>& out) {
    constexpr int cap = 64;
    std::int32_t id[cap];
    std::uint64_t mg[cap];  // mg[i]: merge of (id[i], id[i+1])
    int n = int(word.size());
    for (int i = 0; i < n; ++i) id[i] = d.byte_id[std::uint8_t(word[std::size_t(i)])];
    for (int i = 0; i + 1 < n; ++i) mg[i] = merge_of(d, id[i], id[i + 1]);
    while (n > 1) {
        int best = 0;
        for (int i = 1; i + 1 < n; ++i)
            if ((mg[i] >> 32) < (mg[best] >> 32)) best = i;
        if (mg[best] == ~std::uint64_t(0)) break;
        id[best] = std::int32_t(std::uint32_t(mg[best]));
        for (int i = best + 1; i + 1 < n; ++i) id[i] = id[i + 1];
        for (int i = best + 1; i + 2 < n; ++i) mg[i] = mg[i + 1];
        --n;
        if (best > 0) mg[best - 1] = merge_of(d, id[best - 1], id[best]);
        if (best + 1 < n) mg[best] = merge_of(d, id[best], id[best + 1]);
    }
    out.insert(out.end(), id, id + n);
}

/// bpe_word for any length: a min-heap of (rank, position) over a linked list of symbols, with stale
/// entries skipped when popped. O(n log n).
inline void bpe_word_heap(const TokenizerData& d, std::string_view word, std::vector<std::int32_t>& out,
                          BpeScratch& s) {
    const int n = int(word.size());
    s.id.resize(std::size_t(n));
    s.prev.resize(std::size_t(n));
    s.next.resize(std::size_t(n));
    s.heap.clear();
    for (int i = 0; i < n; ++i) {
        s.id[std::size_t(i)] = d.byte_id[std::uint8_t(word[std::size_t(i)])];
        s.prev[std::size_t(i)] = i - 1;
        s.next[std::size_t(i)] = i + 1 < n ? i + 1 : -1;
    }
    auto greater = std::greater<std::uint64_t>();
    auto push_pair = [&](int i) {  // the pair starting at live symbol i, if it has a merge
        int j = s.next[std::size_t(i)];
        if (j < 0) return;
        if (const std::uint64_t* v = d.merge_map.find(pair_key(s.id[std::size_t(i)], s.id[std::size_t(j)]))) {
            s.heap.push_back((*v & 0xFFFFFFFF00000000ULL) | std::uint32_t(i));
            std::push_heap(s.heap.begin(), s.heap.end(), greater);
        }
    };
    for (int i = 0; i + 1 < n; ++i) push_pair(i);
    while (!s.heap.empty()) {
        std::pop_heap(s.heap.begin(), s.heap.end(), greater);
        std::uint64_t top = s.heap.back();
        s.heap.pop_back();
        int i = int(std::uint32_t(top));
        int j = s.next[std::size_t(i)];
        if (s.id[std::size_t(i)] < 0 || j < 0) continue;  // i was merged away, or is now last
        const std::uint64_t* v = d.merge_map.find(pair_key(s.id[std::size_t(i)], s.id[std::size_t(j)]));
        if (!v || (*v >> 32) != (top >> 32)) continue;  // the pair at i changed since this entry was pushed
        // Merge j into i.
        s.id[std::size_t(i)] = std::int32_t(std::uint32_t(*v));
        s.id[std::size_t(j)] = -1;
        int k = s.next[std::size_t(j)];
        s.next[std::size_t(i)] = k;
        if (k >= 0) s.prev[std::size_t(k)] = i;
        if (s.prev[std::size_t(i)] >= 0) push_pair(s.prev[std::size_t(i)]);
        push_pair(i);
    }
    for (int i = 0; i >= 0; i = s.next[std::size_t(i)]) out.push_back(s.id[std::size_t(i)]);
}

/// Appends the ids of one word (raw bytes, non-empty) to out: its bytes' tokens, then repeatedly the
/// adjacent pair with the lowest merge rank (leftmost on ties) is merged, until no pair has a merge.
inline void bpe_word(const TokenizerData& d, std::string_view word, std::vector<std::int32_t>& out, BpeScratch& s) {
    if (word.size() <= 64)
        bpe_word_short(d, word, out);
    else
        bpe_word_heap(d, word, out, s);
}

// ---- the per-thread word cache --------------------------------------------------------------------

/// A bounded map word -> ids for one tokenizer, owned by one thread, in two generations: new words
/// go into the current one; when it is full, it becomes the old one and the previous old one is
/// dropped. A word found in the old generation is copied into the current one, so frequent words
/// survive while one-off words (most long CJK runs) age out. Memory stays bounded and is reused, so a
/// long run allocates nothing once the buffers have grown.
class WordCache {
public:
    static constexpr std::size_t slots = std::size_t(1) << 16;   // per generation, power of two
    static constexpr std::size_t max_words = slots / 2;           // per generation (load <= 1/2)
    static constexpr std::size_t max_word_bytes = 256;            // longer words are not cached
    static constexpr std::size_t max_record_words = std::size_t(1) << 20;  // 4 MiB of records per generation

    std::uint64_t owner = 0;  // TokenizerData::uid, 0 = unused

    void reset(std::uint64_t new_owner) {
        owner = new_owner;
        for (auto& g : gen_) {
            if (g.table.size() != slots) g.table.resize(slots);
            g.clear();
        }
    }

    /// Appends the cached ids of word to out and returns true, or returns false when it is not cached.
    bool lookup(std::string_view word, std::uint64_t h, std::vector<std::int32_t>& out) {
        if (auto ids = gen_[cur_].find(word, h); !ids.empty()) {
            out.insert(out.end(), ids.begin(), ids.end());
            return true;
        }
        auto ids = gen_[cur_ ^ 1].find(word, h);
        if (ids.empty()) return false;
        out.insert(out.end(), ids.begin(), ids.end());
        insert(word, h, std::span<const std::int32_t>(out.data() + out.size() - ids.size(), ids.size()));
        return true;
    }

    /// Adds word -> ids (word not cached yet, at most max_word_bytes; ids not pointing into the cache).
    void insert(std::string_view word, std::uint64_t h, std::span<const std::int32_t> ids) {
        Generation* g = &gen_[cur_];
        std::size_t record = ids.size() + (word.size() + 3) / 4;
        if (g->used >= max_words || g->records.size() + record > max_record_words) {
            cur_ ^= 1;
            g = &gen_[cur_];
            g->clear();
        }
        std::size_t i = h & (slots - 1);
        while (g->table[i].key_len != 0) i = (i + 1) & (slots - 1);
        g->table[i] = Slot{h, std::uint32_t(g->records.size()), std::uint16_t(word.size()), std::uint16_t(ids.size())};
        std::size_t at = g->records.size();
        g->records.resize(at + record);
        std::memcpy(g->records.data() + at, ids.data(), ids.size() * sizeof(std::int32_t));
        std::memcpy(g->records.data() + at + ids.size(), word.data(), word.size());
        ++g->used;
    }

private:
    struct Slot {
        std::uint64_t hash = 0;
        std::uint32_t off = 0;      // record: n_ids ids, then the key's bytes (padded to 4)
        std::uint16_t key_len = 0;  // 0 = empty slot (words are never empty)
        std::uint16_t n_ids = 0;
    };
    struct Generation {
        std::vector<Slot> table;
        std::vector<std::int32_t> records;
        std::size_t used = 0;
        void clear() {
            std::fill(table.begin(), table.end(), Slot{});
            records.clear();
            used = 0;
        }
        std::span<const std::int32_t> find(std::string_view word, std::uint64_t h) const {
            for (std::size_t i = h & (slots - 1);; i = (i + 1) & (slots - 1)) {
                const Slot& e = table[i];
                if (e.key_len == 0) return {};
                if (e.hash == h && e.key_len == word.size() &&
                    std::memcmp(records.data() + e.off + e.n_ids, word.data(), word.size()) == 0)
                    return {records.data() + e.off, e.n_ids};
            }
        }
    };
    Generation gen_[2];
    int cur_ = 0;
};

/// Everything encode needs per thread: a few word caches (one per tokenizer recently used on this
/// thread), the BPE scratch, and buffers for the prefix space and ignore_merges lookups.
struct EncodeState {
    static constexpr int n_caches = 4;
    WordCache caches[n_caches];
    int victim = 0;
    BpeScratch bpe;
    std::string prefixed, byte_level;

    WordCache& cache_for(std::uint64_t uid) {
        for (auto& c : caches)
            if (c.owner == uid) return c;
        WordCache& c = caches[victim];
        victim = (victim + 1) % n_caches;
        c.reset(uid);
        return c;
    }
};

inline EncodeState& encode_state() {
    thread_local EncodeState state;
    return state;
}

// ---- encode and decode ----------------------------------------------------------------------------

/// Appends the ids of one pre-tokenized word.
inline void encode_word(const TokenizerData& d, std::string_view word, std::vector<std::int32_t>& out,
                        EncodeState& st, WordCache& cache) {
    if (word.size() == 1) {
        out.push_back(d.byte_id[std::uint8_t(word[0])]);
        return;
    }
    if (d.ignore_merges) {
        st.byte_level.clear();
        to_byte_level(word, st.byte_level);
        auto it = d.model_ids.find(std::string_view(st.byte_level));
        if (it != d.model_ids.end()) {
            out.push_back(it->second);
            return;
        }
    }
    if (word.size() > WordCache::max_word_bytes) {
        bpe_word(d, word, out, st.bpe);
        return;
    }
    std::uint64_t h = hash_bytes(word);
    if (cache.lookup(word, h, out)) return;
    std::size_t start = out.size();
    bpe_word(d, word, out, st.bpe);
    cache.insert(word, h, std::span<const std::int32_t>(out.data() + start, out.size() - start));
}

/// Appends the ids of text that holds no added token: pre-tokenize, then BPE each word.
inline void encode_ordinary(const TokenizerData& d, std::string_view text, std::vector<std::int32_t>& out,
                            EncodeState& st, WordCache& cache) {
    d.pre.split(text, st.prefixed, [&](std::string_view word) { encode_word(d, word, out, st, cache); });
}

/// Appends the ids of text: added tokens (special ones only when allow_special) are cut out first,
/// leftmost match first and the longest one at a position, and map straight to their ids.
inline void encode_text(const TokenizerData& d, std::string_view text, std::vector<std::int32_t>& out,
                        bool allow_special) {
    EncodeState& st = encode_state();
    WordCache& cache = st.cache_for(d.uid);
    const std::size_t k = allow_special ? 0 : 1;
    const auto& order = d.match_order[k];
    if (order.empty()) {
        encode_ordinary(d, text, out, st, cache);
        return;
    }
    const auto& first = d.first_byte[k];
    std::size_t seg = 0;  // start of the text not yet encoded
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (!first[std::uint8_t(text[i])]) continue;
        for (std::int32_t a : order) {
            const std::string& c = d.added[std::size_t(a)].content;
            if (text.compare(i, c.size(), c) != 0) continue;
            if (i > seg) encode_ordinary(d, text.substr(seg, i - seg), out, st, cache);
            out.push_back(d.added[std::size_t(a)].id);
            seg = i + c.size();
            i = seg - 1;
            break;
        }
    }
    if (seg < text.size()) encode_ordinary(d, text.substr(seg), out, st, cache);
}

/// Bytes of the ids, concatenated; Error on an id that is not in the vocabulary.
inline std::string decode_ids(const TokenizerData& d, std::span<const std::int32_t> ids) {
    std::size_t n = 0;
    for (std::int32_t id : ids) {
        MT_CHECK(id >= 0 && id < d.n_ids && d.id_valid[std::size_t(id)], "Tokenizer::decode: id ", id,
                 " is not in the vocabulary (size ", d.n_ids, ")");
        n += d.id_bytes_off[std::size_t(id) + 1] - d.id_bytes_off[std::size_t(id)];
    }
    std::string out;
    out.reserve(n);
    for (std::int32_t id : ids)
        out.append(d.id_bytes, d.id_bytes_off[std::size_t(id)],
                   d.id_bytes_off[std::size_t(id) + 1] - d.id_bytes_off[std::size_t(id)]);
    return out;
}

}  // namespace minitrain::tok
