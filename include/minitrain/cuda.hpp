// minitrain/cuda.hpp
// The umbrella header for the CUDA backend: everything minitrain.hpp offers plus the CUDA tag and its
// kernels, so that Transformer<Net, CUDA>, Optimizer<AdamW, CUDA> and Trainer<..., CUDA> work.
// Include it from .cu files compiled by nvcc (-std=c++20 --expt-relaxed-constexpr -Xcompiler -fopenmp;
// the minitrain::cuda CMake target adds these). minitrain.hpp itself never includes the CUDA backend, so
// .cpp files built by the host compiler are unaffected.
#pragma once

#if !defined(__CUDACC__)
#error "minitrain/cuda.hpp needs a .cu translation unit compiled by nvcc; .cpp files compiled by the host compiler include minitrain/minitrain.hpp (CPU backend)"
#endif

#include "minitrain.hpp"

#include "backend/cuda/ops.hpp"
