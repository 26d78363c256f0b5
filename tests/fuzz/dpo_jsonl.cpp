// Fuzz target: DPO preference pairs in JSON Lines ({"chosen": [...], "rejected": [...]}), loaded by
// load_dpo (skipping malformed records, then failing on the first one) and batched by ExampleLoader.
#include "fuzz/examples.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    mt_fuzz::load_and_batch(minitrain::ExampleKind::dpo, data, size);
    return 0;
}
