// Two translation units, unit_a.cpp and unit_b.cpp, each include all of minitrain and instantiate the
// same templates; main.cpp calls into both. If a header defined a non-inline function or variable, the
// program would fail to link (multiple definition); if two instantiations disagreed, the numbers would.
#pragma once

#include <vector>

namespace two_units {

// y = relu-free 2-layer net: h = x w1^T + b (b broadcast by hand as a second input), y = h w2^T.
// x: (N, K)  w1: (H, K)  w2: (M, H)  ->  y: (N, M)
std::vector<float> forward_a(const std::vector<float>& x, const std::vector<float>& w1, const std::vector<float>& w2,
                             int N, int K, int H, int M);
// d(sum y)/d(w1) and d(sum y)/d(w2), concatenated, for the same network.
std::vector<float> gradients_b(const std::vector<float>& x, const std::vector<float>& w1,
                               const std::vector<float>& w2, int N, int K, int H, int M);
// The same forward, computed in unit_b: must equal forward_a bit for bit.
std::vector<float> forward_b(const std::vector<float>& x, const std::vector<float>& w1, const std::vector<float>& w2,
                             int N, int K, int H, int M);

}  // namespace two_units
