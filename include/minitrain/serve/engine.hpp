// minitrain/serve/engine.hpp
// The server's scheduler: one decode thread owns the model and interleaves up to `parallel` sequences,
// one token each per round; more requests wait in a bounded queue; beyond it submit() refuses (the
// server answers 503). Why this design: the model's forward pass already uses every core (OpenMP), so
// two forward passes at once would only fight over them, and the KV cache of a Transformer holds one
// length for its whole batch, so sequences at different positions cannot share a batched step. One
// thread, a cache per sequence (KV caches are small: 2 * L * KV * D * context floats, 1 MiB for
// MiniMind2-Small at 512 positions) and round-robin steps give every stream its tokens at the same pace
// and a first token after at most one round; aggregate tokens/s stays that of one stream.
//
// A Job is shared by the HTTP thread that answers and the decode thread: the decode thread appends text
// pieces and finally sets the finish reason (or an error); the HTTP thread takes the pieces as they come
// (wait_for) and cancels the job when its client goes away, which frees the slot at the next round.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sequence.hpp"

namespace minitrain::serve {

using Clock = std::chrono::steady_clock;

/// One request in the engine (see the top of the file).
class Job {
public:
    Job(std::vector<std::int32_t> prompt, GenerationParams params)
        : prompt(std::move(prompt)), params(std::move(params)), queued_at(Clock::now()) {}

    /// Waits up to `timeout` for news; appends the text pieces that arrived (one per token that made
    /// text visible) to `out`. Returns true when the job is finished (finish_reason() or error() set) and
    /// every piece has been taken.
    bool wait_for(std::vector<std::string>& out, std::chrono::milliseconds timeout) {
        std::unique_lock lock(m_);
        cv_.wait_for(lock, timeout, [&] { return !pending_.empty() || finished_; });
        for (auto& p : pending_) out.push_back(std::move(p));
        pending_.clear();
        return finished_;
    }
    /// Asks the engine to stop this job (client gone); it is dropped at the next round.
    void cancel() { cancelled_ = true; }
    bool cancelled() const { return cancelled_; }

    std::string finish_reason() const { std::lock_guard l(m_); return finish_; }
    std::string error() const { std::lock_guard l(m_); return error_; }
    int prompt_tokens() const { return int(prompt.size()); }
    int completion_tokens() const { return completion_tokens_; }
    /// Seconds from submit to the first token, and from the first token to the end (0 until known).
    double queue_and_prefill_seconds() const { return first_token_s_; }
    double decode_seconds() const { return decode_s_; }

    const std::vector<std::int32_t> prompt;
    const GenerationParams params;
    const Clock::time_point queued_at;

    // ---- the decode thread's side
    void push(const std::string& piece, int completion_tokens) {
        std::lock_guard l(m_);
        if (completion_tokens == 1) first_at_ = Clock::now(), first_token_s_ = seconds(queued_at, first_at_);
        completion_tokens_ = completion_tokens;
        if (piece.empty()) return;
        pending_.push_back(piece);
        cv_.notify_all();
    }
    void finish(std::string reason, std::string error = {}) {
        std::lock_guard l(m_);
        finish_ = std::move(reason);
        error_ = std::move(error);
        if (first_token_s_ > 0) decode_s_ = seconds(first_at_, Clock::now());
        finished_ = true;
        cv_.notify_all();
    }

private:
    static double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
    mutable std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::string> pending_;
    std::string finish_, error_;
    bool finished_ = false;
    std::atomic<bool> cancelled_ = false;
    std::atomic<int> completion_tokens_ = 0;
    Clock::time_point first_at_;
    double first_token_s_ = 0, decode_s_ = 0;
};

struct EngineOptions {
    int parallel = 8;  // sequences decoded in turn
    int queue = 32;    // requests waiting for a slot; beyond: refused
    int token_delay_ms = 0;  // a pause after each round: to watch a stream arrive, and for the tests
};

template <class Net, class B = CPU>
class Engine {
public:
    using Model = Transformer<Net, B>;

    Engine(Model& model, const Tokenizer& tok, EngineOptions o) : model_(model), tok_(tok), o_(o) {
        MT_CHECK(o.parallel >= 1, "serve: --parallel must be at least 1, got ", o.parallel);
        MT_CHECK(o.queue >= 0, "serve: --queue must be at least 0, got ", o.queue);
        thread_ = std::thread([this] { loop(); });
    }
    ~Engine() { shutdown(); }
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    /// Queues a job; nullptr when `queue` jobs already wait (or the engine is shutting down).
    std::shared_ptr<Job> submit(std::vector<std::int32_t> prompt, GenerationParams params) {
        std::lock_guard l(m_);
        if (stopping_ || int(waiting_.size()) >= o_.queue + std::max(0, o_.parallel - active_)) return nullptr;
        auto job = std::make_shared<Job>(std::move(prompt), std::move(params));
        waiting_.push_back(job);
        cv_.notify_all();
        return job;
    }

    /// Ends every job (finish reason "cancelled") and joins the decode thread. Idempotent.
    void shutdown() {
        {
            std::lock_guard l(m_);
            stopping_ = true;
            cv_.notify_all();
        }
        if (thread_.joinable()) thread_.join();
    }

    int active() const { std::lock_guard l(m_); return active_; }
    int waiting() const { std::lock_guard l(m_); return int(waiting_.size()); }
    const EngineOptions& options() const { return o_; }

private:
    struct Slot {
        std::shared_ptr<Job> job;
        std::unique_ptr<Sequence<Net, B>> seq;
    };

    void loop() {
        Graph<B> g;
        NoGrad<B> no_grad(g);
        g.set_training(false);
        std::vector<Slot> slots;
        for (;;) {
            {
                std::unique_lock lock(m_);
                cv_.wait(lock, [&] { return stopping_ || !slots.empty() || !waiting_.empty(); });
                if (stopping_) {
                    for (auto& s : slots) s.job->finish("cancelled", "the server is shutting down");
                    for (auto& j : waiting_) j->finish("cancelled", "the server is shutting down");
                    waiting_.clear();
                    active_ = 0;
                    return;
                }
                while (int(slots.size()) < o_.parallel && !waiting_.empty()) {
                    slots.push_back({std::move(waiting_.front()), nullptr});
                    waiting_.pop_front();
                }
                active_ = int(slots.size());
            }
            // One token for each sequence, in turn (the first step of a new one is its prefill).
            for (auto& s : slots) {
                if (s.job->cancelled()) continue;
                try {
                    if (!s.seq) s.seq = std::make_unique<Sequence<Net, B>>(model_, tok_, s.job->prompt, s.job->params);
                    std::string piece = s.seq->step(model_, g);
                    s.job->push(piece, s.seq->completion_tokens());
                    if (s.seq->done()) s.job->finish(s.seq->finish_reason());
                } catch (const std::exception& e) {
                    s.job->finish("error", e.what());
                }
            }
            std::erase_if(slots, [](const Slot& s) {
                if (!s.job->finish_reason().empty()) return true;
                if (!s.job->cancelled()) return false;
                s.job->finish("cancelled");  // a cancel may land at any point of the round
                return true;
            });
            {
                std::lock_guard l(m_);
                active_ = int(slots.size());
            }
            if (o_.token_delay_ms > 0 && !slots.empty())
                std::this_thread::sleep_for(std::chrono::milliseconds(o_.token_delay_ms));
        }
    }

    Model& model_;
    const Tokenizer& tok_;
    EngineOptions o_;
    mutable std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> waiting_;
    int active_ = 0;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace minitrain::serve
