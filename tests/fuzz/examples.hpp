// tests/fuzz/examples.hpp
// The SFT and DPO targets: the input as a JSONL file, loaded with load_examples (skip mode, then fail
// mode), and, when examples are left, batched by ExampleLoader; a loader over too few examples must
// fail with an Error that names the file.
#pragma once

#include <string>
#include <vector>

#include <minitrain/data/sft.hpp>

#include "fuzz/fuzz.hpp"
#include "fuzz/tokenizers.hpp"

namespace mt_fuzz {

inline void load_and_batch(minitrain::ExampleKind kind, const std::uint8_t* data, std::size_t size) {
    using namespace minitrain;
    const auto& tok = small_tokenizer();
    const auto path = write_file(kind == ExampleKind::sft ? "sft.jsonl" : "dpo.jsonl", data, size);
    for (OnError mode : {OnError::skip, OnError::fail}) {
        run([&] {
            ExampleOptions o;
            o.max_seq_len = 16;
            o.threads = 1;
            o.on_error = mode;
            o.max_record_bytes = 1024;  // small, so that the fuzzer meets the limit
            ExampleStats st;
            ExampleSet set = load_examples(kind, {path.string()}, tok, o, &st);
            MT_FUZZ_ASSERT(std::int64_t(set.size()) == st.examples, "ExampleSet size and stats disagree");
            const int A = set.arity(), T = set.seq_len();
            for (int B : {1, 3}) {
                try {
                    ExampleLoader L(set, B, true, 7);
                    std::vector<std::int32_t> ids(std::size_t(A * B * T)), targets(ids.size());
                    Tensor ti, tt;
                    ti.ptr = ids.data();
                    tt.ptr = targets.data();
                    ti.shape = tt.shape = Shape{A * B, T};
                    ti.dtype = tt.dtype = DType::i32;
                    ti.device = tt.device = Device::cpu;
                    for (int k = 0; k < 3; ++k) L.next(ti, tt);
                    for (auto id : ids) MT_FUZZ_ASSERT(id >= 0 && id < tok.vocab_size(), "batch id out of range");
                } catch (const Error& e) {
                    MT_FUZZ_ASSERT(std::string(e.what()).find(path.string()) != std::string::npos,
                                   "the loader's error does not name the file");
                }
            }
        });
    }
}

}  // namespace mt_fuzz
