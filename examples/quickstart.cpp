// quickstart: the foundation layer of minitrain in one screen, until the tokenizer and trainer land.
//
// A small network learns a random linear map from noisy samples with plain SGD:
//   h = x w1^T            (B, H)    the hidden layer
//   y = h w2^T + x ws^T   (B, M)    a second layer plus a skip connection (add)
//   loss = mean((y - t)^2)
// There is no nonlinearity yet (activation ops come with the model issue), so this is a deep linear
// network: enough to show parameters in one slab, the tape, backward, and a loss that falls.
// Dimensions: B = batch, K = input features, H = hidden, M = outputs.
#include <minitrain/minitrain.hpp>

#include <cmath>
#include <cstdio>

using namespace minitrain;

int main() {
    constexpr int B = 64, K = 16, H = 32, M = 4, steps = 400;
    constexpr float lr = 0.05f;
    Rng rng{2026};

    // The map to learn: t = x A^T + noise.   A: (M, K)
    float A[M * K];
    for (auto& a : A) a = float(rng.normal() / std::sqrt(double(K)));

    // Every parameter in one slab, every gradient in another.
    ParameterSet<CPU> ps;
    Var& w1 = ps.add("w1", Shape{H, K});
    Var& w2 = ps.add("w2", Shape{M, H});
    Var& ws = ps.add("ws", Shape{M, K});
    ps.finalize();
    for (auto& p : ps.all()) {  // normal(0, 1/fan_in)
        float* d = p.var.data.data<float>();
        double scale = 1.0 / std::sqrt(double(p.shape[1]));
        for (std::int64_t i = 0; i < p.shape.numel(); ++i) d[i] = float(rng.normal() * scale);
    }
    std::printf("minitrain quickstart: %zu parameters in one slab, %d threads\n", ps.count(), CPU::threads());

    Buffer<CPU> x(Shape{B, K}, DType::f32), t(Shape{B, M}, DType::f32), dy(Shape{B, M}, DType::f32);
    Graph<CPU> g;
    float first = 0, last = 0;
    for (int step = 0; step < steps; ++step) {
        // A fresh batch each step.
        float* X = x.data<float>();
        float* T = t.data<float>();
        for (int i = 0; i < B * K; ++i) X[i] = float(rng.normal());
        for (int b = 0; b < B; ++b)
            for (int m = 0; m < M; ++m) {
                double s = 0.01 * rng.normal();
                for (int k = 0; k < K; ++k) s += double(X[b * K + k]) * A[m * K + k];
                T[b * M + m] = float(s);
            }

        // Forward: the ops record the tape as they run.
        g.reset();
        Var& xv = g.leaf(x);
        Var& y = add(g, linear(g, linear(g, xv, w1), w2), linear(g, xv, ws));

        // Mean squared error and its gradient d(loss)/dy = 2 (y - t) / (B M), seeded into backward.
        const float* Y = y.data.data<float>();
        float* dY = dy.data<float>();
        double loss = 0;
        for (int i = 0; i < B * M; ++i) {
            float e = Y[i] - T[i];
            loss += double(e) * e;
            dY[i] = 2.0f * e / float(B * M);
        }
        loss /= B * M;
        ps.zero_grad();
        g.backward(y, dy);

        // SGD over the whole slab at once: p -= lr * dp.
        float* P = ps.data().data<float>();
        const float* G = ps.grads().data<float>();
        for (std::size_t i = 0; i < ps.count(); ++i) P[i] -= lr * G[i];

        if (step == 0) first = float(loss);
        last = float(loss);
        // The arenas grow during the first step only: after it, a step allocates nothing.
        if (step % 50 == 0 || step == steps - 1)
            std::printf("step %4d  loss %.6f  (arena growths so far: %zu)\n", step, loss, g.arena_growths());
    }
    // The labels carry noise of standard deviation 0.01: no model gets below 1e-4.
    std::printf("loss %.4f -> %.6f (noise floor 0.0001)\n", first, last);
    return last < 0.01f * first ? 0 : 1;
}
