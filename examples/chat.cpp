// chat: talk to a trained model in ChatML, streaming its replies.
//
//   chat --checkpoint runs/quickstart/run/final                       interactive: type, read, repeat
//   chat --checkpoint runs/sft/final --adapter runs/lora/final        a PEFT LoRA adapter merged on top
//   chat --checkpoint DIR --prompts questions.txt [--conversation]    one answer per line, for scripts
//
// --checkpoint is a model folder (config.json + model.safetensors; the preset is read from config.json)
// holding tokenizer.json too, or give --tokenizer. --adapter is a PEFT adapter folder (adapter_config.json
// + adapter_model.safetensors, what LoRA training writes to its final/): it is merged into the weights.
//
// Interactive mode reads one user message per line from stdin and keeps the conversation: each prompt is
// the ChatML history plus  <|im_start|>user\n{msg}<|im_end|>\n<|im_start|>assistant\n ; the reply streams
// to stdout as it is generated (KV cache) and stops at <|im_end|>. Commands: /reset forgets the
// conversation (the --system message stays), /quit or end of input exits. When the context fills up, the
// oldest turns are dropped.
//
// --prompts FILE: one user message per line (empty lines skipped); each is answered independently (a fresh
// conversation, the same seed for each), or, with --conversation, as successive turns of one conversation.
// stdout gets exactly one line per message: the answer with backslashes written \\ and line breaks \n, so
// line i of the output answers line i of the input. Sampling turn n of a conversation uses seed + n.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <minitrain/minitrain.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/util/device.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

struct Options {
    fs::path checkpoint, tokenizer, adapter, prompts;
    std::string system;
    bool conversation = false;
    SampleOptions sample;
};

/// One line for --prompts output: backslash and line breaks escaped.
std::string escape_line(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else out += c;
    }
    return out;
}

std::string trim_cr(std::string s) {
    if (!s.empty() && s.back() == '\r') s.pop_back();
    return s;
}

void run(const Options& opt, const std::string& preset, const std::string& device) {
    const ModelConfig mc = load_model_config(opt.checkpoint);
    std::unique_ptr<AnyChat> chat;
    if (device == "cuda")
        chat = cuda_programs::chat(preset, opt.checkpoint.string(), opt.adapter.string(), opt.tokenizer.string(),
                                   opt.sample, opt.system);
    else
        with_preset(preset, [&]<class Net>() {
            chat = load_chat<Net>(opt.checkpoint, opt.adapter, opt.tokenizer, opt.sample, opt.system);
        });
    std::fprintf(stderr, "chat: %s (preset %s%s, %zu parameters, vocabulary %d, context %d)\n",
                 opt.checkpoint.string().c_str(), preset.c_str(), device == "cuda" ? ", on the GPU" : "",
                 chat->parameter_count(), mc.vocab_size, mc.max_seq_len);
    if (chat->merged_sites() > 0)
        std::fprintf(stderr, "chat: merged the LoRA adapter %s (%d projections)\n", opt.adapter.string().c_str(),
                     chat->merged_sites());

    if (!opt.prompts.empty()) {
        std::ifstream in(opt.prompts);
        MT_CHECK(in, opt.prompts.string(), ": cannot open the prompts file");
        std::string line;
        while (std::getline(in, line)) {
            line = trim_cr(line);
            if (line.empty()) continue;
            if (!opt.conversation) chat->reset();
            std::printf("%s\n", escape_line(chat->reply(line)).c_str());
            std::fflush(stdout);
        }
        return;
    }

    std::fprintf(stderr, "chat: type a message and press Enter; /reset starts over, /quit (or Ctrl-D) exits\n");
    std::string line;
    for (;;) {
        std::fputs("> ", stderr);
        if (!std::getline(std::cin, line)) break;
        line = trim_cr(line);
        if (line == "/quit") break;
        if (line == "/reset") {
            chat->reset();
            std::fprintf(stderr, "(conversation cleared)\n");
            continue;
        }
        if (line.empty()) continue;
        chat->reply(line, [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
        });
        std::fputs("\n", stdout);
        std::fflush(stdout);
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Options opt;
        opt.sample.temperature = 0.7;
        opt.sample.top_k = 40;
        opt.sample.top_p = 0.9;
        opt.sample.repetition_penalty = 1.0;
        opt.sample.seed = 42;
        opt.sample.max_new_tokens = 256;
        std::string checkpoint, tokenizer, adapter, prompts, device = "cpu";
        int threads = 0;
        std::string dtype = "f32";

        Flags flags("chat", "Chat with a trained model in ChatML, interactively or over a file of prompts.");
        flags.bind("checkpoint", checkpoint, "model folder (config.json, model.safetensors, tokenizer.json)");
        flags.bind("tokenizer", tokenizer, "tokenizer.json (default: the one in --checkpoint)");
        flags.bind("adapter", adapter, "a PEFT LoRA adapter folder to merge into the model");
        flags.bind("system", opt.system, "system message at the start of every conversation");
        flags.bind("prompts", prompts, "answer each line of this file (one answer per output line) and exit");
        flags.bind("conversation", opt.conversation, "with --prompts: the lines are turns of one conversation");
        flags.bind("max_new_tokens", opt.sample.max_new_tokens, "longest reply, in tokens");
        flags.bind("temperature", opt.sample.temperature, "sampling temperature (0: greedy)");
        flags.bind("top_k", opt.sample.top_k, "sample among the k most likely tokens (0: all)");
        flags.bind("top_p", opt.sample.top_p, "sample among the most likely tokens holding this much probability (1: all)");
        flags.bind("repetition_penalty", opt.sample.repetition_penalty, "> 1 discourages tokens already in the context");
        flags.bind("seed", opt.sample.seed, "sampling seed (turn n of a conversation uses seed + n)");
        flags.bind("threads", threads, "CPU threads (0: OpenMP's default)");
        flags.bind_choice("device", device, device_names(), device_help());
        flags.bind_dtype("dtype", dtype, "precision of the matrix products: f32, or bf16 (bf16 weights and inputs, f32 accumulation; fast on CPUs with AVX512-BF16)");
        flags.require("checkpoint");
        flags.parse(argc, argv);

        MT_CHECK(opt.sample.max_new_tokens >= 1, "--max_new_tokens must be at least 1, got ", opt.sample.max_new_tokens);
        Sampler check(opt.sample);  // validates the sampling options before the model is loaded
        if (threads > 0) CPU::set_threads(threads);
        Autocast autocast(cpu_precision(dtype));  // core/precision.hpp: for every product of this run
        opt.checkpoint = checkpoint;
        opt.tokenizer = tokenizer.empty() ? opt.checkpoint / "tokenizer.json" : fs::path(tokenizer);
        opt.adapter = adapter;
        opt.prompts = prompts;
        MT_CHECK(fs::exists(opt.tokenizer), opt.tokenizer.string(), ": no such file (give --tokenizer tokenizer.json)");
        MT_CHECK(!opt.conversation || !opt.prompts.empty(), "--conversation needs --prompts");
        const std::string preset = preset_for_folder(opt.checkpoint);
        check_device(device, preset, 1, dtype);
        run(opt, preset, device);
        if (device != "cuda") std::fprintf(stderr, "chat: %s\n", cpu::precision_report().c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
