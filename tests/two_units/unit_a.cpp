// First translation unit: instantiates Graph<CPU>, ParameterSet<CPU>, linear and add (see units.hpp).
#include <minitrain/minitrain.hpp>

#include "units.hpp"

namespace two_units {

using namespace minitrain;

std::vector<float> forward_a(const std::vector<float>& x, const std::vector<float>& w1, const std::vector<float>& w2,
                             int N, int K, int H, int M) {
    ParameterSet<CPU> ps;
    Var& W1 = ps.add("w1", Shape{H, K});
    Var& W2 = ps.add("w2", Shape{M, H});
    ps.finalize();
    CPU::from_host(W1.data, w1.data());
    CPU::from_host(W2.data, w2.data());
    Buffer<CPU> X(Shape{N, K}, DType::f32);
    CPU::from_host(X, x.data());

    Graph<CPU> g;
    NoGrad<CPU> no_grad(g);
    Var& xv = g.leaf(X);
    Var& h = add(g, linear(g, xv, W1), linear(g, xv, W1));  // 2 x w1^T: exercises add
    Var& y = linear(g, h, W2);
    std::vector<float> out(std::size_t(N) * M);
    CPU::to_host(out.data(), y.data);
    return out;
}

}  // namespace two_units
