// minitrain/tokenizer/train.hpp
// Training a byte-level BPE vocabulary, as Hugging Face's BpeTrainer does, in two phases:
//
// 1. Word counting (multi-threaded). Documents are cut at special tokens (which are never counted),
//    then into ~1 MiB chunks at "safe" points: right after a '\n' that is followed by a printable
//    non-space ASCII byte. No match of the GPT-2 or GPT-4 pattern crosses such a point, so every chunk
//    is pre-tokenized exactly as the whole text would be (the regex still sees the whole segment, for
//    its lookahead). Chunk boundaries depend on the text only, and counts are summed, so the result is
//    the same for any thread count.
// 2. Merges (single thread, incremental). words: unique words as byte-token sequences with counts.
//    pair -> count, pair -> the words that contain it, and a max-heap of (count, pair) with lazy
//    invalidation: a popped entry whose count is stale is pushed back with its current count. Merging
//    a pair only touches the words that hold it, updating the counts of the neighbouring pairs.
//    Ties between equal counts go to the smallest (left id, right id), exactly HF's rule; since byte
//    tokens are numbered in code-point order, among byte pairs that is also the lexicographically
//    smallest pair of token strings. Training stops at vocab_size or when the best pair is seen fewer
//    than min_frequency times.
//
// Ids: special tokens 0..S-1 (in the order given), the 256 byte tokens S..S+255 sorted by their
// byte-level code point (HF's order), then one per merge.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include "../core/error.hpp"
#include "../log/progress_bar.hpp"
#include "bpe.hpp"
#include "pretokenize.hpp"

namespace minitrain::tok {

/// Which pre-tokenization regex a trained tokenizer uses.
enum class Pattern {
    gpt2,  ///< GPT-2's (HF ByteLevel use_regex=true; MiniMind). Saved as a ByteLevel pre-tokenizer.
    gpt4   ///< GPT-4's cl100k. Saved as Sequence [Split(regex), ByteLevel(use_regex=false)].
};

struct TrainConfig {
    int vocab_size = 6400;
    std::vector<std::string> special_tokens;
    int min_frequency = 2;
    int threads = 0;
    bool progress = false;
    Pattern pattern = Pattern::gpt2;
};

using WordCounts = std::unordered_map<std::string, std::int64_t, StringHash, std::equal_to<>>;

namespace train_detail {

/// A range of a segment (text between special tokens) to pre-tokenize: [begin, end) of `text`.
struct Chunk {
    std::string_view text;
    std::size_t begin, end;
};

/// Cuts one segment into chunks of about chunk_bytes at safe points (see the top of the file).
inline void chunk_segment(std::string_view seg, std::size_t chunk_bytes, std::vector<Chunk>& out) {
    std::size_t begin = 0;
    while (seg.size() - begin > chunk_bytes) {
        std::size_t cut = 0;
        for (std::size_t i = begin + chunk_bytes; i + 1 < seg.size(); ++i) {
            if (seg[i] == '\n' && seg[i + 1] > ' ' && seg[i + 1] < 0x7F) {
                cut = i + 1;
                break;
            }
        }
        if (cut == 0) break;
        out.push_back({seg, begin, cut});
        begin = cut;
    }
    if (begin < seg.size()) out.push_back({seg, begin, seg.size()});
}

/// Splits docs at special tokens (longest first at each position) and chunks the segments between.
inline std::vector<Chunk> make_chunks(const std::vector<std::string_view>& docs, const std::vector<std::string>& specials,
                                      std::size_t chunk_bytes) {
    std::vector<std::string> order(specials);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
    std::array<std::uint8_t, 256> first{};
    for (const auto& s : order) first[std::uint8_t(s[0])] = 1;
    std::vector<Chunk> chunks;
    for (std::string_view doc : docs) {
        std::size_t seg = 0;
        for (std::size_t i = 0; i < doc.size(); ++i) {
            if (!first[std::uint8_t(doc[i])]) continue;
            for (const auto& s : order) {
                if (doc.compare(i, s.size(), s) != 0) continue;
                if (i > seg) chunk_segment(doc.substr(seg, i - seg), chunk_bytes, chunks);
                seg = i + s.size();
                i = seg - 1;
                break;
            }
        }
        if (seg < doc.size()) chunk_segment(doc.substr(seg), chunk_bytes, chunks);
    }
    return chunks;
}

}  // namespace train_detail

/// Counts pre-tokenized words (raw bytes) over docs with `threads` threads (0 = all cores). The text is
/// cut into chunks of about chunk_bytes (a knob for tests; the counts do not depend on it).
inline WordCounts count_words(const std::vector<std::string_view>& docs, const std::vector<std::string>& specials,
                              const Regex& regex, int threads, std::size_t chunk_bytes = std::size_t(1) << 20) {
    using namespace train_detail;
    std::vector<Chunk> chunks = make_chunks(docs, specials, std::max<std::size_t>(chunk_bytes, 1));
    if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, std::min(threads, int(chunks.size())));
    std::vector<WordCounts> partial;
    partial.resize(std::size_t(threads));
    std::atomic<std::size_t> next{0};
    auto work = [&](int t) {
        WordCounts& wc = partial[std::size_t(t)];
        for (std::size_t c; (c = next.fetch_add(1)) < chunks.size();) {
            const Chunk& ch = chunks[c];
            std::size_t pos = ch.begin, b = 0, e = 0;
            auto add = [&](std::size_t from, std::size_t to) {
                std::string_view w = ch.text.substr(from, to - from);
                auto it = wc.find(w);
                if (it != wc.end())
                    ++it->second;
                else
                    wc.emplace(std::string(w), 1);
            };
            // As Regex::split, but over [begin, end) of the whole segment.
            while (pos < ch.end && regex.search(ch.text, pos, b, e) && b < ch.end) {
                if (b > pos) add(pos, b);
                if (e == b) e = b + 1;
                add(b, std::min(e, ch.end));
                pos = e;
            }
            if (pos < ch.end) add(pos, ch.end);
        }
    };
    if (threads == 1) {
        work(0);
    } else {
        std::vector<std::thread> pool;
        std::exception_ptr error;
        std::mutex error_mutex;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                try {
                    work(t);
                } catch (...) {
                    std::lock_guard lock(error_mutex);
                    if (!error) error = std::current_exception();
                    next = chunks.size();
                }
            });
        for (auto& th : pool) th.join();
        if (error) std::rethrow_exception(error);
    }
    WordCounts total = std::move(partial[0]);
    for (std::size_t t = 1; t < partial.size(); ++t)
        for (auto& [w, c] : partial[t]) total[w] += c;
    return total;
}

/// Runs the BPE merges over counted words and returns the finished tokenizer tables.
inline std::shared_ptr<TokenizerData> train_bpe(const WordCounts& counts, const TrainConfig& cfg) {
    const int n_special = int(cfg.special_tokens.size());
    MT_CHECK(cfg.vocab_size >= n_special + 256, "Tokenizer::train: vocab_size ", cfg.vocab_size,
             " is smaller than the ", n_special, " special tokens + 256 byte tokens");
    MT_CHECK(cfg.min_frequency >= 0, "Tokenizer::train: min_frequency must be >= 0, found ", cfg.min_frequency);

    // ---- the initial vocabulary ----
    std::vector<std::string> vocab;  // id -> byte-level string (special tokens as written)
    StringIdMap ids;
    for (const auto& s : cfg.special_tokens) {
        MT_CHECK(!s.empty(), "Tokenizer::train: a special token is empty");
        MT_CHECK(utf8_valid(s), "Tokenizer::train: special token \"", s, "\" is not valid UTF-8");
        MT_CHECK(ids.emplace(s, std::int32_t(vocab.size())).second, "Tokenizer::train: special token \"", s,
                 "\" given twice");
        vocab.push_back(s);
    }
    const auto& alpha = byte_alphabet();
    std::array<std::int32_t, 256> byte_id{};
    for (std::uint8_t b : alpha.by_code) {
        byte_id[b] = std::int32_t(vocab.size());
        const std::string& s = alpha.utf8[b];
        MT_CHECK(ids.emplace(s, std::int32_t(vocab.size())).second, "Tokenizer::train: special token \"", s,
                 "\" is spelled like the byte token of byte ", int(b), ": choose another");
        vocab.push_back(s);
    }

    // ---- words, sorted so that everything below is independent of hash-map order ----
    std::vector<std::pair<std::string_view, std::int64_t>> sorted;
    sorted.reserve(counts.size());
    for (const auto& [w, c] : counts) sorted.emplace_back(w, c);
    std::sort(sorted.begin(), sorted.end());
    const std::size_t n_words = sorted.size();
    std::vector<std::int32_t> syms;                   // all words' symbols, concatenated
    std::vector<std::uint32_t> start(n_words), len(n_words);
    std::vector<std::int64_t> wcount(n_words);
    for (std::size_t w = 0; w < n_words; ++w) {
        start[w] = std::uint32_t(syms.size());
        len[w] = std::uint32_t(sorted[w].first.size());
        wcount[w] = sorted[w].second;
        for (char c : sorted[w].first) syms.push_back(byte_id[std::uint8_t(c)]);
    }
    MT_CHECK(syms.size() < (std::size_t(1) << 32), "Tokenizer::train: more than 4 GiB of distinct words");

    // ---- pair statistics ----
    PairMap pair_index(1 << 16);         // pair key -> index into the arrays below
    std::vector<std::uint64_t> pkey;     // the pair (left << 32 | right)
    std::vector<std::int64_t> pcount;    // occurrences, weighted by word counts
    std::vector<std::vector<std::uint32_t>> pwords;  // words that held the pair (maybe stale, maybe repeated)
    auto index_of = [&](std::int32_t a, std::int32_t b) -> std::uint32_t {
        std::uint64_t key = pair_key(a, b);
        std::uint64_t& v = pair_index.get(key, PairMap::empty);
        if (v == PairMap::empty) {
            v = pkey.size();
            pkey.push_back(key);
            pcount.push_back(0);
            pwords.emplace_back();
        }
        return std::uint32_t(v);
    };
    for (std::uint32_t w = 0; w < n_words; ++w) {
        const std::int32_t* s = syms.data() + start[w];
        for (std::uint32_t i = 0; i + 1 < len[w]; ++i) {
            std::uint32_t p = index_of(s[i], s[i + 1]);
            pcount[p] += wcount[w];
            if (pwords[p].empty() || pwords[p].back() != w) pwords[p].push_back(w);
        }
    }

    struct Entry {
        std::int64_t count;
        std::uint32_t pair;
    };
    // "less" for a max-heap: lower count first, then, on equal counts, the larger pair key.
    auto heap_less = [&](const Entry& x, const Entry& y) {
        if (x.count != y.count) return x.count < y.count;
        return pkey[x.pair] > pkey[y.pair];
    };
    std::vector<Entry> heap;
    heap.reserve(pkey.size());
    for (std::uint32_t p = 0; p < pkey.size(); ++p)
        if (pcount[p] > 0) heap.push_back({pcount[p], p});
    std::make_heap(heap.begin(), heap.end(), heap_less);

    // ---- merges ----
    std::vector<std::pair<std::int32_t, std::int32_t>> merges;
    std::vector<std::uint32_t> changed;  // pairs whose count grew during one merge: pushed afterwards
    const int target_merges = cfg.vocab_size - int(vocab.size());
    ProgressBar bar("tokenizer", double(std::max(0, target_merges)), "merges", cfg.progress);
    while (int(vocab.size()) < cfg.vocab_size && !heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), heap_less);
        Entry top = heap.back();
        heap.pop_back();
        const std::int64_t cur = pcount[top.pair];
        if (top.count != cur) {  // stale: requeue with the current count
            if (cur > 0) {
                heap.push_back({cur, top.pair});
                std::push_heap(heap.begin(), heap.end(), heap_less);
            }
            continue;
        }
        if (cur < cfg.min_frequency) break;
        const std::int32_t A = std::int32_t(pkey[top.pair] >> 32), B = std::int32_t(std::uint32_t(pkey[top.pair]));
        std::string joined = vocab[std::size_t(A)] + vocab[std::size_t(B)];
        std::int32_t C;
        if (auto it = ids.find(std::string_view(joined)); it != ids.end()) {
            C = it->second;  // two different merges can spell the same token: reuse it (as HF does)
        } else {
            C = std::int32_t(vocab.size());
            ids.emplace(joined, C);
            vocab.push_back(std::move(joined));
        }
        merges.emplace_back(A, B);

        std::vector<std::uint32_t> ws = std::move(pwords[top.pair]);
        pwords[top.pair] = {};
        std::sort(ws.begin(), ws.end());
        ws.erase(std::unique(ws.begin(), ws.end()), ws.end());
        changed.clear();
        for (std::uint32_t w : ws) {
            std::int32_t* s = syms.data() + start[w];
            const std::uint32_t n = len[w];
            const std::int64_t c = wcount[w];
            std::uint32_t out = 0;  // s[0..out) is the merged prefix; s[i..n) is untouched
            for (std::uint32_t i = 0; i < n;) {
                if (i + 1 < n && s[i] == A && s[i + 1] == B) {
                    pcount[top.pair] -= c;
                    if (out > 0) {  // the left neighbour, possibly a C merged just before
                        pcount[index_of(s[out - 1], A)] -= c;
                        std::uint32_t p = index_of(s[out - 1], C);
                        pcount[p] += c;
                        changed.push_back(p);
                        if (pwords[p].empty() || pwords[p].back() != w) pwords[p].push_back(w);
                    }
                    if (i + 2 < n) {  // the right neighbour, not merged yet
                        pcount[index_of(B, s[i + 2])] -= c;
                        std::uint32_t p = index_of(C, s[i + 2]);
                        pcount[p] += c;
                        changed.push_back(p);
                        if (pwords[p].empty() || pwords[p].back() != w) pwords[p].push_back(w);
                    }
                    s[out++] = C;
                    i += 2;
                } else {
                    s[out++] = s[i++];
                }
            }
            len[w] = out;
        }
        std::sort(changed.begin(), changed.end());
        changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
        for (std::uint32_t p : changed) {
            if (pcount[p] <= 0) continue;
            heap.push_back({pcount[p], p});
            std::push_heap(heap.begin(), heap.end(), heap_less);
        }
        // A bar on a terminal, a line every 10 s in a log (log/progress_bar.hpp).
        bar.update(double(merges.size()), "last pair seen " + std::to_string(cur) + " times");
    }
    bar.finish("vocabulary of " + std::to_string(vocab.size()) + " tokens");

    auto d = std::make_shared<TokenizerData>();
    d->model_vocab = std::move(vocab);
    d->merges = std::move(merges);
    for (int i = 0; i < n_special; ++i) d->added.push_back(AddedToken{i, cfg.special_tokens[std::size_t(i)], true});
    d->pre.add_prefix_space = false;
    d->trim_offsets = true;
    if (cfg.pattern == Pattern::gpt2) {
        d->pre_kind = PreTokenizerKind::byte_level_regex;
        d->pre.regex = Regex(gpt2_pattern);
    } else {
        d->pre_kind = PreTokenizerKind::split_then_byte_level;
        d->pre.regex = Regex(gpt4_pattern);
    }
    d->finish("Tokenizer::train");
    return d;
}

/// Counts words then trains: the whole of Tokenizer::train after the inputs are read.
inline std::shared_ptr<TokenizerData> train_on_docs(const std::vector<std::string_view>& docs, const TrainConfig& cfg) {
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    Regex regex(cfg.pattern == Pattern::gpt2 ? gpt2_pattern : gpt4_pattern);
    WordCounts counts = count_words(docs, cfg.special_tokens, regex, cfg.threads);
    if (cfg.progress) {
        std::size_t bytes = 0;
        for (auto d : docs) bytes += d.size();
        std::fprintf(stderr, "tokenizer: %zu distinct words in %.1f MB, counted in %.2f s\n", counts.size(),
                     double(bytes) / 1e6, std::chrono::duration<double>(clock::now() - t0).count());
    }
    return train_bpe(counts, cfg);
}

}  // namespace minitrain::tok
