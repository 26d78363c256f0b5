// tests/fuzz/tokenizers.hpp
// A small tokenizer trained once per process, for the targets whose loader needs one (JSONL records).
#pragma once

#include <minitrain/tokenizer/tokenizer.hpp>

namespace mt_fuzz {

inline const minitrain::Tokenizer& small_tokenizer() {
    static const minitrain::Tokenizer tok = [] {
        minitrain::Tokenizer::TrainOptions o;
        o.vocab_size = 300;  // 3 special tokens, 256 bytes, 41 merges
        o.threads = 1;
        return minitrain::Tokenizer::train_from_texts(
            {"the user asks and the assistant answers", "hello world, hello there", "what is two times three? six"}, o);
    }();
    return tok;
}

}  // namespace mt_fuzz
