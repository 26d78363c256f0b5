// tests/serve/common.mjs: what the end-to-end tests share: the paths CTest passes (tests/serve/
// serve_tests.cmake), starting build/serve on 127.0.0.1 with a free port and stopping it, curl.
import { spawn, execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";

export const env = {
  serve: process.env.SERVE,
  chat: process.env.CHAT,
  modelDir: process.env.MODEL_DIR,
  workDir: process.env.WORK_DIR,
  curl: process.env.CURL || "curl",
};

/// The reason to skip, or "" (CTest reports "[skipped] ..." as Skipped).
export function skipReason(needs = []) {
  for (const k of ["serve", "modelDir", "workDir", ...needs])
    if (!env[k]) return `${k} not given (run through ctest: tests/serve/serve_tests.cmake sets it)`;
  if (!existsSync(env.serve)) return `no server program at ${env.serve}`;
  if (!existsSync(`${env.modelDir}/model.safetensors`)) return `no model in ${env.modelDir} (the serve_model test writes it)`;
  return "";
}

/// Starts the server; resolves to { port, base, proc, log() } once it listens.
export async function startServer(args = []) {
  const proc = spawn(env.serve, ["--checkpoint", env.modelDir, "--host", "127.0.0.1", "--port", "0", ...args],
                     { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("serve did not start within 30 s:\n" + log)), 30000);
    const check = () => {
      const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    };
    proc.stderr.on("data", check);
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`serve exited with ${code} before listening:\n${log}`)); });
  });
  return { port, base: `http://127.0.0.1:${port}`, proc, log: () => log };
}

/// Sends SIGTERM; resolves to the exit code (rejects after `ms`).
export function stopServer(server, ms = 15000) {
  return new Promise((resolve, reject) => {
    if (server.proc.exitCode !== null) return resolve(server.proc.exitCode);
    const timer = setTimeout(() => { server.proc.kill("SIGKILL"); reject(new Error("serve did not stop within " + ms + " ms")); }, ms);
    server.proc.on("exit", (code, signal) => { clearTimeout(timer); resolve(code === null ? signal : code); });
    server.proc.kill("SIGTERM");
  });
}

const execFileP = promisify(execFile);

/// curl with -s and the status written last: resolves to { status, headers, body }.
export async function curl(args) {
  const { stdout } = await execFileP(env.curl, ["-s", "-D", "-", "-w", "\n%{http_code}", ...args], { maxBuffer: 16 << 20 });
  const cut = stdout.lastIndexOf("\n");
  const status = Number(stdout.slice(cut + 1));
  const text = stdout.slice(0, cut);
  // -D - puts the header block(s) first; the last one ends at the first blank line after "HTTP/".
  const lastHead = text.lastIndexOf("HTTP/1.1 ");
  const end = text.indexOf("\r\n\r\n", lastHead);
  return { status, headers: text.slice(lastHead, end), body: text.slice(end + 4) };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
