#!/usr/bin/python3
"""Goal: the bf16 golden for minitrain's mixed precision: tiny_dense.safetensors's model, weights and batch
run under PyTorch's CPU autocast bf16 (torch.autocast("cpu", dtype=torch.bfloat16): fp32 weights, every
linear in bf16), the loss and every parameter gradient written to tiny_dense_bf16.safetensors.

    /usr/bin/python3 tests/golden/make_golden_bf16.py           # writes tests/golden/tiny_dense_bf16.safetensors
    /usr/bin/python3 tests/golden/make_golden_bf16.py --check   # exit 0 iff regenerating gives identical bytes

Contents: `loss` (1,), `logits` (B, T, V) (f32 copies of autocast's bf16 logits), `grad.<name>` (f32, as autocast
leaves the master weights' gradients), and in `__metadata__`:
  * `bf16_vs_f32`: for the loss, the logits and each gradient, the relative L2 distance between autocast bf16
    and plain fp32 on the same weights and batch: how far bf16 alone moves each quantity. The C++ test
    (tests/model.cpp) accepts minitrain's bf16 within a small multiple of it, because the two bf16 runs round
    at different places: torch's autocast rounds each matmul's output (and so the attention inputs and the
    logits) to bf16, minitrain rounds matmul inputs only and keeps outputs in f32 (core/precision.hpp).
  * `generator`, `source` (the golden file the weights come from).

Attention: minimind_ref.py's attention is matmul + softmax; under autocast its Q K^T and P V run in bf16 too.
"""
import argparse
import filecmp
import json
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
from minimind_ref import CausalLM, Config  # noqa: E402


def rel_l2(a, b):
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return float((a - b).norm() / b.norm())


def forward_backward(model, ids, tgt, autocast):
    model.zero_grad(set_to_none=True)
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, tgt)
    else:
        out = model(ids, tgt)
    out["loss"].backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}
    return out["loss"].detach().float().reshape(1), out["logits"].detach().float(), grads


def build(outdir):
    src = os.path.join(HERE, "tiny_dense.safetensors")
    tensors, meta = safetensors_io.load_file_with_metadata(src)
    cfg = Config.from_hf_dict(json.loads(meta["config"]))
    model = CausalLM(cfg)
    model.load_state_dict({n: tensors[n] for n, _ in model.named_parameters()}, strict=True)
    model.train()
    ids, tgt = tensors["input_ids"].long(), tensors["targets"].long()
    loss32, logits32, g32 = forward_backward(model, ids, tgt, False)
    loss16, logits16, g16 = forward_backward(model, ids, tgt, True)
    out = {"loss": loss16, "logits": logits16.contiguous()}
    out.update({f"grad.{n}": g.contiguous() for n, g in g16.items()})
    diff = {"loss": abs(float(loss16) - float(loss32)) / abs(float(loss32)), "logits": rel_l2(logits16, logits32)}
    diff.update({f"grad.{n}": rel_l2(g16[n], g32[n]) for n in g16})
    diff = {k: float(f"{v:.3g}") for k, v in diff.items()}
    meta_out = {"format": "pt", "config": meta["config"], "source": "tiny_dense.safetensors",
                "bf16_vs_f32": json.dumps(diff, sort_keys=True),
                "generator": "tests/golden/make_golden_bf16.py (minimind_ref.py, torch %s, CPU autocast bf16)"
                             % torch.__version__.split("+")[0]}
    path = os.path.join(outdir, "tiny_dense_bf16.safetensors")
    safetensors_io.save_file(out, path, meta_out)
    return path, diff


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            p, _ = build(tmp)
            same = filecmp.cmp(p, os.path.join(a.out, "tiny_dense_bf16.safetensors"), shallow=False)
            print("tiny_dense_bf16:", "identical" if same else "DIFFERENT")
            sys.exit(0 if same else 1)
    p, diff = build(a.out)
    print(p, os.path.getsize(p), "bytes; bf16 vs f32 (relative):", json.dumps(diff, sort_keys=True))


if __name__ == "__main__":
    main()
