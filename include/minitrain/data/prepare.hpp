// minitrain/data/prepare.hpp
// Pretraining data preparation: text or JSONL documents -> tokens -> llm.c shards the TokenLoader reads.
//
// The input streams through in chunks of records (memory stays flat for inputs larger than RAM): a chunk
// is read, its documents are tokenized on `threads` threads, and the tokens are appended in input order
// to the train or the validation stream, so the shards are byte-identical whatever the thread count.
//
// Output in output_dir (the file names the trainer and the quickstart rely on):
//   train_000000.bin, train_000001.bin, ...   the packed training stream (packing.hpp: EOT after each document)
//   val_000000.bin, ...                        the validation stream (absent when no document went there)
//   train_*.bin.meta.json, val_*.bin.meta.json {"bytes": UTF-8 bytes of the documents, "tokens": tokens
//                                              written (EOTs included), "documents": n, "shards": n,
//                                              "vocab_size": V} -- literally with the '*': Pretrain reads
//                                              "<val_data>.meta.json" for bits per byte, and this is that
//                                              name for --val_data "DIR/val_*.bin".
// Shards hold shard_tokens tokens (the last one between 0.5x and 1.5x that, see packing.hpp), uint16 when
// the vocabulary has at most 65536 ids, uint32 otherwise.
//
// Documents: a JSONL record's text field (default "text"), or a plain-text document (jsonl.hpp: one per
// line by default). Document text is encoded with allow_special = false: a document that contains
// "<|endoftext|>" as text cannot fake a document boundary. Empty documents are skipped (and counted).
//
// Validation split (deterministic, independent of threads and chunking), by the document's index d
// (0, 1, 2, ... over the non-empty documents of all inputs, in order):
//   val_fraction f   document d is validation when uniform(hash64(hash64(seed, "val"), d)) < f
//   val_tokens n     (instead) the first documents, until the validation stream holds >= n tokens
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../log/progress_bar.hpp"
#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../io/atomic_file.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "jsonl.hpp"
#include "packing.hpp"

namespace minitrain {

struct PrepareOptions {
    std::vector<std::string> inputs;       // files or globs
    std::filesystem::path output_dir;
    InputFormat format = InputFormat::auto_detect;  // auto: .jsonl/.ndjson are JSONL, the rest text
    TextSplit text_split = TextSplit::line;
    std::string text_field = "text";       // the document field of a JSONL record
    std::int64_t shard_tokens = 100'000'000;
    double val_fraction = 0.005;
    std::int64_t val_tokens = 0;           // > 0: replaces val_fraction (see the top of this file)
    std::uint64_t seed = 0;                // of the validation split
    int threads = 0;                       // 0: one per hardware thread
    OnError on_error = OnError::fail;
    std::string eot_token = "<|endoftext|>";
    bool overwrite = false;                // replace the shards of an earlier run in output_dir
    bool progress = true;                  // a progress bar on stderr (plain lines when not a terminal)
    std::size_t chunk_bytes = 0;           // text read per round; 0: 4 MiB per thread (at least 8 MiB)
    std::size_t max_record_bytes = jsonl_max_record_bytes;  // a longer JSONL line is malformed (jsonl.hpp)
};

struct PrepareSummary {
    struct Split {
        std::int64_t documents = 0, tokens = 0, bytes = 0;
        std::vector<std::filesystem::path> shards;
        std::string pattern;               // "DIR/train_*.bin": pass it to the trainer
        std::filesystem::path meta;        // "DIR/train_*.bin.meta.json" (written only with shards)
    };
    Split train, val;
    std::int64_t empty_documents = 0;
    SkipLog skipped;
    std::uint64_t input_bytes = 0;
    double seconds = 0;
    int vocab_size = 0;

    /// Several lines: counts, throughput, the shard patterns and the flags to pass to pretraining.
    std::string describe() const {
        auto mb = [](double b) { return b / 1e6; };
        char line[512];
        std::string s;
        std::snprintf(line, sizeof line, "prepared %lld documents (%.1f MB) in %.1f s, %.1f MB/s",
                      (long long)(train.documents + val.documents), mb(double(input_bytes)), seconds,
                      seconds > 0 ? mb(double(input_bytes)) / seconds : 0.0);
        s += line;
        if (empty_documents) s += ", " + std::to_string(empty_documents) + " empty skipped";
        s += "\n";
        for (const Split* p : {&train, &val}) {
            const char* name = p == &train ? "train" : "val";
            if (p->shards.empty()) {
                std::snprintf(line, sizeof line, "  %-5s  no documents\n", name);
            } else {
                std::snprintf(line, sizeof line, "  %-5s  %lld documents, %lld tokens (%.2f bytes/token) in %zu shard%s: %s\n",
                              name, (long long)p->documents, (long long)p->tokens,
                              p->tokens ? double(p->bytes) / double(p->tokens) : 0.0, p->shards.size(),
                              p->shards.size() == 1 ? "" : "s", p->pattern.c_str());
            }
            s += line;
        }
        if (skipped.count) s += skipped.summary() + "\n";
        s += "pretrain with: --train_data \"" + train.pattern + "\"";
        if (!val.shards.empty()) s += " --val_data \"" + val.pattern + "\"";
        s += " --vocab_size " + std::to_string(vocab_size);
        return s;
    }
};

namespace detail {

/// The progress bar on stderr (log/progress_bar.hpp): redrawn in place on a terminal, a plain line every
/// 10 s and one at the end otherwise.
class PrepareProgress {
public:
    PrepareProgress(bool enabled, std::uint64_t total_bytes) : bar_("prepare", double(total_bytes), "B", enabled) {}

    void update(std::uint64_t bytes, std::int64_t docs, std::int64_t tokens, bool force = false) {
        docs_ = docs, tokens_ = tokens;
        if (!force) bar_.update(double(bytes), extra());
    }
    /// The final line (before the summary).
    void done() { bar_.finish(extra()); }

private:
    std::string extra() const {
        char b[96];
        std::snprintf(b, sizeof b, "%lld docs | %.2fM tokens", (long long)docs_, double(tokens_) / 1e6);
        return b;
    }
    ProgressBar bar_;
    std::int64_t docs_ = 0, tokens_ = 0;
};

inline void write_meta(const std::filesystem::path& path, const PrepareSummary::Split& s, int vocab_size) {
    nlohmann::json j = {{"bytes", s.bytes},
                        {"tokens", s.tokens},
                        {"documents", s.documents},
                        {"shards", s.shards.size()},
                        {"vocab_size", vocab_size}};
    const std::string text = j.dump(2) + "\n";
    write_file_atomic(path, [&](std::ostream& os) { os.write(text.data(), std::streamsize(text.size())); });
}

/// Files of an earlier run in `dir`: train_NNNNNN.bin, val_NNNNNN.bin and the two meta files.
inline std::vector<std::filesystem::path> prepared_files(const std::filesystem::path& dir) {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return out;
    auto ours = [](std::string_view n) {
        for (std::string_view prefix : {"train_", "val_"}) {
            if (n.substr(0, prefix.size()) != prefix) continue;
            n.remove_prefix(prefix.size());
            if (n == "*.bin.meta.json") return true;
            return n.size() == 10 && n.substr(6) == ".bin" &&
                   std::all_of(n.begin(), n.begin() + 6, [](char c) { return c >= '0' && c <= '9'; });
        }
        return false;
    };
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (ours(e.path().filename().string())) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace detail

/// Validation membership of document d under val_fraction (see the top of this file).
inline bool in_val_split(std::uint64_t seed, std::int64_t document, double fraction) {
    if (fraction <= 0) return false;
    const std::uint64_t h = hash64(hash64(seed, 0x76616cull /* "val" */), std::uint64_t(document));
    return double(h >> 11) * (1.0 / 9007199254740992.0) < fraction;
}

/// Tokenizes the inputs into shards in o.output_dir (see the top of this file). Errors name the file and
/// line of a malformed record (OnError::fail), or such records are skipped and counted (OnError::skip).
inline PrepareSummary prepare_data(const PrepareOptions& o, const Tokenizer& tokenizer) {
    namespace fs = std::filesystem;
    MT_CHECK(!o.inputs.empty(), "prepare_data: no input given");
    MT_CHECK(!o.output_dir.empty(), "prepare_data: no output directory given");
    MT_CHECK(o.shard_tokens >= 2, "prepare_data: shard_tokens must be at least 2, got ", o.shard_tokens);
    MT_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "prepare_data: val_fraction must be in [0, 1), got ", o.val_fraction);
    MT_CHECK(o.val_tokens >= 0, "prepare_data: val_tokens must be >= 0, got ", o.val_tokens);
    const auto eot = tokenizer.find(o.eot_token);
    MT_CHECK(eot, "prepare_data: the tokenizer has no \"", o.eot_token, "\" token to end documents with");
    const int vocab = tokenizer.vocab_size();
    const std::vector<InputFile> files = resolve_inputs(o.inputs, o.format);

    if (auto old = detail::prepared_files(o.output_dir); !old.empty()) {
        MT_CHECK(o.overwrite, o.output_dir.string(), ": holds shards of an earlier run (", old.front().filename().string(),
                 old.size() > 1 ? ", ..." : "", "): pass --overwrite to replace them, or choose another directory");
        for (const auto& p : old) fs::remove(p);
    }
    fs::create_directories(o.output_dir);

    PrepareSummary sum;
    sum.vocab_size = vocab;
    for (const auto& f : files) sum.input_bytes += f.size;
    ShardWriter train(o.output_dir, "train", o.shard_tokens, vocab), val(o.output_dir, "val", o.shard_tokens, vocab);
    WorkerPool pool(o.threads);
    ReadOptions ro;
    ro.text_split = o.text_split;
    ro.on_error = o.on_error;
    ro.max_record_bytes = o.max_record_bytes;
    ro.chunk_bytes = o.chunk_bytes ? o.chunk_bytes : std::max<std::size_t>(std::size_t(8) << 20, std::size_t(pool.threads()) << 22);
    detail::PrepareProgress progress(o.progress, sum.input_bytes);
    const auto t0 = std::chrono::steady_clock::now();

    struct Doc {
        std::vector<std::int32_t> tokens;
        std::int64_t bytes = 0;
    };
    std::int64_t documents = 0;
    process_records<Doc>(
        files, ro, pool, sum.skipped,
        [&](std::string_view record, const InputFile& f, Doc& d) {
            d.tokens.clear();
            std::string_view text;
            nlohmann::json j;
            if (f.format == InputFormat::jsonl) {
                j = parse_json_record(record);
                text = json_string(json_field(j, o.text_field), "field \"" + o.text_field + "\"");
            } else {
                check_utf8(record);
                text = record;
            }
            d.bytes = std::int64_t(text.size());
            tokenizer.encode_into(text, d.tokens, false);
        },
        [&](Doc& d, const RecordSource&) {
            if (d.bytes == 0) {
                ++sum.empty_documents;
                return;
            }
            const std::int64_t index = documents++;
            const bool to_val = o.val_tokens > 0 ? val.tokens() < o.val_tokens : in_val_split(o.seed, index, o.val_fraction);
            PrepareSummary::Split& s = to_val ? sum.val : sum.train;
            ShardWriter& w = to_val ? val : train;
            w.append(d.tokens);
            w.append(*eot);
            ++s.documents;
            s.bytes += d.bytes;
        },
        [&](std::uint64_t bytes) { progress.update(bytes, documents, train.tokens() + val.tokens()); });
    train.finish();
    val.finish();
    progress.update(sum.input_bytes, documents, train.tokens() + val.tokens(), true);
    progress.done();
    sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    MT_CHECK(documents > 0, "prepare_data: no document found in the input (", files.size(), " file", files.size() == 1 ? "" : "s",
             sum.skipped.count ? ", " + std::to_string(sum.skipped.count) + " malformed records skipped: " + sum.skipped.by_reason() : std::string(),
             sum.empty_documents ? ", " + std::to_string(sum.empty_documents) + " empty documents" : std::string(), ")");
    MT_CHECK(sum.train.documents > 0, "prepare_data: all ", documents, " documents went to the validation split: lower val_tokens or val_fraction");
    for (auto [s, w] : {std::pair{&sum.train, &train}, std::pair{&sum.val, &val}}) {
        s->tokens = w->tokens();
        s->shards = w->files();
        s->pattern = w->pattern();
        s->meta = s->pattern + ".meta.json";
        if (!s->shards.empty()) detail::write_meta(s->meta, *s, vocab);
    }
    return sum;
}

}  // namespace minitrain
