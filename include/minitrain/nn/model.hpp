// minitrain/nn/model.hpp
// Model<Layers, Hidden, Heads, UseMoE, Knobs>: the architecture as a compile-time policy.
// Every size a kernel loop depends on is a constant here; vocabulary size and maximum sequence length
// are run-time values (ModelConfig) because they follow the tokenizer and the data.
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>

#include "../core/router_rules.hpp"

namespace minitrain {

/// The knobs MiniMind leaves at defaults. Derive from it to change a constant, e.g.
/// `struct LongRope : Knobs<2> { static constexpr double rope_theta = 5e5; };`
template <int KVHeads = 2, int FFN = 0, int Experts = 4, int TopK = 2, int SharedExperts = 1>
struct Knobs {
    static constexpr int kv_heads = KVHeads;
    static constexpr int ffn = FFN;  // 0: MiniMind's rule 64 * ceil(int(8 * Hidden / 3) / 64)
    static constexpr int experts = Experts;
    static constexpr int top_k = TopK;
    static constexpr int shared_experts = SharedExperts;
    static constexpr bool norm_topk = true;      // renormalize the top-k router weights
    static constexpr double aux_alpha = 0.01;    // MoE load-balancing loss weight
    static constexpr RouterRules router = RouterRules::minimind2;  // top-1 renormalization, aux scope
    static constexpr double rope_theta = 1e6;
    static constexpr double rms_eps = 1e-5;
    static constexpr double init_std = 0.02;
    static constexpr bool qk_norm = false;       // RMSNorm on each head of q and k before RoPE (MiniMind-3, Qwen3)
};

template <int Layers, int Hidden, int Heads, bool UseMoE = false, class K = Knobs<>>
struct Model {
    static constexpr int layers = Layers;
    static constexpr int hidden = Hidden;
    static constexpr int heads = Heads;
    static constexpr int kv_heads = K::kv_heads;
    static constexpr int head_dim = Heads > 0 ? Hidden / Heads : 0;
    static constexpr int ffn = K::ffn > 0 ? K::ffn : 64 * ((8 * Hidden / 3 + 63) / 64);
    static constexpr bool moe = UseMoE;
    static constexpr int experts = K::experts;
    static constexpr int top_k = K::top_k;
    static constexpr int shared_experts = K::shared_experts;
    static constexpr bool norm_topk = K::norm_topk;
    static constexpr double aux_alpha = K::aux_alpha;
    static constexpr RouterRules router = K::router;
    static constexpr double rope_theta = K::rope_theta;
    static constexpr double rms_eps = K::rms_eps;
    static constexpr double init_std = K::init_std;
    static constexpr bool qk_norm = K::qk_norm;
    using knobs = K;

    static_assert(Layers >= 1, "Model: Layers must be at least 1");
    static_assert(Heads >= 1 && Hidden >= 1, "Model: Hidden and Heads must be positive");
    static_assert(Hidden % Heads == 0, "Model: Hidden must be a multiple of Heads (head dimension = Hidden / Heads)");
    static_assert(K::kv_heads >= 1 && Heads % K::kv_heads == 0,
                  "Model: Heads must be a multiple of KV heads (grouped-query attention shares each KV head "
                  "among Heads / KVHeads query heads)");
    static_assert((Hidden / Heads) % 2 == 0, "Model: the head dimension Hidden / Heads must be even for RoPE");
    static_assert(!UseMoE || (K::top_k >= 1 && K::top_k <= K::experts),
                  "Model: MoE top-k must be between 1 and the number of experts");
    static_assert(K::shared_experts >= 0, "Model: shared experts cannot be negative");
};

/// Run-time sizes that follow the tokenizer and the data.
struct ModelConfig {
    int vocab_size = 6400;
    int max_seq_len = 512;
};

template <class T>
concept ModelPolicy = requires {
    { T::layers } -> std::convertible_to<int>;
    { T::hidden } -> std::convertible_to<int>;
    { T::heads } -> std::convertible_to<int>;
    { T::kv_heads } -> std::convertible_to<int>;
    { T::ffn } -> std::convertible_to<int>;
    { T::moe } -> std::convertible_to<bool>;
};

// ---- presets ------------------------------------------------------------------------------------------

/// MiniMind2-Small: 8 layers, 512 wide, 8 heads, 2 KV heads; about 26M parameters at vocabulary 6400.
using MiniMind2Small = Model<8, 512, 8, false, Knobs<2>>;
/// MiniMind2-Small with 4 routed experts (top-2) and 1 shared expert per layer.
using MiniMind2SmallMoE = Model<8, 512, 8, true, Knobs<2>>;
/// GPT-2 small's size (124M at vocabulary 50304) in the Llama architecture: 12 x 768, 12 heads, no GQA.
using GPT2Small = Model<12, 768, 12, false, Knobs<12>>;
/// MiniMind-3's knobs (jingyaogong/minimind HEAD, model/model_minimind.py): 4 KV heads, FFN 2432
/// (MiniMind's ceil(768 * pi / 64) * 64), RMSNorm on q and k per head, eps 1e-6, theta 1e6; for the MoE
/// variant 4 experts of the same FFN size, top-1 (renormalized: weight 1), no shared expert, a batch-level
/// balancing loss with router_aux_loss_coef 5e-4 (RouterRules::minimind3).
struct MiniMind3Knobs : Knobs<4, 2432, 4, 1, 0> {
    static constexpr bool qk_norm = true;
    static constexpr double rms_eps = 1e-6;
    static constexpr double aux_alpha = 5e-4;
    static constexpr RouterRules router = RouterRules::minimind3;
};
/// MiniMind-3: 8 layers x 768, 8 query heads and 4 KV heads of 96, q/k norm; about 64M parameters at vocabulary 6400.
using MiniMind3 = Model<8, 768, 8, false, MiniMind3Knobs>;
/// MiniMind-3's MoE: 4 routed experts, top-1, no shared expert.
using MiniMind3MoE = Model<8, 768, 8, true, MiniMind3Knobs>;
/// A model small enough for unit tests.
using TinyModel = Model<2, 32, 4, false, Knobs<2>>;
using TinyMoEModel = Model<2, 32, 4, true, Knobs<2>>;
/// TinyModel with MiniMind-3's q/k norm (a Qwen3 folder).
struct TinyQKNormKnobs : Knobs<2> {
    static constexpr bool qk_norm = true;
};
using TinyQKNormModel = Model<2, 32, 4, false, TinyQKNormKnobs>;
/// TinyQKNormModel as MiniMind-3-MoE: 4 experts, top-1, no shared expert, MiniMind-3's router (a Qwen3-MoE folder).
struct TinyMoE3Knobs : Knobs<2, 0, 4, 1, 0> {
    static constexpr bool qk_norm = true;
    static constexpr RouterRules router = RouterRules::minimind3;
};
using TinyMoE3Model = Model<2, 32, 4, true, TinyMoE3Knobs>;

}  // namespace minitrain
