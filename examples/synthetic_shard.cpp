// synthetic_shard: a small learnable corpus in llm.c's token-shard format, to try the trainer without
// downloading or tokenizing anything (and for the end-to-end test of the example programs).
//
//   synthetic_shard --out_dir data
//   pretrain --preset test --vocab_size 256 --train_data data/train.bin --val_data data/val.bin --max_steps 200
//
// The corpus is byte-level text: every token is one byte of ASCII (so vocab_size 256, or any larger
// vocabulary, fits), and each line counts up from a random number, "417 418 419 420\n". A model learns the
// alphabet and the spacing within a few steps and the counting (with its carries) after a few hundred.
// Beside each shard, <shard>.meta.json records {"bytes", "tokens"} (equal here: one byte per token),
// which pretrain and eval read to report bits per byte.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <minitrain/core/random.hpp>
#include <minitrain/data/shards.hpp>
#include <minitrain/io/atomic_file.hpp>
#include <minitrain/util/flags.hpp>

#include <nlohmann/json.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

/// `n` bytes of counting lines, as token ids.
std::vector<std::uint32_t> counting_text(std::int64_t n, std::uint64_t seed) {
    Rng rng{seed};
    std::vector<std::uint32_t> out;
    out.reserve(std::size_t(n));
    while (std::int64_t(out.size()) < n) {
        std::uint64_t x = rng.below(1000);
        const std::uint64_t len = 3 + rng.below(10);
        for (std::uint64_t i = 0; i < len; ++i, ++x) {
            for (char c : std::to_string(x)) out.push_back(std::uint32_t(static_cast<unsigned char>(c)));
            out.push_back(i + 1 < len ? ' ' : '\n');
        }
    }
    out.resize(std::size_t(n));
    return out;
}

void write_shard(const fs::path& path, std::int64_t tokens, std::uint64_t seed) {
    write_token_shard(path, counting_text(tokens, seed), 256);
    fs::path meta = path;
    meta += ".meta.json";
    const std::string text = nlohmann::json{{"bytes", tokens}, {"tokens", tokens}}.dump() + "\n";
    write_file_atomic(meta, [&](std::ostream& os) { os.write(text.data(), std::streamsize(text.size())); });
    std::printf("wrote %s: %lld tokens (byte-level text, vocabulary 256) and %s\n", path.string().c_str(),
                (long long)tokens, meta.filename().string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Flags flags("synthetic_shard",
                    "Write a small learnable corpus (byte-level counting text) as llm.c token shards "
                    "OUT_DIR/train.bin and OUT_DIR/val.bin, to try pretrain, eval and generate without real data.");
        std::string& out_dir = flags.add("out_dir", "data", "folder for train.bin, val.bin and their .meta.json");
        std::int64_t& train_tokens = flags.add<std::int64_t>("train_tokens", 1'000'000, "tokens in train.bin");
        std::int64_t& val_tokens = flags.add<std::int64_t>("val_tokens", 100'000, "tokens in val.bin");
        std::uint64_t& seed = flags.add<std::uint64_t>("seed", 1, "random seed (val.bin uses seed + 1)");
        flags.parse(argc, argv);
        MT_CHECK(train_tokens >= 1 && val_tokens >= 1, "--train_tokens and --val_tokens must be positive, got ",
                 train_tokens, " and ", val_tokens);

        fs::create_directories(out_dir);
        write_shard(fs::path(out_dir) / "train.bin", train_tokens, seed);
        write_shard(fs::path(out_dir) / "val.bin", val_tokens, seed + 1);
        std::printf("try: pretrain --preset test --vocab_size 256 --train_data %s/train.bin --val_data %s/val.bin\n",
                    out_dir.c_str(), out_dir.c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
