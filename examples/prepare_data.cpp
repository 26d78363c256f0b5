// prepare_data: tokenize pretraining text into llm.c token shards for `pretrain` (minitrain/data/prepare.hpp).
//
//   prepare_data --input data/pretrain.jsonl --tokenizer tokenizer.json --output_dir data/shards
//   pretrain ... --train_data "data/shards/train_*.bin" --val_data "data/shards/val_*.bin"
#include <minitrain/data/prepare.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

using namespace minitrain;

namespace {

const char* const usage =
    "usage: prepare_data --input FILE_OR_GLOB... --tokenizer tokenizer.json --output_dir DIR [options]\n"
    "  --input FILE...        input files or quoted globs (\"data/*.jsonl\"), read in the order given\n"
    "  --tokenizer PATH       a Hugging Face tokenizer.json (e.g. from `tokenizer train`)\n"
    "  --output_dir DIR       where train_000000.bin, ..., val_000000.bin and the .meta.json files go\n"
    "  --format F             auto (default: .jsonl/.ndjson are JSON Lines, the rest plain text), jsonl or text\n"
    "  --text_field NAME      the document field of a JSONL record (default text)\n"
    "  --text_split MODE      plain text documents: line (one per non-blank line, default), paragraph\n"
    "                         (separated by blank lines) or file (one per file)\n"
    "  --shard_tokens N       tokens per shard (default 100000000)\n"
    "  --val_fraction F       fraction of documents held out for validation, by a hash of the document\n"
    "                         index (default 0.005)\n"
    "  --val_tokens N         instead: the first documents, until validation holds N tokens\n"
    "  --seed N               seed of the validation split (default 0)\n"
    "  --threads N            tokenization threads, 0 = all cores (default 0; the shards do not depend on it)\n"
    "  --on_error fail|skip   malformed records: stop with file:line (default) or skip and count them\n"
    "  --eot TOKEN            the token written after each document (default <|endoftext|>)\n"
    "  --overwrite            replace the shards of an earlier run in DIR\n"
    "  --quiet                no progress line\n";

struct Args {
    std::map<std::string, std::vector<std::string>> values;
    bool has(const std::string& k) const { return values.count(k) != 0; }
    std::string get(const std::string& k, const std::string& fallback = "") const {
        auto it = values.find(k);
        if (it == values.end()) return fallback;
        MT_CHECK(it->second.size() == 1, "--", k, " takes one value, found ", it->second.size());
        return it->second[0];
    }
    template <class T>
    T number(const std::string& k, T fallback) const {
        if (!has(k)) return fallback;
        std::string v = get(k);
        try {
            std::size_t used = 0;
            T x;
            if constexpr (std::is_floating_point_v<T>)
                x = T(std::stod(v, &used));
            else
                x = T(std::stoll(v, &used));
            if (used == v.size()) return x;
        } catch (const std::exception&) {
        }
        detail::fail("--", k, ": expected a number, found \"", v, "\"");
    }
};

Args parse(int argc, char** argv) {
    static const std::vector<std::string> known = {"input", "tokenizer", "output_dir", "format", "text_field", "text_split",
                                                   "shard_tokens", "val_fraction", "val_tokens", "seed", "threads",
                                                   "on_error", "eot", "overwrite", "quiet", "help"};
    static const std::vector<std::string> flags = {"overwrite", "quiet", "help"};
    Args a;
    std::string cur;
    for (int i = 1; i < argc; ++i) {
        std::string s = argv[i];
        if (s.rfind("--", 0) == 0) {
            cur = s.substr(2);
            std::string value;
            bool inline_value = false;
            if (auto eq = cur.find('='); eq != std::string::npos) {
                value = cur.substr(eq + 1);
                cur = cur.substr(0, eq);
                inline_value = true;
            }
            MT_CHECK(std::find(known.begin(), known.end(), cur) != known.end(), "unknown option --", cur, " (see --help)");
            a.values[cur];
            if (inline_value) a.values[cur].push_back(value);
            if (std::find(flags.begin(), flags.end(), cur) != flags.end()) cur.clear();
        } else {
            MT_CHECK(!cur.empty(), "unexpected argument \"", s, "\" (see --help)");
            a.values[cur].push_back(s);
        }
    }
    return a;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Args a = parse(argc, argv);
        if (a.has("help") || argc == 1) {
            std::fputs(usage, a.has("help") ? stdout : stderr);
            return a.has("help") ? 0 : 2;
        }
        MT_CHECK(a.has("input") && !a.values.at("input").empty(), "--input is required (see --help)");
        MT_CHECK(a.has("tokenizer"), "--tokenizer is required (see --help)");
        MT_CHECK(a.has("output_dir"), "--output_dir is required (see --help)");
        MT_CHECK(!(a.has("val_fraction") && a.has("val_tokens")), "give --val_fraction or --val_tokens, not both");

        PrepareOptions o;
        o.inputs = a.values.at("input");
        o.output_dir = a.get("output_dir");
        o.format = parse_input_format(a.get("format", "auto"));
        o.text_split = parse_text_split(a.get("text_split", "line"));
        o.text_field = a.get("text_field", o.text_field);
        o.shard_tokens = a.number<std::int64_t>("shard_tokens", o.shard_tokens);
        o.val_fraction = a.number<double>("val_fraction", o.val_fraction);
        o.val_tokens = a.number<std::int64_t>("val_tokens", o.val_tokens);
        if (o.val_tokens > 0) o.val_fraction = 0;
        o.seed = a.number<std::uint64_t>("seed", o.seed);
        o.threads = a.number<int>("threads", o.threads);
        o.on_error = parse_on_error(a.get("on_error", "fail"));
        o.eot_token = a.get("eot", o.eot_token);
        o.overwrite = a.has("overwrite");
        o.progress = !a.has("quiet");

        Tokenizer tok = Tokenizer::load(a.get("tokenizer"));
        PrepareSummary s = prepare_data(o, tok);
        std::printf("%s\n", s.describe().c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "prepare_data: %s\n", e.what());
        return 1;
    }
}
