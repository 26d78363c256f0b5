// minitrain/tokenizer/bytes.hpp
// GPT-2's byte <-> unicode alphabet. Byte-level BPE works on bytes, but vocabularies are stored as text
// (tokenizer.json), so each of the 256 byte values is given a printable code point: the printable
// Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, and the other 68 (control
// characters, space, DEL, NBSP, soft hyphen...) are moved to U+0100, U+0101, ... in byte order. So a
// space is "Ġ" (U+0120) and a newline is "Ċ" (U+010A). This file holds that table and UTF-8 helpers.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace minitrain::tok {

// ---- UTF-8 ------------------------------------------------------------------------------------------

/// Appends the UTF-8 encoding of code point cp (< 0x110000) to out.
inline void utf8_append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(char(cp));
    } else if (cp < 0x800) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    }
}

/// Decodes one code point of s at i and advances i; nullopt (i unchanged) on an invalid sequence
/// (truncated, overlong, surrogate, > U+10FFFF).
inline std::optional<char32_t> utf8_next(std::string_view s, std::size_t& i) {
    auto b = [&](std::size_t k) { return std::uint8_t(s[k]); };
    std::uint8_t c = b(i);
    if (c < 0x80) return char32_t(s[i++]);
    int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
    if (n < 0 || c > 0xF4 || i + std::size_t(n) >= s.size()) return std::nullopt;
    char32_t cp = c & (0x3F >> n);
    for (int k = 1; k <= n; ++k) {
        std::uint8_t t = b(i + std::size_t(k));
        if ((t & 0xC0) != 0x80) return std::nullopt;
        cp = (cp << 6) | (t & 0x3F);
    }
    static constexpr char32_t min_of[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_of[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
    i += std::size_t(n) + 1;
    return cp;
}

/// True when s is valid UTF-8.
inline bool utf8_valid(std::string_view s) {
    for (std::size_t i = 0; i < s.size();)
        if (!utf8_next(s, i)) return false;
    return true;
}

// ---- the byte-level alphabet ------------------------------------------------------------------------

struct ByteAlphabet {
    std::array<char32_t, 256> code{};         // byte -> code point
    std::array<std::string, 256> utf8{};      // byte -> its code point in UTF-8 (1 or 2 bytes)
    std::array<std::int16_t, 324> byte_of{};  // code point (< 324) -> byte, -1 when not in the alphabet
    std::array<std::uint8_t, 256> by_code{};  // the 256 bytes sorted by code point (HF's initial-vocab order)
};

inline const ByteAlphabet& byte_alphabet() {
    static const ByteAlphabet a = [] {
        ByteAlphabet t;
        t.byte_of.fill(-1);
        auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
        char32_t next = 256;
        for (int b = 0; b < 256; ++b) t.code[std::size_t(b)] = printable(b) ? char32_t(b) : next++;
        for (int b = 0; b < 256; ++b) {
            utf8_append(t.utf8[std::size_t(b)], t.code[std::size_t(b)]);
            t.byte_of[t.code[std::size_t(b)]] = std::int16_t(b);
        }
        int k = 0;
        for (char32_t cp = 0; cp < 324; ++cp)
            if (t.byte_of[cp] >= 0) t.by_code[std::size_t(k++)] = std::uint8_t(t.byte_of[cp]);
        return t;
    }();
    return a;
}

/// Raw bytes -> byte-level string ("a b" -> "aĠb"), appended to out.
inline void to_byte_level(std::string_view bytes, std::string& out) {
    const auto& a = byte_alphabet();
    for (char c : bytes) out += a.utf8[std::uint8_t(c)];
}

inline std::string to_byte_level(std::string_view bytes) {
    std::string out;
    to_byte_level(bytes, out);
    return out;
}

/// Byte-level string -> raw bytes, appended to out; false (out partly written) when s holds a character
/// outside the alphabet or is not valid UTF-8.
inline bool from_byte_level(std::string_view s, std::string& out) {
    const auto& a = byte_alphabet();
    for (std::size_t i = 0; i < s.size();) {
        auto cp = utf8_next(s, i);
        if (!cp || *cp >= 324 || a.byte_of[*cp] < 0) return false;
        out.push_back(char(a.byte_of[*cp]));
    }
    return true;
}

}  // namespace minitrain::tok
