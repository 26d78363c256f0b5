// minitrain/log/plot.hpp
// The loss picture: train loss (raw and smoothed) and val loss against steps (and tokens), the learning
// rate on a second axis, one colour per run, as a self-contained SVG file (any browser shows it; Debian's
// rsvg-convert turns it into a PNG).
//
//   RunCurves r = read_metrics("out/metrics.jsonl");          // the Trainer's metrics file
//   write_text_file("loss.svg", loss_svg({r}, "pretrain"));
//
// The smoothing is TensorBoard's, an exponential moving average debiased at the start, with a weight
// that follows the number of points (smoothing_for: a window of about 1/30 of them).
// When the run folder has run.json (the Trainer writes it: tokens_per_step), the x axis also reads in
// tokens.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"

namespace minitrain {

/// `text` as the whole of `path`, atomically (io/atomic_file.hpp).
inline void write_text_atomic(const std::filesystem::path& path, const std::string& text) {
    write_file_atomic(path, [&](std::ostream& o) { o << text; });
}

/// What a run's metrics.jsonl says over time.
struct RunCurves {
    std::string name;                                  // the legend's label
    std::vector<std::pair<double, double>> loss;       // (step, train loss)
    std::vector<std::pair<double, double>> val_loss;   // (step, val loss)
    std::vector<std::pair<double, double>> lr;         // (step, learning rate)
    double tokens_per_step = 0;                        // 0: unknown
};

/// Reads metrics.jsonl (lines that do not parse, or carry none of the keys, are skipped). Only the last
/// value of each step counts, so a resumed run that re-logged steps draws one line. `name` defaults to
/// the folder holding the file; tokens_per_step comes from run.json beside it, if there is one.
inline RunCurves read_metrics(const std::filesystem::path& path, std::string name = {}) {
    std::ifstream in(path);
    MT_CHECK(in, path.string(), ": cannot open the metrics file");
    RunCurves r;
    r.name = name.empty() ? std::filesystem::absolute(path).parent_path().filename().string() : name;
    auto put = [](std::vector<std::pair<double, double>>& v, double step, double y) {
        while (!v.empty() && v.back().first >= step) v.pop_back();  // a resumed run repeats steps: keep the newest
        if (std::isfinite(y)) v.emplace_back(step, y);
    };
    for (std::string line; std::getline(in, line);) {
        nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
        const double step = j["step"].get<double>();
        if (j.contains("loss") && j["loss"].is_number()) put(r.loss, step, j["loss"].get<double>());
        if (j.contains("lr") && j["lr"].is_number()) put(r.lr, step, j["lr"].get<double>());
        if (j.contains("val_loss") && j["val_loss"].is_number()) put(r.val_loss, step, j["val_loss"].get<double>());
    }
    const auto run_json = path.parent_path() / "run.json";
    std::error_code ec;
    if (std::filesystem::exists(run_json, ec)) {
        std::ifstream rj(run_json);
        nlohmann::json j = nlohmann::json::parse(rj, nullptr, false);
        if (j.is_object() && j.contains("tokens_per_step") && j["tokens_per_step"].is_number())
            r.tokens_per_step = j["tokens_per_step"].get<double>();
    }
    return r;
}

/// The smoothing weight for n points: a window of about n / 30 points (none for a few points, 0.95 at most),
/// so that a sparse log is not dragged behind and a dense one reads as a line.
inline double smoothing_for(std::size_t n) { return std::clamp(1.0 - 30.0 / double(std::max<std::size_t>(n, 1)), 0.0, 0.95); }

/// TensorBoard's smoothing: EMA with weight w, debiased.
inline std::vector<std::pair<double, double>> smooth(const std::vector<std::pair<double, double>>& v, double w) {
    std::vector<std::pair<double, double>> out;
    double last = 0, weight = 0;
    for (const auto& [x, y] : v) {
        last = last * w + (1 - w) * y;
        weight = weight * w + (1 - w);
        out.emplace_back(x, last / weight);
    }
    return out;
}

namespace detail {

/// 1, 2 or 5 times a power of ten, about (hi - lo) / n apart.
inline double nice_step(double lo, double hi, int n) {
    const double raw = (hi - lo) / std::max(1, n);
    if (!(raw > 0)) return 1;
    const double p = std::pow(10.0, std::floor(std::log10(raw)));
    const double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

inline std::string num_label(double x) {
    char b[32];
    const double a = std::fabs(x);
    if (a == 0) return "0";
    if (a >= 1e9) std::snprintf(b, sizeof b, "%.3gG", x / 1e9);
    else if (a >= 1e6) std::snprintf(b, sizeof b, "%.3gM", x / 1e6);
    else if (a >= 1e4) std::snprintf(b, sizeof b, "%.3gk", x / 1e3);
    else if (a < 1e-2) std::snprintf(b, sizeof b, "%.1e", x);
    else std::snprintf(b, sizeof b, "%g", x);
    return b;
}

inline std::string xml_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '<') o += "&lt;";
        else if (c == '>') o += "&gt;";
        else if (c == '&') o += "&amp;";
        else if (c == '"') o += "&quot;";
        else o += c;
    }
    return o;
}

}  // namespace detail

/// The picture of one or more runs as an SVG document.
inline std::string loss_svg(const std::vector<RunCurves>& runs, const std::string& title = "loss") {
    constexpr double W = 960, H = 560, L = 78, R = 86, T = 48, B = 88;  // canvas and margins
    const double pw = W - L - R, ph = H - T - B;
    static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"};

    double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0, lr1 = 0;
    bool any = false;
    for (const RunCurves& r : runs) {
        for (const auto* v : {&r.loss, &r.val_loss})
            for (const auto& [x, y] : *v) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y), any = true;
        for (const auto& [x, y] : r.lr) lr1 = std::max(lr1, y);
    }
    if (!any) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    x0 = std::min(x0, 0.0);
    if (x1 <= x0) x1 = x0 + 1;
    // The loss axis: the smoothed curves and val points decide it, so that a few noisy early steps (the
    // loss at step 1 is ln(vocab)) do not squash the part worth reading; the raw line may leave the top.
    // The bottom is the lowest raw point, so that the end of the run is all in the picture.
    double s0 = std::numeric_limits<double>::max(), s1 = -s0;
    for (const RunCurves& r : runs) {
        auto sm = smooth(r.loss, smoothing_for(r.loss.size()));
        for (std::size_t i = sm.size() / 20; i < sm.size(); ++i) s1 = std::max(s1, sm[i].second);
        for (const auto& [x, y] : r.loss) s0 = std::min(s0, y);
        for (const auto& [x, y] : r.val_loss) s0 = std::min(s0, y), s1 = std::max(s1, y);
    }
    if (s0 <= s1) y0 = s0, y1 = s1;
    if (y1 - y0 < 1e-6) y0 -= 0.5, y1 += 0.5;
    const double ys = detail::nice_step(y0, y1, 6);
    y0 = std::floor(y0 / ys) * ys, y1 = std::ceil(y1 / ys) * ys;
    const double xs = detail::nice_step(x0, x1, 8);
    x1 = std::ceil(x1 / xs) * xs;
    if (!(lr1 > 0)) lr1 = 1;

    auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * pw; };
    auto Y = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * ph; };
    auto YL = [&](double lr) { return T + (1 - lr / (lr1 * 1.05)) * ph; };
    char b[512];
    std::string s;
    std::snprintf(b, sizeof b,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
                  "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\">\n"
                  "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                  W, H, W, H);
    s += b;
    std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"28\" font-size=\"17\" font-weight=\"bold\">%s</text>\n", L,
                  detail::xml_escape(title).c_str());
    s += b;
    // grid and ticks
    for (double y = y0; y <= y1 + ys / 2; y += ys) {
        std::snprintf(b, sizeof b, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                      "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\" fill=\"#333\">%s</text>\n",
                      L, Y(y), L + pw, Y(y), L - 8, Y(y) + 4, detail::num_label(y).c_str());
        s += b;
    }
    const double tokens = runs.size() == 1 ? runs[0].tokens_per_step : 0;
    for (double x = x0; x <= x1 + xs / 2; x += xs) {
        std::snprintf(b, sizeof b, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#e4e4e4\"/>"
                      "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\" fill=\"#333\">%s</text>\n",
                      X(x), T, X(x), T + ph, X(x), T + ph + 18, detail::num_label(x).c_str());
        s += b;
        if (tokens > 0) {
            std::snprintf(b, sizeof b, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\" fill=\"#777\">%s</text>\n", X(x),
                          T + ph + 36, detail::num_label(x * tokens).c_str());
            s += b;
        }
    }
    std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">step%s</text>\n", L + pw / 2,
                  T + ph + (tokens > 0 ? 60 : 44), tokens > 0 ? "   (grey: tokens seen)" : "");
    s += b;
    std::snprintf(b, sizeof b, "<text transform=\"translate(20 %g) rotate(-90)\" text-anchor=\"middle\">loss (nats per token)</text>\n",
                  T + ph / 2);
    s += b;
    // learning-rate axis on the right
    const double lrs = detail::nice_step(0, lr1 * 1.05, 5);
    for (double v = 0; v <= lr1 * 1.05 + 1e-30; v += lrs) {
        std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"%.1f\" fill=\"#888\">%s</text>\n", L + pw + 8, YL(v) + 4,
                      detail::num_label(v).c_str());
        s += b;
    }
    std::snprintf(b, sizeof b, "<text transform=\"translate(%g %g) rotate(90)\" text-anchor=\"middle\" fill=\"#888\">learning rate (dashed)</text>\n",
                  W - 18, T + ph / 2);
    s += b;
    std::snprintf(b, sizeof b, "<defs><clipPath id=\"plot\"><rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\"/></clipPath></defs>\n"
                  "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#999\"/>\n<g clip-path=\"url(#plot)\">\n",
                  L, T, pw, ph, L, T, pw, ph);
    s += b;

    auto polyline = [&](const std::vector<std::pair<double, double>>& v, auto yf, const char* colour, const char* extra) {
        if (v.empty()) return;
        std::string pts;
        for (const auto& [x, y] : v) {
            std::snprintf(b, sizeof b, "%.1f,%.1f ", X(x), yf(y));
            pts += b;
        }
        s += "<polyline fill=\"none\" stroke=\"" + std::string(colour) + "\" " + extra + " points=\"" + pts + "\"/>\n";
    };
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const RunCurves& r = runs[i];
        const char* c = colours[i % 7];
        polyline(r.lr, YL, c, "stroke-width=\"1.2\" stroke-opacity=\"0.55\" stroke-dasharray=\"5 4\"");
        polyline(r.loss, Y, c, "stroke-width=\"1\" stroke-opacity=\"0.3\"");
        polyline(smooth(r.loss, smoothing_for(r.loss.size())), Y, c, "stroke-width=\"2.2\"");
        polyline(r.val_loss, Y, c, "stroke-width=\"1.5\" stroke-dasharray=\"2 3\"");
        for (const auto& [x, y] : r.val_loss) {
            std::snprintf(b, sizeof b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"white\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                          X(x), Y(y), c);
            s += b;
        }
    }
    s += "</g>\n";
    // legend
    double ly = T + 14;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const RunCurves& r = runs[i];
        const char* c = colours[i % 7];
        std::string label = r.name;
        if (!r.val_loss.empty()) {
            std::snprintf(b, sizeof b, " (val %.3f)", r.val_loss.back().second);
            label += b;
        } else if (!r.loss.empty()) {
            std::snprintf(b, sizeof b, " (train %.3f)", smooth(r.loss, smoothing_for(r.loss.size())).back().second);
            label += b;
        }
        std::snprintf(b, sizeof b, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2.2\"/>"
                      "<text x=\"%g\" y=\"%g\">%s</text>\n",
                      L + pw - 300, ly, L + pw - 276, ly, c, L + pw - 270, ly + 4, detail::xml_escape(label).c_str());
        s += b;
        ly += 18;
    }
    std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"%g\" fill=\"#555\" font-size=\"11\">thin: train loss; thick: "
                  "smoothed (EMA); dotted with circles: val loss; dashed: learning rate (right axis)</text>\n", L, H - 10);
    s += b;
    s += "</svg>\n";
    return s;
}

}  // namespace minitrain
