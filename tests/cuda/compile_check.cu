// Every minitrain header must compile under nvcc, because CUDA kernels and the code that launches them
// include the same headers as CPU code. This file includes the umbrella header and instantiates the
// CPU graph (Graph<CPU>, ParameterSet<CPU>, linear, add, reshape, backward), so a construct nvcc
// rejects breaks the build. It runs on the host only: no GPU needed.
#include <doctest/doctest.h>

#include <minitrain/minitrain.hpp>

using namespace minitrain;

// A trivial kernel in the same translation unit, so the file is compiled for the device as well.
__global__ void scale_kernel(float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = float(bf16(a * y[i]));
}

TEST_CASE("nvcc: the CPU graph compiled by nvcc computes linear forward and backward") {
    // y = reshape(x, (2, 3)) w^T, twice, summed;  x: (6)  w: (2, 3)  ->  y: (2, 2)
    ParameterSet<CPU> ps;
    Var& w = ps.add("w", Shape{2, 3});
    ps.finalize();
    for (int i = 0; i < 6; ++i) ps.data().data<float>()[i] = float(i + 1);
    Buffer<CPU> x(Shape{6}, DType::f32), ones(Shape{2, 2}, DType::f32);
    const float X[6] = {1, 0, -1, 2, 1, 0};
    for (int i = 0; i < 6; ++i) x.data<float>()[i] = X[i];
    fill(CPU{}, ones, 1.0);

    Graph<CPU> g;
    Var& xr = reshape(g, g.leaf(x), Shape{2, 3});
    Var& y = add(g, linear(g, xr, w), linear(g, xr, w));
    const float want[4] = {2 * (1 - 3), 2 * (4 - 6), 2 * (2 + 2), 2 * (8 + 5)};
    for (int i = 0; i < 4; ++i) CHECK(y.data.data<float>()[i] == doctest::Approx(want[i]));

    g.backward(y, ones);  // dw[m][k] = 2 sum_n x[n][k]
    const float col[3] = {3, 1, -1};
    for (int m = 0; m < 2; ++m)
        for (int k = 0; k < 3; ++k) CHECK(ps.grads().data<float>()[m * 3 + k] == doctest::Approx(2 * col[k]));
    CHECK(float(bf16(1.0f)) == 1.0f);
}
