// plot: the loss picture of one or more runs, from their metrics.jsonl files.
//
//   plot runs/quickstart/run/metrics.jsonl                          -> loss.svg
//   plot --output cmp.svg out/a/metrics.jsonl out/b/metrics.jsonl   several runs in one picture
//   plot --output loss.png out/metrics.jsonl                        PNG through rsvg-convert (librsvg2-bin)
//
// A run folder works in place of its metrics.jsonl. Train loss (thin: raw, thick: smoothed), val loss
// (circles) against steps (and tokens, for one run with run.json), learning rate dashed on the right axis.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <minitrain/log/plot.hpp>

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

void usage(FILE* to) {
    std::fputs("plot: draw the loss curves of one or more runs (metrics.jsonl files or run folders) as SVG, or PNG "
               "through rsvg-convert.\n\nUsage: plot [--output FILE.svg|FILE.png] [--title TEXT] METRICS.jsonl|RUN_DIR...\n\n"
               "  --output FILE   the picture to write (default: loss.svg); .png converts with rsvg-convert\n"
               "  --title TEXT    the title (default: the run names)\n"
               "  --help          print this and exit\n",
               to);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string output = "loss.svg", title;
        std::vector<fs::path> inputs;
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            if (a == "--help" || a == "-h") {
                usage(stdout);
                return 0;
            }
            if (a == "--output" || a == "--title") {
                MT_CHECK(i + 1 < argc, a, ": missing value (see --help)");
                (a == "--output" ? output : title) = argv[++i];
            } else if (a.starts_with("--")) {
                detail::fail("unknown flag ", a, " (see --help)");
            } else {
                inputs.emplace_back(a);
            }
        }
        MT_CHECK(!inputs.empty(), "no metrics files given (see --help)");
        std::vector<RunCurves> runs;
        for (fs::path p : inputs) {
            if (fs::is_directory(p)) p /= "metrics.jsonl";
            RunCurves r = read_metrics(p);
            if (inputs.size() > 1) r.name = p.parent_path().string();
            std::printf("plot: %s: %zu train points, %zu val points\n", p.c_str(), r.loss.size(), r.val_loss.size());
            runs.push_back(std::move(r));
        }
        if (title.empty())
            for (const auto& r : runs) title += (title.empty() ? "" : " vs ") + r.name;
        const std::string svg = loss_svg(runs, title);
        const fs::path out = output;
        if (out.extension() == ".png") {
            const fs::path tmp = fs::path(out).replace_extension(".svg");
            write_text_atomic(tmp, svg);
            const std::string cmd = "rsvg-convert -f png -o '" + out.string() + "' '" + tmp.string() + "'";
            MT_CHECK(std::system("command -v rsvg-convert > /dev/null 2>&1") == 0,
                     "a PNG needs rsvg-convert (Debian package librsvg2-bin); ", tmp.string(), " is written");
            MT_CHECK(std::system(cmd.c_str()) == 0, "rsvg-convert failed: ", cmd);
            std::printf("plot: %s (and %s)\n", out.c_str(), tmp.c_str());
        } else {
            write_text_atomic(out, svg);
            std::printf("plot: %s\n", out.c_str());
        }
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
