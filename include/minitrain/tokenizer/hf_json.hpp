// minitrain/tokenizer/hf_json.hpp
// Reading and writing Hugging Face tokenizer.json files for byte-level BPE tokenizers (GPT-2, MiniMind,
// Qwen-style). We accept exactly what we can reproduce bit for bit and reject the rest with an Error
// that names the file and the field, rather than silently encoding differently from Hugging Face:
//   normalizer      null
//   pre_tokenizer   ByteLevel {use_regex, add_prefix_space}, or Sequence [Split {Regex|String pattern,
//                   behavior Isolated, invert false}, ByteLevel {use_regex false}] (optionally the
//                   ByteLevel alone inside the Sequence)
//   post_processor  null or ByteLevel (it only adjusts offsets)
//   decoder         ByteLevel
//   model           BPE: vocab, merges ("a b" strings or [a, b] pairs), no dropout, no subword
//                   prefix/suffix, no byte_fallback; ignore_merges honoured
//   added_tokens    id, content, special (lstrip/rstrip/single_word must be false)
//   truncation, padding  null
// Ids must be below the number of tokens the file defines (entries of model.vocab + entries of
// added_tokens): every real tokenizer numbers its tokens densely, and this bound keeps the tables, which
// are indexed by id, proportional to the file (one id of 2^30 in a 7 KB file would otherwise ask for
// gigabytes). Nesting is limited as for every JSON file (io/json.hpp).
#pragma once

#include <cctype>
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"
#include "../io/json.hpp"
#include "../io/mmap.hpp"
#include "bpe.hpp"

namespace minitrain::tok {

namespace hf_detail {

using json = nlohmann::json;

/// A readable rendering of a JSON value for error messages (shortened).
inline std::string show(const json& v) { return minitrain::detail::show_json(v, 80); }

/// obj[key] as a bool; `fallback` when absent or null.
inline bool get_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    MT_CHECK(it->is_boolean(), where, ".", key, ": expected true or false, found ", show(*it));
    return it->get<bool>();
}

inline std::string get_type(const json& obj, const std::string& where) {
    MT_CHECK(obj.is_object(), where, ": expected an object, found ", show(obj));
    auto it = obj.find("type");
    MT_CHECK(it != obj.end() && it->is_string(), where, ".type: expected a string, found ",
             it == obj.end() ? std::string("nothing") : show(*it));
    return it->get<std::string>();
}

/// A literal string as a PCRE2 pattern (every non-alphanumeric ASCII character escaped).
inline std::string regex_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        auto u = std::uint8_t(c);
        if (u < 0x80 && !std::isalnum(u)) out.push_back('\\');
        out.push_back(c);
    }
    return out;
}

/// Reads a ByteLevel pre-tokenizer's options; true when it uses the GPT-2 regex.
inline bool read_byte_level(const json& p, TokenizerData& d, const std::string& where) {
    d.pre.add_prefix_space = get_bool(p, "add_prefix_space", true, where);
    d.trim_offsets = get_bool(p, "trim_offsets", true, where);
    return get_bool(p, "use_regex", true, where);
}

inline void read_split(const json& p, TokenizerData& d, const std::string& where) {
    auto pat = p.find("pattern");
    MT_CHECK(pat != p.end() && pat->is_object() && pat->size() == 1, where,
             ".pattern: expected {\"Regex\": ...} or {\"String\": ...}, found ",
             pat == p.end() ? std::string("nothing") : show(*pat));
    std::string pattern;
    if (auto r = pat->find("Regex"); r != pat->end() && r->is_string())
        pattern = r->get<std::string>();
    else if (auto s = pat->find("String"); s != pat->end() && s->is_string())
        pattern = regex_escape(s->get<std::string>());
    else
        minitrain::detail::fail(where, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}, found ", show(*pat));
    auto beh = p.find("behavior");
    MT_CHECK(beh != p.end() && beh->is_string() && beh->get<std::string>() == "Isolated", where,
             ".behavior: only \"Isolated\" is supported, found ", beh == p.end() ? std::string("nothing") : show(*beh));
    MT_CHECK(!get_bool(p, "invert", false, where), where, ".invert: only false is supported");
    try {
        d.pre.regex = Regex(pattern);
    } catch (const Error& e) {
        minitrain::detail::fail(where, ".pattern: ", e.what());
    }
}

inline void read_pre_tokenizer(const json& p, TokenizerData& d, const std::string& where) {
    MT_CHECK(!p.is_null(), where, ": null is not supported (byte-level BPE needs a ByteLevel pre-tokenizer)");
    std::string type = get_type(p, where);
    if (type == "ByteLevel") {
        bool use_regex = read_byte_level(p, d, where);
        d.pre_kind = use_regex ? PreTokenizerKind::byte_level_regex : PreTokenizerKind::byte_level_no_regex;
        if (use_regex) d.pre.regex = Regex(gpt2_pattern);
        return;
    }
    MT_CHECK(type == "Sequence", where, ".type: \"", type,
             "\" is not supported (expected ByteLevel, or a Sequence of Split and ByteLevel)");
    auto list = p.find("pretokenizers");
    MT_CHECK(list != p.end() && list->is_array(), where, ".pretokenizers: expected an array");
    const json& l = *list;
    if (l.size() == 1) {
        read_pre_tokenizer(l[0], d, where + ".pretokenizers[0]");
        return;
    }
    MT_CHECK(l.size() == 2, where, ".pretokenizers: expected [Split, ByteLevel], found ", l.size(), " entries");
    std::string t0 = get_type(l[0], where + ".pretokenizers[0]");
    std::string t1 = get_type(l[1], where + ".pretokenizers[1]");
    MT_CHECK(t0 == "Split" && t1 == "ByteLevel", where, ".pretokenizers: expected [Split, ByteLevel], found [", t0,
             ", ", t1, "]");
    read_split(l[0], d, where + ".pretokenizers[0]");
    std::string w1 = where + ".pretokenizers[1]";
    MT_CHECK(!read_byte_level(l[1], d, w1), w1, ".use_regex: must be false after a Split");
    MT_CHECK(!d.pre.add_prefix_space, w1, ".add_prefix_space: true after a Split is not supported");
    d.pre_kind = PreTokenizerKind::split_then_byte_level;
}

inline void check_null(const json& j, const char* key, const std::string& file, const char* why) {
    auto it = j.find(key);
    MT_CHECK(it == j.end() || it->is_null(), file, ": ", key, ": ", why, ", found ", show(*it));
}

inline std::pair<std::string, std::string> read_merge(const json& m, const std::string& where) {
    if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        auto sp = s.find(' ');
        MT_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
                 where, ": expected \"left right\", found ", show(m));
        return {s.substr(0, sp), s.substr(sp + 1)};
    }
    MT_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), where,
             ": expected \"left right\" or [\"left\", \"right\"], found ", show(m));
    return {m[0].get<std::string>(), m[1].get<std::string>()};
}

}  // namespace hf_detail

/// Parses a tokenizer.json (see the top of this file for what is accepted).
inline std::shared_ptr<TokenizerData> load_hf_json(const std::filesystem::path& path) {
    using hf_detail::json;
    using hf_detail::show;
    const std::string file = path.string();
    const json j = minitrain::detail::read_json(path);
    MT_CHECK(j.is_object(), file, ": expected a JSON object at the top level");
    auto d = std::make_shared<TokenizerData>();

    hf_detail::check_null(j, "truncation", file, "truncation is not supported (expected null)");
    hf_detail::check_null(j, "padding", file, "padding is not supported (expected null)");
    hf_detail::check_null(j, "normalizer", file, "normalizers are not supported (expected null)");

    // ---- model ----
    auto mit = j.find("model");
    MT_CHECK(mit != j.end() && mit->is_object(), file, ": model: expected an object");
    const json& m = *mit;
    if (auto t = m.find("type"); t != m.end())
        MT_CHECK(t->is_string() && t->get<std::string>() == "BPE", file, ": model.type: only \"BPE\" is supported, found ",
                 show(*t));
    if (auto dr = m.find("dropout"); dr != m.end() && !dr->is_null())
        MT_CHECK(dr->is_number() && dr->get<double>() == 0.0, file, ": model.dropout: BPE dropout is not supported, found ",
                 show(*dr));
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (auto it = m.find(key); it != m.end() && !it->is_null())
            MT_CHECK(it->is_string() && it->get<std::string>().empty(), file, ": model.", key,
                     ": not supported in byte-level BPE, found ", show(*it));
    MT_CHECK(!hf_detail::get_bool(m, "byte_fallback", false, file + ": model"), file,
             ": model.byte_fallback: true is not supported (byte-level BPE needs no fallback)");
    d->ignore_merges = hf_detail::get_bool(m, "ignore_merges", false, file + ": model");

    auto vit = m.find("vocab");
    MT_CHECK(vit != m.end() && vit->is_object(), file, ": model.vocab: expected an object {token: id}");
    // Ids are bounded by the number of tokens in the file (see the top of this file).
    auto ait = j.find("added_tokens");
    const std::size_t n_added = ait != j.end() && ait->is_array() ? ait->size() : 0;
    const std::int64_t id_limit = std::int64_t(vit->size() + n_added);
    auto id_range = [&](std::int64_t id) {
        return "id " + std::to_string(id) + " is out of range: ids must be in [0, " + std::to_string(id_limit) +
               "), the number of tokens in the file (" + std::to_string(vit->size()) + " in model.vocab + " +
               std::to_string(n_added) + " in added_tokens)";
    };
    for (auto it = vit->begin(); it != vit->end(); ++it) {
        MT_CHECK(it.value().is_number_integer(), file, ": model.vocab[\"", it.key(), "\"]: expected an integer id, found ",
                 show(it.value()));
        auto id = it.value().get<std::int64_t>();
        MT_CHECK(id >= 0 && id < id_limit, file, ": model.vocab[\"", it.key(), "\"]: ", id_range(id));
        MT_CHECK(!it.key().empty(), file, ": model.vocab: empty token string");
        if (std::size_t(id) >= d->model_vocab.size()) d->model_vocab.resize(std::size_t(id) + 1);
        MT_CHECK(d->model_vocab[std::size_t(id)].empty(), file, ": model.vocab: id ", id, " is used by \"",
                 d->model_vocab[std::size_t(id)], "\" and \"", it.key(), "\"");
        d->model_vocab[std::size_t(id)] = it.key();
    }
    {
        StringIdMap ids;
        for (std::size_t id = 0; id < d->model_vocab.size(); ++id)
            if (!d->model_vocab[id].empty()) ids.emplace(d->model_vocab[id], std::int32_t(id));
        auto git = m.find("merges");
        MT_CHECK(git != m.end() && git->is_array(), file, ": model.merges: expected an array");
        d->merges.reserve(git->size());
        for (std::size_t r = 0; r < git->size(); ++r) {
            std::string where = file + ": model.merges[" + std::to_string(r) + "]";
            auto [a, b] = hf_detail::read_merge((*git)[r], where);
            auto ia = ids.find(a), ib = ids.find(b);
            MT_CHECK(ia != ids.end(), where, ": \"", a, "\" is not in model.vocab");
            MT_CHECK(ib != ids.end(), where, ": \"", b, "\" is not in model.vocab");
            d->merges.emplace_back(ia->second, ib->second);
        }
    }

    // ---- added tokens ----
    if (ait != j.end() && !ait->is_null()) {
        MT_CHECK(ait->is_array(), file, ": added_tokens: expected an array");
        for (std::size_t i = 0; i < ait->size(); ++i) {
            const json& a = (*ait)[i];
            std::string where = file + ": added_tokens[" + std::to_string(i) + "]";
            MT_CHECK(a.is_object(), where, ": expected an object");
            auto id = a.find("id");
            auto content = a.find("content");
            MT_CHECK(id != a.end() && id->is_number_integer(), where, ".id: expected an integer, found ",
                     id == a.end() ? std::string("nothing") : show(*id));
            MT_CHECK(id->get<std::int64_t>() >= 0 && id->get<std::int64_t>() < id_limit, where, ".id: ",
                     id_range(id->get<std::int64_t>()));
            MT_CHECK(content != a.end() && content->is_string() && !content->get_ref<const std::string&>().empty(),
                     where, ".content: expected a non-empty string");
            for (const char* key : {"lstrip", "rstrip", "single_word"})
                MT_CHECK(!hf_detail::get_bool(a, key, false, where), where, ".", key, ": true is not supported");
            d->added.push_back(AddedToken{std::int32_t(id->get<std::int64_t>()), content->get<std::string>(),
                                          hf_detail::get_bool(a, "special", false, where)});
        }
    }

    // ---- pipeline components ----
    auto pit = j.find("pre_tokenizer");
    MT_CHECK(pit != j.end(), file, ": pre_tokenizer: missing");
    hf_detail::read_pre_tokenizer(*pit, *d, file + ": pre_tokenizer");
    if (auto pp = j.find("post_processor"); pp != j.end() && !pp->is_null()) {
        std::string t = hf_detail::get_type(*pp, file + ": post_processor");
        MT_CHECK(t == "ByteLevel", file, ": post_processor.type: \"", t, "\" is not supported (expected null or ByteLevel)");
    }
    auto dit = j.find("decoder");
    MT_CHECK(dit != j.end() && !dit->is_null(), file, ": decoder: expected a ByteLevel decoder, found nothing");
    std::string dt = hf_detail::get_type(*dit, file + ": decoder");
    MT_CHECK(dt == "ByteLevel", file, ": decoder.type: \"", dt, "\" is not supported (expected ByteLevel)");

    d->finish(file);
    return d;
}

/// Writes d as a tokenizer.json that Hugging Face tokenizers loads; atomic (see io/atomic_file.hpp).
/// Layout as Hugging Face writes it (2-space indent); vocab in id order, merges as [left, right] pairs
/// (the format of tokenizers >= 0.20, which MiniMind's files use too). The vocabulary and merges are
/// streamed by hand: an ordered JSON object is a vector with linear lookups, quadratic for 150k tokens.
inline void save_hf_json(const TokenizerData& d, const std::filesystem::path& path) {
    using oj = nlohmann::ordered_json;
    auto str = [](const std::string& s) { return oj(s).dump(-1, ' ', false, oj::error_handler_t::strict); };
    auto indent = [](const oj& v, int depth) {  // v pretty-printed, its inner lines indented by depth levels
        std::string s = v.dump(2, ' ', false, oj::error_handler_t::strict), out;
        for (char c : s) {
            out.push_back(c);
            if (c == '\n') out.append(std::size_t(2 * depth), ' ');
        }
        return out;
    };
    auto byte_level = [&](bool use_regex) {
        return oj{{"type", "ByteLevel"},
                  {"add_prefix_space", d.pre.add_prefix_space},
                  {"trim_offsets", d.trim_offsets},
                  {"use_regex", use_regex}};
    };
    oj pre;
    switch (d.pre_kind) {
        case PreTokenizerKind::byte_level_regex: pre = byte_level(true); break;
        case PreTokenizerKind::byte_level_no_regex: pre = byte_level(false); break;
        case PreTokenizerKind::split_then_byte_level:
            pre = oj{{"type", "Sequence"},
                     {"pretokenizers", oj::array({oj{{"type", "Split"},
                                                     {"pattern", oj{{"Regex", d.pre.regex.pattern()}}},
                                                     {"behavior", "Isolated"},
                                                     {"invert", false}},
                                                  byte_level(false)})}};
            break;
    }
    oj added = oj::array();
    for (const auto& a : d.added)
        added.push_back(oj{{"id", a.id},      {"content", a.content}, {"single_word", false}, {"lstrip", false},
                           {"rstrip", false}, {"normalized", false},  {"special", a.special}});
    oj decoder = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};

    std::string t;
    t += "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n";
    t += "  \"added_tokens\": " + indent(added, 1) + ",\n";
    t += "  \"normalizer\": null,\n";
    t += "  \"pre_tokenizer\": " + indent(pre, 1) + ",\n";
    t += "  \"post_processor\": null,\n";
    t += "  \"decoder\": " + indent(decoder, 1) + ",\n";
    t += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n";
    t += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n";
    t += "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n";
    t += std::string("    \"ignore_merges\": ") + (d.ignore_merges ? "true" : "false") + ",\n";
    t += "    \"vocab\": {";
    bool first = true;
    for (std::size_t id = 0; id < d.model_vocab.size(); ++id) {
        if (d.model_vocab[id].empty()) continue;
        t += first ? "\n      " : ",\n      ";
        first = false;
        t += str(d.model_vocab[id]) + ": " + std::to_string(id);
    }
    t += first ? "},\n" : "\n    },\n";
    t += "    \"merges\": [";
    first = true;
    for (auto [a, b] : d.merges) {
        t += first ? "\n      [" : ",\n      [";
        first = false;
        t += str(d.model_vocab[std::size_t(a)]) + ", " + str(d.model_vocab[std::size_t(b)]) + "]";
    }
    t += first ? "]\n  }\n}\n" : "\n    ]\n  }\n}\n";
    write_file_atomic(path, [&](std::ostream& os) { os.write(t.data(), std::streamsize(t.size())); });
}

}  // namespace minitrain::tok
