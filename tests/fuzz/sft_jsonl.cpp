// Fuzz target: SFT conversations in JSON Lines ({"conversations": [{"role", "content"}, ...]}), loaded
// by load_sft (skipping malformed records, then failing on the first one) and batched by ExampleLoader.
#include "fuzz/examples.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    mt_fuzz::load_and_batch(minitrain::ExampleKind::sft, data, size);
    return 0;
}
