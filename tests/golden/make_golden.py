#!/usr/bin/python3
"""Goal: write the golden tensors that minitrain's C++ model is compared against.

For three tiny configs, a dense Llama, a MiniMind MoE and the dense model with MiniMind-3's q/k norm (a
Qwen3 config), this writes tests/golden/tiny_{dense,moe,qknorm,moe3}.safetensors:
    <hf name>                 every parameter, initial value (lm_head is tied: not saved)
    input_ids, targets        (B, T) I32; targets = next token, ~20% set to -100 (ignored)
    logits                    (B, T, V) F32, training-mode forward at the initial weights
    loss, ce_loss, aux_loss   (1,) F32; loss = ce_loss + aux_loss (aux = 0 for dense)
    grad.<hf name>            d loss / d param (tied head and embedding: one summed gradient)
    adamw.loss                (3,) loss before each AdamW step (adamw.loss[0] == loss)
    adamw.grad_norm           (3,) global L2 grad norm before clipping
    adamw.after.<hf name>     every parameter after the 3 steps
  MoE only (for debugging a mismatch, step-0 forward):
    routing.layers.{i}.topk_idx     (B*T, K) I32, experts in descending score order
    routing.layers.{i}.topk_weight  (B*T, K) F32, renormalized weights
    routing.layers.{i}.aux_loss     (1,) F32, this layer's share of aux_loss
  __metadata__: "config" (config.json-style dict, HF keys), "optimizer", "seed", "f32_vs_f64"
  (max |f32 - f64| of this same computation, per quantity: a floor for the C++ tolerances).

And tests/golden/tiny_dpo.safetensors, the DPO loss of tiny_dense's initial weights (the policy) against a
perturbed copy (the reference) on 2 preference pairs: log-probabilities, loss, rewards and every policy
gradient (see the DPO section below).

Deterministic: fixed seeds, one thread, f32, sorted safetensors layout; running it twice gives identical
bytes (`make_golden.py --check` regenerates into a temp dir and compares).

Before writing, it checks the vectorized reference (minimind_ref.py) against an independent per-token
loop implementation in f64, and for MoE it re-draws the seed until, in every forward of the run, the
k-th and (k+1)-th router scores of every token differ by more than 1e-4 and every expert gets tokens,
so a C++ implementation in f32 picks the same experts.

Regenerate: /usr/bin/python3 tests/golden/make_golden.py   (see README.md)
"""
import argparse
import filecmp
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
from minimind_ref import CausalLM, Config, MOEFeedForward  # noqa: E402

# ----------------------------------------------------------------------------
# settings

B, T = 2, 13
DENSE = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=64, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=True)
# intermediate_size given explicitly (36, not the rule's 128): 5 experts x 2 layers at F=128 would make
# the file 1.6 MB; 36 also is not a multiple of 8/16, so vectorized kernels hit their remainder loops.
MOE = dict(DENSE, use_moe=True, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
           norm_topk_prob=True, aux_loss_alpha=0.01, seq_aux=True, intermediate_size=36)
# MiniMind-3's attention (q_norm / k_norm per head before RoPE) on the dense model: a Qwen3 config.
QKNORM = dict(DENSE, qk_norm=True)
# MiniMind-3's MoE on it (a Qwen3-MoE config): 4 experts, top-1 renormalized to weight 1, no shared expert,
# the batch-level balancing loss (router_rules "minimind3"); alpha 0.01, not MiniMind-3's 5e-4, so that the
# router's gradient (all of it from the balancing loss) is well above f32 noise.
MOE3 = dict(QKNORM, use_moe=True, n_routed_experts=4, num_experts_per_tok=1, n_shared_experts=0,
            norm_topk_prob=True, aux_loss_alpha=0.01, router_rules="minimind3", intermediate_size=36)
OPT = dict(type="AdamW", lr=1e-3, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.1,
           weight_decay_rule="p.dim() >= 2 (matrices, embedding, router); none for RMSNorm weights",
           grad_clip=1.0, grad_clip_rule="coef = min(1, max_norm / (total_norm + 1e-6)); grads *= coef",
           steps=3, same_batch_every_step=True)
# Init scales, chosen so that the golden discriminates (measured on tiny_dense):
#  - embedding 0.2: with a tied head the logit of the input token itself is ~ std * C; at 0.5 that is ~16,
#    the softmax is one-hot (mean max prob 0.998, only 1.3% of probabilities > 1e-3, loss 17.7), so the
#    cross-entropy backward is ~0 almost everywhere. At 0.2: max prob 0.81, 46% of probs > 1e-3, loss 7.3.
#  - matrices 0.05: at 0.02 the attention is so close to uniform that using the interleaved RoPE
#    convention instead of HF's halves moves the logits by only 1.7e-3; at 0.05 by 5.5e-2 (f32 noise ~4e-6).
EMBED_STD, MATRIX_STD = 0.2, 0.05
TIE_MARGIN = 1e-4
DENSE_SEED, MOE_SEED, QKNORM_SEED, MOE3_SEED = 1234, 1234, 1234, 1234


# ----------------------------------------------------------------------------
# the run: init, 1 forward/backward for logits and grads, 3 AdamW steps


def init_params(model: CausalLM, gen: torch.Generator):
    """Norm weights ~ 1 + 0.1 randn (so their gradients are not hidden behind a weight of exactly 1),
    embedding ~ EMBED_STD randn, every other matrix ~ MATRIX_STD randn (see the settings for why)."""
    with torch.no_grad():
        for name, p in model.named_parameters():  # fixed registration order
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * r)
            elif name == "model.embed_tokens.weight":
                p.copy_(EMBED_STD * r)
            else:
                p.copy_(MATRIX_STD * r)


def make_batch(cfg: Config, gen: torch.Generator):
    seq = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
    ids, tgt = seq[:, :T].clone(), seq[:, 1:].clone()
    tgt[torch.rand(B, T, generator=gen) < 0.2] = -100
    return ids, tgt


def routing_stats(model: CausalLM, K: int, E: int):
    """Smallest gap between the K-th and (K+1)-th router score over all tokens and MoE layers of the
    last forward, and the smallest number of (token, slot) picks any expert received."""
    gap, least = math.inf, math.inf
    for layer in model.model.layers:
        if isinstance(layer.mlp, MOEFeedForward):
            idx, _, scores = layer.mlp.last_routing
            s = scores.sort(dim=-1, descending=True).values
            if K < E:
                gap = min(gap, float((s[:, K - 1] - s[:, K]).min()))
            least = min(least, int(torch.bincount(idx.reshape(-1), minlength=E).min()))
    return gap, least


def run(cfg: Config, seed: int, dtype=torch.float32, init_from=None):
    """Everything the golden holds, computed in `dtype`. init_from: a previous run's result whose
    initial weights and batch are reused (the f64 shadow run of the f32 golden)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CausalLM(cfg)
    init_params(model, gen)
    ids, tgt = make_batch(cfg, gen)
    if init_from is not None:
        model.load_state_dict({k: v for k, v in init_from["weights"].items()}, strict=True)
        ids, tgt = init_from["input_ids"], init_from["targets"]
    model = model.to(dtype)
    model.train()
    named = list(model.named_parameters())
    res = {"weights": {n: p.detach().clone() for n, p in named}, "input_ids": ids, "targets": tgt,
           "adamw.loss": [], "adamw.grad_norm": [], "min_gap": math.inf, "min_expert_load": math.inf}
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=OPT["lr"], betas=tuple(OPT["betas"]), eps=OPT["eps"], foreach=False)
    for step in range(OPT["steps"]):
        opt.zero_grad(set_to_none=True)
        out = model(ids, tgt)
        out["loss"].backward()
        # An expert that got no token has grad None, and torch's AdamW would then skip it entirely
        # (no decay, no moment decay). MiniMind adds 0 * sum(expert params) so the grad is zero instead;
        # mirror that. (The seed search below also guarantees every expert gets tokens.)
        for _, p in named:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if cfg.use_moe:
            gap, least = routing_stats(model, cfg.num_experts_per_tok, cfg.n_routed_experts)
            res["min_gap"], res["min_expert_load"] = min(res["min_gap"], gap), min(res["min_expert_load"], least)
        if step == 0:
            res["logits"] = out["logits"].detach().clone()
            res["loss"], res["ce_loss"], res["aux_loss"] = (out[k].detach().reshape(1).clone()
                                                            for k in ("loss", "ce_loss", "aux_loss"))
            res["grads"] = {n: p.grad.detach().clone() for n, p in named}
            res["routing"] = {}
            for i, layer in enumerate(model.model.layers):
                if isinstance(layer.mlp, MOEFeedForward):
                    idx, w, _ = layer.mlp.last_routing
                    res["routing"][i] = (idx.clone(), w.clone(), layer.mlp.aux_loss.detach().reshape(1).clone())
        gn = torch.nn.utils.clip_grad_norm_([p for _, p in named], OPT["grad_clip"])
        res["adamw.loss"].append(float(out["loss"]))
        res["adamw.grad_norm"].append(float(gn))
        opt.step()
    res["after"] = {n: p.detach().clone() for n, p in named}
    return res


# ----------------------------------------------------------------------------
# independent check: per-token loops, written from the definitions, f64


def naive_forward(cfg: Config, W: dict, ids, tgt):
    """Same model as minimind_ref.CausalLM in training mode, computed one token / one head at a time."""
    W = {k: v.double() for k, v in W.items()}
    C, H, KV, D, E, K = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                         cfg.n_routed_experts, cfg.num_experts_per_tok)

    def rms(v, w):
        return w * (v / math.sqrt(float((v * v).sum()) / v.numel() + cfg.rms_norm_eps))

    def rope(v, pos):
        out = v.clone()
        for i in range(D // 2):
            ang = pos * cfg.rope_theta ** (-2.0 * i / D)
            c, s = math.cos(ang), math.sin(ang)
            out[i] = v[i] * c - v[i + D // 2] * s
            out[i + D // 2] = v[i + D // 2] * c + v[i] * s
        return out

    def ffn(v, pre):
        g, u = W[pre + "gate_proj.weight"] @ v, W[pre + "up_proj.weight"] @ v
        return W[pre + "down_proj.weight"] @ (g / (1 + torch.exp(-g)) * u)

    Bn, Tn = ids.shape
    x = [[W["model.embed_tokens.weight"][int(ids[b, t])].clone() for t in range(Tn)] for b in range(Bn)]
    aux_total = 0.0
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        newx = [[None] * Tn for _ in range(Bn)]
        for b in range(Bn):
            hs = [rms(x[b][t], W[p + "input_layernorm.weight"]) for t in range(Tn)]
            q = [(W[p + "self_attn.q_proj.weight"] @ h).view(H, D) for h in hs]
            k = [(W[p + "self_attn.k_proj.weight"] @ h).view(KV, D) for h in hs]
            if cfg.qk_norm:
                q = [torch.stack([rms(q[t][h], W[p + "self_attn.q_norm.weight"]) for h in range(H)]) for t in range(Tn)]
                k = [torch.stack([rms(k[t][j], W[p + "self_attn.k_norm.weight"]) for j in range(KV)]) for t in range(Tn)]
            v = [(W[p + "self_attn.v_proj.weight"] @ h).view(KV, D) for h in hs]
            q = [torch.stack([rope(q[t][h], t) for h in range(H)]) for t in range(Tn)]
            k = [torch.stack([rope(k[t][j], t) for j in range(KV)]) for t in range(Tn)]
            for t in range(Tn):
                heads = []
                for h in range(H):
                    j = h // (H // KV)
                    sc = [float(q[t][h] @ k[s][j]) / math.sqrt(D) for s in range(t + 1)]
                    m = max(sc)
                    e = [math.exp(z - m) for z in sc]
                    heads.append(sum(e[s] / sum(e) * v[s][j] for s in range(t + 1)))
                newx[b][t] = x[b][t] + W[p + "self_attn.o_proj.weight"] @ torch.cat(heads)
        x = newx
        counts = [[0] * E for _ in range(Bn)]
        mean_scores = [[0.0] * E for _ in range(Bn)]
        for b in range(Bn):
            for t in range(Tn):
                h = rms(x[b][t], W[p + "post_attention_layernorm.weight"])
                if not cfg.use_moe:
                    x[b][t] = x[b][t] + ffn(h, p + "mlp.")
                    continue
                lg = [float(z) for z in W[p + "mlp.gate.weight"] @ h]
                m = max(lg)
                sc = [math.exp(z - m) for z in lg]
                sc = [z / sum(sc) for z in sc]
                pick = sorted(range(E), key=lambda e: -sc[e])[:K]
                renorm = cfg.norm_topk_prob and (K > 1 or cfg.router_rules == "minimind3")
                wsum = sum(sc[e] for e in pick) + 1e-20 if renorm else 1.0
                y = sum(sc[e] / wsum * ffn(h, p + f"mlp.experts.{e}.") for e in pick)
                for s in range(cfg.n_shared_experts):
                    y = y + ffn(h, p + f"mlp.shared_experts.{s}.")
                x[b][t] = x[b][t] + y
                for e in pick:
                    counts[b][e] += 1
                for e in range(E):
                    mean_scores[b][e] += sc[e] / Tn
        if cfg.use_moe and cfg.router_rules == "minimind3":  # one loss over all B*T tokens: E * sum_e load * P
            load = [sum(counts[b][e] for b in range(Bn)) / (Bn * Tn) for e in range(E)]
            P = [sum(mean_scores[b][e] for b in range(Bn)) / Bn for e in range(E)]
            aux_total += cfg.aux_loss_alpha * E * sum(load[e] * P[e] for e in range(E))
        elif cfg.use_moe:
            aux = sum(sum(counts[b][e] / (Tn * K / E) * mean_scores[b][e] for e in range(E)) for b in range(Bn)) / Bn
            aux_total += aux * cfg.aux_loss_alpha
    logits = torch.zeros(Bn, Tn, cfg.vocab_size, dtype=torch.float64)
    nll, n = 0.0, 0
    for b in range(Bn):
        for t in range(Tn):
            h = rms(x[b][t], W["model.norm.weight"])
            logits[b, t] = W["model.embed_tokens.weight"] @ h
            if int(tgt[b, t]) != -100:
                row = [float(z) for z in logits[b, t]]
                m = max(row)
                lse = m + math.log(sum(math.exp(z - m) for z in row))
                nll += lse - row[int(tgt[b, t])]
                n += 1
    return logits, nll / n, aux_total


def check_against_naive(cfg: Config, res: dict, tag: str):
    model = CausalLM(cfg).double()
    model.load_state_dict({k: v.double() for k, v in res["weights"].items()})
    model.train()
    out = model(res["input_ids"], res["targets"])
    logits, ce, aux = naive_forward(cfg, res["weights"], res["input_ids"], res["targets"])
    errs = {"logits": float((out["logits"] - logits).abs().max()), "ce_loss": abs(float(out["ce_loss"]) - ce),
            "aux_loss": abs(float(out["aux_loss"]) - aux)}
    if cfg.use_moe and not aux > 0:
        raise AssertionError(f"{tag}: the naive MoE aux loss should be positive, got {aux}")
    bad = {k: v for k, v in errs.items() if not v < 1e-10}
    if bad:
        raise AssertionError(f"{tag}: minimind_ref disagrees with the per-token loop implementation: {bad}")
    return errs


def check_grads_fd(cfg: Config, res: dict, tag: str, n_coords: int = 3):
    """Autograd of the reference vs central finite differences in f64, a few coordinates of every
    parameter (routing cannot flip: a step of 1e-6 is far below the 1e-4 router margin)."""
    model = CausalLM(cfg).double()
    model.load_state_dict({k: v.double() for k, v in res["weights"].items()})
    model.train()
    ids, tgt = res["input_ids"], res["targets"]
    model(ids, tgt)["loss"].backward()
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            for i in torch.randint(0, p.numel(), (n_coords,), generator=gen).tolist():
                flat, h, old = p.view(-1), 1e-6, float(p.view(-1)[i])
                flat[i] = old + h
                up = float(model(ids, tgt)["loss"])
                flat[i] = old - h
                down = float(model(ids, tgt)["loss"])
                flat[i] = old
                fd, ag = (up - down) / (2 * h), float(p.grad.view(-1)[i])
                err = abs(fd - ag) / max(1e-4, abs(ag))
                worst = max(worst, err)
                if err > 1e-5:
                    raise AssertionError(f"{tag}: d loss / d {name}[{i}]: autograd {ag}, finite difference {fd}")
    return worst


# ----------------------------------------------------------------------------
# writing


def max_abs(a: dict, b: dict):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def golden_tensors(cfg: Config, res: dict):
    f32 = lambda t: t.detach().float().contiguous()  # noqa: E731
    out = {n: f32(w) for n, w in res["weights"].items()}
    out["input_ids"] = res["input_ids"].to(torch.int32)
    out["targets"] = res["targets"].to(torch.int32)
    out["logits"] = f32(res["logits"])
    for k in ("loss", "ce_loss", "aux_loss"):
        out[k] = f32(res[k])
    out.update({f"grad.{n}": f32(g) for n, g in res["grads"].items()})
    out["adamw.loss"] = torch.tensor(res["adamw.loss"], dtype=torch.float32)
    out["adamw.grad_norm"] = torch.tensor(res["adamw.grad_norm"], dtype=torch.float32)
    out.update({f"adamw.after.{n}": f32(p) for n, p in res["after"].items()})
    for i, (idx, w, aux) in res["routing"].items():
        out[f"routing.layers.{i}.topk_idx"] = idx.to(torch.int32).contiguous()
        out[f"routing.layers.{i}.topk_weight"] = f32(w)
        out[f"routing.layers.{i}.aux_loss"] = f32(aux)
    return out


def build(name: str, cfg_kw: dict, seed: int, outdir: str, verbose=True):
    cfg = Config(**cfg_kw)
    tries = 0
    while True:
        res = run(cfg, seed)
        if not cfg.use_moe or (res["min_gap"] > TIE_MARGIN and res["min_expert_load"] > 0):
            break
        tries += 1
        if verbose:
            print(f"{name}: seed {seed} rejected (router gap {res['min_gap']:.2e}, "
                  f"least-loaded expert {res['min_expert_load']} picks), re-drawing")
        if tries > 100:
            raise RuntimeError(f"{name}: no seed with router gap > {TIE_MARGIN} found")
        seed += 1
    naive_err = check_against_naive(cfg, res, name)
    fd_err = check_grads_fd(cfg, res, name)
    # f64 shadow: same initial weights and batch; tells the C++ side how far f32 rounding alone moves things.
    r64 = run(cfg, seed, torch.float64, init_from=res)
    diff = {"logits": float((res["logits"].double() - r64["logits"]).abs().max()),
            "loss": abs(float(res["loss"]) - float(r64["loss"])),
            "aux_loss": abs(float(res["aux_loss"]) - float(r64["aux_loss"])),
            "grad": max_abs(res["grads"], r64["grads"]),
            "adamw.grad_norm": max(abs(a - b) for a, b in zip(res["adamw.grad_norm"], r64["adamw.grad_norm"])),
            "adamw.after": max_abs(res["after"], r64["after"])}
    diff = {k: float(f"{v:.3g}") for k, v in diff.items()}
    meta = {
        "format": "pt",
        "config": json.dumps(cfg.to_hf_dict(), sort_keys=True),
        "optimizer": json.dumps(OPT, sort_keys=True),
        "seed": str(seed),
        "batch": json.dumps({"B": B, "T": T, "ignore_index": -100}),
        "f32_vs_f64": json.dumps(diff, sort_keys=True),
        "generator": "tests/golden/make_golden.py (minimind_ref.py, torch %s)" % torch.__version__.split("+")[0],
    }
    tensors = golden_tensors(cfg, res)
    path = os.path.join(outdir, f"{name}.safetensors")
    safetensors_io.save_file(tensors, path, meta)
    if verbose:
        nparam = sum(w.numel() for w in res["weights"].values())
        print(f"{name}: seed {seed}, {nparam} params, {len(tensors)} tensors, {os.path.getsize(path)} bytes -> {path}")
        print(f"  loss {float(res['loss']):.6f} = ce {float(res['ce_loss']):.6f} + aux {float(res['aux_loss']):.6f}")
        print(f"  adamw.loss {[round(v, 6) for v in res['adamw.loss']]}, grad_norm {[round(v, 6) for v in res['adamw.grad_norm']]}")
        print(f"  naive-loop check (f64): {naive_err}")
        print(f"  finite-difference check of the reference's gradients (f64): worst relative error {fd_err:.1e}")
        print(f"  f32 vs f64: {diff}")
        if cfg.use_moe:
            print(f"  router: min k/k+1 gap {res['min_gap']:.2e} over all {OPT['steps']} forwards")
            for i, (idx, w, aux) in res["routing"].items():
                hist = torch.bincount(idx.reshape(-1), minlength=cfg.n_routed_experts).tolist()
                print(f"  layer {i}: picks per expert {hist}, first tokens' experts {idx[:6].tolist()}, aux {float(aux):.6f}")
    return path


# ----------------------------------------------------------------------------
# DPO: tiny_dpo.safetensors
#
# The dense model's initial weights (those of tiny_dense.safetensors, not stored again) are the policy;
# the reference is the same weights perturbed (stored as ref.<hf name>), so that policy != reference and
# the loss is not log 2. A batch of DPO_PAIRS (prompt, chosen reply, rejected reply) in minitrain's DPO
# row layout: rows [0, P) the chosen sequences, rows [P, 2P) the rejected ones, padded with 0 to T;
# targets are the next token where that token belongs to the reply, -100 on the prompt and the padding.
#     input_ids, targets            (2P, T) I32
#     ref.<hf name>                 reference weights
#     policy_logprobs               (2P,) sum over counted positions of log softmax(logits)[target]
#     reference_logprobs            (2P,) the same under the reference weights
#     loss                          (1,) mean_p -logsigmoid(beta ((pc - pr) - (rc - rr)))
#     chosen_rewards, rejected_rewards  (P,) beta (pc - rc), beta (pr - rr)
#     grad.<hf name>                d loss / d policy parameter (the reference is constant)

DPO_BETA = 0.15
DPO_SEED = 4321
DPO_PAIRS = ((4, 11, 8), (6, 9, 13))  # per pair: prompt length, chosen length, rejected length (tokens, <= T)
DPO_REF_NOISE = 0.3  # reference = policy + DPO_REF_NOISE * std(tensor) * randn (norm gains: + 0.1 * randn)


def dpo_batch(V: int, gen: torch.Generator):
    P = len(DPO_PAIRS)
    ids = torch.zeros(2 * P, T, dtype=torch.int64)
    tgt = torch.full((2 * P, T), -100, dtype=torch.int64)
    for p, (n_prompt, *lengths) in enumerate(DPO_PAIRS):
        prompt = torch.randint(1, V, (n_prompt,), generator=gen)
        for k, L in enumerate(lengths):  # k = 0 chosen, 1 rejected
            seq = torch.cat([prompt, torch.randint(1, V, (L - n_prompt,), generator=gen)])
            row = k * P + p
            ids[row, :L] = seq
            for t in range(n_prompt - 1, L - 1):  # position t predicts token t + 1, a reply token
                tgt[row, t] = seq[t + 1]
    return ids, tgt


def dpo_reference_weights(weights: dict, gen: torch.Generator):
    out = {}
    for n, w in weights.items():  # insertion order = registration order: deterministic draws
        r = torch.randn(w.shape, generator=gen, dtype=torch.float32)
        out[n] = w + (0.1 * r if w.dim() == 1 else DPO_REF_NOISE * float(w.std()) * r)
    return out


def sequence_logprobs(logits, tgt):
    """(R, T, V), (R, T) -> (R,): sum over positions with target != -100 of log softmax(logits)[target]."""
    lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (lp * (tgt != -100)).sum(dim=-1)


def dpo_loss(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - pr) - (rc - rr))).mean()


def run_dpo(cfg: Config, weights: dict, ref_weights: dict, ids, tgt, dtype):
    P = len(DPO_PAIRS)
    ref = CausalLM(cfg).to(dtype)
    ref.load_state_dict({k: v.to(dtype) for k, v in ref_weights.items()}, strict=True)
    ref.eval()
    with torch.no_grad():
        ref_lp = sequence_logprobs(ref(ids)["logits"], tgt)
    model = CausalLM(cfg).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    model.train()
    pol_lp = sequence_logprobs(model(ids)["logits"], tgt)
    loss = dpo_loss(pol_lp[:P], pol_lp[P:], ref_lp[:P], ref_lp[P:], DPO_BETA)
    loss.backward()
    return {"policy_logprobs": pol_lp.detach(), "reference_logprobs": ref_lp, "loss": loss.detach().reshape(1),
            "chosen_rewards": DPO_BETA * (pol_lp[:P] - ref_lp[:P]).detach(),
            "rejected_rewards": DPO_BETA * (pol_lp[P:] - ref_lp[P:]).detach(),
            "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()}, "model": model}


def check_dpo(cfg: Config, weights: dict, ref_weights: dict, ids, tgt, res64: dict, n_coords: int = 3):
    """In f64: log-probabilities against the per-token loop model (naive_forward) and python math;
    the DPO gradient against central finite differences, a few coordinates of every parameter."""
    P = len(DPO_PAIRS)
    worst_lp = 0.0
    for W, key in ((weights, "policy_logprobs"), (ref_weights, "reference_logprobs")):
        logits, _, _ = naive_forward(cfg, W, ids, tgt)
        for r in range(2 * P):
            s = 0.0
            for t in range(T):
                if int(tgt[r, t]) != -100:
                    row = [float(z) for z in logits[r, t]]
                    m = max(row)
                    s += row[int(tgt[r, t])] - m - math.log(sum(math.exp(z - m) for z in row))
            worst_lp = max(worst_lp, abs(s - float(res64[key][r])))
    if not worst_lp < 1e-10:
        raise AssertionError(f"tiny_dpo: log-probabilities disagree with the per-token loop ({worst_lp})")
    model, rc, rr = res64["model"], res64["reference_logprobs"][:P], res64["reference_logprobs"][P:]

    def loss_now():
        lp = sequence_logprobs(model(ids)["logits"], tgt)
        return float(dpo_loss(lp[:P], lp[P:], rc, rr, DPO_BETA))

    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            for i in torch.randint(0, p.numel(), (n_coords,), generator=gen).tolist():
                flat, h, old = p.view(-1), 1e-6, float(p.view(-1)[i])
                flat[i] = old + h
                up = loss_now()
                flat[i] = old - h
                down = loss_now()
                flat[i] = old
                fd, ag = (up - down) / (2 * h), float(res64["grads"][name].view(-1)[i])
                err = abs(fd - ag) / max(1e-4, abs(ag))
                worst = max(worst, err)
                if err > 1e-5:
                    raise AssertionError(f"tiny_dpo: d loss / d {name}[{i}]: autograd {ag}, finite difference {fd}")
    return worst_lp, worst


def build_dpo(outdir: str, verbose=True):
    cfg = Config(**DENSE)
    # The policy: tiny_dense's initial weights, drawn exactly as run() draws them.
    model = CausalLM(cfg)
    init_params(model, torch.Generator().manual_seed(DENSE_SEED))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(DPO_SEED)
    ids, tgt = dpo_batch(cfg.vocab_size, gen)
    ref_weights = dpo_reference_weights(weights, gen)
    res = run_dpo(cfg, weights, ref_weights, ids, tgt, torch.float32)
    r64 = run_dpo(cfg, weights, ref_weights, ids, tgt, torch.float64)
    naive_err, fd_err = check_dpo(cfg, weights, ref_weights, ids, tgt, r64)
    diff = {k: float((res[k].double() - r64[k]).abs().max()) for k in ("policy_logprobs", "reference_logprobs", "loss")}
    diff["grad"] = max_abs(res["grads"], r64["grads"])
    diff = {k: float(f"{v:.3g}") for k, v in diff.items()}
    f32 = lambda t: t.detach().float().contiguous()  # noqa: E731
    tensors = {"input_ids": ids.to(torch.int32), "targets": tgt.to(torch.int32)}
    tensors.update({f"ref.{n}": f32(w) for n, w in ref_weights.items()})
    for k in ("policy_logprobs", "reference_logprobs", "loss", "chosen_rewards", "rejected_rewards"):
        tensors[k] = f32(res[k])
    tensors.update({f"grad.{n}": f32(g) for n, g in res["grads"].items()})
    meta = {
        "format": "pt",
        "config": json.dumps(cfg.to_hf_dict(), sort_keys=True),
        "policy": "the initial parameters of tiny_dense.safetensors (same config), not repeated here",
        "beta": repr(DPO_BETA),
        "seed": str(DPO_SEED),
        "batch": json.dumps({"pairs": len(DPO_PAIRS), "T": T, "ignore_index": -100, "pad_id": 0,
                             "rows": "chosen of pairs 0..P-1, then rejected of pairs 0..P-1",
                             "prompt_chosen_rejected_lengths": DPO_PAIRS}),
        "reference": f"policy + {DPO_REF_NOISE} * std(tensor) * randn for matrices, + 0.1 * randn for norm gains",
        "f32_vs_f64": json.dumps(diff, sort_keys=True),
        "generator": "tests/golden/make_golden.py (minimind_ref.py, torch %s)" % torch.__version__.split("+")[0],
    }
    path = os.path.join(outdir, "tiny_dpo.safetensors")
    safetensors_io.save_file(tensors, path, meta)
    if verbose:
        print(f"tiny_dpo: {len(tensors)} tensors, {os.path.getsize(path)} bytes -> {path}")
        print(f"  policy logprobs {[round(float(v), 4) for v in res['policy_logprobs']]}")
        print(f"  reference logprobs {[round(float(v), 4) for v in res['reference_logprobs']]}")
        print(f"  loss {float(res['loss']):.6f} (log 2 = {math.log(2):.6f}), chosen rewards "
              f"{[round(float(v), 4) for v in res['chosen_rewards']]}, rejected {[round(float(v), 4) for v in res['rejected_rewards']]}")
        print(f"  per-token loop check of the log-probabilities (f64): {naive_err:.1e}")
        print(f"  finite-difference check of the DPO gradient (f64): worst relative error {fd_err:.1e}")
        print(f"  f32 vs f64: {diff}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: tests/golden)")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare bytes with --out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            ok = True
            for name, kw, seed in (("tiny_dense", DENSE, DENSE_SEED), ("tiny_moe", MOE, MOE_SEED),
                                   ("tiny_qknorm", QKNORM, QKNORM_SEED), ("tiny_moe3", MOE3, MOE3_SEED),
                                   ("tiny_dpo", None, None)):
                p = build(name, kw, seed, tmp, verbose=False) if kw else build_dpo(tmp, verbose=False)
                same = filecmp.cmp(p, os.path.join(a.out, f"{name}.safetensors"), shallow=False)
                print(f"{name}: {'identical' if same else 'DIFFERENT'}")
                ok &= same
            sys.exit(0 if ok else 1)
    build("tiny_dense", DENSE, DENSE_SEED, a.out)
    build("tiny_moe", MOE, MOE_SEED, a.out)
    build("tiny_qknorm", QKNORM, QKNORM_SEED, a.out)
    build("tiny_moe3", MOE3, MOE3_SEED, a.out)
    build_dpo(a.out)


if __name__ == "__main__":
    main()
