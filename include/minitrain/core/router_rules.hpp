// minitrain/core/router_rules.hpp
// Which MoE gate the router imitates: a knob of the Model policy (nn/model.hpp) that ops/moe.hpp applies.
#pragma once

namespace minitrain {

/// Whose gate the router imitates. The two differ in top-1 renormalization and in the balancing loss's scope:
///   minimind2  MiniMind2's MoEGate: weights renormalized only when K > 1 (a top-1 weight is its score);
///              aux = alpha * mean_b sum_e ce[b, e] * mean_t scores[b, t, e], ce[b, e] = picks of e in
///              sequence b / (T*K/E)  (seq_aux, one loss per sequence).
///   minimind3  MiniMind-3's MOEFeedForward: weights renormalized for every K, as in Qwen3-MoE and llama.cpp's
///              qwen3moe (a top-1 weight is then exactly 1, and the gate learns from aux alone); per layer,
///              aux = alpha * E * sum_e load[e] * mean_n scores[n, e] over all N tokens of the batch,
///              load[e] = picks of e / N (transformers' Qwen3-MoE pools all layers' tokens into one such loss
///              instead; MiniMind-3 sums the layers' losses, as here). That is minimind2's formula with one "sequence" of N tokens and
///              alpha * K, which is how it is computed here (one kernel for both).
enum class RouterRules { minimind2, minimind3 };

}  // namespace minitrain
