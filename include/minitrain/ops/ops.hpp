// minitrain/ops/ops.hpp
// Every differentiable op, written once against a backend tag.
#pragma once

#include "add.hpp"
#include "linear.hpp"
#include "reshape.hpp"
