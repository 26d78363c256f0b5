// Fuzz target: an llm.c token shard (256 int32 header: magic, version, token count; then the tokens),
// opened by TokenShard and TokenDataset (which checks every token against the vocabulary) and read by a
// TokenLoader, whose batches must hold only ids below the vocabulary size.
#include <vector>

#include <minitrain/data/shards.hpp>
#include <minitrain/data/token_loader.hpp>

#include "fuzz/fuzz.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = mt_fuzz::write_file("data.bin", data, size);
    mt_fuzz::run([&] {
        TokenShard s(path);
        MT_FUZZ_ASSERT(std::size_t(s.size()) * std::size_t(s.token_bytes()) + 1024 == size, "header and size disagree");
        std::vector<std::int32_t> all(std::size_t(s.size()));
        s.read(0, s.size(), all.data());
    });
    for (int vocab : {300, 70000}) {
        mt_fuzz::run([&] {
            TokenDataset d(path.string(), vocab);
            TokenLoader L(d, 1, 4, true, 3);
            std::vector<std::int32_t> in(4), tgt(4);
            Tensor ti, tt;
            ti.ptr = in.data();
            tt.ptr = tgt.data();
            ti.shape = tt.shape = Shape{1, 4};
            ti.dtype = tt.dtype = DType::i32;
            ti.device = tt.device = Device::cpu;
            for (int k = 0; k < 3; ++k) {
                L.next(ti, tt);
                for (int i = 0; i < 4; ++i)
                    MT_FUZZ_ASSERT(in[std::size_t(i)] >= 0 && in[std::size_t(i)] < vocab && tgt[std::size_t(i)] >= 0 &&
                                       tgt[std::size_t(i)] < vocab,
                                   "a batch holds an id outside the vocabulary");
            }
        });
    }
    return 0;
}
