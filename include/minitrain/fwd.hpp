// minitrain/fwd.hpp
// Declarations of minitrain's public templates and backend tags, for headers that only name them.
#pragma once

#include <cstddef>

namespace minitrain {

struct CPU;   // backend/cpu/cpu.hpp
struct CUDA;  // backend/cuda/cuda.hpp (built when the CUDA toolkit is found)

struct Tensor;
struct Var;
template <class Backend> class Arena;
template <class Backend> class GradPool;
template <class Backend> class Buffer;
template <class Backend> class Graph;
template <class Backend> class NoGrad;
template <class Backend> class ParameterSet;

}  // namespace minitrain
