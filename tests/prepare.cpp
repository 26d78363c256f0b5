// Pretraining data preparation: packing (EOT after each document) and the shard writer, the prepare engine
// end to end (shards read back with TokenDataset decode to the documents), the same shards with 1 and 2
// threads, the validation split's determinism, the meta files the trainer reads (<pattern>.meta.json), text modes, and
// malformed input in fail and skip modes.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "minitrain/data/packing.hpp"
#include "minitrain/data/prepare.hpp"
#include "minitrain/data/shards.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

using mt_test::TempDir;
using mt_test::write_text;

std::string read_bytes(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

const Tokenizer& tokenizer() {
    static const Tokenizer tok = [] {
        std::vector<std::string> texts;
        for (int i = 0; i < 50; ++i)
            texts.push_back("Document " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog. 你好，世界。");
        Tokenizer::TrainOptions o;
        o.vocab_size = 360;
        o.threads = 1;
        return Tokenizer::train_from_texts(texts, o);
    }();
    return tok;
}

/// Documents of varied length, some with characters that need several bytes and a fake "<|endoftext|>".
std::vector<std::string> corpus(int n) {
    std::vector<std::string> docs;
    std::mt19937 rng(5);
    const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog.", "你好", "世界",
                                            "<|endoftext|>", "Document", "\\tab"};
    for (int i = 0; i < n; ++i) {
        std::string d = "Document " + std::to_string(i) + ":";
        int len = 1 + int(rng() % 40);
        for (int k = 0; k < len; ++k) d += " " + words[rng() % words.size()];
        docs.push_back(d);
    }
    return docs;
}

std::string jsonl_of(const std::vector<std::string>& docs) {
    std::string s;
    for (const auto& d : docs) s += nlohmann::json{{"text", d}, {"id", 1}}.dump() + "\n";
    return s;
}

/// The token stream of every shard matching `pattern`, in order.
std::vector<std::int32_t> stream_of(const std::string& pattern, int vocab) {
    TokenDataset ds(pattern, vocab);
    std::vector<std::int32_t> out;
    for (const TokenShard& s : ds.shards()) {
        std::size_t at = out.size();
        out.resize(at + std::size_t(s.size()));
        s.read(0, s.size(), out.data() + at);
    }
    return out;
}

/// The stream cut at every EOT (each document must end with one) and decoded.
std::vector<std::string> documents_of(const std::vector<std::int32_t>& stream, std::int32_t eot) {
    std::vector<std::string> docs;
    std::vector<std::int32_t> cur;
    for (std::int32_t t : stream) {
        if (t == eot) {
            docs.push_back(tokenizer().decode(cur));
            cur.clear();
        } else {
            cur.push_back(t);
        }
    }
    CHECK(cur.empty());  // the stream ends with an EOT
    return docs;
}

PrepareOptions options(const fs::path& input, const fs::path& out) {
    PrepareOptions o;
    o.inputs = {input.string()};
    o.output_dir = out;
    o.shard_tokens = 1000;
    o.val_fraction = 0.1;
    o.threads = 1;
    o.progress = false;
    o.chunk_bytes = 2000;  // many chunks
    return o;
}

}  // namespace

TEST_CASE("ShardWriter: fixed-size shards, the short tail merged, read back by TokenDataset") {
    TempDir dir;
    const int V = 1000;
    for (std::int64_t total : {0, 7, 24, 30, 36, 53}) {
        CAPTURE(total);
        fs::path d = dir / ("w" + std::to_string(total));
        ShardWriter w(d, "train", 10, V);
        std::vector<std::int32_t> all;
        for (std::int64_t i = 0; i < total; i += 3) {
            std::vector<std::int32_t> piece;
            for (std::int64_t k = i; k < std::min(total, i + 3); ++k) piece.push_back(std::int32_t(k % V));
            w.append(piece);
            all.insert(all.end(), piece.begin(), piece.end());
        }
        w.finish();
        CHECK(w.tokens() == total);
        // 0 -> none; 7 -> [7]; 24 -> [10, 14] (a tail < 5 is merged); 30 -> [10, 10, 10]; 36 -> [10, 10, 10, 6]; 53 -> [.., 13]
        std::vector<std::int64_t> sizes;
        for (const auto& f : w.files()) sizes.push_back(TokenShard(f).size());
        std::vector<std::int64_t> want = total == 0    ? std::vector<std::int64_t>{}
                                         : total == 7  ? std::vector<std::int64_t>{7}
                                         : total == 24 ? std::vector<std::int64_t>{10, 14}
                                         : total == 30 ? std::vector<std::int64_t>{10, 10, 10}
                                         : total == 36 ? std::vector<std::int64_t>{10, 10, 10, 6}
                                                       : std::vector<std::int64_t>{10, 10, 10, 10, 13};
        CHECK(sizes == want);
        if (total > 0) {
            CHECK(w.files().front() == d / "train_000000.bin");
            CHECK(stream_of(w.pattern(), V) == all);
        }
    }
    // uint32 tokens for a large vocabulary.
    ShardWriter big(dir / "big", "val", 100, 100000);
    big.append(std::vector<std::int32_t>{99999, 0, 70000});
    big.finish();
    CHECK(TokenShard(big.files()[0]).token_bytes() == 4);
    CHECK(stream_of(big.pattern(), 100000) == std::vector<std::int32_t>{99999, 0, 70000});
    ShardWriter bad(dir / "bad", "train", 10, 50);
    CHECK_THROWS_WITH_AS(bad.append(std::vector<std::int32_t>{50}), doctest::Contains("outside the vocabulary"), Error);

    std::vector<std::int32_t> stream;
    pack_document(stream, std::vector<std::int32_t>{5, 6}, 0);
    pack_document(stream, std::vector<std::int32_t>{}, 0);
    pack_document(stream, std::vector<std::int32_t>{7}, 0);
    CHECK(stream == std::vector<std::int32_t>{5, 6, 0, 0, 7, 0});
}

TEST_CASE("prepare_data: packed shards decode back to the documents, train and val in input order") {
    TempDir dir;
    const auto docs = corpus(400);
    write_text(dir / "in.jsonl", jsonl_of(docs));
    PrepareOptions o = options(dir / "in.jsonl", dir / "out");
    PrepareSummary s = prepare_data(o, tokenizer());
    const int V = tokenizer().vocab_size();
    const std::int32_t eot = tokenizer().token_id("<|endoftext|>");

    CHECK(s.train.documents + s.val.documents == 400);
    CHECK(s.val.documents > 10);
    CHECK(s.val.documents < 80);
    CHECK(s.train.shards.size() > 3);
    CHECK(s.train.pattern == (dir / "out" / "train_*.bin").string());
    CHECK(s.val.pattern == (dir / "out" / "val_*.bin").string());
    CHECK(fs::exists(dir / "out" / "train_000000.bin"));
    CHECK(fs::exists(dir / "out" / "val_000000.bin"));

    std::vector<std::string> want_train, want_val;
    std::int64_t train_bytes = 0;
    for (std::size_t i = 0; i < docs.size(); ++i) {
        bool v = in_val_split(o.seed, std::int64_t(i), o.val_fraction);
        (v ? want_val : want_train).push_back(docs[i]);
        if (!v) train_bytes += std::int64_t(docs[i].size());
    }
    const auto train_stream = stream_of(s.train.pattern, V);
    CHECK(documents_of(train_stream, eot) == want_train);
    CHECK(documents_of(stream_of(s.val.pattern, V), eot) == want_val);
    CHECK(std::int64_t(train_stream.size()) == s.train.tokens);
    CHECK(s.train.bytes == train_bytes);
    // A document spelling "<|endoftext|>" is encoded as text: the EOT count is the document count.
    CHECK(std::count(train_stream.begin(), train_stream.end(), eot) == s.train.documents);
    // Each document is exactly its text encoding followed by EOT.
    std::vector<std::int32_t> rebuilt;
    for (const auto& d : want_train) pack_document(rebuilt, tokenizer().encode(d, false), eot);
    CHECK(rebuilt == train_stream);

    // The meta files, under the names Pretrain looks for, and Pretrain reading them.
    auto meta = nlohmann::json::parse(read_bytes(dir / "out" / "val_*.bin.meta.json"));
    CHECK(meta["tokens"] == s.val.tokens);
    CHECK(meta["bytes"] == s.val.bytes);
    CHECK(meta["documents"] == s.val.documents);
    CHECK(nlohmann::json::parse(read_bytes(dir / "out" / "train_*.bin.meta.json"))["bytes"] == train_bytes);
    // Pretrain reads "<val_data>.meta.json".
    CHECK(s.val.meta == fs::path(s.val.pattern + ".meta.json"));
    CHECK(s.train.meta == fs::path(s.train.pattern + ".meta.json"));
    CHECK(s.describe().find("--train_data \"" + s.train.pattern + "\" --val_data \"" + s.val.pattern + "\"") != std::string::npos);

    // A second run into the same directory must be asked for.
    CHECK_THROWS_WITH_AS(prepare_data(o, tokenizer()), doctest::Contains("--overwrite"), Error);
    o.overwrite = true;
    o.shard_tokens = 100000;  // fewer shards now: the old ones must not linger
    write_text(dir / "out" / "notes.txt", "not ours");
    PrepareSummary again = prepare_data(o, tokenizer());
    CHECK(again.train.shards.size() == 1);
    CHECK(!fs::exists(dir / "out" / "train_000001.bin"));
    CHECK(fs::exists(dir / "out" / "notes.txt"));
    CHECK(stream_of(again.train.pattern, V) == train_stream);
}

TEST_CASE("prepare_data: the same shards with 1 and 2 threads; the split is deterministic") {
    TempDir dir;
    const auto docs = corpus(300);
    write_text(dir / "a.jsonl", jsonl_of(std::vector<std::string>(docs.begin(), docs.begin() + 120)));
    std::string text;  // the rest as plain text, one document per line
    for (std::size_t i = 120; i < docs.size(); ++i) text += docs[i] + "\n";
    write_text(dir / "b.txt", text);
    auto run = [&](const std::string& name, int threads, std::uint64_t seed) {
        PrepareOptions o = options(dir / "a.jsonl", dir / name);
        o.inputs.push_back((dir / "b.txt").string());
        o.threads = threads;
        o.seed = seed;
        return prepare_data(o, tokenizer());
    };
    PrepareSummary one = run("t1", 1, 3), two = run("t2", 2, 3), other = run("t3", 2, 4);
    REQUIRE(one.train.shards.size() == two.train.shards.size());
    REQUIRE(one.train.shards.size() > 2);
    for (std::size_t i = 0; i < one.train.shards.size(); ++i)
        CHECK(read_bytes(one.train.shards[i]) == read_bytes(two.train.shards[i]));
    REQUIRE(one.val.shards.size() == two.val.shards.size());
    for (std::size_t i = 0; i < one.val.shards.size(); ++i)
        CHECK(read_bytes(one.val.shards[i]) == read_bytes(two.val.shards[i]));
    CHECK(one.val.documents == two.val.documents);
    // Another seed, another split.
    CHECK(read_bytes(one.val.shards[0]) != read_bytes(other.val.shards[0]));
    CHECK(one.train.documents + one.val.documents == 300);

    // val_tokens: the first documents, until the validation stream holds that many tokens.
    PrepareOptions o = options(dir / "a.jsonl", dir / "vt");
    o.val_tokens = 200;
    PrepareSummary vt = prepare_data(o, tokenizer());
    const std::int32_t eot = tokenizer().token_id("<|endoftext|>");
    auto val_docs = documents_of(stream_of(vt.val.pattern, tokenizer().vocab_size()), eot);
    REQUIRE(!val_docs.empty());
    CHECK(std::equal(val_docs.begin(), val_docs.end(), docs.begin()));
    CHECK(vt.val.tokens >= 200);
    CHECK(vt.val.tokens - std::int64_t(tokenizer().encode(val_docs.back(), false).size()) - 1 < 200);
}

TEST_CASE("prepare_data: malformed records fail with file:line, or are skipped and counted") {
    TempDir dir;
    const std::string lines = R"({"text": "Document one"})" "\n"
                              R"({"text": 5})" "\n"
                              "\n"
                              R"({"txt": "x"})" "\n"
                              "{\"text\": \"bad \xFF byte\"}\n"
                              R"({"text": "unterminated)" "\n"
                              R"({"text": ""})" "\n"
                              R"({"text": "Document two"})" "\n";
    write_text(dir / "in.jsonl", lines);
    PrepareOptions o = options(dir / "in.jsonl", dir / "out");
    o.val_fraction = 0;
    for (int threads : {1, 2}) {
        o.threads = threads;
        CHECK_THROWS_WITH_AS(prepare_data(o, tokenizer()),
                             ((dir / "in.jsonl").string() + ":2: field \"text\": expected a string, found number").c_str(), Error);
    }
    o.on_error = OnError::skip;
    PrepareSummary s = prepare_data(o, tokenizer());
    CHECK(s.train.documents == 2);
    CHECK(s.empty_documents == 1);
    CHECK(s.skipped.count == 4);
    REQUIRE(s.skipped.first.size() == 4);
    const std::string f = (dir / "in.jsonl").string();
    CHECK(s.skipped.first[0] == f + ":2: field \"text\": expected a string, found number");
    CHECK(s.skipped.first[1] == f + ":4: missing field \"text\"");
    CHECK(s.skipped.first[2] == f + ":5: invalid UTF-8 (byte 0xff at column 15)");
    CHECK(s.skipped.first[3].rfind(f + ":6: not valid JSON", 0) == 0);
    CHECK(s.val.shards.empty());
    CHECK(!fs::exists(dir / "out" / "val_*.bin.meta.json"));
    const std::int32_t eot = tokenizer().token_id("<|endoftext|>");
    CHECK(documents_of(stream_of(s.train.pattern, tokenizer().vocab_size()), eot) ==
          std::vector<std::string>{"Document one", "Document two"});

    // Plain text: invalid UTF-8 names the line; paragraph mode keeps line breaks inside a document.
    write_text(dir / "t.txt", "Document one\nstill one\n\n\nDocument \xC0 two\n");
    PrepareOptions t = options(dir / "t.txt", dir / "txt");
    t.val_fraction = 0;
    t.text_split = TextSplit::paragraph;
    CHECK_THROWS_WITH_AS(prepare_data(t, tokenizer()),
                         ((dir / "t.txt").string() + ":5: invalid UTF-8 (byte 0xc0 at column 10)").c_str(), Error);
    t.on_error = OnError::skip;
    PrepareSummary ts = prepare_data(t, tokenizer());
    CHECK(documents_of(stream_of(ts.train.pattern, tokenizer().vocab_size()), eot) == std::vector<std::string>{"Document one\nstill one"});

    // Nothing usable at all.
    write_text(dir / "empty.jsonl", "\n" R"({"text": ""})" "\n");
    CHECK_THROWS_WITH_AS(prepare_data(options(dir / "empty.jsonl", dir / "e"), tokenizer()), doctest::Contains("no document"), Error);
    CHECK_THROWS_WITH_AS(prepare_data(options(dir / "nothing_*.jsonl", dir / "e"), tokenizer()), doctest::Contains("no file matches"), Error);
}
