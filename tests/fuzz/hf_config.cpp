// Fuzz target: a model folder's config.json, read by load_model_config and load_pretrained (which checks
// it against the compiled policy), by the shared bounded JSON reader with config_mismatch and
// model_config_from, and by preset_for_config (the example programs' model lookup).
#include <minitrain/io/hf_config.hpp>
#include <minitrain/io/json.hpp>
#include <minitrain/util/presets.hpp>

#include "fuzz/model_files.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto& f = mt_fuzz::files();
    const auto path = mt_fuzz::write_file("model/config.json", data, size);
    mt_fuzz::run([&] {
        const nlohmann::json j = detail::read_json(path);
        (void)config_mismatch<mt_fuzz::Net>(j, &mt_fuzz::tiny_rc);
        mt_fuzz::run([&] { (void)model_config_from(j, path.string()); });
        mt_fuzz::run([&] { (void)preset_for_config(j, path.string()); });
    });
    mt_fuzz::run([&] { (void)load_model_config(f.model_dir); });
    mt_fuzz::run([&] { load_pretrained(f.model_dir, f.model); });
    return 0;
}
