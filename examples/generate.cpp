// generate: continue a prompt with a trained model, streaming the new tokens as they are sampled.
//
//   generate --checkpoint out/final --prompt_ids "49 50 51 32" --max_new_tokens 32
//
// --checkpoint is any model folder: a run's final/ folder, one of its checkpoints/step_N folders, or a
// Hugging Face Llama folder with a config.json matching a compiled preset (the preset is read from it).
// Token ids go in and come out (stdout: the new ids, space-separated, one line); the messages about the
// model go to stderr, so stdout can be piped. Generation stops at max_new_tokens, at the model's
// max_position_embeddings, or after config.json's eos_token_id.
#include <cstdio>
#include <string>
#include <vector>

#include <minitrain/minitrain.hpp>
#include <minitrain/util/device.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

// ---- tokens in and out ------------------------------------------------------------------------------
// TOKENIZER EXTENSION POINT. Today prompts are token ids and the output is token ids. When the tokenizer
// lands, this is the one place to change: add a `--prompt TEXT` flag beside --prompt_ids in main(), load
// the tokenizer saved with the model (in the checkpoint folder), encode the text in prompt_tokens(), and
// return each token's text from token_text() (decoding by pieces needs the tokenizer's handling of
// partial UTF-8 sequences; stream bytes as they complete).

/// The prompt as token ids, each checked against the vocabulary.
std::vector<std::int32_t> prompt_tokens(const std::string& prompt_ids, int vocab_size) {
    std::vector<std::int32_t> out;
    for (std::int64_t id : parse_int_list(prompt_ids, "prompt_ids")) {
        MT_CHECK(id >= 0 && id < vocab_size, "--prompt_ids: token ", id, " is outside the vocabulary [0, ", vocab_size,
                 ")");
        out.push_back(std::int32_t(id));
    }
    MT_CHECK(!out.empty(), "--prompt_ids: no token ids in '", prompt_ids, "'");
    return out;
}

/// What to print for one generated token.
std::string token_text(std::int32_t id, bool first) { return (first ? "" : " ") + std::to_string(id); }

// -----------------------------------------------------------------------------------------------------

/// Generates on `device`, streaming the new ids to stdout.
void run(const fs::path& dir, const std::string& preset, const std::string& device, const std::string& prompt_ids,
         SampleOptions o) {
    const ModelConfig mc = load_model_config(dir);
    const std::vector<std::int32_t> prompt = prompt_tokens(prompt_ids, mc.vocab_size);
    MT_CHECK(int(prompt.size()) < mc.max_seq_len, "--prompt_ids: the prompt has ", prompt.size(),
             " tokens; the model's max_position_embeddings is ", mc.max_seq_len, ", which leaves no room to generate");
    std::fprintf(stderr, "generate: %s (preset %s%s, vocabulary %d, context %d), prompt of %zu tokens\n",
                 dir.string().c_str(), preset.c_str(), device == "cuda" ? ", on the GPU" : "", mc.vocab_size,
                 mc.max_seq_len, prompt.size());
    if (int(prompt.size()) + o.max_new_tokens > mc.max_seq_len)
        std::fprintf(stderr, "generate: note: the context holds %d tokens, so at most %d new ones\n", mc.max_seq_len,
                     mc.max_seq_len - int(prompt.size()));

    bool first = true;
    const std::function<bool(std::int32_t)> print = [&](std::int32_t t) {
        std::fputs(token_text(t, first).c_str(), stdout);
        std::fflush(stdout);
        first = false;
        return true;
    };
    std::vector<std::int32_t> tokens;
    if (device == "cuda")
        tokens = cuda_programs::generate(preset, dir.string(), prompt, o, print);
    else
        with_preset(preset, [&]<class Net>() {
            Transformer<Net, CPU> model(mc);
            load_pretrained(dir, model);
            cpu::Bf16WeightCopy bf16_copy;  // --dtype bf16: the weights rounded once, not once per token
            cpu::use_bf16_weights_for_inference(bf16_copy, model.params().data().template data<float>(),
                                                model.params().count());
            tokens = generate(model, std::span<const std::int32_t>(prompt), o, print);
        });
    std::fputs("\n", stdout);
    std::fprintf(stderr, "generate: %zu new tokens%s\n", tokens.size(),
                 !tokens.empty() && tokens.back() == o.eos_token ? " (stopped at eos_token_id)" : "");
    if (device != "cuda") std::fprintf(stderr, "generate: %s\n", cpu::precision_report().c_str());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        SampleOptions o;
        o.temperature = 0.8;
        o.top_k = 40;
        o.seed = 42;
        std::string checkpoint, prompt_ids;
        int threads = 0;
        std::string device = "cpu";
        std::string dtype = "f32";

        Flags flags("generate",
                    "Continue a prompt (token ids) with a trained model and stream the new token ids to stdout.");
        flags.bind("checkpoint", checkpoint,
                   "model folder: OUT_DIR/final, OUT_DIR/checkpoints/step_N, or a Hugging Face Llama folder");
        flags.bind("prompt_ids", prompt_ids, "the prompt as token ids, separated by spaces or commas");
        flags.bind("max_new_tokens", o.max_new_tokens, "tokens to generate");
        flags.bind("temperature", o.temperature, "sampling temperature (0: greedy)");
        flags.bind("top_k", o.top_k, "sample among the k most likely tokens (0: all)");
        flags.bind("top_p", o.top_p, "sample among the most likely tokens holding this much probability (1: all)");
        flags.bind("repetition_penalty", o.repetition_penalty, "> 1 discourages tokens already in the context");
        flags.bind("seed", o.seed, "sampling seed");
        flags.bind("threads", threads, "CPU threads (0: OpenMP's default)");
        flags.bind_choice("device", device, device_names(), device_help());
        flags.bind_dtype("dtype", dtype, "precision of the matrix products: f32, or bf16 (bf16 weights and inputs, f32 accumulation; fast on CPUs with AVX512-BF16)");
        flags.require("checkpoint");
        flags.require("prompt_ids");
        flags.parse(argc, argv);

        MT_CHECK(o.max_new_tokens >= 1, "--max_new_tokens must be at least 1, got ", o.max_new_tokens);
        Sampler check(o);  // validates the sampling options before the model is loaded
        if (threads > 0) CPU::set_threads(threads);
        Autocast autocast(cpu_precision(dtype));  // core/precision.hpp: for every product of this run

        const fs::path dir = checkpoint;
        const std::string preset = preset_for_folder(dir);
        const nlohmann::json cfg = detail::read_json_file(dir / "config.json");
        if (cfg.contains("eos_token_id") && cfg["eos_token_id"].is_number_integer())
            o.eos_token = cfg["eos_token_id"].get<int>();
        check_device(device, preset, 1, dtype);
        run(dir, preset, device, prompt_ids, o);
        return 0;
    } catch (const std::exception& e) {  // minitrain::Error, and the standard library's (filesystem, memory)
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
