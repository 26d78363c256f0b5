// minitrain/log/run_log.hpp
// What a run leaves for the people watching it, beside metrics.jsonl: a TensorBoard event file (every
// metrics line as scalars, the samples and the configuration as text), loss.svg (log/plot.hpp) at every
// evaluation and at the end, and report.md at the end (command line, model, tokens, time, tokens/s, MFU,
// final losses, the picture, samples, where the checkpoints are). run.json records what the picture and
// the report need from the run (tokens per step, the configuration).
//
// The Trainer owns one on rank 0 and feeds it every metrics line (MetricsLog::on_write):
//     RunLog log(out_dir, config_json, sizes);
//     log.record(metrics_line);      // -> event scalars / texts
//     log.picture();                 // -> loss.svg
//     log.finish(final_dir, ckpt);   // -> loss.svg, report.md
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../backend/cpu/gemm.hpp"
#include "plot.hpp"
#include "tensorboard.hpp"

namespace minitrain {

/// Best-of-2 f32 GEMM throughput of this machine's CPU backend (1024^3, all threads), in GFLOP/s: the
/// peak the report's MFU is measured against (about 0.05 s; measured once per process).
inline double measure_cpu_gemm_gflops() {
    static const double gflops = [] {
        const std::int64_t n = 1024;
        std::vector<float> a(std::size_t(n * n), 0.5f), b(std::size_t(n * n), 0.25f), c(std::size_t(n * n));
        double best = 1e30;
        for (int rep = 0; rep < 3; ++rep) {
            const auto t0 = std::chrono::steady_clock::now();
            cpu::gemm(false, false, n, n, n, a.data(), n, b.data(), n, c.data(), n, false);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (rep > 0) best = std::min(best, s);  // the first warms the packing buffers
        }
        return 2.0 * double(n) * double(n) * double(n) / best / 1e9;
    }();
    return gflops;
}

class RunLog {
public:
    /// What the Trainer knows of the run when it starts.
    struct Sizes {
        std::int64_t parameters = 0, trained = 0, total_steps = 0, tokens_per_step = 0;
        std::string preset;  // "" when the model is not a registered preset
        bool cpu = true;
    };

    /// `config`: the run's settings (the Trainer's rank_config: task, model shape, every knob).
    RunLog(const std::filesystem::path& out_dir, nlohmann::json config, Sizes sizes)
        : dir_(out_dir), config_(std::move(config)), sizes_(std::move(sizes)), events_(out_dir),
          t0_(std::chrono::steady_clock::now()) {
        config_["parameters"] = sizes_.parameters;
        config_["trained_parameters"] = sizes_.trained;
        config_["total_steps"] = sizes_.total_steps;
        config_["tokens_per_step"] = sizes_.tokens_per_step;
        if (!sizes_.preset.empty()) config_["preset"] = sizes_.preset;
        command_ = command_line();
        config_["command"] = command_;
        write_text_atomic(dir_ / "run.json", config_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        events_.text("config", "```\n" + config_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n```", 0);
    }

    /// One metrics line: numbers become scalars ("train/loss", "val/loss", "val/bpb", "train/reward_margin",
    /// ...), strings (samples) texts.
    void record(const nlohmann::json& j) {
        if (!j.is_object() || !j.contains("step")) return;
        const std::int64_t step = j["step"].get<std::int64_t>();
        last_step_ = step;
        if (j.contains("sample") && j["sample"].is_string()) {
            samples_.emplace_back(step, j["sample"].get<std::string>());
            if (samples_.size() > 3) samples_.erase(samples_.begin());
            events_.text("samples", j["sample"].get<std::string>(), step);
            return;
        }
        const bool eval = j.contains("val_loss");
        for (const auto& [k, v] : j.items()) {
            if (k == "step") continue;
            if (v.is_number()) {
                const std::string tag = eval ? "val/" + (k.starts_with("val_") ? k.substr(4) : k) : "train/" + k;
                events_.scalar(tag, v.get<double>(), step);
            } else if (v.is_string()) {
                events_.text(k, v.get<std::string>(), step);
            }
        }
        if (eval) last_eval_ = j;
        else if (j.contains("tokens_per_s") && !j.contains("skipped")) {
            last_train_ = j;
            tok_s_sum_ += j["tokens_per_s"].get<double>();
            ++tok_s_n_;
        }
    }

    /// loss.svg from the run's metrics.jsonl.
    void picture() const {
        const auto m = dir_ / "metrics.jsonl";
        std::error_code ec;
        if (!std::filesystem::exists(m, ec)) return;
        const std::string task = config_.value("task", std::string("run"));
        RunCurves r = read_metrics(m, task);
        write_text_atomic(dir_ / "loss.svg", loss_svg({r}, task + ": " + dir_.string()));
    }

    /// loss.svg and report.md, once the final folder and the last checkpoint are written.
    void finish(const std::filesystem::path& final_dir, const std::filesystem::path& checkpoint) {
        picture();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
        write_text_atomic(dir_ / "report.md", report(final_dir, checkpoint, seconds));
    }

    const std::filesystem::path& event_file() const { return events_.path(); }

private:
    static std::string command_line() {
        std::ifstream in("/proc/self/cmdline", std::ios::binary);
        std::string s, arg, out;
        while (std::getline(in, arg, '\0')) {
            const bool plain = !arg.empty() && arg.find_first_of(" \t\"'$*?;&|<>()") == std::string::npos;
            out += (out.empty() ? "" : " ") + (plain ? arg : "'" + arg + "'");
        }
        return out;
    }

    /// Model FLOPs per trained token: 6N + 12 L d T for full training (PaLM's count; N with the tied
    /// embedding once, as lm_head), 4N + 8 L d T when only adapters train (no weight gradients of the
    /// base), and a reference forward on top for DPO.
    double flops_per_token() const {
        const auto& m = config_.value("model", nlohmann::json::object());
        const double L = m.value("layers", 0), d = m.value("hidden", 0), T = config_.value("max_seq_len", 0);
        const double N = double(sizes_.parameters);
        const std::string task = config_.value("task", std::string());
        double f = sizes_.trained < sizes_.parameters ? 4 * N + 8 * L * d * T : 6 * N + 12 * L * d * T;
        if (task == "dpo") f += 2 * N + 4 * L * d * T;
        return f;
    }

    std::string report(const std::filesystem::path& final_dir, const std::filesystem::path& ckpt, double seconds) const {
        char b[512];
        std::string s = "# " + config_.value("task", std::string("training")) + " run: " + dir_.string() + "\n\n";
        s += "Command: `" + command_ + "`\n\n| | |\n| --- | --- |\n";
        const auto& m = config_.value("model", nlohmann::json::object());
        std::snprintf(b, sizeof b, "| model | %s%d layers x %d, %d heads (%d KV), FFN %d%s |\n",
                      sizes_.preset.empty() ? "" : ("preset " + sizes_.preset + ": ").c_str(), m.value("layers", 0),
                      m.value("hidden", 0), m.value("heads", 0), m.value("kv_heads", 0), m.value("ffn", 0),
                      m.value("moe", false) ? ", MoE" : "");
        s += b;
        std::snprintf(b, sizeof b, "| parameters | %.2fM (%.2fM trained) |\n", double(sizes_.parameters) / 1e6,
                      double(sizes_.trained) / 1e6);
        s += b;
        std::snprintf(b, sizeof b, "| steps | %lld of %lld (batch %d x %d tokens x %d accumulation = %lld tokens per step) |\n",
                      (long long)last_step_, (long long)sizes_.total_steps, config_.value("batch_size", 0),
                      config_.value("max_seq_len", 0), config_.value("accumulation_steps", 0),
                      (long long)sizes_.tokens_per_step);
        s += b;
        std::snprintf(b, sizeof b, "| tokens seen | %.3gM (positions; fine-tuning trains on the supervised ones) |\n",
                      double(last_step_) * double(sizes_.tokens_per_step) / 1e6);
        s += b;
        std::snprintf(b, sizeof b, "| time | %s (this process%s) |\n", format_seconds(seconds).c_str(),
                      config_.value("resume", 0) ? "; a resumed run counts from the resume" : "");
        s += b;
        const double tok_s = tok_s_n_ ? tok_s_sum_ / double(tok_s_n_) : 0;
        std::snprintf(b, sizeof b, "| tokens/s | %.0f (mean of the progress lines) |\n", tok_s);
        s += b;
        if (sizes_.cpu && tok_s > 0) {
            const double peak = measure_cpu_gemm_gflops();
            const double achieved = tok_s * flops_per_token() / 1e9;
            std::snprintf(b, sizeof b, "| MFU | %.1f%%: %.1f GFLOP/s of model FLOPs against a measured f32 GEMM peak of %.1f "
                          "GFLOP/s (1024^3, at report time) |\n", 100 * achieved / peak, achieved, peak);
            s += b;
        }
        if (!last_train_.is_null()) {
            std::snprintf(b, sizeof b, "| final train loss | %.4f (step %lld) |\n", last_train_.value("loss", 0.0),
                          (long long)last_train_.value("step", 0));
            s += b;
            for (const char* k : {"reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward"})
                if (last_train_.contains(k)) {
                    std::snprintf(b, sizeof b, "| final %s | %.4f |\n", k, last_train_[k].get<double>());
                    s += b;
                }
        }
        if (!last_eval_.is_null()) {
            std::snprintf(b, sizeof b, "| final val loss | %.4f (ppl %.2f%s) at step %lld |\n", last_eval_.value("val_loss", 0.0),
                          last_eval_.value("val_ppl", 0.0),
                          last_eval_.contains("val_bpb")
                              ? (", bpb " + std::to_string(last_eval_["val_bpb"].get<double>()).substr(0, 6)).c_str()
                              : "",
                          (long long)last_eval_.value("step", 0));
            s += b;
        }
        s += "\n![loss curve](loss.svg)\n\n";
        if (!samples_.empty()) {
            s += "## Samples\n\n";
            for (const auto& [step, text] : samples_) s += "Step " + std::to_string(step) + ":\n\n```\n" + text + "\n```\n\n";
        }
        s += "## Files\n\n";
        s += "- final model: `" + final_dir.string() + "`\n";
        s += "- last checkpoint (resumable, `--resume 1`): `" + ckpt.string() + "`\n";
        s += "- metrics: `" + (dir_ / "metrics.jsonl").string() + "`; TensorBoard: `tensorboard --logdir " + dir_.string() +
             "` (`" + events_.path().filename().string() + "`)\n";
        s += "- picture: `" + (dir_ / "loss.svg").string() + "` (`build/plot` draws several runs together)\n\n";
        s += "## Configuration\n\n```json\n" + config_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n```\n";
        return s;
    }

    static std::string format_seconds(double s) {
        char b[64];
        if (s >= 3600) std::snprintf(b, sizeof b, "%.0fh%02.0fm", std::floor(s / 3600), std::floor(std::fmod(s, 3600) / 60));
        else if (s >= 60) std::snprintf(b, sizeof b, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
        else std::snprintf(b, sizeof b, "%.1fs", s);
        return b;
    }

    std::filesystem::path dir_;
    nlohmann::json config_;
    Sizes sizes_;
    EventWriter events_;
    std::chrono::steady_clock::time_point t0_;
    std::string command_;
    std::int64_t last_step_ = 0;
    nlohmann::json last_train_, last_eval_;
    std::vector<std::pair<std::int64_t, std::string>> samples_;
    double tok_s_sum_ = 0;
    std::int64_t tok_s_n_ = 0;
};

}  // namespace minitrain
