// sft: supervised fine-tuning of a pretrained model on conversations (MiniMind's train_full_sft.py).
//
//   sft --data_path sft_mini_512.jsonl --from_weight out/pretrain/final --out_dir out/sft
//   sft ... --resume 1                       continue from the latest checkpoint in out_dir
//   mpirun -np 2 sft ...                     data parallel (batch_size is per process)
//
// --data_path is MiniMind's SFT JSONL, unchanged: one {"conversations": [{"role": "system"|"user"|
// "assistant", "content": ...}, ...]} per line, rendered in ChatML and tokenized as it is read; the loss
// is on the assistant replies only. The model folder's config.json picks the preset; its tokenizer.json is
// the default --tokenizer. OUT_DIR/final is a Hugging Face folder with the tokenizer, ready for chat,
// lora (as the base) and dpo (as the policy).
#include <cstdio>
#include <string>

#include <minitrain/dist/dist.hpp>
#include <minitrain/minitrain.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>
#include <minitrain/util/stage.hpp>

using namespace minitrain;

int main(int argc, char** argv) {
    return run_main([&](Comm& comm) {
        auto say = [&](const std::string& s) {
            if (comm.is_root()) std::printf("sft: %s\n", s.c_str()), std::fflush(stdout);
        };
        TrainConfig cfg;
        cfg.out_dir = "out/sft";
        StageFlags sf(Stage::sft, cfg);
        Flags flags("sft", "Supervised fine-tuning (full parameters) of a model folder on conversations in MiniMind's "
                           "SFT JSONL; the loss is on the assistant replies. Writes OUT_DIR/metrics.jsonl, TensorBoard "
                           "events, loss.svg, report.md, checkpoints/ and final/ (a Hugging Face folder with its "
                           "tokenizer).\n\n" + knob_table(Stage::sft));
        sf.bind(flags, cfg, "SFT JSONL: {\"conversations\": [{\"role\": ..., \"content\": ...}, ...]} per line");
        flags.parse(argc, argv);
        const std::string preset = sf.resolve(flags, cfg, say);
        check_device(sf.device, preset, comm.world_size(), cfg.dtype);
        if (sf.device == "cuda")
            cuda_programs::train("sft", preset, cfg, sf.schedule, comm);
        else
            with_preset(preset, [&]<class Net>() { train_stage<Net, SFT>(cfg, sf.schedule, comm); });
    });
}
