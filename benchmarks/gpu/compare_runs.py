#!/usr/bin/env python3
"""Goal: say how far two training runs' loss curves are apart, step by step, and fail past a tolerance.

    compare_runs.py A/metrics.jsonl B/metrics.jsonl --first 1e-5 --all 2e-2 [--exact] [--from-step N]

Reads the train-loss lines ({"step", "loss", ...}) and the evaluation lines ({"step", "val_loss"}) of two
metrics.jsonl files (train/trainer.hpp writes them), pairs them by step, and prints the largest relative
difference of the first logged step, of all steps, and of the last validation loss. --first bounds the
first step (one forward and backward: reduction order only), --all every step (rounding differences grow
as training goes, since each step starts from slightly different weights), --exact asks for bit-equal
losses (a resumed run against an uninterrupted one on the same device). Exit 1 when a bound is broken.
"""
import argparse
import json
import sys


def read(path, from_step):
    train, val = {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("step", 0) < from_step:
                continue
            if "loss" in r:
                train[r["step"]] = r["loss"]
            if "val_loss" in r:
                val[r["step"]] = r["val_loss"]
    return train, val


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--first", type=float, default=None)
    ap.add_argument("--all", type=float, default=None)
    ap.add_argument("--exact", action="store_true")
    ap.add_argument("--from-step", type=int, default=0)
    ap.add_argument("--name", default="runs")
    o = ap.parse_args()
    ta, va = read(o.a, o.from_step)
    tb, vb = read(o.b, o.from_step)
    steps = sorted(set(ta) & set(tb))
    if not steps:
        print(f"{o.name}: no common logged steps in {o.a} and {o.b}")
        return 1
    first = rel(ta[steps[0]], tb[steps[0]])
    worst_step = max(steps, key=lambda s: rel(ta[s], tb[s]))
    worst = rel(ta[worst_step], tb[worst_step])
    vsteps = sorted(set(va) & set(vb))
    vlast = rel(va[vsteps[-1]], vb[vsteps[-1]]) if vsteps else float("nan")
    ok = True
    if o.exact:
        ok = all(ta[s] == tb[s] for s in steps) and all(va[s] == vb[s] for s in vsteps)
    if o.first is not None and not first <= o.first:
        ok = False
    if o.all is not None and not worst <= o.all:
        ok = False
    print(f"{o.name}: {len(steps)} steps; step {steps[0]} rel diff {first:.2e}; worst {worst:.2e} at step {worst_step} "
          f"({ta[worst_step]:.6f} vs {tb[worst_step]:.6f}); last val loss rel diff {vlast:.2e}"
          f"{' (bit-equal)' if o.exact and ok else ''}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
