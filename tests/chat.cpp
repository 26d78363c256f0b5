// ChatSession (nn/chat.hpp): its replies are exactly what generate() gives for the rendered ChatML prompt
// with the same seed, the streamed text pieces add up to the reply, the history grows as ChatML says and
// turns are dropped when the context runs out; UTF-8 pieces are held back until complete; a PEFT adapter
// folder merged at run time computes what the attached adapters compute.
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <minitrain/data/chat.hpp>
#include <minitrain/io/peft.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/nn/lora.hpp>
#include <minitrain/tokenizer/tokenizer.hpp>
#include <minitrain/train/lora.hpp>

#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
using namespace mt_test;
namespace fs = std::filesystem;

namespace {

using Net = TinyModel;  // the one model type of this file

Tokenizer small_tokenizer() {
    std::vector<std::string> texts;
    for (int i = 0; i < 40; ++i)
        texts.push_back("What is " + std::to_string(i) + " + " + std::to_string(i * 3 % 17) + "? The answer is " +
                        std::to_string(i + i * 3 % 17) + ". café naïve 日本語 ");
    Tokenizer::TrainOptions o;
    o.vocab_size = 300;
    return Tokenizer::train_from_texts(texts, o);
}


/// The prompt as the template renders it, built by hand: ChatTemplate::encode of the conversation, then
/// <|im_start|>assistant\n.
std::vector<std::int32_t> reference_prompt(const ChatTemplate& chat, const Conversation& c) {
    std::vector<std::int32_t> ids;
    std::vector<std::uint8_t> sup;
    chat.encode(c, ids, sup);
    ids.push_back(chat.im_start_id());
    for (auto t : chat.tokenizer().encode("assistant\n", false)) ids.push_back(t);
    return ids;
}

/// generate() with ChatSession's stop rule (<|im_end|> as eos; <|endoftext|> stops too).
std::vector<std::int32_t> direct(Transformer<Net>& model, const ChatTemplate& chat, std::span<const std::int32_t> prompt,
                                 SampleOptions o) {
    o.eos_token = chat.im_end_id();
    const std::int32_t eot = chat.tokenizer().token_id("<|endoftext|>");
    return generate(model, prompt, o, [&](std::int32_t t) { return t != o.eos_token && t != eot; });
}

}  // namespace

TEST_CASE("utf8_complete_prefix holds back an incomplete trailing character only") {
    CHECK(utf8_complete_prefix("") == 0);
    CHECK(utf8_complete_prefix("abc") == 3);
    const std::string e = "caf\xC3\xA9";  // é = C3 A9
    CHECK(utf8_complete_prefix(e) == 5);
    CHECK(utf8_complete_prefix(e.substr(0, 4)) == 3);
    const std::string ja = "\xE6\x97\xA5";  // 日
    CHECK(utf8_complete_prefix(ja) == 3);
    CHECK(utf8_complete_prefix(ja.substr(0, 2)) == 0);
    CHECK(utf8_complete_prefix("a" + ja.substr(0, 1)) == 1);
    const std::string emoji = "\xF0\x9F\x98\x80";
    CHECK(utf8_complete_prefix(emoji) == 4);
    CHECK(utf8_complete_prefix("x" + emoji.substr(0, 3)) == 1);
    CHECK(utf8_complete_prefix("x\x80") == 2);  // a stray continuation byte is passed through
}

TEST_CASE("TextStream: the pieces concatenate to decode(ids) and never split a character") {
    Tokenizer tok = small_tokenizer();
    const std::string text = "naïve 日本語 café!";
    // Byte by byte (each multi-byte character split over several tokens), then as the tokenizer encodes it.
    std::vector<std::int32_t> by_byte;
    for (unsigned char ch : text) by_byte.push_back(tok.token_id(tok::byte_alphabet().utf8[ch]));
    for (const auto& ids : {by_byte, tok.encode(text, false)}) {
        TextStream s(tok);
        std::string all;
        for (auto id : ids) {
            std::string piece = s.push(id);
            CHECK(utf8_complete_prefix(piece) == piece.size());
            all += piece;
        }
        all += s.finish();
        CHECK(all == text);
    }
}

TEST_CASE("ChatSession replies are generate() on the rendered ChatML prompt with the same seed") {
    Tokenizer tok = small_tokenizer();
    ChatTemplate chat(tok);
    Transformer<Net> model(ModelConfig{tok.vocab_size(), 96});
    model.init(7);

    SampleOptions o;
    o.temperature = 1.3;  // random weights: a flat distribution, so the seed matters
    o.top_k = 50;
    o.top_p = 0.95;
    o.repetition_penalty = 1.1;
    o.seed = 1234;
    o.max_new_tokens = 12;

    ChatSession<Net> session(model, chat, o, "You are terse.");
    std::string streamed;
    std::vector<std::int32_t> got;
    const std::string reply1 = session.reply("What is 2 + 3?", [&](std::string_view s) { streamed += s; }, &got);

    Conversation c{{Role::system, "You are terse."}, {Role::user, "What is 2 + 3?"}};
    const auto prompt1 = reference_prompt(chat, c);
    CHECK(session.history().size() == 3);
    const auto want = direct(model, chat, prompt1, o);
    CHECK(got == want);
    REQUIRE(!got.empty());

    std::vector<std::int32_t> body = got;
    if (!body.empty() && (body.back() == chat.im_end_id() || body.back() == session.endoftext_id())) body.pop_back();
    CHECK(reply1 == tok.decode(body));
    CHECK(streamed == reply1);
    CHECK(session.history()[2] == Message{Role::assistant, reply1});

    // A different seed gives a different reply (the test can fail if seeds were ignored).
    SampleOptions o2 = o;
    o2.seed = 99;
    CHECK(direct(model, chat, prompt1, o2) != want);

    // Turn 2: the prompt is the whole conversation so far, sampled with seed + 1.
    std::vector<std::int32_t> got2;
    session.reply("And 4 + 4?", {}, &got2);
    c.push_back({Role::assistant, reply1});
    c.push_back({Role::user, "And 4 + 4?"});
    SampleOptions o_turn2 = o;
    o_turn2.seed = o.seed + 1;
    CHECK(got2 == direct(model, chat, reference_prompt(chat, c), o_turn2));
    CHECK(session.history().size() == 5);

    // reset: back to the system message and the first seed.
    session.reset();
    CHECK(session.history().size() == 1);
    std::vector<std::int32_t> again;
    session.reply("What is 2 + 3?", {}, &again);
    CHECK(again == want);

    // Greedy is the argmax path of generate() too.
    SampleOptions g = o;
    g.temperature = 0;
    ChatSession<Net> greedy(model, chat, g);
    std::vector<std::int32_t> gg;
    greedy.reply("hi", {}, &gg);
    CHECK(gg == direct(model, chat, reference_prompt(chat, {{Role::user, "hi"}}), g));
}

TEST_CASE("ChatSession drops the oldest turns when the context runs out, keeps the system message") {
    Tokenizer tok = small_tokenizer();
    ChatTemplate chat(tok);
    Transformer<Net> model(ModelConfig{tok.vocab_size(), 64});
    model.init(3);
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 4;
    ChatSession<Net> s(model, chat, o, "sys", 8);
    for (int i = 0; i < 8; ++i) {
        s.reply("What is " + std::to_string(i) + " + 1?");
        CHECK(s.history()[0] == Message{Role::system, "sys"});
        CHECK(int(s.prompt_for("next").size()) <= 64 - 8);
    }
    CHECK(s.history().size() < 1 + 2 * 8);
    CHECK_THROWS_WITH_AS(s.reply(std::string(200, 'x')), doctest::Contains("context"), Error);
}

TEST_CASE("merge_peft_adapter: a saved adapter folder merged at run time computes what the attached adapters do") {
    TempDir dir;
    const int V = 40, T = 16;
    Transformer<Net> model(ModelConfig{V, T});
    model.init(11);
    Rng rng{21};
    auto ids = randint({2, T}, rng, 0, V);
    auto logits_of = [&](Transformer<Net>& m) {
        Graph<CPU> g;
        NoGrad<CPU> ng(g);
        g.set_training(false);
        return to_vector(m.forward(g, ids).logits->data);
    };
    const auto base = logits_of(model);
    std::vector<double> adapted;
    {
        LoRAAdapters<LoRA<4, 8, LoRAAttentionMLP>, Transformer<Net>> a(model, 5);
        Rng r{77};
        for (auto& p : a.params().all())  // B = 0 at init: give every adapter a visible effect
            for (std::int64_t i = 0; i < p.var.data.numel(); ++i) p.var.data.data<float>()[i] = float(0.2 * r.normal());
        adapted = logits_of(model);
        save_adapter(dir.path, a);
    }  // detaches
    CHECK(logits_of(model) == base);
    const int sites = merge_peft_adapter(dir.path, model);
    CHECK(sites == 2 * 7);  // 2 layers x (q, k, v, o, gate, up, down)
    const auto merged = logits_of(model);
    double max_diff = 0, max_effect = 0;
    for (std::size_t i = 0; i < merged.size(); ++i) {
        max_diff = std::max(max_diff, std::abs(merged[i] - adapted[i]));
        max_effect = std::max(max_effect, std::abs(adapted[i] - base[i]));
    }
    CHECK(max_effect > 1e-2);
    CHECK(max_diff < 1e-4);

    // A config this loader cannot honour is refused before anything changes.
    auto cfg = minitrain::detail::read_json_file(dir.path / "adapter_config.json");
    cfg["use_rslora"] = true;
    std::ofstream(dir.path / "adapter_config.json") << cfg.dump();
    CHECK_THROWS_WITH_AS(merge_peft_adapter(dir.path, model), doctest::Contains("use_rslora"), Error);
}
