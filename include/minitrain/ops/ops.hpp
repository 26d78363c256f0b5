// minitrain/ops/ops.hpp
// Every differentiable op, written once against a backend tag.
#pragma once

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
#include "reshape.hpp"
#include "rmsnorm.hpp"
#include "rope.hpp"
#include "rows.hpp"
#include "select.hpp"
#include "swiglu.hpp"
