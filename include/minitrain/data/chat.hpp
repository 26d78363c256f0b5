// minitrain/data/chat.hpp
// Conversations for supervised fine-tuning (SFT) and preference pairs (DPO), in MiniMind's JSONL formats,
// rendered with the ChatML template and turned into (inputs, targets) that cross_entropy takes directly.
//
// Formats (one JSON object per line):
//   SFT  {"conversations": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
//   DPO  {"chosen": [...conversation...], "rejected": [...conversation...]}
// A conversation is an optional system message, then user and assistant messages alternating, starting
// with user and ending with assistant. The two conversations of a DPO pair must share everything but their
// last (assistant) message: the prompt. Other fields of a record or a message are ignored.
//
// ChatML: each message is  <|im_start|>{role}\n{content}<|im_end|>\n  (MiniMind, Qwen). The markers are
// encoded as their special-token ids; the role header "{role}\n", the content and the "\n" after
// <|im_end|> are encoded separately as plain text (allow_special = false), so text in a message that
// spells "<|im_end|>" is just text: user content cannot inject template tokens. (Encoding the pieces
// separately can differ from encoding the rendered string as one text in rare cases, e.g. content that
// starts with several line breaks; it is what makes the supervised span start exactly at the content.)
//
// Supervision (MiniMind's rule): in every assistant message, the tokens from right after
// "<|im_start|>assistant\n" through "<|im_end|>\n" inclusive are supervised; nothing else is.
//
// The training view (one convention, used by every loader): a sequence of L ids with supervision flags
// becomes T positions, T = max_seq_len:
//   inputs[t]  = ids[t]                                  for t < min(L, T), then the pad id
//   targets[t] = ids[t+1] if token t+1 is supervised     for t + 1 < min(L, T + 1), otherwise -100
// so targets are already shifted (the model at position t predicts token t+1) and padding is ignored by
// cross_entropy(logits, targets, ignore_index = -100). A longer sequence is truncated on the right (its
// first T + 1 tokens are kept). The pad id is <|endoftext|>'s (0 in MiniMind's tokenizer).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "jsonl.hpp"

namespace minitrain {

/// The target of a position that is not trained on (cross_entropy's default ignore_index, as PyTorch's).
inline constexpr std::int32_t ignore_index = -100;

// ---- conversations ------------------------------------------------------------------------------------

enum class Role : std::uint8_t { system, user, assistant };

inline const char* role_name(Role r) {
    switch (r) {
        case Role::system: return "system";
        case Role::user: return "user";
        case Role::assistant: return "assistant";
    }
    return "?";
}

struct Message {
    Role role = Role::user;
    std::string content;
    bool operator==(const Message&) const = default;
};
using Conversation = std::vector<Message>;

struct DpoPair {
    Conversation chosen, rejected;
};

/// Parses and validates a conversation. `field` names it in messages, e.g. "\"conversations\"" gives
/// `field "conversations"[2].content: expected a string, found number`. Throws RecordError.
inline Conversation parse_conversation(const nlohmann::json& value, std::string_view field) {
    const std::string f = "field " + std::string(field);
    if (!value.is_array()) detail::record_fail(f, ": expected an array of messages, found ", value.type_name());
    if (value.empty()) detail::record_fail(f, ": the conversation is empty");
    Conversation c;
    c.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
        const nlohmann::json& m = value[i];
        const std::string at = f + "[" + std::to_string(i) + "]";
        if (!m.is_object()) detail::record_fail(at, ": expected an object with \"role\" and \"content\", found ", m.type_name());
        const std::string& role = json_string(json_field(m, "role", at), at + ".role");
        Message msg;
        if (role == "system") {
            msg.role = Role::system;
        } else if (role == "user") {
            msg.role = Role::user;
        } else if (role == "assistant") {
            msg.role = Role::assistant;
        } else {
            detail::record_fail(at, ".role: unknown role \"", utf8_prefix(role, 40),
                                "\" (expected system, user or assistant)");
        }
        msg.content = json_string(json_field(m, "content", at), at + ".content");
        // Order: [system] user assistant user assistant ...
        const bool has_system = !c.empty() && c[0].role == Role::system;
        if (msg.role == Role::system) {
            if (i != 0) detail::record_fail(at, ".role: \"system\" is only allowed as the first message");
        } else {
            Role expected = (i - (has_system ? 1 : 0)) % 2 == 0 ? Role::user : Role::assistant;
            if (msg.role != expected) {
                const char* context = i == 0                  ? " first"
                                      : has_system && i == 1  ? " after the system message"
                                      : expected == Role::user ? " after an assistant message"
                                                               : " after a user message";
                detail::record_fail(at, ".role: expected \"", role_name(expected), "\"", context, ", found \"", role, "\"");
            }
        }
        c.push_back(std::move(msg));
    }
    if (c.back().role != Role::assistant)
        detail::record_fail(f, ": the last message must be from the assistant, found \"", role_name(c.back().role), "\"");
    return c;
}

/// An SFT record: {"conversations": [...]}.
inline Conversation parse_sft_record(const nlohmann::json& record) {
    return parse_conversation(json_field(record, "conversations"), "\"conversations\"");
}

/// A DPO record: {"chosen": [...], "rejected": [...]} sharing the prompt (all but the last message).
inline DpoPair parse_dpo_record(const nlohmann::json& record) {
    DpoPair p;
    p.chosen = parse_conversation(json_field(record, "chosen"), "\"chosen\"");
    p.rejected = parse_conversation(json_field(record, "rejected"), "\"rejected\"");
    if (p.chosen.size() != p.rejected.size())
        detail::record_fail("fields \"chosen\" and \"rejected\" must share the prompt: they have ", p.chosen.size(), " and ",
                            p.rejected.size(), " messages");
    for (std::size_t i = 0; i + 1 < p.chosen.size(); ++i)
        if (!(p.chosen[i] == p.rejected[i]))
            detail::record_fail("fields \"chosen\" and \"rejected\" must share the prompt: message ", i, " differs");
    return p;
}

/// The conversation as ChatML text (what the token ids decode to).
inline std::string render_chatml(const Conversation& c) {
    std::string s;
    for (const Message& m : c) {
        s += "<|im_start|>";
        s += role_name(m.role);
        s += '\n';
        s += m.content;
        s += "<|im_end|>\n";
    }
    return s;
}

/// The messages of a rendered ChatML prompt that ends with the open header of the reply,
/// "<|im_start|>assistant\n" (what GRPO's Completion::prompt holds: the prompt's ids decoded), so that
/// render_chatml(result) + "<|im_start|>assistant\n" == text. A message ends at "<|im_end|>\n" followed by
/// the next "<|im_start|>": the decoded text of a message that itself spells that sequence cannot be told
/// apart from a message boundary (the ids were; the text is not). Throws Error naming the byte offset.
inline Conversation parse_chatml_prompt(std::string_view text) {
    constexpr std::string_view start = "<|im_start|>", boundary = "<|im_end|>\n<|im_start|>",
                               open = "<|im_start|>assistant\n";
    auto fail = [&](std::size_t at, const char* what) {
        detail::fail("parse_chatml_prompt: at byte ", at, " of a ", text.size(), "-byte prompt: ", what, " (prompt starts \"",
                     utf8_prefix(text, 60), "\")");
    };
    if (!text.starts_with(start)) fail(0, "expected \"<|im_start|>\"");
    if (!text.ends_with(open)) fail(text.size(), "expected the prompt to end with \"<|im_start|>assistant\\n\"");
    Conversation c;
    std::size_t at = start.size();  // just after a message's <|im_start|>
    while (at < text.size()) {
        const std::size_t nl = text.find('\n', at);
        if (nl == std::string_view::npos) fail(at, "a role header without its line break");
        const std::string_view role = text.substr(at, nl - at);
        if (nl + 1 == text.size()) break;  // the open assistant header
        Message m;
        if (role == "system")
            m.role = Role::system;
        else if (role == "user")
            m.role = Role::user;
        else if (role == "assistant")
            m.role = Role::assistant;
        else
            fail(at, "unknown role (expected system, user or assistant)");
        const std::size_t end = text.find(boundary, nl + 1);
        if (end == std::string_view::npos) fail(nl + 1, "a message without \"<|im_end|>\\n\" before the next \"<|im_start|>\"");
        m.content = std::string(text.substr(nl + 1, end - nl - 1));
        c.push_back(std::move(m));
        at = end + boundary.size();
    }
    if (c.empty()) fail(0, "no message before the open assistant header");
    return c;
}

// ---- tokens -------------------------------------------------------------------------------------------

/// One training sequence in the shifted convention above: both vectors have T entries.
struct ChatTokens {
    std::vector<std::int32_t> inputs;   // (T) ids, pad after the sequence
    std::vector<std::int32_t> targets;  // (T) next id where supervised, ignore_index elsewhere
    int length = 0;                     // real (non-pad) positions of inputs: min(L, T)
    int supervised = 0;                 // targets that are not ignore_index
    bool truncated = false;             // the sequence had more than T + 1 tokens
};

/// The training view of ids (L) with supervision flags (L): writes inputs (T) and targets (T) as described
/// at the top of this file. Returns the number of supervised targets.
inline int shift_sequence(std::span<const std::int32_t> ids, std::span<const std::uint8_t> supervised, int T,
                          std::int32_t pad_id, std::int32_t* inputs, std::int32_t* targets) {
    MT_CHECK(ids.size() == supervised.size(), "shift_sequence: ", ids.size(), " ids but ", supervised.size(), " flags");
    const std::size_t L = std::min(ids.size(), std::size_t(T) + 1);
    int count = 0;
    for (std::size_t t = 0; t < std::size_t(T); ++t) {
        inputs[t] = t < L ? ids[t] : pad_id;
        const bool sup = t + 1 < L && supervised[t + 1];
        targets[t] = sup ? ids[t + 1] : ignore_index;
        count += sup;
    }
    return count;
}

inline ChatTokens make_chat_tokens(std::span<const std::int32_t> ids, std::span<const std::uint8_t> supervised, int T,
                                   std::int32_t pad_id) {
    MT_CHECK(T >= 1, "make_chat_tokens: max_seq_len must be positive, got ", T);
    ChatTokens c;
    c.inputs.resize(std::size_t(T));
    c.targets.resize(std::size_t(T));
    c.supervised = shift_sequence(ids, supervised, T, pad_id, c.inputs.data(), c.targets.data());
    c.length = int(std::min(ids.size(), std::size_t(T)));
    c.truncated = ids.size() > std::size_t(T) + 1;
    return c;
}

/// ChatML with a tokenizer: the marker ids and the encoded role headers, looked up once.
/// The special tokens ChatTemplate uses, by name.
struct ChatTokenNames {
    std::string im_start = "<|im_start|>";
    std::string im_end = "<|im_end|>";
    std::string pad = "<|endoftext|>";
};

class ChatTemplate {
public:
    using TokenNames = ChatTokenNames;

    explicit ChatTemplate(Tokenizer tokenizer, const TokenNames& names = {}) : tok_(std::move(tokenizer)) {
        auto need = [&](const std::string& name, const char* what) {
            auto id = tok_.find(name);
            MT_CHECK(id, "ChatTemplate: the tokenizer has no \"", name, "\" token (", what, ")");
            return *id;
        };
        im_start_ = need(names.im_start, "ChatML's message start");
        im_end_ = need(names.im_end, "ChatML's message end");
        pad_ = need(names.pad, "the padding token");
        for (Role r : {Role::system, Role::user, Role::assistant})
            header_[int(r)] = tok_.encode(std::string(role_name(r)) + "\n", false);
        newline_ = tok_.encode("\n", false);
    }

    /// Appends the ids of the rendered conversation to `ids` and a flag per id to `supervised` (1 for the
    /// content, <|im_end|> and "\n" of assistant messages, 0 elsewhere).
    void encode(const Conversation& c, std::vector<std::int32_t>& ids, std::vector<std::uint8_t>& supervised) const {
        for (const Message& m : c) {
            const std::uint8_t sup = m.role == Role::assistant;
            ids.push_back(im_start_);
            const auto& h = header_[int(m.role)];
            ids.insert(ids.end(), h.begin(), h.end());
            supervised.resize(ids.size(), 0);
            tok_.encode_into(m.content, ids, false);
            ids.push_back(im_end_);
            ids.insert(ids.end(), newline_.begin(), newline_.end());
            supervised.resize(ids.size(), sup);
        }
    }

    /// The conversation in the training view with T = max_seq_len positions.
    ChatTokens tokenize(const Conversation& c, int max_seq_len) const {
        std::vector<std::int32_t> ids;
        std::vector<std::uint8_t> sup;
        encode(c, ids, sup);
        return make_chat_tokens(ids, sup, max_seq_len, pad_);
    }

    std::int32_t im_start_id() const { return im_start_; }
    std::int32_t im_end_id() const { return im_end_; }
    std::int32_t pad_id() const { return pad_; }
    const Tokenizer& tokenizer() const { return tok_; }

private:
    Tokenizer tok_;
    std::int32_t im_start_ = 0, im_end_ = 0, pad_ = 0;
    std::vector<std::int32_t> header_[3];  // "system\n", "user\n", "assistant\n"
    std::vector<std::int32_t> newline_;    // "\n"
};

}  // namespace minitrain
