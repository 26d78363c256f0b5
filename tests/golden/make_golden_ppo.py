"""Goal: write tests/golden/tiny_ppo.safetensors, PPO's losses on a tiny model in PyTorch, which minitrain's
gae_advantages (rl/advantages.hpp), ppo_policy_loss and ppo_value_loss (ops/ppo.hpp) are compared against.

The actor is tiny_dense's initial weights (make_golden.py, not stored again); the critic is a value head
value_head.weight (1, C) on the same trunk's final-norm hidden state at every position (train/ppo.hpp's
shared-trunk critic); the reference is a perturbed copy (ref.<hf name>). PPO_ROWS rows, each a prompt then
a completion, padded with 0 to T; targets mark the completion tokens (position t predicts token t + 1).
One row has an empty completion. The sampling policy's ("old") log-probabilities are the policy's shifted
by uniform noise in [-PPO_OLD_NOISE, PPO_OLD_NOISE] and the old values the critic's shifted by noise in
[-PPO_VALUE_NOISE, PPO_VALUE_NOISE], so ratios straddle both clip bounds and values both value-clip bounds.
    input_ids, targets             (R, T) I32
    ref.<hf name>                  reference weights
    value_head.weight              (1, C)
    rewards                        (R,) one per sequence, added at its last completion token
    old_logprobs, old_values       (R*T,) 0 where the target is -100
    raw_advantages                 (R*T,) GAE (gamma, lambda) on the old values, before whitening
    advantages                     (R*T,) whitened over the counted tokens (population variance, eps 1e-8)
    returns                        (R*T,) raw_advantages + old_values
    policy_logprobs, values        (R*T,) the actor's log softmax(logits)[target], the critic's values
    reference_logprobs             (R*T,) the reference's
    policy_loss, value_loss, loss  (1,) loss = policy_loss + vf_coef value_loss
    kl, clip_fraction, value_clip_fraction, approx_kl   (1,)
    grad.<hf name>, grad.value_head.weight   d loss / d parameter
Metadata: gamma, lambda, clip_epsilon, kl_coef, cliprange_value, vf_coef, seed, f32_vs_f64.

Losses (MiniMind's train_ppo.py; mean = masked mean over every counted token of the batch):
  r = exp(lp - old), kl = exp(ref - lp) - (ref - lp) - 1
  policy_loss = mean max(-A r, -A clamp(r, 1 - eps, 1 + eps)) + kl_coef mean kl
  value_loss  = 0.5 mean max((v - ret)^2, (clamp(v, old_v - c, old_v + c) - ret)^2)

Regenerate: /usr/bin/python3 tests/golden/make_golden_ppo.py [--check]
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
from make_golden_grpo import reference_weights  # noqa: E402
from make_golden_reward import hidden  # noqa: E402
from minimind_ref import CausalLM, Config  # noqa: E402

PPO_SEED = 4321
PPO_ROWS = ((4, 6), (3, 0), (5, 4), (2, 7))  # per row: prompt length, completion length
PPO_REWARDS = (1.5, 0.7, -0.5, 0.25)
PPO_GAMMA, PPO_LAMBDA = 1.0, 0.95
PPO_CLIP, PPO_KL, PPO_VCLIP, PPO_VF = 0.2, 0.02, 0.2, 0.5
PPO_OLD_NOISE, PPO_VALUE_NOISE = 0.5, 0.6


def ppo_batch(V: int, gen: torch.Generator):
    R = len(PPO_ROWS)
    ids = torch.zeros(R, T, dtype=torch.int64)
    tgt = torch.full((R, T), -100, dtype=torch.int64)
    for row, (n_prompt, L) in enumerate(PPO_ROWS):
        seq = torch.randint(1, V, (n_prompt + L,), generator=gen)
        ids[row, :n_prompt + L] = seq
        for t in range(n_prompt - 1, n_prompt + L - 1):
            tgt[row, t] = seq[t + 1]
    return ids, tgt


def gae(old_values, rewards, mask):
    """MiniMind's loop over each row's completion tokens (here: the counted positions of the row)."""
    adv = torch.zeros_like(old_values)
    for b in range(old_values.shape[0]):
        pos = torch.nonzero(mask[b]).flatten().tolist()
        lastgaelam, nv = 0.0, 0.0
        for k in reversed(range(len(pos))):
            t = pos[k]
            r = rewards[b] if k == len(pos) - 1 else 0.0
            delta = r + PPO_GAMMA * nv - old_values[b, t]
            lastgaelam = delta + PPO_GAMMA * PPO_LAMBDA * lastgaelam
            adv[b, t] = lastgaelam
            nv = old_values[b, t]
    returns = (adv + old_values) * mask
    m = mask.sum()
    mean = (adv * mask).sum() / m
    var = ((adv - mean) ** 2 * mask).sum() / m
    white = (adv - mean) * torch.rsqrt(var + 1e-8) * mask
    return adv, white, returns


def run(cfg, weights, head, ref_weights, ids, tgt, old_noise, value_noise, dtype):
    mask = (tgt != -100).to(dtype)
    lab = tgt.clamp_min(0).unsqueeze(-1)
    ref = CausalLM(cfg).to(dtype)
    ref.load_state_dict({k: v.to(dtype) for k, v in ref_weights.items()}, strict=True)
    ref.eval()
    with torch.no_grad():
        ref_lp = torch.log_softmax(ref(ids)["logits"], dim=-1).gather(-1, lab).squeeze(-1) * mask
    model = CausalLM(cfg).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    model.train()
    w = head.to(dtype).clone().requires_grad_(True)
    h = hidden(model, ids)                                          # (R, T, C)
    logits = F.linear(h, model.model.embed_tokens.weight)           # (R, T, V), tied head
    lp = torch.log_softmax(logits, dim=-1).gather(-1, lab).squeeze(-1) * mask
    values = F.linear(h, w).squeeze(-1) * mask                      # (R, T)
    old = (lp.detach() + old_noise.to(dtype)) * mask
    old_v = (values.detach() + value_noise.to(dtype)) * mask
    raw, adv, ret = gae(old_v, torch.tensor(PPO_REWARDS, dtype=dtype), mask)
    n = mask.sum()
    ratio = torch.exp(lp - old)
    d = ref_lp - lp
    kl = ((torch.exp(d) - d - 1) * mask).sum() / n
    surrogate = (torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - PPO_CLIP, 1 + PPO_CLIP)) * mask).sum() / n
    policy_loss = surrogate + PPO_KL * kl
    vc = torch.clamp(values, old_v - PPO_VCLIP, old_v + PPO_VCLIP)
    e1, e2 = (values - ret) ** 2, (vc - ret) ** 2
    value_loss = 0.5 * (torch.max(e1, e2) * mask).sum() / n
    loss = policy_loss + PPO_VF * value_loss
    loss.backward()
    grads = {n_: p.grad.detach().clone() for n_, p in model.named_parameters()}
    grads["value_head.weight"] = w.grad.detach().clone()
    one = lambda x: x.detach().reshape(1)  # noqa: E731
    return {"reference_logprobs": ref_lp, "policy_logprobs": lp.detach(), "values": values.detach(),
            "old_logprobs": old, "old_values": old_v, "raw_advantages": raw, "advantages": adv, "returns": ret,
            "policy_loss": one(policy_loss), "value_loss": one(value_loss), "loss": one(loss), "kl": one(kl),
            "clip_fraction": one((((ratio - 1).abs() > PPO_CLIP).to(dtype) * mask).sum() / n),
            "value_clip_fraction": one(((e2 > e1).to(dtype) * mask).sum() / n),
            "approx_kl": one((0.5 * (lp - old) ** 2 * mask).sum() / n), "grads": grads}


def build(outdir, verbose=True):
    cfg = Config(**DENSE)
    model = CausalLM(cfg)
    init_params(model, torch.Generator().manual_seed(DENSE_SEED))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(PPO_SEED)
    ids, tgt = ppo_batch(cfg.vocab_size, gen)
    ref_weights = reference_weights(weights, gen)
    head = torch.randn(1, cfg.hidden_size, generator=gen) * 0.5
    noise = (torch.rand(ids.shape, generator=gen, dtype=torch.float64) * 2 - 1) * PPO_OLD_NOISE
    vnoise = (torch.rand(ids.shape, generator=gen, dtype=torch.float64) * 2 - 1) * PPO_VALUE_NOISE
    res = run(cfg, weights, head, ref_weights, ids, tgt, noise.float(), vnoise.float(), torch.float32)
    r64 = run(cfg, weights, head, ref_weights, ids, tgt, noise, vnoise, torch.float64)
    for k in ("clip_fraction", "value_clip_fraction"):  # both branches of each clip must be exercised
        f = float(res[k])
        assert 0.05 < f < 0.95, f"{k} {f} does not exercise both branches"
    # The policy clip is active (no gradient) on some tokens, not merely |r - 1| > eps.
    mask = tgt != -100
    r = torch.exp(res["policy_logprobs"] - res["old_logprobs"])
    A = res["advantages"]
    active = (((A > 0) & (r > 1 + PPO_CLIP)) | ((A < 0) & (r < 1 - PPO_CLIP))) & mask
    assert 0 < int(active.sum()) < int(mask.sum()), "the policy clip is never (or always) active"
    keys = ("policy_logprobs", "values", "advantages", "returns", "policy_loss", "value_loss", "loss")
    diff = {k: float((res[k].double() - r64[k]).abs().max()) for k in keys}
    diff["grad"] = max_abs(res["grads"], r64["grads"])
    diff = {k: float(f"{v:.3g}") for k, v in diff.items()}
    f32 = lambda t: t.detach().float().contiguous()  # noqa: E731
    R = ids.shape[0]
    tensors = {"input_ids": ids.to(torch.int32), "targets": tgt.to(torch.int32),
               "rewards": torch.tensor(PPO_REWARDS, dtype=torch.float32), "value_head.weight": f32(head)}
    tensors.update({f"ref.{n}": f32(w) for n, w in ref_weights.items()})
    for k in ("old_logprobs", "old_values", "raw_advantages", "advantages", "returns", "policy_logprobs", "values",
              "reference_logprobs"):
        tensors[k] = f32(res[k]).reshape(R * T)
    for k in ("policy_loss", "value_loss", "loss", "kl", "clip_fraction", "value_clip_fraction", "approx_kl"):
        tensors[k] = f32(res[k])
    tensors.update({f"grad.{n}": f32(g) for n, g in res["grads"].items()})
    meta = {
        "format": "pt",
        "config": json.dumps(cfg.to_hf_dict(), sort_keys=True),
        "policy": "the initial parameters of tiny_dense.safetensors (same config), not repeated here",
        "gamma": repr(PPO_GAMMA), "lambda": repr(PPO_LAMBDA), "clip_epsilon": repr(PPO_CLIP), "kl_coef": repr(PPO_KL),
        "cliprange_value": repr(PPO_VCLIP), "vf_coef": repr(PPO_VF), "seed": str(PPO_SEED),
        "f32_vs_f64": json.dumps(diff, sort_keys=True),
        "generator": "tests/golden/make_golden_ppo.py (minimind_ref.py, torch %s)" % torch.__version__.split("+")[0],
    }
    path = os.path.join(outdir, "tiny_ppo.safetensors")
    safetensors_io.save_file(tensors, path, meta)
    if verbose:
        print(f"tiny_ppo: {len(tensors)} tensors, {os.path.getsize(path)} bytes -> {path}")
        for k in ("policy_loss", "value_loss", "loss", "kl", "clip_fraction", "value_clip_fraction", "approx_kl"):
            print(f"  {k} {float(res[k]):.6f}")
        print(f"  policy clip active on {int(active.sum())} of {int(mask.sum())} tokens")
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
            same = filecmp.cmp(build(tmp, verbose=False), os.path.join(a.out, "tiny_ppo.safetensors"), shallow=False)
            print(f"tiny_ppo: {'identical' if same else 'DIFFERENT'}")
            sys.exit(0 if same else 1)
    build(a.out)


if __name__ == "__main__":
    main()
