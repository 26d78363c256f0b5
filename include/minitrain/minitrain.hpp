// minitrain/minitrain.hpp
// The umbrella header: include this and nothing else.
//
//   core/      tensors, element types, errors, randomness
//   memory/    arena (per-step activations), parameter slabs
//   autograd/  Var and the tape (Graph)
//   backend/   kernels per backend: cpu/ (Eigen + OpenMP), cuda/ (cuBLAS, bf16)
//   ops/       differentiable ops, written once for every backend
#pragma once

#include "fwd.hpp"

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "core/shape.hpp"
#include "core/tensor.hpp"

#include "memory/arena.hpp"
#include "memory/parameters.hpp"

#include "autograd/graph.hpp"
#include "autograd/var.hpp"

#include "backend/cpu/ops.hpp"

#include "ops/ops.hpp"
