// Scoped keys and the usage history (issue 15), in Debian's Chromium through playwright-core:
// sign in with a key, create a read-only, agent-bound, expiring, rate-limited key and edit it,
// have the Rust test send traffic through the gateway with both keys, then see exactly that in
// the usage chart, the per-key/agent/route breakdown and the CSV; ranges, an empty range,
// rotation with an overlap, an expired key; a webhook endpoint (secret shown once, deliveries,
// resend, secret rotation), the alert thresholds, the export, and the account's deletion.
//
//   STELLAR_BASE_URL=http://127.0.0.1:8080 STELLAR_KEY=sk-stellar-… \
//   STELLAR_TRAFFIC_URL=http://127.0.0.1:9999 node usage.mjs
//
// Environment:
//   STELLAR_BASE_URL       the gateway (required); usage flushed every second
//   STELLAR_KEY            an unrestricted key of a fresh account (required)
//   STELLAR_TRAFFIC_URL    the test's traffic server (required): POST {url}/traffic
//                          {"owner","reader"} sends requests through the gateway and answers
//                          {"requests":[{"key","method","route","status"}]}; POST {url}/hook is a
//                          webhook endpoint whose deliveries GET {url}/hooks lists
//   STELLAR_ARTIFACTS_DIR  where screenshots go (default tests/browser/artifacts/usage)
//   STELLAR_CHROMIUM       the browser binary (default /usr/bin/chromium); never downloaded
//
// Needs a first tier with max_api_keys >= 3 (tests/tests/browser_usage.rs writes one). Exits 0
// when every check passed, else 1 with the failed check, failure.png and the console output.

import { chromium } from "playwright-core";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.STELLAR_BASE_URL || "").replace(/\/+$/, "");
const KEY = process.env.STELLAR_KEY || "";
const TRAFFIC = (process.env.STELLAR_TRAFFIC_URL || "").replace(/\/+$/, "");
const ART = process.env.STELLAR_ARTIFACTS_DIR || path.join(here, "artifacts", "usage");
const CHROMIUM = process.env.STELLAR_CHROMIUM || "/usr/bin/chromium";
const KEY_RE = /^sk-stellar-[0-9a-f]{32}$/;

if (!BASE || !KEY_RE.test(KEY) || !TRAFFIC) {
  console.error("usage.mjs: set STELLAR_BASE_URL, STELLAR_KEY and STELLAR_TRAFFIC_URL");
  process.exit(2);
}
fs.mkdirSync(ART, { recursive: true });

class Failed extends Error {}
const started = Date.now();
const seen = { console: [], errors: [], external: [] };
let current = "start";
let shots = 0;

const expect = (ok, what) => {
  if (!ok) throw new Failed(what);
};
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}`);
async function step(name, body) {
  current = name;
  log(`▶ ${name}`);
  await body();
}
async function snap(p, name) {
  shots += 1;
  await p.evaluate(() => window.scrollTo({ top: 0, behavior: "instant" }));
  await p.screenshot({ path: path.join(ART, `${String(shots).padStart(2, "0")}-${name}.png`), fullPage: true, animations: "disabled" });
}
async function poll(what, probe, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() <= end) {
    last = await probe().catch((e) => e);
    if (last && !(last instanceof Error)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Failed(`gave up after ${ms} ms waiting for ${what} (last: ${last})`);
}
const textOf = async (p, sel) => ((await p.locator(sel).first().textContent()) || "").replace(/\s+/g, " ").trim();
const num = (t) => Number(String(t).replace(/[^\d]/g, "")) || 0;
const gw = (method, url, key, body) =>
  fetch(`${BASE}${url}`, {
    method,
    headers: { "X-API-Key": key, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--no-first-run"],
});
const ctx = await browser.newContext({
  viewport: { width: 1280, height: 900 },
  locale: "en-US",
  timezoneId: "UTC",
  reducedMotion: "reduce",
  acceptDownloads: true,
});
ctx.setDefaultTimeout(15000);
await ctx.route("**/*", (route) => {
  const u = new URL(route.request().url());
  if (["127.0.0.1", "localhost"].includes(u.hostname) || ["data:", "blob:"].includes(u.protocol)) return route.continue();
  seen.external.push(u.href);
  return route.abort("blockedbyclient");
});
const page = await ctx.newPage();
page.on("console", (m) => seen.console.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => seen.errors.push(`${page.url()}: ${e.message}`));

let code = 0;
try {
  await flow();
  expect(seen.errors.length === 0, `uncaught JavaScript errors:\n  ${seen.errors.join("\n  ")}`);
  expect(seen.external.length === 0, `requests to other hosts: ${seen.external.join(", ")}`);
  log(`✔ all checks passed (${shots} screenshots in ${ART})`);
} catch (e) {
  code = 1;
  console.error(`\n✘ FAILED in step "${current}": ${e instanceof Failed ? e.message : e.stack || e}`);
  console.error(`  page: ${page.url()}`);
  await page.screenshot({ path: path.join(ART, "failure.png"), fullPage: true }).catch(() => {});
  if (seen.errors.length) console.error(`  page errors:\n    ${seen.errors.join("\n    ")}`);
  console.error(`  console (last 30):\n    ${seen.console.slice(-30).join("\n    ")}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);

/* ---------- checks of the page ---------- */

/** Every visible control has a name and every visible field a label; ids are unique. */
async function labelled(where) {
  const bad = await page.evaluate(() => {
    const out = [];
    const shown = (el) => el.getClientRects().length > 0;
    for (const el of document.querySelectorAll("button, a[href]")) {
      if (shown(el) && !(el.getAttribute("aria-label") || el.textContent || "").trim()) out.push(el.outerHTML.slice(0, 60));
    }
    for (const el of document.querySelectorAll("input, select")) {
      const ok = el.getAttribute("aria-label") || (el.id && document.querySelector(`label[for="${el.id}"]`));
      if (shown(el) && !ok) out.push(`no label: ${el.outerHTML.slice(0, 60)}`);
    }
    const ids = new Set();
    for (const el of document.querySelectorAll("[id]")) {
      if (ids.has(el.id)) out.push(`id ${el.id} twice`);
      ids.add(el.id);
    }
    return out;
  });
  expect(bad.length === 0, `${where}: ${bad.join("; ")}`);
}

/** Nothing but scroll containers' content is wider than the screen. */
async function fitsWidth(where) {
  const wide = await page.evaluate(() => {
    const cw = document.documentElement.clientWidth;
    const inScroller = (el) => {
      for (let q = el.parentElement; q; q = q.parentElement) {
        if (["auto", "scroll", "hidden"].includes(getComputedStyle(q).overflowX)) return true;
      }
      return false;
    };
    return Array.from(document.querySelectorAll("body *"))
      .filter((el) => el.getBoundingClientRect().right > cw + 1 && !inScroller(el))
      .slice(0, 5)
      .map((el) => el.tagName.toLowerCase() + (el.id ? `#${el.id}` : ""));
  });
  expect(wide.length === 0, `${where}: wider than the screen: ${wide.join(", ")}`);
}

/** The chart's numbers: its total, and the sum of each status class over the bars. */
function chart() {
  return page.evaluate(() => {
    const svg = document.querySelector("#usage-svg");
    if (!svg) return null;
    const byClass = {};
    let bars = 0;
    for (const g of svg.querySelectorAll("g.bar")) {
      bars += Number(g.dataset.requests);
      for (const c of ["2xx", "3xx", "4xx", "429", "5xx"]) byClass[c] = (byClass[c] || 0) + Number(g.dataset[`c${c}`]);
    }
    const span = Number(svg.dataset.to) - Number(svg.dataset.from);
    return { total: Number(svg.dataset.total), bars, byClass, span, granularity: svg.dataset.granularity };
  });
}

/** The breakdown table as {group: {total, 2xx, 4xx, …}}. */
function breakdown() {
  return page.evaluate(() => {
    const out = {};
    for (const tr of document.querySelectorAll("#usage-body tr[data-group]")) {
      const n = (sel) => Number((tr.querySelector(sel).textContent || "").replace(/[^\d]/g, "")) || 0;
      out[tr.dataset.group] = { total: n("td.total"), "2xx": n("td.c2xx"), "4xx": n("td.c4xx"), label: tr.querySelector("td.group").textContent.trim() };
    }
    return out;
  });
}

/** Refresh until the chart shows `total` requests (the gateway flushes every second). */
async function chartShows(total) {
  return poll(`the chart to count ${total} requests`, async () => {
    await page.locator("#refresh").click();
    await page.waitForFunction(() => !document.querySelector("#usage[aria-busy]") && !document.querySelector("#refresh[disabled]"));
    const c = await chart();
    return c && c.total === total ? c : false;
  });
}

async function groupBy(g) {
  await page.locator(`label[for="usage-by-${g}"]`).click();
  await page.locator("#usage-group-col").filter({ hasText: new RegExp(`^${g}$`, "i") }).waitFor();
  await page.waitForFunction(() => !document.querySelector("#usage[aria-busy]"));
  return breakdown();
}

/* ---------- the flow ---------- */

async function flow() {
  let reader = "";
  let readerId = "";
  let ownerId = "";
  let served = [];

  await step("sign in with the account's key: the usage panel says the account has no requests yet", async () => {
    await page.goto(`${BASE}/dashboard`);
    await page.locator("#signin-key").fill(KEY);
    await page.locator("#signin-submit").click();
    await page.locator("#account-view").waitFor({ state: "visible" });
    await page.locator("#keys-body tr").first().waitFor();
    await page.locator("#usage-svg").waitFor();
    expect(await page.locator("#usage-empty").isVisible(), "an empty range says so");
    expect(/no requests in this range/i.test(await textOf(page, "#usage-empty")), `the empty message: ${await textOf(page, "#usage-empty")}`);
    expect(/no requests in this range/i.test(await textOf(page, "#usage-body")), "the table says so too");
    expect((await textOf(page, "#keys-body tr td.scope")) === "Full access", `the first key is unrestricted: ${await textOf(page, "#keys-body tr td.scope")}`);
    ownerId = await page.locator("#keys-body tr").first().getAttribute("data-key-id");
    await labelled("dashboard signed in with a key");
  });

  await step("create a read-only key bound to an agent, expiring in 30 days, 30 requests per minute", async () => {
    await page.locator("#new-key-name").fill("reader");
    await page.locator("#new-key-scope summary").click();
    await page.locator("#new-key-read-only").check();
    await page.locator("#new-key-agent").fill("bot 1");
    await page.locator("#new-key-expiry").selectOption("days");
    await page.locator("#new-key-expiry-days").fill("30");
    await page.locator("#new-key-rpm").fill("30");
    await page.locator("#create-key").click();
    await page.locator("#keys-error").filter({ hasText: /agent/i }).waitFor();
    expect(await page.locator("#created-key").isHidden(), "a bad agent name creates nothing");
    await page.locator("#new-key-agent").fill("bot-1");
    await labelled("the create form with its scope");
    await snap(page, "create-scoped-key");
    await page.locator("#create-key").click();
    await page.locator("#created-key").waitFor({ state: "visible" });
    reader = await textOf(page, "#created-key-value");
    expect(KEY_RE.test(reader), `the new key is shown (${reader})`);
    const row = page.locator("#keys-body tr", { hasText: "reader" });
    await row.waitFor();
    readerId = await row.getAttribute("data-key-id");
    const scope = await textOf(page, `#keys-body tr[data-key-id="${readerId}"] td.scope`);
    for (const part of ["read-only", "agent bot-1", "expires", "30/min"]) expect(scope.includes(part), `the scope lists ${part}: ${scope}`);
    const listed = await (await gw("GET", "/auth/api-keys", KEY)).json();
    const k = listed.keys.find((x) => x.id === readerId);
    const days = (new Date(k.expires_at).getTime() - Date.now()) / 86400000;
    expect(k.read_only === true && k.agent === "bot-1" && k.requests_per_minute === 30 && days > 29.9 && days <= 30, `billing has the scope: ${JSON.stringify(k)}`);
    expect((await page.locator("#new-key-scope").getAttribute("open")) === null, "the scope fields close again");
    await page.locator("#created-done").click();
    await snap(page, "scoped-key-listed");
  });

  await step("edit the key: its own rate 30 → 20 per minute (PATCH)", async () => {
    await page.getByRole("button", { name: /^Edit key reader/ }).click();
    const dlg = page.getByRole("dialog", { name: /edit/i });
    await dlg.waitFor();
    expect((await page.locator("#edit-key-rpm").inputValue()) === "30", "the dialog shows the current rate");
    expect(await page.locator("#edit-key-read-only").isChecked(), "and read-only");
    expect((await page.locator("#edit-key-agent").inputValue()) === "bot-1", "and the agent");
    expect((await page.locator("#edit-key-expiry").inputValue()) === "keep", "the expiry is kept unless changed");
    await labelled("the edit dialog");
    await page.locator("#edit-key-rpm").fill("20");
    await snap(page, "edit-key");
    await page.locator("#edit-key-save").click();
    await dlg.waitFor({ state: "hidden" });
    await page.locator(`#keys-body tr[data-key-id="${readerId}"] td.scope`, { hasText: "20/min" }).waitFor();
    const scope = await textOf(page, `#keys-body tr[data-key-id="${readerId}"] td.scope`);
    expect(scope.includes("read-only") && scope.includes("agent bot-1") && scope.includes("expires"), `the rest is unchanged: ${scope}`);
  });

  await step("traffic through the gateway with both keys (from the Rust test)", async () => {
    const r = await fetch(`${TRAFFIC}/traffic`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ owner: KEY, reader }),
    });
    served = (await r.json()).requests;
    const refused = served.filter((x) => x.key === "reader" && x.route === "store");
    expect(refused.length > 0 && refused.every((x) => x.status === 403), `the read-only key may not store: ${JSON.stringify(refused)}`);
    const others = served.filter((x) => !(x.key === "reader" && x.route === "store"));
    expect(others.every((x) => x.status === 200), `everything else is served: ${JSON.stringify(others)}`);
    log(`  ${served.length} requests sent`);
  });

  const count = (f) => served.filter(f).length;
  const ok = (x) => x.status >= 200 && x.status < 300;
  const refusedByScope = (x) => x.status >= 400 && x.status < 500 && x.status !== 429;

  await step("the chart counts them, by status class (last hour, by minute)", async () => {
    const c = await chartShows(served.length);
    expect(c.bars === served.length, `the bars add up to the total: ${JSON.stringify(c)}`);
    expect(c.byClass["2xx"] === count(ok) && c.byClass["4xx"] === count(refusedByScope), `2xx and 4xx stacked apart: ${JSON.stringify(c.byClass)}`);
    expect(num(await textOf(page, '#usage-legend li[data-class="2xx"] strong')) === count(ok), "the legend's 2xx");
    expect(num(await textOf(page, '#usage-legend li[data-class="4xx"] strong')) === count(refusedByScope), "the legend's 4xx");
    expect((await textOf(page, "#usage-total")).startsWith(`${served.length} requests`), `the panel's total: ${await textOf(page, "#usage-total")}`);
    expect(await page.locator("#usage-empty").isHidden(), "no 'no requests' any more");
    const label = (await page.locator("#usage-svg").getAttribute("aria-label")) || "";
    expect(label.startsWith(`${served.length} requests`), `the chart has a text alternative: ${label}`);
    await page.locator("#usage").scrollIntoViewIfNeeded();
    await snap(page, "usage-last-hour");
  });

  await step("the per-key table names the keys and counts each", async () => {
    const t = await breakdown();
    expect(t[readerId] && t[readerId].total === count((x) => x.key === "reader"), `the reader's count: ${JSON.stringify(t)}`);
    expect(t[readerId]["4xx"] === count((x) => x.key === "reader" && refusedByScope(x)), `the reader's refusals: ${JSON.stringify(t[readerId])}`);
    expect(t[ownerId] && t[ownerId].total === count((x) => x.key === "owner"), `the owner key's count: ${JSON.stringify(t)}`);
    expect(t[readerId].label.startsWith("reader") && t[ownerId].label.startsWith("Default"), `rows named by the keys' names: ${t[readerId].label} / ${t[ownerId].label}`);
    expect(Object.keys(t).length === 2, `two keys: ${Object.keys(t)}`);
  });

  await step("by agent and by route", async () => {
    const a = await groupBy("agent");
    // The bound agent is set for what the key was allowed to do; the refusals come before it.
    const bound = count((x) => x.key === "reader" && ok(x));
    expect(a["bot-1"] && a["bot-1"].total === bound, `bot-1 made ${bound}: ${JSON.stringify(a)}`);
    expect(a[""] && a[""].total === served.length - bound && /no agent/i.test(a[""].label), `the rest without an agent: ${JSON.stringify(a)}`);
    const r = await groupBy("route");
    for (const route of ["store", "recall", "read"]) {
      expect(r[route] && r[route].total === count((x) => x.route === route), `${route}: ${JSON.stringify(r)}`);
    }
    expect(r.store.label === "Store" && r.read.label === "Other reads", `route names: ${r.store.label}, ${r.read.label}`);
    await snap(page, "usage-by-route");
    await groupBy("key");
  });

  await step("Download CSV: the same range, the same total", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#usage-csv").click()]);
    const file = path.join(ART, "usage.csv");
    await download.saveAs(file);
    expect(/^stellar-usage-.*\.csv$/.test(download.suggestedFilename()), `a named CSV: ${download.suggestedFilename()}`);
    const lines = fs.readFileSync(file, "utf8").trim().split(/\r?\n/);
    expect(lines[0] === "start,group,status_class,requests", `the CSV header: ${lines[0]}`);
    const total = lines.slice(1).reduce((a, l) => a + Number(l.split(",").pop()), 0);
    expect(total === served.length, `the CSV counts ${total}, the page ${served.length}`);
    expect(lines.slice(1).some((l) => l.includes(readerId)), "grouped by key as on the page");
    const href = (await page.locator("#usage-csv").getAttribute("href")) || "";
    expect(/format=csv/.test(href) && /granularity=minute/.test(href) && /from=\d+/.test(href), `the link asks for the chart's range: ${href}`);
  });

  await step("longer ranges by hour count the same; a range without requests says so", async () => {
    const DAY = 86400;
    for (const [range, span] of [["24h", DAY], ["7d", 7 * DAY], ["90d", 90 * DAY]]) {
      await page.locator("#usage-range").selectOption(range);
      const c = await poll(`the ${range} chart`, async () => {
        const x = await chart();
        return x && x.granularity === "hour" && x.span === span && x.total === served.length ? x : false;
      });
      expect(c.bars === served.length, `${range}: bars add up: ${JSON.stringify(c)}`);
      expect((await textOf(page, "#usage-error")) === "", `${range}: no error: ${await textOf(page, "#usage-error")}`);
      const href = (await page.locator("#usage-csv").getAttribute("href")) || "";
      expect(/granularity=hour/.test(href), `${range}: the CSV is by hour too: ${href}`);
    }
    await snap(page, "usage-90-days");
    await page.locator("#usage-range").selectOption("custom");
    await page.locator("#usage-custom").waitFor({ state: "visible" });
    // Whole hours (the page runs in UTC), so the range is exactly 24 hour buckets.
    const at = (hoursAgo) => new Date((Math.floor(Date.now() / 3600000) - hoursAgo) * 3600000).toISOString().slice(0, 16);
    await page.locator("#usage-from").fill(at(72));
    await page.locator("#usage-to").fill(at(48));
    await page.locator("#usage-granularity").selectOption("hour");
    await labelled("the custom range");
    await page.locator("#usage-apply").click();
    await page.locator("#usage-empty").waitFor({ state: "visible" });
    const c = await chart();
    expect(c.total === 0 && c.span === 24 * 3600 && c.granularity === "hour", `nothing in that range: ${JSON.stringify(c)}`);
    expect(/no requests in this range/i.test(await textOf(page, "#usage-body")), "the table says so too");
    await page.locator("#usage-from").fill(at(1));
    await page.locator("#usage-to").fill(at(2));
    await page.locator("#usage-apply").click();
    await page.locator("#usage-error").filter({ hasText: /end after it starts/ }).waitFor();
    await page.locator("#usage").scrollIntoViewIfNeeded();
    await snap(page, "usage-empty-range");
    await page.locator("#usage-range").selectOption("1h");
    await page.locator("#usage-custom").waitFor({ state: "hidden" });
    await poll("the last hour again", async () => {
      const x = (await chart()) || {};
      return x.granularity === "minute" && x.span === 3600 && x.total === served.length;
    });
  });

  await step("rotate the reader with a 5-minute overlap: both keys work, the old one expires", async () => {
    await page.getByRole("button", { name: /^Rotate key reader/ }).click();
    const dlg = page.getByRole("dialog", { name: /rotate/i });
    await dlg.waitFor();
    expect(await page.evaluate(() => document.activeElement?.id === "confirm-cancel"), "focus starts on the safe choice");
    await page.locator("#rotate-overlap").fill("5");
    await page.locator("#rotate-overlap-unit").selectOption("minutes");
    await labelled("the rotate confirmation");
    await snap(page, "rotate-overlap");
    await dlg.getByRole("button", { name: "Rotate key" }).click();
    await page.locator("#created-key").waitFor({ state: "visible" });
    const fresh = await textOf(page, "#created-key-value");
    expect(KEY_RE.test(fresh) && fresh !== reader, `a new key (${fresh})`);
    expect(/in 5 minutes/.test(await textOf(page, "#dash-status")), `the status names the overlap: ${await textOf(page, "#dash-status")}`);
    await page.locator("#created-done").click();
    const old = page.locator(`#keys-body tr[data-key-id="${readerId}"] td.scope`);
    await old.filter({ hasText: "expires" }).waitFor();
    const rows = page.locator("#keys-body tr:not(.revoked)", { hasText: "reader" });
    expect((await rows.count()) === 2, `the old and the new reader are listed: ${await rows.count()}`);
    const listed = await (await gw("GET", "/auth/api-keys", KEY)).json();
    const o = listed.keys.find((x) => x.id === readerId);
    const left = (new Date(o.expires_at).getTime() - Date.now()) / 1000;
    expect(left > 240 && left <= 300, `the old key stops in 5 minutes (${left} s)`);
    const n = listed.keys.find((x) => x.is_active && x.name === "reader" && x.id !== readerId);
    expect(n && n.read_only && n.agent === "bot-1" && n.requests_per_minute === 20, `the replacement has the scope: ${JSON.stringify(n)}`);
    expect((await gw("GET", "/api/v1/stats", reader)).status === 200, "the old key still works during the overlap");
    expect((await gw("GET", "/api/v1/stats", fresh)).status === 200, "the new key works");
    await page.locator(`#keys-body tr[data-key-id="${n.id}"] td.scope`, { hasText: "20/min" }).waitFor();
  });

  await step("an expired key is listed as expired and refused", async () => {
    const r = await gw("PATCH", `/auth/api-keys/${readerId}`, KEY, { expires_in_secs: 1 });
    expect(r.status === 200, `PATCH expires_in_secs: ${r.status} ${await r.text()}`);
    await poll("the old key to be refused", async () => (await gw("GET", "/api/v1/stats", reader)).status === 401, 10000);
    // The gateway counts whole seconds: the page may look a fraction of a second before the
    // expiry it lists has passed.
    const tag = page.locator(`#keys-body tr.expired[data-key-id="${readerId}"] .tag`, { hasText: "expired" });
    await poll("the key listed as expired", async () => {
      await page.locator("#refresh").click();
      await page.waitForFunction(() => !document.querySelector("#refresh[disabled]"));
      return (await tag.count()) === 1;
    });
    await snap(page, "key-expired");
  });

  let secret = "";
  let hookId = "";
  await step("add a webhook endpoint: the signing secret is shown once", async () => {
    await page.locator("#webhooks").waitFor({ state: "visible" });
    await page.locator("#webhook-url").fill(`${TRAFFIC}/hook`);
    await page.locator("#webhook-add").click();
    await page.locator("#webhooks-error").filter({ hasText: /at least one event/i }).waitFor();
    await page.locator('label[for="webhook-event-key-changed"]').click();
    await page.locator('label[for="webhook-event-key-created"]').click();
    await labelled("the webhook form");
    await page.locator("#webhook-add").click();
    await page.locator("#webhook-secret").waitFor({ state: "visible" });
    secret = await textOf(page, "#webhook-secret-value");
    expect(/^whsec_[0-9a-f]{64}$/.test(secret), `a secret is shown: ${secret}`);
    const row = page.locator("#webhooks-body tr", { hasText: `${TRAFFIC}/hook` });
    await row.waitFor();
    hookId = await row.getAttribute("data-webhook-id");
    const events = await textOf(page, `#webhooks-body tr[data-webhook-id="${hookId}"]`);
    expect(events.includes("key.changed") && events.includes("key.created") && !events.includes("key.revoked"), `the events: ${events}`);
    await page.locator("#webhook-secret").scrollIntoViewIfNeeded();
    await snap(page, "webhook-secret");
    await page.locator("#webhook-secret-done").click();
    expect(await page.locator("#webhook-secret").isHidden(), "the secret is gone");
    const listed = await (await gw("GET", "/auth/webhooks", KEY)).text();
    expect(!listed.includes(secret), "billing never shows the secret again");
  });

  /** The deliveries table as [{status, code, attempts, event}]. */
  const deliveries = () =>
    page.locator("#deliveries-body tr[data-delivery-id]").evaluateAll((rows) =>
      rows.map((r) => ({
        event: r.dataset.eventId,
        status: r.querySelector("[data-status]").dataset.status,
        code: r.querySelector("td.code").textContent.trim(),
        attempts: Number(r.querySelector("td.attempts").textContent),
      })),
    );
  const received = async () => (await (await fetch(`${TRAFFIC}/hooks`)).json()).hooks;
  const signedWith = (key, hk) => {
    const [t, v1] = hk.signature.split(",").map((p) => p.split("=")[1]);
    const want = crypto.createHmac("sha256", key).update(`${t}.${hk.body}`).digest("hex");
    return v1 === want && Math.abs(Date.now() / 1000 - Number(t)) < 300;
  };

  await step("a key change is delivered, signed with the secret; the deliveries list it; resend", async () => {
    const keys = (await (await gw("GET", "/auth/api-keys", KEY)).json()).keys;
    const fresh = keys.find((k) => k.is_active && k.name === "reader" && k.id !== readerId);
    const r = await gw("PATCH", `/auth/api-keys/${fresh.id}`, KEY, { name: "reader-2" });
    expect(r.status === 200, `PATCH the name: ${r.status}`);
    await page.getByRole("button", { name: `Deliveries to ${TRAFFIC}/hook` }).click();
    await page.locator("#deliveries").waitFor({ state: "visible" });
    const first = await poll("the delivery to be delivered", async () => {
      await page.locator("#deliveries-refresh").click();
      const d = await deliveries();
      return d.length === 1 && d[0].status === "delivered" ? d[0] : false;
    });
    expect(first.code === "200" && first.attempts === 1, `status, code, attempts: ${JSON.stringify(first)}`);
    const got = await received();
    expect(got.length === 1 && got[0].event_id === first.event, `the endpoint got it: ${JSON.stringify(got)}`);
    const body = JSON.parse(got[0].body);
    expect(body.type === "key.changed" && body.data.key_id === fresh.id, `a key.changed event: ${got[0].body}`);
    expect(signedWith(secret, got[0]), `signed with the shown secret: ${got[0].signature}`);
    await page.locator("#deliveries").scrollIntoViewIfNeeded();
    await snap(page, "webhook-delivered");
    await page.getByRole("button", { name: `Resend key.changed ${first.event} (delivery ` }).click();
    await page.locator("#webhooks-status").filter({ hasText: /being sent again/ }).waitFor();
    await poll("the resent delivery", async () => {
      await page.locator("#deliveries-refresh").click();
      const d = await deliveries();
      return d.length === 2 && d.every((x) => x.status === "delivered" && x.event === first.event);
    });
    const again = await received();
    expect(again.length === 2 && again[1].event_id === first.event && again[1].body === got[0].body, "the same event, the same body");
  });

  await step("rotate the secret: a new one, shown once, signs from then on", async () => {
    await page.getByRole("button", { name: `Rotate the secret of ${TRAFFIC}/hook` }).click();
    const dlg = page.getByRole("dialog", { name: /rotate the signing secret/i });
    await dlg.getByRole("button", { name: "Rotate secret" }).click();
    await page.locator("#webhook-secret").waitFor({ state: "visible" });
    const next = await textOf(page, "#webhook-secret-value");
    expect(/^whsec_[0-9a-f]{64}$/.test(next) && next !== secret, `a new secret: ${next}`);
    await page.locator("#webhook-secret-done").click();
    await page.locator(`#webhooks-body tr[data-webhook-id="${hookId}"]`, { hasText: "secret rotated" }).waitFor();
    const d = await deliveries();
    await page.getByRole("button", { name: `Resend key.changed ${d[0].event} (delivery ` }).first().click();
    const last = await poll("the delivery after rotation", async () => {
      const h = await received();
      return h.length === 3 ? h[2] : false;
    });
    expect(signedWith(next, last) && !signedWith(secret, last), "signed with the new secret only");
  });

  await step("alert thresholds: the defaults, then 50 % and 90 %", async () => {
    await page.locator("#alerts").waitFor({ state: "visible" });
    expect((await page.locator("#alert-memory").inputValue()) === "80, 100", "memory 80 and 100 %");
    expect((await page.locator("#alert-rate").inputValue()) === "5", "rate-limited 5 minutes");
    expect((await page.locator("#alert-expiring").inputValue()) === "7", "key expiring in 7 days");
    expect(await page.locator("#alert-payment").isChecked(), "payment failed");
    await page.locator("#alert-memory").fill("90, 50, 150");
    await page.locator("#alerts-save").click();
    await page.locator("#alerts-error").filter({ hasText: /1 to 100/ }).waitFor();
    await page.locator("#alert-memory").fill("90, 50");
    await page.locator("#alert-expiring").fill("14");
    await page.locator("#alerts-save").click();
    await page.locator("#alerts-status").filter({ hasText: /saved/i }).waitFor();
    expect((await page.locator("#alert-memory").inputValue()) === "50, 90", "the saved thresholds are shown");
    const a = await (await gw("GET", "/auth/alerts", KEY)).json();
    expect(JSON.stringify(a.memory_percent) === "[50,90]" && a.key_expiring_days === 14 && a.rate_limited_minutes === 5, `billing has them: ${JSON.stringify(a)}`);
    await labelled("webhooks, alerts and your data");
    await page.locator("#alerts").scrollIntoViewIfNeeded();
    await snap(page, "alerts");
  });

  await step("export every memory as NDJSON", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#export-memories").click()]);
    const file = path.join(ART, "export.ndjson");
    await download.saveAs(file);
    expect(/^stellar-memories-.*\.ndjson$/.test(download.suggestedFilename()), `the file's name: ${download.suggestedFilename()}`);
    const lines = fs.readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    const stored = count((x) => x.route === "store" && ok(x));
    expect(lines.length === stored, `${stored} memories stored, ${lines.length} exported`);
    expect(lines.every((m) => m.id && m.content === "counted by the usage history" && m.agent === null), `every line is a whole memory: ${JSON.stringify(lines[0])}`);
    await page.locator("#export-status").filter({ hasText: `Exported ${stored} memories` }).waitFor();
  });

  await step("phone width: the panels fit", async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    await fitsWidth("dashboard at 375 px");
    await snap(page, "dashboard-phone");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await step("delete the account: only the typed address unlocks it; then the key is refused", async () => {
    const email = (await (await gw("GET", "/auth/usage", KEY)).json()).email;
    const btn = page.locator("#delete-account");
    expect(await btn.isDisabled(), "locked at first");
    await page.locator("#delete-confirm").fill(`x${email}`);
    expect(await btn.isDisabled(), "locked for another address");
    await page.locator("#delete-confirm").fill(email.toUpperCase());
    expect(await btn.isEnabled(), "the address, in any case, unlocks it");
    await page.locator("#delete-account-form").scrollIntoViewIfNeeded();
    await snap(page, "delete-account");
    await btn.click();
    await page.locator("#signin-view").waitFor({ state: "visible", timeout: 60000 });
    const banner = await textOf(page, "#banner");
    const stored = count((x) => x.route === "store" && ok(x));
    expect(banner.includes(email) && banner.includes(`${stored} memories`), `the page says what was deleted: ${banner}`);
    expect(!(await page.evaluate(() => sessionStorage.getItem("stellar-gate.api-key"))), "the key is forgotten");
    await poll("the key to be refused", async () => (await gw("GET", "/api/v1/stats", KEY)).status === 401, 10000);
    expect((await gw("GET", "/auth/usage", KEY)).status === 401, "billing knows it no more");
    await snap(page, "account-deleted");
  });
}
