// The API's browsable docs (issue 16) in Debian's Chromium through playwright-core: /docs through
// the gateway renders every operation of /openapi.json, loads nothing from another host, and a
// call made from the page with the key entered in "Authorize" reaches the engine (200).
//
//   STELLAR_BASE_URL=http://127.0.0.1:8080 STELLAR_KEY=sk-stellar-… node docs.mjs
//
// Environment: STELLAR_BASE_URL (the gateway), STELLAR_KEY (a key), STELLAR_ARTIFACTS_DIR
// (screenshots; default tests/browser/artifacts/docs), STELLAR_CHROMIUM (default
// /usr/bin/chromium; never downloaded). Exits 0 when every check passed, else 1 with the failed
// check and failure.png. Run by tests/tests/e2e/browser_docs.rs against the real binaries.

import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.STELLAR_BASE_URL || "").replace(/\/+$/, "");
const KEY = process.env.STELLAR_KEY || "";
const ART = process.env.STELLAR_ARTIFACTS_DIR || path.join(here, "artifacts", "docs");
const CHROMIUM = process.env.STELLAR_CHROMIUM || "/usr/bin/chromium";

if (!BASE || !KEY) {
  console.error("docs.mjs: set STELLAR_BASE_URL and STELLAR_KEY");
  process.exit(2);
}
fs.mkdirSync(ART, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
const page = await browser.newPage();
const hosts = new Set();
const consoleLines = [];
page.on("request", (r) => hosts.add(new URL(r.url()).host));
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
try {
  const doc = await (await fetch(`${BASE}/openapi.json`)).json();
  let operations = 0;
  for (const item of Object.values(doc.paths)) {
    operations += Object.keys(item).filter((k) => ["get", "put", "post", "delete", "patch"].includes(k)).length;
  }
  check(operations > 50, `the document has ${operations} operations`);

  const res = await page.goto(`${BASE}/docs`, { waitUntil: "networkidle" });
  check(res.status() === 200, "GET /docs is 200");
  await page.waitForSelector(".opblock", { timeout: 20000 });
  const shown = await page.locator(".opblock").count();
  await page.screenshot({ path: path.join(ART, "docs.png"), fullPage: false });
  check(shown === operations, `the page shows every operation (${shown} of ${operations})`);
  const base = new URL(BASE).host;
  check([...hosts].every((h) => h === base), `every request went to the gateway (${[...hosts].join(", ")})`);

  // Authorize with the key, then call GET /api/v1/stats from the page.
  await page.click("button.authorize");
  const keyBox = page.locator(".modal-ux input[type=text]").first();
  await keyBox.fill(KEY);
  await page.locator(".modal-ux button.authorize").first().click();
  await page.locator(".modal-ux button.btn-done").first().click();
  const stats = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/api/v1/stats"])');
  await stats.locator(".opblock-summary").click();
  await stats.locator("button.try-out__btn").click();
  await stats.locator("button.execute").click();
  const status = stats.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor({ timeout: 15000 });
  const code = (await status.innerText()).trim();
  await page.screenshot({ path: path.join(ART, "try-it-out.png"), fullPage: false });
  check(code.startsWith("200"), `GET /api/v1/stats from the page answers 200 (got ${code})`);
  const body = await stats.locator(".live-responses-table .response-col_description pre").first().innerText();
  check(body.includes("total_memories"), "the page shows the engine's answer");
  await browser.close();
  console.log("docs.mjs: all checks passed");
} catch (e) {
  console.error(String(e));
  console.error(consoleLines.slice(-20).join("\n"));
  try {
    await page.screenshot({ path: path.join(ART, "failure.png"), fullPage: true });
  } catch {}
  await browser.close();
  process.exit(1);
}
