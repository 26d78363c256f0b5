# tests/examples_e2e.cmake: the example programs end to end, as a user runs them (CTest: examples_e2e).
#
#   synthetic_shard -> pretrain 20 steps (checkpoints at 10 and 20) -> pretrain --resume to step 30
#   -> eval on the validation shard (must equal pretrain's last "val loss") -> generate from final/ and
#   from a checkpoint folder
#
# plus, for every program, --help (exit 0, usage on stdout) and an unknown flag (exit 1, "error: unknown
# flag" on stderr), --device cuda (trains on a GPU where there is one, else says why not), and the errors a user meets first (a run folder given as a model folder, a config.json
# no preset matches, a vocabulary that disagrees with the model folder).
#
# Run by CTest as: cmake -DSYNTHETIC_SHARD=<path> -DPRETRAIN=<path> -DEVAL=<path> -DGENERATE=<path>
#                        -DDISTILL=<path> -DWORK_DIR=<scratch folder> -DHAS_CUDA=ON|OFF -DCUDA_PROGRAMS=1|0
#                        -P tests/examples_e2e.cmake
cmake_minimum_required(VERSION 3.25)

foreach(var SYNTHETIC_SHARD PRETRAIN EVAL GENERATE DISTILL WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "examples_e2e: pass -D${var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

include("${CMAKE_CURRENT_LIST_DIR}/support/e2e.cmake")  # run(), expect()

# expect_ids(<name> <text> <count>): the text is one line of `count` token ids below 256.
function(expect_ids name text count)
  expect("${name}" "${text}" "^[0-9]+( [0-9]+)*\n$")
  string(REGEX MATCHALL "[0-9]+" ids "${text}")
  list(LENGTH ids n)
  if(NOT n EQUAL count)
    message(FATAL_ERROR "${name}: expected ${count} token ids, got ${n}: ${text}")
  endif()
  foreach(id ${ids})
    if(id GREATER_EQUAL 256)
      message(FATAL_ERROR "${name}: token ${id} is outside the vocabulary of 256")
    endif()
  endforeach()
endfunction()

function(expect_file name path)
  if(NOT EXISTS "${WORK_DIR}/${path}")
    message(FATAL_ERROR "${name}: ${path} was not written")
  endif()
endfunction()

# ---- every program: --help and an unknown flag ---------------------------------------------------------

foreach(prog SYNTHETIC_SHARD PRETRAIN EVAL GENERATE DISTILL)
  get_filename_component(pname "${${prog}}" NAME_WE)
  run("${pname} --help" 0 "${${prog}}" --help)
  expect("${pname} --help" "${OUT}" "^${pname}: " "Usage: ${pname}" "--help")
  run("${pname} unknown flag" 1 "${${prog}}" --no_such_flag 1)
  expect("${pname} unknown flag" "${ERR}" "^error: unknown flag --no_such_flag \\(see --help\\)")
endforeach()
run("pretrain bad value" 1 "${PRETRAIN}" --batch_size abc)
expect("pretrain bad value" "${ERR}" "error: --batch_size: expected an integer, got 'abc'")

# ---- data ----------------------------------------------------------------------------------------------

run("synthetic_shard" 0 "${SYNTHETIC_SHARD}" --out_dir data --train_tokens 100000 --val_tokens 10000)
expect_file("synthetic_shard" data/train.bin)
expect_file("synthetic_shard" data/val.bin.meta.json)

# ---- pretrain, resume ----------------------------------------------------------------------------------

set(common --train_data data/train.bin --val_data data/val.bin --batch_size 8 --max_seq_len 64
           --learning_rate 3e-3 --eval_interval 10 --save_interval 10 --log_interval 5 --out_dir out --threads 2)
run("pretrain 20 steps" 0 "${PRETRAIN}" --preset test --vocab_size 256 --max_steps 20 ${common})
expect("pretrain 20 steps" "${OUT}" "pretrain: preset test" "step +1/20 \\| loss" "step +20/20 \\| loss"
       "eval step 10 \\| val loss [0-9.]+ \\| ppl [0-9.]+ \\| bpb" "eval step 20 \\| val loss [0-9.]+")
string(REGEX MATCH "eval step 20 \\| val loss ([0-9.]+)" _ "${OUT}")
set(loss20 "${CMAKE_MATCH_1}")
if(loss20 GREATER_EQUAL 5.0)  # uniform over 256 tokens is ln 256 = 5.55
  message(FATAL_ERROR "pretrain 20 steps: val loss ${loss20} after 20 steps: the model did not learn")
endif()
foreach(f out/checkpoints/step_00000010/training_state.safetensors out/checkpoints/step_00000020/model.safetensors
          out/final/config.json out/final/model.safetensors out/metrics.jsonl)
  expect_file("pretrain 20 steps" ${f})
endforeach()

# No --preset and no --vocab_size: both come from the checkpoint's config.json.
run("pretrain --resume" 0 "${PRETRAIN}" --resume --max_steps 30 ${common})
expect("pretrain --resume" "${OUT}" "preset test \\(from out/checkpoints/step_00000020/config.json\\)"
       "resumed from out/checkpoints/step_00000020 at step 20/30" "step +25/30" "eval step 30 \\| val loss [0-9.]+")
string(REGEX MATCH "eval step 30 \\| val loss ([0-9.]+)" _ "${OUT}")
set(loss30 "${CMAKE_MATCH_1}")
if(OUT MATCHES "step +(1|5|10|20)/30 \\| loss")
  message(FATAL_ERROR "pretrain --resume: steps before 20 were run again:\n${OUT}")
endif()
expect_file("pretrain --resume" out/checkpoints/step_00000030/model.safetensors)

# ---- eval: the same batches as pretrain's evaluation, so the same loss ---------------------------------

run("eval" 0 "${EVAL}" --checkpoint out/final --data data/val.bin --batch_size 8 --max_seq_len 64 --threads 2)
expect("eval" "${OUT}" "eval: out/final \\(preset test\\)" "loss ([0-9.]+) \\| ppl [0-9.]+ \\| bpb [0-9.]+")
string(REGEX MATCH "loss ([0-9.]+) \\|" _ "${OUT}")
if(NOT CMAKE_MATCH_1 STREQUAL loss30)
  message(FATAL_ERROR "eval: loss ${CMAKE_MATCH_1}, but pretrain's last evaluation said ${loss30}")
endif()
# --dtype bf16 (core/precision.hpp): the same batches with bf16 products. The loss within 1% of f32's (bf16 keeps 8
# significant bits, and the mean over 9728 tokens averages the rounding errors out: 3.0841 against 3.0840 when
# written), and the program must say that its products ran in bf16, reading the bf16 copy of the weights (the
# counter in backend/cpu/gemm.hpp: a silent f32 run prints "precision f32" and counts nothing).
run("eval --dtype bf16" 0 "${EVAL}" --checkpoint out/final --data data/val.bin --batch_size 8 --max_seq_len 64 --threads 2
    --dtype bf16)
expect("eval --dtype bf16" "${OUT}" "eval: precision bf16: [1-9][0-9]* matrix products in bf16 \\([1-9][0-9]* of them read the bf16 copy")
string(REGEX MATCH "loss ([0-9.]+) \\|" _ "${OUT}")
set(loss_bf16 "${CMAKE_MATCH_1}")
# cmake's math() is integer-only: compare the 4-decimal losses in units of 1e-4
string(REPLACE "." "" l32 "${loss30}")
string(REPLACE "." "" l16 "${loss_bf16}")
math(EXPR gap "${l16} - ${l32}")
if(gap LESS 0)
  math(EXPR gap "0 - ${gap}")
endif()
math(EXPR allowed "${l32} / 100")
if(gap GREATER allowed)
  message(FATAL_ERROR "eval --dtype bf16: loss ${loss_bf16} against f32 ${loss30}: more than 1% apart")
endif()
run("eval --dtype f32" 0 "${EVAL}" --checkpoint out/final --data data/val.bin --batch_size 8 --max_seq_len 64 --threads 2
    --dtype f32)
expect("eval --dtype f32" "${OUT}" "eval: precision f32\n")
run("eval on a run folder" 1 "${EVAL}" --checkpoint out --data data/val.bin)
expect("eval on a run folder" "${ERR}" "error: out/config.json: no such file" "final model is in out/final")

# ---- generate ------------------------------------------------------------------------------------------

run("generate" 0 "${GENERATE}" --checkpoint out/final --prompt_ids "49 50 32 49 51" --max_new_tokens 10 --seed 7
    --threads 2)
expect_ids("generate" "${OUT}" 10)
expect("generate" "${ERR}" "preset test" "10 new tokens")
set(first "${OUT}")
run("generate again" 0 "${GENERATE}" --checkpoint out/final --prompt_ids "49,50,32,49,51" --max_new_tokens 10 --seed 7
    --threads 2)
if(NOT OUT STREQUAL first)
  message(FATAL_ERROR "generate: the same seed gave different tokens:\n${first}${OUT}")
endif()
run("generate from a checkpoint" 0 "${GENERATE}" --checkpoint out/checkpoints/step_00000020 --prompt_ids "49"
    --max_new_tokens 4 --temperature 0)
expect_ids("generate from a checkpoint" "${OUT}" 4)
# Greedy decoding in bf16 against f32: the same number of tokens, most of them equal (bf16 logits differ from f32's
# by ~0.3% relative, tests/model.cpp, so a near tie may flip and the continuation then differs), and the bf16 path
# taken, reading the bf16 copy of the weights.
set(greedy --checkpoint out/final --prompt_ids "49 50 32 49 51" --max_new_tokens 16 --temperature 0 --threads 2)
run("generate greedy f32" 0 "${GENERATE}" ${greedy} --dtype f32)
expect("generate greedy f32" "${ERR}" "generate: precision f32\n")
string(REGEX MATCHALL "[0-9]+" ids_f32 "${OUT}")
run("generate greedy bf16" 0 "${GENERATE}" ${greedy} --dtype bf16)
expect_ids("generate greedy bf16" "${OUT}" 16)
expect("generate greedy bf16" "${ERR}" "generate: precision bf16: [1-9][0-9]* matrix products in bf16 \\([1-9][0-9]* of them read the bf16 copy")
string(REGEX MATCHALL "[0-9]+" ids_bf16 "${OUT}")
set(equal 0)
foreach(i RANGE 15)
  list(GET ids_f32 ${i} a)
  list(GET ids_bf16 ${i} b)
  if(a EQUAL b)
    math(EXPR equal "${equal} + 1")
  endif()
endforeach()
if(equal LESS 12)
  message(FATAL_ERROR "generate --dtype bf16: only ${equal} of 16 greedy tokens equal f32's:\n${ids_f32}\n${ids_bf16}")
endif()
run("generate without a prompt" 1 "${GENERATE}" --checkpoint out/final)
expect("generate without a prompt" "${ERR}" "error: --prompt_ids is required: ")

# ---- distill: a student of another preset (tiny, 4 x 128) from the trained model (test, 2 x 32) ----------

# Soft targets only (--alpha 0): the student's distance to the teacher must fall.
set(dcommon --teacher out/final --train_data data/train.bin --val_data data/val.bin --batch_size 8 --max_seq_len 64
            --learning_rate 3e-3 --threads 2 --log_interval 1 --eval_batches 2)
run("distill 12 steps" 0 "${DISTILL}" --preset tiny --max_steps 12 --alpha 0 --out_dir dist ${dcommon})
expect("distill 12 steps" "${OUT}" "distill: teacher out/final \\(preset test\\), student preset tiny, alpha 0, T 1.5, on token shards"
       "step +1/12 \\| loss [0-9.]+ .*ce [0-9.]+ .*kl [0-9.]+" "step +12/12 \\| loss" "val loss [0-9.]+")
string(REGEX MATCH "step +1/12 \\| loss ([0-9.]+)" _ "${OUT}")
set(kd1 "${CMAKE_MATCH_1}")
string(REGEX MATCH "step +12/12 \\| loss ([0-9.]+)" _ "${OUT}")
set(kd12 "${CMAKE_MATCH_1}")
if(NOT kd12 LESS kd1)
  message(FATAL_ERROR "distill 12 steps: the soft loss went from ${kd1} to ${kd12}: the student did not approach the teacher")
endif()
expect_file("distill 12 steps" dist/final/model.safetensors)
run("eval the student" 0 "${EVAL}" --checkpoint dist/final --data data/val.bin --batch_size 8 --max_seq_len 64 --threads 2)
expect("eval the student" "${OUT}" "eval: dist/final \\(preset tiny\\)")

# One tokenizer for both: another vocabulary size, or another tokenizer.json, is refused naming both.
run("distill, other vocabulary" 1 "${DISTILL}" --preset tiny --vocab_size 300 --max_steps 1 --out_dir dist2 ${dcommon})
expect("distill, other vocabulary" "${ERR}"
       "error: --teacher: out/final/config.json has vocab_size 256 but the student's is 300 \\(--vocab_size\\)")
file(COPY "${WORK_DIR}/out/final/" DESTINATION "${WORK_DIR}/teacher_tok")
file(WRITE "${WORK_DIR}/teacher_tok/tokenizer.json" [=[{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": []}]=])
file(WRITE "${WORK_DIR}/other_tokenizer.json" [=[{"model": {"type": "BPE", "vocab": {"b": 0}, "merges": []}, "added_tokens": []}]=])
run("distill, other tokenizer" 1 "${DISTILL}" --preset tiny --max_steps 1 --out_dir dist3 --tokenizer other_tokenizer.json
    --teacher teacher_tok --train_data data/train.bin --threads 2)
expect("distill, other tokenizer" "${ERR}"
       "error: --teacher: teacher_tok/tokenizer.json and the student's tokenizer other_tokenizer.json are different tokenizers")
run("distill without a teacher" 1 "${DISTILL}" --preset tiny --train_data data/train.bin)
expect("distill without a teacher" "${ERR}" "error: --teacher is required")

# ---- init_from: the model folder picks the preset ------------------------------------------------------

run("pretrain --init_from" 0 "${PRETRAIN}" --init_from out/final --preset gpt2-small --max_steps 2 --out_dir out2
    --train_data data/train.bin --batch_size 8 --max_seq_len 64 --threads 2)
expect("pretrain --init_from" "${OUT}" "describes preset test; overriding --preset gpt2-small"
       "initialized from out/final" "step +2/2")
run("pretrain --init_from, other vocabulary" 1 "${PRETRAIN}" --init_from out/final --vocab_size 6400
    --train_data data/train.bin)
expect("pretrain --init_from, other vocabulary" "${ERR}" "error: --vocab_size 6400 disagrees with vocab_size 256")
# MiniMind's torch.save() weights (tests/golden/torch/minimind3_f32.pth: the q/k-norm golden model under MiniMind's
# state_dict names, vocabulary 97): no config inside, so --preset names the architecture and the embedding the
# vocabulary; the shard's byte-level digits, spaces and newlines are all below 97.
set(pth "${CMAKE_CURRENT_LIST_DIR}/golden/torch/minimind3_f32.pth")
run("pretrain --init_from FILE.pth" 0 "${PRETRAIN}" --init_from "${pth}" --preset test-qknorm --max_steps 2
    --out_dir out_pth --train_data data/train.bin --batch_size 4 --max_seq_len 32 --threads 2)
expect("pretrain --init_from FILE.pth" "${OUT}" "minimind3_f32.pth: preset test-qknorm \\(--preset\\), vocab_size 97"
       "initialized from .*minimind3_f32.pth" "step +2/2")
expect_file("pretrain --init_from FILE.pth" out_pth/final/model.safetensors)
file(READ "${WORK_DIR}/out_pth/final/config.json" pth_cfg)
string(JSON pth_vocab GET "${pth_cfg}" vocab_size)
if(NOT pth_vocab EQUAL 97)
  message(FATAL_ERROR "pretrain --init_from FILE.pth: the final config.json says vocab_size ${pth_vocab}, the .pth has 97")
endif()
run("pretrain --init_from FILE.pth, no preset" 1 "${PRETRAIN}" --init_from "${pth}" --train_data data/train.bin)
expect("pretrain --init_from FILE.pth, no preset" "${ERR}" "minimind3_f32.pth.*--preset")

file(READ "${WORK_DIR}/out/final/config.json" cfg)
string(JSON cfg SET "${cfg}" num_hidden_layers 6)
file(MAKE_DIRECTORY "${WORK_DIR}/six_layers")
file(WRITE "${WORK_DIR}/six_layers/config.json" "${cfg}")
run("pretrain --init_from, no such preset" 1 "${PRETRAIN}" --init_from six_layers --train_data data/train.bin)
expect("pretrain --init_from, no such preset" "${ERR}"
       "error: six_layers/config.json: num_hidden_layers is 6; no compiled preset has that \\(tiny has 4, test has 2")

# ---- divergence: a learning rate that blows up stops the run (exit 1), and nothing non-finite is saved --------

run("pretrain diverging" 1 "${PRETRAIN}" --preset test --vocab_size 256 --max_steps 50 --learning_rate 1e30 --grad_clip 0
    --max_bad_steps 4 --train_data data/train.bin --batch_size 8 --max_seq_len 64 --save_interval 5 --log_interval 10
    --out_dir diverged --threads 2)
expect("pretrain diverging" "${ERR}" "^error: training diverged: steps 2 to 5 were all skipped \\(4 in a row"
       "a lower learning_rate \\(this run: 1e\\+30" "gradient clipping \\(grad_clip 1.0; this run: 0, off\\)")
expect("pretrain diverging" "${OUT}" "SKIPPED: not finite")
if(EXISTS "${WORK_DIR}/diverged/final")
  message(FATAL_ERROR "pretrain diverging: a diverged run wrote diverged/final")
endif()
if(EXISTS "${WORK_DIR}/diverged/checkpoints/step_00000005")
  message(FATAL_ERROR "pretrain diverging: the step that stopped the run was saved")
endif()

# ---- --device cuda: runs on a GPU, or says at once why it cannot (util/device.hpp) -------------------------
# CUDA_PROGRAMS: the programs were linked with their CUDA path; HAS_CUDA: minitrain was built with CUDA.

set(cuda_run --preset tiny --vocab_size 256 --max_steps 2 --train_data data/train.bin --batch_size 4 --max_seq_len 32
             --out_dir on_gpu --device cuda)
if(CUDA_PROGRAMS)
  execute_process(COMMAND "${PRETRAIN}" ${cuda_run} WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE rc
                  OUTPUT_VARIABLE OUT ERROR_VARIABLE ERR)
  if(rc EQUAL 0)  # a machine with a GPU: it trained there
    expect("pretrain --device cuda (GPU)" "${OUT}" "preset tiny .*, on the GPU" "step +2/2")
  else()
    expect("pretrain --device cuda (no GPU)" "${ERR}"
           "^error: --device cuda: (no NVIDIA driver is installed on this machine|no CUDA device is visible)"
           "use --device cpu")
    message(STATUS "pretrain --device cuda: no GPU here, refused with: ${ERR}")
  endif()
  run("eval --device cuda, preset not compiled for CUDA" 1 "${EVAL}" --checkpoint out/final --data data/val.bin
      --device cuda)
  expect("eval --device cuda, preset not compiled for CUDA" "${ERR}"
         "error: --device cuda: preset test is not compiled for CUDA in this build \\(MINITRAIN_CUDA_PRESETS is "
         "reconfigure with -DMINITRAIN_CUDA_PRESETS=.*,test and rebuild")
elseif(HAS_CUDA)
  run("pretrain --device cuda, programs without CUDA" 1 "${PRETRAIN}" ${cuda_run})
  expect("pretrain --device cuda, programs without CUDA" "${ERR}" "built without their CUDA part")
else()
  run("pretrain --device cuda, no CUDA" 1 "${PRETRAIN}" ${cuda_run})
  expect("pretrain --device cuda, no CUDA" "${ERR}" "this build of minitrain has no CUDA backend")
endif()
run("generate --device cuda --dtype bf16" 1 "${GENERATE}" --checkpoint out/final --prompt_ids 49 --device cuda
    --dtype bf16)
expect("generate --device cuda --dtype bf16" "${ERR}" "error: --dtype bf16 --device cuda: the CUDA kernels compute in f32 only")
run("generate --device tpu" 1 "${GENERATE}" --checkpoint out/final --prompt_ids 49 --device tpu)
expect("generate --device tpu" "${ERR}" "error: --device: expected one of cpu, cuda, got 'tpu'")

file(REMOVE_RECURSE "${WORK_DIR}")
message(STATUS "examples_e2e: all passed")
