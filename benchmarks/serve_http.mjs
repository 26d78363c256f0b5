// benchmarks/serve_http.mjs: the server's decode speed over HTTP, as clients see it.
//
//   build/bench_serve --save /tmp/mm2s            # MiniMind2-Small, untrained, with a 6400-token tokenizer
//   node benchmarks/serve_http.mjs build/serve /tmp/mm2s [threads=2] [tokens=128] [streams=1,4,16]
//
// Starts `serve --parallel 16` on 127.0.0.1 (a free port), then for each N opens N streaming chat
// completions at once (greedy, the special tokens banned with logit_bias so that every stream runs to
// max_tokens) and reports aggregate tokens/s (all streams' tokens / wall time), per-stream decode tokens/s
// (after its first token) and time to first token (request sent -> first content chunk). Tokens are
// counted from the usage chunk. No dependency beyond node's fetch.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";

const [serve, modelDir, threads = "2", tokens = "128", streamsArg = "1,4,16"] = process.argv.slice(2);
if (!serve || !modelDir) {
  console.error("usage: node benchmarks/serve_http.mjs SERVE MODEL_DIR [threads] [tokens] [streams]");
  process.exit(2);
}
const proc = spawn(serve, ["--checkpoint", modelDir, "--host", "127.0.0.1", "--port", "0", "--parallel", "16",
                           "--threads", threads], { stdio: ["ignore", "ignore", "pipe"] });
let log = "";
const port = await new Promise((resolve, reject) => {
  proc.stderr.on("data", (d) => {
    log += d;
    const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
    if (m) resolve(Number(m[1]));
  });
  proc.on("exit", (c) => reject(new Error("serve exited " + c + "\n" + log)));
});
const base = `http://127.0.0.1:${port}`;
const special = JSON.parse(readFileSync(`${modelDir}/tokenizer.json`, "utf8")).added_tokens.map((t) => t.id);
const logit_bias = Object.fromEntries(special.map((id) => [String(id), -100]));

async function one(i) {
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: `ka lo mi ne ${i} ru sa ti vo ze` }], temperature: 0,
                           max_tokens: Number(tokens), stream: true, stream_options: { include_usage: true }, logit_bias }),
  });
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "", first = 0, usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(6, cut);
      buf = buf.slice(cut + 2);
      if (ev === "[DONE]") continue;
      const c = JSON.parse(ev);
      if (c.usage) usage = c.usage;
      if (!first && c.choices[0]?.delta?.content) first = performance.now();
    }
  }
  const end = performance.now();
  return { ttft: (first - t0) / 1000, decode: (end - first) / 1000, tokens: usage.completion_tokens };
}

console.log(`serve_http: ${modelDir}, ${tokens} tokens per stream, greedy, --threads ${threads}`);
console.log("streams  aggregate t/s  per-stream t/s  TTFT mean  TTFT max");
for (const n of streamsArg.split(",").map(Number)) {
  const t0 = performance.now();
  const r = await Promise.all([...Array(n).keys()].map(one));
  const wall = (performance.now() - t0) / 1000;
  const total = r.reduce((a, x) => a + x.tokens, 0);
  const per = r.reduce((a, x) => a + (x.tokens - 1) / x.decode, 0) / n;
  const ttft = r.map((x) => x.ttft);
  console.log(`${String(n).padStart(7)}  ${(total / wall).toFixed(1).padStart(13)}  ${per.toFixed(1).padStart(14)}  ` +
              `${(ttft.reduce((a, b) => a + b) / n).toFixed(3).padStart(7)} s  ${Math.max(...ttft).toFixed(3).padStart(6)} s`);
}
proc.kill("SIGTERM");
