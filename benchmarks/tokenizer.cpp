// bench_tokenizer: how long training a 6400-token byte-level BPE vocabulary on 10 MB of text takes,
// and encode/decode throughput with 1 and 2 threads, for the trained tokenizer and MiniMind's.
//
// Corpus (real-language text from Debian packages, read in sorted path order until 10 MB):
//   /usr/share/games/fortunes/*  (package fortunes + fortunes-zh: English and Chinese; *.dat and *.u8 skipped)
//   /usr/share/common-licenses/* (base-files)
//   /usr/share/doc/*/copyright   (every installed package)
// and, if that is still short of 10 MB, repeated. Override with: bench_tokenizer [--mb N] [FILE...].
// Each file is one document for training; for encoding, documents are the file's paragraphs
// (split at blank lines), as a data pipeline would see records.
//
// Times are wall clock, and also per CPU-second of this process (getrusage): on a shared, loaded
// machine the second is the better measure of the code, the first of what you would wait.
#include <minitrain/tokenizer/tokenizer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

using namespace minitrain;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// CPU seconds used by this process so far (all threads, user + system).
double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::string read_all(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string first_line_of(const char* path, const char* key) {
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key, 0) == 0) return line.substr(line.find(':') + 2);
    return "?";
}

std::vector<fs::path> default_files() {
    std::vector<fs::path> out;
    auto add_dir = [&](const fs::path& dir, auto keep) {
        std::vector<fs::path> v;
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) return;
        for (const auto& e : fs::directory_iterator(dir, ec))
            if (keep(e.path())) v.push_back(e.path());
        std::sort(v.begin(), v.end());
        out.insert(out.end(), v.begin(), v.end());
    };
    add_dir("/usr/share/games/fortunes", [](const fs::path& p) {
        return fs::is_regular_file(p) && p.extension() != ".dat" && p.extension() != ".u8";
    });
    add_dir("/usr/share/common-licenses", [](const fs::path& p) { return fs::is_regular_file(p); });
    std::vector<fs::path> docs;
    std::error_code ec;
    if (fs::is_directory("/usr/share/doc", ec))
        for (const auto& e : fs::directory_iterator("/usr/share/doc", ec))
            if (fs::is_regular_file(e.path() / "copyright")) docs.push_back(e.path() / "copyright");
    std::sort(docs.begin(), docs.end());
    out.insert(out.end(), docs.begin(), docs.end());
    return out;
}

/// Splits text into paragraphs (at blank lines), keeping every byte.
std::vector<std::string_view> paragraphs(std::string_view s) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (std::size_t at; (at = s.find("\n\n", start)) != std::string_view::npos;) {
        out.push_back(s.substr(start, at + 2 - start));
        start = at + 2;
    }
    if (start < s.size()) out.push_back(s.substr(start));
    return out;
}

struct EncodeResult {
    double mb_per_s;      // wall clock
    double mb_per_cpu_s;  // per CPU-second, all threads together
    std::size_t tokens;
};

/// Encodes every document with `threads` threads (documents dealt round-robin), best of `reps` runs.
EncodeResult encode_all(const Tokenizer& t, const std::vector<std::string_view>& docs, std::size_t bytes, int threads,
                        int reps) {
    double best = 1e30, best_cpu = 1e30;
    std::size_t tokens = 0;
    for (int r = 0; r < reps; ++r) {
        std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(threads));
        for (auto& o : out) o.reserve(bytes / 2 / std::size_t(threads) + 1024);
        auto t0 = clock_type::now();
        double c0 = cpu_seconds();
        auto work = [&](int th) {
            for (std::size_t i = std::size_t(th); i < docs.size(); i += std::size_t(threads))
                t.encode_into(docs[i], out[std::size_t(th)], false);
        };
        if (threads == 1) {
            work(0);
        } else {
            std::vector<std::thread> pool;
            for (int th = 0; th < threads; ++th) pool.emplace_back(work, th);
            for (auto& p : pool) p.join();
        }
        best = std::min(best, seconds_since(t0));
        best_cpu = std::min(best_cpu, cpu_seconds() - c0);
        tokens = 0;
        for (auto& o : out) tokens += o.size();
    }
    return {double(bytes) / 1e6 / best, double(bytes) / 1e6 / best_cpu, tokens};
}

void bench_encode(const char* name, const Tokenizer& t, const std::vector<std::string_view>& docs, std::size_t bytes) {
    // Best of 3: the first run also fills the per-thread word caches, as early in a long pipeline run.
    EncodeResult one = encode_all(t, docs, bytes, 1, 3);
    EncodeResult two = encode_all(t, docs, bytes, 2, 3);
    std::vector<std::int32_t> ids;
    for (auto d : docs) t.encode_into(d, ids, false);
    auto t0 = clock_type::now();
    std::string back = t.decode(ids);
    double dec = seconds_since(t0);
    std::printf("%-16s %7.1f / %5.1f  %7.1f / %5.1f  %8.1f   %6.2f %s\n", name, one.mb_per_s, one.mb_per_cpu_s,
                two.mb_per_s, two.mb_per_cpu_s, double(back.size()) / 1e6 / dec, double(bytes) / double(one.tokens),
                back.size() == bytes ? "" : "(decode mismatch!)");
}

}  // namespace

int main(int argc, char** argv) {
    double target_mb = 10;
    std::vector<fs::path> files;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--mb" && i + 1 < argc)
            target_mb = std::stod(argv[++i]);
        else if (a == "--help" || a == "-h") {
            std::printf("usage: bench_tokenizer [--mb N] [FILE...]\n");
            return 0;
        } else
            files.push_back(a);
    }
    const bool custom = !files.empty();
    if (!custom) files = default_files();
    const std::size_t target = std::size_t(target_mb * 1e6);

    // ---- the corpus ----
    std::vector<std::string> texts;
    std::size_t bytes = 0, n_files = 0;
    for (const auto& f : files) {
        if (bytes >= target) break;
        std::string s = read_all(f);
        if (s.empty()) continue;
        if (bytes + s.size() > target) s.resize(target - bytes);
        bytes += s.size();
        texts.push_back(std::move(s));
        ++n_files;
    }
    if (texts.empty()) {
        std::fprintf(stderr, "bench_tokenizer: no input text found (install fortunes, or pass files)\n");
        return 1;
    }
    for (std::size_t i = 0; bytes < target; ++i) {  // repeat to reach the target size
        std::string s = texts[i];
        if (bytes + s.size() > target) s.resize(target - bytes);
        bytes += s.size();
        texts.push_back(std::move(s));
    }

    std::printf("# bench_tokenizer\n");
    std::printf("machine: %s, %u hardware threads, load average %s", first_line_of("/proc/cpuinfo", "model name").c_str(),
                std::thread::hardware_concurrency(), read_all("/proc/loadavg").c_str());
    std::printf("corpus: %.2f MB from %zu files (%s)%s\n\n", double(bytes) / 1e6, n_files,
                custom ? "given on the command line" : "fortunes, fortunes-zh, common-licenses, /usr/share/doc/*/copyright",
                texts.size() > n_files ? ", repeated to reach the size" : "");

    // ---- training ----
    std::printf("train, vocab 6400, GPT-2 regex   count words        merges           total\n");
    std::printf("                                 wall s  cpu s    wall s  cpu s    wall s\n");
    std::vector<std::string_view> views(texts.begin(), texts.end());
    for (int threads : {1, 2}) {
        tok::TrainConfig cfg;
        cfg.vocab_size = 6400;
        cfg.special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
        cfg.threads = threads;
        auto t0 = clock_type::now();
        double c0 = cpu_seconds();
        tok::Regex re(tok::gpt2_pattern);
        tok::WordCounts counts = tok::count_words(views, cfg.special_tokens, re, threads);
        double count_s = seconds_since(t0), count_c = cpu_seconds() - c0;
        auto t1 = clock_type::now();
        double c1 = cpu_seconds();
        auto d = tok::train_bpe(counts, cfg);
        double merge_s = seconds_since(t1), merge_c = cpu_seconds() - c1;
        std::printf("%-32s %6.2f %6.2f    %6.2f %6.2f    %6.2f   (%zu distinct words)\n",
                    (std::to_string(threads) + (threads == 1 ? " thread" : " threads")).c_str(), count_s, count_c,
                    merge_s, merge_c, count_s + merge_s, counts.size());
    }
    Tokenizer::TrainOptions o;
    o.threads = 2;
    auto t2 = clock_type::now();
    Tokenizer trained = Tokenizer::train_from_texts(texts, o);
    std::printf("%-32s %47.2f\n", "Tokenizer::train_from_texts, 2 thr", seconds_since(t2));

    // ---- encoding ----
    std::vector<std::string_view> docs;
    for (const auto& t : texts)
        for (auto p : paragraphs(t)) docs.push_back(p);
    std::printf("\n%zu documents (paragraphs), allow_special=false\n", docs.size());
    std::printf("encode MB/s      1 thread        2 threads        decode   bytes/\n");
    std::printf("                 wall / per cpu  wall / per cpu   MB/s     token\n");
    bench_encode("trained (6400)", trained, docs, bytes);
    for (fs::path p = fs::current_path(); !p.empty(); p = p.parent_path()) {
        for (const char* name : {"minimind2", "minimind3"}) {
            fs::path f = p / "shared/data/minimind-tokenizers" / (std::string(name) + "-tokenizer.json");
            if (fs::exists(f)) bench_encode(name, Tokenizer::load(f), docs, bytes);
        }
        if (fs::exists(p / "shared/data/minimind-tokenizers") || p == p.root_path()) break;
    }
    return 0;
}
