// merge_lora: fold a PEFT LoRA adapter into its base model and save the result as a plain model folder.
//
//   merge_lora --base out/sft/final --adapter out/lora/final --output out/merged
//
// W += lora_alpha / r * B A for every adapted projection (adapter_config.json says which, and the rank
// and alpha: any PEFT LoRA adapter without rslora/DoRA/bias, whatever program trained it). The output is
// a Hugging Face folder (config.json naming the preset, model.safetensors, generation_config.json) with
// the tokenizer and its tokenizer_config.json / special_tokens_map.json (the adapter's, else the base's), which chat, generate, eval, sft and dpo load like any other.
#include <cstdio>
#include <string>

#include <minitrain/minitrain.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
    try {
        std::string base, adapter, output;
        Flags flags("merge_lora", "Merge a PEFT LoRA adapter folder into its base model folder and write the merged "
                                  "model as a Hugging Face folder.");
        flags.bind("base", base, "the base model folder the adapter was trained on");
        flags.bind("adapter", adapter, "the PEFT adapter folder (lora's OUT_DIR/final)");
        flags.bind("output", output, "the merged model folder to write");
        flags.require("base");
        flags.require("adapter");
        flags.require("output");
        flags.parse(argc, argv);
        const fs::path b = base, a = adapter, out = output;
        MT_CHECK(fs::exists(a / "adapter_config.json"), (a / "adapter_config.json").string(),
                 ": no such file (expected a PEFT adapter folder: lora's OUT_DIR/final)");
        const std::string preset = preset_for_folder(b);
        // The tokenizer (the adapter's, else the base's) goes in with its side files: a complete HF folder.
        SaveOptions files;
        for (const fs::path& t : {a / "tokenizer.json", b / "tokenizer.json"})
            if (fs::exists(t)) {
                files.tokenizer = t;
                break;
            }
        with_preset(preset, [&]<class Net>() {
            Transformer<Net, CPU> model(load_model_config(b));
            load_pretrained(b, model);
            const int sites = merge_peft_adapter(a, model);
            detail::write_directory_atomic(out, [&](const fs::path& tmp) { save_pretrained(tmp, model, files); });
            std::printf("merge_lora: %s (preset %s) + %s (%d projections) -> %s\n", b.c_str(), preset.c_str(), a.c_str(),
                        sites, out.c_str());
        });
        if (!files.tokenizer.empty()) std::printf("merge_lora: tokenizer %s\n", files.tokenizer.c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
