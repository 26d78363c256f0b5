#!/usr/bin/env bash
# benchmarks/gpu/check.sh: issue 17's checks on a GPU machine, in one run of well under 8 minutes.
#
#   bash benchmarks/gpu/check.sh build-gpu/bundle.tar.xz   (from the repository root, carrying build-gpu/bundle.tar.xz,
#                                                          which prepare.sh made here)
#
# 1. every CUDA test program (op by op against the CPU, the model against PyTorch's golden files, the
#    trainer on the GPU), then compute-sanitizer memcheck on the op tests and racecheck on attention;
# 2. tiny pretraining, 200 steps in f32 from the same initialization on the CPU and on the GPU: the loss
#    curves step by step (tolerances below); a GPU run killed after its step-100 checkpoint and resumed on
#    the GPU against the uninterrupted GPU run (bit for bit when two uninterrupted GPU runs agree bit for
#    bit; the embedding backward's atomics may prevent that); the GPU's step-100 checkpoint resumed on the
#    CPU, and the CPU's on the GPU;
# 3. a few steps of sft, lora and dpo on both devices from the same model;
# 4. timing: tokens/s and peak device memory of the tiny and MiniMind2-Small presets.
# Writes under $OUT: check.log (everything), summary.txt (the table it prints last), nvidia-smi.txt and
# metrics.tgz (every run's metrics.jsonl).
#
# Tolerances, and why: the first step is one forward and backward from identical weights, so only the
# order of floating-point reductions differs (cuBLAS and our kernels against the CPU's): relative 1e-5. Over
# 200 steps each update starts from slightly different weights and the gap grows: relative 2e-2 on any
# step's loss, 1e-2 on the last validation loss.
set -uo pipefail
bundle=${1:-build-gpu/bundle.tar.xz}
if [[ -f "$bundle" ]]; then  # the compressed bundle that travelled: unpack it beside /tmp
  mkdir -p /tmp/mt-bundle && tar xJf "$bundle" -C /tmp/mt-bundle && bundle=/tmp/mt-bundle/bundle
fi
B=$(cd "$bundle" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-/tmp/minitrain-gpu-check}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/mt-gpu.XXXX)
log="$OUT/check.log"
: >"$log"
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH="$B/lib:/usr/local/cuda/lib64:${cublas_dir}:${LD_LIBRARY_PATH:-}"
export MINITRAIN_GOLDEN_DIR="$PWD/tests/golden"
export OMP_WAIT_POLICY=PASSIVE
summary=()
failed=0

# step NAME COMMAND...: runs it with its output in the log, records PASS/FAIL and the seconds.
step() {
  local name=$1; shift
  local t0=$SECONDS rc
  echo "=== $name: $*" >>"$log"
  "$@" >>"$log" 2>&1
  rc=$?
  if (( rc == 0 )); then summary+=("PASS  $(printf '%4d' $((SECONDS - t0)))s  $name")
  else summary+=("FAIL  $(printf '%4d' $((SECONDS - t0)))s  $name (exit $rc)"); failed=1; fi
  return $rc
}
note() { summary+=("      $*"); echo "$*" >>"$log"; }

# ---- 0. the machine --------------------------------------------------------------------------------------
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
missing=$(for p in "$B"/pretrain "$B"/test_cuda_ops; do ldd "$p"; done | grep "not found" | sort -u)
if [[ -n "$missing" ]]; then note "missing shared libraries: $missing"; failed=1; fi

# ---- 1. CUDA tests, sanitizers -----------------------------------------------------------------------------
for t in compile_check ops model nccl_compile_check; do
  step "test_cuda_$t" timeout 240 "$B/test_cuda_$t" --duration=true
done
grep -h "skipped" "$log" | head -3 | while read -r l; do note "$l"; done
if command -v compute-sanitizer >/dev/null; then
  step "memcheck test_cuda_ops" timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/test_cuda_ops"
  step "racecheck attention" timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 "$B/test_cuda_ops" \
       --test-case='*attention*'
else
  note "compute-sanitizer not on PATH: memcheck and racecheck not run"
fi

# ---- 2. tiny pretraining: CPU against GPU, resume both ways -------------------------------------------------
cd "$W"
step "synthetic_shard" "$B/synthetic_shard" --out_dir data --train_tokens 2000000 --val_tokens 65536
common=(--preset tiny --vocab_size 256 --train_data data/train.bin --val_data data/val.bin --batch_size 8
        --max_seq_len 128 --max_steps 200 --learning_rate 1e-3 --log_interval 1 --eval_interval 50
        --eval_batches 8 --save_interval 50 --keep_last 0 --sample_interval 0 --threads 16)
step "pretrain 200 steps, CPU" "$B/pretrain" "${common[@]}" --device cpu --out_dir cpu
step "pretrain 200 steps, GPU" "$B/pretrain" "${common[@]}" --device cuda --out_dir gpu
step "CPU vs GPU loss curves" python3 "$here/compare_runs.py" cpu/metrics.jsonl gpu/metrics.jsonl --first 1e-5 --all 2e-2 \
     --name "cpu-vs-gpu"
tail -1 "$log" | while read -r l; do note "$l"; done

# Killed right after the step-100 checkpoint is in place (the second save), then resumed.
MINITRAIN_CRASH_AT=save.renamed:2 "$B/pretrain" "${common[@]}" --device cuda --out_dir gpu_resumed >>"$log" 2>&1
step "GPU resume after a kill at step 100" "$B/pretrain" "${common[@]}" --device cuda --out_dir gpu_resumed --resume 1
# Bit for bit only if the GPU repeats itself: embedding_backward adds repeated ids' rows with atomics, in
# an order the scheduler picks. So a second uninterrupted run decides which comparison is fair.
step "pretrain 200 steps, GPU again" "$B/pretrain" "${common[@]}" --device cuda --out_dir gpu_again
if python3 "$here/compare_runs.py" gpu_again/metrics.jsonl gpu/metrics.jsonl --exact --name "gpu-repeat" >>"$log" 2>&1; then
  note "the GPU run repeats bit for bit"
  step "GPU resumed == GPU uninterrupted" python3 "$here/compare_runs.py" gpu_resumed/metrics.jsonl gpu/metrics.jsonl \
       --exact --from-step 101 --name "gpu-resume"
else
  note "$(tail -1 "$log") -- the GPU run does not repeat bit for bit (atomics)"
  step "GPU resumed ~ GPU uninterrupted" python3 "$here/compare_runs.py" gpu_resumed/metrics.jsonl gpu/metrics.jsonl \
       --all 2e-2 --from-step 101 --name "gpu-resume"
fi
tail -1 "$log" | while read -r l; do note "$l"; done

mkdir -p cpu_from_gpu/checkpoints gpu_from_cpu/checkpoints
cp -r gpu/checkpoints/step_00000100 cpu_from_gpu/checkpoints/
cp -r cpu/checkpoints/step_00000100 gpu_from_cpu/checkpoints/
step "GPU checkpoint resumed on the CPU" "$B/pretrain" "${common[@]}" --device cpu --out_dir cpu_from_gpu --resume 1 \
     --allow_changed_resume 1
step "  ... tracks the GPU run" python3 "$here/compare_runs.py" cpu_from_gpu/metrics.jsonl gpu/metrics.jsonl --all 2e-2 \
     --from-step 101 --name "gpu-ckpt-on-cpu"
step "CPU checkpoint resumed on the GPU" "$B/pretrain" "${common[@]}" --device cuda --out_dir gpu_from_cpu --resume 1 \
     --allow_changed_resume 1
step "  ... tracks the CPU run" python3 "$here/compare_runs.py" gpu_from_cpu/metrics.jsonl cpu/metrics.jsonl --all 2e-2 \
     --from-step 101 --name "cpu-ckpt-on-gpu"
step "eval on the GPU == eval on the CPU" bash -c "
  a=\$('$B/eval' --checkpoint gpu/final --data data/val.bin --batch_size 8 --max_seq_len 128 --device cuda | tail -1)
  b=\$('$B/eval' --checkpoint gpu/final --data data/val.bin --batch_size 8 --max_seq_len 128 --device cpu | tail -1)
  echo \"gpu: \$a\"; echo \"cpu: \$b\"; python3 - \"\$a\" \"\$b\" <<'PY'
import sys
la, lb = (float(s.split()[1]) for s in sys.argv[1:3])
print('rel diff', abs(la - lb) / lb); sys.exit(0 if abs(la - lb) / lb < 1e-5 else 1)
PY"

# ---- 3. sft, lora, dpo: a few steps on both devices ------------------------------------------------------------
step "demo data" "$B/finetune_demo" --data_only 1 --out_dir demo
step "tokenizer" "$B/tokenizer" train --input demo/data/pretrain_train.jsonl --vocab_size 320 --output tok.json
step "prepare_data" "$B/prepare_data" --input demo/data/pretrain_train.jsonl --tokenizer tok.json --output_dir shards \
     --val_fraction 0.05
step "pretrain for the stages (GPU)" "$B/pretrain" --preset tiny --data_path "shards/train_*.bin" --vocab_size 320 \
     --tokenizer tok.json --max_steps 100 --learning_rate 3e-3 --batch_size 16 --max_seq_len 48 --out_dir pre \
     --device cuda --log_interval 20
small=(--batch_size 8 --max_seq_len 48 --log_interval 1 --eval_interval 0 --save_interval 0 --sample_interval 0 --threads 16)
for dev in cpu cuda; do
  step "sft 10 steps ($dev)" "$B/sft" --data_path demo/data/sft_train.jsonl --from_weight pre/final --max_steps 10 \
       --learning_rate 2e-3 --out_dir "sft_$dev" --device $dev "${small[@]}"
  step "lora 10 steps ($dev)" "$B/lora" --data_path demo/data/sft_train.jsonl --from_weight pre/final --max_steps 10 \
       --learning_rate 2e-3 --lora_targets attention_mlp --out_dir "lora_$dev" --device $dev "${small[@]}"
  step "dpo 10 steps ($dev)" "$B/dpo" --data_path demo/data/dpo_train.jsonl --from_weight pre/final --max_steps 10 \
       --learning_rate 1e-5 --out_dir "dpo_$dev" --device $dev "${small[@]}"
done
for s in sft lora dpo; do
  step "$s: CPU vs GPU" python3 "$here/compare_runs.py" "${s}_cpu/metrics.jsonl" "${s}_cuda/metrics.jsonl" --first 1e-4 \
       --all 1e-2 --name "$s"
  tail -1 "$log" | while read -r l; do note "$l"; done
done
step "chat on the GPU" bash -c "printf '3 x 4 =\n' > p.txt && '$B/chat' --checkpoint pre/final --tokenizer tok.json \
  --prompts p.txt --temperature 0 --max_new_tokens 8 --device cuda"

# ---- 3b. transformers loads our folders (issue 14): Llama (pre/final), Qwen3 and Qwen3-MoE (tiny, CPU) ---------
for preset in test-qknorm test-moe3; do
  step "pretrain $preset (CPU, for transformers)" "$B/pretrain" --preset $preset --data_path "shards/train_*.bin" \
       --vocab_size 320 --tokenizer tok.json --max_steps 60 --learning_rate 3e-3 --batch_size 16 --max_seq_len 48 \
       --out_dir "hf_$preset" --device cpu --log_interval 20 --save_interval 60 --threads 16
done
step "transformers loads and matches our folders" python3 "$here/../../tests/hf/transformers_check.py" \
     --generate "$B/generate" pre/final hf_test-qknorm/final hf_test-moe3/final hf_test-moe3/checkpoints/step_00000060

# ---- 4. timing -----------------------------------------------------------------------------------------------
# tokens/s: the median of the progress lines after the first 10 steps; peak memory: nvidia-smi every 100 ms.
time_run() {  # NAME ARGS...
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$W/mem_$name.txt" 2>/dev/null &
  local smi=$!
  step "timing $name" "$B/pretrain" "$@" --device cuda --out_dir "time_$name" --log_interval 1 --eval_interval 0 \
       --save_interval 0 --sample_interval 0
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local tps peak
  tps=$(python3 -c "
import json, statistics
r = [json.loads(l) for l in open('time_$name/metrics.jsonl')]
t = [x['tokens_per_s'] for x in r if 'tokens_per_s' in x and x['step'] > 10]
print(f'{statistics.median(t):,.0f}' if t else 'n/a')")
  peak=$(sort -n "$W/mem_$name.txt" | tail -1)
  note "$name: $tps tokens/s (median), peak device memory ${peak:-?} MiB (whole GPU, nvidia-smi)"
}
"$B/synthetic_shard" --out_dir data_big --train_tokens 4000000 --val_tokens 65536 >>"$log" 2>&1
time_run tiny --preset tiny --vocab_size 256 --train_data data_big/train.bin --batch_size 32 --max_seq_len 256 --max_steps 40
# synthetic ids are below 256, which any vocabulary holds: MiniMind2-Small keeps its 6400.
time_run minimind2-small --preset minimind2-small --vocab_size 6400 --train_data data_big/train.bin --batch_size 64 \
         --max_seq_len 512 --max_steps 30

# ---- results ----------------------------------------------------------------------------------------------------
# Every run's metrics.jsonl in one archive ($OUT brings back at most 8 files).
find . -name metrics.jsonl -print0 | tar czf "$OUT/metrics.tgz" --null -T -
{ echo "minitrain GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"; printf '%s\n' "${summary[@]}"; } | tee "$OUT/summary.txt"
exit $failed
