// export_gguf: a model folder -> one GGUF file for llama.cpp, ollama, LM Studio (io/gguf.hpp).
//
//   export_gguf --checkpoint out/sft/final --output model.gguf [--dtype f32|f16|bf16]
//
// --checkpoint is a model folder with config.json, model.safetensors (or transformers shards with
// model.safetensors.index.json) and tokenizer.json (a run's final/,
// a checkpoints/step_N folder with --tokenizer, or a merged LoRA folder). The tokenizer and the chat
// template (tokenizer_config.json's, else ChatML) go into the file, so `llama-cli -m model.gguf` needs
// nothing else. Dense models only (arch "llama"); the MoE preset is refused.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <minitrain/io/gguf.hpp>
#include <minitrain/util/flags.hpp>

using namespace minitrain;

int main(int argc, char** argv) {
    try {
        std::string checkpoint, output, dtype = "f32", tokenizer, name, chat_template_file;
        Flags flags("export_gguf", "Write a model folder as one GGUF file that llama.cpp and ollama run.");
        flags.bind("checkpoint", checkpoint, "model folder: config.json, model.safetensors, tokenizer.json");
        flags.bind("output", output, "the GGUF file to write");
        flags.bind_choice("dtype", dtype, {"f32", "f16", "bf16"}, "type of the matrices (norms stay f32)");
        flags.bind("tokenizer", tokenizer, "tokenizer.json (default: the one in --checkpoint)");
        flags.bind("name", name, "general.name (default: the folder's name)");
        flags.bind("chat_template", chat_template_file,
                   "a file holding a Jinja chat template (default: tokenizer_config.json's, else ChatML)");
        flags.require("checkpoint");
        flags.require("output");
        flags.parse(argc, argv);

        GgufExportOptions o;
        o.dtype = parse_gguf_dtype(dtype);
        o.tokenizer = tokenizer;
        o.name = name;
        if (!chat_template_file.empty()) {
            std::ifstream f(chat_template_file, std::ios::binary);
            MT_CHECK(bool(f), "--chat_template ", chat_template_file, ": cannot open for reading");
            std::stringstream ss;
            ss << f.rdbuf();
            o.chat_template = ss.str();
        }
        const GgufExportReport r = export_gguf(checkpoint, output, o);
        std::fprintf(stderr,
                     "export_gguf: %s -> %s: %d tensors (%s), vocabulary %d (pre-tokenizer %s; bos %d, eos %d, pad %d), "
                     "%.1f MB in %.2f s\n",
                     checkpoint.c_str(), output.c_str(), r.tensors, dtype.c_str(), r.vocab, r.pre.c_str(), r.bos, r.eos,
                     r.pad, double(r.bytes) / 1e6, r.seconds);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
