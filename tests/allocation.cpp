// A steady-state training step makes no heap allocation: every operator new in this executable is
// counted, and the count must not move during steps after the first few.
#include <atomic>
#include <cstdlib>
#include <new>

#include <minitrain/nn/transformer.hpp>
#include <minitrain/optim/adamw.hpp>
#include <minitrain/optim/clip.hpp>

#include "support/gradcheck.hpp"

#include "support/count_allocations.hpp"

using namespace minitrain;
using namespace mt_test;

TEST_CASE("the allocation counter sees allocations (so a zero below means something)") {
    long before = allocations_now();
    Graph<CPU> g;  // an arena and a reserved tape
    Buffer<CPU> b({16}, DType::f32);
    CHECK(allocations_now() > before);
    // Blocks of CPU::map_bytes and more are mapped by the backend itself; they count too.
    const long mapped = CPU::mapped_allocations();
    Buffer<CPU> big({std::int64_t(CPU::map_bytes / 4)}, DType::f32);
    CHECK(CPU::mapped_allocations() == mapped + 1);
    big.data<float>()[CPU::map_bytes / 4 - 1] = 1.0f;  // the whole block is writable
    CHECK(reinterpret_cast<std::uintptr_t>(big.data<float>()) % CPU::alignment == 0);
}

TEST_CASE("steady-state forward + backward of a residual MLP stack allocates nothing") {
    Rng rng{31};
    const int B = 4, T = 8, C = 16, F = 24, L = 3;
    ParameterSet<CPU> ps;
    std::vector<Var*> up, down;
    for (int l = 0; l < L; ++l) {
        up.push_back(&ps.add("up" + std::to_string(l), {F, C}));
        down.push_back(&ps.add("down" + std::to_string(l), {C, F}));
    }
    ps.finalize();
    for (std::size_t i = 0; i < ps.count(); ++i) ps.data().data<float>()[i] = float(rng.normal() * 0.2);
    auto x = randn({B, T, C}, rng, 1.0, DType::f32);
    auto seed = randn({B * T, C}, rng, 1.0, DType::f32);

    Graph<CPU> g;
    auto step = [&] {
        g.reset();
        Var* h = &g.leaf(x);
        for (int l = 0; l < L; ++l) h = &add(g, *h, linear(g, linear(g, *h, *up[l]), *down[l]));
        g.backward(reshape(g, *h, Shape{B * T, C}), seed);
    };
    for (int warm = 0; warm < 3; ++warm) step();
    long before = allocations_now();
    for (int i = 0; i < 5; ++i) step();
    CHECK(allocations_now() - before == 0);
}

namespace {
/// Full training steps of a model: forward, backward, clipping, AdamW. Returns heap allocations made
/// by the steps after the warm-up ones.
template <class Net>
long allocations_in_steady_training_steps() {
    Transformer<Net> model(ModelConfig{97, 32});
    model.init(1);
    Optimizer<AdamW> opt(model.params());
    Rng rng{2};
    auto ids = randint({3, 32}, rng, 0, 97), targets = randint({3, 32}, rng, 0, 97);
    targets.data<std::int32_t>()[5] = -100;
    Graph<CPU> g;
    auto step = [&] {
        g.reset();
        model.params().zero_grad();
        auto out = model.forward(g, ids, &targets.tensor());
        g.backward(*out.loss);
        clip_grad_norm(model.params(), 1.0);
        opt.step(1e-3);
    };
    for (int warm = 0; warm < 3; ++warm) step();
    long before = allocations_now();
    for (int i = 0; i < 3; ++i) step();
    return allocations_now() - before;
}
}  // namespace

TEST_CASE("steady-state training step of the dense model allocates nothing") {
    CHECK(allocations_in_steady_training_steps<Model<2, 64, 4, false, Knobs<2>>>() == 0);
}

TEST_CASE("steady-state training step of the MoE model allocates nothing") {
    CHECK(allocations_in_steady_training_steps<Model<2, 64, 4, true, Knobs<2>>>() == 0);
}
