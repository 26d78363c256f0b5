// tests/serve/page.test.mjs (CTest serve_page): the chat page at / in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no sandbox, no background networking: the browser talks
// to 127.0.0.1 only). Type a message, watch the reply arrive in pieces (streamed, not at once), check it
// is the API's answer for the page's settings, take a screenshot (serve-e2e/chat-page.png), reset.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { env, skipReason, startServer, stopServer } from "./common.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const skip = skipReason() || (existsSync(CHROMIUM) ? "" : `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
if (skip) {
  console.log(`[skipped] ${skip}`);
  process.exit(0);
}
const { chromium } = await import("playwright-core");

let server, browser;

before(async () => {
  mkdirSync(env.workDir, { recursive: true });
  // 40 ms a token: slow enough to see the reply grow.
  server = await startServer(["--threads", "1", "--token_delay_ms", "40"]);
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
           "--disable-sync", "--no-first-run", "--disable-features=Translate,OptimizationHints,MediaRouter",
           "--disable-gpu", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await stopServer(server);
});

test("type a message, see the reply stream in, screenshot, reset", async () => {
  const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(server.base)) external.push(r.url()); });
  await page.goto(server.base + "/");
  await page.waitForFunction(() => document.getElementById("model").textContent.includes("context"));
  await page.fill("#temperature", "0");
  await page.fill("#max_tokens", "40");
  // Record the reply's length at every change of the page, to see it grow piece by piece.
  await page.evaluate(() => {
    window.__lengths = [];
    new MutationObserver(() => {
      const a = [...document.querySelectorAll(".msg.assistant")].at(-1);
      if (a) window.__lengths.push(a.textContent.length);
    }).observe(document.getElementById("log"), { subtree: true, childList: true, characterData: true });
  });
  const question = "Tell me a story about a cat.";
  await page.fill("#input", question);
  await page.press("#input", "Enter");
  await page.waitForSelector(".msg.user");
  await page.waitForSelector(".msg.assistant.done", { timeout: 30000 });
  const reply = await page.textContent(".msg.assistant.done");
  const meta = await page.textContent(".meta");
  const lengths = await page.evaluate(() => [...new Set(window.__lengths)]);
  console.log(`reply: ${JSON.stringify(reply)}; ${meta}; lengths seen: ${lengths.join(",")}`);
  assert.ok(reply.length > 0);
  assert.ok(lengths.filter((n) => n > 0 && n < reply.length).length >= 2, `not streamed: lengths ${lengths}`);
  assert.match(meta, /finish: (stop|length)/);

  // The page's answer is the API's for the same settings (temperature 0, max_tokens 40).
  const api = await (await fetch(`${server.base}/v1/chat/completions`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: question }], temperature: 0, top_p: 0.9, top_k: 40, max_tokens: 40 }),
  })).json();
  assert.equal(reply, api.choices[0].message.content);

  const shot = `${env.workDir}/chat-page.png`;
  await page.screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);
  assert.ok(existsSync(shot));

  // A second turn carries the history; Reset empties the conversation.
  await page.fill("#input", "And then?");
  await page.press("#input", "Enter");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant.done").length === 2, null, { timeout: 30000 });
  await page.click("#reset");
  assert.equal(await page.locator(".msg").count(), 0);
  assert.deepEqual(external, [], "the page fetched something from elsewhere");
});
