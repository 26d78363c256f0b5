// minitrain/util/flags.hpp
// Flags: the command-line parser of minitrain's programs (examples/pretrain.cpp, generate.cpp, eval.cpp).
//
//   Flags flags("pretrain", "Pretrain a model on llm.c token shards.");
//   flags.bind("batch_size", cfg.batch_size, "sequences per micro-batch");      // default: cfg's value
//   int& n = flags.add("max_new_tokens", 64, "tokens to generate");             // default: 64
//   flags.bind_choice("optimizer", opt, {"adamw", "sgd"}, "the optimizer");
//   flags.parse(argc, argv);   // --help: prints the usage block, exits 0; a bad flag throws minitrain::Error
//
// Syntax: `--name value` or `--name=value`; a dash in a name reads as an underscore (--batch-size is
// --batch_size). Booleans take 1/0/true/false; a bare `--name` means true (the next argument is taken as
// its value only when it is one of those four words). The last occurrence of a flag wins. Flag types: int,
// std::int64_t, std::uint64_t, double, bool, std::string (optionally restricted to a list of choices).
// Numbers must be written in full (no trailing characters, integers in range, reals finite), so a typo
// fails at startup instead of silently training with a default.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/precision.hpp"

namespace minitrain {

namespace detail {

template <class T>
inline constexpr bool is_flag_type_v = std::is_same_v<T, int> || std::is_same_v<T, std::int64_t> ||
                                       std::is_same_v<T, std::uint64_t> || std::is_same_v<T, double> ||
                                       std::is_same_v<T, bool> || std::is_same_v<T, std::string>;

/// The shortest text that reads back as x ("5e-04", "0.9", "1e-08").
inline std::string flag_real_text(double x) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, x);
    return std::string(buf, r.ptr);
}

/// Levenshtein distance, for "did you mean" (names are short: a quadratic table is fine).
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

}  // namespace detail

/// Parses `text` as an integer of type T (int, int64, uint64) in full; Error naming `flag` otherwise.
template <class T>
T parse_flag_integer(std::string_view text, std::string_view flag) {
    static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
    constexpr const char* what = std::is_unsigned_v<T> ? "a non-negative integer" : "an integer";
    std::string_view s = text;
    if (s.size() > 1 && s.front() == '+' && s[1] != '-') s.remove_prefix(1);
    if (s.empty() || (std::is_unsigned_v<T> && s.front() == '-'))
        detail::fail("--", flag, ": expected ", what, ", got '", text, "'");
    // Parse as the widest type first, so that "out of range" and "not a number" get different sentences.
    using Wide = std::conditional_t<std::is_unsigned_v<T>, std::uint64_t, std::int64_t>;
    Wide v{};
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc::invalid_argument || end != s.data() + s.size())
        detail::fail("--", flag, ": expected ", what, ", got '", text, "'");
    if (ec == std::errc::result_out_of_range || v < Wide(std::numeric_limits<T>::min()) ||
        v > Wide(std::numeric_limits<T>::max()))
        detail::fail("--", flag, ": ", text, " is out of range [", std::numeric_limits<T>::min(), ", ",
                     std::numeric_limits<T>::max(), "]");
    return T(v);
}

/// Parses `text` as a finite real number in full; Error naming `flag` otherwise.
inline double parse_flag_real(std::string_view text, std::string_view flag) {
    std::string_view s = text;
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    double v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec == std::errc::invalid_argument || end != s.data() + s.size())
        detail::fail("--", flag, ": expected a number, got '", text, "'");
    if (ec == std::errc::result_out_of_range || !std::isfinite(v))
        detail::fail("--", flag, ": expected a finite number, got '", text, "'");
    return v;
}

/// Parses 1/0/true/false; Error naming `flag` otherwise.
inline bool parse_flag_bool(std::string_view text, std::string_view flag) {
    if (text == "1" || text == "true") return true;
    if (text == "0" || text == "false") return false;
    detail::fail("--", flag, ": expected true, false, 1 or 0, got '", text, "'");
}

/// A list of integers separated by spaces and/or commas ("1 2 3", "1,2,3"), e.g. token ids given as a flag.
inline std::vector<std::int64_t> parse_int_list(std::string_view text, std::string_view flag) {
    std::vector<std::int64_t> out;
    std::size_t i = 0;
    while (i < text.size()) {
        if (text[i] == ' ' || text[i] == ',' || text[i] == '\t' || text[i] == '\n') {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < text.size() && text[j] != ' ' && text[j] != ',' && text[j] != '\t' && text[j] != '\n') ++j;
        out.push_back(parse_flag_integer<std::int64_t>(text.substr(i, j - i), flag));
        i = j;
    }
    return out;
}

class Flags {
public:
    enum class Parse { ok, help };

    /// `program` names the program in the usage line; `description` is printed above the flags.
    Flags(std::string program, std::string description)
        : program_(std::move(program)), description_(std::move(description)) {}

    Flags(const Flags&) = delete;
    Flags& operator=(const Flags&) = delete;

    /// Starts a titled group of flags in the usage block (flags declared after it belong to it).
    void section(std::string title) { sections_.push_back({std::move(title), flags_.size()}); }

    /// A flag whose value the Flags object holds; the reference stays valid as long as the Flags object.
    template <class T>
    T& add(std::string_view name, T value, std::string_view help) {
        static_assert(detail::is_flag_type_v<T>,
                      "Flags::add: the type must be int, std::int64_t, std::uint64_t, double, bool or std::string");
        Flag& f = declare(name, help);
        f.owned = std::move(value);
        T& target = std::get<T>(f.owned);
        f.target = &target;
        f.default_text = text_of(target);
        return target;
    }
    std::string& add(std::string_view name, const char* value, std::string_view help) {
        return add<std::string>(name, std::string(value), help);
    }

    /// A flag that writes into `target`; target's current value is the default.
    template <class T>
    void bind(std::string_view name, T& target, std::string_view help) {
        static_assert(detail::is_flag_type_v<T>,
                      "Flags::bind: the type must be int, std::int64_t, std::uint64_t, double, bool or std::string");
        Flag& f = declare(name, help);
        f.target = &target;
        f.default_text = text_of(target);
    }

    /// A string flag that must be one of `choices`.
    std::string& add_choice(std::string_view name, std::string value, std::vector<std::string> choices,
                            std::string_view help) {
        std::string& s = add<std::string>(name, std::move(value), help);
        set_choices(std::move(choices), s);
        return s;
    }
    void bind_choice(std::string_view name, std::string& target, std::vector<std::string> choices,
                     std::string_view help) {
        bind(name, target, help);
        set_choices(std::move(choices), target);
    }

    /// --dtype (or another name): every spelling of core/precision.hpp (bf16 / bfloat16, fp16 / float16 /
    /// half, f32 / fp32 / float32) is accepted and stored as its canonical name (f32, bf16, fp16).
    void bind_dtype(std::string_view name, std::string& target, std::string_view help) {
        bind(name, target, help);
        std::vector<std::string> canon;
        for (const auto& [spelling, c] : precision_spellings())
            if (spelling == c) canon.push_back(c);
        set_choices(canon, target);
        flags_.back().aliases = precision_spellings();
    }

    /// Marks a declared flag as required: parse() fails when it is not given, and usage() says so
    /// instead of showing a default.
    void require(std::string_view name) {
        Flag* f = find(name);
        MT_CHECK(f, "Flags::require: no flag --", name, " was declared");
        f->required = true;
    }

    /// Parses the arguments after the program name. Returns Parse::help when --help (or -h) was given,
    /// without looking at the rest; throws Error on an unknown flag, a missing or malformed value.
    Parse parse(const std::vector<std::string>& args) {
        for (std::size_t i = 0; i < args.size(); ++i) {
            const std::string& arg = args[i];
            if (arg == "--help" || arg == "-h") return Parse::help;
        }
        for (std::size_t i = 0; i < args.size(); ++i) {
            std::string_view arg = args[i];
            if (arg.size() < 3 || arg.substr(0, 2) != "--")
                detail::fail("unexpected argument '", arg, "': flags are written --name value or --name=value (see --help)");
            std::string_view body = arg.substr(2);
            const std::size_t eq = body.find('=');
            std::string name(body.substr(0, eq));
            for (char& c : name)
                if (c == '-') c = '_';
            Flag* f = find(name);
            if (!f) detail::fail("unknown flag --", name, " (see --help)", suggestion(name));
            if (eq != std::string_view::npos) {
                set(*f, body.substr(eq + 1));
            } else if (std::holds_alternative<bool*>(f->target)) {
                // A bare boolean means true; a following 1/0/true/false is its value.
                if (i + 1 < args.size() && is_bool_word(args[i + 1]))
                    set(*f, args[++i]);
                else
                    set(*f, "true");
            } else {
                if (i + 1 >= args.size()) detail::fail("--", name, ": missing value (expected ", kind(*f), ")");
                // "--out_dir --resume" is a forgotten value far more often than a folder named "--resume".
                if (std::string_view(args[i + 1]).substr(0, 2) == "--")
                    detail::fail("--", name, ": missing value (expected ", kind(*f), "; the next argument, ", args[i + 1],
                                 ", is a flag; write --", name, "=", args[i + 1], " if it is meant as the value)");
                set(*f, args[++i]);
            }
        }
        for (const Flag& f : flags_)
            if (f.required && !f.set) detail::fail("--", f.name, " is required: ", f.help, " (see --help)");
        return Parse::ok;
    }

    /// parse() for main(): on --help prints usage() to stdout and exits the program with status 0.
    void parse(int argc, char** argv) {
        std::vector<std::string> args;
        for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
        if (parse(args) == Parse::help) {
            std::fputs(usage().c_str(), stdout);
            std::fflush(stdout);
            std::exit(0);
        }
    }

    /// True when the flag was given on the command line (rather than left at its default).
    bool was_set(std::string_view name) const {
        const Flag* f = find(name);
        MT_CHECK(f, "Flags::was_set: no flag --", name, " was declared");
        return f->set;
    }

    /// The --help text: description, usage line, and every flag with its type, help and default.
    std::string usage() const {
        std::ostringstream os;
        std::string_view description = description_;
        while (!description.empty() && description.back() == '\n') description.remove_suffix(1);
        os << program_ << ": " << description << "\n\nUsage: " << program_ << " [--flag value | --flag=value]...\n";
        std::size_t section = 0;
        if (sections_.empty() || sections_[0].first_flag > 0) os << "\nFlags:\n";
        for (std::size_t i = 0; i < flags_.size(); ++i) {
            while (section < sections_.size() && sections_[section].first_flag == i)
                os << "\n" << sections_[section++].title << ":\n";
            const Flag& f = flags_[i];
            std::string head = "  --" + f.name + " " + placeholder(f);
            os << head;
            constexpr std::size_t column = 32;
            if (head.size() + 2 > column)
                os << "\n" << std::string(column, ' ');
            else
                os << std::string(column - head.size(), ' ');
            os << wrap(f.help + (f.required ? " (required)" : " (default: " + f.default_text + ")"), column) << "\n";
        }
        os << "\n  --help                        print this and exit\n";
        return os.str();
    }

    const std::string& program() const { return program_; }

private:
    using Target = std::variant<int*, std::int64_t*, std::uint64_t*, double*, bool*, std::string*>;
    struct Flag {
        std::string name, help, default_text;
        Target target;
        std::variant<int, std::int64_t, std::uint64_t, double, bool, std::string> owned;  // for add()
        std::vector<std::string> choices;  // string flags: the allowed values (empty: any)
        std::vector<std::pair<std::string, std::string>> aliases;  // other spellings of the choices
        bool set = false;
        bool required = false;
    };
    struct Section {
        std::string title;
        std::size_t first_flag;
    };

    Flag& declare(std::string_view name, std::string_view help) {
        MT_CHECK(!name.empty(), "Flags: a flag needs a name");
        for (char c : name)
            MT_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_', "Flags: flag name \"", name,
                     "\" must use lowercase letters, digits and '_'");
        MT_CHECK(name != "help" && name != "h", "Flags: --", name, " is reserved for the usage text");
        MT_CHECK(!find(name), "Flags: flag --", name, " is declared twice");
        Flag& f = flags_.emplace_back();  // a deque: references to earlier flags stay valid
        f.name = std::string(name);
        f.help = std::string(help);
        return f;
    }

    void set_choices(std::vector<std::string> choices, const std::string& current) {
        Flag& f = flags_.back();
        MT_CHECK(!choices.empty(), "Flags: --", f.name, " has an empty list of choices");
        f.choices = std::move(choices);
        MT_CHECK(allowed(f, current), "Flags: the default of --", f.name, ", \"", current, "\", is not one of its choices");
    }

    static bool allowed(const Flag& f, std::string_view v) {
        if (f.choices.empty()) return true;
        for (const auto& c : f.choices)
            if (c == v) return true;
        return false;
    }

    Flag* find(std::string_view name) {
        for (Flag& f : flags_)
            if (f.name == name) return &f;
        return nullptr;
    }
    const Flag* find(std::string_view name) const { return const_cast<Flags*>(this)->find(name); }

    std::string suggestion(std::string_view name) const {
        const Flag* best = nullptr;
        std::size_t best_d = 3;  // only close misspellings
        for (const Flag& f : flags_) {
            std::size_t d = detail::edit_distance(name, f.name);
            if (d < best_d) best_d = d, best = &f;
        }
        return best ? "; did you mean --" + best->name + "?" : "";
    }

    /// Breaks `text` into lines of at most 100 columns (words longer than that stay whole); lines after
    /// the first are indented to `indent`, where the text starts.
    static std::string wrap(const std::string& text, std::size_t indent) {
        constexpr std::size_t width = 100;
        const std::size_t room = width > indent + 20 ? width - indent : 20;
        std::string out, line;
        std::istringstream words(text);
        for (std::string w; words >> w;) {
            if (!line.empty() && line.size() + 1 + w.size() > room) {
                out += line + "\n" + std::string(indent, ' ');
                line.clear();
            }
            line += (line.empty() ? "" : " ") + w;
        }
        return out + line;
    }

    static bool is_bool_word(std::string_view s) { return s == "1" || s == "0" || s == "true" || s == "false"; }

    void set(Flag& f, std::string_view value) {
        std::visit(
            [&](auto* p) {
                using T = std::remove_pointer_t<decltype(p)>;
                if constexpr (std::is_same_v<T, bool>) {
                    *p = parse_flag_bool(value, f.name);
                } else if constexpr (std::is_same_v<T, double>) {
                    *p = parse_flag_real(value, f.name);
                } else if constexpr (std::is_same_v<T, std::string>) {
                    for (const auto& [spelling, canon] : f.aliases)
                        if (value == spelling) value = canon;
                    if (!allowed(f, value)) {
                        std::string list;
                        for (const auto& c : f.choices) list += (list.empty() ? "" : ", ") + c;
                        for (const auto& a : f.aliases)
                            if (a.first != a.second) list += ", " + a.first;
                        detail::fail("--", f.name, ": expected one of ", list, ", got '", value, "'");
                    }
                    *p = std::string(value);
                } else {
                    *p = parse_flag_integer<T>(value, f.name);
                }
            },
            f.target);
        f.set = true;
    }

    static std::string kind(const Flag& f) {
        return std::visit(
            [&](auto* p) -> std::string {
                using T = std::remove_pointer_t<decltype(p)>;
                if constexpr (std::is_same_v<T, bool>) return "true, false, 1 or 0";
                else if constexpr (std::is_same_v<T, double>) return "a number";
                else if constexpr (std::is_same_v<T, std::string>) return f.choices.empty() ? "a string" : "a choice";
                else if constexpr (std::is_unsigned_v<T>) return "a non-negative integer";
                else return "an integer";
            },
            f.target);
    }

    static std::string placeholder(const Flag& f) {
        if (!f.choices.empty()) {
            std::string s = "{";
            for (const auto& c : f.choices) s += (s.size() > 1 ? "," : "") + c;
            return s + "}";
        }
        return std::visit(
            [](auto* p) -> std::string {
                using T = std::remove_pointer_t<decltype(p)>;
                if constexpr (std::is_same_v<T, bool>) return "BOOL";
                else if constexpr (std::is_same_v<T, double>) return "REAL";
                else if constexpr (std::is_same_v<T, std::string>) return "TEXT";
                else return "INT";
            },
            f.target);
    }

    template <class T>
    static std::string text_of(const T& v) {
        if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, double>) return detail::flag_real_text(v);
        else if constexpr (std::is_same_v<T, std::string>) return v.empty() ? "none" : "\"" + v + "\"";
        else return std::to_string(v);
    }

    std::string program_, description_;
    std::deque<Flag> flags_;
    std::vector<Section> sections_;
};

}  // namespace minitrain
