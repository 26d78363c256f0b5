# tests/pipeline_e2e.cmake: the whole pipeline as a user runs it from the README (CTest: pipeline_e2e).
#
#   finetune_demo --data_only 1 (the times-table corpus: pretraining text, SFT and DPO JSONL)
#   -> tokenizer train -> prepare_data -> pretrain -> sft -> lora -> dpo -> reward -> grpo (rules, reward model) -> ppo -> merge_lora -> chat
#
# with the "tiny" preset, one thread and a few dozen steps per stage (about a minute of CPU time). Checks that
# every stage finds what the one before left (the preset from config.json, which names it; the tokenizer
# inside the model folder), that every run folder has metrics.jsonl, a TensorBoard event file, loss.svg
# and report.md, and that chat answers from the merged model and from the DPO model.
#
# Run by CTest as: cmake -DBIN_DIR=<folder of the programs> -DWORK_DIR=<scratch folder> -P tests/pipeline_e2e.cmake
cmake_minimum_required(VERSION 3.25)

foreach(var BIN_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "pipeline_e2e: pass -D${var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

include("${CMAKE_CURRENT_LIST_DIR}/support/e2e.cmake")  # run(), expect()

# A run folder: metrics, events, picture, report, final/.
function(expect_run name dir)
  foreach(f metrics.jsonl loss.svg report.md run.json final)
    if(NOT EXISTS "${WORK_DIR}/${dir}/${f}")
      message(FATAL_ERROR "${name}: ${dir}/${f} was not written")
    endif()
  endforeach()
  file(GLOB events "${WORK_DIR}/${dir}/events.out.tfevents.*")
  list(LENGTH events n)
  if(n LESS 1)
    message(FATAL_ERROR "${name}: no TensorBoard event file in ${dir}")
  endif()
  file(READ "${WORK_DIR}/${dir}/report.md" report)
  expect("${name} report.md" "${report}" "^# [a-z]+ run: ${dir}" "\\| model \\| preset tiny: 4 layers x 128"
         "\\| tokens/s \\| [0-9]+" "\\| MFU \\| [0-9.]+%" "!\\[loss curve\\]\\(loss.svg\\)")
  file(READ "${WORK_DIR}/${dir}/loss.svg" svg)
  expect("${name} loss.svg" "${svg}" "^<svg " "<polyline" "</svg>")
endfunction()

set(B "${BIN_DIR}")
set(small --threads 1 --max_seq_len 48 --batch_size 16 --log_interval 10 --save_interval 0)

# ---- the corpus ------------------------------------------------------------------------------------------
run("data" 0 "${B}/finetune_demo" --data_only 1 --out_dir demo)
foreach(f pretrain_train.jsonl sft_train.jsonl sft_val.jsonl dpo_train.jsonl dpo_val.jsonl test_prompts.txt)
  if(NOT EXISTS "${WORK_DIR}/demo/data/${f}")
    message(FATAL_ERROR "data: demo/data/${f} was not written")
  endif()
endforeach()
file(STRINGS "${WORK_DIR}/demo/data/test_prompts.txt" prompts LIMIT_COUNT 3)
string(REPLACE ";" "\n" prompts "${prompts}")
file(WRITE "${WORK_DIR}/prompts.txt" "${prompts}\n")

# ---- tokenizer -> prepare_data ---------------------------------------------------------------------------
run("tokenizer" 0 "${B}/tokenizer" train --input demo/data/pretrain_train.jsonl
    --vocab_size 320 --output tok.json)
run("prepare_data" 0 "${B}/prepare_data" --input demo/data/pretrain_train.jsonl --tokenizer tok.json --output_dir shards
    --val_fraction 0.05)
expect("prepare_data" "${OUT}${ERR}" "pretrain with: --train_data \"shards/train_\\*.bin\"")
# Not a terminal: the progress bar is a plain line (no carriage return, no bar).
expect("prepare_data progress" "${ERR}" "prepare +100.0% \\|")
if(ERR MATCHES "\r")
  message(FATAL_ERROR "prepare_data: a carriage return in a log that is not a terminal:\n${ERR}")
endif()

# ---- pretrain --------------------------------------------------------------------------------------------
run("pretrain" 0 "${B}/pretrain" --preset tiny --data_path "shards/train_*.bin" --val_data "shards/val_*.bin"
    --vocab_size 320 --tokenizer tok.json --max_steps 150 --learning_rate 3e-3 --schedule warmup_cosine
    --warmup_steps 15 --eval_interval 75 --eval_batches 4 --out_dir pre ${small})
expect("pretrain" "${OUT}" "step +150/150" "eval step 150 \\| val loss" "report: pre/report.md")
expect_run("pretrain" pre)
file(READ "${WORK_DIR}/pre/final/config.json" cfg)
string(JSON preset GET "${cfg}" minitrain preset)
if(NOT preset STREQUAL "tiny")
  message(FATAL_ERROR "pretrain: final/config.json names preset '${preset}', expected tiny")
endif()
# Every model folder is complete for transformers: the tokenizer and its side files, the generation config.
foreach(d pre/final pre/checkpoints/step_00000150)
  foreach(f config.json model.safetensors tokenizer.json tokenizer_config.json special_tokens_map.json
            generation_config.json)
    if(NOT EXISTS "${WORK_DIR}/${d}/${f}")
      message(FATAL_ERROR "pretrain: ${d}/${f} was not written (a Hugging Face folder needs it)")
    endif()
  endforeach()
endforeach()
file(READ "${WORK_DIR}/pre/final/tokenizer_config.json" tc)
string(JSON eos GET "${tc}" eos_token)
string(JSON maxlen GET "${tc}" model_max_length)
string(JSON template GET "${tc}" chat_template)
if(NOT eos STREQUAL "<|im_end|>" OR NOT maxlen EQUAL 48 OR NOT template MATCHES "<\\|im_start\\|>")
  message(FATAL_ERROR "pretrain: final/tokenizer_config.json: eos_token '${eos}', model_max_length ${maxlen}, "
          "chat_template '${template}'")
endif()
string(JSON eos_id GET "${cfg}" eos_token_id)
file(READ "${WORK_DIR}/pre/final/generation_config.json" gc)
string(JSON gen_eos GET "${gc}" eos_token_id)
if(NOT eos_id EQUAL gen_eos)
  message(FATAL_ERROR "pretrain: config.json eos_token_id ${eos_id}, generation_config.json ${gen_eos}")
endif()
if(NOT EXISTS "${WORK_DIR}/pre/final/tokenizer.json")
  message(FATAL_ERROR "pretrain: the tokenizer was not copied into pre/final")
endif()

# ---- sft (MiniMind's flag names; the tokenizer from the model folder) ----------------------------------
run("sft --help" 0 "${B}/sft" --help)
expect("sft --help" "${OUT}" "^sft: " "--data_path" "--from_weight" "--learning_rate" "pretrain +sft +lora +dpo"
       "When the loss does not fall" "When memory runs out")
run("sft without --from_weight" 1 "${B}/sft" --data_path demo/data/sft_train.jsonl)
expect("sft without --from_weight" "${ERR}" "error: --from_weight is required")
run("sft" 0 "${B}/sft" --data_path demo/data/sft_train.jsonl --val_data demo/data/sft_val.jsonl --from_weight pre/final
    --max_steps 60 --learning_rate 2e-3 --eval_batches 2 --out_dir sft --save_dtype bf16 ${small})
expect("sft" "${OUT}" "preset tiny \\(from pre/final/config.json\\)" "step +60/60" "eval step 60 \\| val loss")
expect_run("sft" sft)
# --save_dtype bf16: the final folder says so and holds BF16 weights; lora, dpo and merge_lora read it below.
file(READ "${WORK_DIR}/sft/final/config.json" sft_cfg)
string(JSON sft_dtype GET "${sft_cfg}" torch_dtype)
file(READ "${WORK_DIR}/sft/final/model.safetensors" sft_head OFFSET 8 LIMIT 400)  # past the binary length
if(NOT sft_dtype STREQUAL "bfloat16" OR NOT sft_head MATCHES "\"dtype\":\"BF16\"")
  message(FATAL_ERROR "sft --save_dtype bf16: torch_dtype '${sft_dtype}', model.safetensors header: ${sft_head}")
endif()

# ---- lora on the SFT model ---------------------------------------------------------------------------
run("lora" 0 "${B}/lora" --data_path demo/data/sft_train.jsonl --from_weight sft/final --max_steps 30
    --learning_rate 2e-3 --lora_targets attention_mlp --out_dir lora ${small})
expect("lora" "${OUT}" "rank 8, alpha 16, targets attention_mlp" "step +30/30")
expect_run("lora" lora)
if(NOT EXISTS "${WORK_DIR}/lora/final/adapter_config.json")
  message(FATAL_ERROR "lora: lora/final is not a PEFT adapter folder")
endif()
run("lora, rank not compiled" 1 "${B}/lora" --data_path demo/data/sft_train.jsonl --from_weight sft/final --lora_rank 4)
expect("lora, rank not compiled" "${ERR}" "error: --lora_rank 4: this program is compiled with ranks 8 and 16")

# ---- dpo on the SFT model ----------------------------------------------------------------------------
run("dpo" 0 "${B}/dpo" --data_path demo/data/dpo_train.jsonl --val_data demo/data/dpo_val.jsonl --from_weight sft/final
    --max_steps 20 --learning_rate 1e-5 --dpo_beta 0.1 --eval_batches 2 --out_dir dpo ${small})
expect("dpo" "${OUT}" "step +20/20 \\| loss [0-9.]+ \\| reward_margin" "eval step 20")
expect_run("dpo" dpo)

# ---- a reward model on the DPO pairs, from the SFT model: held-out pair accuracy printed ------------------
run("reward" 0 "${B}/reward" --data_path demo/data/dpo_train.jsonl --val_data demo/data/dpo_val.jsonl
    --from_weight sft/final --max_steps 20 --learning_rate 3e-4 --out_dir reward ${small})
expect("reward" "${OUT}" "step +20/20 \\| loss [0-9.]+ \\| reward_accuracy [0-9.]+ \\| reward_margin" "eval step 20"
       "held-out pair accuracy [0-9.]+ \\(50 pairs\\)")
expect_run("reward" reward)
if(NOT EXISTS "${WORK_DIR}/reward/final/reward_head.safetensors")
  message(FATAL_ERROR "reward: reward/final/reward_head.safetensors was not written")
endif()

# ---- grpo on the SFT model: the exact-match reward, and a plain prompt file ------------------------------
set(rl --threads 1 --max_seq_len 48 --batch_size 4 --num_generations 4 --max_gen_len 6 --log_interval 2 --save_interval 0)
run("grpo" 0 "${B}/grpo" --data_path demo/data/sft_train.jsonl --val_data demo/data/sft_val.jsonl --from_weight sft/final
    --max_steps 4 --learning_rate 1e-4 --eval_batches 1 --out_dir grpo ${rl})
expect("grpo" "${OUT}" "step +4/4 \\| loss [-0-9.]+ \\| reward_mean [0-9.]+ \\| reward_std" "clip_fraction" "eval step 4")
expect_run("grpo" grpo)
run("grpo, prompt file" 0 "${B}/grpo" --data_path prompts.txt --from_weight sft/final --reward format+length
    --length_penalty 0.01 --max_steps 2 --batch_size 2 --out_dir grpo_txt --threads 1 --max_seq_len 48
    --num_generations 4 --max_gen_len 6 --log_interval 1 --save_interval 0)
expect("grpo, prompt file" "${OUT}" "reward format\\+length" "step +2/2")
run("grpo, reward model" 0 "${B}/grpo" --data_path demo/data/sft_train.jsonl --from_weight sft/final
    --reward_model reward/final --max_steps 2 --learning_rate 1e-4 --out_dir grpo_rm ${rl})
expect("grpo, reward model" "${OUT}" "samples per prompt, reward model reward/final" "step +2/2 \\| loss [-0-9.]+ \\| reward_mean [-0-9.]+")

# ---- ppo on the SFT model: the reward model's score + the format rule ----------------------------------
run("ppo" 0 "${B}/ppo" --data_path demo/data/sft_train.jsonl --val_data demo/data/sft_val.jsonl --from_weight sft/final
    --reward_model reward/final --reward format --max_steps 4 --learning_rate 1e-4 --eval_batches 1 --out_dir ppo
    --threads 1 --max_seq_len 48 --batch_size 4 --max_gen_len 6 --log_interval 2 --save_interval 0)
expect("ppo" "${OUT}" "reward model reward/final \\+ format" "step +4/4 \\| loss [-0-9.]+ \\| reward_mean [-0-9.]+ \\| reward_std"
       "value_loss" "eval step 4")
expect_run("ppo" ppo)
if(NOT EXISTS "${WORK_DIR}/ppo/final/value_head.safetensors")
  message(FATAL_ERROR "ppo: ppo/final/value_head.safetensors was not written")
endif()

# ---- merge_lora -> chat ------------------------------------------------------------------------------
run("merge_lora" 0 "${B}/merge_lora" --base sft/final --adapter lora/final --output merged)
expect("merge_lora" "${OUT}" "\\(preset tiny\\) \\+ lora/final \\(28 projections\\) -> merged")
foreach(f config.json model.safetensors tokenizer.json)
  if(NOT EXISTS "${WORK_DIR}/merged/${f}")
    message(FATAL_ERROR "merge_lora: merged/${f} was not written")
  endif()
endforeach()
foreach(model merged dpo/final)
  run("chat ${model}" 0 "${B}/chat" --checkpoint ${model} --prompts prompts.txt --temperature 0 --max_new_tokens 6
      --threads 1)
  string(REGEX MATCHALL "\n" lines "${OUT}")
  list(LENGTH lines n)
  if(NOT n EQUAL 3)
    message(FATAL_ERROR "chat ${model}: expected 3 answer lines, got ${n}:\n${OUT}")
  endif()
  message(STATUS "chat ${model}: ${OUT}")
endforeach()

# ---- plot: several runs in one picture ---------------------------------------------------------------
run("plot" 0 "${B}/plot" --output all.svg pre/metrics.jsonl sft lora dpo)
expect("plot" "${OUT}" "plot: all.svg")

file(REMOVE_RECURSE "${WORK_DIR}")
message(STATUS "pipeline_e2e: all passed")
