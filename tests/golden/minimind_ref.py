#!/usr/bin/python3
"""Goal: a from-scratch PyTorch reference of the MiniMind / Llama decoder, the oracle for minitrain.

Plain nn.Module code whose parameter names are exactly Hugging Face Llama's (model.embed_tokens.weight,
model.layers.{i}.self_attn.q_proj.weight, ...), plus MiniMind's MoE feed-forward (mlp.gate.weight,
mlp.experts.{e}.*, mlp.shared_experts.{s}.*). Written from the architecture description, so that it
depends on nothing but torch (1.13 here; no transformers, no safetensors package).

Dimension legend: B = batch, T = time, C = hidden (channels), H = query heads, KV = key/value heads,
D = head dim = C/H, F = FFN hidden, V = vocab, E = routed experts, K = experts per token (top-k),
N = B*T tokens.

Used three ways:
  * imported by make_golden.py (golden tensors) and benchmarks/pytorch_train_step.py (timing);
  * `load_pretrained(dir)` builds the model from an HF-style folder (config.json + model.safetensors);
  * CLI for C++ tests that run when torch exists:
        /usr/bin/python3 tests/golden/minimind_ref.py eval DIR --ids 1,2,3[;4,5,6] [--targets ...]
    prints one JSON line {"logits": [B][T][V], "ce_loss", "aux_loss", "loss", ...}.
        /usr/bin/python3 tests/golden/minimind_ref.py init DIR [--seed S] [config keys as --key value]
    writes a randomly initialized checkpoint folder (so C++ can prove it loads a PyTorch-written one).

Conventions the C++ side must match (each is marked "MATCH:" below where it is implemented).
"""
import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

# ----------------------------------------------------------------------------
# config


@dataclass
class Config:
    vocab_size: int = 6400
    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    intermediate_size: int | None = None  # None: 64 * ceil(int(8*C/3) / 64), MiniMind's rule
    head_dim: int | None = None  # None: C / H
    max_position_embeddings: int = 32768
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    dropout: float = 0.0
    hidden_act: str = "silu"
    # MiniMind-3 / Qwen3: RMSNorm over each head of q and of k (weights (D,), eps rms_norm_eps) before RoPE
    qk_norm: bool = False
    # MiniMind MoE
    use_moe: bool = False
    n_routed_experts: int = 4
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1
    norm_topk_prob: bool = True
    aux_loss_alpha: float = 0.01
    seq_aux: bool = True
    scoring_func: str = "softmax"
    # "minimind2": MiniMind2's MoEGate (above). "minimind3": MiniMind-3's MOEFeedForward: top-k weights
    # renormalized for every K (top-1 weight 1) and one balancing loss over the whole batch (seq_aux unused).
    router_rules: str = "minimind2"

    def __post_init__(self):
        if self.intermediate_size is None:
            f = int(self.hidden_size * 8 / 3)
            self.intermediate_size = 64 * ((f + 64 - 1) // 64)
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"config: hidden_size {self.hidden_size} not divisible by heads {self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"config: heads {self.num_attention_heads} not a multiple of kv heads {self.num_key_value_heads}")
        if self.router_rules not in ("minimind2", "minimind3"):
            raise ValueError(f"config: router_rules {self.router_rules!r} is not minimind2 or minimind3")
        if self.hidden_act != "silu" or self.scoring_func != "softmax" or self.dropout != 0.0:
            raise ValueError("config: only hidden_act=silu, scoring_func=softmax and dropout=0 are modelled")

    def to_hf_dict(self) -> dict:
        """config.json contents: LlamaConfig keys + MiniMind's MoE keys."""
        d = asdict(self)
        qk = d.pop("qk_norm")  # said by the architecture: Qwen3 has q_norm / k_norm, Llama has not
        rules = d.pop("router_rules")
        if qk and self.use_moe:  # MiniMind-3-MoE as its convert script writes it: a Qwen3-MoE config
            if rules != "minimind3" or self.n_shared_experts:
                raise ValueError("config: q/k norm with MoE is modelled for MiniMind-3's router only")
            moe = {"num_experts": d.pop("n_routed_experts"), "num_experts_per_tok": d.pop("num_experts_per_tok"),
                   "moe_intermediate_size": d["intermediate_size"], "norm_topk_prob": d.pop("norm_topk_prob"),
                   "router_aux_loss_coef": d.pop("aux_loss_alpha"), "decoder_sparse_step": 1,
                   "mlp_only_layers": [], "use_moe": d.pop("use_moe")}
            for k in ("n_shared_experts", "seq_aux", "scoring_func"):
                d.pop(k)
            return {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "torch_dtype": "float32",
                    **d, **moe}
        if rules != "minimind2":
            raise ValueError("config: MiniMind-3's router is modelled with q/k norm (a Qwen3-MoE config) only")
        arch, mtype = (("Qwen3ForCausalLM", "qwen3") if qk else ("LlamaForCausalLM", "llama")) if not self.use_moe \
            else ("MiniMindForCausalLM", "minimind")
        d = {"architectures": [arch], "model_type": mtype, "torch_dtype": "float32", **d}
        if not self.use_moe:  # a plain Llama config carries no MoE keys
            for k in ("use_moe", "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "norm_topk_prob",
                      "aux_loss_alpha", "seq_aux", "scoring_func"):
                d.pop(k)
        return d

    @classmethod
    def from_hf_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)} - {"qk_norm", "router_rules"}
        kw = {k: v for k, v in d.items() if k in known}  # architectures, torch_dtype, ...: ignored
        if d.get("model_type") == "qwen3_moe":  # Qwen3-MoE's names; MiniMind-3's router
            kw.update(n_routed_experts=d.get("num_experts", 128), n_shared_experts=0,
                      aux_loss_alpha=d.get("router_aux_loss_coef", 0.001), router_rules="minimind3")
            if "moe_intermediate_size" in d:  # the experts' width; this reference has no dense layers
                kw["intermediate_size"] = d["moe_intermediate_size"]
            kw.setdefault("use_moe", True)
        return cls(**kw, qk_norm=d.get("model_type") in ("qwen3", "qwen3_moe"))


# ----------------------------------------------------------------------------
# building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (C,)

    def forward(self, x):
        # MATCH: normalize in (at least) f32, cast back to x's dtype, THEN multiply by the weight.
        # x.float() in HF/MiniMind; promote_types keeps an f64 model in f64.
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def rope_cos_sin(T: int, D: int, theta: float, dtype, device=None):
    """cos, sin of shape (T, D) for positions 0..T-1, HF layout: emb = cat(freqs, freqs).
    MATCH: inv_freq = 1 / theta^(2i/D), i = 0..D/2-1, computed in f32 like HF/MiniMind (f64 for an f64
    model); angle = pos * inv_freq; the first and second halves of the head dim share a frequency."""
    cdt = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64, device=device).to(cdt) / D))  # (D/2,)
    pos = torch.arange(T, dtype=torch.int64, device=device).to(cdt)  # (T,)
    freqs = torch.outer(pos, inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    # MATCH: HF convention, halves not interleaved pairs: (x1, x2) -> (-x2, x1).
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    # x (B, heads, T, D); cos/sin (T, D) broadcast over batch and heads
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.H, self.KV, self.D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        C = cfg.hidden_size
        self.q_proj = nn.Linear(C, self.H * self.D, bias=False)  # (H*D, C)
        self.k_proj = nn.Linear(C, self.KV * self.D, bias=False)  # (KV*D, C)
        self.v_proj = nn.Linear(C, self.KV * self.D, bias=False)  # (KV*D, C)
        self.o_proj = nn.Linear(self.H * self.D, C, bias=False)  # (C, H*D)
        if cfg.qk_norm:  # MATCH: MiniMind-3's / Qwen3's q_norm, k_norm: one (D,) gain shared by all heads
            self.q_norm = RMSNorm(self.D, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.D, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D)  # (B, T, H, D)
        k = self.k_proj(x).view(B, T, self.KV, self.D)  # (B, T, KV, D)
        if self.qk_norm:  # MATCH: per head, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.transpose(1, 2)  # (B, H, T, D)
        k = k.transpose(1, 2)  # (B, KV, T, D)
        v = self.v_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)  # (B, KV, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # MATCH (GQA): query head h reads kv head h // (H/KV), i.e. each kv head repeated H/KV times
        # consecutively (repeat_interleave, not tile).
        rep = self.H // self.KV
        k = k.repeat_interleave(rep, dim=1)  # (B, H, T, D)
        v = v.repeat_interleave(rep, dim=1)  # (B, H, T, D)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.D)  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)
        att = att.masked_fill(causal, float("-inf"))
        att = F.softmax(att.to(torch.promote_types(att.dtype, torch.float32)), dim=-1).type_as(q)
        y = att @ v  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.H * self.D)  # (B, T, H*D): heads concatenated in order
        return self.o_proj(y)


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, C: int, Fdim: int):
        super().__init__()
        self.gate_proj = nn.Linear(C, Fdim, bias=False)  # (F, C)
        self.up_proj = nn.Linear(C, Fdim, bias=False)  # (F, C)
        self.down_proj = nn.Linear(Fdim, C, bias=False)  # (C, F)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    """MiniMind's router: softmax scores, top-k, renormalized weights, sequence-level aux loss."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.E, self.K = cfg.n_routed_experts, cfg.num_experts_per_tok
        self.norm_topk_prob, self.alpha, self.seq_aux = cfg.norm_topk_prob, cfg.aux_loss_alpha, cfg.seq_aux
        self.minimind3 = cfg.router_rules == "minimind3"
        self.weight = nn.Parameter(torch.empty(self.E, cfg.hidden_size))  # (E, C): HF name mlp.gate.weight
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        B, T, C = x.shape
        logits = F.linear(x.reshape(-1, C), self.weight)  # (N, E)
        scores = logits.softmax(dim=-1)  # (N, E)
        # MATCH: MiniMind calls topk(sorted=False); the order of the K picks does not change the
        # result. sorted=True here so the golden's topk_idx is in descending-score order and ties
        # resolve deterministically (the golden generator also rejects near-ties).
        topk_weight, topk_idx = torch.topk(scores, k=self.K, dim=-1, sorted=True)  # (N, K), (N, K)
        if (self.K > 1 or self.minimind3) and self.norm_topk_prob:
            # MATCH: + 1e-20 in the denominator, and the gradient flows through the renormalization.
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        aux = x.new_zeros(())
        if self.training and self.alpha > 0.0:
            idx = topk_idx.view(B, -1)  # (B, T*K)
            if self.minimind3:
                # MATCH: MiniMind-3: load = one_hot(topk_idx).mean(0), a (K, E) constant; aux = alpha * E *
                # sum(load * mean_n scores), one loss over all N tokens of the batch.
                load = F.one_hot(topk_idx, num_classes=self.E).to(x.dtype).mean(0)  # (K, E)
                aux = (load * scores.mean(0)).sum() * self.E * self.alpha
            elif self.seq_aux:
                # MATCH: ce[b, e] = (#picks of expert e in sequence b) / (T*K/E), a constant (no grad);
                # aux = alpha * mean_b sum_e ce[b, e] * mean_t scores[b, t, e]. Gradient reaches the
                # router only through the mean of the softmax scores (of all E experts, not just top-k).
                ce = torch.zeros(B, self.E, dtype=x.dtype, device=x.device)
                ce.scatter_add_(1, idx, torch.ones(B, T * self.K, dtype=x.dtype, device=x.device))
                ce = ce.div(T * self.K / self.E)
                aux = (ce * scores.view(B, T, self.E).mean(dim=1)).sum(dim=1).mean() * self.alpha
            else:
                # MiniMind's token-level variant, kept for completeness (not in the golden files).
                mask_ce = F.one_hot(topk_idx.view(-1), num_classes=self.E)
                ce = mask_ce.to(x.dtype).mean(0)
                aux = (scores.mean(0) * ce * self.E).sum() * self.alpha
        return topk_idx, topk_weight, aux, scores


class MOEFeedForward(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        C, Fd = cfg.hidden_size, cfg.intermediate_size
        self.K = cfg.num_experts_per_tok
        self.gate = MoEGate(cfg)
        self.experts = nn.ModuleList([FeedForward(C, Fd) for _ in range(cfg.n_routed_experts)])
        self.shared_experts = nn.ModuleList([FeedForward(C, Fd) for _ in range(cfg.n_shared_experts)])
        self.aux_loss = None
        self.last_routing = None  # (topk_idx, topk_weight, scores) of the last forward, detached

    def forward(self, x):
        B, T, C = x.shape
        topk_idx, topk_weight, aux, scores = self.gate(x)  # (N, K), (N, K)
        self.aux_loss = aux
        self.last_routing = (topk_idx.detach(), topk_weight.detach(), scores.detach())
        xf = x.reshape(-1, C)  # (N, C)
        # y[n, k] = expert_{idx[n,k]}(x[n]); an expert runs once on all the (token, slot) pairs routed to it.
        flat_idx = topk_idx.reshape(-1)  # (N*K,)
        xr = xf.repeat_interleave(self.K, dim=0)  # (N*K, C): row n*K + k is token n
        y = torch.zeros_like(xr)  # (N*K, C)
        for e, expert in enumerate(self.experts):
            sel = (flat_idx == e).nonzero(as_tuple=True)[0]
            if sel.numel():
                y = y.index_copy(0, sel, expert(xr[sel]))
        # MATCH: out[n] = sum_k w[n,k] * y[n,k] (k in descending score order), then + every shared expert.
        out = (y.view(-1, self.K, C) * topk_weight.unsqueeze(-1)).sum(dim=1).view(B, T, C)
        for expert in self.shared_experts:
            out = out + expert(x)
        return out


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MOEFeedForward(cfg) if cfg.use_moe else FeedForward(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)  # pre-norm residual
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)  # (V, C)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class CausalLM(nn.Module):
    """Top-level module: `model.*` + lm_head. With tie_word_embeddings the head IS embed_tokens.weight,
    so named_parameters()/state_dict keys hold no lm_head.weight (as in an HF safetensors save)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02):
        for name, p in self.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)

    def forward(self, input_ids, targets=None):
        """input_ids (B, T) int; targets (B, T) int with -100 = ignore, or None.
        Returns dict: logits (B, T, V), ce_loss, aux_loss (sum over MoE layers; 0 unless training), loss."""
        cfg = self.config
        B, T = input_ids.shape
        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = rope_cos_sin(T, cfg.head_dim, cfg.rope_theta, x.dtype, x.device)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        w_head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight  # (V, C)
        logits = F.linear(x, w_head)  # (B, T, V)
        aux = x.new_zeros(())
        for layer in self.model.layers:
            if isinstance(layer.mlp, MOEFeedForward):
                aux = aux + layer.mlp.aux_loss
        out = {"logits": logits, "aux_loss": aux, "ce_loss": None, "loss": None}
        if targets is not None:
            # MATCH: mean over the positions whose target is not -100 (NaN if all are ignored).
            ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=-100)
            out["ce_loss"], out["loss"] = ce, ce + aux
        return out


# ----------------------------------------------------------------------------
# HF-style folder: config.json + model.safetensors


def save_pretrained(model: CausalLM, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(model.config.to_hf_dict(), f, indent=2)
    tensors = {n: p.detach().float().contiguous() for n, p in model.named_parameters()}
    safetensors_io.save_file(tensors, os.path.join(path, "model.safetensors"), {"format": "pt"})


def load_pretrained(path: str, dtype=torch.float32) -> CausalLM:
    """Build the model from DIR/config.json and load DIR/model.safetensors strictly: every parameter
    must be present with its exact shape; an extra tensor is an error, except lm_head.weight in a
    tied model when it equals embed_tokens.weight (some writers save both)."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = Config.from_hf_dict(json.load(f))
    model = CausalLM(cfg).to(dtype)
    tensors = safetensors_io.load_file(os.path.join(path, "model.safetensors"))
    params = dict(model.named_parameters())
    if cfg.tie_word_embeddings and "lm_head.weight" in tensors:
        head = tensors.pop("lm_head.weight")
        emb = tensors.get("model.embed_tokens.weight")
        if emb is None or not torch.equal(head, emb):
            raise ValueError(f"load_pretrained: {path}: tied model but lm_head.weight differs from embed_tokens.weight")
    missing = sorted(set(params) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise ValueError(f"load_pretrained: {path}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {extra[:8]}{'...' if len(extra) > 8 else ''}")
    with torch.no_grad():
        for n, p in params.items():
            t = tensors[n]
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"load_pretrained: {path}: {n} has shape {list(t.shape)}, config needs {list(p.shape)}")
            p.copy_(t.to(dtype))
    return model


# ----------------------------------------------------------------------------
# CLI


def _parse_rows(s: str):
    rows = [[int(v) for v in r.split(",") if v.strip() != ""] for r in s.split(";")]
    if len({len(r) for r in rows}) != 1 or not rows[0]:
        raise SystemExit(f"minimind_ref: sequences must be non-empty and of equal length, got {s!r}")
    return rows


def _num(x):
    v = float(x)
    return None if math.isnan(v) else v


def main(argv=None):
    ap = argparse.ArgumentParser(description="MiniMind/Llama PyTorch reference")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="load DIR and print logits/loss as one JSON line")
    ev.add_argument("dir")
    ev.add_argument("--ids", required=True, help="token ids, comma separated; ';' separates sequences (B > 1)")
    ev.add_argument("--targets", help="same layout as --ids, -100 = ignore (write --targets=-100,... when it starts with a minus); "
                    "default: the next token, the last position ignored")
    ev.add_argument("--train-mode", action="store_true", help="training mode: includes the MoE aux loss")
    ev.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    ev.add_argument("--out", help="also write logits and losses to this safetensors file")
    it = sub.add_parser("init", help="write a randomly initialized checkpoint folder")
    it.add_argument("dir")
    it.add_argument("--seed", type=int, default=0)
    for f in fields(Config):
        it.add_argument("--" + f.name, type=str, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)

    if a.cmd == "init":
        kw = {}
        for f in fields(Config):
            v = getattr(a, f.name)
            if v is not None:
                kw[f.name] = json.loads(v) if v not in ("silu", "softmax") else v
        torch.manual_seed(a.seed)
        model = CausalLM(Config(**kw))
        save_pretrained(model, a.dir)
        print(json.dumps({"dir": a.dir, "params": sum(p.numel() for p in model.parameters())}))
        return

    dtype = torch.float64 if a.dtype == "f64" else torch.float32
    model = load_pretrained(a.dir, dtype)
    model.train(a.train_mode)
    ids = torch.tensor(_parse_rows(a.ids), dtype=torch.long)
    if a.targets:
        tgt = torch.tensor(_parse_rows(a.targets), dtype=torch.long)
        if tgt.shape != ids.shape:
            raise SystemExit(f"minimind_ref: --targets shape {list(tgt.shape)} != --ids shape {list(ids.shape)}")
    else:
        tgt = torch.full_like(ids, -100)
        tgt[:, :-1] = ids[:, 1:]
    if int(ids.max()) >= model.config.vocab_size or int(ids.min()) < 0:
        raise SystemExit(f"minimind_ref: token id out of range [0, {model.config.vocab_size})")
    with torch.no_grad():
        out = model(ids, tgt)
    res = {"B": ids.shape[0], "T": ids.shape[1], "V": model.config.vocab_size,
           "ce_loss": _num(out["ce_loss"]), "aux_loss": _num(out["aux_loss"]), "loss": _num(out["loss"]),
           "logits": out["logits"].double().tolist()}
    if a.out:
        f32 = lambda t: t.detach().float().reshape(-1)  # noqa: E731
        safetensors_io.save_file({"logits": out["logits"].detach().float().contiguous(), "ce_loss": f32(out["ce_loss"]),
                                  "aux_loss": f32(out["aux_loss"]), "loss": f32(out["loss"])}, a.out)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
