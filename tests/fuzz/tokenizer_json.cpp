// Fuzz target: a tokenizer.json, loaded by Tokenizer::load. A tokenizer that loads must round-trip
// bytes (decode(encode(x)) == x, for a fixed text and for the input's own first bytes; without
// add_prefix_space), give only ids below vocab_size, and saving it
// and loading the saved file must give a tokenizer that encodes alike.
#include <string>
#include <string_view>

#include <minitrain/tokenizer/tokenizer.hpp>

#include "fuzz/fuzz.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = mt_fuzz::write_file("tokenizer.json", data, size);
    mt_fuzz::run([&] {
        Tokenizer tok = Tokenizer::load(path);
        const std::string texts[] = {
            "Hello world, it's 2024!\n  <|endoftext|> caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xff\xfe",
            std::string(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 200)),
        };
        for (const std::string& x : texts)
            for (bool special : {true, false}) {
                auto ids = tok.encode(x, special);
                for (auto id : ids) MT_FUZZ_ASSERT(id >= 0 && id < tok.vocab_size(), "encode gave an id out of range");
                // add_prefix_space puts a space before each segment that lacks one: then decode adds it.
                if (!tok.data().pre.add_prefix_space) MT_FUZZ_ASSERT(tok.decode(ids) == x, "decode(encode(x)) != x");
            }
        const auto again = mt_fuzz::scratch() / "saved.json";
        tok.save(again);
        Tokenizer back = Tokenizer::load(again);
        MT_FUZZ_ASSERT(back.vocab_size() == tok.vocab_size(), "saved tokenizer has another vocab_size");
        for (const std::string& x : texts) MT_FUZZ_ASSERT(back.encode(x) == tok.encode(x), "saved tokenizer encodes differently");
    });
    return 0;
}
