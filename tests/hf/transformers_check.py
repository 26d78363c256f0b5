#!/usr/bin/env python3
"""Goal: every model folder minitrain writes loads in Hugging Face transformers as it is, and computes what
minitrain computes.

    python3 tests/hf/transformers_check.py --generate build/generate FOLDER [FOLDER ...]

For each folder (a final/ or checkpoints/step_N/ folder of ours: Llama, Qwen3 or Qwen3-MoE):
  1. AutoModelForCausalLM.from_pretrained loads it with no missing, unexpected or mismatched weights, as
     the class config.json names (LlamaForCausalLM / Qwen3ForCausalLM / Qwen3MoeForCausalLM);
  2. AutoTokenizer loads tokenizer.json + tokenizer_config.json, and apply_chat_template renders MiniMind's
     ChatML ("<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n");
  3. transformers' greedy continuation of a few prompts (f32, eager attention) equals
     `generate --checkpoint FOLDER --prompt_ids ... --temperature 0` token for token (at least 16 tokens,
     or up to the eos generate stops at).
Prints one line per check and exits 1 if any failed. transformers is not installable on the development
machine (no PyPI there); the GPU machine's image has it: benchmarks/gpu/check.sh runs this script there.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    failures += 0 if ok else 1


def ours(generate, folder, prompt, n):
    out = subprocess.run([generate, "--checkpoint", folder, "--prompt_ids", " ".join(map(str, prompt)),
                          "--temperature", "0", "--max_new_tokens", str(n)], check=True, capture_output=True, text=True)
    return [int(t) for t in out.stdout.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generate", required=True, help="minitrain's generate program")
    ap.add_argument("--new_tokens", type=int, default=24)
    ap.add_argument("folders", nargs="+")
    a = ap.parse_args()
    torch.manual_seed(0)
    for folder in a.folders:
        cfg = json.load(open(os.path.join(folder, "config.json")))
        arch = cfg["architectures"][0]
        model, info = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager",
                                                           output_loading_info=True)
        model.eval()
        bad = {k: v for k, v in info.items() if v}
        check(type(model).__name__ == arch and not bad,
              f"{folder}: transformers loads it as {type(model).__name__} (config.json: {arch}); loading info {bad or 'clean'}")
        tok = AutoTokenizer.from_pretrained(folder)
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
        check("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" in text,
              f"{folder}: AutoTokenizer ({type(tok).__name__}) renders the ChatML template: {text!r}")
        V = cfg["vocab_size"]
        prompts = [[1, 5, 9], [1, 40, 41, 42, 43], [7 % V, 3 % V]]
        eos = cfg.get("eos_token_id")
        for p in prompts:
            want = ours(a.generate, folder, p, a.new_tokens)
            with torch.no_grad():
                got = model.generate(torch.tensor([p]), max_new_tokens=a.new_tokens, do_sample=False,
                                     eos_token_id=eos, pad_token_id=cfg.get("pad_token_id", 0))[0, len(p):].tolist()
            n = len(want)
            stopped_at_eos = eos is not None and bool(want) and want[-1] == eos
            check(n >= min(16, a.new_tokens) or stopped_at_eos, f"{folder}: prompt {p}: generate gave {n} tokens")
            check(got[:n] == want, f"{folder}: prompt {p}: transformers' greedy tokens equal minitrain's ({n} tokens)"
                  + ("" if got[:n] == want else f"\n  transformers {got}\n  minitrain    {want}"))
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
