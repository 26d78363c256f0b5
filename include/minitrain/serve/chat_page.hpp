// minitrain/serve/chat_page.hpp
// The chat page `serve` answers at GET /: one self-contained HTML file (no external scripts, styles or
// fonts; nothing fetched but this server's own /v1/chat/completions). It keeps the conversation in the
// page, sends it with stream: true and renders the reply as the SSE chunks arrive; the settings are the
// request's sampling fields; Reset clears the conversation.
#pragma once

#include <string_view>

namespace minitrain::serve {

inline constexpr std::string_view chat_page_html = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>minitrain chat</title>
<style>
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: #f4f5f7; color: #1d2330; display: flex; height: 100vh; }
  main { flex: 1; display: flex; flex-direction: column; min-width: 0; }
  header { padding: 10px 16px; background: #1d2330; color: #fff; font-weight: 600; }
  header span { font-weight: 400; opacity: .7; margin-left: 8px; }
  #log { flex: 1; overflow-y: auto; padding: 16px; }
  .msg { width: fit-content; max-width: 80%; margin: 6px 0; padding: 8px 12px; border-radius: 10px; white-space: pre-wrap; word-wrap: break-word; }
  .user { background: #2f6fde; color: #fff; margin-left: auto; }
  .assistant { background: #fff; border: 1px solid #d9dce3; }
  .error { background: #fde8e8; border: 1px solid #e0a0a0; color: #8a1c1c; }
  .meta { font-size: 12px; color: #6b7280; margin: 0 0 8px 4px; }
  form { display: flex; gap: 8px; padding: 12px 16px; background: #fff; border-top: 1px solid #d9dce3; }
  textarea { flex: 1; resize: none; height: 44px; padding: 10px; font: inherit; border: 1px solid #c4c8d0; border-radius: 8px; }
  button { padding: 0 16px; font: inherit; border: 0; border-radius: 8px; background: #2f6fde; color: #fff; cursor: pointer; }
  button.secondary { background: #e5e7eb; color: #1d2330; }
  button:disabled { opacity: .5; cursor: default; }
  aside { width: 240px; padding: 16px; background: #fff; border-left: 1px solid #d9dce3; overflow-y: auto; }
  aside h2 { font-size: 14px; margin: 0 0 12px; }
  label { display: block; font-size: 13px; margin-bottom: 10px; color: #374151; }
  label input, label textarea { display: block; width: 100%; margin-top: 3px; padding: 5px 6px; font: inherit; border: 1px solid #c4c8d0; border-radius: 6px; height: auto; }
</style></head>
<body>
<main>
  <header>minitrain chat<span id="model"></span></header>
  <div id="log"></div>
  <form id="form">
    <textarea id="input" placeholder="Type a message and press Enter" autofocus></textarea>
    <button id="send" type="submit">Send</button>
    <button id="reset" type="button" class="secondary">Reset</button>
  </form>
</main>
<aside>
  <h2>Sampling</h2>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.05" value="0.7"></label>
  <label>top_p <input id="top_p" type="number" min="0.01" max="1" step="0.05" value="0.9"></label>
  <label>top_k <input id="top_k" type="number" min="0" step="1" value="40"></label>
  <label>max_tokens <input id="max_tokens" type="number" min="1" step="1" value="256"></label>
  <label>seed (empty: random) <input id="seed" type="number" step="1"></label>
  <label>system message <textarea id="system" rows="3"></textarea></label>
  <label>API key (if the server has one) <input id="api_key" type="password"></label>
</aside>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let history = [];
let controller = null;

function bubble(cls, text) {
  const d = document.createElement("div");
  d.className = "msg " + cls;
  d.textContent = text;
  $("log").appendChild(d);
  $("log").scrollTop = $("log").scrollHeight;
  return d;
}
function meta(text) {
  const d = document.createElement("div");
  d.className = "meta";
  d.textContent = text;
  $("log").appendChild(d);
}
function num(id) { const v = $(id).value.trim(); return v === "" ? undefined : Number(v); }

async function send(text) {
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  out.classList.add("streaming");
  const messages = ($("system").value.trim() ? [{ role: "system", content: $("system").value.trim() }] : []).concat(history);
  const body = { model: $("model").dataset.id || "minitrain", messages, stream: true,
                 stream_options: { include_usage: true }, temperature: num("temperature"), top_p: num("top_p"),
                 top_k: num("top_k"), max_tokens: num("max_tokens"), seed: num("seed") };
  const headers = { "Content-Type": "application/json" };
  if ($("api_key").value) headers["Authorization"] = "Bearer " + $("api_key").value;
  controller = new AbortController();
  $("send").disabled = true;
  let reply = "", finish = "", usage = null;
  const t0 = performance.now();
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) {
      const err = await res.json().catch(() => ({ error: { message: res.statusText } }));
      throw new Error(res.status + ": " + err.error.message);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) {
          if (c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; $("log").scrollTop = $("log").scrollHeight; }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
    history.push({ role: "assistant", content: reply });
    const s = (performance.now() - t0) / 1000;
    meta("finish: " + finish + (usage ? " · " + usage.prompt_tokens + " prompt + " + usage.completion_tokens + " tokens" : "") + " · " + s.toFixed(2) + " s");
  } catch (e) {
    if (e.name !== "AbortError") { out.className = "msg error"; out.textContent = String(e.message || e); }
    history.pop();
  } finally {
    out.classList.remove("streaming");
    out.classList.add("done");
    $("send").disabled = false;
    controller = null;
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("reset").addEventListener("click", () => {
  if (controller) controller.abort();
  history = [];
  $("log").innerHTML = "";
  $("input").focus();
});
fetch("/health").then((r) => r.json()).then((h) => { $("model").textContent = h.model + " · context " + h.context; $("model").dataset.id = h.model; }).catch(() => {});
</script>
</body></html>
)HTML";

}  // namespace minitrain::serve
