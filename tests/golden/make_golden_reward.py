"""Goal: write tests/golden/tiny_reward.safetensors, a reward model's Bradley-Terry loss on a tiny model in
PyTorch, which minitrain's reward_scores / bradley_terry_loss (train/reward.hpp, ops/select.hpp) are
compared against: the rewards, the loss, the pair accuracy and the gradient of every parameter, trunk
and head.

The trunk is tiny_dense's initial weights (make_golden.py, not stored again); the head score.weight
(1, C) is drawn here. A batch of REWARD_PAIRS pairs, rows [0, P) chosen and [P, 2P) rejected, each row a
shared prompt then a reply, padded with 0 to T; targets mark the reply tokens (position t predicts
reply token t + 1), so the score is read at the LAST position whose target is not -100. The pairs'
replies have different lengths, so the read positions differ between rows.
    input_ids, targets             (2P, T) I32
    score.weight                   (1, C) the head
    positions                      (2P,) I32 where each row's score is read
    rewards                        (2P,) score.weight . hidden[b, positions[b]]
    loss                           (1,) mean_p -logsigmoid(r_chosen - r_rejected)
    accuracy, margin               (1,) fraction of pairs with r_chosen > r_rejected; mean r_c - r_r
    grad.<hf name>, grad.score.weight   d loss / d parameter
Metadata: config, seed, f32_vs_f64.

Regenerate: /usr/bin/python3 tests/golden/make_golden_reward.py [--check]
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
from make_golden import DENSE, DENSE_SEED, T, init_params, max_abs  # noqa: E402
from minimind_ref import CausalLM, Config, rope_cos_sin  # noqa: E402

REWARD_SEED = 4322
REWARD_PAIRS = ((5, 6, 3), (3, 2, 9), (4, 8, 7))  # per pair: prompt length, chosen and rejected reply lengths
HEAD_STD = 0.5  # larger than an init's 0.02, so the rewards differ enough for both signs of the margin


def reward_batch(V: int, gen: torch.Generator):
    P = len(REWARD_PAIRS)
    ids = torch.zeros(2 * P, T, dtype=torch.int64)
    tgt = torch.full((2 * P, T), -100, dtype=torch.int64)
    for p, (n_prompt, *lengths) in enumerate(REWARD_PAIRS):
        prompt = torch.randint(1, V, (n_prompt,), generator=gen)
        for side, L in enumerate(lengths):
            row = p + side * P
            seq = torch.cat([prompt, torch.randint(1, V, (L,), generator=gen)])
            ids[row, :n_prompt + L] = seq
            for t in range(n_prompt - 1, n_prompt + L - 1):
                tgt[row, t] = seq[t + 1]
    return ids, tgt


def hidden(model: CausalLM, ids):
    """The final-norm hidden state (B, T, C): CausalLM.forward without the output head."""
    cfg = model.config
    x = model.model.embed_tokens(ids)
    cos, sin = rope_cos_sin(ids.shape[1], cfg.head_dim, cfg.rope_theta, x.dtype)
    for layer in model.model.layers:
        x = layer(x, cos, sin)
    return model.model.norm(x)


def run(cfg, weights, head, ids, tgt, dtype):
    model = CausalLM(cfg).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    model.train()
    w = head.to(dtype).clone().requires_grad_(True)
    mask = tgt != -100
    pos = torch.tensor([int(torch.nonzero(m).max()) for m in mask])  # last supervised position of each row
    h = hidden(model, ids)                                           # (2P, T, C)
    r = F.linear(h[torch.arange(ids.shape[0]), pos], w).squeeze(-1)  # (2P,)
    P = ids.shape[0] // 2
    d = r[:P] - r[P:]
    loss = -F.logsigmoid(d).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    grads["score.weight"] = w.grad.detach().clone()
    return {"positions": pos, "rewards": r.detach(), "loss": loss.detach().reshape(1),
            "accuracy": (d > 0).to(dtype).mean().detach().reshape(1), "margin": d.mean().detach().reshape(1),
            "grads": grads}


def build(outdir, verbose=True):
    cfg = Config(**DENSE)
    model = CausalLM(cfg)
    init_params(model, torch.Generator().manual_seed(DENSE_SEED))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(REWARD_SEED)
    ids, tgt = reward_batch(cfg.vocab_size, gen)
    head = torch.randn(1, cfg.hidden_size, generator=gen) * HEAD_STD
    res = run(cfg, weights, head, ids, tgt, torch.float32)
    r64 = run(cfg, weights, head, ids, tgt, torch.float64)
    acc = float(res["accuracy"])
    assert 0 < acc < 1, f"pair accuracy {acc}: both signs of the margin must be in the batch"
    diff = {"rewards": float((res["rewards"].double() - r64["rewards"]).abs().max()),
            "loss": float((res["loss"].double() - r64["loss"]).abs().max()),
            "grad": max_abs(res["grads"], r64["grads"])}
    diff = {k: float(f"{v:.3g}") for k, v in diff.items()}
    f32 = lambda t: t.detach().float().contiguous()  # noqa: E731
    tensors = {"input_ids": ids.to(torch.int32), "targets": tgt.to(torch.int32), "score.weight": f32(head),
               "positions": res["positions"].to(torch.int32), "rewards": f32(res["rewards"]),
               "loss": f32(res["loss"]), "accuracy": f32(res["accuracy"]), "margin": f32(res["margin"])}
    tensors.update({f"grad.{n}": f32(g) for n, g in res["grads"].items()})
    meta = {
        "format": "pt",
        "config": json.dumps(cfg.to_hf_dict(), sort_keys=True),
        "trunk": "the initial parameters of tiny_dense.safetensors (same config), not repeated here",
        "seed": str(REWARD_SEED),
        "f32_vs_f64": json.dumps(diff, sort_keys=True),
        "generator": "tests/golden/make_golden_reward.py (minimind_ref.py, torch %s)" % torch.__version__.split("+")[0],
    }
    path = os.path.join(outdir, "tiny_reward.safetensors")
    safetensors_io.save_file(tensors, path, meta)
    if verbose:
        print(f"tiny_reward: {len(tensors)} tensors, {os.path.getsize(path)} bytes -> {path}")
        print(f"  rewards {[round(float(v), 4) for v in res['rewards']]}, positions {res['positions'].tolist()}")
        print(f"  loss {float(res['loss']):.6f}, accuracy {acc:.3f}, margin {float(res['margin']):.4f}")
        print(f"  f32 vs f64: {diff}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare bytes with --out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            same = filecmp.cmp(build(tmp, verbose=False), os.path.join(a.out, "tiny_reward.safetensors"), shallow=False)
            print(f"tiny_reward: {'identical' if same else 'DIFFERENT'}")
            sys.exit(0 if same else 1)
    build(a.out)


if __name__ == "__main__":
    main()
