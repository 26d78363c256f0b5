// minitrain/serve/protocol.hpp
// OpenAI's wire format for the server (examples/serve.cpp): request bodies of POST /v1/chat/completions
// and POST /v1/completions parsed and checked into a CompletionRequest, the response objects, the SSE
// chunks of a stream, and errors in OpenAI's shape with their HTTP status. No HTTP library here: this is
// the part tests/serve.cpp checks directly.
//
// What a request may hold (anything else is ignored, as clients send fields of newer API versions):
//   messages       chat: [{role: system|developer|user|assistant, content: string | [{type: "text", text}]}]
//   prompt         completions: a string, an array of one string, or an array of token ids
//   model          a string (any name: there is one model; the response names the served one)
//   max_tokens, max_completion_tokens   integer >= 1 (absent: until the context is full)
//   temperature    [0, 2] (default 1)          top_p (0, 1] (default 1)     top_k integer >= 0 (0: off)
//   frequency_penalty, presence_penalty  [-2, 2]: logit -= count * frequency + (count > 0) * presence,
//                  over the tokens generated so far (OpenAI's rule)
//   repetition_penalty  > 0 (MiniMind's / Hugging Face's, over prompt and reply; 1: off)
//   stop           a string or up to 4 strings: generation ends before the first occurrence
//   logit_bias     {"token id": bias in [-100, 100]} added to those logits (-100 bans a token)
//   seed           integer (absent: a fresh seed per request)   n: 1 only   stream: boolean
//   stream_options {include_usage: boolean}: a last chunk with usage and no choices
//   logprobs       false or absent only
//
// Errors: {"error": {"message", "type", "param", "code"}} with status 400 (invalid_request_error) for a
// body that is not JSON or not an object, a missing or wrongly typed field, a value out of range, an
// unknown role, a prompt longer than the context (code context_length_exceeded); the server adds 401,
// 404, 405, 411, 413 and 503 (see examples/serve.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../data/chat.hpp"
#include "../nn/generate.hpp"

namespace minitrain::serve {

using json = nlohmann::json;

// ---- errors ---------------------------------------------------------------------------------------

/// An error answered to the client: HTTP status and OpenAI's error object.
struct ApiError {
    int status = 400;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;  // "" -> null
    std::string code;   // "" -> null

    json to_json() const {
        return {{"error",
                 {{"message", message},
                  {"type", type},
                  {"param", param.empty() ? json(nullptr) : json(param)},
                  {"code", code.empty() ? json(nullptr) : json(code)}}}};
    }
};

/// Thrown by the parsers; carries the ApiError to answer.
struct RequestError : std::exception {
    ApiError error;
    explicit RequestError(ApiError e) : error(std::move(e)) {}
    const char* what() const noexcept override { return error.message.c_str(); }
};

[[noreturn]] inline void reject(std::string param, std::string message, std::string code = "invalid_value",
                                int status = 400) {
    throw RequestError(ApiError{status, std::move(message), "invalid_request_error", std::move(param), std::move(code)});
}

// ---- requests -------------------------------------------------------------------------------------

enum class Endpoint { chat, completion };

/// A checked request: what the engine needs to generate, and how to answer.
struct CompletionRequest {
    Endpoint endpoint = Endpoint::chat;
    Conversation messages;              // chat
    std::string prompt_text;            // completions (when given as text)
    std::vector<std::int32_t> prompt_ids;  // completions given as token ids; else filled by render()
    std::optional<int> max_tokens;
    SampleOptions sample;               // temperature, top_k, top_p, repetition_penalty, seed
    bool seed_given = false;
    double frequency_penalty = 0, presence_penalty = 0;
    std::vector<std::string> stop;
    std::vector<std::pair<std::int32_t, float>> logit_bias;
    bool stream = false, include_usage = false;
    std::string model;
};

namespace detail {

inline const char* json_type(const json& v) {
    if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
    if (v.is_number_float()) return "number";
    return v.type_name();
}

[[noreturn]] inline void wrong_type(const std::string& param, const char* expected, const json& v) {
    reject(param, "Invalid type for '" + param + "': expected " + expected + ", but got " + json_type(v) + ".",
           "invalid_type");
}

/// A number field in [lo, hi]; absent or null: nullopt.
inline std::optional<double> number(const json& body, const char* key, double lo, double hi, bool lo_open = false) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) wrong_type(key, "a number", *it);
    const double v = it->get<double>();
    if (!std::isfinite(v) || v > hi || v < lo || (lo_open && v == lo))
        reject(key, "Invalid value for '" + std::string(key) + "': " + it->dump() + " is not in " + (lo_open ? "(" : "[") +
                        json(lo).dump() + ", " + json(hi).dump() + "].");
    return v;
}

/// An integer field >= lo; absent or null: nullopt. 2.0 counts as an integer (JSON has one number type).
inline std::optional<std::int64_t> integer(const json& body, const char* key, std::int64_t lo) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) wrong_type(key, "an integer", *it);
    std::int64_t v = 0;
    if (it->is_number_float()) {
        const double d = it->get<double>();
        if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) wrong_type(key, "an integer", *it);
        v = std::int64_t(d);
    } else if (it->is_number_unsigned()) {
        const auto u = it->get<std::uint64_t>();
        v = u > std::uint64_t(std::numeric_limits<std::int64_t>::max()) ? std::numeric_limits<std::int64_t>::max()
                                                                        : std::int64_t(u);
    } else {
        v = it->get<std::int64_t>();
    }
    if (v < lo) reject(key, "Invalid value for '" + std::string(key) + "': " + it->dump() + " is less than the minimum of " +
                               std::to_string(lo) + ".");
    return v;
}

inline std::optional<bool> boolean(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) wrong_type(key, "a boolean", *it);
    return it->get<bool>();
}

/// A message's content: a string, or an array of {type: "text", text} parts (joined).
inline std::string content_text(const json& c, const std::string& param) {
    if (c.is_string()) return c.get<std::string>();
    if (!c.is_array()) wrong_type(param, "a string or an array of text parts", c);
    std::string out;
    for (std::size_t i = 0; i < c.size(); ++i) {
        const json& part = c[i];
        const std::string p = param + "[" + std::to_string(i) + "]";
        if (!part.is_object()) wrong_type(p, "an object", part);
        auto type = part.find("type");
        if (type == part.end() || !type->is_string()) reject(p + ".type", "Missing required parameter: '" + p + ".type'.",
                                                             "missing_required_parameter");
        if (*type != "text") reject(p + ".type", "Invalid value: " + type->dump() + ". This model reads text parts only.");
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) wrong_type(p + ".text", "a string", text == part.end() ? json() : *text);
        out += text->get<std::string>();
    }
    return out;
}

inline Conversation parse_messages(const json& body) {
    auto it = body.find("messages");
    if (it == body.end() || it->is_null()) reject("messages", "Missing required parameter: 'messages'.", "missing_required_parameter");
    if (!it->is_array()) wrong_type("messages", "an array", *it);
    if (it->empty()) reject("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.", "empty_array");
    Conversation c;
    for (std::size_t i = 0; i < it->size(); ++i) {
        const json& m = (*it)[i];
        const std::string p = "messages[" + std::to_string(i) + "]";
        if (!m.is_object()) wrong_type(p, "an object", m);
        auto role = m.find("role");
        if (role == m.end() || role->is_null()) reject(p + ".role", "Missing required parameter: '" + p + ".role'.", "missing_required_parameter");
        if (!role->is_string()) wrong_type(p + ".role", "a string", *role);
        const std::string r = role->get<std::string>();
        Message msg;
        if (r == "system" || r == "developer") msg.role = Role::system;
        else if (r == "user") msg.role = Role::user;
        else if (r == "assistant") msg.role = Role::assistant;
        else reject(p + ".role", "Invalid value: '" + r + "'. Supported values are: 'system', 'developer', 'user' and 'assistant'.");
        auto content = m.find("content");
        if (content == m.end() || content->is_null()) {
            if (msg.role != Role::assistant) reject(p + ".content", "Missing required parameter: '" + p + ".content'.", "missing_required_parameter");
        } else {
            msg.content = content_text(*content, p + ".content");
        }
        c.push_back(std::move(msg));
    }
    return c;
}

}  // namespace detail

/// Parses and checks a request body for `endpoint`; throws RequestError with the ApiError to answer.
inline CompletionRequest parse_request(std::string_view body_text, Endpoint endpoint) {
    json body;
    try {
        body = json::parse(body_text);
    } catch (const json::parse_error& e) {
        reject("", std::string("We could not parse the JSON body of your request: ") + e.what(), "invalid_json");
    }
    if (!body.is_object()) reject("", std::string("The request body must be a JSON object, got ") + detail::json_type(body) + ".", "invalid_type");

    CompletionRequest r;
    r.endpoint = endpoint;
    if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
        if (!it->is_string()) detail::wrong_type("model", "a string", *it);
        r.model = it->get<std::string>();
    }
    if (endpoint == Endpoint::chat) {
        r.messages = detail::parse_messages(body);
    } else {
        auto it = body.find("prompt");
        if (it == body.end() || it->is_null()) reject("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter");
        if (it->is_string()) {
            r.prompt_text = it->get<std::string>();
        } else if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) {
            r.prompt_text = (*it)[0].get<std::string>();
        } else if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
            for (const json& t : *it) {
                if (!t.is_number_integer() || t.get<std::int64_t>() < 0 || t.get<std::int64_t>() > std::numeric_limits<std::int32_t>::max())
                    reject("prompt", "Invalid 'prompt': an array of token ids must hold non-negative integers only.", "invalid_type");
                r.prompt_ids.push_back(std::int32_t(t.get<std::int64_t>()));
            }
        } else if (it->is_array() && it->size() > 1) {
            reject("prompt", "Invalid 'prompt': this server takes one prompt per request (n = 1).");
        } else {
            detail::wrong_type("prompt", "a string or an array of token ids", *it);
        }
        if (r.prompt_ids.empty() && r.prompt_text.empty()) reject("prompt", "Invalid 'prompt': the prompt is empty.");
    }

    auto mt = detail::integer(body, "max_tokens", 1);
    auto mct = detail::integer(body, "max_completion_tokens", 1);
    if (mct) mt = mct;
    if (mt) r.max_tokens = int(std::min<std::int64_t>(*mt, 1 << 30));
    r.sample.temperature = detail::number(body, "temperature", 0, 2).value_or(1.0);
    r.sample.top_p = detail::number(body, "top_p", 0, 1, /*lo_open=*/true).value_or(1.0);
    r.sample.top_k = int(std::min<std::int64_t>(detail::integer(body, "top_k", 0).value_or(0), 1 << 30));
    r.sample.repetition_penalty = detail::number(body, "repetition_penalty", 0, 10, /*lo_open=*/true).value_or(1.0);
    r.frequency_penalty = detail::number(body, "frequency_penalty", -2, 2).value_or(0);
    r.presence_penalty = detail::number(body, "presence_penalty", -2, 2).value_or(0);
    if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
        if (!it->is_number_integer()) detail::wrong_type("seed", "an integer", *it);
        r.sample.seed = it->is_number_unsigned() ? it->get<std::uint64_t>() : std::uint64_t(it->get<std::int64_t>());
        r.seed_given = true;
    }
    if (auto n = detail::integer(body, "n", 1); n && *n != 1)
        reject("n", "Invalid value for 'n': " + std::to_string(*n) + ". This server generates one choice per request (n = 1).");
    if (auto lp = body.find("logprobs"); lp != body.end() && !lp->is_null() && !(lp->is_boolean() && !lp->get<bool>()))
        reject("logprobs", "Invalid value for 'logprobs': log probabilities are not supported by this server.", "unsupported_value");
    if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
        if (it->is_string()) {
            r.stop.push_back(it->get<std::string>());
        } else if (it->is_array()) {
            if (it->size() > 4) reject("stop", "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length " +
                                                   std::to_string(it->size()) + " instead.", "array_above_max_length");
            for (std::size_t i = 0; i < it->size(); ++i) {
                if (!(*it)[i].is_string()) detail::wrong_type("stop[" + std::to_string(i) + "]", "a string", (*it)[i]);
                r.stop.push_back((*it)[i].get<std::string>());
            }
        } else {
            detail::wrong_type("stop", "a string or an array of strings", *it);
        }
        std::erase_if(r.stop, [](const std::string& s) { return s.empty(); });
    }
    if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) detail::wrong_type("logit_bias", "an object", *it);
        for (const auto& [key, value] : it->items()) {
            std::int64_t id = -1;
            const bool digits = !key.empty() && key.size() <= 9 && key.find_first_not_of("0123456789") == std::string::npos;
            if (digits) id = std::stoll(key);
            if (!digits) reject("logit_bias", "Invalid key in 'logit_bias': \"" + key + "\" is not a token id.");
            if (!value.is_number() || value.get<double>() < -100 || value.get<double>() > 100)
                reject("logit_bias", "Invalid value in 'logit_bias' for token " + key + ": expected a number in [-100, 100].");
            r.logit_bias.emplace_back(std::int32_t(id), value.get<float>());
        }
        std::sort(r.logit_bias.begin(), r.logit_bias.end());
    }
    r.stream = detail::boolean(body, "stream").value_or(false);
    if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) detail::wrong_type("stream_options", "an object", *it);
        if (!r.stream) reject("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
        r.include_usage = detail::boolean(*it, "include_usage").value_or(false);
    }
    return r;
}

// ---- prompts --------------------------------------------------------------------------------------

/// The prompt ids of a chat request as ChatSession renders a turn: the ChatML conversation, then
/// <|im_start|>assistant\n. Completions: the text encoded with special tokens allowed (so a prompt can be
/// hand-written ChatML), or the ids as given (each must be in the vocabulary).
inline std::vector<std::int32_t> render_prompt(const CompletionRequest& r, const ChatTemplate& chat) {
    const Tokenizer& tok = chat.tokenizer();
    for (const auto& [id, bias] : r.logit_bias)
        if (id >= tok.vocab_size())
            reject("logit_bias", "Invalid key in 'logit_bias': token id " + std::to_string(id) + " is outside the vocabulary of " +
                                     std::to_string(tok.vocab_size()) + ".");
    if (r.endpoint == Endpoint::completion) {
        if (!r.prompt_ids.empty()) {
            for (auto t : r.prompt_ids)
                if (t >= tok.vocab_size())
                    reject("prompt", "Invalid 'prompt': token id " + std::to_string(t) + " is outside the vocabulary of " +
                                         std::to_string(tok.vocab_size()) + ".");
            return r.prompt_ids;
        }
        return tok.encode(r.prompt_text, /*allow_special=*/true);
    }
    std::vector<std::int32_t> ids;
    std::vector<std::uint8_t> sup;
    chat.encode(r.messages, ids, sup);
    ids.push_back(chat.im_start_id());
    tok.encode_into("assistant\n", ids, false);
    return ids;
}

/// The context rule: the prompt must leave room for at least one new token (else 400,
/// context_length_exceeded); max_tokens beyond the context is cut to what fits (finish_reason "length").
/// Returns the number of tokens that may be generated.
inline int check_context(int prompt_tokens, std::optional<int> max_tokens, int context) {
    if (prompt_tokens >= context)
        reject("messages", "This model's maximum context length is " + std::to_string(context) + " tokens. However, your messages resulted in " +
                               std::to_string(prompt_tokens) + " tokens. Please reduce the length of the messages.",
               "context_length_exceeded");
    const int room = context - prompt_tokens;
    return max_tokens ? std::min(*max_tokens, room) : room;
}

// ---- responses ------------------------------------------------------------------------------------

struct Usage {
    int prompt_tokens = 0, completion_tokens = 0;
    json to_json() const {
        return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens}};
    }
};

/// What every response object of one request shares.
struct ResponseHead {
    std::string id;      // chatcmpl-... / cmpl-...
    std::int64_t created = 0;
    std::string model;
};

inline const char* system_fingerprint = "minitrain-0.1";

/// The non-streaming answer.
inline json completion_response(Endpoint e, const ResponseHead& h, const std::string& text, const std::string& finish,
                                const Usage& u) {
    json choice = e == Endpoint::chat
                      ? json{{"index", 0},
                             {"message", {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}}},
                             {"logprobs", nullptr},
                             {"finish_reason", finish}}
                      : json{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish}};
    return {{"id", h.id},
            {"object", e == Endpoint::chat ? "chat.completion" : "text_completion"},
            {"created", h.created},
            {"model", h.model},
            {"system_fingerprint", system_fingerprint},
            {"choices", json::array({choice})},
            {"usage", u.to_json()}};
}

/// One SSE event: "data: <json>\n\n".
inline std::string sse(const json& j) { return "data: " + j.dump() + "\n\n"; }
inline const std::string sse_done = "data: [DONE]\n\n";

/// A streamed chunk. Chat: `delta` is {"role": "assistant", "content": ""} first, then {"content": piece},
/// then {} with the finish_reason. Completions: the piece is the choice's "text". With include_usage every
/// chunk carries "usage": null, and a last chunk has no choices and the usage.
inline json stream_chunk(Endpoint e, const ResponseHead& h, const json& delta_or_text, const std::string& finish,
                         bool include_usage) {
    json choice = e == Endpoint::chat ? json{{"index", 0}, {"delta", delta_or_text}, {"logprobs", nullptr}}
                                      : json{{"index", 0}, {"text", delta_or_text}, {"logprobs", nullptr}};
    choice["finish_reason"] = finish.empty() ? json(nullptr) : json(finish);
    json c = {{"id", h.id},
              {"object", e == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
              {"created", h.created},
              {"model", h.model},
              {"system_fingerprint", system_fingerprint},
              {"choices", json::array({choice})}};
    if (include_usage) c["usage"] = nullptr;
    return c;
}

inline json usage_chunk(Endpoint e, const ResponseHead& h, const Usage& u) {
    return {{"id", h.id},
            {"object", e == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
            {"created", h.created},
            {"model", h.model},
            {"system_fingerprint", system_fingerprint},
            {"choices", json::array()},
            {"usage", u.to_json()}};
}

inline json models_response(const std::string& id, std::int64_t created) {
    return {{"object", "list"},
            {"data", json::array({{{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "minitrain"}}})}};
}

}  // namespace minitrain::serve
