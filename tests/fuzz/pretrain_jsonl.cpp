// Fuzz target: a pretraining corpus in JSON Lines ({"text": ...} per line), read as prepare_data reads
// it (skipping malformed records, then failing on the first one) into token shards that TokenDataset
// must accept, and as Tokenizer::train reads .jsonl files.
#include <minitrain/data/prepare.hpp>
#include <minitrain/data/shards.hpp>

#include "fuzz/fuzz.hpp"
#include "fuzz/tokenizers.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto& tok = mt_fuzz::small_tokenizer();
    const auto path = mt_fuzz::write_file("corpus.jsonl", data, size);
    for (OnError mode : {OnError::skip, OnError::fail}) {
        mt_fuzz::run([&] {
            PrepareOptions o;
            o.inputs = {path.string()};
            o.output_dir = mt_fuzz::scratch() / "shards";
            o.shard_tokens = 64;
            o.val_fraction = 0.2;
            o.threads = 1;
            o.on_error = mode;
            o.overwrite = true;
            o.progress = false;
            o.max_record_bytes = 1024;  // small, so that the fuzzer meets the limit
            PrepareSummary s = prepare_data(o, tok);
            TokenDataset train(s.train.pattern, tok.vocab_size());
            MT_FUZZ_ASSERT(train.total_tokens() == s.train.tokens, "shards hold another token count than reported");
        });
    }
    mt_fuzz::run([&] {
        Tokenizer::TrainOptions o;
        o.vocab_size = 270;
        o.threads = 1;
        o.max_record_bytes = 1024;
        Tokenizer::train({path}, o);
    });
    return 0;
}
