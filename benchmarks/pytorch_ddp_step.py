#!/usr/bin/python3
"""Goal: the PyTorch baseline for minitrain's data-parallel CPU training step (benchmarks/dist_step.cpp):
the same MiniMind/Llama model (tests/golden/minimind_ref.py) in fp32 under DistributedDataParallel with
the gloo backend, N processes x M threads, timed over full steps (forward, backward with DDP's bucketed
all-reduce, grad clip, AdamW step, zero_grad), printed by rank 0 as one JSON line.

    /usr/bin/python3 benchmarks/pytorch_ddp_step.py --nproc 2 --threads 1 --batch 4 --seq 512

  * --batch is the global batch: each of the --nproc processes trains batch / nproc sequences (its own
    fixed random draw; no data loading is timed). --nproc 1 runs DDP in this process (world size 1).
  * Processes start with torch.multiprocessing (spawn) and meet through init_method file://.
  * The all-reduce is timed with a DDP communication hook that does what the default hook does
    (divide by the world size, all-reduce the bucket asynchronously) and records when each bucket's
    all-reduce was launched and when it completed. Per step: "comm_ms" is the union of those intervals
    (time with an all-reduce in flight; DDP overlaps it with the rest of backward), "exposed_ms" the time
    from the last bucket's launch to the end of backward() (what the step waits for after its
    gradients are complete).
  * Use Debian's torch (/usr/bin/python3, python3-torch 1.13, OpenBLAS-OpenMP; see
    pytorch_train_step.py). On this machine OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set and hold
    OpenBLAS to AVX2 kernels: bench_dist_step runs this script with both unset (env -u).

Dimension legend: B = batch, T = sequence length, C = hidden, V = vocab, W = world size.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch DDP (gloo) fp32 training-step baseline on the CPU")
    ap.add_argument("--nproc", type=int, default=2, help="processes (world size)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    ap.add_argument("--batch", type=int, default=4, help="global batch B (split over the processes)")
    ap.add_argument("--seq", type=int, default=512, help="T")
    ap.add_argument("--vocab", type=int, default=6400, help="V")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max norm; 0 = no clipping")
    ap.add_argument("--bucket_cap_mb", type=float, default=25, help="DDP's bucket size (its default: 25)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.nproc < 1 or a.batch % a.nproc:
        ap.error(f"--batch {a.batch} does not split over --nproc {a.nproc}")
    return a


def loaded_blas():
    """The BLAS shared objects actually mapped into this process."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "blas" in line.lower()})


def union_length(intervals):
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def worker(rank, a, init_file, load_at_start):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
    from minimind_ref import CausalLM, Config

    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=a.nproc)
    W, b, T = a.nproc, a.batch // a.nproc, a.seq
    torch.manual_seed(a.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    cfg = Config(vocab_size=a.vocab, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                 num_key_value_heads=2, max_position_embeddings=max(T, 512))  # MiniMind2-Small
    model = CausalLM(cfg)
    model.train()
    named = list(model.named_parameters())
    n_params = sum(q.numel() for _, q in named)

    events = []  # (launch, done, bytes) per bucket, this step

    def timed_allreduce(state, bucket):
        buf = bucket.buffer()
        t0 = time.perf_counter()
        nbytes = buf.numel() * buf.element_size()
        buf.div_(W)
        fut = dist.all_reduce(buf, async_op=True).get_future()

        def done(f):
            events.append((t0, time.perf_counter(), nbytes))
            return f.value()[0]

        return fut.then(done)

    ddp = DDP(model, bucket_cap_mb=a.bucket_cap_mb)
    ddp.register_comm_hook(None, timed_allreduce)
    opt = torch.optim.AdamW([{"params": [q for _, q in named if q.dim() >= 2], "weight_decay": 0.1},
                             {"params": [q for _, q in named if q.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(a.seed + 1 + rank)
    ids = torch.randint(0, cfg.vocab_size, (b, T + 1), generator=g)
    x, y = ids[:, :T].contiguous(), ids[:, 1:].contiguous()  # (b, T), (b, T)

    times, comm, exposed, losses = [], [], [], []
    buckets = reduced = 0
    for step in range(a.warmup + a.steps):
        events.clear()
        t0 = time.perf_counter()
        loss = ddp(x, y)["loss"]
        loss.backward()  # returns when every bucket's all-reduce has completed
        t_back = time.perf_counter()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_([q for _, q in named], a.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if step >= a.warmup:
            times.append(dt)
            comm.append(union_length([(s, e) for s, e, _ in events]))
            exposed.append(max(0.0, t_back - max(s for s, _, _ in events)) if events else 0.0)
            buckets, reduced = len(events), sum(n for _, _, n in events)

    K = 5
    slots = torch.zeros(W * K, dtype=torch.float64)
    slots[rank * K:(rank + 1) * K] = torch.tensor([
        statistics.median(times), statistics.median(comm), statistics.median(exposed),
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, float(reduced)], dtype=torch.float64)
    dist.all_reduce(slots)
    dist.barrier()
    if rank == 0:
        s = slots.tolist()
        step_s, comm_s = s[0], s[1]
        print(json.dumps({
            "impl": "pytorch", "backend": "gloo", "procs": W, "threads": a.threads, "zero_stage": 0,
            "B": a.batch, "T": T, "V": cfg.vocab_size, "params": n_params,
            "steps": a.steps, "warmup": a.warmup, "clip": a.clip, "bucket_cap_mb": a.bucket_cap_mb,
            "tokens_per_s": round(a.batch * T / step_s, 1), "step_ms": round(step_s * 1e3, 2),
            "comm_ms": round(comm_s * 1e3, 2), "exposed_ms": round(s[2] * 1e3, 2),
            "comm_share": round(comm_s / step_s, 4), "buckets": buckets, "reduced_bytes_per_step": int(s[4]),
            "peak_rss_mib": [round(s[r * K + 3], 1) for r in range(W)],
            "step_ms_per_rank": [round(s[r * K] * 1e3, 1) for r in range(W)],
            "steps_ms_rank0": [round(t * 1e3, 1) for t in times],
            "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
            "openblas_l2_size": os.environ.get("OPENBLAS_L2_SIZE", "unset"),
            "loadavg": load_at_start, "blas": loaded_blas(), "torch": torch.__version__,
        }), flush=True)
    dist.destroy_process_group()


def main():
    a = parse_args()
    with open("/proc/loadavg") as f:
        load_at_start = float(f.read().split()[0])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # must precede torch's import (children inherit)
        os.environ[var] = str(a.threads)
    fd, init_file = tempfile.mkstemp(prefix="pytorch_ddp_step.")
    os.close(fd)
    os.unlink(init_file)  # the file store creates it; a stale one would hold an old rendezvous
    try:
        if a.nproc == 1:
            worker(0, a, init_file, load_at_start)
        else:
            import torch.multiprocessing as mp
            mp.spawn(worker, args=(a, init_file, load_at_start), nprocs=a.nproc, join=True)
    finally:
        if os.path.exists(init_file):
            os.unlink(init_file)


if __name__ == "__main__":
    main()
