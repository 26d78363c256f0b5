// minitrain/ops/rows.hpp
// Row slicing and row concatenation: how a mixture of experts hands each expert its own contiguous block
// of tokens and stacks the results back. Rows are the first dimension; the other dimensions must agree.
//
// A slice is a view (no copy). Its backward writes only its own rows of the input's gradient, so when
// that gradient buffer is first created by a slice the rest of it would be garbage: partial_grad_of()
// zero-fills a fresh buffer and always hands it out for `+=`.
#pragma once

#include <cstdint>

#include "../autograd/graph.hpp"

namespace minitrain {

/// The gradient of v for an op that writes only part of it: a fresh buffer is zeroed first, so the op
/// can always add (`+=`). Undefined when v needs no gradient.
template <class B>
GradOut partial_grad_of(Graph<B>& g, Var& v) {
    GradOut d = g.grad_of(v);
    if (d && !d.accumulate) {
        B::zero(d.t);
        d.accumulate = true;
    }
    return d;
}

/// Rows [begin, end) of x, sharing its storage.   x: (R, ...)  ->  (end - begin, ...). May be empty.
template <class B>
Var& slice_rows(Graph<B>& g, Var& x, std::int64_t begin, std::int64_t end) {
    MT_CHECK(x.data.shape.rank >= 1, "slice_rows: input must have at least one dimension, found ", x.data.shape);
    Var& y = g.leaf(x.data.rows(begin, end), g.needs_grad(x));
    if (y.requires_grad)
        g.record({&y}, [px = &x, py = &y, begin, end](Graph<B>& g) {
            if (begin == 0 && end == px->data.shape[0] && !px->grad.defined() && !px->persistent_grad) {
                px->grad = py->grad;  // the whole of x: adopt y's buffer, as reshape does
                py->grad = {};
                return;
            }
            GradOut d = partial_grad_of(g, *px);
            accumulate(B{}, GradOut{d.t.rows(begin, end), true}, py->grad);
        });
    return y;
}

/// The parts stacked along rows into a new Var.   parts[i]: (R_i, ...)  ->  (sum R_i, ...).
/// Zero-row parts are allowed. A single part is returned as is (no copy).
template <class B>
Var& concat_rows(Graph<B>& g, Var* const* parts, int n) {
    MT_CHECK(n >= 1, "concat_rows: need at least one part, got ", n);
    if (n == 1) return *parts[0];
    const Tensor& first = parts[0]->data;
    MT_CHECK(first.shape.rank >= 1, "concat_rows: parts must have at least one dimension, found ", first.shape);
    Shape shape = first.shape;
    shape.dims[0] = 0;
    bool requires_grad = false;
    for (int i = 0; i < n; ++i) {
        const Tensor& p = parts[i]->data;
        bool same = p.shape.rank == first.shape.rank && p.dtype == first.dtype;
        for (int d = 1; same && d < p.shape.rank; ++d) same = p.shape.dims[d] == first.shape.dims[d];
        MT_CHECK(same, "concat_rows: part ", i, " is ", dtype_name(p.dtype), " ", p.shape, ", part 0 is ",
                 dtype_name(first.dtype), " ", first.shape, "; only the row count may differ");
        shape.dims[0] += p.shape[0];
        requires_grad = requires_grad || g.needs_grad(*parts[i]);
    }
    Var& y = g.make(shape, first.dtype, requires_grad);
    std::int64_t at = 0;
    for (int i = 0; i < n; ++i) {
        const std::int64_t r = parts[i]->data.shape[0];
        if (r) B::copy(y.data.rows(at, at + r), parts[i]->data);
        at += r;
    }
    if (y.requires_grad) {
        Var** list = g.template host_array<Var*>(std::size_t(n));  // the caller's array may not outlive the step
        for (int i = 0; i < n; ++i) list[i] = parts[i];
        g.record({&y}, [list, n, py = &y](Graph<B>& g) {
            std::int64_t at = 0;
            for (int i = 0; i < n; ++i) {
                const std::int64_t r = list[i]->data.shape[0];
                if (GradOut d = g.grad_of(*list[i])) accumulate(B{}, d, py->grad.rows(at, at + r));
                at += r;
            }
        });
    }
    return y;
}

}  // namespace minitrain
