// minitrain/ops/distill.hpp
// The differentiable distillation loss: the student's logits in (a Var), the frozen teacher's logits and
// the hard targets as constants, one scalar out. Formula: backend/cpu/distill.hpp.
//
// N = positions, V = vocab.
#pragma once

#include <cmath>

#include "../autograd/graph.hpp"

namespace minitrain {

/// Host numbers of one distill_loss call, means over its counted positions.
struct DistillStats {
    double ce = 0;         // hard-label cross-entropy of the student
    double kl = 0;         // KL(teacher || student) at temperature T (without the T^2 factor)
    double positions = 0;  // counted positions
};

/// alpha mean CE(student, targets) + (1 - alpha) T^2 mean KL(softmax(teacher / T) || softmax(student / T))
/// over the positions whose target is not ignore_index -> shape (1). student: logits (..., V) with N rows
/// (a Var); teacher: the same shape (a constant); targets: N i32. teacher and targets must stay alive
/// until backward has run. MiniMind: alpha 0.5, T 1.5.
template <class B>
Var& distill_loss(Graph<B>& g, Var& student, const Tensor& teacher, const Tensor& targets, double alpha, double T,
                  DistillStats* stats = nullptr, int ignore_index = -100) {
    MT_CHECK(alpha >= 0 && alpha <= 1, "distill_loss: alpha must be in [0, 1], found ", alpha);
    MT_CHECK(std::isfinite(T) && T > 0, "distill_loss: the temperature must be positive, found ", T);
    Var& loss = g.make(Shape{1}, student.data.dtype, g.needs_grad(student));
    Tensor stat = g.scratch(Shape{3}, DType::f64);
    distill_loss_forward(B{}, loss.data, stat, student.data, teacher, targets, alpha, T, ignore_index);
    if (stats) {
        double s[3];
        B::to_host(s, stat);
        *stats = DistillStats{s[0], s[1], s[2]};
    }
    if (loss.requires_grad)
        g.record({&loss}, [px = &student, py = &loss, teacher, targets, alpha, T, ignore_index](Graph<B>& g) {
            distill_loss_backward(B{}, g.grad_of(*px), px->data, teacher, targets, py->grad, alpha, T, ignore_index);
        });
    return loss;
}

}  // namespace minitrain
