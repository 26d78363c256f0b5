"""Goal: write tests/golden/tiny_distill.safetensors, the distillation loss of MiniMind's train_distillation.py
in PyTorch at several temperatures, which minitrain's distill_loss (ops/distill.hpp) is compared against.

    student, teacher     (N, V) F32 random logits (the teacher sharper: scale 3)
    targets              (N,) I32, two of them -100 (not counted)
    T{t}.loss            (1,) alpha CE(student, targets) + (1 - alpha) T^2 KL(softmax(teacher/T) || softmax(student/T)),
                         means over the counted rows (F.kl_div(..., reduction="batchmean") on those rows)
    T{t}.grad            (N, V) d loss / d student
for t in TEMPERATURES (written as 1.0 -> "T1.0"). Metadata: alpha, temperatures.

Regenerate: /usr/bin/python3 tests/golden/make_golden_distill.py [--check]
"""
import argparse
import filecmp
import json
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

N, V, SEED, ALPHA = 7, 11, 2468, 0.5
TEMPERATURES = (1.0, 1.5, 4.0)


def loss_of(student, teacher, targets, T):
    keep = targets != -100
    s, t, y = student[keep], teacher[keep], targets[keep]
    ce = F.cross_entropy(s, y.long())
    kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.softmax(t / T, dim=-1).detach(), reduction="batchmean")
    return ALPHA * ce + (1 - ALPHA) * T * T * kl


def build(outdir):
    gen = torch.Generator().manual_seed(SEED)
    student = torch.randn(N, V, generator=gen)
    teacher = 3 * torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen).to(torch.int32)
    targets[2] = -100
    targets[5] = -100
    tensors = {"student": student, "teacher": teacher, "targets": targets}
    for T in TEMPERATURES:
        s = student.clone().double().requires_grad_(True)
        loss = loss_of(s, teacher.double(), targets, T)
        loss.backward()
        tensors[f"T{T}.loss"] = loss.detach().float().reshape(1)
        tensors[f"T{T}.grad"] = s.grad.float().contiguous()
    meta = {"format": "pt", "alpha": repr(ALPHA), "temperatures": json.dumps(TEMPERATURES), "seed": str(SEED),
            "generator": "tests/golden/make_golden_distill.py (torch %s, computed in f64)" % torch.__version__.split("+")[0]}
    path = os.path.join(outdir, "tiny_distill.safetensors")
    safetensors_io.save_file(tensors, path, meta)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            same = filecmp.cmp(build(tmp), os.path.join(a.out, "tiny_distill.safetensors"), shallow=False)
            print(f"tiny_distill: {'identical' if same else 'DIFFERENT'}")
            sys.exit(0 if same else 1)
    p = build(a.out)
    print(f"tiny_distill -> {p} ({os.path.getsize(p)} bytes)")


if __name__ == "__main__":
    main()
