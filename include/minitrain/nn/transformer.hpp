// minitrain/nn/transformer.hpp
// Transformer<Net, Backend>: the parameters of a Model policy and its forward pass (Llama / MiniMind).
//
//   embedding -> Layers x [RMSNorm -> GQA causal attention with RoPE -> residual;
//                          (with Net::qk_norm, RMSNorm on each head of q and of k before RoPE: MiniMind-3, Qwen3)
//                          RMSNorm -> SwiGLU MLP or MoE -> residual] -> RMSNorm -> lm_head (tied)
//
// Legend: B = batch, T = time, C = hidden, H = heads, KV = key/value heads, D = head dim, F = FFN size,
// V = vocabulary, E = experts, N = B*T tokens. Parameter names are Hugging Face Llama's, so a checkpoint
// is a Llama checkpoint; registration order is slab order, and gate_proj/up_proj are registered next to
// each other so that one GEMM computes both. attach() routes projections through LoRA adapters (nn/lora.hpp).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "../autograd/graph.hpp"
#include "../backend/cpu/ops.hpp"  // the default backend
#include "../memory/parameters.hpp"
#include "../ops/ops.hpp"
#include "lora.hpp"
#include "model.hpp"

namespace minitrain {

/// Keys and values of every layer for incremental decoding: (B, Tmax, KV, D) per layer.
template <class Backend>
struct KVCache {
    std::vector<Buffer<Backend>> k, v;
    int batch = 0, capacity = 0, length = 0;  // `length` positions are filled

    KVCache(int layers, int batch_size, int max_len, int kv_heads, int head_dim, DType dtype = DType::f32)
        : batch(batch_size), capacity(max_len) {
        for (int l = 0; l < layers; ++l) {
            k.emplace_back(Shape{batch_size, max_len, kv_heads, head_dim}, dtype);
            v.emplace_back(Shape{batch_size, max_len, kv_heads, head_dim}, dtype);
        }
    }
    void clear() { length = 0; }
};

template <ModelPolicy Net, class Backend = CPU>
class Transformer {
public:
    using net = Net;
    using backend = Backend;
    static constexpr int L = Net::layers, C = Net::hidden, H = Net::heads, KV = Net::kv_heads, D = Net::head_dim,
                         F = Net::ffn;

    struct MLP {
        Var *gate, *up, *down;  // (F, C), (F, C), (C, F)
    };
    struct Layer {
        Var *attn_norm, *wq, *wk, *wv, *wo, *mlp_norm;  // (C), (H*D, C), (KV*D, C), (KV*D, C), (C, H*D), (C)
        MLP mlp;                                        // dense layers
        Var *q_norm = nullptr, *k_norm = nullptr;       // (D), (D): Net::qk_norm only
        Var* router = nullptr;                          // (E, C), MoE layers
        std::vector<MLP> experts, shared;
    };

    /// What one forward pass produced. loss = ce + aux; all but logits are null without targets.
    struct Output {
        Var* logits = nullptr;  // (B, T, V)
        Var* loss = nullptr;    // (1)
        Var* ce = nullptr;      // (1) mean cross-entropy over non-ignored targets
        Var* aux = nullptr;     // (1) MoE balancing loss summed over layers (0 for dense models)
    };

    explicit Transformer(ModelConfig cfg) : cfg_(cfg) {
        MT_CHECK(cfg.vocab_size >= 1, "Transformer: vocab_size must be positive, got ", cfg.vocab_size);
        MT_CHECK(cfg.max_seq_len >= 1, "Transformer: max_seq_len must be positive, got ", cfg.max_seq_len);
        embed_ = &params_.add("model.embed_tokens.weight", {cfg.vocab_size, C});
        for (int i = 0; i < L; ++i) {
            std::string p = "model.layers." + std::to_string(i) + ".";
            Layer& l = layers_.emplace_back();
            l.attn_norm = &params_.add(p + "input_layernorm.weight", {C});
            l.wq = &params_.add(p + "self_attn.q_proj.weight", {H * D, C});
            l.wk = &params_.add(p + "self_attn.k_proj.weight", {KV * D, C});
            l.wv = &params_.add(p + "self_attn.v_proj.weight", {KV * D, C});
            l.wo = &params_.add(p + "self_attn.o_proj.weight", {C, H * D});
            if constexpr (Net::qk_norm) {  // Qwen3's names (MiniMind-3's convert script writes these)
                l.q_norm = &params_.add(p + "self_attn.q_norm.weight", {D});
                l.k_norm = &params_.add(p + "self_attn.k_norm.weight", {D});
            }
            l.mlp_norm = &params_.add(p + "post_attention_layernorm.weight", {C});
            if constexpr (Net::moe) {
                l.router = &params_.add(p + "mlp.gate.weight", {Net::experts, C});
                for (int e = 0; e < Net::experts; ++e)
                    l.experts.push_back(add_mlp(p + "mlp.experts." + std::to_string(e) + "."));
                for (int s = 0; s < Net::shared_experts; ++s)
                    l.shared.push_back(add_mlp(p + "mlp.shared_experts." + std::to_string(s) + "."));
            } else {
                l.mlp = add_mlp(p + "mlp.");
            }
        }
        norm_ = &params_.add("model.norm.weight", {C});
        params_.finalize();

        rope_cos_ = Buffer<Backend>(Shape{cfg.max_seq_len, D / 2}, DType::f32);
        rope_sin_ = Buffer<Backend>(Shape{cfg.max_seq_len, D / 2}, DType::f32);
        rope_table(Backend{}, rope_cos_.tensor(), rope_sin_.tensor(), Net::rope_theta);
    }

    /// Deterministic initialization from a seed, the same whatever the thread count: normal(0, init_std)
    /// for matrices, with the projections that write into the residual stream (o_proj, down_proj)
    /// scaled by 1/sqrt(2 * Layers) as GPT-2 does; RMSNorm gains 1.
    void init(std::uint64_t seed) {
        std::vector<float> host;
        std::uint64_t index = 0;
        for (auto& p : params_.all()) {
            host.resize(std::size_t(p.shape.numel()));
            Rng rng{seed, hash64(seed, index++) };
            const bool gain = p.shape.rank == 1;
            const bool residual = p.name.ends_with("o_proj.weight") || p.name.ends_with("down_proj.weight");
            const double std = Net::init_std / (residual ? std::sqrt(2.0 * L) : 1.0);
            for (auto& x : host) x = gain ? 1.0f : float(std * rng.normal());
            Backend::from_host(p.var.data, host.data());
        }
    }

    /// Forward pass over ids (B, T) i32. With targets (B, T) i32 (-100 = ignored) the loss is computed.
    /// With a cache, the ids continue the cached sequence (positions cache->length ...) and their keys
    /// and values are appended: incremental decoding.
    Output forward(Graph<Backend>& g, const Tensor& ids, const Tensor* targets = nullptr,
                   KVCache<Backend>* cache = nullptr) {
        Var* aux = nullptr;
        Var& xf = hidden(g, ids, cache, &aux);  // (B, T, C)
        Output out;
        out.logits = &linear(g, xf, *embed_);  // (B, T, V), lm_head tied to the embedding
        if (!targets) return out;
        MT_CHECK(targets->shape == ids.shape, "Transformer::forward: targets have shape ", targets->shape,
                 ", ids have ", ids.shape);
        out.ce = &cross_entropy(g, *out.logits, *targets);
        if (aux) {
            out.aux = aux;
            out.loss = &add(g, *out.ce, *aux);
        } else {
            out.loss = out.ce;
        }
        return out;
    }

    /// The final-norm hidden state (B, T, C): the forward pass without the output head (what a reward
    /// or value head reads, train/reward.hpp). `aux`, when given, receives the MoE balancing loss summed
    /// over layers (null for dense models). The cache works as in forward().
    Var& hidden(Graph<Backend>& g, const Tensor& ids, KVCache<Backend>* cache = nullptr, Var** aux_out = nullptr) {
        MT_CHECK(ids.shape.rank == 2 && ids.dtype == DType::i32, "Transformer::forward: ids must be (B, T) i32, got ",
                 ids.shape, " ", dtype_name(ids.dtype));
        const int Bn = int(ids.shape[0]), T = int(ids.shape[1]);
        const int pos0 = cache ? cache->length : 0;
        MT_CHECK(pos0 + T <= cfg_.max_seq_len, "Transformer::forward: positions ", pos0, "..", pos0 + T - 1,
                 " exceed max_seq_len ", cfg_.max_seq_len);
        if (cache)
            MT_CHECK(cache->batch == Bn && pos0 + T <= cache->capacity, "Transformer::forward: the KV cache holds ",
                     cache->batch, " x ", cache->capacity, " positions, asked for ", Bn, " x ", pos0 + T);

        Var* x = &dropout(g, embedding(g, ids, *embed_), dropout_);  // (B, T, C)
        Var* aux = nullptr;
        for (int i = 0; i < L; ++i) {
            Layer& l = layers_[std::size_t(i)];
            // attention block
            const LoRALayerAdapters* la = lora_ ? &lora_->layers[std::size_t(i)] : nullptr;  // attached adapters
            // Read only by q/k/v's products unless an adapter reads it too (bf16 storage: core/precision.hpp).
            const ReadBy h_readers = la && (la->q || la->k || la->v) ? ReadBy::any : ReadBy::matmuls;
            Var& h = rmsnorm(g, *x, *l.attn_norm, Net::rms_eps, h_readers);                        // (B, T, C)
            Var& hq = project(g, h, *l.wq, la ? &la->q : nullptr);                 // (B, T, H*D)
            Var& hk = project(g, h, *l.wk, la ? &la->k : nullptr);                 // (B, T, KV*D)
            Var& hv = project(g, h, *l.wv, la ? &la->v : nullptr);                 // (B, T, KV*D)
            Var* q4 = &reshape(g, hq, {Bn, T, H, D});                              // (B, T, H, D)
            Var* k4 = &reshape(g, hk, {Bn, T, KV, D});                             // (B, T, KV, D)
            if constexpr (Net::qk_norm) {  // each head's D values normalized on their own, one gain per dim
                q4 = &rmsnorm(g, *q4, *l.q_norm, Net::rms_eps);
                k4 = &rmsnorm(g, *k4, *l.k_norm, Net::rms_eps);
            }
            Var& q = rope(g, *q4, cos(), sin(), pos0);   // (B, T, H, D)
            Var& k = rope(g, *k4, cos(), sin(), pos0);  // (B, T, KV, D)
            Var& v = reshape(g, hv, {Bn, T, KV, D});                              // (B, T, KV, D)
            Var* a;
            if (cache) {
                append(*cache, i, k.data, v.data, pos0);
                a = &attention(g, q, g.leaf(cache->k[std::size_t(i)]), g.leaf(cache->v[std::size_t(i)]), pos0 + T);
            } else {
                a = &attention(g, q, k, v);  // (B, T, H, D)
            }
            Var& ho = project(g, reshape(g, *a, {Bn, T, H * D}), *l.wo, la ? &la->o : nullptr);  // (B, T, C)
            x = &add(g, *x, dropout(g, ho, dropout_));
            // feed-forward block
            // Read only by the fused gate|up product in a dense MLP without adapters on gate/up.
            const ReadBy h2_readers =
                Net::moe || (la && (la->mlp.gate || la->mlp.up)) ? ReadBy::any : ReadBy::matmuls;
            Var& h2 = rmsnorm(g, *x, *l.mlp_norm, Net::rms_eps, h2_readers);
            Var* f;
            if constexpr (Net::moe) {
                Var* layer_aux = nullptr;
                f = &moe_ffn(g, h2, l, la, Bn, layer_aux);
                aux = aux ? &add(g, *aux, *layer_aux) : layer_aux;
            } else {
                f = &mlp(g, h2, l.mlp, la ? &la->mlp : nullptr);
            }
            x = &add(g, *x, dropout(g, *f, dropout_));
        }
        if (cache) cache->length = pos0 + T;
        if (aux_out) *aux_out = aux;
        return rmsnorm(g, *x, *norm_, Net::rms_eps);  // (B, T, C)
    }

    /// Dropout on the embeddings and on each block's output before the residual add (MiniMind's
    /// placement); active only while the graph is in training mode.
    void set_dropout(double p) {
        MT_CHECK(p >= 0 && p < 1, "Transformer: dropout must be in [0, 1), got ", p);
        dropout_ = p;
    }
    double dropout_rate() const { return dropout_; }

    /// Routes the projections `adapters` names through LoRA adapters (nn/lora.hpp; LoRAAdapters calls
    /// this) until detach(). The table must outlive the attachment.
    void attach(const LoRATable& adapters) {
        MT_CHECK(adapters.layers.size() == std::size_t(L), "Transformer::attach: the LoRA table has ",
                 adapters.layers.size(), " layers, the model ", L);
        lora_ = &adapters;
    }
    void detach() { lora_ = nullptr; }
    const LoRATable* adapters() const { return lora_; }

    ParameterSet<Backend>& params() { return params_; }
    const ParameterSet<Backend>& params() const { return params_; }
    const ModelConfig& config() const { return cfg_; }
    std::vector<Layer>& layers() { return layers_; }
    Var& embed() { return *embed_; }
    Var& final_norm() { return *norm_; }

    /// A KV cache sized for this model.
    KVCache<Backend> make_cache(int batch, int max_len = 0) const {
        return KVCache<Backend>(L, batch, max_len ? max_len : cfg_.max_seq_len, KV, D);
    }

private:
    MLP add_mlp(const std::string& prefix) {
        MLP m;
        m.gate = &params_.add(prefix + "gate_proj.weight", {F, C});
        m.up = &params_.add(prefix + "up_proj.weight", {F, C});  // right after gate: [gate; up] is one (2F, C) matrix
        m.down = &params_.add(prefix + "down_proj.weight", {C, F});
        return m;
    }

    const Tensor& cos() const { return rope_cos_.tensor(); }
    const Tensor& sin() const { return rope_sin_.tensor(); }

    /// [gate; up] as one (2F, C) parameter: both are adjacent in the data slab and, when trainable, in
    /// the gradient slab, so a single GEMM computes both projections.
    static Var& gate_up(Graph<Backend>& g, const MLP& m) {
        MT_CHECK(m.gate->requires_grad == m.up->requires_grad,
                 "Transformer: gate_proj and up_proj must be frozen or trained together");
        auto adjacent = [](const Tensor& a, const Tensor& b) {
            return static_cast<const std::byte*>(a.ptr) + a.bytes() == static_cast<const std::byte*>(b.ptr);
        };
        MT_CHECK(adjacent(m.gate->data, m.up->data), "Transformer: gate_proj and up_proj are not adjacent");
        Tensor both = m.gate->data;
        both.shape = Shape{2 * F, C};
        Var& v = g.leaf(both, m.gate->requires_grad);
        if (v.requires_grad) {
            MT_CHECK(adjacent(m.gate->grad, m.up->grad), "Transformer: gate_proj and up_proj gradients are not adjacent");
            v.grad = m.gate->grad;
            v.grad.shape = Shape{2 * F, C};
            v.persistent_grad = true;
        }
        return v;
    }

    /// x W^T, through the adapter `a` when one is attached for this projection.
    Var& project(Graph<Backend>& g, Var& x, Var& w, const LoRAAdapter* a) {
        if (!a || !*a) return linear(g, x, w);
        return lora_linear(g, x, w, a, 1, lora_->scaling, lora_->dropout);
    }

    /// SwiGLU MLP: down(silu(gate x) * up x).   x: (..., C) -> (..., C)
    /// With adapters on gate and/or up, the fused product adds each adapter's update into its half.
    Var& mlp(Graph<Backend>& g, Var& x, const MLP& m, const LoRAMLPAdapters* a) {
        Var* h;
        if (a && (a->gate || a->up)) {
            const LoRAAdapter parts[2] = {a->gate, a->up};
            h = &lora_linear(g, x, gate_up(g, m), parts, 2, lora_->scaling, lora_->dropout);  // (..., 2F)
        } else {
            h = &linear(g, x, gate_up(g, m));  // (..., 2F)
        }
        // down_proj's product is swiglu's only reader unless an adapter on down reads it too.
        return project(g, swiglu(g, *h, a && a->down ? ReadBy::any : ReadBy::matmuls), *m.down, a ? &a->down : nullptr);
    }

    /// MiniMind's MOEFeedForward: routed experts (top-k of E, renormalized) plus shared experts.
    Var& moe_ffn(Graph<Backend>& g, Var& x, Layer& l, const LoRALayerAdapters* la, int batch, Var*& aux) {
        // Expert adapters exist only when the MLP projections are targeted.
        auto adapters = [&](bool shared, std::size_t e) -> const LoRAMLPAdapters* {
            if (!la) return nullptr;
            const auto& v = shared ? la->shared : la->experts;
            return e < v.size() ? &v[e] : nullptr;
        };
        Var& xf = reshape(g, x, {x.data.shape.rows(), C});  // (N, C)
        Var& logits = linear(g, xf, *l.router);              // (N, E)
        Routing r = moe_router(g, logits, batch, Net::top_k, Net::norm_topk, Net::aux_alpha, Net::router);
        Dispatch d = moe_dispatch(g, xf, r.indices, Net::experts);
        Var& ye = moe_experts(g, d, [&](Graph<Backend>& g, int e, Var& in) -> Var& {
            return mlp(g, in, l.experts[std::size_t(e)], adapters(false, std::size_t(e)));
        });
        Var* y = &moe_combine(g, ye, r.weights, d.slot);  // (N, C)
        for (std::size_t s = 0; s < l.shared.size(); ++s)
            y = &add(g, *y, mlp(g, xf, l.shared[s], adapters(true, s)));
        aux = &r.aux;
        return reshape(g, *y, x.data.shape);
    }

    /// Copy the new positions' keys and values (B, T, KV, D) into the cache at pos0.
    static void append(KVCache<Backend>& cache, int layer, const Tensor& k, const Tensor& v, int pos0) {
        const std::int64_t Bn = k.shape[0], T = k.shape[1];
        for (std::int64_t b = 0; b < Bn; ++b) {
            auto rows = [&](const Tensor& t, std::int64_t cap, std::int64_t at, std::int64_t n) {
                return t.view(Shape{t.shape[0] * t.shape[1], KV * D}).rows(b * cap + at, b * cap + at + n);
            };
            Backend::copy(rows(cache.k[std::size_t(layer)], cache.capacity, pos0, T), rows(k, T, 0, T));
            Backend::copy(rows(cache.v[std::size_t(layer)], cache.capacity, pos0, T), rows(v, T, 0, T));
        }
    }

    ModelConfig cfg_;
    ParameterSet<Backend> params_;
    Var *embed_ = nullptr, *norm_ = nullptr;
    std::vector<Layer> layers_;
    Buffer<Backend> rope_cos_, rope_sin_;
    double dropout_ = 0.0;
    const LoRATable* lora_ = nullptr;  // attached LoRA adapters, or none
};

}  // namespace minitrain
