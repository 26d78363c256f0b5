// minitrain/backend/cpu/ops.hpp
// Every CPU kernel: one file per op, each a `<op>_forward(CPU, ...)` / `<op>_backward(CPU, ...)` pair.
#pragma once

#include "cpu.hpp"
#include "add.hpp"
#include "linear.hpp"
