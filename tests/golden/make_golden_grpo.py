"""Goal: write tests/golden/tiny_grpo.safetensors, the GRPO and CISPO policy losses of a tiny model in PyTorch,
which minitrain's grpo_loss (ops/grpo.hpp) and group_advantages (rl/advantages.hpp) are compared against.

The policy is tiny_dense's initial weights (make_golden.py, not stored again); the reference is a perturbed
copy (ref.<hf name>). A batch of GRPO_PROMPTS prompts x GRPO_G samples, rows laid out group after group
(sample j of prompt p is row p G + j), each row the prompt then a completion, padded with 0 to T; targets
mark the completion tokens (the next token where it belongs to the completion, -100 elsewhere). One row
has an empty completion. The sampling policy's ("old") per-token log-probabilities are the policy's
shifted by uniform noise in [-GRPO_OLD_NOISE, GRPO_OLD_NOISE], so ratios straddle both clip bounds.
    input_ids, targets             (R, T) I32
    ref.<hf name>                  reference weights
    rewards                        (R,) a fixed reward per sample
    advantages                     (R,) clamp((r - mean_g) / (std_g + 1e-4), -10, 10), std unbiased (torch.std)
    old_logprobs                   (R*T,) 0 where the target is -100
    policy_logprobs                (R*T,) log softmax(logits)[target], 0 where the target is -100
    reference_logprobs             (R*T,) the same under the reference
    {grpo,cispo}.loss              (1,)
    {grpo,cispo}.kl                (1,) mean per-token k3 KL over the counted tokens
    {grpo,cispo}.clip_fraction     (1,) fraction of counted tokens whose clip is active
    {grpo,cispo}.grad.<hf name>    d loss / d policy parameter
Metadata: beta, epsilon, epsilon_high, seed, f32_vs_f64.

Loss (MiniMind's train_grpo.py): per token r = exp(lp - old), kl = exp(ref - lp) - (ref - lp) - 1,
  grpo:  -(min(r A, clamp(r, 1 - eps, 1 + eps) A) - beta kl)
  cispo: -(clamp(r, max=eps_high).detach() A lp - beta kl)
mean over each row's counted tokens (0 for a row without any), then mean over the R rows.

Regenerate: /usr/bin/python3 tests/golden/make_golden_grpo.py [--check]
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
from make_golden import DENSE, DENSE_SEED, T, init_params, max_abs  # noqa: E402
from minimind_ref import CausalLM, Config  # noqa: E402

GRPO_SEED = 9876
GRPO_G = 3
GRPO_PROMPTS = ((4, (5, 3, 0)), (6, (4, 7, 2)))  # per prompt: prompt length, completion length of each sample
GRPO_REWARDS = (1.0, 0.0, 0.5, 0.0, 2.0, 0.25)
GRPO_BETA, GRPO_EPS, GRPO_EPS_HIGH = 0.04, 0.2, 1.25
GRPO_OLD_NOISE = 0.5
REF_NOISE = 0.3


def grpo_batch(V: int, gen: torch.Generator):
    R = len(GRPO_PROMPTS) * GRPO_G
    ids = torch.zeros(R, T, dtype=torch.int64)
    tgt = torch.full((R, T), -100, dtype=torch.int64)
    for p, (n_prompt, lengths) in enumerate(GRPO_PROMPTS):
        prompt = torch.randint(1, V, (n_prompt,), generator=gen)
        for j, L in enumerate(lengths):
            row = p * GRPO_G + j
            seq = torch.cat([prompt, torch.randint(1, V, (L,), generator=gen)])
            ids[row, :n_prompt + L] = seq
            for t in range(n_prompt - 1, n_prompt + L - 1):  # position t predicts completion token t + 1
                tgt[row, t] = seq[t + 1]
    return ids, tgt


def reference_weights(weights: dict, gen: torch.Generator):
    out = {}
    for n, w in weights.items():
        r = torch.randn(w.shape, generator=gen, dtype=torch.float32)
        out[n] = w + (0.1 * r if w.dim() == 1 else REF_NOISE * float(w.std()) * r)
    return out


def token_logprobs(logits, tgt):
    lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * (tgt != -100)


def group_advantages(rewards):
    g = rewards.view(-1, GRPO_G)
    mean = g.mean(dim=1).repeat_interleave(GRPO_G)
    std = g.std(dim=1).repeat_interleave(GRPO_G)
    return torch.clamp((rewards - mean) / (std + 1e-4), -10, 10)


def policy_loss(kind, lp, old, ref, adv, mask):
    r = torch.exp(lp - old)
    d = ref - lp
    kl = torch.exp(d) - d - 1
    A = adv.unsqueeze(1)
    if kind == "grpo":
        obj = torch.min(r * A, torch.clamp(r, 1 - GRPO_EPS, 1 + GRPO_EPS) * A)
        clip = ((A > 0) & (r > 1 + GRPO_EPS)) | ((A < 0) & (r < 1 - GRPO_EPS))
    else:
        obj = torch.clamp(r, max=GRPO_EPS_HIGH).detach() * A * lp
        clip = r > GRPO_EPS_HIGH
    per_token = -(obj - GRPO_BETA * kl)
    n = mask.sum(dim=1)
    rows = torch.where(n > 0, (per_token * mask).sum(dim=1) / n.clamp_min(1), torch.zeros_like(n))
    counted = mask.sum()
    return rows.mean(), (kl * mask).sum() / counted, (clip.to(mask.dtype) * mask).sum() / counted


def run(cfg, weights, ref_weights, ids, tgt, old_noise, dtype):
    mask = (tgt != -100).to(dtype)
    ref = CausalLM(cfg).to(dtype)
    ref.load_state_dict({k: v.to(dtype) for k, v in ref_weights.items()}, strict=True)
    ref.eval()
    with torch.no_grad():
        ref_lp = token_logprobs(ref(ids)["logits"], tgt)
    adv = group_advantages(torch.tensor(GRPO_REWARDS, dtype=dtype))
    out = {"reference_logprobs": ref_lp, "advantages": adv}
    for kind in ("grpo", "cispo"):
        model = CausalLM(cfg).to(dtype)
        model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
        model.train()
        lp = token_logprobs(model(ids)["logits"], tgt)
        old = (lp.detach() + old_noise.to(dtype)) * mask
        loss, kl, clip = policy_loss(kind, lp, old, ref_lp, adv, mask)
        loss.backward()
        out["policy_logprobs"], out["old_logprobs"] = lp.detach(), old
        out[kind] = {"loss": loss.detach().reshape(1), "kl": kl.detach().reshape(1), "clip_fraction": clip.reshape(1),
                     "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()}}
    return out


def build(outdir, verbose=True):
    cfg = Config(**DENSE)
    model = CausalLM(cfg)
    init_params(model, torch.Generator().manual_seed(DENSE_SEED))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(GRPO_SEED)
    ids, tgt = grpo_batch(cfg.vocab_size, gen)
    ref_weights = reference_weights(weights, gen)
    noise = (torch.rand(ids.shape, generator=gen, dtype=torch.float64) * 2 - 1) * GRPO_OLD_NOISE
    res = run(cfg, weights, ref_weights, ids, tgt, noise.float(), torch.float32)
    r64 = run(cfg, weights, ref_weights, ids, tgt, noise, torch.float64)
    for kind in ("grpo", "cispo"):  # both branches of each clip must be exercised
        clip = float(res[kind]["clip_fraction"])
        assert 0.05 < clip < 0.95, f"{kind}: clip fraction {clip} does not exercise both branches"
    diff = {k: float((res[k].double() - r64[k]).abs().max()) for k in ("policy_logprobs", "reference_logprobs")}
    for kind in ("grpo", "cispo"):
        diff[kind + ".loss"] = float((res[kind]["loss"].double() - r64[kind]["loss"]).abs().max())
        diff[kind + ".grad"] = max_abs(res[kind]["grads"], r64[kind]["grads"])
    diff = {k: float(f"{v:.3g}") for k, v in diff.items()}
    f32 = lambda t: t.detach().float().contiguous()  # noqa: E731
    R = ids.shape[0]
    tensors = {"input_ids": ids.to(torch.int32), "targets": tgt.to(torch.int32),
               "rewards": torch.tensor(GRPO_REWARDS, dtype=torch.float32), "advantages": f32(res["advantages"])}
    tensors.update({f"ref.{n}": f32(w) for n, w in ref_weights.items()})
    for k in ("old_logprobs", "policy_logprobs", "reference_logprobs"):
        tensors[k] = f32(res[k]).reshape(R * T)
    for kind in ("grpo", "cispo"):
        for k in ("loss", "kl", "clip_fraction"):
            tensors[f"{kind}.{k}"] = f32(res[kind][k])
        tensors.update({f"{kind}.grad.{n}": f32(g) for n, g in res[kind]["grads"].items()})
    meta = {
        "format": "pt",
        "config": json.dumps(cfg.to_hf_dict(), sort_keys=True),
        "policy": "the initial parameters of tiny_dense.safetensors (same config), not repeated here",
        "beta": repr(GRPO_BETA), "epsilon": repr(GRPO_EPS), "epsilon_high": repr(GRPO_EPS_HIGH),
        "group_size": str(GRPO_G), "seed": str(GRPO_SEED),
        "f32_vs_f64": json.dumps(diff, sort_keys=True),
        "generator": "tests/golden/make_golden_grpo.py (minimind_ref.py, torch %s)" % torch.__version__.split("+")[0],
    }
    path = os.path.join(outdir, "tiny_grpo.safetensors")
    safetensors_io.save_file(tensors, path, meta)
    if verbose:
        print(f"tiny_grpo: {len(tensors)} tensors, {os.path.getsize(path)} bytes -> {path}")
        print(f"  advantages {[round(float(v), 4) for v in res['advantages']]}")
        for kind in ("grpo", "cispo"):
            print(f"  {kind}: loss {float(res[kind]['loss']):.6f}, kl {float(res[kind]['kl']):.6f}, "
                  f"clip fraction {float(res[kind]['clip_fraction']):.3f}")
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
            same = filecmp.cmp(build(tmp, verbose=False), os.path.join(a.out, "tiny_grpo.safetensors"), shallow=False)
            print(f"tiny_grpo: {'identical' if same else 'DIFFERENT'}")
            sys.exit(0 if same else 1)
    build(a.out)


if __name__ == "__main__":
    main()
