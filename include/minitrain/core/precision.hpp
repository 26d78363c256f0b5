// minitrain/core/precision.hpp
// Mixed precision: the rules, stated once for every backend (they are torch.autocast's), the names users
// type for them, and the switch the kernels read.
//
//   --dtype f32   (fp32, float32)            everything in f32.
//   --dtype bf16  (bfloat16)                 autocast bf16:
//       * matmul inputs in bf16, accumulation and outputs in f32: every linear (q/k/v/o, the FFN, the
//         lm_head, LoRA's A and B), attention's Q K^T and P V, and their backward products (dy, x, w and
//         the attention operands are rounded to bf16 as they enter the product);
//       * in f32: master weights, gradients (and their accumulation across micro-batches), optimizer
//         state, RMSNorm, softmax, RoPE tables, SwiGLU, cross-entropy, the loss and every reduction;
//       * checkpoints and final folders hold the f32 master weights (a bf16 run resumes exactly, and a
//         checkpoint continues in either precision).
//   --dtype fp16  (float16, half)            the same with fp16 inputs and dynamic loss scaling
//       (optim/grad_scaler.hpp: GradScaler's rules). It needs fast half arithmetic; on a CPU without it
//       the trainer stops and names bf16, this CPU's fast type.
//
// Where the CPU backend differs from torch's CPU autocast, and why:
//   * torch rounds a matmul's *output* to bf16 as well (the tensor is bf16); here outputs stay f32. It is
//     the more accurate choice and costs nothing (the accumulators are f32 either way).
//   * activations that only products read (forward and backward) are stored in bf16 by the op that makes them
//     (activation_dtype below): the RMSNorm before q/k/v and before the FFN, and SwiGLU's output before
//     down_proj, where no LoRA adapter reads them; the GEMM packs their bits as it would have packed their
//     rounding, so results are the same bit for bit, with half the memory for those tensors.
//   * the weights are rounded to bf16 once per optimizer step (and per evaluation or sample) into a copy that
//     the products read (backend/cpu/bf16_weights.hpp, made by the trainer); activations and the operands of
//     the other products are rounded while the GEMM packs them (backend/cpu/gemm_bf16.hpp). Both roundings
//     are the same instruction, so the copy changes no result.
//
// The switch is process-wide, not thread-local as torch's is: the CPU kernels run their products on
// OpenMP worker threads, which must all see the caller's precision. Set it with a Autocast scope around
// forward and backward (the trainer and the inference programs do); kernels read matmul_precision().
#pragma once

#include <atomic>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"

namespace minitrain {

enum class Precision : unsigned char { f32, bf16, fp16 };

constexpr std::string_view precision_name(Precision p) {
    return p == Precision::f32 ? "f32" : p == Precision::bf16 ? "bf16" : "fp16";
}

/// Every spelling accepted for --dtype, with the canonical name it stands for.
inline const std::vector<std::pair<std::string, std::string>>& precision_spellings() {
    static const std::vector<std::pair<std::string, std::string>> s = {
        {"f32", "f32"},   {"fp32", "f32"},    {"float32", "f32"}, {"bf16", "bf16"}, {"bfloat16", "bf16"},
        {"fp16", "fp16"}, {"float16", "fp16"}, {"half", "fp16"},   {"f16", "fp16"}};
    return s;
}

/// The precision a spelling names; `what` says where the text came from, for the error.
inline Precision parse_precision(std::string_view text, std::string_view what = "dtype") {
    for (const auto& [spelling, canon] : precision_spellings())
        if (text == spelling) return canon == "f32" ? Precision::f32 : canon == "bf16" ? Precision::bf16 : Precision::fp16;
    detail::fail(what, ": expected f32 (fp32, float32), bf16 (bfloat16) or fp16 (float16, half), found '", text, "'");
}

/// The precision the CPU backend can run a spelling in: fp16 is refused (no fast half arithmetic there), and
/// the message names bf16, the CPU's fast type. For the inference programs' --dtype.
inline Precision cpu_precision(std::string_view text, std::string_view what = "--dtype") {
    const Precision p = parse_precision(text, what);
    MT_CHECK(p != Precision::fp16, what, " fp16: the CPU backend has no fast half-precision arithmetic (no fp16 "
             "kernels), so bf16 is this CPU's fast type: use ", what, " bf16 (f32's exponent range, no loss scaling)");
    return p;
}

namespace detail {
inline std::atomic<Precision>& matmul_precision_slot() {
    static std::atomic<Precision> p{Precision::f32};
    return p;
}
}  // namespace detail

/// The precision matrix products run in now (f32 unless inside an Autocast scope).
inline Precision matmul_precision() { return detail::matmul_precision_slot().load(std::memory_order_relaxed); }

namespace detail {
inline std::atomic<bool>& bf16_activations_slot() {
    static std::atomic<bool> on{true};
    return on;
}
}  // namespace detail

/// Whether activations read only by products are stored in bf16 under Autocast bf16 (on by default). Off: they
/// stay f32 and the products round them while packing; the results are the same bit for bit. For the tests and
/// benchmarks that compare the two.
inline void set_bf16_activations(bool on) { detail::bf16_activations_slot().store(on); }
inline bool bf16_activations_enabled() { return detail::bf16_activations_slot().load(std::memory_order_relaxed); }

/// Who reads an op's output: anything, or only matrix products (as their A operand in the forward, their B in
/// dW = dY^T x).
enum class ReadBy : unsigned char { any, matmuls };

/// The type an op on the CPU stores its f32 output in: bf16 when only products read it and they run in bf16 (they
/// would round it to bf16 anyway), else `natural`.
inline DType activation_dtype(DType natural, ReadBy readers) {
    return natural == DType::f32 && readers == ReadBy::matmuls && matmul_precision() == Precision::bf16 &&
                   bf16_activations_enabled()
               ? DType::bf16
               : natural;
}

/// Runs the products of its lifetime in precision `p`; the previous precision comes back at the end.
class Autocast {
public:
    explicit Autocast(Precision p) : saved_(detail::matmul_precision_slot().exchange(p)) {}
    ~Autocast() { detail::matmul_precision_slot().store(saved_); }
    Autocast(const Autocast&) = delete;
    Autocast& operator=(const Autocast&) = delete;

private:
    Precision saved_;
};

}  // namespace minitrain
