// The tape: accumulation across backward passes, no-grad scopes, frozen parameters, skipped branches,
// and the memory rules (arena reuse, recycled activation gradients).
#include "support/gradcheck.hpp"

using namespace minitrain;
using namespace mt_test;

namespace {

// A two-layer chain with a residual: y = x + (x w1^T) w2^T, loss seeded with `upstream`.
struct Net {
    ParameterSet<CPU> ps;
    Var* w1;
    Var* w2;
    Net(int C, int F, Rng& rng) {
        w1 = &ps.add("w1", {F, C});
        w2 = &ps.add("w2", {C, F});
        ps.finalize();
        for (std::int64_t i = 0; i < std::int64_t(ps.count()); ++i) ps.data().data<float>()[i] = float(rng.normal() * 0.3);
    }
    Var& forward(Graph<CPU>& g, Var& x) { return add(g, x, linear(g, linear(g, x, *w1), *w2)); }
};

std::vector<double> grads_of(ParameterSet<CPU>& ps) { return to_vector(ps.grads()); }

}  // namespace

TEST_CASE("parameter gradients accumulate over two backward passes; activation gradients do not") {
    Rng rng{21};
    Net net(6, 10, rng);
    auto x = randn({5, 6}, rng, 1.0, DType::f32);
    auto up = randn({5, 6}, rng, 1.0, DType::f32);
    Graph<CPU> g;

    Var& xv = g.leaf(x, true);
    g.backward(net.forward(g, xv), up);
    auto once = grads_of(net.ps);
    auto dx_once = to_vector(xv.grad);
    CHECK(g.tape_size() == 0);  // the tape is cleared by backward

    g.reset();
    Var& xv2 = g.leaf(x, true);
    g.backward(net.forward(g, xv2), up);
    auto twice = grads_of(net.ps);
    std::vector<double> doubled(once.size());
    for (std::size_t i = 0; i < once.size(); ++i) doubled[i] = 2 * once[i];
    check_close(twice, doubled, 1e-6, 1e-7, "parameter gradients after two passes");
    check_close(to_vector(xv2.grad), dx_once, 1e-6, 1e-7, "input gradient of the second pass alone");

    net.ps.zero_grad();
    for (double v : grads_of(net.ps)) REQUIRE(v == 0.0);
}

TEST_CASE("micro-batch accumulation with a loss scale equals the full-batch gradient") {
    Rng rng{22};
    Net net(4, 7, rng);
    auto x = randn({8, 4}, rng, 1.0, DType::f32);
    auto up = randn({8, 4}, rng, 1.0, DType::f32);
    Graph<CPU> g;
    g.backward(net.forward(g, g.leaf(x, false)), up);
    auto full = grads_of(net.ps);
    net.ps.zero_grad();
    for (int half = 0; half < 2; ++half) {
        g.reset();
        Var& out = net.forward(g, g.leaf(x.tensor().rows(half * 4, half * 4 + 4), false));
        g.backward(out, up.tensor().rows(half * 4, half * 4 + 4));
    }
    check_close(grads_of(net.ps), full, 1e-5, 1e-6, "two micro-batches vs one batch");
}

TEST_CASE("no-grad scope records nothing and produces outputs without gradient") {
    Rng rng{23};
    Net net(4, 5, rng);
    auto x = randn({3, 4}, rng, 1.0, DType::f32);
    Graph<CPU> g;
    Tensor y_grad_mode;
    {
        NoGrad<CPU> ng(g);
        Var& y = net.forward(g, g.leaf(x, true));
        CHECK_FALSE(y.requires_grad);
        CHECK(g.tape_size() == 0);
        y_grad_mode = y.data;
        CHECK_THROWS_AS(g.backward(y, y.data), Error);
    }
    CHECK(g.grad_enabled());  // restored on scope exit
    Var& y = net.forward(g, g.leaf(x, true));
    CHECK(y.requires_grad);
    CHECK(g.tape_size() == 3);  // linear, linear, add
    check_close(to_vector(y.data), to_vector(y_grad_mode), 0, 0, "no-grad forward equals grad-mode forward");
}

TEST_CASE("frozen parameters: no gradient storage, no gradient work, others unaffected") {
    Rng rng{24};
    Net net(5, 6, rng);
    auto x = randn({4, 5}, rng, 1.0, DType::f32);
    auto up = randn({4, 5}, rng, 1.0, DType::f32);
    Graph<CPU> g;
    g.backward(net.forward(g, g.leaf(x)), up);
    auto w2_grad_reference = to_vector(net.w2->grad);

    net.ps.freeze([](const Parameter& p) { return p.name == "w1"; });
    CHECK(net.ps.trainable_count() == 5 * 6);  // only w2 keeps gradient (and optimizer) storage
    CHECK_FALSE(net.w1->requires_grad);
    CHECK_FALSE(net.w1->grad.defined());
    auto w1_before = to_vector(net.w1->data);
    g.reset();
    g.backward(net.forward(g, g.leaf(x)), up);
    CHECK_FALSE(net.w1->grad.defined());
    check_close(to_vector(net.w2->grad), w2_grad_reference, 1e-6, 1e-7, "w2 gradient with w1 frozen");
    check_close(to_vector(net.w1->data), w1_before, 0, 0, "frozen w1 untouched");

    // Freeze everything: the loss no longer depends on anything trainable, nothing is recorded.
    net.ps.freeze_all();
    g.reset();
    Var& y = net.forward(g, g.leaf(x));
    CHECK_FALSE(y.requires_grad);
    CHECK(g.tape_size() == 0);
    CHECK(net.ps.trainable_count() == 0);
}

TEST_CASE("a branch that does not reach the loss costs no backward work") {
    Rng rng{25};
    ParameterSet<CPU> ps;
    Var& w_used = ps.add("used", {3, 4});
    Var& w_dead = ps.add("dead", {3, 4});
    ps.finalize();
    for (std::size_t i = 0; i < ps.count(); ++i) ps.data().data<float>()[i] = float(rng.normal());
    auto x = randn({2, 4}, rng, 1.0, DType::f32);
    Graph<CPU> g;
    Var& xv = g.leaf(x);
    Var& y = linear(g, xv, w_used);
    linear(g, xv, w_dead);  // recorded, but its output never gets a gradient
    g.backward(y, y.data);
    for (double v : to_vector(w_dead.grad)) CHECK(v == 0.0);
    bool any_nonzero = false;
    for (double v : to_vector(w_used.grad)) any_nonzero |= v != 0.0;
    CHECK(any_nonzero);
}

TEST_CASE("backward rejects a non-scalar loss and a loss without trainable inputs") {
    Graph<CPU> g;
    Buffer<CPU> a({2, 2}, DType::f32);
    fill(CPU{}, a, 1.0);
    Var& v = g.leaf(a, true);
    CHECK_THROWS_WITH_AS(g.backward(v), doctest::Contains("the loss must have one element"), Error);
    Buffer<CPU> s({1}, DType::f32);
    CHECK_THROWS_WITH_AS(g.backward(g.leaf(s, false)), doctest::Contains("does not depend"), Error);
}

TEST_CASE("arena: reset frees everything, overflow blocks are merged, steady state does not grow") {
    Arena<CPU> arena(1024);
    void* first = arena.allocate(100);
    arena.allocate(2000);  // overflows into a second block
    CHECK(arena.growths() == 1);
    CHECK(arena.in_use() == 2100);
    arena.reset();
    CHECK(arena.in_use() == 0);
    void* again = arena.allocate(100);
    arena.allocate(2000);
    CHECK(arena.growths() == 1);  // the merged block holds the whole step now
    (void)first;
    (void)again;
    for (int step = 0; step < 3; ++step) {
        arena.reset();
        void* p = arena.allocate(100);
        arena.allocate(2000);
        CHECK(reinterpret_cast<std::uintptr_t>(p) % CPU::alignment == 0);
        CHECK(arena.growths() == 1);
    }
}

TEST_CASE("activation gradients are recycled: a deep chain's gradient memory stays flat") {
    Rng rng{26};
    const int C = 64, depth = 16;
    ParameterSet<CPU> ps;
    std::vector<Var*> ws;
    for (int i = 0; i < depth; ++i) ws.push_back(&ps.add("w" + std::to_string(i), {C, C}));
    ps.finalize();
    for (std::size_t i = 0; i < ps.count(); ++i) ps.data().data<float>()[i] = float(rng.normal() / 8);
    auto x = randn({32, C}, rng, 1.0, DType::f32);
    Graph<CPU> g;
    std::size_t steady = 0;
    for (int step = 0; step < 3; ++step) {
        g.reset();
        Var* h = &g.leaf(x);
        for (Var* w : ws) h = &linear(g, *h, *w);
        g.backward(*h, h->data);
        if (step == 1) steady = g.arena_growths();
        if (step == 2) CHECK(g.arena_growths() == steady);  // third step: no new memory
    }
    // Without recycling, depth activation gradients of 32 x C floats would be live at once.
    const std::size_t one = 32 * C * sizeof(float);
    const std::size_t activations = depth * one;
    CHECK(g.peak_bytes() < activations + 4 * one);
}
