// minitrain/backend/cuda/ops.hpp
// Every CUDA kernel: one file per op group, each a `<op>_forward(CUDA, ...)` / `<op>_backward(CUDA, ...)`
// pair mirroring backend/cpu/ops.hpp. Include from a .cu file compiled by nvcc (or use minitrain/cuda.hpp).
#pragma once

#include "cuda.hpp"
#include "add.hpp"
#include "attention.hpp"
#include "cross_entropy.hpp"
#include "dpo.hpp"
#include "dropout.hpp"
#include "embedding.hpp"
#include "linear.hpp"
#include "logprobs.hpp"
#include "lora.hpp"
#include "moe.hpp"
#include "optim.hpp"
#include "rmsnorm.hpp"
#include "rope.hpp"
#include "swiglu.hpp"
