// minitrain/io/json.hpp
// Parsing JSON that comes from files: one helper that every reader uses (tokenizer.json, config.json,
// adapter_config.json, safetensors headers, JSONL records, the training state), so that a hostile file
// of N bytes costs O(N) memory and time and fails with a message naming the file.
//
// The bound that matters beyond the text's size is nesting depth: nlohmann/json parses deep nesting
// without recursion, but serializing a value (every error message that quotes one), comparing or copying
// it recurses once per level, and code that walks a structure and builds a path string per level costs
// O(depth^2). So text nested deeper than json_max_depth is refused before it is parsed, by a linear scan
// that counts '[' and '{' outside strings (a prefix the parser accepts nests exactly as the scan says, so
// nothing the parser would reach beyond the limit gets through).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "mmap.hpp"

namespace minitrain {

/// The deepest nesting of arrays and objects accepted in any JSON minitrain reads (the top-level value is
/// level 1). 128 is the recursion limit of serde_json, which Hugging Face tokenizers and safetensors parse
/// with, so every file they accept is accepted here; our own files nest at most 6 levels.
inline constexpr int json_max_depth = 128;

/// The longest JSONL record (one line, without its line break) read by default: 16 MiB. A longer line is
/// a malformed record (ReadOptions::max_record_bytes in data/jsonl.hpp), read past without being held in
/// memory, so one giant line cannot make the reader, the JSON parser and the tokenizer allocate gigabytes.
inline constexpr std::size_t jsonl_max_record_bytes = std::size_t(16) << 20;

namespace detail {

/// "" when `text` nests arrays and objects at most max_depth levels deep; otherwise a sentence saying
/// where the limit is crossed: "nested deeper than 128 levels (the '[' at byte 129 opens level 129)".
inline std::string json_depth_error(std::string_view text, int max_depth = json_max_depth) {
    int depth = 0;
    bool in_string = false;
    const std::size_t n = text.size();
    for (std::size_t i = 0; i < n; ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;  // the escaped character cannot end the string
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
            case '"': in_string = true; break;
            case '[':
            case '{':
                if (++depth > max_depth)
                    return "nested deeper than " + std::to_string(max_depth) + " levels (the '" + std::string(1, c) +
                           "' at byte " + std::to_string(i + 1) + " opens level " + std::to_string(depth) + ")";
                break;
            case ']':
            case '}':
                if (depth > 0) --depth;
                break;
            default: break;
        }
    }
    return {};
}

namespace json_show_detail {
inline void append(const nlohmann::json& v, std::string& out, std::size_t max, int depth) {
    if (out.size() > max) return;
    if (v.is_array() || v.is_object()) {
        const bool array = v.is_array();
        if (v.empty() || depth == 0) {
            out += array ? (v.empty() ? "[]" : "[...]") : (v.empty() ? "{}" : "{...}");
            return;
        }
        out += array ? '[' : '{';
        bool first = true;
        for (auto it = v.begin(); it != v.end() && out.size() <= max; ++it) {
            out += first ? "" : ",";
            first = false;
            if (!array) append(nlohmann::json(it.key()), out, max, 0), out += ':';
            append(it.value(), out, max, depth - 1);
        }
        out += array ? ']' : '}';
        return;
    }
    if (v.is_string() && v.get_ref<const std::string&>().size() > max) {  // only the part that can be shown
        const std::string& s = v.get_ref<const std::string&>();
        out += nlohmann::json(s.substr(0, max)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return;
    }
    out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace json_show_detail

/// A JSON value for an error message, compact as dump() writes it: at most about `max` bytes, and
/// containers below `depth` levels shown as [...] / {...}. Unlike dump(), it never recurses deeper than `depth`, so a value nested a
/// million levels deep (from a reader without the nesting limit) cannot overflow the stack.
inline std::string show_json(const nlohmann::json& v, std::size_t max = 120, int depth = 4) {
    std::string out;
    json_show_detail::append(v, out, max, depth);
    if (out.size() > max) {
        std::size_t k = max;
        while (k > 0 && (static_cast<unsigned char>(out[k]) & 0xC0) == 0x80) --k;
        out.resize(k);
        out += "...";
    }
    return out;
}

/// nlohmann's parse error, cut to `max` bytes: an unterminated string makes it quote the whole token.
inline std::string short_json_error(std::string_view what, std::size_t max = 240) {
    if (what.size() <= max) return std::string(what);
    std::size_t k = max;
    while (k > 0 && (static_cast<unsigned char>(what[k]) & 0xC0) == 0x80) --k;  // keep UTF-8 whole
    return std::string(what.substr(0, k)) + "...";
}

/// Parses `text` as one JSON value. Error "<where>: not valid JSON: <reason>" or "<where>: JSON nested
/// deeper than ... levels (...)", where `where` names the file (and the field, for JSON held in a string).
inline nlohmann::json parse_json(std::string_view text, const std::string& where, int max_depth = json_max_depth) {
    if (std::string e = json_depth_error(text, max_depth); !e.empty())
        fail(where, ": JSON ", e, ": not a file minitrain (or Hugging Face) writes");
    try {
        return nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        fail(where, ": not valid JSON: ", short_json_error(e.what()));
    }
}

/// Reads and parses a JSON file (a regular file: a FIFO or a device is refused rather than waited on).
inline nlohmann::json read_json(const std::filesystem::path& path, int max_depth = json_max_depth) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail(path.string(), ": no such file");
    MappedFile f(path);
    return parse_json(std::string_view(reinterpret_cast<const char*>(f.data()), f.size()), path.string(), max_depth);
}

}  // namespace detail

}  // namespace minitrain
