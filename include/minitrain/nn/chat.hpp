// minitrain/nn/chat.hpp
// Chatting with a model: a ChatML conversation history, a prompt rendered from it for each user message,
// a reply generated with the KV cache (nn/generate.hpp) and streamed as text while it is produced.
//
//   ChatSession<Net> chat(model, ChatTemplate(tok), sample_options, "You are terse.");
//   std::string answer = chat.reply("What is 2 + 3?", [](std::string_view s) { std::fputs(...); });
//
// The prompt of a turn is the history (system, then user/assistant turns, each
//   <|im_start|>{role}\n{content}<|im_end|>\n   encoded as ChatTemplate::encode does: the training view)
// followed by the user's message and the open assistant header  <|im_start|>user\n{msg}<|im_end|>\n
// <|im_start|>assistant\n. Generation stops after <|im_end|> (or <|endoftext|>), which is not part of the
// reply. The reply's text then joins the history as an assistant message, so the next turn's prompt is
// exactly what SFT trained on for that conversation.
//
// Sampling: turn n (0-based since construction or the last reset) samples with seed + n, so a session is
// reproducible and its first turn is generate(model, prompt, options) with the same seed.
// When the prompt would leave fewer than `min_room` positions to generate, the oldest user/assistant
// turns are dropped (the system message is kept); a single message longer than the context is an Error.
//
// Streaming text: a token can end in the middle of a UTF-8 character (byte-level BPE), so the text of the
// reply so far is decoded and only its complete characters beyond what was already passed on are emitted;
// the rest is held back until the bytes that complete it arrive (or the reply ends).
//
// merge_peft_adapter(dir, model) folds a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors,
// as io/peft.hpp's save_adapter writes it) into the weights, W += (lora_alpha / r) B A, reading r, alpha and
// the targets at run time: a chat program can load any rank without compiling a LoRA policy per rank.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../backend/cpu/ops.hpp"
#include "../data/chat.hpp"
#include "../io/checkpoint.hpp"
#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "generate.hpp"
#include "transformer.hpp"

namespace minitrain {

/// The length of the longest prefix of `s` that does not end inside a UTF-8 sequence: a trailing lead
/// byte whose continuation bytes have not all arrived is cut off. Invalid bytes count as complete (the
/// decoder passes them through; holding them back would stall the stream).
inline std::size_t utf8_complete_prefix(std::string_view s) {
    const std::size_t n = s.size();
    // Look at most 3 bytes back for the lead byte of the last sequence.
    for (std::size_t back = 1; back <= 4 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
        const std::size_t need = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return back < need ? n - back : n;
    }
    return n;
}

/// Emits the text of a growing token sequence piece by piece (see the top of the file).
class TextStream {
public:
    explicit TextStream(const Tokenizer& tok) : tok_(tok) {}
    /// Adds a token; returns the newly completed text (possibly empty).
    std::string push(std::int32_t id) {
        ids_.push_back(id);
        const std::string text = tok_.decode(ids_);
        const std::size_t upto = utf8_complete_prefix(text);
        std::string out = upto > printed_ ? text.substr(printed_, upto - printed_) : std::string();
        printed_ = std::max(printed_, upto);
        return out;
    }
    /// The held-back rest at the end of the reply.
    std::string finish() {
        const std::string text = tok_.decode(ids_);
        std::string out = text.size() > printed_ ? text.substr(printed_) : std::string();
        printed_ = text.size();
        return out;
    }
    std::string text() const { return tok_.decode(ids_); }

private:
    const Tokenizer& tok_;
    std::vector<std::int32_t> ids_;
    std::size_t printed_ = 0;
};

template <ModelPolicy Net, class B = CPU>
class ChatSession {
public:
    using Model = Transformer<Net, B>;
    /// Called with each newly completed piece of the reply's text.
    using OnText = std::function<void(std::string_view)>;

    /// `options.eos_token` is set to <|im_end|>; max_new_tokens is capped by the context per turn.
    ChatSession(Model& model, ChatTemplate chat, SampleOptions options, std::string system = {}, int min_room = 8)
        : model_(model), chat_(std::move(chat)), o_(options), system_(std::move(system)), min_room_(min_room) {
        o_.eos_token = chat_.im_end_id();
        if (auto id = chat_.tokenizer().find("<|endoftext|>")) endoftext_ = *id;
        assistant_header_ = chat_.tokenizer().encode("assistant\n", false);
        MT_CHECK(chat_.tokenizer().vocab_size() <= model.config().vocab_size, "ChatSession: the tokenizer has ",
                 chat_.tokenizer().vocab_size(), " tokens but the model's vocabulary is ", model.config().vocab_size);
        reset();
    }

    /// Forgets the conversation (keeps the system message) and restarts the seed sequence.
    void reset() {
        history_.clear();
        if (!system_.empty()) history_.push_back({Role::system, system_});
        turn_ = 0;
    }

    /// The token ids the model sees for `user` after the current history (dropping the oldest turns
    /// from the history when the context is too short, see the top of the file).
    std::vector<std::int32_t> prompt_for(const std::string& user) {
        const int limit = model_.config().max_seq_len - min_room_;
        for (;;) {
            std::vector<std::int32_t> ids = render(user);
            if (int(ids.size()) <= limit) return ids;
            const std::size_t first = !history_.empty() && history_[0].role == Role::system ? 1 : 0;
            MT_CHECK(history_.size() >= first + 2, "chat: the message takes ", ids.size(),
                     " tokens with the template; the model's context is ", model_.config().max_seq_len,
                     " tokens and ", min_room_, " are kept free for the reply");
            history_.erase(history_.begin() + std::ptrdiff_t(first), history_.begin() + std::ptrdiff_t(first + 2));
        }
    }

    /// Answers `user`: generates, streams the text to on_text, appends both turns to the history and
    /// returns the reply's text. `tokens`, when given, receives the generated ids (including the final
    /// <|im_end|> when the model produced it).
    std::string reply(const std::string& user, const OnText& on_text = {}, std::vector<std::int32_t>* tokens = nullptr) {
        const std::vector<std::int32_t> prompt = prompt_for(user);
        SampleOptions o = o_;
        o.seed = o_.seed + turn_;
        TextStream stream(chat_.tokenizer());
        auto out = generate(model_, std::span<const std::int32_t>(prompt), o, [&](std::int32_t t) {
            if (t == o.eos_token || t == endoftext_) return false;
            std::string piece = stream.push(t);
            if (on_text && !piece.empty()) on_text(piece);
            return true;
        });
        if (std::string rest = stream.finish(); on_text && !rest.empty()) on_text(rest);
        std::string text = stream.text();
        history_.push_back({Role::user, user});
        history_.push_back({Role::assistant, text});
        ++turn_;
        if (tokens) *tokens = std::move(out);
        return text;
    }

    const Conversation& history() const { return history_; }
    const ChatTemplate& chat_template() const { return chat_; }
    const SampleOptions& options() const { return o_; }
    std::int32_t endoftext_id() const { return endoftext_; }

private:
    std::vector<std::int32_t> render(const std::string& user) const {
        Conversation c = history_;
        c.push_back({Role::user, user});
        std::vector<std::int32_t> ids;
        std::vector<std::uint8_t> sup;
        chat_.encode(c, ids, sup);
        ids.push_back(chat_.im_start_id());
        ids.insert(ids.end(), assistant_header_.begin(), assistant_header_.end());
        return ids;
    }

    Model& model_;
    ChatTemplate chat_;
    SampleOptions o_;
    std::string system_;
    int min_room_;
    Conversation history_;
    std::uint64_t turn_ = 0;
    std::int32_t endoftext_ = -1;
    std::vector<std::int32_t> assistant_header_;  // "assistant\n"
};

/// Merges the PEFT LoRA adapter folder `dir` into `model`'s weights (see the top of the file). Checks the
/// config (peft_type LORA, no rslora/DoRA/bias) and every tensor's name and shape before changing anything.
/// Returns the number of adapted projections. CPU models (weights in host memory).
template <ModelPolicy Net>
int merge_peft_adapter(const std::filesystem::path& dir, Transformer<Net, CPU>& model) {
    const auto cfg_path = dir / "adapter_config.json";
    const nlohmann::json cfg = detail::read_json_file(cfg_path);
    const std::string where = cfg_path.string();
    auto get = [&](const char* k) -> const nlohmann::json& {
        MT_CHECK(cfg.contains(k), where, ": missing field \"", k, "\"");
        return cfg[k];
    };
    MT_CHECK(get("peft_type") == "LORA", where, ": peft_type is ", detail::show_json(get("peft_type")), ", expected \"LORA\"");
    const int r = get("r").template get<int>();
    const double alpha = get("lora_alpha").template get<double>();
    MT_CHECK(r >= 1, where, ": r must be at least 1, got ", r);
    for (const char* off : {"use_rslora", "use_dora", "fan_in_fan_out"})
        MT_CHECK(!cfg.contains(off) || cfg[off].is_null() || cfg[off] == false, where, ": ", off,
                 " is set; only plain LoRA (W += alpha / r * B A) is supported");
    MT_CHECK(!cfg.contains("bias") || cfg["bias"] == "none", where, ": bias is ", detail::show_json(cfg.value("bias", nlohmann::json())),
             "; only \"none\" is supported");
    const double scaling = alpha / double(r);

    SafeTensors st(dir / "adapter_model.safetensors");
    const std::string prefix = "base_model.model.", a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";
    struct Site {
        Parameter* w;
        std::string a, b;
    };
    std::vector<Site> sites;
    for (const std::string& name : st.names()) {
        MT_CHECK(name.starts_with(prefix) && (name.ends_with(a_suffix) || name.ends_with(b_suffix)), st.path().string(),
                 ": unexpected tensor \"", name, "\" (expected base_model.model.<module>.lora_A|lora_B.weight)");
        if (!name.ends_with(a_suffix)) continue;
        const std::string module = name.substr(prefix.size(), name.size() - prefix.size() - a_suffix.size());
        const std::string b = prefix + module + b_suffix;
        Parameter* w = model.params().try_find(module + ".weight");
        MT_CHECK(w, st.path().string(), ": \"", name, "\" adapts ", module, ".weight, which the model does not have");
        MT_CHECK(st.contains(b), st.path().string(), ": \"", name, "\" has no matching \"", b, "\"");
        const Shape ws = w->shape;  // (out, in)
        const std::vector<std::int64_t> want_a{r, ws[1]}, want_b{ws[0], r};
        MT_CHECK(st.info(name).shape == want_a, st.path().string(), ": \"", name, "\" has shape ",
                 detail::shape_str(st.info(name).shape), ", expected ", detail::shape_str(want_a));
        MT_CHECK(st.info(b).shape == want_b, st.path().string(), ": \"", b, "\" has shape ",
                 detail::shape_str(st.info(b).shape), ", expected ", detail::shape_str(want_b));
        sites.push_back({w, name, b});
    }
    for (const std::string& name : st.names())
        if (name.ends_with(b_suffix))
            MT_CHECK(st.contains(name.substr(0, name.size() - b_suffix.size()) + a_suffix), st.path().string(), ": \"",
                     name, "\" has no matching lora_A");
    MT_CHECK(!sites.empty(), st.path().string(), ": no adapter tensors");

    for (const Site& s : sites) {
        const std::int64_t out = s.w->shape[0], in = s.w->shape[1];
        Buffer<CPU> a(Shape{r, in}, DType::f32), b(Shape{out, r}, DType::f32), d(Shape{out, in}, DType::f32);
        st.read_into(s.a, a.tensor());
        st.read_into(s.b, b.tensor());
        matmul_forward(CPU{}, d.tensor(), b.tensor(), a.tensor());  // (out, R) x (R, in)
        scale(CPU{}, d.tensor(), scaling);
        add_forward(CPU{}, s.w->var.data, s.w->var.data, d.tensor());
    }
    return int(sites.size());
}

// ---- a chat picked at run time ----------------------------------------------------------------------

/// A loaded model with its tokenizer and ChatSession behind one interface, for programs that pick the
/// model (from config.json) and the backend (--device) at run time: the chat loop is written once.
class AnyChat {
public:
    virtual ~AnyChat() = default;
    virtual std::string reply(const std::string& user, const std::function<void(std::string_view)>& on_text = {}) = 0;
    virtual void reset() = 0;
    virtual std::size_t parameter_count() const = 0;
    /// Projections the PEFT adapter adapted (0: no adapter).
    virtual int merged_sites() const = 0;
};

namespace detail {

template <ModelPolicy Net, class B>
class OwnedChat final : public AnyChat {
public:
    OwnedChat(const std::filesystem::path& dir, const std::filesystem::path& adapter, const std::filesystem::path& tokenizer,
              const SampleOptions& options, const std::string& system)
        : tok_(Tokenizer::load(tokenizer)), model_(load_model_config(dir)) {
        if constexpr (std::is_same_v<B, CPU>) {
            load_pretrained(dir, model_);
            if (!adapter.empty()) sites_ = merge_peft_adapter(adapter, model_);
            // Under Autocast bf16 (chat --dtype bf16): the merged weights rounded once for every reply.
            cpu::use_bf16_weights_for_inference(bf16_copy_, model_.params().data().template data<float>(),
                                                model_.params().count());
        } else {
            // The adapter merge runs on the CPU (merge_peft_adapter); the merged slab then goes up in one copy.
            Transformer<Net, CPU> host(model_.config());
            load_pretrained(dir, host);
            if (!adapter.empty()) sites_ = merge_peft_adapter(adapter, host);
            MT_CHECK(host.params().count() == model_.params().count(), "load_chat: the host and device models differ");
            B::from_host(model_.params().data(), host.params().data().ptr);
        }
        session_.emplace(model_, ChatTemplate(tok_), options, system);
    }
    std::string reply(const std::string& user, const std::function<void(std::string_view)>& on_text) override {
        return session_->reply(user, on_text);
    }
    void reset() override { session_->reset(); }
    std::size_t parameter_count() const override { return model_.params().count(); }
    int merged_sites() const override { return sites_; }

private:
    Tokenizer tok_;
    Transformer<Net, B> model_;
    cpu::Bf16WeightCopy bf16_copy_;  // after model_: released before the weights it stands for go away
    std::optional<ChatSession<Net, B>> session_;
    int sites_ = 0;
};

}  // namespace detail

/// The model in `dir` as Transformer<Net, B>, the PEFT adapter in `adapter` merged (if not empty), in a
/// ChatSession with `tokenizer`.
template <ModelPolicy Net, class B = CPU>
std::unique_ptr<AnyChat> load_chat(const std::filesystem::path& dir, const std::filesystem::path& adapter,
                                   const std::filesystem::path& tokenizer, const SampleOptions& options,
                                   const std::string& system) {
    return std::make_unique<detail::OwnedChat<Net, B>>(dir, adapter, tokenizer, options, system);
}

}  // namespace minitrain
