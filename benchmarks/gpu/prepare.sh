#!/usr/bin/env bash
# benchmarks/gpu/prepare.sh: builds, on this (CPU) machine, everything benchmarks/gpu/check.sh runs on a GPU
# machine, into one folder small enough to travel with the working tree (the device tool's `carry`):
#
#   bash benchmarks/gpu/prepare.sh     -> build-gpu/bundle.tar.xz
#   then, through the device tool:     bash benchmarks/gpu/check.sh build-gpu/bundle.tar.xz
#                                       (carry: build-gpu/bundle.tar.xz)
#
# The GPU machine is another image: it has the NVIDIA driver, CUDA 13 (cudart, cuBLAS) and Python with
# PyTorch, but not Debian's libraries. So the bundle holds stripped programs built for sm_90 without
# -march=native (the GPU host's CPU is not this one) and without MPI (one process), plus the few shared
# libraries they need that such an image may lack (PCRE2, OpenMP's runtime). The CUDA libraries are the
# machine's own (cuBLAS alone is larger than what may travel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=${BUILD:-build-gpu}
presets=${PRESETS:-tiny;minimind2-small}
targets=(test_cuda_ops test_cuda_model test_cuda_compile_check test_cuda_nccl_compile_check
         pretrain sft lora dpo eval generate chat synthetic_shard tokenizer prepare_data finetune_demo)

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMINITRAIN_CUDA=ON -DMINITRAIN_MPI=OFF -DMINITRAIN_NATIVE=OFF \
      -DMINITRAIN_CUDA_PRESETS="$presets" -DCMAKE_CUDA_ARCHITECTURES=90 -DMINITRAIN_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target "${targets[@]}"

bundle="$build/bundle"
rm -rf "$bundle" && mkdir -p "$bundle/lib"
for t in "${targets[@]}"; do
  cp "$build/$t" "$bundle/$t" && strip "$bundle/$t"
done
# The shared libraries outside glibc and CUDA that the programs load.
for t in "${targets[@]}"; do ldd "$bundle/$t"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -E 'libpcre2|libgomp' | while read -r so; do cp -L "$so" "$bundle/lib/"; done
# Programs with two backends' code are large (the carry limit is 64 MiB with the working tree): xz them.
tar cJf "$build/bundle.tar.xz" -C "$build" bundle
du -sh "$bundle" "$build/bundle.tar.xz"
size=$(du -sm "$build/bundle.tar.xz" | cut -f1)
if (( size > 56 )); then
  echo "prepare.sh: the bundle is ${size} MiB compressed; with the working tree it must stay under 64 MiB" >&2
  exit 1
fi
echo "prepare.sh: ready. On the GPU machine: bash benchmarks/gpu/check.sh $build/bundle.tar.xz (carry: $build/bundle.tar.xz)"
