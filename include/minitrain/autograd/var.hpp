// minitrain/autograd/var.hpp
// Var: a tensor taking part in the graph. Activations live in the step's arena; parameters live in the
// ParameterSet's slabs and outlive every step.
#pragma once

#include "../core/tensor.hpp"

namespace minitrain {

struct Var {
    Tensor data;
    /// Activations: undefined until a gradient flows in during backward, recycled once consumed.
    /// Parameters: a view of the gradient slab; backward adds (`+=`) so micro-batches accumulate.
    Tensor grad;
    bool requires_grad = false;
    /// True for parameters: the gradient is persistent storage, accumulated and never recycled.
    bool persistent_grad = false;
};

}  // namespace minitrain
