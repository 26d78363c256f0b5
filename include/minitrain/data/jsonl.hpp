// minitrain/data/jsonl.hpp
// Streaming input for data preparation: JSON Lines and plain text files read record by record with flat
// memory, every malformed record reported as "file:line: what is wrong" (or skipped and counted, when the
// user asked for that), and a pipeline that tokenizes records on several threads while keeping the input
// order, so the output never depends on the thread count.
//
// Records:
//   .jsonl / .ndjson   one JSON object per line. Blank lines are ignored (they are not records).
//   anything else      plain text (UTF-8), split into documents by TextSplit:
//                        line       one document per non-blank line (default; the line break is not part of it)
//                        paragraph  documents separated by one or more blank lines; line breaks inside kept
//                        file       the whole file is one document (it must fit in memory)
// In every mode "\r\n" is read as "\n", a UTF-8 byte order mark at the start of a file is dropped, and
// line numbers are the file's own (1-based, blank lines counted).
//
// Malformed records: invalid UTF-8 (checked here, before any JSON parsing, so that the message can say
// where; nlohmann/json also rejects it inside strings, but not with a byte position), JSON that does not
// parse, a top-level value that is not an object, a missing field or a field of the wrong type (the
// format parsers in chat.hpp and prepare.hpp throw RecordError for those), JSON nested deeper than
// json_max_depth (128) levels, and a JSONL line longer than ReadOptions::max_record_bytes (16 MiB by
// default; read past without being held in memory). OnError::fail throws Error with the file and line;
// OnError::skip counts the record in a SkipLog (in total and by kind of problem), keeps its first
// messages, and goes on.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <glob.h>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/json.hpp"
#include "../io/mmap.hpp"

namespace minitrain {

// ---- errors -----------------------------------------------------------------------------------------

/// What to do with a malformed record: stop with an Error naming file and line, or skip it and count it.
enum class OnError { fail, skip };

inline OnError parse_on_error(std::string_view s) {
    if (s == "fail") return OnError::fail;
    if (s == "skip") return OnError::skip;
    detail::fail("on_error: expected fail or skip, found \"", s, "\"");
}

/// A problem with one record, without its location: the reader prefixes "file:line: ". Derived from
/// Error so that, called outside a reader, it is still the one exception type minitrain throws.
class RecordError : public Error {
public:
    explicit RecordError(const std::string& what) : Error(what) {}
};

namespace detail {
template <class... Parts>
[[noreturn]] inline void record_fail(Parts&&... parts) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    throw RecordError(os.str());
}
}  // namespace detail

namespace detail {
/// The kind of a record's problem, for counting: its message up to the first ": " or " (" (the second
/// ": " or ", found" after a field path such as `field "conversations"[2].role`), with indices "[2]"
/// written "[]", so that `field "conversations"[2].role: ...` and `...[5].role: ...` count together.
inline std::string skip_reason(std::string_view message) {
    std::size_t cut = std::min(message.find(": "), message.find(" ("));
    if (message.rfind("field \"", 0) == 0 && cut != std::string_view::npos && message.compare(cut, 2, ": ") == 0)
        cut = std::min({message.find(": ", cut + 2), message.find(", found", cut + 2), message.find(" (", cut + 2)});
    const std::string_view head = message.substr(0, std::min<std::size_t>(cut, 100));
    std::string r;
    for (std::size_t i = 0; i < head.size(); ++i) {
        r += head[i];
        if (head[i] != '[') continue;
        std::size_t j = i + 1;
        while (j < head.size() && head[j] >= '0' && head[j] <= '9') ++j;
        if (j > i + 1 && j < head.size() && head[j] == ']') i = j - 1;
    }
    while (!r.empty() && (static_cast<unsigned char>(r.back()) & 0xC0) == 0x80) r.pop_back();  // a cut sequence
    if (!r.empty() && static_cast<unsigned char>(r.back()) >= 0xC0) r.pop_back();
    return r;
}
}  // namespace detail

/// Records skipped under OnError::skip: how many, why (counts by kind of problem), and the first messages.
struct SkipLog {
    std::int64_t count = 0;
    std::vector<std::string> first;  // at most `keep` messages, in input order
    std::size_t keep = 5;
    std::vector<std::pair<std::string, std::int64_t>> reasons;  // kind of problem -> records, first seen first
    static constexpr std::size_t max_reasons = 16;              // further kinds count as "other problems"

    /// `message` is "file:line: what"; `reason` the kind of problem (detail::skip_reason of "what").
    void add(std::string message, std::string reason = "other problems") {
        ++count;
        if (first.size() < keep) first.push_back(std::move(message));
        if (reasons.size() + 1 >= max_reasons && reason != "other problems" &&
            std::none_of(reasons.begin(), reasons.end(), [&](const auto& r) { return r.first == reason; }))
            reason = "other problems";
        for (auto& r : reasons)
            if (r.first == reason) return void(++r.second);
        reasons.emplace_back(std::move(reason), 1);
    }
    /// "4 not valid JSON, 2 missing field "conversations"": the counts by kind, most frequent first.
    std::string by_reason() const {
        auto sorted = reasons;
        std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
        std::string s;
        for (const auto& [r, n] : sorted) s += (s.empty() ? "" : ", ") + std::to_string(n) + " " + r;
        return s;
    }
    /// "" when nothing was skipped; otherwise a count and the first messages, one per line, then the counts
    /// by kind of problem.
    std::string summary() const {
        if (count == 0) return "";
        std::string s = std::to_string(count) + (count == 1 ? " malformed record skipped" : " malformed records skipped");
        s += count > std::int64_t(first.size()) ? ", the first " + std::to_string(first.size()) + ":" : ":";
        for (const auto& m : first) s += "\n  " + m;
        if (!reasons.empty()) s += "\n  by kind: " + by_reason();
        return s;
    }
};

// ---- UTF-8 ------------------------------------------------------------------------------------------

/// Offset of the first byte that does not belong to well-formed UTF-8 (RFC 3629: no overlong forms, no
/// surrogates, nothing above U+10FFFF, no truncated sequence), or npos when `s` is valid.
inline std::size_t find_invalid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        // ASCII fast path, 8 bytes at a time.
        while (i + 8 <= n) {
            std::uint64_t w;
            std::memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        int len;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;       // overlong
            if (c == 0xED) hi = 0x9F;       // surrogates U+D800..U+DFFF
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;       // overlong
            if (c == 0xF4) hi = 0x8F;       // above U+10FFFF
        } else {
            return i;  // 0x80..0xC1 (continuation or overlong lead) or 0xF5..0xFF
        }
        if (i + std::size_t(len) > n) return i;
        if (p[i + 1] < lo || p[i + 1] > hi) return i;
        for (int k = 2; k < len; ++k)
            if ((p[i + std::size_t(k)] & 0xC0) != 0x80) return i;
        i += std::size_t(len);
    }
    return std::string_view::npos;
}

/// Throws RecordError("invalid UTF-8 (byte 0x.. at column N)") when `s` is not valid UTF-8.
inline void check_utf8(std::string_view s) {
    std::size_t at = find_invalid_utf8(s);
    if (at == std::string_view::npos) return;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", unsigned(static_cast<unsigned char>(s[at])));
    detail::record_fail("invalid UTF-8 (byte ", hex, " at column ", at + 1, ")");
}

/// The longest prefix of `s` of at most `max` bytes that does not cut a UTF-8 sequence in two.
inline std::string_view utf8_prefix(std::string_view s, std::size_t max) {
    if (s.size() <= max) return s;
    std::size_t n = max;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    return s.substr(0, n);
}

// ---- JSON records -------------------------------------------------------------------------------------

/// Parses one JSON Lines record, which must be an object. RecordError for invalid UTF-8, JSON that does
/// not parse (with nlohmann's column and reason), or another top-level type.
inline nlohmann::json parse_json_record(std::string_view line) {
    check_utf8(line);
    if (std::string e = detail::json_depth_error(line); !e.empty()) detail::record_fail("JSON ", e);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
        // "[json.exception.parse_error.101] parse error at line 1, column 7: syntax error ..." -> "column 7: ..."
        std::string_view what = e.what();
        if (auto at = what.find("column "); at != std::string_view::npos) what = what.substr(at);
        std::string shown(utf8_prefix(what, 240));
        if (shown.size() < what.size()) shown += "...";
        detail::record_fail("not valid JSON: ", shown);
    }
    if (!j.is_object()) detail::record_fail("expected a JSON object, found ", j.type_name());
    return j;
}

/// obj[name], which must exist. `where` names the object in messages ("" for the top level, else e.g.
/// "field \"conversations\"[2]").
inline const nlohmann::json& json_field(const nlohmann::json& obj, std::string_view name, std::string_view where = "") {
    auto it = obj.find(name);
    if (it == obj.end()) {
        if (where.empty()) detail::record_fail("missing field \"", name, "\"");
        detail::record_fail(where, ": missing field \"", name, "\"");
    }
    return *it;
}

/// The string at `value`; `what` names it in the message (e.g. "field \"text\"").
inline const std::string& json_string(const nlohmann::json& value, std::string_view what) {
    if (!value.is_string()) detail::record_fail(what, ": expected a string, found ", value.type_name());
    return value.get_ref<const std::string&>();
}

// ---- lines ------------------------------------------------------------------------------------------

/// Reads a file line by line through a fixed buffer (it grows only for a line longer than itself), so the
/// memory used does not depend on the file size. A line longer than `max_line` bytes is not kept: next()
/// returns it as an empty view and long_line() says how long it was, with memory bounded by max_line.
class LineReader {
public:
    explicit LineReader(const std::filesystem::path& path, std::size_t max_line = std::size_t(-1))
        : path_(path), max_(max_line) {
        f_ = std::fopen(path.c_str(), "rb");
        if (!f_) {
            int err = errno;
            detail::fail(path.string(), ": cannot open for reading: ", detail::errno_text(err));
        }
        // 1 MiB, or less for a smaller file (many small files, or a fuzzer, should not pay for 1 MiB each).
        std::error_code ec;
        const auto size = std::filesystem::file_size(path, ec);
        buf_.resize(ec ? std::size_t(1) << 20 : std::size_t(std::clamp<std::uintmax_t>(size + 1, 4096, std::uintmax_t(1) << 20)));
    }
    ~LineReader() {
        if (f_) std::fclose(f_);
    }
    LineReader(const LineReader&) = delete;
    LineReader& operator=(const LineReader&) = delete;

    /// The next line, without its "\n" or "\r\n"; valid until the next call. False at the end of the file.
    bool next(std::string_view& line) {
        for (;;) {
            if (auto* nl = static_cast<char*>(std::memchr(buf_.data() + scan_, '\n', end_ - scan_))) {
                std::size_t e = std::size_t(nl - buf_.data());
                finish(line, e, e + 1);
                return true;
            }
            scan_ = end_;
            if (dropped_ + (end_ - pos_) > max_) {  // too long already: count the bytes, do not keep them
                dropped_ += end_ - pos_;
                pos_ = scan_ = end_;
            }
            if (eof_) {
                if (pos_ == end_ && dropped_ == 0) return false;
                finish(line, end_, end_);  // a last line without "\n"
                return true;
            }
            fill();
        }
    }

    /// 0 when the line last returned was kept; its length in bytes when it was longer than max_line (next()
    /// then returned an empty view).
    std::uint64_t long_line() const { return long_; }

    /// 1-based number of the line last returned.
    std::int64_t line_number() const { return line_; }
    /// Bytes of the file consumed so far (through the end of the line last returned).
    std::uint64_t bytes_consumed() const { return base_ + pos_; }
    const std::filesystem::path& path() const { return path_; }

private:
    void finish(std::string_view& line, std::size_t end, std::size_t next) {
        const std::uint64_t len = dropped_ + (end - pos_);
        dropped_ = 0;
        if (len > max_) {
            long_ = len;
            line = {};
            pos_ = scan_ = next;
            ++line_;
            return;
        }
        long_ = 0;
        emit(line, end, next);
    }
    void emit(std::string_view& line, std::size_t end, std::size_t next) {
        std::size_t b = pos_;
        if (line_ == 0 && end - b >= 3 && std::memcmp(buf_.data() + b, "\xEF\xBB\xBF", 3) == 0) b += 3;  // BOM
        std::size_t e = end;
        if (e > b && buf_[e - 1] == '\r') --e;
        line = std::string_view(buf_.data() + b, e - b);
        pos_ = scan_ = next;
        ++line_;
    }
    void fill() {
        if (pos_ > 0) {  // keep the partial line, drop what was consumed
            std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
            base_ += pos_;
            end_ -= pos_;
            scan_ -= pos_;
            pos_ = 0;
        }
        if (end_ == buf_.size()) {  // the line so far fills the buffer (it is at most max_ bytes long)
            std::size_t grow = buf_.size() * 2;
            if (max_ < grow) grow = std::max(buf_.size() + 1, max_ + 2);  // room for the longest line and its '\n'
            buf_.resize(grow);
        }
        std::size_t got = std::fread(buf_.data() + end_, 1, buf_.size() - end_, f_);
        if (got == 0) {
            if (std::ferror(f_)) detail::fail(path_.string(), ": read error after ", base_ + end_, " bytes");
            eof_ = true;
        }
        end_ += got;
    }

    std::filesystem::path path_;
    std::FILE* f_ = nullptr;
    std::vector<char> buf_;
    std::size_t pos_ = 0, scan_ = 0, end_ = 0;  // next line starts at pos_; no '\n' in [pos_, scan_)
    std::uint64_t base_ = 0;                    // file offset of buf_[0]
    std::int64_t line_ = 0;
    bool eof_ = false;
    std::size_t max_;                           // longest line kept
    std::uint64_t dropped_ = 0;                 // bytes of the current (too long) line already discarded
    std::uint64_t long_ = 0;                    // length of the last line returned, when it was too long
};

// ---- records ----------------------------------------------------------------------------------------

enum class InputFormat { auto_detect, jsonl, text };
enum class TextSplit { line, paragraph, file };

inline InputFormat parse_input_format(std::string_view s) {
    if (s == "auto") return InputFormat::auto_detect;
    if (s == "jsonl") return InputFormat::jsonl;
    if (s == "text") return InputFormat::text;
    detail::fail("format: expected auto, jsonl or text, found \"", s, "\"");
}
inline TextSplit parse_text_split(std::string_view s) {
    if (s == "line") return TextSplit::line;
    if (s == "paragraph") return TextSplit::paragraph;
    if (s == "file") return TextSplit::file;
    detail::fail("text_split: expected line, paragraph or file, found \"", s, "\"");
}

/// An input file with its format decided (jsonl or text) and its size (for progress).
struct InputFile {
    std::filesystem::path path;
    InputFormat format = InputFormat::jsonl;
    std::uint64_t size = 0;
};

/// .jsonl and .ndjson are JSON Lines; every other name is plain text.
inline InputFormat detect_format(const std::filesystem::path& p) {
    auto ext = p.extension().string();
    return ext == ".jsonl" || ext == ".ndjson" ? InputFormat::jsonl : InputFormat::text;
}

/// Expands each argument (a path, or a glob such as "data/*.jsonl", matches sorted by byte order) into
/// input files, in the order given. Error when a path does not exist or a glob matches nothing.
inline std::vector<InputFile> resolve_inputs(const std::vector<std::string>& args, InputFormat format = InputFormat::auto_detect) {
    namespace fs = std::filesystem;
    std::vector<InputFile> out;
    for (const auto& a : args) {
        std::vector<std::string> paths;
        if (a.find_first_of("*?[") == std::string::npos) {
            paths.push_back(a);
        } else {
            glob_t g{};
            int rc = ::glob(a.c_str(), 0, nullptr, &g);
            if (rc == 0)
                for (std::size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
            ::globfree(&g);
            MT_CHECK(rc != GLOB_NOMATCH, "input: no file matches \"", a, "\"");
            MT_CHECK(rc == 0, "input: glob(\"", a, "\") failed");
            std::sort(paths.begin(), paths.end());
        }
        for (auto& p : paths) {
            std::error_code ec;
            MT_CHECK(fs::is_regular_file(p, ec), p, ": no such file (or not a regular file)");
            InputFile f;
            f.path = p;
            f.format = format == InputFormat::auto_detect ? detect_format(p) : format;
            f.size = fs::file_size(p, ec);
            out.push_back(std::move(f));
        }
    }
    return out;
}

/// The records of one file, in order (see the top of this file for what a record is). A JSONL line longer
/// than max_record bytes is returned as an empty record with oversize() set to its length.
class RecordReader {
public:
    RecordReader(const InputFile& f, TextSplit split, std::size_t max_record = jsonl_max_record_bytes)
        : lines_(f.path, f.format == InputFormat::jsonl ? max_record : std::size_t(-1)),
          jsonl_(f.format == InputFormat::jsonl),
          split_(split) {}

    /// Appends the next record to `out` and sets `line` to its first line. False at the end of the file.
    bool next(std::string& out, std::int64_t& line) {
        std::string_view l;
        oversize_ = 0;
        if (jsonl_ || split_ == TextSplit::line) {
            while (lines_.next(l)) {
                if (lines_.long_line()) {
                    line = lines_.line_number();
                    oversize_ = lines_.long_line();
                    return true;
                }
                if (!blank(l)) {
                    line = lines_.line_number();
                    out.append(l);
                    return true;
                }
            }
            return false;
        }
        // paragraph: up to the next blank line; file: everything.
        bool any = false;
        while (lines_.next(l)) {
            if (blank(l)) {
                if (any && split_ == TextSplit::paragraph) return true;
                if (!any) continue;  // leading blank lines
            }
            if (any) {
                out += '\n';
            } else {
                line = lines_.line_number();
                any = true;
            }
            out.append(l);
        }
        if (any && split_ == TextSplit::file)  // trailing blank lines are not part of the document
            while (!out.empty() && out.back() == '\n') out.pop_back();
        return any;
    }

    std::uint64_t bytes_consumed() const { return lines_.bytes_consumed(); }
    /// Length of the record last returned when it was over the limit (and so not read), else 0.
    std::uint64_t oversize() const { return oversize_; }

private:
    static bool blank(std::string_view l) { return l.find_first_not_of(" \t\r\f\v") == std::string_view::npos; }

    LineReader lines_;
    bool jsonl_;
    TextSplit split_;
    std::uint64_t oversize_ = 0;
};

// ---- parallel processing in input order ---------------------------------------------------------------

/// A fixed set of threads that run `fn(i)` for i in [0, n) (the calling thread takes part), kept alive
/// across calls so that per-thread state (the tokenizer's word cache) stays warm.
class WorkerPool {
public:
    /// threads <= 0: one per hardware thread.
    explicit WorkerPool(int threads) {
        if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
        for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { loop(); });
    }
    ~WorkerPool() {
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : workers_) t.join();
    }
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    int threads() const { return int(workers_.size()) + 1; }

    /// Runs fn(i) for every i in [0, n) and returns when all are done. The first exception thrown by fn
    /// is rethrown here (the remaining items still run).
    void run(std::size_t n, const std::function<void(std::size_t)>& fn) {
        if (workers_.empty() || n <= 1) {
            for (std::size_t i = 0; i < n; ++i) fn(i);
            return;
        }
        {
            std::lock_guard<std::mutex> lk(m_);
            fn_ = &fn;
            n_ = n;
            next_.store(0);
            active_ = workers_.size();
            error_ = nullptr;
            ++generation_;
        }
        cv_.notify_all();
        drain();
        std::unique_lock<std::mutex> lk(m_);
        done_.wait(lk, [&] { return active_ == 0; });
        fn_ = nullptr;
        if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    }

private:
    void drain() {
        for (;;) {
            std::size_t i = next_.fetch_add(1);
            if (i >= n_) return;
            try {
                (*fn_)(i);
            } catch (...) {
                std::lock_guard<std::mutex> lk(m_);
                if (!error_) error_ = std::current_exception();
            }
        }
    }
    void loop() {
        std::uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            drain();
            std::lock_guard<std::mutex> lk(m_);
            if (--active_ == 0) done_.notify_all();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex m_;
    std::condition_variable cv_, done_;
    const std::function<void(std::size_t)>* fn_ = nullptr;
    std::size_t n_ = 0, active_ = 0;
    std::atomic<std::size_t> next_{0};
    std::uint64_t generation_ = 0;
    std::exception_ptr error_;
    bool stop_ = false;
};

struct ReadOptions {
    TextSplit text_split = TextSplit::line;
    OnError on_error = OnError::fail;
    std::size_t chunk_bytes = std::size_t(8) << 20;  // records read per round (then processed in parallel)
    std::size_t max_record_bytes = jsonl_max_record_bytes;  // a longer JSONL line is a malformed record
};

namespace detail {
/// The message for a JSONL line over the limit (the reader prefixes "file:line: ").
inline std::string oversize_message(std::uint64_t bytes, std::size_t limit) {
    std::string mib = limit % (std::size_t(1) << 20) == 0 ? " (" + std::to_string(limit >> 20) + " MiB)" : std::string();
    return "record too long: " + std::to_string(bytes) + " bytes, the limit is " + std::to_string(limit) + " bytes" +
           mib + " per JSONL record (split the record, or raise max_record_bytes)";
}
}  // namespace detail

/// Where a record came from.
struct RecordSource {
    const InputFile* file;
    std::int64_t line;
};

/// Streams the records of `files` in order, in chunks of about opt.chunk_bytes:
///   work(std::string_view record, const InputFile&, R& slot)   on the pool's threads, any order; must be
///                                                               thread-safe; fills `slot` (reused, so
///                                                               its vectors keep their capacity)
///   take(R& slot, const RecordSource&)                          on the calling thread, in input order
///   progress(std::uint64_t input_bytes_done)                    after each chunk
/// A RecordError thrown by work or take becomes "file:line: message": thrown as Error under
/// OnError::fail (the first one in input order, whatever the thread count), or added to `skipped`.
/// Any other exception is fatal and propagates. Memory: one chunk of text and its slots.
template <class R, class Work, class Take, class Progress>
void process_records(const std::vector<InputFile>& files, const ReadOptions& opt, WorkerPool& pool, SkipLog& skipped,
                     Work&& work, Take&& take, Progress&& progress) {
    struct Slot {
        R value{};
        std::string error;  // empty when work succeeded
    };
    std::string text;                      // the chunk's records, back to back
    std::vector<std::size_t> begin;        // (records + 1) offsets into text
    std::vector<RecordSource> source;      // (records)
    std::vector<std::uint64_t> oversize;   // (records) length of a record over the limit, else 0
    std::vector<Slot> slots;
    std::uint64_t done_bytes = 0;          // of files finished
    std::size_t fi = 0;
    std::unique_ptr<RecordReader> reader;

    auto report = [&](const RecordSource& s, const std::string& msg) {
        std::string full = s.file->path.string() + ":" + std::to_string(s.line) + ": " + msg;
        if (opt.on_error == OnError::fail) throw Error(full);
        skipped.add(std::move(full), detail::skip_reason(msg));
    };

    while (fi < files.size()) {
        text.clear();
        begin.assign(1, 0);
        source.clear();
        oversize.clear();
        std::uint64_t in_progress = 0;
        while (fi < files.size() && text.size() < opt.chunk_bytes) {
            if (!reader) reader = std::make_unique<RecordReader>(files[fi], opt.text_split, opt.max_record_bytes);
            std::int64_t line = 0;
            if (reader->next(text, line)) {
                begin.push_back(text.size());
                source.push_back({&files[fi], line});
                oversize.push_back(reader->oversize());
                in_progress = reader->bytes_consumed();
            } else {
                done_bytes += reader->bytes_consumed();
                in_progress = 0;
                reader.reset();
                ++fi;
            }
        }
        const std::size_t n = source.size();
        if (slots.size() < n) slots.resize(n);
        pool.run(n, [&](std::size_t i) {
            Slot& s = slots[i];
            s.error.clear();
            if (oversize[i]) {
                s.error = detail::oversize_message(oversize[i], opt.max_record_bytes);
                return;
            }
            try {
                work(std::string_view(text).substr(begin[i], begin[i + 1] - begin[i]), *source[i].file, s.value);
            } catch (const RecordError& e) {
                s.error = e.what();
            }
        });
        for (std::size_t i = 0; i < n; ++i) {
            if (!slots[i].error.empty()) {
                report(source[i], slots[i].error);
                continue;
            }
            try {
                take(slots[i].value, source[i]);
            } catch (const RecordError& e) {
                report(source[i], e.what());
            }
        }
        progress(done_bytes + in_progress);
    }
}

}  // namespace minitrain
