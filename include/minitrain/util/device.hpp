// minitrain/util/device.hpp
// --device for the programs: where a program computes, `cpu` (the default) or `cuda`.
//
// A program's CPU path is compiled into the program. Its CUDA path cannot be: the CUDA backend's kernels
// need nvcc, and the programs are .cpp files built by the host compiler. So the CUDA path of every program
// lives in one nvcc translation unit, examples/device/cuda_programs.cu (the static library
// minitrain_cuda_programs), built when minitrain finds CUDA and MINITRAIN_CUDA_PROGRAMS is ON, for the
// presets in MINITRAIN_CUDA_PRESETS (each preset costs nvcc time per task, as presets do on the CPU).
// This header declares that path's entry points (namespace cuda_programs, defined only there) and
// check_device(), which every program calls before it loads anything, so that `--device cuda` fails at
// once, with the reason, where it cannot run:
//   - minitrain built without CUDA (no nvcc found, or -DMINITRAIN_CUDA=OFF),
//   - the programs built without their CUDA part (-DMINITRAIN_CUDA_PROGRAMS=OFF),
//   - the preset not among the CUDA presets of this build,
//   - no device visible, a driver older than the CUDA runtime, a GPU older than the compiled kernels.
// The CUDA runtime's host API (cuda_runtime.h) is plain C and needs no nvcc, so the checks run here.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/precision.hpp"

#if defined(MINITRAIN_CUDA_PROGRAMS)
#include <cuda_runtime_api.h>
#endif

namespace minitrain {

class Comm;
struct TrainConfig;
struct SampleOptions;
struct EvalOptions;
struct EvalSummary;
class AnyChat;

/// The --device choices.
inline std::vector<std::string> device_names() { return {"cpu", "cuda"}; }

/// What --help says about --device in this build.
inline std::string device_help() {
#if defined(MINITRAIN_CUDA_PROGRAMS)
    return "where to compute: cpu, or cuda (the first visible GPU; presets " MINITRAIN_CUDA_PRESETS ")";
#elif defined(MINITRAIN_HAS_CUDA)
    return "where to compute: cpu (cuda needs the programs configured with -DMINITRAIN_CUDA_PROGRAMS=ON)";
#else
    return "where to compute: cpu (cuda needs minitrain built with CUDA: -DMINITRAIN_CUDA=ON "
           "-DMINITRAIN_CUDA_PROGRAMS=ON)";
#endif
}

namespace cuda_programs {

#if defined(MINITRAIN_CUDA_PROGRAMS)

/// Whether `preset` was compiled into the CUDA path (MINITRAIN_CUDA_PRESETS).
bool has_preset(std::string_view preset);

/// The stage programs' body on the GPU: `task` is pretrain_adamw, pretrain_sgd, sft, dpo, lora_8_attention,
/// lora_8_attention_mlp, lora_16_attention or lora_16_attention_mlp (train_stage in util/stage.hpp).
void train(std::string_view task, std::string_view preset, const TrainConfig& cfg, const std::string& schedule,
           Comm& comm);

/// eval's body on the GPU: evaluate_folder<Net, CUDA> (train/evaluate.hpp), `before` called once the batch
/// count is known.
EvalSummary evaluate(std::string_view preset, const EvalOptions& options,
                     const std::function<void(const EvalSummary&)>& before);

/// generate's body on the GPU: the model in `dir`, `on_token` called per new token (false stops).
std::vector<std::int32_t> generate(std::string_view preset, const std::string& dir, std::span<const std::int32_t> prompt,
                                   const SampleOptions& options, const std::function<bool(std::int32_t)>& on_token);

/// chat's model on the GPU: load_chat<Net, CUDA> (nn/chat.hpp).
std::unique_ptr<AnyChat> chat(std::string_view preset, const std::string& dir, const std::string& adapter,
                              const std::string& tokenizer, const SampleOptions& options, const std::string& system);

#else
// A build without the programs' CUDA part (no CUDA, or -DMINITRAIN_CUDA_PROGRAMS=OFF): check_device() has
// refused --device cuda before any of these can be reached; they exist so that the programs link with their
// call sites written once, in plain C++.
[[noreturn]] inline void no_cuda_part() {
    detail::fail("--device cuda: the programs were built without their CUDA part (-DMINITRAIN_CUDA_PROGRAMS=OFF)");
}
inline bool has_preset(std::string_view) { return false; }
inline void train(std::string_view, std::string_view, const TrainConfig&, const std::string&, Comm&) { no_cuda_part(); }
// A template so that EvalSummary may stay incomplete here (eval.cpp, the one caller, includes it).
template <class Summary = EvalSummary>
Summary evaluate(std::string_view, const EvalOptions&, const std::function<void(const std::type_identity_t<Summary>&)>&) {
    no_cuda_part();
}
inline std::vector<std::int32_t> generate(std::string_view, const std::string&, std::span<const std::int32_t>,
                                          const SampleOptions&, const std::function<bool(std::int32_t)>&) {
    no_cuda_part();
}
inline std::unique_ptr<AnyChat> chat(std::string_view, const std::string&, const std::string&, const std::string&,
                                     const SampleOptions&, const std::string&) {
    no_cuda_part();
}
#endif

}  // namespace cuda_programs

/// Throws minitrain::Error with the reason when `device` cannot run `preset` at `dtype` in this build and
/// on this machine, and when a CUDA run is asked of more than one process. Does nothing for the CPU.
inline void check_device(const std::string& device, std::string_view preset, int world_size = 1,
                         std::string_view dtype = "f32") {
    if (device == "cpu") return;
    MT_CHECK(device == "cuda", "--device ", device, ": expected cpu or cuda");
    MT_CHECK(parse_precision(dtype) == Precision::f32, "--dtype ", dtype, " --device cuda: the CUDA kernels compute "
             "in f32 only so far (bf16 and fp16 on the GPU are still to come); use --dtype f32 on the GPU, or --dtype "
             "bf16 on the CPU");
#if !defined(MINITRAIN_HAS_CUDA)
    (void)preset, (void)world_size;
    detail::fail("--device cuda: this build of minitrain has no CUDA backend (CMake found no CUDA compiler and toolkit, "
                 "or was given -DMINITRAIN_CUDA=OFF). Rebuild with nvcc on PATH (CUDA 12 or newer) and "
                 "-DMINITRAIN_CUDA=ON -DMINITRAIN_CUDA_PROGRAMS=ON");
#elif !defined(MINITRAIN_CUDA_PROGRAMS)
    (void)preset, (void)world_size;
    detail::fail("--device cuda: the programs were built without their CUDA part (-DMINITRAIN_CUDA_PROGRAMS=OFF); "
                 "reconfigure with -DMINITRAIN_CUDA_PROGRAMS=ON and rebuild");
#else
    MT_CHECK(cuda_programs::has_preset(preset), "--device cuda: preset ", preset,
             " is not compiled for CUDA in this build (MINITRAIN_CUDA_PRESETS is ", MINITRAIN_CUDA_PRESETS,
             "): reconfigure with -DMINITRAIN_CUDA_PRESETS=", MINITRAIN_CUDA_PRESETS, ",", preset, " and rebuild");
    MT_CHECK(world_size == 1, "--device cuda: ", world_size, " processes; the programs train on one GPU in one "
             "process (several GPUs through NCCL are not wired into the programs yet)");
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err == cudaErrorInsufficientDriver) {
        int driver = 0, runtime = 0;
        cudaDriverGetVersion(&driver);
        cudaRuntimeGetVersion(&runtime);
        MT_CHECK(driver > 0, "--device cuda: no NVIDIA driver is installed on this machine (the CUDA runtime found no "
                 "libcuda.so), so no GPU can be used; use --device cpu");
        detail::fail("--device cuda: the NVIDIA driver supports CUDA up to ", driver / 1000, ".", driver % 1000 / 10,
                     ", this build's CUDA runtime is ", runtime / 1000, ".", runtime % 1000 / 10,
                     ": update the driver, or build with an older CUDA toolkit");
    }
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    MT_CHECK(err != cudaErrorNoDevice && !(err == cudaSuccess && count == 0),
             "--device cuda: no CUDA device is visible (CUDA_VISIBLE_DEVICES=", visible ? visible : "<unset>",
             "); on this machine use --device cpu");
    MT_CHECK(err == cudaSuccess, "--device cuda: cudaGetDeviceCount: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
    cudaDeviceProp prop{};
    MT_CHECK(cudaGetDeviceProperties(&prop, 0) == cudaSuccess, "--device cuda: cudaGetDeviceProperties failed");
    const int cc = prop.major * 10 + prop.minor;
    MT_CHECK(cc >= MINITRAIN_CUDA_MIN_ARCH, "--device cuda: ", prop.name, " has compute capability ", prop.major, ".",
             prop.minor, "; this build's kernels are for sm_", MINITRAIN_CUDA_MIN_ARCH,
             " and newer: rebuild with -DCMAKE_CUDA_ARCHITECTURES=", cc);
#endif
}

}  // namespace minitrain
