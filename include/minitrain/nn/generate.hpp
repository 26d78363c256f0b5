// minitrain/nn/generate.hpp
// Sampling and incremental decoding. The prompt is run once through the model (prefill), filling the
// KV cache; each new token then costs one single-position forward pass over the cache. generate_group
// decodes several continuations of one prompt together (batch G through one cache: RL rollouts).
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <span>
#include <vector>

#include "transformer.hpp"

namespace minitrain {

struct SampleOptions {
    double temperature = 1.0;         // 0: greedy (argmax)
    int top_k = 0;                    // 0: no top-k cut
    double top_p = 1.0;               // 1: no nucleus cut
    double repetition_penalty = 1.0;  // > 1 discourages tokens already in the context (CTRL / HF rule)
    std::uint64_t seed = 0;
    int max_new_tokens = 64;
    int eos_token = -1;  // stop after emitting it; -1: never
};

/// Turns a row of logits into a token. Keeps its buffers between calls; its stream is (seed, counter).
class Sampler {
public:
    explicit Sampler(const SampleOptions& o) : o_(o), rng_{o.seed, 0} {
        MT_CHECK(o.temperature >= 0, "sampling: temperature must be >= 0, got ", o.temperature);
        MT_CHECK(o.top_k >= 0, "sampling: top_k must be >= 0, got ", o.top_k);
        MT_CHECK(o.top_p > 0 && o.top_p <= 1, "sampling: top_p must be in (0, 1], got ", o.top_p);
        MT_CHECK(o.repetition_penalty > 0, "sampling: repetition_penalty must be > 0, got ", o.repetition_penalty);
    }

    /// logits: one row (V), modified in place; context: the tokens so far (for the repetition penalty).
    std::int32_t sample(std::span<float> logits, std::span<const std::int32_t> context) {
        const int V = int(logits.size());
        if (o_.repetition_penalty != 1.0) {
            seen_.assign(std::size_t(V), 0);
            for (auto t : context)
                if (t >= 0 && t < V && !seen_[std::size_t(t)]) {
                    seen_[std::size_t(t)] = 1;
                    float& l = logits[std::size_t(t)];
                    l = l < 0 ? float(l * o_.repetition_penalty) : float(l / o_.repetition_penalty);
                }
        }
        if (o_.temperature == 0)
            return std::int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

        order_.resize(std::size_t(V));
        std::iota(order_.begin(), order_.end(), 0);
        auto by_logit = [&](int a, int b) { return logits[std::size_t(a)] > logits[std::size_t(b)] || (logits[std::size_t(a)] == logits[std::size_t(b)] && a < b); };
        int keep = o_.top_k > 0 ? std::min(o_.top_k, V) : V;
        std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);

        // Softmax over the kept candidates at the given temperature.
        probs_.resize(std::size_t(keep));
        const double top = logits[std::size_t(order_[0])];
        double sum = 0;
        for (int i = 0; i < keep; ++i) sum += probs_[std::size_t(i)] = std::exp((logits[std::size_t(order_[std::size_t(i)])] - top) / o_.temperature);
        // Nucleus: the smallest prefix whose probability reaches top_p (at least one token).
        if (o_.top_p < 1) {
            double cum = 0;
            int n = 0;
            while (n < keep) {
                cum += probs_[std::size_t(n++)] / sum;
                if (cum >= o_.top_p) break;
            }
            keep = n;
            sum = 0;
            for (int i = 0; i < keep; ++i) sum += probs_[std::size_t(i)];
        }
        double r = rng_.uniform() * sum;
        for (int i = 0; i < keep; ++i) {
            r -= probs_[std::size_t(i)];
            if (r < 0) return order_[std::size_t(i)];
        }
        return order_[std::size_t(keep - 1)];
    }

    Rng& rng() { return rng_; }

private:
    SampleOptions o_;
    Rng rng_;
    std::vector<int> order_;
    std::vector<double> probs_;
    std::vector<char> seen_;
};

/// Generates up to o.max_new_tokens after `prompt` (batch 1). on_token(t) is called as each token is
/// produced (streaming); returning false stops early. Returns the new tokens only.
template <class Net, class B>
std::vector<std::int32_t> generate(Transformer<Net, B>& model, std::span<const std::int32_t> prompt,
                                   const SampleOptions& o,
                                   const std::function<bool(std::int32_t)>& on_token = {}) {
    MT_CHECK(!prompt.empty(), "generate: the prompt is empty");
    const int V = model.config().vocab_size;
    const int total = std::min<int>(model.config().max_seq_len, int(prompt.size()) + o.max_new_tokens);
    MT_CHECK(int(prompt.size()) < model.config().max_seq_len, "generate: the prompt has ", prompt.size(),
             " tokens, max_seq_len is ", model.config().max_seq_len);
    Sampler sampler(o);
    auto cache = model.make_cache(1, total);
    Graph<B> g;
    NoGrad<B> no_grad(g);
    g.set_training(false);
    std::vector<std::int32_t> context(prompt.begin(), prompt.end()), out;
    std::vector<float> row(static_cast<std::size_t>(V));
    Buffer<B> ids(Shape{1, total}, DType::i32);

    std::int64_t fed = 0;  // context tokens already in the cache
    while (int(context.size()) < total) {
        const std::int64_t n = std::int64_t(context.size()) - fed;
        Tensor step_ids = ids.tensor().view(Shape{total}).rows(0, n).view(Shape{1, n});
        B::from_host(step_ids, context.data() + fed);
        g.reset();
        auto res = model.forward(g, step_ids, nullptr, &cache);
        fed = std::int64_t(context.size());
        B::to_host(row.data(), res.logits->data.view(Shape{n, V}).rows(n - 1, n));
        std::int32_t t = sampler.sample(row, context);
        context.push_back(t);
        out.push_back(t);
        if (on_token && !on_token(t)) break;
        if (t == o.eos_token) break;
    }
    return out;
}

/// G continuations of one prompt decoded together: one KV cache of batch G, so each new position costs one
/// (G, 1) forward instead of G (1, 1) ones. Row j samples with os[j] (its own seed and Sampler: the stream
/// generate() with os[j] would use) and stops at its eos token, while the others go on; every os[j] must
/// give the same max_new_tokens. Returns each row's new tokens: the tokens of generate(model, prompt, os[j])
/// whenever the batch-G forward gives that row the logits the batch-1 one does (the tests check greedy rows).
template <class Net, class B>
std::vector<std::vector<std::int32_t>> generate_group(Transformer<Net, B>& model, std::span<const std::int32_t> prompt,
                                                      std::span<const SampleOptions> os) {
    MT_CHECK(!prompt.empty(), "generate_group: the prompt is empty");
    MT_CHECK(!os.empty(), "generate_group: no sample options (one per continuation)");
    for (const SampleOptions& o : os)
        MT_CHECK(o.max_new_tokens == os[0].max_new_tokens, "generate_group: every row needs the same max_new_tokens, found ",
                 o.max_new_tokens, " and ", os[0].max_new_tokens);
    MT_CHECK(int(prompt.size()) < model.config().max_seq_len, "generate_group: the prompt has ", prompt.size(),
             " tokens, max_seq_len is ", model.config().max_seq_len);
    const int G = int(os.size()), V = model.config().vocab_size;
    const int total = std::min<int>(model.config().max_seq_len, int(prompt.size()) + os[0].max_new_tokens);
    std::vector<Sampler> samplers;
    samplers.reserve(std::size_t(G));
    for (const SampleOptions& o : os) samplers.emplace_back(o);
    auto cache = model.make_cache(G, total);
    Graph<B> g;
    NoGrad<B> no_grad(g);
    g.set_training(false);
    std::vector<std::vector<std::int32_t>> context(std::size_t(G), std::vector<std::int32_t>(prompt.begin(), prompt.end()));
    std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(G));
    std::vector<char> done(static_cast<std::size_t>(G), 0);
    std::vector<float> logits;                       // (G, n, V) host copy of one step
    std::vector<std::int32_t> step(std::size_t(G) * prompt.size());  // (G, n) ids fed this step
    Buffer<B> ids(Shape{G, total}, DType::i32);

    // Every row has the same length (finished rows are fed their last token and ignored), so one cache
    // position counter serves all: step 0 feeds the prompt to every row, each later step one token per row.
    std::int64_t len = std::int64_t(prompt.size()), fed = 0;
    int live = G;
    while (len < total && live > 0) {
        const std::int64_t n = len - fed;
        step.resize(std::size_t(G * n));
        for (int j = 0; j < G; ++j)
            std::copy(context[std::size_t(j)].begin() + fed, context[std::size_t(j)].begin() + len, step.begin() + j * n);
        Tensor step_ids = ids.tensor().view(Shape{std::int64_t(G) * total}).rows(0, G * n).view(Shape{G, n});
        B::from_host(step_ids, step.data());
        g.reset();
        auto res = model.forward(g, step_ids, nullptr, &cache);
        fed = len;
        logits.resize(std::size_t(G * n * V));
        B::to_host(logits.data(), res.logits->data);
        for (int j = 0; j < G; ++j) {
            auto& ctx = context[std::size_t(j)];
            if (done[std::size_t(j)]) {
                ctx.push_back(ctx.back());  // keeps the rows aligned; never returned
                continue;
            }
            std::span<float> row(logits.data() + (std::int64_t(j) * n + n - 1) * V, std::size_t(V));
            const std::int32_t t = samplers[std::size_t(j)].sample(row, ctx);
            ctx.push_back(t);
            out[std::size_t(j)].push_back(t);
            if (t == os[std::size_t(j)].eos_token) done[std::size_t(j)] = 1, --live;
        }
        ++len;
    }
    return out;
}

}  // namespace minitrain
