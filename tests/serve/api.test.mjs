// tests/serve/api.test.mjs (CTest serve_api): build/serve on 127.0.0.1 with the tiny chat model of the
// serve_model test, talked to with the official openai client and with curl, as a user's scripts do:
// streaming equals non-streaming at temperature 0 and with a seed, and equals `chat --prompts` (in f32 and
// with --dtype bf16); usage, max_tokens -> "length", stop sequences, completions, models; 8 streams at once;
// clients that leave mid-stream free their slot; 25 malformed requests get the right status and OpenAI's error shape while
// the server keeps serving; SIGTERM ends it with status 0. Every request goes to 127.0.0.1 only.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { env, skipReason, startServer, stopServer, curl, sleep } from "./common.mjs";

const skip = skipReason(["chat"]);
if (skip) {
  console.log(`[skipped] ${skip}`);
  process.exit(0);
}
const { default: OpenAI, APIError } = await import("openai");

const KEY = "sk-test-minitrain";
let server, client, model;

before(async () => {
  mkdirSync(env.workDir, { recursive: true });
  server = await startServer(["--api_key", KEY, "--parallel", "4", "--queue", "8", "--threads", "1",
                              "--token_delay_ms", "5", "--max_body_bytes", "65536"]);
  client = new OpenAI({ apiKey: KEY, baseURL: `${server.base}/v1`, maxRetries: 0 });
});

after(async () => {
  if (server && server.proc.exitCode === null) await stopServer(server);
});

const auth = { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" };
const user = (content) => [{ role: "user", content }];

/// A chat completion streamed through the client: { text, finish, chunks, usage }.
async function streamChat(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const chunks = [];
  let text = "", finish = null, usage = null;
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta?.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, chunks, usage };
}

test("health and models", async () => {
  const health = await (await fetch(`${server.base}/health`)).json();  // open without the key
  assert.equal(health.status, "ok");
  assert.equal(health.context, 1024);
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  model = models.data[0].id;
  assert.equal(models.data[0].object, "model");
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
});

test("non-streaming and streaming agree at temperature 0 and with a seed; usage is counted", async () => {
  for (const sampling of [{ temperature: 0 }, { temperature: 0.9, top_p: 0.9, seed: 42 }]) {
    const params = { model, messages: user("What is the capital of France?"), max_tokens: 40, ...sampling };
    const plain = await client.chat.completions.create(params);
    assert.equal(plain.object, "chat.completion");
    assert.match(plain.id, /^chatcmpl-/);
    const choice = plain.choices[0];
    assert.equal(choice.message.role, "assistant");
    assert.ok(["stop", "length"].includes(choice.finish_reason));
    assert.ok(plain.usage.prompt_tokens > 5);
    assert.ok(plain.usage.completion_tokens >= 1 && plain.usage.completion_tokens <= 40);
    assert.equal(plain.usage.total_tokens, plain.usage.prompt_tokens + plain.usage.completion_tokens);

    const streamed = await streamChat({ ...params, stream_options: { include_usage: true } });
    assert.equal(streamed.text, choice.message.content, JSON.stringify(sampling));
    assert.equal(streamed.finish, choice.finish_reason);
    assert.deepEqual(streamed.usage, plain.usage);
    const first = streamed.chunks[0];
    assert.equal(first.object, "chat.completion.chunk");
    assert.equal(first.choices[0].delta.role, "assistant");
    assert.equal(first.choices[0].finish_reason, null);
    const finishing = streamed.chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
    assert.equal(finishing.length, 1);
    assert.deepEqual(finishing[0].choices[0].delta, {});
    assert.equal(streamed.chunks.at(-1).choices.length, 0);  // the usage chunk
    assert.ok(streamed.chunks.every((c) => c.id === plain.id.replace(/.$/, c.id.at(-1)) || c.id.startsWith("chatcmpl-")));
  }
});

test("the raw SSE stream: role delta first, a chunk per token, finish_reason, data: [DONE]", async () => {
  const body = JSON.stringify({ model, messages: user("Who are you?"), temperature: 0, max_tokens: 12, stream: true });
  const r = await curl(["-N", "-H", `Authorization: Bearer ${KEY}`, "-H", "Content-Type: application/json", "-d", body,
                        `${server.base}/v1/chat/completions`]);
  assert.equal(r.status, 200);
  assert.match(r.headers, /Content-Type: text\/event-stream/i);
  const events = r.body.split("\n\n").filter((e) => e.length);
  assert.ok(events.every((e) => e.startsWith("data: ")), r.body);
  assert.equal(events.at(-1), "data: [DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
  assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "", refusal: null });
  const content = chunks.slice(1, -1);
  assert.ok(content.length >= 1);
  assert.ok(content.every((c) => typeof c.choices[0].delta.content === "string" && c.choices[0].delta.content.length > 0));
  assert.ok(chunks.at(-1).choices[0].finish_reason);
  const completion = await client.chat.completions.create({ model, messages: user("Who are you?"), temperature: 0, max_tokens: 12 });
  assert.equal(content.map((c) => c.choices[0].delta.content).join(""), completion.choices[0].message.content);
  assert.ok(content.length <= completion.usage.completion_tokens);
});

/// `chat --prompts FILE` with up to 30 new tokens on one thread: its first n reply lines, unescaped, and its stderr.
async function chatReplies(file, n, args) {
  const { stdout, stderr } = await promisify(execFile)(env.chat, ["--checkpoint", env.modelDir, "--prompts", file,
    "--max_new_tokens", "30", "--threads", "1", ...args]);
  const lines = stdout.split("\n").slice(0, n)
    .map((l) => l.replace(/\\(\\|n|r)/g, (_, c) => (c === "n" ? "\n" : c === "r" ? "\r" : "\\")));
  return { lines, stderr };
}

test("the replies equal what `chat --prompts` answers for the same sampling", async () => {
  const prompts = ["What is the capital of France?", "What is 2 + 3?", "Tell me a story about a cat."];
  const file = `${env.workDir}/prompts.txt`;
  writeFileSync(file, prompts.join("\n") + "\n");
  for (const s of [{ temperature: 0, top_k: 40, top_p: 0.9, seed: 42 }, { temperature: 0.8, top_k: 40, top_p: 0.9, seed: 7 }]) {
    const { lines } = await chatReplies(file, prompts.length, ["--temperature", String(s.temperature), "--top_k", String(s.top_k),
      "--top_p", String(s.top_p), "--seed", String(s.seed)]);
    for (let i = 0; i < prompts.length; ++i) {
      const r = await client.chat.completions.create({ model, messages: user(prompts[i]), max_tokens: 30, ...s });
      assert.equal(r.choices[0].message.content, lines[i], `prompt ${i} with ${JSON.stringify(s)}`);
    }
  }
});

test("--dtype bf16: a server on bf16 weights answers as `chat --dtype bf16` does, and both say they ran in bf16", async () => {
  const prompts = ["What is the capital of France?", "Tell me a story about a cat."];
  const file = `${env.workDir}/prompts_bf16.txt`;
  writeFileSync(file, prompts.join("\n") + "\n");
  const { lines, stderr } = await chatReplies(file, prompts.length, ["--temperature", "0", "--dtype", "bf16"]);
  assert.match(stderr, /chat: precision bf16: [1-9]\d* matrix products in bf16 \([1-9]\d* of them read the bf16 copy/);
  const bf16 = await startServer(["--threads", "1", "--dtype", "bfloat16"]);  // MiniMind's spelling
  try {
    const c = new OpenAI({ apiKey: "unused", baseURL: `${bf16.base}/v1`, maxRetries: 0 });
    for (let i = 0; i < prompts.length; ++i) {
      const r = await c.chat.completions.create({ model, messages: user(prompts[i]), max_tokens: 30, temperature: 0 });
      assert.ok(r.choices[0].message.content.length > 0, `prompt ${i}: an empty reply`);
      assert.equal(r.choices[0].message.content, lines[i], `prompt ${i}: serve --dtype bf16 against chat --dtype bf16`);
    }
  } finally {
    assert.equal(await stopServer(bf16), 0);
  }
  assert.match(bf16.log(), /serve: precision bf16: [1-9]\d* matrix products in bf16 \([1-9]\d* of them read the bf16 copy/);
});

test("max_tokens gives finish_reason length with that many tokens", async () => {
  const r = await client.chat.completions.create({ model, messages: user("Tell me a story."), temperature: 0, max_tokens: 3 });
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 3);
  const c = await client.chat.completions.create({ model, messages: user("Tell me a story."), temperature: 0, max_completion_tokens: 2 });
  assert.equal(c.usage.completion_tokens, 2);
});

test("stop sequences end the reply before their first occurrence, streamed or not", async () => {
  const base = { model, messages: user("Who are you?"), temperature: 0, max_tokens: 40 };
  const full = (await client.chat.completions.create(base)).choices[0].message.content;
  assert.ok(full.length >= 8, `reply too short for the test: ${JSON.stringify(full)}`);
  const stop = full.slice(4, 7);
  const want = full.slice(0, full.indexOf(stop));
  const r = await client.chat.completions.create({ ...base, stop: ["\u0001nope", stop] });
  assert.equal(r.choices[0].message.content, want);
  assert.equal(r.choices[0].finish_reason, "stop");
  const s = await streamChat({ ...base, stop });
  assert.equal(s.text, want);
  assert.equal(s.finish, "stop");
});

test("completions: text, streaming, usage and length", async () => {
  const params = { model, prompt: "What is", max_tokens: 5, temperature: 0 };
  const r = await client.completions.create(params);
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 5);
  assert.equal(typeof r.choices[0].text, "string");
  const stream = await client.completions.create({ ...params, stream: true });
  let text = "", finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, r.choices[0].text);
  assert.equal(finish, "length");
  // A hand-written ChatML prompt (special tokens allowed) is the chat prompt.
  const chatml = await client.completions.create({ model, prompt: "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n",
                                                   max_tokens: 20, temperature: 0 });
  const chat = await client.chat.completions.create({ model, messages: user("What is 2 + 3?"), max_tokens: 20, temperature: 0 });
  assert.equal(chatml.choices[0].text, chat.choices[0].message.content);
});

test("8 concurrent streams all complete, each as it would alone", async () => {
  const params = (i) => ({ model, messages: user(`What is ${i} + 4?`), temperature: 0.8, seed: 100 + i, max_tokens: 24 });
  const results = await Promise.all([...Array(8).keys()].map((i) => streamChat(params(i))));
  for (let i = 0; i < 8; ++i) {
    assert.ok(results[i].finish === "stop" || results[i].finish === "length");
    const alone = await client.chat.completions.create(params(i));
    assert.equal(results[i].text, alone.choices[0].message.content, `stream ${i}`);
  }
});

async function waitIdle(ms = 3000) {
  const t0 = Date.now();
  for (;;) {
    const h = await (await fetch(`${server.base}/health`)).json();
    if (h.active === 0 && h.waiting === 0) return Date.now() - t0;
    if (Date.now() - t0 > ms) assert.fail(`the server still has ${h.active} active and ${h.waiting} waiting after ${ms} ms`);
    await sleep(20);
  }
}

test("a client that disconnects mid-stream (or while waiting) frees its slot", async () => {
  // The stop tokens banned (logit_bias -100): the replies run to max_tokens, > 4 s at 5 ms a token.
  const special = JSON.parse(readFileSync(`${env.modelDir}/tokenizer.json`, "utf8")).added_tokens;
  const logit_bias = Object.fromEntries(special.filter((t) => ["<|im_end|>", "<|endoftext|>"].includes(t.content)).map((t) => [String(t.id), -100]));
  assert.equal(Object.keys(logit_bias).length, 2);
  const body = JSON.stringify({ model, messages: user("Tell me everything."), temperature: 0.9, seed: 1, max_tokens: 900, stream: true, logit_bias });
  const ctrl = new AbortController();
  const res = await fetch(`${server.base}/v1/chat/completions`, { method: "POST", headers: auth, body, signal: ctrl.signal });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  let got = 0;
  while (got < 3) { await reader.read(); ++got; }  // a few chunks, then leave
  assert.equal((await (await fetch(`${server.base}/health`)).json()).active, 1);
  ctrl.abort();
  const t0 = Date.now();
  await waitIdle(2000);
  assert.ok(Date.now() - t0 < 2000);
  // Non-streaming: the client gives up while its reply is being generated.
  // (The headers come at once: the body is written when the reply is done.)
  const ctrl2 = new AbortController();
  const res2 = await fetch(`${server.base}/v1/chat/completions`, { method: "POST", headers: auth, signal: ctrl2.signal,
    body: JSON.stringify({ model, messages: user("Tell me more."), max_tokens: 900, temperature: 0.9, seed: 2, logit_bias }) });
  assert.equal(res2.status, 200);
  const body2 = res2.text().catch((e) => e);
  await sleep(300);
  assert.ok((await (await fetch(`${server.base}/health`)).json()).active >= 1);
  ctrl2.abort();
  assert.equal((await body2).name, "AbortError");
  await waitIdle(2000);
  await sleep(100);  // the log line is written when the connection's handler returns
  assert.match(server.log(), /client gone/);
  const ok = await client.chat.completions.create({ model, messages: user("Hello!"), temperature: 0, max_tokens: 8 });
  assert.ok(ok.choices[0].finish_reason);
});

test("malformed requests: the right status and OpenAI's error shape, and the server keeps serving", async () => {
  const url = `${server.base}/v1/chat/completions`;
  const msg = user("hi");
  const long = "What is 2 + 3? Paris is blue. ".repeat(200);
  const cases = [
    // [name, status, param or null, fetch options or a curl argument list]
    ["not JSON", 400, null, { body: "{oops" }],
    ["not an object", 400, null, { body: "[1,2]" }],
    ["no messages", 400, "messages", { body: JSON.stringify({ model }) }],
    ["messages not an array", 400, "messages", { body: JSON.stringify({ model, messages: "hi" }) }],
    ["empty messages", 400, "messages", { body: JSON.stringify({ model, messages: [] }) }],
    ["unknown role", 400, "messages[0].role", { body: JSON.stringify({ model, messages: [{ role: "wizard", content: "x" }] }) }],
    ["content a number", 400, "messages[0].content", { body: JSON.stringify({ model, messages: [{ role: "user", content: 5 }] }) }],
    ["temperature out of range", 400, "temperature", { body: JSON.stringify({ model, messages: msg, temperature: 7 }) }],
    ["temperature a string", 400, "temperature", { body: JSON.stringify({ model, messages: msg, temperature: "hot" }) }],
    ["top_p 0", 400, "top_p", { body: JSON.stringify({ model, messages: msg, top_p: 0 }) }],
    ["max_tokens 0", 400, "max_tokens", { body: JSON.stringify({ model, messages: msg, max_tokens: 0 }) }],
    ["max_tokens fractional", 400, "max_tokens", { body: JSON.stringify({ model, messages: msg, max_tokens: 2.5 }) }],
    ["n 3", 400, "n", { body: JSON.stringify({ model, messages: msg, n: 3 }) }],
    ["five stops", 400, "stop", { body: JSON.stringify({ model, messages: msg, stop: ["a", "b", "c", "d", "e"] }) }],
    ["stream a string", 400, "stream", { body: JSON.stringify({ model, messages: msg, stream: "yes" }) }],
    ["presence_penalty out of range", 400, "presence_penalty", { body: JSON.stringify({ model, messages: msg, presence_penalty: -3 }) }],
    ["prompt longer than the context", 400, "messages", { body: JSON.stringify({ model, messages: user(long) }) }, "context_length_exceeded"],
    ["completions without a prompt", 400, "prompt", { url: `${server.base}/v1/completions`, body: JSON.stringify({ model }) }],
    ["no API key", 401, null, { headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model, messages: msg }) }, "invalid_api_key"],
    ["wrong API key", 401, null, { headers: { Authorization: "Bearer nope" }, body: JSON.stringify({ model, messages: msg }) }, "invalid_api_key"],
    ["unknown route", 404, null, { url: `${server.base}/v1/nothing`, body: "{}" }, "unknown_url"],
    ["unknown model", 404, "model", { url: `${server.base}/v1/models/gpt-9`, method: "GET" }, "model_not_found"],
    ["GET on a POST route", 405, null, { method: "GET" }, "method_not_allowed"],
    ["unknown method", 405, null, ["-X", "BREW", url], "method_not_allowed"],
    ["body above the limit", 413, null, ["-H", "Content-Type: application/json", "--data-binary", "@" + `${env.workDir}/big.json`, url], "request_too_large"],
    ["chunked body above the limit", 413, null, ["-H", "Transfer-Encoding: chunked", "--data-binary", "@" + `${env.workDir}/big.json`, url], "request_too_large"],
  ];
  writeFileSync(`${env.workDir}/big.json`, JSON.stringify({ model, messages: user("x".repeat(70000)) }));
  assert.ok(cases.length >= 15);
  for (const [name, status, param, how, code] of cases) {
    let got, text, type;
    if (Array.isArray(how)) {
      const r = await curl(["-H", `Authorization: Bearer ${KEY}`, ...how]);
      got = r.status, text = r.body, type = (r.headers.match(/Content-Type: ([^\r\n;]+)/i) || [])[1];
    } else {
      const method = how.method || "POST";
      const r = await fetch(how.url || url, { method, headers: how.headers || auth, body: method === "GET" ? undefined : how.body });
      got = r.status, text = await r.text(), type = (r.headers.get("content-type") || "").split(";")[0];
    }
    assert.equal(got, status, `${name}: ${text}`);
    assert.equal(type, "application/json", name);
    const e = JSON.parse(text).error;
    assert.ok(e, `${name}: no error object in ${text}`);
    assert.equal(typeof e.message, "string", name);
    assert.ok(e.message.length > 0, name);
    assert.equal(typeof e.type, "string", name);
    assert.ok("param" in e && "code" in e, `${name}: ${text}`);
    if (param !== null) assert.equal(e.param, param, name);
    if (code) assert.equal(e.code, code, name);
  }
  // Through the client: a typed APIError with the status and the parameter.
  await assert.rejects(client.chat.completions.create({ model, messages: msg, temperature: 9 }),
    (e) => e instanceof APIError && e.status === 400 && e.param === "temperature");
  // Still serving.
  const ok = await client.chat.completions.create({ model, messages: user("Hello!"), temperature: 0, max_tokens: 8 });
  assert.ok(ok.choices[0].message.content.length >= 0);
  assert.equal((await (await fetch(`${server.base}/health`)).json()).status, "ok");
});

test("one log line per request; SIGTERM stops the server cleanly", async () => {
  await sleep(100);
  const lines = server.log().split("\n").filter((l) => /^serve: 127\.0\.0\.1 [A-Z]+ \//.test(l));
  assert.ok(lines.length >= 40, `${lines.length} request lines`);
  assert.ok(lines.some((l) => /POST \/v1\/chat\/completions 200 stream prompt \d+ completion \d+ first token [\d.]+ s [\d.]+ tok\/s/.test(l)),
            lines.join("\n"));
  assert.ok(lines.some((l) => / 400 .*invalid_value/.test(l)));
  const code = await stopServer(server);
  assert.equal(code, 0, server.log().slice(-2000));
  assert.match(server.log(), /SIGTERM, shutting down/);
  assert.match(server.log(), /serve: stopped after \d+ completion requests/);
});
