// The byte-level BPE tokenizer: the byte alphabet, regex pre-tokenization (Unicode, invalid UTF-8),
// merges applied in rank order on a hand-built vocabulary, special tokens, training on a tiny corpus
// with merges worked out by hand, deterministic and thread-count-independent training, the word
// counting's chunking, round trips of random Unicode and random bytes, concurrent encoding,
// tokenizer.json save/load (and its errors), and MiniMind's own tokenizer files.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <new>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "minitrain/tokenizer/tokenizer.hpp"

// Every operator new in this executable is counted, to check that encoding allocates nothing in
// steady state (PCRE2 uses malloc, which is not counted; with JIT it allocates nothing per match).
#include "support/count_allocations.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
namespace fs = std::filesystem;
using Ids = std::vector<std::int32_t>;

namespace {

using mt_test::TempDir;

std::string read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void write_file(const fs::path& p, const std::string& s) {
    std::ofstream f(p, std::ios::binary);
    f << s;
}

/// The folder with MiniMind's tokenizer files, found by walking up from this source file to a folder
/// holding shared/data/minimind-tokenizers; empty when there is none.
fs::path minimind_dir() {
    for (fs::path p = fs::path(__FILE__).parent_path(); !p.empty(); p = p.parent_path()) {
        fs::path c = p / "shared" / "data" / "minimind-tokenizers";
        if (fs::exists(c / "minimind2-tokenizer.json")) return c;
        if (p == p.root_path()) break;
    }
    return {};
}

std::vector<std::string> pieces(const tok::Regex& re, std::string_view s) {
    std::vector<std::string> out;
    re.split(s, [&](std::string_view p) { out.emplace_back(p); });
    return out;
}

/// Random valid UTF-8 from many scripts: ASCII (letters, digits, punctuation, whitespace), Latin-1,
/// Greek, Cyrillic, Hebrew, Arabic, Devanagari, Thai, combining marks, CJK, Hangul, kana, emoji (with
/// ZWJ and variation selectors), unusual spaces (NBSP, ideographic space, line separator) and symbols.
std::string random_unicode(std::mt19937& rng, int n_chars) {
    static const std::pair<char32_t, char32_t> ranges[] = {
        {0x20, 0x7E},     {0x20, 0x7E},     {'\n', '\n'},     {'\t', '\r'},     {0xA0, 0xFF},
        {0x370, 0x3FF},   {0x400, 0x4FF},   {0x5D0, 0x5EA},   {0x600, 0x6FF},   {0x900, 0x97F},
        {0xE00, 0xE5B},   {0x300, 0x36F},   {0x4E00, 0x9FFF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3},
        {0x3040, 0x30FF}, {0x1F300, 0x1FAFF}, {0x200D, 0x200D}, {0xFE0F, 0xFE0F}, {0x3000, 0x3000},
        {0x2028, 0x2029}, {0x2000, 0x206F}, {0xFF01, 0xFF5E}, {0x10000, 0x1007F}, {0x1D400, 0x1D7FF}};
    std::uniform_int_distribution<int> pick(0, int(std::size(ranges)) - 1);
    std::string s;
    for (int i = 0; i < n_chars; ++i) {
        auto [lo, hi] = ranges[std::size_t(pick(rng))];
        tok::utf8_append(s, char32_t(std::uniform_int_distribution<std::uint32_t>(lo, hi)(rng)));
    }
    return s;
}

/// Random bytes: mostly invalid UTF-8 (stray continuation bytes, truncated sequences, 0xFF, NUL...).
std::string random_bytes(std::mt19937& rng, int n) {
    std::string s;
    std::uniform_int_distribution<int> byte(0, 255), kind(0, 3);
    for (int i = 0; i < n; ++i) {
        int k = kind(rng);
        if (k == 0) s += "\xe4\xbd";      // a truncated 3-byte sequence
        else if (k == 1) s += char(' ' + byte(rng) % 95);
        else s += char(byte(rng));
    }
    return s;
}

/// A byte-level tokenizer.json built by hand: the 256 byte tokens (ids 0..255 in byte order) plus the
/// given merges (written as "a b" strings) and added tokens.
std::string hand_tokenizer_json(const std::vector<std::pair<std::string, std::string>>& merges,
                                const std::vector<std::pair<std::string, bool>>& added = {}) {
    nlohmann::json vocab = nlohmann::json::object();
    const auto& a = tok::byte_alphabet();
    int id = 0;
    for (int b = 0; b < 256; ++b) vocab[a.utf8[std::size_t(b)]] = id++;
    nlohmann::json m = nlohmann::json::array();
    for (const auto& [l, r] : merges) {
        if (!vocab.contains(l + r)) vocab[l + r] = id++;
        m.push_back(l + " " + r);
    }
    nlohmann::json at = nlohmann::json::array();
    for (const auto& [content, special] : added)
        at.push_back({{"id", id++}, {"content", content}, {"special", special}, {"lstrip", false},
                      {"rstrip", false}, {"single_word", false}, {"normalized", false}});
    nlohmann::json j = {
        {"version", "1.0"},
        {"added_tokens", at},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}}};
    return j.dump();
}

Tokenizer hand_tokenizer(const TempDir& dir, const std::vector<std::pair<std::string, std::string>>& merges,
                         const std::vector<std::pair<std::string, bool>>& added = {}) {
    fs::path p = dir.path / "hand.json";
    write_file(p, hand_tokenizer_json(merges, added));
    return Tokenizer::load(p);
}

/// A varied sample for comparing two tokenizers' encodings.
std::vector<std::string> sample_texts() {
    std::vector<std::string> t = {
        "Hello, world! It's a test: don't we'll they've I'm you'd 12345 + 3.14159 = ???",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好，请介绍一下你自己。<|im_end|>",
        "混合 mixed 文本 text, 😀👍🏽 emoji 👨‍👩‍👧, Ελληνικά, русский, العربية, हिन्दी, 한국어, 日本語のテキスト。",
        "   leading spaces, trailing   \n\n\n  tabs\t\tand\r\nCRLF   ",
        "code: for (int i = 0; i < n; ++i) { x[i] += y[i] * 2; }  // comment",
        "<think>reasoning</think><tool_call>{\"name\": \"f\"}</tool_call><|endoftext|>",
        std::string("bytes \xff\xfe invalid \xe4\xbd utf-8 \x80 and NUL \0 inside", 40),
    };
    std::mt19937 rng(7);
    for (int i = 0; i < 20; ++i) t.push_back(random_unicode(rng, 60));
    return t;
}

}  // namespace

// ---- bytes and pre-tokenization -------------------------------------------------------------------

TEST_CASE("tokenizer: GPT-2's byte alphabet") {
    const auto& a = tok::byte_alphabet();
    std::vector<char32_t> codes(a.code.begin(), a.code.end());
    std::sort(codes.begin(), codes.end());
    CHECK(std::unique(codes.begin(), codes.end()) == codes.end());  // a bijection
    CHECK(a.utf8[' '] == "Ġ");
    CHECK(a.utf8['\n'] == "Ċ");
    CHECK(a.utf8['\t'] == "ĉ");
    CHECK(a.utf8['A'] == "A");
    CHECK(a.code[0] == 0x100);
    CHECK(a.code[0xAD] == 0x143);  // the soft hyphen is the last byte moved
    CHECK(a.utf8[0xE9] == "é");
    // by_code: the bytes sorted by code point: printable ASCII first, then Latin-1, then the moved ones.
    CHECK(a.by_code[0] == '!');
    CHECK(a.by_code[255] == 0xAD);
    std::string all;
    for (int b = 0; b < 256; ++b) all.push_back(char(b));
    std::string back;
    REQUIRE(tok::from_byte_level(tok::to_byte_level(all), back));
    CHECK(back == all);
    CHECK(tok::to_byte_level("a b\n") == "aĠbĊ");
    std::string bad;
    CHECK_FALSE(tok::from_byte_level("€", bad));  // not in the alphabet
}

TEST_CASE("tokenizer: GPT-2 regex pre-tokenization, Unicode and invalid UTF-8") {
    tok::Regex re(tok::gpt2_pattern);
    using V = std::vector<std::string>;
    CHECK(pieces(re, "Hello world's  end") == V{"Hello", " world", "'s", " ", " end"});
    // Whitespace: a run before a word leaves its last space to the word (and a newline run its last
    // newline, which then stands alone); a final run stays whole. (Checked against Python's regex module.)
    CHECK(pieces(re, "a   b\n\nc  ") == V{"a", "  ", " b", "\n", "\n", "c", "  "});
    CHECK(pieces(re, "x 123 4.5!!") == V{"x", " 123", " 4", ".", "5", "!!"});
    CHECK(pieces(re, "I'll can't") == V{"I", "'ll", " can", "'t"});
    // \p{L} and \p{N} cover every script (UCP): accented, CJK, Arabic, Devanagari digits.
    CHECK(pieces(re, "héllo wörld 你好世界 مرحبا १२३") == V{"héllo", " wörld", " 你好世界", " مرحبا", " १२३"});
    CHECK(pieces(re, "日本語。テスト") == V{"日本語", "。", "テスト"});
    // Emoji are neither letters nor numbers.
    CHECK(pieces(re, "ok 😀👍!") == V{"ok", " 😀👍!"});
    // Invalid UTF-8 matches nothing: the bytes between matches become pieces, and nothing is lost.
    CHECK(pieces(re, "ab\xff" "cd") == V{"ab", "\xff", "cd"});
    CHECK(pieces(re, "\xe4\xbd x") == V{"\xe4\xbd", " x"});
    CHECK(pieces(re, "\x80\x80") == V{"\x80\x80"});
    std::mt19937 rng(1);
    for (int i = 0; i < 200; ++i) {
        std::string s = i % 2 ? random_unicode(rng, 50) : random_bytes(rng, 50);
        std::string joined;
        for (const auto& p : pieces(re, s)) {
            CHECK_FALSE(p.empty());
            joined += p;
        }
        CHECK(joined == s);
    }
}

TEST_CASE("tokenizer: GPT-4 (cl100k) regex pre-tokenization") {
    tok::Regex re(tok::gpt4_pattern);
    using V = std::vector<std::string>;
    CHECK(pieces(re, "1234567 abc") == V{"123", "456", "7", " abc"});
    CHECK(pieces(re, "HE'LL don'T") == V{"HE", "'LL", " don", "'T"});
    CHECK(pieces(re, "(hello)\n\nworld") == V{"(hello", ")\n\n", "world"});
    CHECK(pieces(re, "a  \n  b") == V{"a", "  \n", " ", " b"});
}

TEST_CASE("tokenizer: a regex that does not compile is an Error with PCRE2's reason") {
    CHECK_THROWS_WITH_AS(tok::Regex("(unclosed"), doctest::Contains("does not compile"), Error);
}

// ---- BPE on a hand-built vocabulary ---------------------------------------------------------------

TEST_CASE("tokenizer: merges are applied lowest rank first, leftmost first on ties") {
    TempDir dir;
    // Ranks: 0 "b c", 1 "a b", 2 "a bc". For "abc" the lowest rank is "b c" -> a|bc, then "a bc" -> abc.
    // Applying "a b" first (out of order) would give ab|c, and no merge joins those: [ab, c].
    Tokenizer t = hand_tokenizer(dir, {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"x", "x"}, {"xx", "x"}});
    const std::int32_t bc = t.token_id("bc"), ab = t.token_id("ab"), abc = t.token_id("abc");
    CHECK(bc == 256);
    CHECK(ab == 257);
    CHECK(abc == 258);
    CHECK(t.encode("abc") == Ids{abc});
    CHECK(t.encode("ab") == Ids{ab});
    // "abab": ranks at positions 0 (a b, 1), 1 (b a, none), 2 (a b, 1): both ab -> [ab, ab].
    CHECK(t.encode("abab") == Ids{ab, ab});
    // "abcbc": b c (rank 0) merges at 1 and 3 first: a|bc|bc, then a bc (rank 2): [abc, bc].
    CHECK(t.encode("abcbc") == Ids{abc, bc});
    // "xxx": "x x" could merge at 0 or 1; leftmost first gives xx|x, then "xx x" -> xxx. (Rightmost
    // first would give x|xx, which no merge joins.)
    CHECK(t.encode("xxx") == Ids{t.token_id("xxx")});
    // "xxxx": x x at 0 -> xx|x|x; now "x x" (rank 3) at 2 beats "xx x" (rank 4) at 0 -> [xx, xx].
    CHECK(t.encode("xxxx") == Ids{t.token_id("xx"), t.token_id("xx")});
    // Pre-tokenization bounds merges: " abc" is one word starting with a space, and no merge has Ġ.
    Ids expect = {abc, t.token_id("Ġ"), abc};
    CHECK(t.encode("abc abc") == expect);
    // In this vocabulary a byte's token id is the byte value (bytes are listed in byte order).
    CHECK(t.encode(std::string("\xff\0z", 3)) == Ids{0xFF, 0, 'z'});
    CHECK(t.decode(Ids{abc, 0xFF, 0, bc}) == std::string("abc\xff\0bc", 7));
}

TEST_CASE("tokenizer: special tokens are never split; allow_special=false encodes them as text") {
    TempDir dir;
    Tokenizer t = hand_tokenizer(dir, {{"l", "l"}, {"e", "ll"}, {"h", "ell"}, {"hell", "o"}},
                                 {{"<|im_end|>", true}, {"<|im", true}, {"<think>", false}});
    const std::int32_t im_end = t.token_id("<|im_end|>"), im = t.token_id("<|im"), think = t.token_id("<think>");
    CHECK(t.special_tokens() == std::vector<std::string>{"<|im_end|>", "<|im", "<think>"});
    Ids hello = t.encode("hello");
    REQUIRE(hello == Ids{t.token_id("hello")});
    // Adjacent to letters on both sides: cut out first, then the rest is encoded as usual.
    Ids expect = hello;
    expect.push_back(im_end);
    expect.insert(expect.end(), hello.begin(), hello.end());
    CHECK(t.encode("hello<|im_end|>hello") == expect);
    // Longest match at a position: "<|im_end|>" wins over its prefix "<|im".
    CHECK(t.encode("<|im_end|><|im<|im_end") == Ids{im_end, im, im, '_', 'e', 'n', 'd'});
    // allow_special = false: the special ones are plain text...
    std::string text = "hello<|im_end|>hello";
    Ids plain = t.encode(text, false);
    CHECK(std::find(plain.begin(), plain.end(), im_end) == plain.end());
    CHECK(t.decode(plain) == text);
    // ... the same ids as the text's parts encoded on their own ("<|" "im" "_" "end" "|>" are words).
    Ids parts = hello;
    for (const char* w : {"<|", "im", "_", "end", "|>"}) {
        Ids p = t.encode(w);
        parts.insert(parts.end(), p.begin(), p.end());
    }
    parts.insert(parts.end(), hello.begin(), hello.end());
    CHECK(plain == parts);
    // ...but a non-special added token is always matched, as in Hugging Face.
    CHECK(t.encode("a<think>b", false) == Ids{'a', think, 'b'});
    CHECK(t.encode("a<think>b", true) == Ids{'a', think, 'b'});
    // encode_into appends.
    Ids out = {7};
    t.encode_into("hello", out);
    CHECK(out == Ids{7, hello[0]});
    CHECK(t.decode(t.encode("x<|im_end|><|im_end|>y")) == "x<|im_end|><|im_end|>y");
}

// ---- training -------------------------------------------------------------------------------------

TEST_CASE("tokenizer: training on a tiny corpus gives the merges worked out by hand") {
    Tokenizer::TrainOptions o;
    o.special_tokens = {"<s>"};
    o.vocab_size = 1 + 256 + 10;
    o.min_frequency = 1;
    o.threads = 1;
    // Words (each text is a document; none has a space): "ab" x3, "abc" x1, "bc" x1.
    //   pair counts: (a,b) = 3 + 1 = 4, (b,c) = 1 + 1 = 2            -> merge 1: a b -> "ab" (id 257)
    //   words now [ab] x3, [ab c], [b c]: (ab,c) = 1, (b,c) = 1: a tie, broken by the smallest
    //   (left id, right id): b (a byte token, id 66) < ab (257)      -> merge 2: b c -> "bc" (id 258)
    //   words now [ab] x3, [ab c], [bc]: (ab,c) = 1                  -> merge 3: ab c -> "abc" (id 259)
    //   no pair left: training stops below vocab_size.
    std::vector<std::string> corpus = {"ab", "ab", "ab", "abc", "bc"};
    Tokenizer t = Tokenizer::train_from_texts(corpus, o);
    CHECK(t.vocab_size() == 260);
    CHECK(t.token_id("<s>") == 0);
    CHECK(t.token_id("!") == 1);  // byte tokens follow in code-point order: '!' is the smallest
    CHECK(t.token_id("a") == 1 + ('a' - '!'));
    CHECK(t.token_id("Ā") == 1 + 188);  // byte 0x00 -> U+0100, after the 188 printable bytes
    CHECK(t.token_id("ab") == 257);
    CHECK(t.token_id("bc") == 258);
    CHECK(t.token_id("abc") == 259);
    const auto& merges = t.data().merges;
    REQUIRE(merges.size() == 3);
    CHECK(merges[0] == std::pair{t.token_id("a"), t.token_id("b")});
    CHECK(merges[1] == std::pair{t.token_id("b"), t.token_id("c")});
    CHECK(merges[2] == std::pair{t.token_id("ab"), t.token_id("c")});
    // Encoding "bcab" (one word): a b has rank 0 -> [b c ab]; then b c (rank 1) -> [bc ab]; no (bc, ab).
    CHECK(t.encode("bcab") == Ids{258, 257});
    CHECK(t.encode("<s>abc<s>") == Ids{0, 259, 0});

    // min_frequency 2 stops after merge 1 (the best pair is then seen once).
    o.min_frequency = 2;
    CHECK(Tokenizer::train_from_texts(corpus, o).vocab_size() == 258);
    // vocab_size caps the merges.
    o.min_frequency = 1;
    o.vocab_size = 1 + 256 + 2;
    Tokenizer t2 = Tokenizer::train_from_texts(corpus, o);
    CHECK(t2.vocab_size() == 259);
    CHECK(t2.encode("abc") == Ids{257, t2.token_id("c")});

    // Ties between byte pairs: (x,y) and (a,b) are both seen once; a < x, so "ab" is merged.
    o.special_tokens = {};
    o.vocab_size = 257;
    Tokenizer t3 = Tokenizer::train_from_texts({"xy", "ab"}, o);
    CHECK(t3.find("ab") == 256);
    CHECK_FALSE(t3.find("xy"));

    // Special tokens in the training text are cut out, not counted: "<s><s><s>" as text would have
    // made the pair ("><" twice); only "ab" (once) is left, below min_frequency 2.
    o.special_tokens = {"<s>"};
    o.min_frequency = 2;
    o.vocab_size = 300;
    CHECK(Tokenizer::train_from_texts({"<s><s><s>ab"}, o).vocab_size() == 257);
}

TEST_CASE("tokenizer: training rejects impossible options") {
    Tokenizer::TrainOptions o;
    o.vocab_size = 100;
    CHECK_THROWS_WITH_AS(Tokenizer::train_from_texts({"abc"}, o), doctest::Contains("vocab_size 100"), Error);
    o.vocab_size = 400;
    o.special_tokens = {"<a>", "<a>"};
    CHECK_THROWS_WITH_AS(Tokenizer::train_from_texts({"abc"}, o), doctest::Contains("given twice"), Error);
    o.special_tokens = {"x"};
    CHECK_THROWS_WITH_AS(Tokenizer::train_from_texts({"abc"}, o), doctest::Contains("byte token"), Error);
}

namespace {
/// ~2.5 MB of text in documents larger than the 1 MiB counting chunk: random words from a few scripts,
/// with the whitespace shapes that matter at chunk boundaries ("  \n", "\n\n", tabs, trailing spaces).
std::vector<std::string> synthetic_corpus() {
    std::mt19937 rng(42);
    std::vector<std::string> words;
    for (int i = 0; i < 3000; ++i) {
        std::string w;
        int len = 1 + int(rng() % 8);
        int script = int(rng() % 4);
        for (int k = 0; k < len; ++k) {
            if (script == 0) w.push_back(char('a' + rng() % 26));
            else if (script == 1) tok::utf8_append(w, char32_t(0x4E00 + rng() % 300));
            else if (script == 2) tok::utf8_append(w, char32_t(0x430 + rng() % 32));
            else w.push_back(char('0' + rng() % 10));
        }
        words.push_back(w);
    }
    const char* seps[] = {" ", " ", " ", " ", ", ", ". ", "\n", "  \n", "\n\n", "\t", "   ", "! ", " \n "};
    std::vector<std::string> docs;
    for (int d = 0; d < 2; ++d) {
        std::string doc;
        while (doc.size() < 1300000) {
            // Zipf-like: low indices much more often.
            std::size_t i = std::size_t(std::pow(double(rng() % 1000000) / 1e6, 3.0) * double(words.size()));
            doc += words[i];
            doc += seps[rng() % std::size(seps)];
        }
        docs.push_back(doc);
    }
    return docs;
}
}  // namespace

TEST_CASE("tokenizer: word counting over chunks equals counting the whole text") {
    std::vector<std::string> docs = synthetic_corpus();
    docs.push_back("tiny doc with <|endoftext|> inside<|endoftext|>");
    std::vector<std::string_view> views(docs.begin(), docs.end());
    for (auto pattern : {tok::gpt2_pattern, tok::gpt4_pattern}) {
        tok::Regex re(pattern);
        tok::WordCounts expect;
        for (std::string_view d : views) {
            // the reference: split at the special token by hand, then the whole segment through the regex
            std::size_t at;
            while ((at = d.find("<|endoftext|>")) != std::string_view::npos) {
                re.split(d.substr(0, at), [&](std::string_view w) { ++expect[std::string(w)]; });
                d = d.substr(at + 13);
            }
            re.split(d, [&](std::string_view w) { ++expect[std::string(w)]; });
        }
        // 1 MiB chunks (the default), and 1 kB chunks: thousands of cuts, many right after "  \n".
        for (std::size_t chunk : {std::size_t(1) << 20, std::size_t(1000)})
            for (int threads : {1, 3}) {
                tok::WordCounts got = tok::count_words(views, {"<|endoftext|>"}, re, threads, chunk);
                CHECK(got.size() == expect.size());
                CHECK(got == expect);
            }
    }
}

TEST_CASE("tokenizer: training is deterministic and independent of the thread count") {
    TempDir dir;
    std::vector<std::string> docs = synthetic_corpus();
    std::vector<fs::path> files;
    for (std::size_t i = 0; i < docs.size(); ++i) {
        files.push_back(dir.path / ("doc" + std::to_string(i) + ".txt"));
        write_file(files.back(), docs[i]);
    }
    // A .jsonl file: its "text" fields are the documents.
    files.push_back(dir.path / "extra.jsonl");
    write_file(files.back(), "{\"text\": \"hello world, hello again\"}\n\n{\"text\": \"你好世界\", \"id\": 3}\n");
    Tokenizer::TrainOptions o;
    o.vocab_size = 1000;
    std::string first;
    for (int threads : {1, 4, 2}) {
        o.threads = threads;
        Tokenizer t = Tokenizer::train(files, o);
        CHECK(t.vocab_size() == 1000);
        fs::path out = dir.path / ("tok" + std::to_string(threads) + ".json");
        t.save(out);
        std::string bytes = read_file(out);
        if (first.empty()) first = bytes;
        CHECK(bytes == first);
    }
    Tokenizer t = Tokenizer::load(dir.path / "tok1.json");
    CHECK(t.decode(t.encode("hello world, hello again")) == "hello world, hello again");

    // A bad .jsonl line is an Error naming the file and line.
    write_file(dir.path / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
    CHECK_THROWS_WITH_AS(Tokenizer::train({dir.path / "bad.jsonl"}, o), doctest::Contains("bad.jsonl:2"), Error);
}

// ---- round trips, caching, threads ----------------------------------------------------------------

namespace {
Tokenizer trained_multilingual(tok::Pattern pattern = tok::Pattern::gpt2) {
    std::mt19937 rng(3);
    std::vector<std::string> texts;
    for (int i = 0; i < 400; ++i) texts.push_back(random_unicode(rng, 200));
    texts.push_back("<|im_start|>user\nthe quick brown fox jumps over the lazy dog<|im_end|>");
    Tokenizer::TrainOptions o;
    o.vocab_size = 900;
    o.pattern = pattern;
    return Tokenizer::train_from_texts(texts, o);
}

void check_round_trips(const Tokenizer& t, int n) {
    std::mt19937 rng(11);
    for (int i = 0; i < n; ++i) {
        std::string s = random_unicode(rng, 1 + int(rng() % 120));
        Ids ids = t.encode(s);
        REQUIRE(t.decode(ids) == s);
        REQUIRE(t.decode(t.encode(s, false)) == s);
        std::string b = random_bytes(rng, 1 + int(rng() % 120));
        REQUIRE(t.decode(t.encode(b)) == b);
        for (std::int32_t id : ids) REQUIRE((id >= 0 && id < t.vocab_size()));
    }
    std::string specials;
    for (const auto& s : t.special_tokens()) specials += "x" + s + s + " ";
    CHECK(t.decode(t.encode(specials)) == specials);
    CHECK(t.encode("").empty());
    CHECK(t.decode(Ids{}).empty());
}
}  // namespace

TEST_CASE("tokenizer: decode(encode(x)) == x for random Unicode and random bytes") {
    check_round_trips(trained_multilingual(), 300);
    check_round_trips(trained_multilingual(tok::Pattern::gpt4), 150);
}

TEST_CASE("tokenizer: the word cache gives what the merge loop gives, also past its capacity") {
    Tokenizer t = trained_multilingual();
    // 60k distinct words: more than the cache holds, so it is emptied and refilled along the way.
    std::mt19937 rng(5);
    std::string text;
    for (int i = 0; i < 60000; ++i) {
        text += ' ';
        for (int k = 0; k < 6; ++k) text += char('a' + rng() % 26);
        if (i % 7 == 0) tok::utf8_append(text, char32_t(0x4E00 + rng() % 500));
    }
    text += std::string(600, 'z');  // a word too long to be cached
    Ids expect;
    tok::BpeScratch scratch;
    tok::Regex re(tok::gpt2_pattern);
    re.split(text, [&](std::string_view w) { tok::bpe_word(t.data(), w, expect, scratch); });
    CHECK(t.encode(text) == expect);
    CHECK(t.encode(text) == expect);  // again, from a cache filled by the first pass
}

TEST_CASE("tokenizer: the short-word and heap merge loops agree") {
    Tokenizer t = trained_multilingual();
    fs::path mm = minimind_dir();
    std::vector<Tokenizer> toks = {t};
    if (!mm.empty()) toks.push_back(Tokenizer::load(mm / "minimind2-tokenizer.json"));
    std::mt19937 rng(9);
    tok::BpeScratch scratch;
    for (const auto& tk : toks)
        for (int i = 0; i < 3000; ++i) {
            // Words up to the short loop's limit (64 bytes), from text likely to have many merges.
            std::string w = random_unicode(rng, 1 + int(rng() % 20));
            if (i % 3 == 0) w = "the" + w + "ing";
            if (i % 5 == 0) w = std::string(std::size_t(1 + rng() % 40), char('a' + rng() % 3));
            w.resize(std::min<std::size_t>(w.size(), 64));
            Ids a, b;
            tok::bpe_word_short(tk.data(), w, a);
            tok::bpe_word_heap(tk.data(), w, b, scratch);
            REQUIRE(a == b);
        }
}

TEST_CASE("tokenizer: encode_into allocates nothing in steady state") {
    Tokenizer t = trained_multilingual();
    std::vector<std::string> texts = sample_texts();
    std::mt19937 rng(2);
    texts.push_back(std::string(3000, ' ') + random_unicode(rng, 2000));  // long words: the heap merge loop
    Ids out;
    out.reserve(1 << 16);
    for (const auto& s : texts) t.encode_into(s, out);  // warm: caches and scratch grow here
    out.clear();
    long before = allocations_now();
    for (int rep = 0; rep < 3; ++rep)
        for (const auto& s : texts) {
            t.encode_into(s, out);
            t.encode_into(s, out, false);
        }
    CHECK(allocations_now() - before == 0);
    long check = g_allocations;
    Ids fresh = t.encode("x");  // the counter does count
    CHECK(g_allocations > check);
}

TEST_CASE("tokenizer: concurrent encoding with shared tokenizers gives the single-thread result") {
    Tokenizer a = trained_multilingual(), b = trained_multilingual(tok::Pattern::gpt4);
    std::vector<std::string> texts = sample_texts();
    std::vector<Ids> ea, eb;
    for (const auto& s : texts) {
        ea.push_back(a.encode(s));
        eb.push_back(b.encode(s));
    }
    std::atomic<int> bad{0};
    std::vector<std::thread> pool;
    for (int th = 0; th < 4; ++th)
        pool.emplace_back([&, th] {
            Ids out;
            for (int rep = 0; rep < 30; ++rep)
                for (std::size_t i = 0; i < texts.size(); ++i) {
                    const Tokenizer& t = (rep + th) % 2 ? a : b;  // alternate: per-thread caches per tokenizer
                    out.clear();
                    t.encode_into(texts[i], out);
                    if (out != ((rep + th) % 2 ? ea[i] : eb[i])) ++bad;
                }
        });
    for (auto& th : pool) th.join();
    CHECK(bad == 0);
}

// ---- tokenizer.json -------------------------------------------------------------------------------

TEST_CASE("tokenizer: save -> load gives identical encodings, and saving again identical bytes") {
    TempDir dir;
    for (auto pattern : {tok::Pattern::gpt2, tok::Pattern::gpt4}) {
        Tokenizer t = trained_multilingual(pattern);
        t.save(dir.path / "a.json");
        Tokenizer u = Tokenizer::load(dir.path / "a.json");
        CHECK(u.vocab_size() == t.vocab_size());
        CHECK(u.special_tokens() == t.special_tokens());
        for (const auto& s : sample_texts()) {
            CHECK(u.encode(s) == t.encode(s));
            CHECK(u.encode(s, false) == t.encode(s, false));
        }
        u.save(dir.path / "b.json");
        CHECK(read_file(dir.path / "a.json") == read_file(dir.path / "b.json"));
        auto j = nlohmann::json::parse(read_file(dir.path / "a.json"));
        CHECK(j["version"] == "1.0");
        CHECK(j["model"]["type"] == "BPE");
        CHECK(j["added_tokens"][0] == nlohmann::json{{"id", 0}, {"content", "<|endoftext|>"}, {"single_word", false},
                                                      {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                                      {"special", true}});
        CHECK(j["decoder"]["type"] == "ByteLevel");
        if (pattern == tok::Pattern::gpt2)
            CHECK(j["pre_tokenizer"] == nlohmann::json{{"type", "ByteLevel"}, {"add_prefix_space", false},
                                                       {"trim_offsets", true}, {"use_regex", true}});
        else
            CHECK(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == std::string(tok::gpt4_pattern));
        CHECK(j["model"]["vocab"]["<|endoftext|>"] == 0);
        CHECK(j["model"]["merges"].size() == std::size_t(t.vocab_size() - 3 - 256));
    }
}

TEST_CASE("tokenizer: tokenizer.json variants: Split pre-tokenizer, add_prefix_space, string merges") {
    TempDir dir;
    auto j = nlohmann::json::parse(hand_tokenizer_json({{"1", "2"}, {"12", "3"}}));
    // A Sequence [Split(GPT-4 regex), ByteLevel(use_regex false)]: digits come in groups of 3.
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"}, {"pattern", {{"Regex", std::string(tok::gpt4_pattern)}}},
                             {"behavior", "Isolated"}, {"invert", false}},
                            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    write_file(dir.path / "split.json", j.dump());
    Tokenizer t = Tokenizer::load(dir.path / "split.json");
    const std::int32_t t123 = t.token_id("123");
    CHECK(t.encode("1231231") == Ids{t123, t123, '1'});
    // ByteLevel without the regex: the whole text is one word.
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
    write_file(dir.path / "noregex.json", j.dump());
    CHECK(Tokenizer::load(dir.path / "noregex.json").encode("a123") == Ids{'a', t123});
    // add_prefix_space: a space is prepended to text not starting with one (and decoded back).
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
    write_file(dir.path / "prefix.json", j.dump());
    Tokenizer p = Tokenizer::load(dir.path / "prefix.json");
    CHECK(p.encode("hi") == Ids{' ', 'h', 'i'});
    CHECK(p.encode(" hi") == Ids{' ', 'h', 'i'});
    p.save(dir.path / "prefix2.json");
    CHECK(Tokenizer::load(dir.path / "prefix2.json").encode("hi") == Ids{' ', 'h', 'i'});
    // Split with a literal String pattern.
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Isolated"}},
                            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    write_file(dir.path / "string.json", j.dump());
    CHECK(Tokenizer::load(dir.path / "string.json").encode("12.3") == Ids{t.token_id("12"), '.', '3'});
}

TEST_CASE("tokenizer: unsupported or broken tokenizer.json files are Errors naming the file and field") {
    TempDir dir;
    const std::string base = hand_tokenizer_json({{"a", "b"}});
    int n = 0;
    auto check_error = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& field) {
        auto j = nlohmann::json::parse(base);
        edit(j);
        fs::path p = dir.path / ("bad" + std::to_string(n++) + ".json");
        write_file(p, j.dump());
        CAPTURE(field);
        CHECK_THROWS_WITH_AS(Tokenizer::load(p), doctest::Contains(p.string().c_str()), Error);
        CHECK_THROWS_WITH_AS(Tokenizer::load(p), doctest::Contains(field.c_str()), Error);
    };
    check_error([](auto& j) { j["normalizer"] = {{"type", "NFC"}}; }, "normalizer");
    check_error([](auto& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, "pre_tokenizer.type");
    check_error([](auto& j) { j["pre_tokenizer"] = nullptr; }, "pre_tokenizer");
    check_error([](auto& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder.type");
    check_error([](auto& j) { j.erase("decoder"); }, "decoder");
    check_error([](auto& j) { j["post_processor"] = {{"type", "TemplateProcessing"}}; }, "post_processor.type");
    check_error([](auto& j) { j["padding"] = {{"length", 8}}; }, "padding");
    check_error([](auto& j) { j["model"]["type"] = "WordPiece"; }, "model.type");
    check_error([](auto& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback");
    check_error([](auto& j) { j["model"]["dropout"] = 0.1; }, "model.dropout");
    check_error([](auto& j) { j["model"]["continuing_subword_prefix"] = "##"; }, "model.continuing_subword_prefix");
    check_error([](auto& j) { j["model"]["merges"].push_back("a zz"); }, "model.merges[1]");
    check_error([](auto& j) { j["model"]["merges"].push_back("abc"); }, "model.merges[1]");
    check_error([](auto& j) { j["model"]["merges"].push_back(nlohmann::json::array({"b", "a"})); }, "model.merges[1]");
    check_error([](auto& j) { j["model"]["vocab"].erase("Ġ"); }, "model.vocab[\"ab\"]: id 256 is out of range");
    check_error(
        [](auto& j) {
            j["model"]["vocab"].erase("Ġ");  // its id goes to an added token, so that the ids stay in range
            j["added_tokens"] = {{{"id", 32}, {"content", "<x>"}}};
        },
        "no token for byte 0x20");
    check_error([](auto& j) { j["model"]["vocab"]["x"] = "seven"; }, "model.vocab[\"x\"]");
    check_error([](auto& j) { j["model"]["vocab"]["zz"] = 5; }, "model.vocab: id 5");
    check_error([](auto& j) { j["added_tokens"] = {{{"id", 257}, {"content", "<x>"}, {"lstrip", true}}}; },
                "added_tokens[0].lstrip");
    check_error([](auto& j) { j["added_tokens"] = {{{"id", 257}}}; }, "added_tokens[0].content");
    check_error([](auto& j) { j["added_tokens"] = {{{"id", "257"}, {"content", "<x>"}}}; }, "added_tokens[0].id");
    check_error(
        [](auto& j) {
            j["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers",
                                   {{{"type", "Split"}, {"pattern", {{"Regex", "("}}}, {"behavior", "Isolated"}},
                                    {{"type", "ByteLevel"}, {"use_regex", false}}}}};
        },
        "pretokenizers[0].pattern");
    check_error(
        [](auto& j) {
            j["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers",
                                   {{{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}},
                                    {{"type", "ByteLevel"}, {"use_regex", false}}}}};
        },
        "pretokenizers[0].behavior");

    write_file(dir.path / "broken.json", "{\"model\": ");
    CHECK_THROWS_WITH_AS(Tokenizer::load(dir.path / "broken.json"), doctest::Contains("not valid JSON"), Error);
    CHECK_THROWS_WITH_AS(Tokenizer::load(dir.path / "missing.json"), doctest::Contains("missing.json"), Error);

    write_file(dir.path / "ok.json", base);
    Tokenizer t = Tokenizer::load(dir.path / "ok.json");
    CHECK_THROWS_WITH_AS(t.token_id("nope"), doctest::Contains("nope"), Error);
    CHECK_FALSE(t.find("nope"));
    CHECK_THROWS_AS(t.decode(Ids{t.vocab_size()}), Error);
    CHECK_THROWS_AS(t.decode(Ids{-1}), Error);
    CHECK_THROWS_AS(t.token(257), Error);
    CHECK(t.token(256) == "ab");
    CHECK_THROWS_WITH_AS(Tokenizer().encode("x"), doctest::Contains("empty tokenizer"), Error);
}

TEST_CASE("tokenizer: ids are bounded by the tokens in the file, nesting by json_max_depth (hostile files)") {
    // Issue 10: one id of 2^29 in a 7 KB file asked for gigabytes (tables are indexed by id); a
    // pre_tokenizer nested 10,000 levels deep took 1.4 GB. Both must fail at once, naming file and field,
    // with no large allocation; the same files at the bound must load.
    TempDir dir;
    const std::string base = hand_tokenizer_json({{"a", "b"}}, {{"<|endoftext|>", true}});  // 257 vocab + 1 added
    auto write = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
        auto j = nlohmann::json::parse(base);
        edit(j);
        write_file(dir / name, j.dump());
        return dir / name;
    };
    auto load_error = [&](const fs::path& p) {
        g_largest_allocation = 0;
        std::string what;
        try {
            Tokenizer::load(p);
        } catch (const Error& e) {
            what = e.what();
        }
        CHECK(g_largest_allocation < (std::size_t(16) << 20));
        CHECK(what.find(p.string()) != std::string::npos);
        return what;
    };

    // The limit is 257 + 1 = 258: ids 0..257.
    auto e = load_error(write("vocab_huge.json", [](auto& j) { j["model"]["vocab"]["zz"] = 1 << 29; }));
    CHECK(e.find("model.vocab[\"zz\"]: id 536870912 is out of range") != std::string::npos);
    CHECK(e.find("ids must be in [0, 259), the number of tokens in the file (258 in model.vocab + 1 in added_tokens)") !=
          std::string::npos);
    e = load_error(write("added_huge.json", [](auto& j) { j["added_tokens"][0]["id"] = (1 << 30) - 1; }));
    CHECK(e.find("added_tokens[0].id: id 1073741823 is out of range: ids must be in [0, 258)") != std::string::npos);
    e = load_error(write("added_next.json", [](auto& j) { j["added_tokens"][0]["id"] = 258; }));
    CHECK(e.find("added_tokens[0].id: id 258 is out of range") != std::string::npos);
    e = load_error(write("negative.json", [](auto& j) { j["model"]["vocab"]["ab"] = -1; }));
    CHECK(e.find("model.vocab[\"ab\"]: id -1 is out of range") != std::string::npos);

    // At the bound: the added token at the last id, or in a gap of the vocabulary, loads.
    Tokenizer at_bound = Tokenizer::load(write("at_bound.json", [](auto& j) { j["added_tokens"][0]["id"] = 257; }));
    CHECK(at_bound.vocab_size() == 258);
    CHECK(at_bound.token_id("<|endoftext|>") == 257);
    Tokenizer gap = Tokenizer::load(write("gap.json", [](auto& j) {
        j["model"]["vocab"]["ab"] = 257;
        j["added_tokens"][0]["id"] = 256;
    }));
    CHECK(gap.vocab_size() == 258);
    CHECK(gap.encode("ab") == std::vector<std::int32_t>{257});

    // Nesting: the top-level object is level 1, pre_tokenizer level 2, and each Sequence of one
    // pre-tokenizer adds two (its object and its array): k wrappers nest 2 + 2k levels.
    auto wrapped = [&](const std::string& name, int k) {
        return write(name, [k](auto& j) {
            nlohmann::json p = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
            for (int i = 0; i < k; ++i) p = {{"type", "Sequence"}, {"pretokenizers", nlohmann::json::array({p})}};
            j["pre_tokenizer"] = p;
        });
    };
    CHECK(Tokenizer::load(wrapped("depth128.json", 63)).encode("ab ab") == Tokenizer::load(dir / "at_bound.json").encode("ab ab"));
    e = load_error(wrapped("depth130.json", 64));
    CHECK(e.find("JSON nested deeper than 128 levels (the '[' at byte") != std::string::npos);
    CHECK(e.find("opens level 129") != std::string::npos);
    // 10,000 levels, written as text (nlohmann would take long to build and dump it).
    std::string deep = base;
    const std::string pre = "\"pre_tokenizer\":";
    auto at = deep.find(pre);
    REQUIRE(at != std::string::npos);
    auto end = deep.find('}', at);
    std::string inner = deep.substr(at + pre.size(), end + 1 - at - pre.size());
    std::string nest;
    for (int i = 0; i < 10000; ++i) nest += "{\"type\":\"Sequence\",\"pretokenizers\":[";
    nest += inner;
    for (int i = 0; i < 10000; ++i) nest += "]}";
    deep.replace(at + pre.size(), inner.size(), nest);
    write_file(dir / "deep10000.json", deep);
    e = load_error(dir / "deep10000.json");
    CHECK(e.find("JSON nested deeper than 128 levels") != std::string::npos);
}

TEST_CASE("tokenizer: training on .jsonl bounds the record size and the nesting, naming file and line") {
    TempDir dir;
    Tokenizer::TrainOptions o;
    o.vocab_size = 270;
    o.max_record_bytes = 64;
    const std::string ok = R"({"text": "hello hello hello world"})";
    write_file(dir / "ok.jsonl", ok + "\n" + ok + "\n");
    CHECK(Tokenizer::train({dir / "ok.jsonl"}, o).vocab_size() > 259);
    const std::string at_limit = R"({"text": ")" + std::string(64 - 12, 'x') + "\"}";
    REQUIRE(at_limit.size() == 64);
    write_file(dir / "limit.jsonl", at_limit + "\n");
    CHECK_NOTHROW(Tokenizer::train({dir / "limit.jsonl"}, o));
    write_file(dir / "long.jsonl", ok + "\n" + at_limit.substr(0, 10) + "x" + at_limit.substr(10) + "\n");
    const std::string too_long = (dir / "long.jsonl").string() + ":2: record too long: 65 bytes, the limit is 64 bytes per JSONL record";
    CHECK_THROWS_WITH_AS(Tokenizer::train({dir / "long.jsonl"}, o), doctest::Contains(too_long.c_str()), Error);
    o.max_record_bytes = jsonl_max_record_bytes;
    write_file(dir / "deep.jsonl", ok + "\n{\"text\": \"a\", \"x\": " + std::string(200, '[') + std::string(200, ']') + "}\n");
    const std::string too_deep = (dir / "deep.jsonl").string() + ":2: JSON nested deeper than 128 levels";
    CHECK_THROWS_WITH_AS(Tokenizer::train({dir / "deep.jsonl"}, o), doctest::Contains(too_deep.c_str()), Error);
}

// ---- MiniMind's tokenizer files -------------------------------------------------------------------

TEST_CASE("tokenizer: MiniMind's tokenizers (minimind2, minimind3)") {
    fs::path dir = minimind_dir();
    if (dir.empty()) {
        MESSAGE("skipped: shared/data/minimind-tokenizers not found above " << fs::path(__FILE__).parent_path());
        return;
    }
    TempDir tmp;
    for (std::string name : {"minimind2", "minimind3"}) {
        CAPTURE(name);
        const fs::path path = dir / (name + "-tokenizer.json");
        const auto json = nlohmann::json::parse(read_file(path));
        const auto& vocab = json["model"]["vocab"];
        Tokenizer t = Tokenizer::load(path);

        CHECK(t.vocab_size() == 6400);
        CHECK(t.token_id("<|endoftext|>") == 0);
        CHECK(t.token_id("<|im_start|>") == 1);
        CHECK(t.token_id("<|im_end|>") == 2);
        CHECK(t.special_tokens().size() == (name == "minimind2" ? 3u : 36u));

        // Every single byte encodes to the vocabulary entry of its byte-level character.
        const auto& alpha = tok::byte_alphabet();
        for (int b = 0; b < 256; ++b)
            REQUIRE(t.encode(std::string(1, char(b))) == Ids{vocab[alpha.utf8[std::size_t(b)]].get<std::int32_t>()});

        // "<|im_start|>user\n": "user" is not a token in either file. Its bytes u s e r: of the pairs
        // (u,s), (s,e), (e,r), (e,r) has the lowest rank -> u s er; then (u,s) ranks below (s,er), if that
        // is a merge at all -> us er; (us,er) is no merge. So: [1, us, er, Ċ] (checked from the file).
        std::map<std::pair<std::string, std::string>, std::size_t> rank;
        const auto& merges = json["model"]["merges"];
        for (std::size_t r = 0; r < merges.size(); ++r) rank.emplace(std::pair{merges[r][0], merges[r][1]}, r);
        auto rank_of = [&](const char* a, const char* b) {
            auto it = rank.find({a, b});
            return it == rank.end() ? std::size_t(-1) : it->second;
        };
        REQUIRE_FALSE(vocab.contains("user"));
        REQUIRE(rank_of("e", "r") < rank_of("u", "s"));
        REQUIRE(rank_of("e", "r") < rank_of("s", "e"));
        REQUIRE(rank_of("u", "s") < rank_of("s", "er"));
        REQUIRE(rank_of("us", "er") == std::size_t(-1));
        CHECK(t.encode("<|im_start|>user\n") ==
              Ids{1, vocab["us"].get<std::int32_t>(), vocab["er"].get<std::int32_t>(), vocab["Ċ"].get<std::int32_t>()});
        // "你好" is E4 BD A0 E5 A5 BD: byte-level "ä½ł" + "å¥½", merged into one token in both files.
        CHECK(t.encode("你好") == Ids{vocab["ä½łå¥½"].get<std::int32_t>()});
        CHECK(t.encode("\n") == Ids{vocab["Ċ"].get<std::int32_t>()});

        // Special tokens as text when not allowed.
        Ids plain = t.encode("<|im_start|>", false);
        CHECK(plain.size() > 1);
        CHECK(t.decode(plain) == "<|im_start|>");

        // Round trips of mixed text.
        for (const std::string s : {"你好，世界！Hello, world! 😀🎉 数学公式 E=mc² ✓",
                                    "<|im_start|>assistant\n我是 MiniMind，一个小型语言模型。😊<|im_end|>\n",
                                    "emoji 👩‍💻 + flags 🇨🇳🇺🇸 + combining é (e\u0301) + 한국어 + العربية"})
            CHECK(t.decode(t.encode(s)) == s);
        check_round_trips(t, 100);

        // Load -> save -> load: the same JSON (as data) and the same encodings.
        fs::path saved = tmp.path / (name + ".json");
        t.save(saved);
        CHECK(nlohmann::json::parse(read_file(saved)) == json);
        Tokenizer u = Tokenizer::load(saved);
        for (const auto& s : sample_texts()) {
            CHECK(u.encode(s) == t.encode(s));
            CHECK(u.encode(s, false) == t.encode(s, false));
        }
    }

    // Known encodings (from an independent Python implementation of GPT-2's BPE over the same file).
    Tokenizer m2 = Tokenizer::load(dir / "minimind2-tokenizer.json");
    CHECK(m2.encode("<|im_start|>user\nHello, world! 你好，世界 😀 it's 12345<|im_end|>") ==
          Ids{1, 320, 275, 201, 42, 392, 338, 14, 1636, 3, 223, 5134, 270, 2219, 223, 175, 256, 249, 225, 470, 531, 4937,
              21, 22, 23, 2});

    // minimind3's non-special added tokens ("<think>", "<tool_call>", ...) are matched even in plain mode.
    Tokenizer m3 = Tokenizer::load(dir / "minimind3-tokenizer.json");
    const std::int32_t think = m3.token_id("<think>");
    CHECK(think == 25);
    Ids ids = m3.encode("<think>x</think>", false);
    CHECK(ids.front() == think);
    CHECK(ids.back() == m3.token_id("</think>"));
}
