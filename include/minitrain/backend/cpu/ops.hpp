// minitrain/backend/cpu/ops.hpp
// Every CPU kernel: one file per op, each a `<op>_forward(CPU, ...)` / `<op>_backward(CPU, ...)` pair.
#pragma once

#include "cpu.hpp"
#include "add.hpp"
#include "attention.hpp"
#include "cross_entropy.hpp"
#include "distill.hpp"
#include "dpo.hpp"
#include "grpo.hpp"
#include "dropout.hpp"
#include "embedding.hpp"
#include "linear.hpp"
#include "logprobs.hpp"
#include "moe.hpp"
#include "ppo.hpp"
#include "rmsnorm.hpp"
#include "rope.hpp"
#include "select.hpp"
#include "swiglu.hpp"
