// serve: an OpenAI-compatible HTTP server for a trained model, with a chat page at /.
//
//   serve --checkpoint runs/sft/final [--adapter runs/lora/final] [--port 8998] [--api_key KEY]
//
// Routes: POST /v1/chat/completions and POST /v1/completions (stream: true gives server-sent events, as
// OpenAI's API does), GET /v1/models (and /v1/models/{id}), GET /health, GET / (the chat page, compiled
// in: include/minitrain/serve/chat_page.hpp). Request fields and errors: include/minitrain/serve/protocol.hpp.
//
// Concurrency (include/minitrain/serve/engine.hpp): one decode thread interleaves up to --parallel
// sequences a token at a time, each with its own KV cache; up to --queue more wait; beyond that a request
// gets 503. Each request in flight holds one HTTP thread (--parallel + --queue + 4 threads). A client that
// disconnects is noticed at its next token (or within 50 ms while it waits) and its sequence is dropped.
//
// Errors in OpenAI's shape {"error": {"message", "type", "param", "code"}}: 400 bad JSON / field / value /
// prompt longer than the context (the prompt must leave room for one token; max_tokens is cut to the
// context, finish_reason "length"), 401 wrong or missing API key (with --api_key; / and /health stay
// open), 404 unknown route or model, 405 wrong method, 411 POST without a length, 413 body above
// --max_body_bytes, 503 queue full, 500 anything unexpected. SIGINT / SIGTERM: stop accepting, end the
// streams in flight, exit 0. One log line per request on stderr.
//
// Built only when Debian's libcpp-httplib-dev is installed (cmake/setup.sh installs it).
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include <minitrain/minitrain.hpp>
#include <minitrain/nn/chat.hpp>
#include <minitrain/serve/serve.hpp>
#include <minitrain/util/flags.hpp>
#include <minitrain/util/presets.hpp>

// After Eigen: httplib.h brings <resolv.h>, whose `_res` macro breaks Eigen's parameters of that name.
#include <httplib.h>

using namespace minitrain;
using namespace minitrain::serve;
namespace fs = std::filesystem;

namespace {

struct Options {
    fs::path checkpoint, tokenizer, adapter;
    std::string host = "127.0.0.1", api_key, model_name;
    int port = 8998, parallel = 8, queue = 32, threads = 0, token_delay_ms = 0;
    std::int64_t max_body_bytes = 1 << 20;
};

/// What the log line of the request being answered on this thread says (set by the handlers).
struct RequestLog {
    Clock::time_point start;
    int prompt = -1, completion = -1;
    double first_token_s = 0, decode_s = 0;
    bool stream = false;
    std::string note;
};
thread_local RequestLog request_log;

std::int64_t unix_now() { return std::int64_t(std::time(nullptr)); }

void send_json(httplib::Response& res, int status, const json& j) {
    res.status = status;
    res.set_content(j.dump(), "application/json");
}
void send_error(httplib::Response& res, const ApiError& e) {
    send_json(res, e.status, e.to_json());
    request_log.note = e.code.empty() ? e.type : e.code;
}

/// The model name /v1/models reports: --model_name, else the folder's name ("final" -> its parent's).
std::string default_model_name(const fs::path& checkpoint) {
    fs::path p = fs::weakly_canonical(checkpoint);
    if (p.filename().empty()) p = p.parent_path();
    std::string name = p.filename().string();
    if (name == "final" && p.has_parent_path() && !p.parent_path().filename().empty())
        name = p.parent_path().filename().string() + "/final";
    return name.empty() ? "minitrain" : name;
}

bool is_http_method(const std::string& m) {
    static const char* const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    return std::find_if(std::begin(methods), std::end(methods), [&](const char* x) { return m == x; }) != std::end(methods);
}

/// The reason phrase for the statuses the library answers by itself.
std::string status_text(int status) {
    switch (status) {
        case 400: return "Bad request";
        case 404: return "Not found";
        case 413: return "Payload too large";
        case 414: return "URI too long";
        case 416: return "Range not satisfiable";
        case 500: return "Internal server error";
        default: return "HTTP " + std::to_string(status);
    }
}

const char* const known_paths[] = {"/", "/health", "/v1/models", "/v1/chat/completions", "/v1/completions"};

template <ModelPolicy Net>
void run(const Options& opt, const std::string& preset, const sigset_t& stop_signals) {
    const ModelConfig mc = load_model_config(opt.checkpoint);
    Transformer<Net, CPU> model(mc);
    load_pretrained(opt.checkpoint, model);
    const Tokenizer tok = Tokenizer::load(opt.tokenizer);
    if (!opt.adapter.empty()) {
        const int sites = merge_peft_adapter(opt.adapter, model);
        std::fprintf(stderr, "serve: merged the LoRA adapter %s (%d projections)\n", opt.adapter.string().c_str(), sites);
    }
    cpu::Bf16WeightCopy bf16_copy;  // --dtype bf16: the merged weights rounded once for every request
    cpu::use_bf16_weights_for_inference(bf16_copy, model.params().data().template data<float>(), model.params().count());
    const ChatTemplate chat(tok);
    MT_CHECK(tok.vocab_size() <= mc.vocab_size, "serve: the tokenizer has ", tok.vocab_size(),
             " tokens but the model's vocabulary is ", mc.vocab_size);
    std::vector<std::int32_t> stop_tokens = {chat.im_end_id()};
    if (auto id = tok.find("<|endoftext|>")) stop_tokens.push_back(*id);
    const std::string model_id = opt.model_name.empty() ? default_model_name(opt.checkpoint) : opt.model_name;
    const std::int64_t started = unix_now();

    Engine<Net> engine(model, tok, EngineOptions{opt.parallel, opt.queue, opt.token_delay_ms});
    std::atomic<std::uint64_t> request_counter = 0;
    std::random_device rd;
    std::mutex seed_mutex;
    std::mt19937_64 seed_source(rd());

    httplib::Server svr;
    const int http_threads = opt.parallel + opt.queue + 4;
    svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(std::size_t(http_threads)); };
    svr.set_payload_max_length(std::size_t(opt.max_body_bytes));
    svr.set_tcp_nodelay(true);  // each SSE chunk leaves at once (no Nagle delay)
    svr.set_default_headers({{"Access-Control-Allow-Origin", "*"}, {"Server", "minitrain-serve"}});

    auto authorized = [&](const httplib::Request& req, httplib::Response& res) {
        if (opt.api_key.empty()) return true;
        const std::string h = req.get_header_value("Authorization");
        if (h == "Bearer " + opt.api_key) return true;
        send_error(res, ApiError{401, h.empty() ? "You didn't provide an API key. Pass it as 'Authorization: Bearer KEY'."
                                                : "Incorrect API key provided.",
                                 "invalid_request_error", "", "invalid_api_key"});
        return false;
    };
    // The body of a POST, at most --max_body_bytes (a longer chunked body is read to its end and dropped).
    auto read_body = [&](const httplib::ContentReader& reader, httplib::Response& res, std::string& body) {
        bool over = false;
        const bool ok = reader([&](const char* d, std::size_t n) {
            if (!over && body.size() + n > std::size_t(opt.max_body_bytes)) over = true, body.clear();
            if (!over) body.append(d, n);
            return true;
        });
        if (over || res.status == 413) {
            send_error(res, ApiError{413, "The request body is larger than the limit of " + std::to_string(opt.max_body_bytes) +
                                              " bytes (--max_body_bytes).", "invalid_request_error", "", "request_too_large"});
            return false;
        }
        if (!ok) {
            send_error(res, ApiError{400, "The request body could not be read (bad chunked encoding or a timeout).",
                                     "invalid_request_error", "", "invalid_body"});
            return false;
        }
        return true;
    };

    // Before routing: the clock of the log line, methods no route has, POST bodies without a length.
    svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
        request_log = RequestLog{};
        request_log.start = Clock::now();
        if (!is_http_method(req.method)) {
            res.set_header("Allow", "GET, POST, OPTIONS");
            send_error(res, ApiError{405, "Method " + req.method + " is not allowed.", "invalid_request_error", "", "method_not_allowed"});
            return httplib::Server::HandlerResponse::Handled;
        }
        if (req.method == "POST" && !req.has_header("Content-Length") &&
            req.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos) {
            send_error(res, ApiError{411, "A POST needs a Content-Length header (or chunked transfer encoding).",
                                     "invalid_request_error", "", "length_required"});
            res.set_header("Connection", "close");
            return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
    });
    // What the library answers by itself (a bad request line, 413 for a Content-Length above the limit,
    // a path no route matched) gets OpenAI's error shape too.
    svr.set_error_handler(httplib::Server::HandlerWithResponse([&](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty() || res.content_provider_) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 400 && !is_http_method(req.method)) {  // the library refuses methods it does not know
            res.set_header("Allow", "GET, POST, OPTIONS");
            send_error(res, ApiError{405, "Method " + req.method + " is not allowed.", "invalid_request_error", "", "method_not_allowed"});
            return httplib::Server::HandlerResponse::Handled;
        }
        ApiError e{res.status, status_text(res.status) + " (" + req.method + " " + req.path + ")",
                   res.status >= 500 ? "server_error" : "invalid_request_error", "", ""};
        if (res.status == 404) e.message = "Invalid URL (" + req.method + " " + req.path + ")", e.code = "unknown_url";
        if (res.status == 413) e.code = "request_too_large";
        send_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([&](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(ep);
        } catch (const RequestError& e) {
            send_error(res, e.error);
            return;
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError{500, "Internal error: " + what, "server_error", "", "internal_error"});
    });
    svr.set_logger([&](const httplib::Request& req, const httplib::Response& res) {
        const RequestLog& l = request_log;
        const double s = std::chrono::duration<double>(Clock::now() - l.start).count();
        std::string tokens;
        if (l.prompt >= 0) {
            char buf[160];
            std::snprintf(buf, sizeof buf, " prompt %d completion %d first token %.3f s %.1f tok/s", l.prompt, l.completion,
                          l.first_token_s, l.decode_s > 0 && l.completion > 1 ? (l.completion - 1) / l.decode_s : 0.0);
            tokens = buf;
        }
        std::fprintf(stderr, "serve: %s %s %s %d%s%s %.3f s%s\n", req.remote_addr.c_str(), req.method.c_str(), req.path.c_str(),
                     res.status, l.stream ? " stream" : "", tokens.c_str(), s, l.note.empty() ? "" : (" " + l.note).c_str());
    });

    // ---- routes
    svr.Get("/", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(std::string(chat_page_html), "text/html; charset=utf-8");
    });
    svr.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
        send_json(res, 200, {{"status", "ok"}, {"model", model_id}, {"active", engine.active()}, {"waiting", engine.waiting()},
                             {"parallel", opt.parallel}, {"queue", opt.queue}, {"context", mc.max_seq_len}});
    });
    svr.Get("/v1/models", [&](const httplib::Request& req, httplib::Response& res) {
        if (authorized(req, res)) send_json(res, 200, models_response(model_id, started));
    });
    svr.Get("/v1/models/(.+)", [&](const httplib::Request& req, httplib::Response& res) {
        if (!authorized(req, res)) return;
        if (req.matches[1] == model_id) send_json(res, 200, models_response(model_id, started)["data"][0]);
        else send_error(res, ApiError{404, "The model '" + std::string(req.matches[1]) + "' does not exist.", "invalid_request_error", "model", "model_not_found"});
    });

    auto completions = [&](Endpoint endpoint) {
        return [&, endpoint](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
            std::string body;
            if (!read_body(reader, res, body) || !authorized(req, res)) return;
            CompletionRequest r;
            std::vector<std::int32_t> prompt;
            GenerationParams gp;
            try {
                r = parse_request(body, endpoint);
                prompt = render_prompt(r, chat);
                gp.sample = r.sample;
                gp.sample.max_new_tokens = check_context(int(prompt.size()), r.max_tokens, mc.max_seq_len);
            } catch (const RequestError& e) {
                send_error(res, e.error);
                return;
            }
            if (!r.seed_given) {
                std::lock_guard l(seed_mutex);
                gp.sample.seed = seed_source();
            }
            gp.frequency_penalty = r.frequency_penalty;
            gp.presence_penalty = r.presence_penalty;
            gp.stop = r.stop;
            gp.logit_bias = r.logit_bias;
            gp.stop_tokens = stop_tokens;
            std::shared_ptr<Job> job = engine.submit(prompt, gp);
            if (!job) {
                res.set_header("Retry-After", "1");
                send_error(res, ApiError{503, "The server is busy: " + std::to_string(opt.parallel) + " requests are being answered and " +
                                                  std::to_string(opt.queue) + " are waiting. Retry later.", "server_error", "", "server_overloaded"});
                return;
            }
            char idbuf[32];
            std::snprintf(idbuf, sizeof idbuf, "%s%012llx", endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-",
                          (unsigned long long)(++request_counter));
            const ResponseHead head{idbuf, unix_now(), model_id};
            request_log.stream = r.stream;

            struct State {
                bool started = false, finished = false;
                std::string text;
            };
            auto st = std::make_shared<State>();
            auto note_usage = [job](const std::string& error) {
                request_log.prompt = job->prompt_tokens();
                request_log.completion = job->completion_tokens();
                request_log.first_token_s = job->queue_and_prefill_seconds();
                request_log.decode_s = job->decode_seconds();
                request_log.note = error.empty() ? job->finish_reason() : "error: " + error;
            };
            const bool include_usage = r.include_usage;
            if (r.stream) {
                res.set_header("Cache-Control", "no-cache");
                res.set_header("X-Accel-Buffering", "no");
                res.set_chunked_content_provider("text/event-stream", [=](std::size_t, httplib::DataSink& sink) {
                    auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
                    if (!st->started) {  // the role first, before any token
                        st->started = true;
                        json first = endpoint == Endpoint::chat ? json{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}} : json("");
                        return write(sse(stream_chunk(endpoint, head, first, "", include_usage)));
                    }
                    std::vector<std::string> pieces;
                    const bool fin = job->wait_for(pieces, std::chrono::milliseconds(50));
                    if (!sink.is_writable()) {
                        job->cancel();
                        request_log.note = "client gone";
                        return false;
                    }
                    for (const std::string& p : pieces) {
                        json delta = endpoint == Endpoint::chat ? json{{"content", p}} : json(p);
                        if (!write(sse(stream_chunk(endpoint, head, delta, "", include_usage)))) {
                            job->cancel();
                            return false;
                        }
                    }
                    if (!fin) return true;
                    const std::string error = job->error();
                    note_usage(error);
                    if (!error.empty()) {
                        write(sse(ApiError{500, error, "server_error", "", "internal_error"}.to_json()));
                    } else {
                        json empty = endpoint == Endpoint::chat ? json::object() : json("");
                        write(sse(stream_chunk(endpoint, head, empty, job->finish_reason(), include_usage)));
                        if (include_usage) write(sse(usage_chunk(endpoint, head, Usage{job->prompt_tokens(), job->completion_tokens()})));
                    }
                    write(sse_done);
                    st->finished = true;
                    sink.done();
                    return true;
                }, [job](bool) { job->cancel(); });
            } else {
                // Written when done; the wait polls the connection so that a client that leaves frees its slot.
                res.set_chunked_content_provider("application/json", [=](std::size_t, httplib::DataSink& sink) {
                    std::vector<std::string> pieces;
                    const bool fin = job->wait_for(pieces, std::chrono::milliseconds(50));
                    for (auto& p : pieces) st->text += p;
                    if (!fin) {
                        if (sink.is_writable()) return true;
                        job->cancel();
                        request_log.note = "client gone";
                        return false;
                    }
                    const std::string error = job->error();
                    note_usage(error);
                    json out = !error.empty() ? ApiError{500, error, "server_error", "", "internal_error"}.to_json()
                                              : completion_response(endpoint, head, st->text, job->finish_reason(),
                                                                    Usage{job->prompt_tokens(), job->completion_tokens()});
                    const std::string s = out.dump();
                    sink.write(s.data(), s.size());
                    sink.done();
                    return true;
                }, [job](bool) { job->cancel(); });
            }
        };
    };
    svr.Post("/v1/chat/completions", completions(Endpoint::chat));
    svr.Post("/v1/completions", completions(Endpoint::completion));

    // Everything else: 405 for a known path with the wrong method, 404 otherwise (bodies drained).
    auto unrouted = [&](const httplib::Request& req, httplib::Response& res) {
        const bool known = std::find(std::begin(known_paths), std::end(known_paths), req.path) != std::end(known_paths) ||
                           req.path.starts_with("/v1/models/");
        if (known) {
            const bool post = req.path.find("completions") != std::string::npos;
            res.set_header("Allow", post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
            send_error(res, ApiError{405, "Method " + req.method + " is not allowed on " + req.path + " (use " + (post ? "POST" : "GET") + ").",
                                     "invalid_request_error", "", "method_not_allowed"});
        } else {
            send_error(res, ApiError{404, "Invalid URL (" + req.method + " " + req.path + ")", "invalid_request_error", "", "unknown_url"});
        }
    };
    auto unrouted_with_body = [&](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
        std::string body;
        if (read_body(reader, res, body)) unrouted(req, res);
    };
    svr.Get(".*", unrouted);
    svr.Post(".*", unrouted_with_body);
    svr.Put(".*", unrouted_with_body);
    svr.Patch(".*", unrouted_with_body);
    svr.Delete(".*", unrouted_with_body);
    svr.Options(".*", [&](const httplib::Request&, httplib::Response& res) {  // CORS preflight
        res.status = 204;
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    });

    const int port = opt.port == 0 ? svr.bind_to_any_port(opt.host) : (svr.bind_to_port(opt.host, opt.port) ? opt.port : -1);
    MT_CHECK(port > 0, "serve: cannot listen on ", opt.host, ":", opt.port, " (in use, or not an address of this machine?)");
    std::thread listener([&] { svr.listen_after_bind(); });
    std::fprintf(stderr, "serve: %s (preset %s, %zu parameters, vocabulary %d, context %d) as \"%s\"\n",
                 opt.checkpoint.string().c_str(), preset.c_str(), model.params().count(), mc.vocab_size, mc.max_seq_len,
                 model_id.c_str());
    std::fprintf(stderr, "serve: listening on http://%s:%d (%d in parallel, %d queued, %d HTTP threads%s)\n", opt.host.c_str(),
                 port, opt.parallel, opt.queue, http_threads, opt.api_key.empty() ? "" : ", API key required");

    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    svr.stop();
    engine.shutdown();
    listener.join();
    std::fprintf(stderr, "serve: stopped after %llu completion requests\n", (unsigned long long)request_counter.load());
    std::fprintf(stderr, "serve: %s\n", cpu::precision_report().c_str());
}

}  // namespace

int main(int argc, char** argv) {
    // SIGINT / SIGTERM are taken by sigwait in run(); every thread started from here on inherits the mask.
    // SIGPIPE: a write to a client that left must fail with EPIPE, not end the process.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);
    try {
        Options opt;
        std::string checkpoint, tokenizer, adapter;
        Flags flags("serve", "Serve a trained model over HTTP with OpenAI's API (chat completions, completions, models) "
                             "and a chat page at /.");
        flags.bind("checkpoint", checkpoint, "model folder (config.json, model.safetensors, tokenizer.json)");
        flags.bind("tokenizer", tokenizer, "tokenizer.json (default: the one in --checkpoint)");
        flags.bind("adapter", adapter, "a PEFT LoRA adapter folder to merge into the model");
        flags.bind("host", opt.host, "address to listen on (0.0.0.0: every interface)");
        flags.bind("port", opt.port, "TCP port (0: any free port)");
        flags.bind("api_key", opt.api_key, "when set, /v1/ requests need 'Authorization: Bearer KEY'");
        flags.bind("model_name", opt.model_name, "the model id /v1/models reports (default: the folder's name)");
        flags.bind("parallel", opt.parallel, "sequences decoded in turn, each with its own KV cache");
        flags.bind("queue", opt.queue, "requests that may wait for a sequence slot (more: 503)");
        flags.bind("max_body_bytes", opt.max_body_bytes, "largest request body (more: 413)");
        flags.bind("threads", opt.threads, "CPU threads of the model (0: OpenMP's default)");
        std::string dtype = "f32";
        flags.bind_dtype("dtype", dtype, "precision of the matrix products: f32, or bf16 (bf16 weights and inputs, f32 accumulation; fast on CPUs with AVX512-BF16)");
        flags.bind("token_delay_ms", opt.token_delay_ms, "pause after each decode round (to watch streaming; tests)");
        flags.require("checkpoint");
        flags.parse(argc, argv);

        MT_CHECK(opt.port >= 0 && opt.port <= 65535, "--port must be in 0..65535, got ", opt.port);
        MT_CHECK(opt.parallel >= 1 && opt.parallel <= 256, "--parallel must be in 1..256, got ", opt.parallel);
        MT_CHECK(opt.queue >= 0 && opt.queue <= 4096, "--queue must be in 0..4096, got ", opt.queue);
        MT_CHECK(opt.token_delay_ms >= 0, "--token_delay_ms must be >= 0, got ", opt.token_delay_ms);
        MT_CHECK(opt.max_body_bytes >= 1024, "--max_body_bytes must be at least 1024, got ", opt.max_body_bytes);
        if (opt.threads > 0) CPU::set_threads(opt.threads);
        Autocast autocast(cpu_precision(dtype));  // core/precision.hpp: process-wide, so the engine's threads see it
        opt.checkpoint = checkpoint;
        opt.tokenizer = tokenizer.empty() ? opt.checkpoint / "tokenizer.json" : fs::path(tokenizer);
        opt.adapter = adapter;
        MT_CHECK(fs::exists(opt.tokenizer), opt.tokenizer.string(), ": no such file (give --tokenizer tokenizer.json)");
        const std::string preset = preset_for_folder(opt.checkpoint);
        with_preset(preset, [&]<class Net>() { run<Net>(opt, preset, stop_signals); });
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
