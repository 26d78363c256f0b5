#!/usr/bin/python3
"""Goal: the PyTorch baseline for minitrain's CPU training step: the same MiniMind/Llama model
(tests/golden/minimind_ref.py) in fp32 (or under CPU autocast bf16 with --autocast bf16), timed over full steps (forward, backward, grad clip, AdamW
step, zero_grad), printed as one JSON line: tokens/s (median over the timed steps) and peak RSS.

    /usr/bin/python3 benchmarks/pytorch_train_step.py --preset minimind2-small --threads 2

Fair comparison notes:
  * Use Debian's torch (/usr/bin/python3, python3-torch 1.13). It has no MKL: fp32 matmuls go to
    whatever libblas.so.3 the dynamic loader finds. Reference (netlib) BLAS is ~15x slower than
    OpenBLAS, so make sure OpenBLAS-OpenMP (package libopenblas0-openmp) is the one loaded. On this
    machine the Debian alternative libblas.so.3 already points to it; to force it regardless, run with
        LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp
    The JSON line reports the BLAS library actually mapped into the process ("blas") and a measured
    1024^3 sgemm rate ("sgemm_gflops"); torch.__config__.show() only says BLAS_INFO=generic.
    Measured here (2 threads, AMD EPYC, busy machine): OpenBLAS-OpenMP ~25-34 GFLOP/s, netlib ~2.
  * --threads sets torch's intra-op threads and OMP/OpenBLAS threads (set before torch loads).
  * Every step uses the same random batch: no data loading is timed. Timing is wall clock per step.
  * The machine is shared: compare numbers taken back to back, and look at "steps_ms" for noise and
    "loadavg" (1-minute load at start). On an oversubscribed machine libgomp's default spin-waiting
    is disastrous: tiny at 2 threads with load ~9 on 2 cores took 5.5 s/step spinning versus 0.52 s
    with OMP_WAIT_POLICY=PASSIVE (0.42 s with 1 thread). Give both implementations the same
    OMP_WAIT_POLICY (it is reported as "omp_wait_policy"), and prefer a quiet machine.

Dimension legend: B = batch, T = sequence length, C = hidden, V = vocab, L = layers.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

PRESETS = {
    # name: model config (HF keys) + default batch B and sequence T
    "tiny": dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=512, B=8, T=128),
    "minimind2-small": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_key_value_heads=2,
                            vocab_size=6400, B=4, T=512),
    "minimind2-small-moe": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_key_value_heads=2,
                                vocab_size=6400, use_moe=True, n_routed_experts=4, num_experts_per_tok=2,
                                n_shared_experts=1, B=4, T=512),
    # GPT-2 small's size as a Llama-style model: SwiGLU F=2048 has GPT-2's 4.7M MLP weights per layer.
    "gpt2-124m": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, num_key_value_heads=12,
                      vocab_size=50304, B=4, T=512),
}


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch fp32 training-step baseline (tokens/s, peak RSS)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--batch", type=int, help="B (default: the preset's)")
    ap.add_argument("--seq", type=int, help="T (default: the preset's)")
    ap.add_argument("--vocab", type=int, help="V (default: the preset's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max norm; 0 = no clipping")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--autocast", choices=["off", "bf16"], default="off",
                    help="bf16: forward under torch.autocast('cpu', torch.bfloat16), as MiniMind trains (fp32 weights)")
    return ap.parse_args()


def loaded_blas():
    """The BLAS/LAPACK shared objects actually mapped into this process."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.lower() or "lapack" in line.lower()}
    return sorted(os.path.basename(p) if "openblas" not in p else p for p in libs)


def sgemm_gflops(torch, n=1024, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def sgemm_error(torch, n=512):
    """max |fp32 product - f64 product| / max |f64 product|: the BLAS that runs (whatever OPENBLAS_CORETYPE
    picks) must give right answers before its speed counts."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    want = a.double() @ b.double()
    return float((a @ b).double().sub(want).abs().max() / want.abs().max())


def main():
    a = parse_args()
    with open("/proc/loadavg") as f:
        load_at_start = float(f.read().split()[0])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # must precede torch's import
        os.environ[var] = str(a.threads)
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
    from minimind_ref import CausalLM, Config

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    p = dict(PRESETS[a.preset])
    B, T = a.batch or p.pop("B"), a.seq or p.pop("T")
    p.pop("B", None), p.pop("T", None)
    if a.vocab:
        p["vocab_size"] = a.vocab
    cfg = Config(max_position_embeddings=max(T, 512), **p)
    model = CausalLM(cfg)
    model.train()
    named = list(model.named_parameters())
    n_params = sum(q.numel() for _, q in named)
    opt = torch.optim.AdamW([{"params": [q for _, q in named if q.dim() >= 2], "weight_decay": 0.1},
                             {"params": [q for _, q in named if q.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    ids = torch.randint(0, cfg.vocab_size, (B, T + 1))
    x, y = ids[:, :T].contiguous(), ids[:, 1:].contiguous()  # (B, T), (B, T)
    gflops = sgemm_gflops(torch)
    gemm_err = sgemm_error(torch)
    if gemm_err > 1e-4:
        sys.exit(f"pytorch_train_step: the fp32 matmul is wrong (relative error {gemm_err:.2e} against f64)")
    import contextlib
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.autocast == "bf16" else contextlib.nullcontext

    times, losses = [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with autocast():
            loss = model(x, y)["loss"]
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_([q for _, q in named], a.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if step >= a.warmup:
            times.append(dt)

    med = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "preset": a.preset, "params": n_params, "B": B, "T": T, "V": cfg.vocab_size,
        "L": cfg.num_hidden_layers, "C": cfg.hidden_size, "F": cfg.intermediate_size, "moe": cfg.use_moe,
        "threads": a.threads, "steps": a.steps, "warmup": a.warmup, "clip": a.clip,
        "tokens_per_s": round(B * T / med, 1), "step_ms_median": round(med * 1e3, 2),
        "steps_ms": [round(t * 1e3, 1) for t in times],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "loadavg": load_at_start, "sgemm_gflops": round(gflops, 1), "sgemm_rel_err_vs_f64": gemm_err,
        "blas": loaded_blas(), "torch": torch.__version__, "autocast": a.autocast,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "openblas_l2_size": os.environ.get("OPENBLAS_L2_SIZE", "unset"),
    }))


if __name__ == "__main__":
    main()
