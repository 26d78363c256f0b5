// Flags (util/flags.hpp): both value syntaxes, every type, defaults, --help, and an error that names the
// flag and the value for every kind of mistake.
#include <doctest/doctest.h>

#include <minitrain/util/flags.hpp>

#include <sstream>

using namespace minitrain;

namespace {

struct Program {
    int batch = 32;
    std::int64_t tokens = 0;
    std::uint64_t seed = 42;
    double lr = 5e-4;
    bool shuffle = true;
    std::string out = "out";
    std::string schedule = "cosine";
};

/// A Flags object with one flag of every type bound to `p`, plus two owned ones.
struct Fixture {
    Program p;
    Flags flags{"prog", "Does things."};
    int* steps = nullptr;
    bool* resume = nullptr;
    Fixture() {
        flags.section("Data");
        flags.bind("batch_size", p.batch, "sequences per batch");
        flags.bind("total_batch_tokens", p.tokens, "tokens per step");
        flags.bind("seed", p.seed, "data order");
        flags.section("Optimizer");
        flags.bind("learning_rate", p.lr, "peak learning rate");
        flags.bind("shuffle", p.shuffle, "shuffle the batches");
        flags.bind("out_dir", p.out, "where the run goes");
        flags.bind_choice("schedule", p.schedule, {"cosine", "wsd", "constant"}, "learning-rate schedule");
        steps = &flags.add("max_steps", 100, "stop after this many steps");
        resume = &flags.add("resume", false, "continue the run");
    }
    Flags::Parse parse(std::vector<std::string> args) { return flags.parse(args); }
};

}  // namespace

TEST_CASE("defaults stay when no flag is given; both syntaxes set every type") {
    Fixture f;
    REQUIRE(f.parse({}) == Flags::Parse::ok);
    CHECK(f.p.batch == 32);
    CHECK(*f.steps == 100);
    CHECK_FALSE(*f.resume);
    CHECK_FALSE(f.flags.was_set("batch_size"));

    REQUIRE(f.parse({"--batch_size", "7", "--total_batch_tokens=524288", "--seed", "18446744073709551615",
                     "--learning_rate=3e-3", "--shuffle=false", "--out_dir", "runs/a b", "--schedule=wsd",
                     "--max_steps", "-1", "--resume"}) == Flags::Parse::ok);
    CHECK(f.p.batch == 7);
    CHECK(f.p.tokens == 524288);
    CHECK(f.p.seed == 18446744073709551615ull);
    CHECK(f.p.lr == 3e-3);
    CHECK_FALSE(f.p.shuffle);
    CHECK(f.p.out == "runs/a b");
    CHECK(f.p.schedule == "wsd");
    CHECK(*f.steps == -1);
    CHECK(*f.resume);
    CHECK(f.flags.was_set("batch_size"));
    CHECK(f.flags.was_set("resume"));
}

TEST_CASE("booleans: 0/1/true/false, bare means true, and the last occurrence wins") {
    Fixture f;
    f.parse({"--shuffle", "0"});
    CHECK_FALSE(f.p.shuffle);
    f.parse({"--shuffle", "1"});
    CHECK(f.p.shuffle);
    f.parse({"--shuffle", "false", "--batch_size", "3"});
    CHECK_FALSE(f.p.shuffle);
    CHECK(f.p.batch == 3);
    f.parse({"--shuffle=true"});
    CHECK(f.p.shuffle);
    f.parse({"--resume", "--batch_size", "5"});  // a bare bool does not swallow the next flag
    CHECK(*f.resume);
    CHECK(f.p.batch == 5);
    f.parse({"--batch_size", "1", "--batch_size", "2"});
    CHECK(f.p.batch == 2);
    f.parse({"--batch-size", "9"});  // dashes read as underscores
    CHECK(f.p.batch == 9);
}

TEST_CASE("errors name the flag and the value") {
    Fixture f;
    CHECK_THROWS_WITH_AS(f.parse({"--foo", "1"}), "unknown flag --foo (see --help)", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--bach_size", "1"}), doctest::Contains("did you mean --batch_size?"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--batch_size", "abc"}), "--batch_size: expected an integer, got 'abc'", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--batch_size=12x"}), "--batch_size: expected an integer, got '12x'", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--batch_size=1.5"}), doctest::Contains("expected an integer, got '1.5'"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--batch_size="}), doctest::Contains("expected an integer, got ''"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--batch_size", "3000000000"}), doctest::Contains("--batch_size: 3000000000 is out of range"),
                         Error);
    CHECK_THROWS_WITH_AS(f.parse({"--total_batch_tokens", "99999999999999999999"}), doctest::Contains("out of range"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--seed", "-1"}), "--seed: expected a non-negative integer, got '-1'", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--learning_rate", "fast"}), "--learning_rate: expected a number, got 'fast'", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--learning_rate", "1e-3x"}), doctest::Contains("expected a number"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--learning_rate", "inf"}), doctest::Contains("expected a finite number"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--learning_rate", "1e999"}), doctest::Contains("expected a finite number"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--shuffle=yes"}), "--shuffle: expected true, false, 1 or 0, got 'yes'", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--schedule", "linear"}),
                         "--schedule: expected one of cosine, wsd, constant, got 'linear'", Error);
    CHECK_THROWS_WITH_AS(f.parse({"--batch_size"}), doctest::Contains("--batch_size: missing value"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"--out_dir", "--resume"}), doctest::Contains("--out_dir: missing value"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"data.bin"}), doctest::Contains("unexpected argument 'data.bin'"), Error);
    CHECK_THROWS_WITH_AS(f.parse({"-b", "3"}), doctest::Contains("unexpected argument '-b'"), Error);
    // A value that fails to parse is not written.
    CHECK(f.p.batch == 32);
    f.parse({"--out_dir=--weird"});  // the = form takes anything
    CHECK(f.p.out == "--weird");
}

TEST_CASE("--help returns Parse::help before any other flag is looked at; usage lists every flag") {
    Fixture f;
    CHECK(f.parse({"--batch_size", "abc", "--help"}) == Flags::Parse::help);
    CHECK(f.parse({"-h"}) == Flags::Parse::help);
    const std::string u = f.flags.usage();
    CHECK(u.starts_with("prog: Does things.\n"));
    CHECK(u.find("Usage: prog") != std::string::npos);
    CHECK(u.find("Data:\n") < u.find("--batch_size INT"));
    CHECK(u.find("Optimizer:\n") < u.find("--learning_rate REAL"));
    for (std::string_view line : {"--batch_size INT", "sequences per batch (default: 32)", "(default: 5e-04)",
                             "--shuffle BOOL", "shuffle the batches (default: true)", "--out_dir TEXT",
                             "(default: \"out\")", "--schedule {cosine,wsd,constant}", "(default: \"cosine\")",
                             "--max_steps INT", "(default: 100)", "--resume BOOL", "(default: false)", "--help"}) {
        INFO(line);
        CHECK(u.find(line) != std::string::npos);
    }
    CHECK(u.find("(default: 42)") != std::string::npos);  // --seed
}

TEST_CASE("declaration mistakes are caught") {
    Flags flags("p", "d");
    int x = 0;
    flags.bind("x", x, "");
    CHECK_THROWS_WITH_AS(flags.bind("x", x, ""), doctest::Contains("declared twice"), Error);
    CHECK_THROWS_WITH_AS(flags.add("help", 1, ""), doctest::Contains("reserved"), Error);
    CHECK_THROWS_WITH_AS(flags.add("Bad-Name", 1, ""), doctest::Contains("lowercase"), Error);
    std::string s = "nope";
    CHECK_THROWS_WITH_AS(flags.bind_choice("c", s, {"a", "b"}, ""), doctest::Contains("not one of its choices"), Error);
    CHECK_THROWS_WITH_AS(flags.was_set("nothing"), doctest::Contains("no flag --nothing"), Error);
}

TEST_CASE("parse_int_list: spaces and commas, errors name the flag") {
    CHECK(parse_int_list("1 2 3", "prompt_ids") == std::vector<std::int64_t>{1, 2, 3});
    CHECK(parse_int_list(" 7,8 ,, 9 ", "prompt_ids") == std::vector<std::int64_t>{7, 8, 9});
    CHECK(parse_int_list("", "prompt_ids").empty());
    CHECK_THROWS_WITH_AS(parse_int_list("1 two 3", "prompt_ids"), "--prompt_ids: expected an integer, got 'two'", Error);
}

TEST_CASE("required flags: parse fails without them, usage says so instead of a default") {
    Flags flags("gen", "Generates.");
    std::string checkpoint;
    int n = 3;
    flags.bind("checkpoint", checkpoint, "model folder");
    flags.bind("n", n, "how many");
    flags.require("checkpoint");
    CHECK_THROWS_WITH_AS(flags.parse(std::vector<std::string>{"--n", "4"}),
                         "--checkpoint is required: model folder (see --help)", Error);
    CHECK(flags.parse(std::vector<std::string>{"--help"}) == Flags::Parse::help);  // help needs nothing
    CHECK(flags.parse(std::vector<std::string>{"--checkpoint", "out/final"}) == Flags::Parse::ok);
    CHECK(checkpoint == "out/final");
    const std::string u = flags.usage();
    CHECK(u.find("model folder (required)") != std::string::npos);
    CHECK(u.find("how many (default: 3)") != std::string::npos);
    CHECK_THROWS_WITH_AS(flags.require("m"), doctest::Contains("no flag --m"), Error);
}

TEST_CASE("usage wraps long help texts under their column") {
    Flags flags("p", "d");
    std::string words;
    for (int i = 0; i < 40; ++i) words += "word" + std::to_string(i) + " ";
    flags.add("long", 1, words);
    const std::string u = flags.usage();
    std::size_t lines_with_words = 0;
    std::istringstream in(u);
    for (std::string line; std::getline(in, line);) {
        CHECK(line.size() <= 100);
        if (line.find("word") != std::string::npos) {
            ++lines_with_words;
            if (line.find("--long") == std::string::npos) CHECK(line.starts_with(std::string(32, ' ') + "word"));
        }
    }
    CHECK(lines_with_words >= 3);
    CHECK(u.find("word39 (default: 1)") != std::string::npos);
}

TEST_CASE("--dtype: every spelling users type is stored as its canonical name; others are refused with the list") {
    for (auto [typed, canon] : {std::pair{"bf16", "bf16"}, {"bfloat16", "bf16"}, {"fp16", "fp16"}, {"float16", "fp16"},
                                {"half", "fp16"}, {"f32", "f32"}, {"fp32", "f32"}, {"float32", "f32"}}) {
        Flags flags("t", "");
        std::string dtype = "f32";
        flags.bind_dtype("dtype", dtype, "precision");
        flags.parse({std::string("--dtype=") + typed});
        CHECK(dtype == canon);
        CHECK(precision_name(parse_precision(typed)) == canon);
    }
    Flags flags("t", "");
    std::string dtype = "f32";
    flags.bind_dtype("dtype", dtype, "precision");
    CHECK_THROWS_WITH_AS(flags.parse({"--dtype", "int8"}), doctest::Contains("--dtype: expected one of f32, bf16, fp16, "
                                                                             "fp32, float32, bfloat16, float16, half"), Error);
    CHECK(dtype == "f32");
    CHECK_THROWS_WITH_AS(parse_precision("double", "--dtype"), doctest::Contains("expected f32 (fp32, float32), bf16 (bfloat16)"),
                         Error);
    CHECK_THROWS_WITH_AS(cpu_precision("half"), doctest::Contains("bf16 is this CPU's fast type"), Error);
    CHECK(cpu_precision("bfloat16") == Precision::bf16);
}
