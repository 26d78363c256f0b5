// A user's program: one linear layer forward and backward through the installed headers, plus the
// JSON and PCRE2 headers that minitrain::minitrain brings along. Exits non-zero on a wrong number.
#include <minitrain/minitrain.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

using namespace minitrain;

static int failures = 0;
static void expect(bool ok, const char* what) {
    if (!ok) {
        std::printf("consumer: FAILED %s\n", what);
        ++failures;
    }
}

int main() {
    // y = x w^T with x: (N=2, K=3), w: (M=2, K=3); upstream gradient of ones, so dw[m][k] = sum_n x[n][k].
    ParameterSet<CPU> ps;
    Var& w = ps.add("w", Shape{2, 3});
    ps.finalize();
    float* W = ps.data().data<float>();
    for (int i = 0; i < 6; ++i) W[i] = float(i + 1);  // w = [[1 2 3] [4 5 6]]

    Buffer<CPU> x(Shape{2, 3}, DType::f32), ones(Shape{2, 2}, DType::f32);
    const float X[6] = {1, 0, -1, 2, 1, 0};
    for (int i = 0; i < 6; ++i) x.data<float>()[i] = X[i];
    fill(CPU{}, ones, 1.0);

    Graph<CPU> g;
    Var& y = linear(g, g.leaf(x), w);
    const float want_y[4] = {1 * 1 + 0 * 2 - 1 * 3, 1 * 4 + 0 * 5 - 1 * 6, 2 * 1 + 1 * 2, 2 * 4 + 1 * 5};
    for (int i = 0; i < 4; ++i) expect(std::fabs(y.data.data<float>()[i] - want_y[i]) < 1e-6f, "linear forward");
    g.backward(y, ones);
    const float* dW = ps.grads().data<float>();
    const float col[3] = {3, 1, -1};
    for (int m = 0; m < 2; ++m)
        for (int k = 0; k < 3; ++k) expect(std::fabs(dW[m * 3 + k] - col[k]) < 1e-6f, "linear backward");

    nlohmann::json j = {{"params", ps.count()}};
    expect(j.dump() == "{\"params\":6}", "nlohmann::json");

    int err = 0;
    PCRE2_SIZE at = 0;
    pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("\\p{L}+"), PCRE2_ZERO_TERMINATED, PCRE2_UTF,
                                   &err, &at, nullptr);
    expect(re != nullptr, "pcre2_compile");
    if (re) {
        pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
        const char* text = "  héllo world";
        int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(text), PCRE2_ZERO_TERMINATED, 0, 0, md, nullptr);
        expect(rc == 1 && pcre2_get_ovector_pointer(md)[0] == 2 && pcre2_get_ovector_pointer(md)[1] == 8,
               "pcre2_match of a UTF-8 word");
        pcre2_match_data_free(md);
        pcre2_code_free(re);
    }

    std::printf("consumer: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
