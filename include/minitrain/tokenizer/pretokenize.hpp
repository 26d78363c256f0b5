// minitrain/tokenizer/pretokenize.hpp
// Pre-tokenization: cut text into pieces ("words") that BPE merges never cross, with a PCRE2 regex
// compiled in UTF + UCP mode (so \p{L}, \p{N}, \s follow Unicode for every script) and JIT-compiled.
//
// Invalid UTF-8: the pattern is compiled with PCRE2_MATCH_INVALID_UTF, so an invalid sequence simply
// matches nothing (no up-front UTF check, no error). The bytes between two matches, which for the GPT-2
// and GPT-4 patterns can only be invalid UTF-8, become a piece of their own, so every input byte lands
// in exactly one piece and byte-level BPE round-trips any byte string.
//
// Thread safety: a compiled Regex is immutable and shared; the match data and JIT stack are per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "../core/error.hpp"

namespace minitrain::tok {

/// GPT-2's pattern: what Hugging Face's ByteLevel pre-tokenizer uses with use_regex=true (and what
/// MiniMind's tokenizers use). Contractions, letters with an optional leading space, numbers, other
/// symbols, and whitespace (a run of spaces before a word leaves its last space to the word).
inline constexpr std::string_view gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// GPT-4's (cl100k) pattern: case-insensitive contractions, letters with one leading non-letter, numbers
/// in groups of at most 3 digits, symbols with trailing newlines, newline runs kept apart.
inline constexpr std::string_view gpt4_pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace detail {

/// Per-thread matching state: PCRE2 match data (one ovector pair: we only need the whole match), a match
/// context and a JIT stack big enough for long whitespace runs (the default 32 KiB is not).
struct MatchState {
    pcre2_match_data_8* data = nullptr;
    pcre2_match_context_8* context = nullptr;
    pcre2_jit_stack_8* stack = nullptr;
    MatchState() {
        data = pcre2_match_data_create_8(1, nullptr);
        context = pcre2_match_context_create_8(nullptr);
        stack = pcre2_jit_stack_create_8(32 * 1024, 8 * 1024 * 1024, nullptr);
        MT_CHECK(data && context && stack, "tokenizer: cannot allocate PCRE2 match state");
        pcre2_jit_stack_assign_8(context, nullptr, stack);
    }
    ~MatchState() {
        pcre2_jit_stack_free_8(stack);
        pcre2_match_context_free_8(context);
        pcre2_match_data_free_8(data);
    }
    MatchState(const MatchState&) = delete;
    MatchState& operator=(const MatchState&) = delete;
};

inline MatchState& match_state() {
    thread_local MatchState state;
    return state;
}

}  // namespace detail

/// A compiled, JIT-optimized regex (UTF, UCP, invalid UTF-8 tolerated). Copies share the compiled code.
class Regex {
public:
    Regex() = default;

    /// Compiles `pattern`; throws Error with PCRE2's message and offset when it does not compile.
    explicit Regex(std::string_view pattern) : pattern_(pattern) {
        int err = 0;
        PCRE2_SIZE at = 0;
        pcre2_code_8* code = pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pattern.data()), pattern.size(),
                                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, nullptr);
        if (!code) {
            PCRE2_UCHAR8 msg[256];
            pcre2_get_error_message_8(err, msg, sizeof msg);
            minitrain::detail::fail("tokenizer: regex does not compile at offset ", at, ": ",
                                    reinterpret_cast<const char*>(msg), " (pattern: ", pattern, ")");
        }
        // JIT is an optimization: where it is unavailable pcre2_match interprets the pattern instead.
        pcre2_jit_compile_8(code, PCRE2_JIT_COMPLETE);
        code_ = std::shared_ptr<pcre2_code_8>(code, [](pcre2_code_8* c) { pcre2_code_free_8(c); });
    }

    explicit operator bool() const { return bool(code_); }
    const std::string& pattern() const { return pattern_; }

    /// Finds the leftmost match in s at or after `from`: true and [begin, end) when found.
    bool search(std::string_view s, std::size_t from, std::size_t& begin, std::size_t& end) const {
        auto& st = detail::match_state();
        int rc = pcre2_match_8(code_.get(), reinterpret_cast<PCRE2_SPTR8>(s.data()), s.size(), from, 0, st.data,
                               st.context);
        if (rc < 0) {
            if (rc == PCRE2_ERROR_NOMATCH) return false;
            PCRE2_UCHAR8 msg[256];
            pcre2_get_error_message_8(rc, msg, sizeof msg);
            minitrain::detail::fail("tokenizer: regex match failed: ", reinterpret_cast<const char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(st.data);
        begin = ov[0];
        end = ov[1];
        return true;
    }

    /// Calls f(piece) for every piece of s, in order, covering every byte exactly once: each match is a
    /// piece, and so is each run of bytes between matches (Hugging Face's "Isolated" split behaviour).
    template <class F>
    void split(std::string_view s, F&& f) const {
        std::size_t pos = 0, b = 0, e = 0;
        while (pos < s.size() && search(s, pos, b, e)) {
            if (b > pos) f(s.substr(pos, b - pos));
            if (e == b) {  // an empty match (a user pattern could allow one): take one byte and go on
                e = b + 1;
                f(s.substr(b, 1));
            } else {
                f(s.substr(b, e - b));
            }
            pos = e;
        }
        if (pos < s.size()) f(s.substr(pos));
    }

private:
    std::string pattern_;
    std::shared_ptr<pcre2_code_8> code_;
};

/// How text is cut into words before BPE: an optional regex split, and an optional space prepended to
/// each segment that does not start with one (Hugging Face's ByteLevel add_prefix_space).
struct PreTokenizer {
    Regex regex;                    // empty: no split, the whole segment is one word
    bool add_prefix_space = false;  // prepend ' ' to a segment not starting with ' '

    /// f(piece) for each word of `text`; `scratch` holds the prefixed copy when add_prefix_space applies.
    template <class F>
    void split(std::string_view text, std::string& scratch, F&& f) const {
        if (text.empty()) return;
        if (add_prefix_space && text.front() != ' ') {
            scratch.assign(1, ' ');
            scratch.append(text);
            text = scratch;
        }
        if (regex)
            regex.split(text, f);
        else
            f(text);
    }
};

}  // namespace minitrain::tok
