// tokenizer: train, encode and decode with minitrain's byte-level BPE tokenizer (Hugging Face
// tokenizer.json files, e.g. MiniMind's).
//
//   tokenizer train  --input FILE... --vocab_size N --special "<|endoftext|>,<|im_start|>,<|im_end|>"
//                    --output tokenizer.json [--threads N] [--min_frequency N] [--pattern gpt2|gpt4]
//   tokenizer encode --tokenizer tokenizer.json [--input FILE] [--no_special]
//   tokenizer decode --tokenizer tokenizer.json [--input FILE]
//
// encode reads text line by line (stdin by default) and prints one line of space-separated ids per
// input line. The line break itself ('\n') is not encoded, so "a\nb" gives two lines of ids; anything
// else on the line, a '\r' included, is. decode is the inverse: each line of ids becomes one line of
// text, so `encode | decode` reproduces the input (plus a final newline if it had none).
#include <minitrain/tokenizer/tokenizer.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace minitrain;

namespace {

const char* const usage_main =
    "usage: tokenizer <command> [options]   (tokenizer <command> --help for its options)\n"
    "  train    learn a byte-level BPE vocabulary from text or .jsonl files\n"
    "  encode   text lines -> lines of token ids\n"
    "  decode   lines of token ids -> text lines\n";

const char* const usage_train =
    "usage: tokenizer train --input FILE... --output tokenizer.json [options]\n"
    "  --input FILE...       training files; a name ending in .jsonl is read as JSON lines with a \"text\" field\n"
    "  --output PATH         where to write the Hugging Face tokenizer.json\n"
    "  --vocab_size N        total vocabulary size, special and byte tokens included (default 6400)\n"
    "  --special LIST        comma-separated special tokens, ids 0, 1, ... in this order\n"
    "                        (default \"<|endoftext|>,<|im_start|>,<|im_end|>\")\n"
    "  --min_frequency N     never merge a pair seen fewer than N times (default 2)\n"
    "  --threads N           word-counting threads, 0 = all cores (default 0; the result does not depend on it)\n"
    "  --pattern gpt2|gpt4   pre-tokenization regex (default gpt2, as MiniMind)\n"
    "  --quiet               no progress on stderr\n";

const char* const usage_encode =
    "usage: tokenizer encode --tokenizer tokenizer.json [--input FILE] [--no_special]\n"
    "  Reads text (stdin by default) and prints, for each line, its token ids separated by spaces.\n"
    "  The '\\n' ending a line is not encoded (everything else, '\\r' included, is).\n"
    "  --no_special   encode special tokens written in the text as plain text, not as their ids\n";

const char* const usage_decode =
    "usage: tokenizer decode --tokenizer tokenizer.json [--input FILE]\n"
    "  Reads lines of space-separated token ids (stdin by default) and prints each as a line of text.\n";

/// Options as name -> values. "--name v1 v2 ..." takes every following argument up to the next "--x".
struct Args {
    std::map<std::string, std::vector<std::string>> values;
    bool has(const std::string& k) const { return values.count(k) != 0; }
    std::string get(const std::string& k, const std::string& fallback = "") const {
        auto it = values.find(k);
        if (it == values.end() || it->second.empty()) return fallback;
        MT_CHECK(it->second.size() == 1, "--", k, " takes one value, found ", it->second.size());
        return it->second[0];
    }
    int get_int(const std::string& k, int fallback) const {
        std::string v = get(k);
        if (v.empty()) return fallback;
        try {
            std::size_t used = 0;
            int x = std::stoi(v, &used);
            if (used == v.size()) return x;
        } catch (const std::exception&) {
        }
        detail::fail("--", k, ": expected an integer, found \"", v, "\"");
    }
};

Args parse(int argc, char** argv, int first, const std::vector<std::string>& known) {
    Args a;
    std::string cur;
    for (int i = first; i < argc; ++i) {
        std::string s = argv[i];
        if (s.rfind("--", 0) == 0) {
            cur = s.substr(2);
            if (auto eq = cur.find('='); eq != std::string::npos) {
                a.values[cur.substr(0, eq)].push_back(cur.substr(eq + 1));
                cur = cur.substr(0, eq);
            } else {
                a.values[cur];
            }
            bool ok = false;
            for (const auto& k : known) ok = ok || k == cur;
            MT_CHECK(ok, "unknown option --", cur);
        } else {
            MT_CHECK(!cur.empty(), "unexpected argument \"", s, "\"");
            a.values[cur].push_back(s);
        }
    }
    return a;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(s);
    while (std::getline(in, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

/// Runs f(line) for each '\n'-terminated line of FILE or stdin (a last line without '\n' counts too).
template <class F>
void for_each_line(const std::string& input, F&& f) {
    std::ifstream file;
    if (!input.empty()) {
        file.open(input, std::ios::binary);
        MT_CHECK(file, input, ": cannot open for reading");
    }
    std::istream& in = input.empty() ? std::cin : file;
    std::string line;
    while (std::getline(in, line)) f(line);
}

int cmd_train(const Args& a) {
    MT_CHECK(a.has("input") && !a.values.at("input").empty(), "--input is required");
    std::string output = a.get("output");
    MT_CHECK(!output.empty(), "--output is required");
    Tokenizer::TrainOptions o;
    o.vocab_size = a.get_int("vocab_size", o.vocab_size);
    if (a.has("special")) o.special_tokens = split_commas(a.get("special"));
    o.min_frequency = a.get_int("min_frequency", o.min_frequency);
    o.threads = a.get_int("threads", o.threads);
    o.progress = !a.has("quiet");
    std::string pattern = a.get("pattern", "gpt2");
    MT_CHECK(pattern == "gpt2" || pattern == "gpt4", "--pattern: expected gpt2 or gpt4, found \"", pattern, "\"");
    o.pattern = pattern == "gpt2" ? tok::Pattern::gpt2 : tok::Pattern::gpt4;
    std::vector<std::filesystem::path> files(a.values.at("input").begin(), a.values.at("input").end());
    auto t0 = std::chrono::steady_clock::now();
    Tokenizer t = Tokenizer::train(files, o);
    t.save(output);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "tokenizer: %d tokens written to %s in %.2f s\n", t.vocab_size(), output.c_str(), s);
    return 0;
}

int cmd_encode(const Args& a) {
    std::string path = a.get("tokenizer");
    MT_CHECK(!path.empty(), "--tokenizer is required");
    Tokenizer t = Tokenizer::load(path);
    const bool allow_special = !a.has("no_special");
    std::vector<std::int32_t> ids;
    std::string out;
    for_each_line(a.get("input"), [&](const std::string& line) {
        ids.clear();
        t.encode_into(line, ids, allow_special);
        out.clear();
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i) out.push_back(' ');
            out += std::to_string(ids[i]);
        }
        out.push_back('\n');
        std::fwrite(out.data(), 1, out.size(), stdout);
    });
    return 0;
}

int cmd_decode(const Args& a) {
    std::string path = a.get("tokenizer");
    MT_CHECK(!path.empty(), "--tokenizer is required");
    Tokenizer t = Tokenizer::load(path);
    std::vector<std::int32_t> ids;
    std::size_t line_no = 0;
    for_each_line(a.get("input"), [&](const std::string& line) {
        ++line_no;
        ids.clear();
        std::istringstream in(line);
        std::string w;
        while (in >> w) {
            std::size_t used = 0;
            long v = -1;
            try {
                v = std::stol(w, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            MT_CHECK(used == w.size() && v >= 0 && v < t.vocab_size(), "line ", line_no, ": \"", w,
                     "\" is not a token id (0..", t.vocab_size() - 1, ")");
            ids.push_back(std::int32_t(v));
        }
        std::string text = t.decode(ids);
        text.push_back('\n');
        std::fwrite(text.data(), 1, text.size(), stdout);
    });
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
        std::fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    std::string cmd = argv[1];
    const char* usage = cmd == "train" ? usage_train : cmd == "encode" ? usage_encode : cmd == "decode" ? usage_decode : nullptr;
    if (!usage) {
        std::fprintf(stderr, "tokenizer: unknown command \"%s\"\n%s", cmd.c_str(), usage_main);
        return 2;
    }
    for (int i = 2; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
            std::fputs(usage, stdout);
            return 0;
        }
    try {
        if (cmd == "train")
            return cmd_train(parse(argc, argv, 2,
                                   {"input", "output", "vocab_size", "special", "min_frequency", "threads", "pattern", "quiet"}));
        if (cmd == "encode") return cmd_encode(parse(argc, argv, 2, {"tokenizer", "input", "no_special"}));
        return cmd_decode(parse(argc, argv, 2, {"tokenizer", "input"}));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tokenizer %s: %s\n%s", cmd.c_str(), e.what(), usage);
        return 1;
    }
}
