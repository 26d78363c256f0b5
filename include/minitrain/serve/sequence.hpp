// minitrain/serve/sequence.hpp
// One request's generation, a token at a time, so that an engine can interleave many (serve/engine.hpp).
// The same steps as generate() (nn/generate.hpp): prefill the prompt into this sequence's own KV cache,
// then one single-position forward per token, the Sampler with (seed, counter) streams; on top of it
// OpenAI's frequency / presence penalties, stop tokens and stop sequences, and text pieces that never
// split a UTF-8 character nor show the start of a stop sequence that may still complete.
//
// With the penalties at 0, step() samples exactly the tokens generate() samples for the same prompt and
// options (the tests check it), so a server reply equals `chat --prompts` for the same seed.
//
// Text: after each token the reply's text is decoded; of its complete characters, the part after what
// was already handed out is handed out, except a tail that is a prefix of a stop sequence (held back
// until it either completes the stop, which is then cut with everything after it, or stops matching).
// The stop tokens themselves (<|im_end|>, <|endoftext|>) end the reply without being part of its text.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../nn/chat.hpp"
#include "../nn/generate.hpp"
#include "../nn/transformer.hpp"

namespace minitrain::serve {

/// What a sequence needs besides the prompt.
struct GenerationParams {
    SampleOptions sample;           // max_new_tokens: the most tokens to generate (already cut to the context)
    double frequency_penalty = 0, presence_penalty = 0;
    std::vector<std::string> stop;  // stop sequences (text)
    std::vector<std::int32_t> stop_tokens;  // e.g. <|im_end|>, <|endoftext|>
    std::vector<std::pair<std::int32_t, float>> logit_bias;  // added to those logits first (ids < vocabulary)
};

/// The length of the longest suffix of `text` that is a proper prefix of one of `stops`.
inline std::size_t stop_prefix_tail(std::string_view text, const std::vector<std::string>& stops) {
    std::size_t best = 0;
    for (const std::string& s : stops)
        for (std::size_t k = std::min(s.size() - 1, text.size()); k > best; --k)
            if (text.substr(text.size() - k) == std::string_view(s).substr(0, k)) {
                best = k;
                break;
            }
    return best;
}

template <class Net, class B = CPU>
class Sequence {
public:
    using Model = Transformer<Net, B>;

    Sequence(const Model& model, const Tokenizer& tok, std::vector<std::int32_t> prompt, GenerationParams p)
        : tok_(tok), p_(std::move(p)), sampler_(p_.sample), context_(std::move(prompt)) {
        MT_CHECK(!context_.empty(), "serve: the prompt is empty");
        const int ctx = model.config().max_seq_len;
        MT_CHECK(int(context_.size()) < ctx, "serve: the prompt has ", context_.size(), " tokens, the context is ", ctx);
        prompt_tokens_ = int(context_.size());
        total_ = std::min<int>(ctx, prompt_tokens_ + std::max(0, p_.sample.max_new_tokens));
        cache_.emplace(model.make_cache(1, total_));
        ids_.emplace(Shape{1, total_}, DType::i32);
        row_.resize(std::size_t(model.config().vocab_size));
        if (p_.frequency_penalty != 0 || p_.presence_penalty != 0) counts_.assign(row_.size(), 0);
        if (total_ <= prompt_tokens_) finish_ = "length";
    }

    /// Generates one token (the first call also runs the prompt); returns the newly visible text.
    /// After it, done() may be true: finish_reason() is "stop" or "length".
    std::string step(Model& model, Graph<B>& g) {
        if (done()) return {};
        const std::int64_t n = std::int64_t(context_.size()) - fed_;
        Tensor step_ids = ids_->tensor().view(Shape{total_}).rows(0, n).view(Shape{1, n});
        B::from_host(step_ids, context_.data() + fed_);
        g.reset();
        auto res = model.forward(g, step_ids, nullptr, &*cache_);
        fed_ = std::int64_t(context_.size());
        const int V = int(row_.size());
        B::to_host(row_.data(), res.logits->data.view(Shape{n, V}).rows(n - 1, n));
        for (const auto& [id, bias] : p_.logit_bias)
            if (id >= 0 && id < V) row_[std::size_t(id)] += bias;
        if (!counts_.empty())
            for (int v = 0; v < V; ++v)
                if (int c = counts_[std::size_t(v)]) row_[std::size_t(v)] -= float(c * p_.frequency_penalty + p_.presence_penalty);
        const std::int32_t t = sampler_.sample(row_, context_);
        context_.push_back(t);
        ++generated_;
        if (!counts_.empty() && t >= 0 && t < V) ++counts_[std::size_t(t)];

        if (std::find(p_.stop_tokens.begin(), p_.stop_tokens.end(), t) != p_.stop_tokens.end()) {
            finish_ = "stop";
            return flush_all();
        }
        reply_ids_.push_back(t);
        std::string piece = advance();
        if (!done() && int(context_.size()) >= total_) {
            finish_ = "length";
            piece += flush_all();
        }
        return piece;
    }

    bool done() const { return !finish_.empty(); }
    const std::string& finish_reason() const { return finish_; }
    /// The reply's text so far (what was handed out; all of it once done).
    const std::string& text() const { return text_; }
    int prompt_tokens() const { return prompt_tokens_; }
    /// Tokens sampled, the stop token included.
    int completion_tokens() const { return generated_; }
    /// The ids sampled (stop token included), as generate() returns them.
    std::vector<std::int32_t> generated_ids() const {
        return {context_.begin() + prompt_tokens_, context_.end()};
    }

private:
    /// The text of the reply so far: cut at a stop sequence (then done), else everything up to the
    /// last complete character minus a possible stop prefix.
    std::string advance() {
        const std::string full = tok_.decode(reply_ids_);
        const std::size_t from = text_.size() > 64 ? text_.size() - 64 : 0;  // a stop ending now starts near the end
        std::size_t cut = std::string::npos;
        for (const std::string& s : p_.stop) {
            std::size_t at = full.find(s, from > s.size() ? from - s.size() : 0);
            if (at != std::string::npos) cut = std::min(cut, at);
        }
        if (cut != std::string::npos) {
            finish_ = "stop";
            return emit(full.substr(0, std::max(cut, text_.size())));
        }
        std::size_t upto = utf8_complete_prefix(full);
        upto -= stop_prefix_tail(std::string_view(full).substr(0, upto), p_.stop);
        return emit(full.substr(0, std::max(upto, text_.size())));
    }
    /// At the end (no stop sequence found): everything, incomplete bytes included.
    std::string flush_all() {
        const std::string full = tok_.decode(reply_ids_);
        for (const std::string& s : p_.stop)
            if (auto at = full.find(s); at != std::string::npos) return emit(full.substr(0, std::max(at, text_.size())));
        return emit(full);
    }
    std::string emit(const std::string& visible) {
        std::string piece = visible.substr(std::min(text_.size(), visible.size()));
        text_ = visible.size() >= text_.size() ? visible : text_;
        return piece;
    }

    const Tokenizer& tok_;
    GenerationParams p_;
    Sampler sampler_;
    std::vector<std::int32_t> context_;    // prompt + generated
    std::vector<std::int32_t> reply_ids_;  // generated, stop token excluded
    std::vector<int> counts_;              // (V) generated counts, for the penalties
    std::vector<float> row_;               // (V) logits of the last position
    std::optional<KVCache<B>> cache_;
    std::optional<Buffer<B>> ids_;         // (1, total) staging for the ids fed
    std::int64_t fed_ = 0;
    int prompt_tokens_ = 0, total_ = 0, generated_ = 0;
    std::string text_, finish_;
};

}  // namespace minitrain::serve
