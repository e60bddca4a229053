// The landing page and dashboard, driven in Debian's Chromium (headless) through playwright-core.
//
//   STELLAR_BASE_URL=http://127.0.0.1:8080 node tests/browser/flow.mjs
//
// Environment:
//   STELLAR_BASE_URL        the gateway (required); pages, billing and the memory API behind it
//   STELLAR_ARTIFACTS_DIR   where screenshots go (default tests/browser/artifacts)
//   STELLAR_CHROMIUM        the browser binary (default /usr/bin/chromium); never downloaded
//   STELLAR_EXPECT_CHECKOUT_LEMONSQUEEZY / _STRIPE / _TOSS
//                           URL prefixes the browser must reach after choosing each provider
//                           (the fake providers' checkout pages); unset = "left the landing page"
//   STELLAR_KEY_WAIT_MS     how long a revoked key may keep working (default 3000; design: 1 s)
//
// It exits 0 when every check passed, else 1 with the failed check, a screenshot (failure.png)
// and the browser's console output. Run by tests/tests/e2e/browser.rs against the real binaries.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.STELLAR_BASE_URL || "").replace(/\/+$/, "");
const ART = process.env.STELLAR_ARTIFACTS_DIR || path.join(here, "artifacts");
const CHROMIUM = process.env.STELLAR_CHROMIUM || "/usr/bin/chromium";
const KEY_WAIT_MS = Number(process.env.STELLAR_KEY_WAIT_MS || 3000);
const EXPECT = {
  lemonsqueezy: process.env.STELLAR_EXPECT_CHECKOUT_LEMONSQUEEZY || "",
  stripe: process.env.STELLAR_EXPECT_CHECKOUT_STRIPE || "",
  toss: process.env.STELLAR_EXPECT_CHECKOUT_TOSS || "",
};
const KEY_RE = /^sk-stellar-[0-9a-f]{32}$/;

if (!BASE) {
  console.error("flow.mjs: set STELLAR_BASE_URL to the gateway's URL, e.g. http://127.0.0.1:8080");
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) {
  console.error(`flow.mjs: ${CHROMIUM} not found; install Debian's chromium (apt-get install -y chromium)`);
  process.exit(2);
}
fs.mkdirSync(ART, { recursive: true });
const baseOrigin = new URL(BASE).origin;

/* ---------- tiny test kit ---------- */

let step = "start";
let shotNo = 0;
const consoleLines = [];
const pageErrors = [];
const externalRequests = [];
const t0 = Date.now();

class CheckFailed extends Error {}
function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}
function log(msg) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
}
async function stepDo(name, fn) {
  step = name;
  log(`▶ ${name}`);
  await fn();
}
async function shot(page, name, opts = {}) {
  shotNo += 1;
  const file = path.join(ART, `${String(shotNo).padStart(2, "0")}-${name}.png`);
  // A full-page shot taken while scrolled draws the sticky header mid-page.
  if (opts.fullPage !== false) await page.evaluate(() => window.scrollTo({ top: 0, behavior: "instant" }));
  await page.screenshot({ path: file, fullPage: opts.fullPage !== false, animations: "disabled" });
  log(`  screenshot ${path.basename(file)}`);
}
async function until(what, fn, ms = 10000, every = 200) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new CheckFailed(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, every));
  }
}
async function text(page, sel) {
  return ((await page.locator(sel).textContent()) || "").replace(/\s+/g, " ").trim();
}
async function noHorizontalOverflow(page, where) {
  const m = await page.evaluate(() => ({
    sw: document.documentElement.scrollWidth,
    cw: document.documentElement.clientWidth,
    offenders: Array.from(document.querySelectorAll("body *"))
      .filter((el) => {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.right <= document.documentElement.clientWidth + 1) return false;
        // Boxes inside a scroll container (code blocks, tables) may scroll on their own.
        for (let p = el.parentElement; p; p = p.parentElement) {
          const ox = getComputedStyle(p).overflowX;
          if (ox === "auto" || ox === "scroll" || ox === "hidden") return false;
        }
        return true;
      })
      .slice(0, 5)
      .map((el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}`),
  }));
  check(
    m.sw <= m.cw && m.offenders.length === 0,
    `${where}: horizontal overflow at ${m.cw}px (scrollWidth ${m.sw}; ${m.offenders.join(", ")})`,
  );
}
/** Basic accessibility: lang, one h1, every visible control has a name, every input a label,
 *  ids unique. (No axe-core here: nothing is downloaded.) */
async function a11yLint(page, where) {
  const problems = await page.evaluate(() => {
    const out = [];
    const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
    if (!document.documentElement.lang) out.push("<html> has no lang");
    const h1s = Array.from(document.querySelectorAll("h1")).filter(visible);
    if (h1s.length !== 1) out.push(`${h1s.length} visible h1 elements`);
    const name = (el) =>
      (el.getAttribute("aria-label") ||
        (el.getAttribute("aria-labelledby") || "").split(/\s+/).map((id) => document.getElementById(id)?.textContent || "").join(" ") ||
        el.textContent ||
        el.getAttribute("title") ||
        "").trim();
    for (const el of document.querySelectorAll("a[href], button")) {
      if (visible(el) && !name(el)) out.push(`unnamed ${el.tagName.toLowerCase()} ${el.outerHTML.slice(0, 80)}`);
    }
    for (const el of document.querySelectorAll("input, select, textarea")) {
      if (!visible(el) || el.type === "hidden") continue;
      const labelled = (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || el.closest("label");
      if (!labelled) out.push(`input without a label: ${el.outerHTML.slice(0, 80)}`);
    }
    const ids = new Map();
    for (const el of document.querySelectorAll("[id]")) ids.set(el.id, (ids.get(el.id) || 0) + 1);
    for (const [id, n] of ids) if (n > 1) out.push(`id "${id}" used ${n} times`);
    return out;
  });
  check(problems.length === 0, `${where}: accessibility problems:\n  ${problems.join("\n  ")}`);
}

async function api(method, p, { key, body } = {}) {
  const headers = {};
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(BASE + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const t = await res.text();
  let json = null;
  try {
    json = JSON.parse(t);
  } catch {
    json = null;
  }
  return { status: res.status, json, text: t };
}
const intFmt = new Intl.NumberFormat("en-US");
const usdFmt = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2, minimumFractionDigits: 0 });
const krwFmt = new Intl.NumberFormat("ko-KR", { style: "currency", currency: "KRW" });

/* ---------- the browser ---------- */

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stellar-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
  viewport: { width: 1280, height: 800 },
  locale: "en-US",
  timezoneId: "UTC",
  reducedMotion: "reduce", // no smooth scrolling or shimmer in screenshots
  permissions: ["clipboard-read", "clipboard-write"],
});
context.setDefaultTimeout(15000);

// Nothing may leave the machine: the pages use no CDN, font or analytics. Any other host is
// recorded and refused (the fake providers listen on 127.0.0.1 too).
await context.route("**/*", (route) => {
  const u = new URL(route.request().url());
  if (u.protocol === "data:" || u.protocol === "blob:" || ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname)) {
    return route.continue();
  }
  externalRequests.push(u.href);
  return route.abort("blockedbyclient");
});

const page = context.pages()[0] || (await context.newPage());
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => pageErrors.push(`${page.url()}: ${e.message}`));

let exitCode = 0;
try {
  await run();
  check(pageErrors.length === 0, `uncaught JavaScript errors:\n  ${pageErrors.join("\n  ")}`);
  check(externalRequests.length === 0, `requests to other hosts: ${externalRequests.join(", ")}`);
  log(`✔ all browser checks passed (${shotNo} screenshots in ${ART})`);
} catch (e) {
  exitCode = 1;
  console.error(`\n✘ FAILED in step "${step}": ${e instanceof CheckFailed ? e.message : e.stack || e}`);
  console.error(`  page: ${page.url()}`);
  try {
    await page.screenshot({ path: path.join(ART, "failure.png"), fullPage: true });
    console.error(`  screenshot: ${path.join(ART, "failure.png")}`);
  } catch {
    /* the page may be gone */
  }
  if (pageErrors.length) console.error(`  page errors:\n    ${pageErrors.join("\n    ")}`);
  console.error(`  browser console (last 30):\n    ${consoleLines.slice(-30).join("\n    ")}`);
} finally {
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);

/* ---------- the flow ---------- */

async function run() {
  const email = `browser-${Date.now()}-${process.pid}@example.com`;
  let key = "";
  let tiers = [];

  await stepDo("landing page shows the plans from GET /billing/tiers", async () => {
    const r = await api("GET", "/billing/tiers");
    check(r.status === 200 && Array.isArray(r.json?.tiers) && r.json.tiers.length > 0, `GET /billing/tiers → ${r.status} ${r.text.slice(0, 200)}`);
    tiers = r.json.tiers;
    const resp = await page.goto(BASE + "/");
    check(resp && resp.status() === 200, `GET / → ${resp && resp.status()}`);
    check((await page.title()).includes("Stellar Gate"), "landing title");
    await page.locator("#plans .plan").first().waitFor();
    check((await page.locator("#plans .plan").count()) === tiers.length, "one card per tier");
    for (const t of tiers) {
      const card = page.locator(`#plans .plan[data-tier="${t.name}"]`);
      const c = ((await card.textContent()) || "").replace(/\s+/g, " ");
      for (const want of [intFmt.format(t.max_memories), intFmt.format(t.requests_per_minute), intFmt.format(t.max_api_keys), usdFmt.format(t.price_usd)]) {
        check(c.includes(want), `plan "${t.name}" should show ${want} (from /billing/tiers); card says: ${c}`);
      }
      if (t.price_usd > 0 && t.price_krw > 0) check(c.includes(krwFmt.format(t.price_krw)), `plan "${t.name}" should show ${krwFmt.format(t.price_krw)}`);
      if (t.price_usd > 0) check((await card.getByRole("button", { name: /subscribe/i }).count()) === 1, `plan "${t.name}" has a Subscribe button`);
    }
    const curlOrigin = ((await page.locator(".hero .origin").first().textContent()) || "").trim();
    check(curlOrigin === baseOrigin, `hero example uses the page origin (${curlOrigin})`);
    await noHorizontalOverflow(page, "landing 1280px");
    await a11yLint(page, "landing");
    await shot(page, "landing-desktop");
  });

  await stepDo("sign-up rejects a bad e-mail without a request", async () => {
    await page.locator("#signup-email").fill("not-an-email");
    await page.locator("#signup-submit").click();
    await page.locator("#signup-error").filter({ hasText: /valid e-mail/i }).waitFor();
    check((await page.locator("#signup-email").getAttribute("aria-invalid")) === "true", "aria-invalid set");
  });

  await stepDo("sign up → key shown once, copy button, first curl", async () => {
    await page.locator("#signup-email").fill(email);
    await page.locator("#signup-submit").click();
    await page.locator("#key-reveal").waitFor({ state: "visible" });
    key = await text(page, "#new-key");
    check(KEY_RE.test(key), `a well-formed key is shown (${key})`);
    const curl = await text(page, "#first-curl");
    check(curl.includes(`${baseOrigin}/api/v1/store`) && curl.includes(key), `curl example uses the origin and key: ${curl}`);
    await page.locator("#copy-key").click();
    await page.locator("#copy-key").filter({ hasText: "Copied" }).waitFor();
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    check(clip === key, `clipboard holds the key (${clip})`);
    await shot(page, "signup-key-shown", { fullPage: false });
  });

  await stepDo("'Open my dashboard' signs in with the new key; Sign out forgets it", async () => {
    await page.locator("#open-dashboard").click();
    await page.waitForURL((u) => u.pathname === "/dashboard");
    await page.locator("#account-view").waitFor({ state: "visible" });
    await page.locator("#signout").click();
    await page.locator("#signin-view").waitFor({ state: "visible" });
    const stored = await page.evaluate(() => sessionStorage.getItem("stellar-gate.api-key"));
    check(stored === null, "signing out clears the key from sessionStorage");
    check(await page.evaluate(() => document.activeElement?.id === "signin-key"), "focus goes to the key field");
  });

  await stepDo("registering the same e-mail again gives no key", async () => {
    await page.goto(BASE + "/?again=1#signup");
    await page.locator("#signup-email").fill(email);
    await page.locator("#signup-submit").click();
    await page.locator("#signup-error").filter({ hasText: /already/i }).waitFor();
    check(await page.locator("#key-reveal").isHidden(), "no key revealed for a known e-mail");
    await page.locator("#signup-error").scrollIntoViewIfNeeded();
    await shot(page, "signup-duplicate", { fullPage: false });
  });

  await stepDo("dashboard: sign-in validates keys", async () => {
    await page.goto(BASE + "/dashboard");
    await page.locator("#signin-view").waitFor({ state: "visible" });
    await a11yLint(page, "dashboard sign-in");
    await shot(page, "dashboard-signin");
    await page.locator("#signin-key").fill("hello");
    await page.locator("#signin-submit").click();
    await page.locator("#signin-error").filter({ hasText: /doesn't look like/i }).waitFor();
    await page.locator("#signin-key").fill("sk-stellar-" + "0".repeat(32));
    await page.locator("#signin-submit").click();
    await page.locator("#signin-error").filter({ hasText: /isn't valid|revoked/i }).waitFor();
  });

  await stepDo("dashboard: free tier, 0 memories", async () => {
    await page.locator("#signin-key").fill(key);
    await page.locator("#signin-key").press("Enter");
    await page.locator("#account-view").waitFor({ state: "visible" });
    await page.locator("#keys-body tr").first().waitFor();
    const free = tiers[0];
    check((await text(page, "#tier")).toLowerCase() === free.name, `tier is ${free.name}: ${await text(page, "#tier")}`);
    check((await text(page, "#memories")) === `0 / ${intFmt.format(free.max_memories)}`, `memories 0 / limit: ${await text(page, "#memories")}`);
    check((await text(page, "#rpm")) === intFmt.format(free.requests_per_minute), `rpm: ${await text(page, "#rpm")}`);
    check((await text(page, "#keys-count")) === `1 / ${intFmt.format(free.max_api_keys)}`, `keys 1 / limit: ${await text(page, "#keys-count")}`);
    check((await text(page, "#sub-status")) === "No subscription", `status: ${await text(page, "#sub-status")}`);
    check((await page.locator("#mem-meter").getAttribute("aria-valuenow")) === "0", "meter at 0");
    check(await page.locator("#portal").isHidden(), "no portal button without a subscription");
    const stored = await page.evaluate(() => sessionStorage.getItem("stellar-gate.api-key"));
    check(stored === key, "the key is kept in sessionStorage");
    const local = await page.evaluate(() => JSON.stringify(Object.keys(localStorage)));
    check(local === "[]", `nothing in localStorage (${local})`);
    check((await page.locator("#chart svg rect.bar-rect").count()) === 24, "24 hourly bars in the chart");
    await a11yLint(page, "dashboard");
    await shot(page, "dashboard-empty");
  });

  await stepDo("a store through the gateway → dashboard shows 1 memory", async () => {
    const r = await api("POST", "/api/v1/store", { key, body: { content: "The user prefers dark mode", importance: 0.8 } });
    check(r.status >= 200 && r.status < 300, `POST /api/v1/store → ${r.status} ${r.text.slice(0, 200)}`);
    const free = tiers[0];
    await until("memories 1 / limit on the dashboard", async () => {
      await page.reload();
      await page.locator("#keys-body tr").first().waitFor();
      return (await text(page, "#memories")) === `1 / ${intFmt.format(free.max_memories)}`;
    });
    check((await page.locator("#mem-meter").getAttribute("aria-valuenow")) === "1", "meter at 1");
    const w = await page.locator("#mem-meter > span").evaluate((el) => el.getBoundingClientRect().width);
    check(w > 0, "the memory bar is drawn");
    await shot(page, "dashboard-one-memory");
  });

  await stepDo("the chart shows the account's requests (GET /auth/usage/history)", async () => {
    // The gateway writes usage behind (batched); wait for it to show up.
    await until("a non-zero request count in the chart", async () => {
      await page.reload();
      await page.locator("#chart svg").waitFor();
      const total = await page.locator("#chart svg rect.bar-rect").evaluateAll((rs) => rs.reduce((a, r) => a + Number(r.dataset.requests || 0), 0));
      return total > 0;
    }, 20000, 1000);
    const label = await page.locator("#chart svg").getAttribute("aria-label");
    check(/requests in the last 24 hours/.test(label || ""), `chart has a text alternative (${label})`);
    await shot(page, "dashboard-chart");
  });

  let second = "";
  await stepDo("create a key (shown once)", async () => {
    check(tiers[0].max_api_keys >= 2, `this flow needs a first tier that allows 2+ keys (the test's tier table); it allows ${tiers[0].max_api_keys}`);
    await page.locator("#new-key-name").fill("ci <b>key</b>");
    await page.locator("#create-key").click();
    await page.locator("#created-key").waitFor({ state: "visible" });
    second = await text(page, "#created-key-value");
    check(KEY_RE.test(second) && second !== key, `a new key is shown (${second})`);
    await page.locator("#keys-body tr", { hasText: "ci <b>key</b>" }).waitFor();
    check((await page.locator("#keys-body b").count()) === 0, "key names are shown as text, never as HTML");
    const r = await api("GET", "/api/v1/stats", { key: second });
    check(r.status === 200, `the new key works: GET /api/v1/stats → ${r.status}`);
    await shot(page, "dashboard-key-created");
    await page.locator("#created-done").click();
    check(await page.locator("#created-key").isHidden(), "the new key is hidden again");
  });

  await stepDo("the tier's key limit is shown as an error", async () => {
    const free = tiers[0];
    let have = 2;
    while (have < free.max_api_keys) {
      const r = await api("POST", "/auth/api-keys", { key, body: { name: `filler ${have}` } });
      check(r.status === 201, `filler key → ${r.status}`);
      have += 1;
    }
    await page.locator("#new-key-name").fill("one too many");
    await page.locator("#create-key").click();
    await page.locator("#keys-error").filter({ hasText: /./ }).waitFor();
    log(`  key limit message: ${await text(page, "#keys-error")}`);
    check(await page.locator("#created-key").isHidden(), "no key shown over the limit");
  });

  await stepDo("revoke: in-page confirmation, Escape keeps the key", async () => {
    const row = page.locator("#keys-body tr", { hasText: "ci <b>key</b>" });
    const revoke = row.getByRole("button", { name: /revoke/i });
    await revoke.click();
    const dlg = page.getByRole("dialog", { name: /revoke/i });
    await dlg.waitFor();
    check((await dlg.getAttribute("aria-modal")) === "true", "confirm dialog is aria-modal");
    check(await page.evaluate(() => document.activeElement?.id === "confirm-cancel"), "focus starts on the safe choice");
    await shot(page, "dashboard-revoke-confirm", { fullPage: false });
    await page.keyboard.press("Escape");
    await dlg.waitFor({ state: "hidden" });
    check(await revoke.evaluate((el) => el === document.activeElement), "focus returns to the Revoke button");
    const r = await api("GET", "/api/v1/stats", { key: second });
    check(r.status === 200, `after Escape the key still works (${r.status})`);
  });

  await stepDo("revoke the key → 401 from the gateway", async () => {
    const row = page.locator("#keys-body tr", { hasText: "ci <b>key</b>" });
    await row.getByRole("button", { name: /revoke/i }).click();
    const dlg = page.getByRole("dialog", { name: /revoke/i });
    await dlg.getByRole("button", { name: "Revoke key" }).click();
    await dlg.waitFor({ state: "hidden" });
    await page.locator("#keys-body tr.revoked", { hasText: "ci <b>key</b>" }).or(page.locator("#dash-status", { hasText: "revoked" })).first().waitFor();
    const start = Date.now();
    const status = await until(
      "the revoked key to get 401",
      async () => {
        const r = await api("GET", "/api/v1/stats", { key: second });
        return r.status === 401 ? r.status : false;
      },
      KEY_WAIT_MS,
      100,
    );
    log(`  revoked key → ${status} after ${Date.now() - start} ms`);
    const ok = await api("GET", "/api/v1/stats", { key });
    check(ok.status === 200, `the first key still works (${ok.status})`);
    await shot(page, "dashboard-key-revoked");
  });

  await stepDo("revoking the last active key → billing's 409 message, the key keeps working", async () => {
    const active = page.locator("#keys-body tr:not(.revoked)");
    check((await active.count()) === 1, `one active key left (${await active.count()})`);
    await active.first().getByRole("button", { name: /revoke/i }).click();
    const dlg = page.getByRole("dialog", { name: /revoke/i });
    await dlg.getByRole("button", { name: "Revoke key" }).click();
    await dlg.waitFor({ state: "hidden" });
    const err = page.locator("#keys-error");
    await err.filter({ hasText: /last active key/i }).waitFor();
    const msg = await text(page, "#keys-error");
    check(msg.includes("rotate it instead") && msg.includes("/rotate"), `billing's message is shown: ${msg}`);
    check(await page.locator("#account-view").isVisible(), "still signed in");
    const r = await api("GET", "/api/v1/stats", { key });
    check(r.status === 200, `the last key still works (${r.status})`);
    await err.scrollIntoViewIfNeeded();
    await shot(page, "dashboard-last-key-kept", { fullPage: false });
  });

  await stepDo("rotate the session's key: confirmation, new key shown once, the session switches", async () => {
    const row = page.locator("#keys-body tr:not(.revoked)").first();
    check((await row.locator(".tag", { hasText: "this session" }).count()) === 1, "the active key is this session's");
    const rotate = row.getByRole("button", { name: /rotate/i });
    await rotate.click();
    const dlg = page.getByRole("dialog", { name: /rotate/i });
    await dlg.waitFor();
    check(await page.evaluate(() => document.activeElement?.id === "confirm-cancel"), "focus starts on the safe choice");
    check(/signed in with/i.test(await text(page, "#confirm-text")), "the dialog says it is this session's key");
    await page.keyboard.press("Escape");
    await dlg.waitFor({ state: "hidden" });
    check(await rotate.evaluate((el) => el === document.activeElement), "focus returns to the Rotate button");
    check((await api("GET", "/api/v1/stats", { key })).status === 200, "after Escape the key still works");

    await rotate.click();
    await dlg.waitFor();
    await shot(page, "dashboard-rotate-confirm", { fullPage: false });
    await dlg.getByRole("button", { name: "Rotate key" }).click();
    await dlg.waitFor({ state: "hidden" });
    await page.locator("#created-key").waitFor({ state: "visible" });
    const rotated = await text(page, "#created-key-value");
    check(KEY_RE.test(rotated) && rotated !== key, `a new key is shown (${rotated})`);
    check(/replacement/i.test(await text(page, "#created-key-title")), `titled as a replacement: ${await text(page, "#created-key-title")}`);
    await page.locator("#copy-created").click();
    await page.locator("#copy-created").filter({ hasText: "Copied" }).waitFor();
    check((await page.evaluate(() => navigator.clipboard.readText())) === rotated, "clipboard holds the new key");
    await until("this session to use the new key", async () => (await page.evaluate(() => sessionStorage.getItem("stellar-gate.api-key"))) === rotated, 5000, 100);
    await page.locator("#keys-body tr:not(.revoked)", { hasText: rotated.slice(0, 15) }).locator(".tag", { hasText: "this session" }).waitFor();
    check((await text(page, "#who")).includes(rotated.slice(0, 15)), `"signed in with" names the new key: ${await text(page, "#who")}`);
    check(await page.locator("#account-view").isVisible(), "still signed in");
    const start = Date.now();
    await until(
      "the replaced key to get 401",
      async () => (await api("GET", "/api/v1/stats", { key })).status === 401,
      KEY_WAIT_MS,
      100,
    );
    log(`  replaced key → 401 after ${Date.now() - start} ms`);
    const r = await api("GET", "/api/v1/stats", { key: rotated });
    check(r.status === 200, `the new key works through the gateway (${r.status})`);
    await shot(page, "dashboard-key-rotated");
    await page.locator("#created-done").click();
    check(await page.locator("#created-key").isHidden(), "the new key is hidden again");
    key = rotated;
    await page.reload();
    await page.locator("#account-view").waitFor({ state: "visible" });
    await page.locator("#keys-body tr").first().waitFor();
    check(await page.locator("#signin-view").isHidden(), "a reload keeps the session on the new key");
  });

  await stepDo("'Upgrade' opens the checkout for the next tier", async () => {
    const next = tiers[1];
    const link = page.locator("#upgrade");
    check((await text(page, "#upgrade")).toLowerCase() === `upgrade to ${next.name}`, `upgrade link names the next tier: ${await text(page, "#upgrade")}`);
    await link.click();
    const dlg = page.getByRole("dialog", { name: new RegExp(`subscribe to ${next.name}`, "i") });
    await dlg.waitFor();
    check((await page.locator("#checkout-email").inputValue()) === email, "the account's e-mail is filled in");
    await page.keyboard.press("Escape");
    await dlg.waitFor({ state: "hidden" });
    await page.goto(BASE + "/dashboard");
    await page.locator("#account-view").waitFor({ state: "visible" });
  });

  await stepDo("dashboard at 375 px", async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    await page.reload();
    await page.locator("#keys-body tr").first().waitFor();
    await noHorizontalOverflow(page, "dashboard 375px");
    await shot(page, "dashboard-phone");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await stepDo("subscribe modal: keyboard, focus trap, Escape returns focus", async () => {
    await page.goto(BASE + "/");
    await page.locator("#plans .plan").first().waitFor();
    const paid = tiers.filter((t) => t.price_usd > 0);
    check(paid.length > 0, "a paid tier exists");
    const target = `[data-subscribe="${paid[0].name}"]`;
    // Reach the first Subscribe button with Tab alone.
    let reached = false;
    for (let i = 0; i < 80 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, target);
    }
    check(reached, "Subscribe is reachable with Tab");
    await page.keyboard.press("Enter");
    const dlg = page.getByRole("dialog", { name: /subscribe/i });
    await dlg.waitFor();
    check((await dlg.getAttribute("aria-modal")) === "true", "checkout dialog is aria-modal");
    check(await page.evaluate(() => document.getElementById("checkout-dialog").contains(document.activeElement)), "focus moves into the dialog");
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press(i % 3 === 2 ? "Shift+Tab" : "Tab");
      check(await page.evaluate(() => document.getElementById("checkout-dialog").contains(document.activeElement)), `focus stays in the dialog (Tab #${i + 1})`);
    }
    await page.keyboard.press("Escape");
    await dlg.waitFor({ state: "hidden" });
    check(await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, target), "focus returns to the Subscribe button");
  });

  const openCheckout = async (tierName) => {
    await page.goto(`${BASE}/?from=flow-${Date.now()}#pricing`);
    await page.locator(`[data-subscribe="${tierName}"]`).click();
    const dlg = page.getByRole("dialog", { name: /subscribe/i });
    await dlg.waitFor();
    await page.locator("#checkout-email").fill(email);
    return dlg;
  };
  const paidTier = tiers.find((t) => t.price_usd > 0).name;

  await stepDo("provider errors are shown in the modal", async () => {
    const dlg = await openCheckout(paidTier);
    // A provider that is not configured: billing answers 503 {"detail": "... is not configured"}.
    await page.route("**/billing/stripe/checkout", (route) =>
      route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ detail: "stripe is not configured" }) }),
    );
    await dlg.getByRole("button", { name: /stripe/i }).click();
    await page.locator("#checkout-error").filter({ hasText: "stripe is not configured" }).waitFor();
    check(await dlg.isVisible(), "the modal stays open on an error");
    await shot(page, "checkout-error-503", { fullPage: false });
    await page.unroute("**/billing/stripe/checkout");
    // The network fails.
    await page.route("**/billing/lemonsqueezy/checkout", (route) => route.abort("connectionrefused"));
    await dlg.getByRole("button", { name: /lemon squeezy/i }).click();
    await page.locator("#checkout-error").filter({ hasText: /couldn't reach the server/i }).waitFor();
    await page.unroute("**/billing/lemonsqueezy/checkout");
    // The Toss SDK does not load.
    await page.route(/\/billing\/toss\/checkout$/, async (route) => {
      const resp = await route.fetch();
      const body = await resp.json();
      await page.route((u) => u.href === new URL(body.sdk_url).href, (r) => r.abort("connectionrefused"));
      await route.fulfill({ response: resp, json: body });
    });
    await dlg.getByRole("button", { name: /tosspayments/i }).click();
    await page.locator("#checkout-error").filter({ hasText: /couldn't load the tosspayments/i }).waitFor();
    check(await dlg.isVisible(), "the modal stays open when the Toss SDK fails to load");
    await shot(page, "checkout-error-toss-sdk", { fullPage: false });
    await page.unrouteAll({ behavior: "ignoreErrors" });
    // Checking the e-mail needs no request.
    await page.locator("#checkout-email").fill("nope");
    await dlg.getByRole("button", { name: /stripe/i }).click();
    await page.locator("#checkout-error").filter({ hasText: /e-mail/i }).waitFor();
  });

  for (const [provider, label, tierName] of [
    ["lemonsqueezy", /lemon squeezy/i, paidTier],
    ["stripe", /stripe/i, tiers[tiers.length - 1].name],
    ["toss", /tosspayments/i, paidTier],
  ]) {
    await stepDo(`subscribe with ${provider} reaches its (fake) checkout`, async () => {
      const dlg = await openCheckout(tierName);
      if (provider === "toss") {
        // The SDK is loaded only once Toss is chosen.
        const before = await page.evaluate(() => typeof window.TossPayments);
        check(before === "undefined", "the Toss SDK is not loaded before Toss is chosen");
      }
      const landing = page.url();
      await dlg.getByRole("button", { name: label }).click();
      await page.waitForURL((u) => {
        const s = u.toString();
        return EXPECT[provider] ? s.startsWith(EXPECT[provider]) : s !== landing && !s.startsWith(BASE + "/#");
      }, { timeout: 15000 });
      await page.waitForLoadState("load");
      log(`  ${provider} → ${page.url()}`);
      const body = await page.locator("body").textContent();
      check((body || "").trim().length > 0, `the ${provider} page has content`);
      await shot(page, `checkout-${provider}`, { fullPage: false });
    });
  }

  // The fake Toss card-registration page (tests/tests/e2e/browser.rs) links to the success URL
  // (#approve) and to the fail URL (#cancel), as the real window redirects after either.
  await stepDo("Toss: closing the card window → back on the landing page with an error", async () => {
    check(page.url().startsWith(EXPECT.toss || "\u0000"), `on the fake Toss page (${page.url()})`);
    await page.locator("#cancel").click();
    await page.waitForURL((u) => u.toString().startsWith(BASE + "/?") && u.searchParams.get("checkout") === "failed");
    const banner = page.getByRole("alert").filter({ hasText: /nothing was charged/i });
    await banner.waitFor();
    check(/TossPayments/.test((await banner.textContent()) || ""), "the banner names TossPayments");
    await shot(page, "toss-cancelled", { fullPage: false });
  });

  const paid = tiers.find((t) => t.name === paidTier);
  await stepDo("Toss: card registered → the dashboard shows the paid plan", async () => {
    const dlg = await openCheckout(paidTier);
    await dlg.getByRole("button", { name: /tosspayments/i }).click();
    await page.waitForURL((u) => u.toString().startsWith(EXPECT.toss));
    await page.locator("#approve").click();
    await page.waitForURL((u) => u.pathname === "/dashboard" && u.searchParams.get("checkout") === "success", { timeout: 30000 });
    await page.locator("#banner").filter({ hasText: /thank you/i }).waitFor();
    await until(`tier ${paidTier} on the dashboard`, async () => (await text(page, "#tier")).toLowerCase() === paidTier, 10000, 300);
    await page.locator("#keys-body tr").first().waitFor();
    check((await text(page, "#sub-status")) === "Active", `status Active: ${await text(page, "#sub-status")}`);
    check(/^Renews /.test(await text(page, "#period")), `period end shown: ${await text(page, "#period")}`);
    check((await text(page, "#rpm")) === intFmt.format(paid.requests_per_minute), `rpm of ${paidTier}: ${await text(page, "#rpm")}`);
    check((await text(page, "#memories")) === `1 / ${intFmt.format(paid.max_memories)}`, `memory limit of ${paidTier}: ${await text(page, "#memories")}`);
    check(await page.locator("#cancel-sub").isVisible(), "a Cancel subscription button");
    await shot(page, "dashboard-subscribed");
  });

  await stepDo("cancel the subscription (in-page confirmation) → cancelled, plan kept", async () => {
    await page.locator("#cancel-sub").click();
    const dlg = page.getByRole("dialog", { name: /cancel your subscription/i });
    await dlg.waitFor();
    await shot(page, "dashboard-cancel-confirm", { fullPage: false });
    await dlg.getByRole("button", { name: "Cancel subscription" }).click();
    await dlg.waitFor({ state: "hidden" });
    await until("status Cancelled", async () => (await text(page, "#sub-status")) === "Cancelled", 10000, 300);
    check((await text(page, "#tier")).toLowerCase() === paidTier, "the paid tier stays until the period ends");
    check(/^Ends /.test(await text(page, "#period")), `period end shown as the end: ${await text(page, "#period")}`);
    check(await page.locator("#cancel-sub").isHidden(), "no second cancel");
    await shot(page, "dashboard-cancelled");
  });

  await stepDo("plans: a failed load offers a retry; an unconfigured provider is disabled", async () => {
    let calls = 0;
    await page.route("**/billing/tiers", async (route) => {
      calls += 1;
      if (calls === 1) return route.fulfill({ status: 500, contentType: "application/json", body: '{"detail":"boom"}' });
      const resp = await route.fetch();
      const body = await resp.json();
      body.providers = { ...body.providers, stripe: false };
      return route.fulfill({ response: resp, json: body });
    });
    await page.goto(`${BASE}/?from=flow-retry#pricing`);
    const err = page.locator("#plans-error");
    await err.filter({ hasText: /couldn't load the plans/i }).waitFor();
    await shot(page, "plans-error", { fullPage: false });
    await err.getByRole("button", { name: /try again/i }).click();
    await page.locator("#plans .plan").first().waitFor();
    check(await err.isHidden(), "the error goes away after a successful retry");
    await page.locator(`[data-subscribe="${paidTier}"]`).click();
    const dlg = page.getByRole("dialog", { name: /subscribe/i });
    await dlg.waitFor();
    check(await dlg.getByRole("button", { name: /stripe/i }).isDisabled(), "Stripe is disabled when not configured");
    check(await dlg.getByRole("button", { name: /lemon squeezy/i }).isEnabled(), "Lemon Squeezy stays enabled");
    await page.keyboard.press("Escape");
    await dlg.waitFor({ state: "hidden" });
    await page.unrouteAll({ behavior: "ignoreErrors" });
  });

  await stepDo("landing at 375 px: no horizontal overflow, modal fits", async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    await page.goto(BASE + "/");
    await page.locator("#plans .plan").first().waitFor();
    await noHorizontalOverflow(page, "landing 375px");
    await shot(page, "landing-phone");
    await page.locator(`[data-subscribe="${paidTier}"]`).click();
    const dlg = page.getByRole("dialog", { name: /subscribe/i });
    await dlg.waitFor();
    const box = await dlg.boundingBox();
    check(box && box.x >= 0 && box.x + box.width <= 375, `the modal fits the screen (${JSON.stringify(box)})`);
    await noHorizontalOverflow(page, "landing 375px with the modal open");
    await shot(page, "checkout-modal-phone", { fullPage: false });
    await page.keyboard.press("Escape");
    await dlg.waitFor({ state: "hidden" });
  });

  await stepDo("subscribe with a new e-mail: the account's key is shown once, then on to the provider", async () => {
    await page.setViewportSize({ width: 1280, height: 800 });
    const fresh = `buyer-${Date.now()}-${process.pid}@example.com`;
    await page.goto(`${BASE}/?from=flow-new-buyer#pricing`);
    await page.evaluate(() => sessionStorage.clear());
    await page.locator(`[data-subscribe="${paidTier}"]`).click();
    const dlg = page.getByRole("dialog", { name: /subscribe/i });
    await dlg.waitFor();
    await page.locator("#checkout-email").fill(fresh);
    await dlg.getByRole("button", { name: /lemon squeezy/i }).click();
    await page.locator("#checkout-key").waitFor({ state: "visible" });
    const newKey = await text(page, "#checkout-new-key");
    check(KEY_RE.test(newKey), `a well-formed key is shown for the new account (${newKey})`);
    check(/shown only once/i.test(await text(page, "#checkout-key")), "the modal says the key is shown once");
    check(await page.locator("#pay-options").isHidden(), "the payment choices step aside while the key is shown");
    check(page.url().startsWith(BASE), "still on our page until the user continues");
    await page.locator("#checkout-copy-key").click();
    await page.locator("#checkout-copy-key").filter({ hasText: "Copied" }).waitFor();
    check((await page.evaluate(() => navigator.clipboard.readText())) === newKey, "clipboard holds the new key");
    const u = await api("GET", "/auth/usage", { key: newKey });
    check(u.status === 200 && u.json?.email === fresh && u.json?.tier === "free", `the key works: ${u.status} ${u.text.slice(0, 200)}`);
    await shot(page, "checkout-new-account-key", { fullPage: false });
    await dlg.getByRole("button", { name: /continue to payment/i }).click();
    await page.waitForURL((u) => (EXPECT.lemonsqueezy ? u.toString().startsWith(EXPECT.lemonsqueezy) : !u.toString().startsWith(BASE)), { timeout: 15000 });
    log(`  new buyer → ${page.url()}`);
    // The same e-mail again: the account exists, so no key, straight on to the provider.
    await page.goto(`${BASE}/?from=flow-new-buyer-again#pricing`);
    await page.locator(`[data-subscribe="${paidTier}"]`).click();
    await dlg.waitFor();
    await page.locator("#checkout-email").fill(fresh);
    await dlg.getByRole("button", { name: /lemon squeezy/i }).click();
    await page.waitForURL((u) => (EXPECT.lemonsqueezy ? u.toString().startsWith(EXPECT.lemonsqueezy) : !u.toString().startsWith(BASE)), { timeout: 15000 });
  });
}
