// The server's own part (include/minitrain/serve/), without HTTP: requests parsed and checked into
// OpenAI-shaped errors, prompts rendered as ChatSession renders them, a Sequence sampling exactly what
// generate() samples, stop sequences cut and never shown in part, the engine interleaving requests
// (results equal to one at a time), its bounded queue and cancellation; and the tiny chat model the
// end-to-end tests (tests/serve/*.test.mjs) serve.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <minitrain/minitrain.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/serve/serve.hpp>
#include <minitrain/train/sft.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace minitrain::serve;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using Net = TinyModel;  // the one model type of this file ("test" preset)

Tokenizer small_tokenizer() {
    std::vector<std::string> texts;
    for (int i = 0; i < 40; ++i)
        texts.push_back("What is " + std::to_string(i) + " + " + std::to_string(i * 3 % 17) + "? The answer is " +
                        std::to_string(i + i * 3 % 17) + ". café naïve 日本語 ");
    Tokenizer::TrainOptions o;
    o.vocab_size = 300;
    return Tokenizer::train_from_texts(texts, o);
}

/// The ApiError a body gives (status 0 when it parses).
ApiError error_of(std::string_view body, Endpoint e = Endpoint::chat) {
    try {
        parse_request(body, e);
    } catch (const RequestError& r) {
        return r.error;
    }
    return ApiError{0, "", "", "", ""};
}

/// Runs a Sequence to its end; returns its pieces.
std::vector<std::string> run_sequence(Sequence<Net>& seq, Transformer<Net>& model) {
    Graph<CPU> g;
    NoGrad<CPU> no_grad(g);
    g.set_training(false);
    std::vector<std::string> pieces;
    while (!seq.done()) pieces.push_back(seq.step(model, g));
    return pieces;
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (auto& p : v) s += p;
    return s;
}

}  // namespace

TEST_CASE("parse_request: the fields of a chat completion and their defaults") {
    auto r = parse_request(R"({"model": "m", "messages": [{"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
        "max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 11, "stop": "\n",
        "frequency_penalty": 0.5, "presence_penalty": -1, "stream": true, "stream_options": {"include_usage": true},
        "user": "ignored", "logprobs": false, "logit_bias": {"2": -100, "17": 5.5}})", Endpoint::chat);
    REQUIRE(r.messages.size() == 2);
    CHECK(r.messages[0].role == Role::system);
    CHECK(r.messages[1].content == "hi there");
    CHECK(r.max_tokens == 7);
    CHECK(r.sample.temperature == 0);
    CHECK(r.sample.top_p == 0.5);
    CHECK(r.sample.top_k == 3);
    CHECK(r.sample.seed == 11);
    CHECK(r.seed_given);
    CHECK(r.stop == std::vector<std::string>{"\n"});
    CHECK(r.frequency_penalty == 0.5);
    CHECK(r.presence_penalty == -1);
    CHECK(r.stream);
    CHECK(r.include_usage);
    CHECK(r.logit_bias == std::vector<std::pair<std::int32_t, float>>{{2, -100.f}, {17, 5.5f}});  // sorted by id

    auto d = parse_request(R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 2.0})", Endpoint::chat);
    CHECK(d.max_tokens == 2);
    CHECK(d.sample.temperature == 1.0);
    CHECK(d.sample.top_p == 1.0);
    CHECK(!d.seed_given);
    CHECK(!d.stream);

    auto c = parse_request(R"({"prompt": ["once upon"], "stop": ["a", "b"]})", Endpoint::completion);
    CHECK(c.prompt_text == "once upon");
    CHECK(c.stop.size() == 2);
    auto ids = parse_request(R"({"prompt": [5, 6, 7]})", Endpoint::completion);
    CHECK(ids.prompt_ids == std::vector<std::int32_t>{5, 6, 7});
}

TEST_CASE("parse_request: each malformed request is a 400 naming the field") {
    struct Case {
        const char* body;
        const char* param;
        const char* code;
    };
    const Case cases[] = {
        {"{not json", "", "invalid_json"},
        {"[1, 2]", "", "invalid_type"},
        {R"({})", "messages", "missing_required_parameter"},
        {R"({"messages": "hi"})", "messages", "invalid_type"},
        {R"({"messages": []})", "messages", "empty_array"},
        {R"({"messages": [3]})", "messages[0]", "invalid_type"},
        {R"({"messages": [{"content": "x"}]})", "messages[0].role", "missing_required_parameter"},
        {R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content", "invalid_type"},
        {R"({"messages": [{"role": "user"}]})", "messages[0].content", "missing_required_parameter"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content[0].type", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})", "temperature", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature", "invalid_type"},
        {R"({"messages": [{"role": "user", "content": "x"}], "top_p": 0})", "top_p", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5})", "max_tokens", "invalid_type"},
        {R"({"messages": [{"role": "user", "content": "x"}], "top_k": -1})", "top_k", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "n": 2})", "n", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stop": 4})", "stop", "invalid_type"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]})", "stop", "array_above_max_length"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})", "stream", "invalid_type"},
        {R"({"messages": [{"role": "user", "content": "x"}], "seed": 1.5})", "seed", "invalid_type"},
        {R"({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 2.5})", "frequency_penalty", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", "logprobs", "unsupported_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}})", "stream_options", "invalid_value"},
        {R"({"model": 5, "messages": [{"role": "user", "content": "x"}]})", "model", "invalid_type"},
        {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"a": 1}})", "logit_bias", "invalid_value"},
        {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"3": 101}})", "logit_bias", "invalid_value"},
    };
    for (const Case& c : cases) {
        INFO(c.body);
        ApiError e = error_of(c.body);
        CHECK(e.status == 400);
        CHECK(e.param == c.param);
        CHECK(e.code == c.code);
        CHECK(e.type == "invalid_request_error");
        CHECK(!e.message.empty());
        const json j = e.to_json();
        CHECK(j["error"]["message"].is_string());
        CHECK((c.param[0] ? j["error"]["param"] == c.param : j["error"]["param"].is_null()));
    }
    CHECK(error_of(R"({})", Endpoint::completion).param == "prompt");
    CHECK(error_of(R"({"prompt": ""})", Endpoint::completion).param == "prompt");
    CHECK(error_of(R"({"prompt": 5})", Endpoint::completion).code == "invalid_type");
    CHECK(error_of(R"({"prompt": [1, -2]})", Endpoint::completion).code == "invalid_type");
}

TEST_CASE("render_prompt is ChatSession's prompt; the context rule cuts max_tokens or refuses") {
    Tokenizer tok = small_tokenizer();
    ChatTemplate chat(tok);
    Transformer<Net> model(ModelConfig{300, 64});
    model.init(3);
    ChatSession<Net> session(model, chat, SampleOptions{}, "be brief");
    auto r = parse_request(R"({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2 + 3?"}]})",
                           Endpoint::chat);
    CHECK(render_prompt(r, chat) == session.prompt_for("What is 2 + 3?"));
    auto c = parse_request(R"({"prompt": "What is<|im_end|>"})", Endpoint::completion);
    auto ids = render_prompt(c, chat);
    CHECK(ids.back() == chat.im_end_id());  // special tokens are allowed in completions
    CHECK_THROWS_AS(render_prompt(parse_request(R"({"prompt": [299, 300]})", Endpoint::completion), chat), RequestError);

    CHECK(check_context(10, std::nullopt, 64) == 54);
    CHECK(check_context(10, 5, 64) == 5);
    CHECK(check_context(60, 100, 64) == 4);
    try {
        check_context(64, 1, 64);
        FAIL("expected context_length_exceeded");
    } catch (const RequestError& e) {
        CHECK(e.error.code == "context_length_exceeded");
        CHECK(e.error.status == 400);
    }
}

TEST_CASE("Sequence samples what generate() samples, greedy and with a seed") {
    Tokenizer tok = small_tokenizer();
    Transformer<Net> model(ModelConfig{300, 64});
    model.init(7);
    const std::vector<std::int32_t> prompt = tok.encode("What is 4 + 5?");
    for (double temperature : {0.0, 0.9}) {
        SampleOptions o;
        o.temperature = temperature;
        o.top_k = 40;
        o.top_p = 0.9;
        o.seed = 5;
        o.max_new_tokens = 20;
        INFO("temperature " << temperature);
        const auto want = generate(model, std::span<const std::int32_t>(prompt), o);
        GenerationParams p;
        p.sample = o;
        Sequence<Net> seq(model, tok, prompt, p);
        const auto pieces = run_sequence(seq, model);
        CHECK(seq.generated_ids() == want);
        CHECK(seq.finish_reason() == "length");
        CHECK(seq.completion_tokens() == 20);
        CHECK(join(pieces) == tok.decode(want));
        CHECK(seq.text() == tok.decode(want));
    }
    // A stop token ends the reply without being part of its text; near the context end: "length".
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 30;
    const auto free_run = generate(model, std::span<const std::int32_t>(prompt), o);
    GenerationParams p;
    p.sample = o;
    p.stop_tokens = {free_run[3]};
    Sequence<Net> seq(model, tok, prompt, p);
    run_sequence(seq, model);
    const auto first = std::find(free_run.begin(), free_run.end(), free_run[3]) - free_run.begin();
    CHECK(seq.finish_reason() == "stop");
    CHECK(seq.completion_tokens() == first + 1);
    CHECK(seq.text() == tok.decode(std::vector<std::int32_t>(free_run.begin(), free_run.begin() + first)));
    GenerationParams banned;
    banned.sample = o;
    banned.logit_bias = {{free_run[0], -100.f}};
    Sequence<Net> biased(model, tok, prompt, banned);
    run_sequence(biased, model);
    CHECK(biased.generated_ids()[0] != free_run[0]);
    GenerationParams q;
    q.sample = o;
    q.sample.max_new_tokens = 1000;
    Sequence<Net> near_end(model, tok, std::vector<std::int32_t>(60, 5), q);
    run_sequence(near_end, model);
    CHECK(near_end.completion_tokens() == 4);
    CHECK(near_end.finish_reason() == "length");
}

TEST_CASE("penalties: frequency and presence push repeated tokens down") {
    Tokenizer tok = small_tokenizer();
    Transformer<Net> model(ModelConfig{300, 128});
    model.init(11);
    const std::vector<std::int32_t> prompt = tok.encode("The answer is");
    auto distinct = [&](double freq, double pres) {
        GenerationParams p;
        p.sample.temperature = 0;
        p.sample.max_new_tokens = 60;
        p.frequency_penalty = freq;
        p.presence_penalty = pres;
        Sequence<Net> seq(model, tok, prompt, p);
        run_sequence(seq, model);
        auto ids = seq.generated_ids();
        std::sort(ids.begin(), ids.end());
        return std::unique(ids.begin(), ids.end()) - ids.begin();
    };
    const auto plain = distinct(0, 0);
    INFO("distinct tokens: plain " << plain);
    CHECK(distinct(2, 0) > plain);
    CHECK(distinct(0, 2) > plain);
}

TEST_CASE("stop sequences: the text ends before the first occurrence, and no piece shows a stop in part") {
    CHECK(stop_prefix_tail("hello wor", {"world"}) == 3);
    CHECK(stop_prefix_tail("hello", {"world"}) == 0);
    CHECK(stop_prefix_tail("abcab", {"abcabd", "b"}) == 5);
    CHECK(stop_prefix_tail("x", {}) == 0);

    Tokenizer tok = small_tokenizer();
    Transformer<Net> model(ModelConfig{300, 128});
    model.init(5);
    const std::vector<std::int32_t> prompt = tok.encode("What is 1 + 2?");
    GenerationParams base;
    base.sample.temperature = 0;
    base.sample.max_new_tokens = 60;
    Sequence<Net> free_seq(model, tok, prompt, base);
    run_sequence(free_seq, model);
    const std::string full = free_seq.text();
    REQUIRE(full.size() > 12);
    // Stops taken from the text itself: found where they first occur; one that never occurs changes nothing.
    for (std::size_t at : {std::size_t(3), full.size() / 2, full.size() - 3}) {
        const std::string stop = full.substr(at, 3);
        const std::size_t first = full.find(stop);
        GenerationParams p = base;
        p.stop = {"\x01never", stop};
        Sequence<Net> seq(model, tok, prompt, p);
        const auto pieces = run_sequence(seq, model);
        INFO("stop \"" << stop << "\" at " << first);
        CHECK(seq.text() == full.substr(0, first));
        CHECK(join(pieces) == seq.text());
        CHECK(seq.finish_reason() == "stop");
        std::string shown;
        for (const auto& piece : pieces) {
            shown += piece;
            CHECK(shown.find(stop) == std::string::npos);
            CHECK(utf8_complete_prefix(shown) == shown.size());
        }
    }
}

TEST_CASE("Engine: interleaved requests give what each gives alone; a full queue refuses; cancel frees the slot") {
    Tokenizer tok = small_tokenizer();
    Transformer<Net> model(ModelConfig{300, 128});
    model.init(9);
    std::vector<std::vector<std::int32_t>> prompts;
    std::vector<GenerationParams> params;
    std::vector<std::string> alone;
    for (int i = 0; i < 6; ++i) {
        prompts.push_back(tok.encode("What is " + std::to_string(i) + " + 1?"));
        GenerationParams p;
        p.sample.temperature = i % 2 ? 0.8 : 0.0;
        p.sample.seed = std::uint64_t(i);
        p.sample.max_new_tokens = 10 + 3 * i;
        params.push_back(p);
        Sequence<Net> seq(model, tok, prompts.back(), p);
        run_sequence(seq, model);
        alone.push_back(seq.text());
    }
    {
        Engine<Net> engine(model, tok, EngineOptions{3, 3});
        std::vector<std::shared_ptr<Job>> jobs;
        for (int i = 0; i < 6; ++i) jobs.push_back(engine.submit(prompts[std::size_t(i)], params[std::size_t(i)]));
        for (auto& j : jobs) REQUIRE(j);
        for (int i = 0; i < 6; ++i) {
            std::string text;
            std::vector<std::string> pieces;
            while (!jobs[std::size_t(i)]->wait_for(pieces, std::chrono::milliseconds(100))) {}
            for (auto& p : pieces) text += p;
            CHECK(text == alone[std::size_t(i)]);
            CHECK(jobs[std::size_t(i)]->finish_reason() == "length");
            CHECK(jobs[std::size_t(i)]->completion_tokens() == params[std::size_t(i)].sample.max_new_tokens);
        }
    }
    {
        EngineOptions o{1, 1, 20};  // one slot, one waiting, 20 ms a round: the first job runs long
        Engine<Net> engine(model, tok, o);
        GenerationParams longp;
        longp.sample.max_new_tokens = 100;
        auto a = engine.submit(prompts[0], longp);
        auto b = engine.submit(prompts[1], params[1]);
        REQUIRE(a);
        REQUIRE(b);
        for (int i = 0; i < 50 && engine.active() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        CHECK(!engine.submit(prompts[2], params[2]));  // a runs, b waits: the queue is full
        a->cancel();
        std::vector<std::string> pieces;
        while (!b->wait_for(pieces, std::chrono::milliseconds(100))) {}
        CHECK(b->finish_reason() == "length");
        CHECK(a->finish_reason() == "cancelled");
        CHECK(a->completion_tokens() < 100);
        auto c = engine.submit(prompts[2], params[2]);
        CHECK(c);
        engine.shutdown();
        CHECK(c->finish_reason() != "");
        CHECK(!engine.submit(prompts[2], params[2]));  // after shutdown
    }
}

TEST_CASE("response objects have OpenAI's shape") {
    const ResponseHead h{"chatcmpl-1", 1700000000, "m"};
    const json r = completion_response(Endpoint::chat, h, "hi", "stop", Usage{3, 2});
    CHECK(r["object"] == "chat.completion");
    CHECK(r["choices"][0]["message"]["role"] == "assistant");
    CHECK(r["choices"][0]["message"]["content"] == "hi");
    CHECK(r["choices"][0]["finish_reason"] == "stop");
    CHECK(r["usage"]["total_tokens"] == 5);
    const json first = stream_chunk(Endpoint::chat, h, json{{"role", "assistant"}, {"content", ""}}, "", false);
    CHECK(first["object"] == "chat.completion.chunk");
    CHECK(first["choices"][0]["finish_reason"].is_null());
    CHECK(!first.contains("usage"));
    const json last = stream_chunk(Endpoint::chat, h, json::object(), "length", true);
    CHECK(last["choices"][0]["finish_reason"] == "length");
    CHECK(last["usage"].is_null());
    CHECK(usage_chunk(Endpoint::chat, h, Usage{3, 2})["choices"].empty());
    CHECK(sse(json{{"a", 1}}) == "data: {\"a\":1}\n\n");
    const json c = completion_response(Endpoint::completion, {"cmpl-1", 1, "m"}, "x", "length", Usage{1, 1});
    CHECK(c["object"] == "text_completion");
    CHECK(c["choices"][0]["text"] == "x");
    CHECK(models_response("m", 1)["data"][0]["id"] == "m");
}

// The model the end-to-end tests serve (CTest serve_model writes it to $MINITRAIN_SERVE_MODEL_DIR): the
// "test" preset fine-tuned for a few seconds on short question/answer conversations, saved with a
// context of 1024 positions (RoPE needs no retraining for the positions; the replies past the trained
// length are nonsense, but deterministic, which is what the tests need).
TEST_CASE("serve: a tiny chat model for the server tests") {
    TempDir dir;
    const char* out_env = std::getenv("MINITRAIN_SERVE_MODEL_DIR");
    const fs::path out = out_env && *out_env ? fs::path(out_env) : dir.path / "model";
    const std::vector<std::pair<std::string, std::string>> qa = {
        {"Hello!", "Hello! How can I help you?"},       {"What is 2 + 3?", "2 + 3 is 5."},
        {"What is the capital of France?", "Paris."},  {"Name a color.", "Blue."},
        {"What is 4 + 4?", "4 + 4 is 8."},              {"Who are you?", "I am a tiny model trained by minitrain."},
        {"Say something nice.", "You are doing great!"}, {"What is 1 + 1?", "1 + 1 is 2."}};
    std::vector<std::string> texts;
    for (auto& [q, a] : qa) texts.push_back(q + " " + a + " café 日本語 ");
    Tokenizer::TrainOptions to;
    to.vocab_size = 320;
    const Tokenizer trained = Tokenizer::train_from_texts(texts, to);
    trained.save(dir.path / "tokenizer.json");
    const int vocab = trained.vocab_size();  // the model's too: every id it samples decodes
    {
        std::ofstream f(dir.path / "train.jsonl");
        for (int rep = 0; rep < 8; ++rep)
            for (auto& [q, a] : qa)
                f << json{{"conversations", json::array({{{"role", "user"}, {"content", q}}, {{"role", "assistant"}, {"content", a}}})}}.dump()
                  << "\n";
    }
    TrainConfig c;
    c.tokenizer = (dir.path / "tokenizer.json").string();
    c.train_data = (dir.path / "train.jsonl").string();
    c.vocab_size = vocab;
    c.batch_size = 8;
    c.max_seq_len = 48;
    c.learning_rate = 1e-2;
    c.max_steps = 150;
    c.log_interval = 0;
    c.save_interval = 0;
    c.out_dir = (dir.path / "run").string();
    c.quiet = true;
    Trainer<Net, Optimizer<AdamW>, Schedule<Constant>, SFT> trainer(c);
    trainer.fit();

    Transformer<Net> served(ModelConfig{vocab, 1024});
    load_pretrained(dir.path / "run" / "final", served);
    fs::remove_all(out);
    save_pretrained(out, served);
    fs::copy_file(dir.path / "tokenizer.json", out / "tokenizer.json", fs::copy_options::overwrite_existing);

    // It answers a trained question with the trained reply (greedy), ending with <|im_end|>.
    Transformer<Net> back(load_model_config(out));
    load_pretrained(out, back);
    ChatTemplate chat(Tokenizer::load(out / "tokenizer.json"));
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 40;
    ChatSession<Net> session(back, chat, o);
    std::vector<std::int32_t> ids;
    const std::string reply = session.reply("What is the capital of France?", {}, &ids);
    MESSAGE("reply: " << reply);
    CHECK(reply == "Paris.");
    CHECK(ids.back() == chat.im_end_id());
}
