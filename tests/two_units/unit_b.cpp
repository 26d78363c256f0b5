// Second translation unit: the same templates as unit_a.cpp, plus backward (see units.hpp).
#include <minitrain/minitrain.hpp>

#include "units.hpp"

namespace two_units {

using namespace minitrain;

namespace {
struct Net {
    ParameterSet<CPU> ps;
    Var* w1;
    Var* w2;
    Buffer<CPU> x;
    Net(const std::vector<float>& xs, const std::vector<float>& w1s, const std::vector<float>& w2s, int N, int K,
        int H, int M)
        : x(Shape{N, K}, DType::f32) {
        w1 = &ps.add("w1", Shape{H, K});
        w2 = &ps.add("w2", Shape{M, H});
        ps.finalize();
        CPU::from_host(w1->data, w1s.data());
        CPU::from_host(w2->data, w2s.data());
        CPU::from_host(x, xs.data());
    }
    Var& forward(Graph<CPU>& g) {
        Var& xv = g.leaf(x);
        Var& h = add(g, linear(g, xv, *w1), linear(g, xv, *w1));
        return linear(g, h, *w2);
    }
};
}  // namespace

std::vector<float> forward_b(const std::vector<float>& x, const std::vector<float>& w1, const std::vector<float>& w2,
                             int N, int K, int H, int M) {
    Net net(x, w1, w2, N, K, H, M);
    Graph<CPU> g;
    NoGrad<CPU> no_grad(g);
    Var& y = net.forward(g);
    std::vector<float> out(std::size_t(N) * M);
    CPU::to_host(out.data(), y.data);
    return out;
}

std::vector<float> gradients_b(const std::vector<float>& x, const std::vector<float>& w1,
                               const std::vector<float>& w2, int N, int K, int H, int M) {
    Net net(x, w1, w2, N, K, H, M);
    Graph<CPU> g;
    Var& y = net.forward(g);
    Buffer<CPU> ones(y.data.shape, DType::f32);
    fill(CPU{}, ones, 1.0);
    g.backward(y, ones);
    std::vector<float> out(net.ps.trainable_count());
    CPU::to_host(out.data(), net.ps.grads());
    return out;
}

}  // namespace two_units
