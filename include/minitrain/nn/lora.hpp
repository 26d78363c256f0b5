// minitrain/nn/lora.hpp
// LoRA (Hu et al. 2021) the way PEFT does it: every target projection W (out, in) of a frozen model gets
// two small trainable matrices A (r, in) and B (out, r), and computes
//
//     y = x W^T + scaling * ((dropout(x) A^T) B^T),        scaling = lora_alpha / r
//
// A starts kaiming-uniform (PEFT's init_lora_weights=True: uniform(-1/sqrt(in), 1/sqrt(in))) and B at
// zero, so the adapted model computes exactly what the base computes until the first update.
//
// The adapters live in their own ParameterSet: one data slab for every A and B, one gradient slab, and
// an optimizer built over that set sizes its state for the adapters only. The base model's set is frozen
// as a whole (no gradient slab, no optimizer state), and because a frozen weight needs no gradient,
// `linear` and the fused LoRA product below do no weight-gradient work for it at all.
//
// What is here:
//   LoRATarget, LoRATargets<...>, LoRAAttention, LoRAAttentionMLP   which projections are adapted
//   LoRA<Rank, Alpha, Targets, Base>   the policy (declared here; its task side is train/lora.hpp)
//   lora_linear(g, x, W, parts, n, scaling, dropout)   the differentiable adapted projection
//   lora_forward / lora_backward (CPU)                  its kernels
//   LoRATable        what Transformer::attach() consults in forward (per layer, per target: A and B)
//   LoRAAdapters<Policy, Model>   builds, owns and initializes the adapters of one model and attaches them
// Saving, loading and merging in PEFT's format: io/peft.hpp.
//
// Legend: N = rows (batch x time), K = input features, M = output features of the (possibly fused)
// weight, P = parts of a fused weight (gate|up: 2), Mp = M / P, R = rank.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>
#include <vector>

#include "../autograd/graph.hpp"
#include "../backend/cpu/ops.hpp"
#include "../backend/cpu/optim.hpp"  // scale()
#include "../memory/parameters.hpp"
#include "../ops/ops.hpp"

namespace minitrain {

// ---- target sets ------------------------------------------------------------------------------------

/// A projection LoRA can adapt, named as PEFT's target_modules names it. In an MoE layer the MLP
/// targets adapt every routed expert's and every shared expert's projection (the router is never adapted).
enum class LoRATarget : unsigned {
    q_proj = 1u << 0,
    k_proj = 1u << 1,
    v_proj = 1u << 2,
    o_proj = 1u << 3,
    gate_proj = 1u << 4,
    up_proj = 1u << 5,
    down_proj = 1u << 6,
};

inline constexpr int lora_target_count = 7;
/// PEFT's module name of target bit i.
inline constexpr const char* lora_target_names[lora_target_count] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                                     "gate_proj", "up_proj", "down_proj"};

/// A custom target set: `LoRATargets<LoRATarget::q_proj, LoRATarget::v_proj>` (the original paper's).
template <LoRATarget... Ts>
struct LoRATargets {
    static_assert(sizeof...(Ts) >= 1, "LoRATargets<...>: name at least one projection to adapt");
    static constexpr unsigned mask = (0u | ... | unsigned(Ts));
};

/// The default: the four attention projections.
struct LoRAAttention : LoRATargets<LoRATarget::q_proj, LoRATarget::k_proj, LoRATarget::v_proj, LoRATarget::o_proj> {};
/// Attention and MLP projections (for MoE models: every expert's and shared expert's MLP too).
struct LoRAAttentionMLP
    : LoRATargets<LoRATarget::q_proj, LoRATarget::k_proj, LoRATarget::v_proj, LoRATarget::o_proj,
                  LoRATarget::gate_proj, LoRATarget::up_proj, LoRATarget::down_proj> {};

/// A target set: a type with a non-empty `static constexpr unsigned mask` of LoRATarget bits.
template <class T>
concept LoRATargetSet = requires {
    { T::mask } -> std::convertible_to<unsigned>;
} && (T::mask != 0u) && (T::mask < (1u << lora_target_count));

// ---- the policy -------------------------------------------------------------------------------------

struct SFT;  // train/sft.hpp

/// LoRA<Rank, Alpha, Targets, Base>: rank r, lora_alpha (scaling = Alpha / Rank, PEFT's default), the
/// adapted projections, and the task it fine-tunes with (train/lora.hpp defines the policy; as a Trainer
/// task it wraps Base's objective). Code below reads it through lora_policy, which never instantiates
/// it, so adapters can be built, saved and merged without the task side.
template <int Rank, int Alpha = 2 * Rank, class Targets = LoRAAttention, class Base = SFT>
struct LoRA;

/// What nn/ and io/ read of a LoRA policy: rank, alpha, scaling, target set. Any type with
/// `rank`, `alpha` and `targets` works; LoRA<...> is read from its template arguments.
template <class P>
struct lora_policy {
    static constexpr int rank = P::rank;
    static constexpr int alpha = P::alpha;
    using targets = typename P::targets;
    static constexpr double scaling = double(alpha) / double(rank);
};
template <int R, int A, class T, class B>
struct lora_policy<LoRA<R, A, T, B>> {
    static_assert(R >= 1, "LoRA<Rank, ...>: Rank must be at least 1: the adapters are (out x Rank) and "
                          "(Rank x in) matrices");
    static_assert(A >= 1, "LoRA<Rank, Alpha, ...>: Alpha must be at least 1: the update is scaled by "
                          "Alpha / Rank, so 0 would switch the adapters off");
    static_assert(LoRATargetSet<T>, "LoRA<Rank, Alpha, Targets>: Targets must be LoRAAttention, LoRAAttentionMLP "
                                    "or LoRATargets<LoRATarget::..., ...>");
    static constexpr int rank = R;
    static constexpr int alpha = A;
    using targets = T;
    static constexpr double scaling = double(A) / double(R);
};

// ---- the table the Transformer consults -------------------------------------------------------------

/// The adapter of one projection: A (R, in) and B (out, R), Vars of the adapter ParameterSet.
/// Both null: the projection is not adapted.
struct LoRAAdapter {
    Var* A = nullptr;
    Var* B = nullptr;
    explicit operator bool() const { return A != nullptr; }
};

struct LoRAMLPAdapters {
    LoRAAdapter gate, up, down;
};

struct LoRALayerAdapters {
    LoRAAdapter q, k, v, o;
    LoRAMLPAdapters mlp;                          // dense layers
    std::vector<LoRAMLPAdapters> experts, shared;  // MoE layers (empty when the MLP is not targeted)
};

/// Everything a forward pass needs to route projections through adapters (Transformer::attach).
struct LoRATable {
    double scaling = 1.0;
    double dropout = 0.0;  // on the adapters' input, training mode only (PEFT's lora_dropout)
    std::vector<LoRALayerAdapters> layers;
};

// ---- CPU kernels ------------------------------------------------------------------------------------
// (The CUDA pair is backend/cuda/lora.hpp; the CPU pair could move to backend/cpu/lora.hpp. They write
// through a row stride, which no other kernel exposes: the gate|up fused product adds each adapter's
// update into its own half of the (N, 2F) output.)

/// u = scaling * xd A^T;   y[:, col0 : col0 + Mp] += u B^T.
/// xd: (N, K)  A: (R, K)  B: (Mp, R)  u: (N, R) saved for the backward  y: (N, M), M >= col0 + Mp.
inline void lora_forward(CPU, const Tensor& y, const Tensor& u, const Tensor& xd, const Tensor& a, const Tensor& b,
                         std::int64_t col0, double scaling) {
    const std::int64_t N = xd.shape.rows(), K = xd.shape.cols(), R = a.shape[0], Mp = b.shape[0], M = y.shape.cols();
    MT_CHECK(a.shape.rank == 2 && a.shape[1] == K, "lora: A has shape ", a.shape, ", input has ", K, " features");
    MT_CHECK(b.shape.rank == 2 && b.shape[1] == R, "lora: B has shape ", b.shape, ", A has rank ", R);
    MT_CHECK(col0 >= 0 && col0 + Mp <= M && y.shape.rows() == N, "lora: B's ", Mp, " outputs at column ", col0,
             " do not fit the output ", y.shape);
    check_shape(u, Shape{N, R}, "lora", "u");
    dispatch_floating(xd.dtype, "lora", [&]<class T>() {
        cpu::autocast_gemm<T>(false, true, N, R, K, xd.data<T>(), K, a.data<T>(), K, u.data<T>(), R, false);
        scale(CPU{}, u, scaling);
        cpu::autocast_gemm<T>(false, true, N, Mp, R, u.data<T>(), R, b.data<T>(), R, y.data<T>() + col0, M, true);
    });
}

/// With dy_j = dy[:, col0 : col0 + Mp] and u = scaling * xd A^T from the forward:
///   dB += dy_j^T u      du = scaling * dy_j B      dA += du^T xd      dxd (=|+=) du A
/// du: (N, R) scratch. Undefined destinations are skipped (and du is not computed when neither dA nor
/// dxd needs it).
inline void lora_backward(CPU, GradOut dxd, GradOut da, GradOut db, const Tensor& du, const Tensor& xd, const Tensor& a,
                          const Tensor& b, const Tensor& u, const Tensor& dy, std::int64_t col0, double scaling) {
    const std::int64_t N = xd.shape.rows(), K = xd.shape.cols(), R = a.shape[0], Mp = b.shape[0], M = dy.shape.cols();
    dispatch_floating(xd.dtype, "lora_backward", [&]<class T>() {
        const T* DY = dy.data<T>() + col0;  // (N, Mp) with row stride M
        if (db) cpu::autocast_gemm<T>(true, false, Mp, R, N, DY, M, u.data<T>(), R, db.t.data<T>(), R, db.accumulate);
        if (!da && !dxd) return;
        cpu::autocast_gemm<T>(false, false, N, R, Mp, DY, M, b.data<T>(), R, du.data<T>(), R, false);
        scale(CPU{}, du, scaling);
        if (da) cpu::autocast_gemm<T>(true, false, R, K, N, du.data<T>(), R, xd.data<T>(), K, da.t.data<T>(), K, da.accumulate);
        if (dxd) cpu::autocast_gemm<T>(false, false, N, K, R, du.data<T>(), R, a.data<T>(), K, dxd.t.data<T>(), K, dxd.accumulate);
    });
}

// ---- the op -----------------------------------------------------------------------------------------

/// y = x W^T, plus for each adapted part j of W's output rows [j Mp, (j+1) Mp):
///     y[..., j Mp : (j+1) Mp] += scaling * (dropout(x) A_j^T) B_j^T.
/// x: (..., K)  W: (M, K)  parts: n in {1, 2} adapters (A_j (R, K), B_j (Mp, R), Mp = M / n; an empty one
/// leaves its part unadapted)  ->  y: (..., M). n = 2 is the fused gate|up projection: one GEMM for the
/// base product, each adapter's update added into its half. Dropout (p > 0, training mode) draws one mask
/// over x shared by the parts; the backward regenerates it. A frozen W gets no gradient work.
template <class B>
Var& lora_linear(Graph<B>& g, Var& x, Var& w, const LoRAAdapter* parts, int n, double scaling, double p) {
    MT_CHECK(n == 1 || n == 2, "lora_linear: a weight has 1 or 2 adapted parts, got ", n);
    MT_CHECK(p >= 0 && p < 1, "lora_linear: dropout must be in [0, 1), got ", p);
    const std::int64_t N = x.data.shape.rows(), K = x.data.shape.cols(), M = w.data.shape[0];
    MT_CHECK(M % n == 0, "lora_linear: ", M, " outputs do not split into ", n, " parts");
    const std::int64_t Mp = M / n;
    struct Saved {  // what the backward needs besides x, W and y (trivially destructible)
        Var* a[2] = {nullptr, nullptr};
        Var* b[2] = {nullptr, nullptr};
        Tensor u[2];  // (N, R) scaling * xd A_j^T
        Tensor xd;    // (N, K) the adapters' input: x itself, or its dropout
        std::int64_t R = 0;
        bool drop = false;
        std::uint64_t seed = 0, offset = 0;
    } s;
    bool rg = g.needs_grad(x, w), any = false;
    for (int j = 0; j < n; ++j) {
        if (!parts[j]) continue;
        const Tensor &a = parts[j].A->data, &b = parts[j].B->data;
        MT_CHECK(a.shape.rank == 2 && a.shape[1] == K && b.shape.rank == 2 && b.shape[0] == Mp &&
                     b.shape[1] == a.shape[0] && (!any || a.shape[0] == s.R),
                 "lora_linear: adapter ", j, " has A ", a.shape, " and B ", b.shape, " for a part of ", Mp, " x ", K);
        s.a[j] = parts[j].A;
        s.b[j] = parts[j].B;
        s.R = a.shape[0];
        rg = rg || g.needs_grad(*parts[j].A, *parts[j].B);
        any = true;
    }
    if (!any) return linear(g, x, w);

    Shape ys = x.data.shape;
    ys.dims[ys.rank - 1] = M;
    Var& y = g.make(ys, x.data.dtype, rg);
    linear_forward(B{}, y.data, x.data, w.data);
    s.xd = x.data.view(Shape{N, K});
    s.drop = p > 0 && g.training();
    if (s.drop) {
        s.seed = g.rng().seed;
        s.offset = g.rng().skip(std::uint64_t(N * K));
        s.xd = g.scratch(Shape{N, K}, x.data.dtype);
        dropout_forward(B{}, s.xd, x.data.view(Shape{N, K}), p, s.seed, s.offset);
    }
    const Tensor y2 = y.data.view(Shape{N, M});
    for (int j = 0; j < n; ++j) {
        if (!s.a[j]) continue;
        s.u[j] = g.scratch(Shape{N, s.R}, x.data.dtype);
        lora_forward(B{}, y2, s.u[j], s.xd, s.a[j]->data, s.b[j]->data, j * Mp, scaling);
    }
    if (y.requires_grad)
        g.record({&y}, [px = &x, pw = &w, py = &y, s, n, Mp, N, K, M, scaling, p](Graph<B>& g) {
            GradOut dx = g.grad_of(*px);
            GradOut dw = g.grad_of(*pw);
            linear_backward(B{}, dx, dw, px->data, pw->data, py->grad);
            // The adapters' input gradient: straight into dx (after the base wrote it), or through the mask.
            GradOut dxd;
            if (dx) dxd = s.drop ? GradOut{g.scratch(Shape{N, K}, px->data.dtype), false} : GradOut{dx.t.view(Shape{N, K}), true};
            const Tensor dy = py->grad.view(Shape{N, M});
            const Tensor du = g.scratch(Shape{N, s.R}, px->data.dtype);  // (N, R)
            for (int j = 0; j < n; ++j) {
                if (!s.a[j]) continue;
                GradOut da = g.grad_of(*s.a[j]);
                GradOut db = g.grad_of(*s.b[j]);
                lora_backward(B{}, dxd, da, db, du, s.xd, s.a[j]->data, s.b[j]->data, s.u[j], dy, j * Mp, scaling);
                if (dxd) dxd.accumulate = true;
            }
            if (dx && s.drop) dropout_backward(B{}, GradOut{dx.t.view(Shape{N, K}), true}, dxd.t, p, s.seed, s.offset);
        });
    return y;
}

// ---- the adapters of one model ----------------------------------------------------------------------

/// LoRAAdapters<Policy, Model>: the adapters of `model` for a LoRA policy, in their own ParameterSet,
/// named as PEFT saves them ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"). Like
/// PEFT's get_peft_model, construction freezes the whole base model and attaches the adapters, so that
/// model.forward() computes the adapted model. Registration (slab) order: layer by layer; within a layer
/// q, k, v, o, then the MLP (dense), or each routed expert then each shared expert (MoE) as gate, up,
/// down; lora_A before lora_B. The adapters must not outlive the model; destruction detaches them.
template <class Policy, class Model>
class LoRAAdapters {
public:
    using policy = lora_policy<Policy>;
    using targets = typename policy::targets;
    using Backend = typename Model::backend;
    using Net = typename Model::net;
    static constexpr int rank = policy::rank;
    static constexpr int alpha = policy::alpha;
    static constexpr double scaling = policy::scaling;

    /// One adapted projection: the base module's HF name ("model.layers.0.self_attn.q_proj"), its weight
    /// and its adapter.
    struct Site {
        std::string module;
        Var* weight;
        LoRAAdapter adapter;
    };

    /// Builds the adapters (A from `seed`, B = 0), freezes model.params() entirely and attaches.
    explicit LoRAAdapters(Model& model, std::uint64_t seed = 0, double dropout = 0.0) : model_(model) {
        set_dropout(dropout);
        table_.scaling = scaling;
        constexpr bool mlp = (targets::mask & (unsigned(LoRATarget::gate_proj) | unsigned(LoRATarget::up_proj) |
                                               unsigned(LoRATarget::down_proj))) != 0;
        auto& layers = model.layers();
        table_.layers.resize(layers.size());
        for (std::size_t i = 0; i < layers.size(); ++i) {
            auto& l = layers[i];
            LoRALayerAdapters& t = table_.layers[i];
            const std::string p = "model.layers." + std::to_string(i) + ".";
            add(t.q, LoRATarget::q_proj, p + "self_attn.q_proj", l.wq);
            add(t.k, LoRATarget::k_proj, p + "self_attn.k_proj", l.wk);
            add(t.v, LoRATarget::v_proj, p + "self_attn.v_proj", l.wv);
            add(t.o, LoRATarget::o_proj, p + "self_attn.o_proj", l.wo);
            if (!mlp) continue;
            if constexpr (Net::moe) {
                t.experts.resize(l.experts.size());
                t.shared.resize(l.shared.size());
                for (std::size_t e = 0; e < l.experts.size(); ++e)
                    add_mlp(t.experts[e], p + "mlp.experts." + std::to_string(e) + ".", l.experts[e]);
                for (std::size_t e = 0; e < l.shared.size(); ++e)
                    add_mlp(t.shared[e], p + "mlp.shared_experts." + std::to_string(e) + ".", l.shared[e]);
            } else {
                add_mlp(t.mlp, p + "mlp.", l.mlp);
            }
        }
        params_.finalize();
        init(seed);
        model.params().freeze_all();
        attach();
    }
    ~LoRAAdapters() { detach(); }
    LoRAAdapters(const LoRAAdapters&) = delete;
    LoRAAdapters& operator=(const LoRAAdapters&) = delete;

    /// PEFT's initialization, deterministic from a seed whatever the thread count: every A uniform in
    /// (-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)), every B zero.
    void init(std::uint64_t seed) {
        std::vector<float> host;
        std::uint64_t index = 0;
        for (auto& p : params_.all()) {
            host.assign(std::size_t(p.shape.numel()), 0.0f);
            Rng rng{seed, hash64(seed, index++)};
            if (p.name.ends_with(".lora_A.weight")) {
                const double bound = 1.0 / std::sqrt(double(p.shape[1]));
                for (auto& x : host) x = float(bound * (2.0 * rng.uniform() - 1.0));
            }
            Backend::from_host(p.var.data, host.data());
        }
    }

    /// Route the model's target projections through the adapters (construction does it) / stop doing so.
    void attach() { model_.attach(table_); }
    void detach() {
        if (model_.adapters() == &table_) model_.detach();
    }
    bool attached() const { return model_.adapters() == &table_; }

    /// Dropout on the adapters' input (PEFT's lora_dropout), active in training mode only.
    void set_dropout(double p) {
        MT_CHECK(p >= 0 && p < 1, "LoRA: dropout must be in [0, 1), got ", p);
        table_.dropout = p;
    }
    double dropout() const { return table_.dropout; }

    ParameterSet<Backend>& params() { return params_; }
    const ParameterSet<Backend>& params() const { return params_; }
    Model& model() { return model_; }
    const Model& model() const { return model_; }
    const LoRATable& table() const { return table_; }
    const std::vector<Site>& sites() const { return sites_; }

    /// PEFT's target_modules: the targeted module names, in LoRATarget order.
    static std::vector<std::string> target_modules() {
        std::vector<std::string> out;
        for (int i = 0; i < lora_target_count; ++i)
            if (targets::mask & (1u << i)) out.emplace_back(lora_target_names[i]);
        return out;
    }

    /// "base_model.model.<module>.lora_A.weight" (which = 'A') or lora_B: the name PEFT saves it under.
    static std::string peft_name(const std::string& module, char which) {
        return "base_model.model." + module + ".lora_" + which + ".weight";
    }

private:
    /// Registers A and B for `module` when its target is selected, and points the table slot at them
    /// (a ParameterSet's Vars never move; their storage is assigned by finalize()).
    void add(LoRAAdapter& slot, LoRATarget t, const std::string& module, Var* weight) {
        if (!(targets::mask & unsigned(t))) return;
        const Shape ws = weight->data.shape;  // (out, in)
        Var& a = params_.add(peft_name(module, 'A'), Shape{rank, ws[1]});  // (R, in)
        Var& b = params_.add(peft_name(module, 'B'), Shape{ws[0], rank});  // (out, R)
        slot = LoRAAdapter{&a, &b};
        sites_.push_back({module, weight, slot});
    }
    template <class MLP>
    void add_mlp(LoRAMLPAdapters& a, const std::string& prefix, const MLP& m) {
        add(a.gate, LoRATarget::gate_proj, prefix + "gate_proj", m.gate);
        add(a.up, LoRATarget::up_proj, prefix + "up_proj", m.up);
        add(a.down, LoRATarget::down_proj, prefix + "down_proj", m.down);
    }

    Model& model_;
    ParameterSet<Backend> params_;
    std::vector<Site> sites_;
    LoRATable table_;
};

}  // namespace minitrain
