// Fuzz target: a PEFT adapter folder's adapter_config.json, read by load_adapter (checked against the
// compiled LoRA policy before the adapter weights are read).
#include "fuzz/model_files.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto& f = mt_fuzz::files();
    mt_fuzz::write_file("adapter/adapter_config.json", data, size);
    mt_fuzz::run([&] { load_adapter(f.adapter_dir, f.adapters); });
    return 0;
}
