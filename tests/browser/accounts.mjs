// Accounts that belong to people (issue 14), in Debian's Chromium through playwright-core:
// verified sign-up on the landing page, the mailed link shows the first key once, the dashboard
// signed in by cookie (CSRF header on every change), sign-out, sign-in by e-mail link, and an
// invitation opened in a second browser context.
//
//   STELLAR_BASE_URL=http://127.0.0.1:8080 STELLAR_MAIL_URL=http://127.0.0.1:9999 node accounts.mjs
//
// Environment:
//   STELLAR_BASE_URL       the gateway (required); billing must run with immediate_key off
//   STELLAR_MAIL_URL       the test's mailbox (required): GET {url}/mail?to=<address> answers
//                          {"mails":[{"subject","links"}]} for the mail caught for that address
//   STELLAR_ARTIFACTS_DIR  where screenshots go (default tests/browser/artifacts/accounts)
//   STELLAR_CHROMIUM       the browser binary (default /usr/bin/chromium); never downloaded
//
// Needs a first tier with max_members >= 2 and max_api_keys >= 3 (tests/tests/e2e/browser_accounts.rs
// writes one). Exits 0 when every check passed, else 1 with the failed check, failure.png and the
// browsers' console output.

import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.STELLAR_BASE_URL || "").replace(/\/+$/, "");
const MAIL = (process.env.STELLAR_MAIL_URL || "").replace(/\/+$/, "");
const ART = process.env.STELLAR_ARTIFACTS_DIR || path.join(here, "artifacts", "accounts");
const CHROMIUM = process.env.STELLAR_CHROMIUM || "/usr/bin/chromium";
const KEY_RE = /^sk-stellar-[0-9a-f]{32}$/;

if (!BASE || !MAIL) {
  console.error("accounts.mjs: set STELLAR_BASE_URL (the gateway) and STELLAR_MAIL_URL (the test's mailbox)");
  process.exit(2);
}
fs.mkdirSync(ART, { recursive: true });

/* ---------- checks, steps, waits ---------- */

class Failed extends Error {}
const started = Date.now();
const problems = { console: [], errors: [], external: [] };
let current = "start";
let shots = 0;

const expect = (ok, what) => {
  if (!ok) throw new Failed(what);
};
const say = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}`);
async function step(name, body) {
  current = name;
  say(`▶ ${name}`);
  await body();
}
async function snap(p, name) {
  shots += 1;
  const file = path.join(ART, `${String(shots).padStart(2, "0")}-${name}.png`);
  await p.evaluate(() => window.scrollTo({ top: 0, behavior: "instant" })); // else the sticky header lands mid-page
  await p.screenshot({ path: file, fullPage: true, animations: "disabled" });
}
async function poll(what, probe, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() <= end) {
    last = await probe().catch((e) => e);
    if (last && !(last instanceof Error)) return last;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Failed(`gave up after ${ms} ms waiting for ${what} (last: ${last})`);
}
const textOf = async (p, sel) => ((await p.locator(sel).first().textContent()) || "").replace(/\s+/g, " ").trim();

/** The n-th mail (1-based) caught for `to`: its sign-in, verification or invitation link. */
async function linkFor(to, n) {
  const mail = await poll(`mail #${n} to ${to}`, async () => {
    const r = await fetch(`${MAIL}/mail?to=${encodeURIComponent(to)}`);
    const body = await r.json();
    return body.mails.length >= n ? body.mails[n - 1] : false;
  });
  const link = mail.links.find((l) => l.startsWith(`${BASE}/auth/link#token=`));
  expect(link, `mail #${n} to ${to} ("${mail.subject}") has a ${BASE}/auth/link#token=… link: ${mail.links.join(" ")}`);
  say(`  mail "${mail.subject}" → ${link.replace(/token=.*/, "token=…")}`);
  return link;
}

/** No provider is configured in this test: make the page offer them all (billing still answers
 *  for itself unless a test stubs the checkout too). */
const providersOffered = (p) =>
  p.route("**/billing/tiers", async (route) => {
    const resp = await route.fetch();
    const body = await resp.json();
    body.providers = { lemonsqueezy: true, stripe: true, toss: true };
    return route.fulfill({ response: resp, json: body });
  });

/** fetch() inside the page: same origin, with the page's cookie. */
const inPage = (p, method, url, headers = {}) =>
  p.evaluate(
    async ([m, u, hd]) => {
      const r = await fetch(u, { method: m, headers: hd, credentials: "same-origin" });
      return { status: r.status, body: await r.text() };
    },
    [method, url, headers],
  );

/** No page wider than the screen (boxes inside their own scroll container excepted). */
async function fitsWidth(p, where) {
  const wide = await p.evaluate(() => {
    const cw = document.documentElement.clientWidth;
    const scrolls = (el) => {
      for (let q = el.parentElement; q; q = q.parentElement) {
        if (["auto", "scroll", "hidden"].includes(getComputedStyle(q).overflowX)) return true;
      }
      return false;
    };
    return Array.from(document.querySelectorAll("body *"))
      .filter((el) => el.getBoundingClientRect().right > cw + 1 && !scrolls(el))
      .slice(0, 5)
      .map((el) => el.tagName.toLowerCase() + (el.id ? `#${el.id}` : ""));
  });
  expect(wide.length === 0, `${where}: wider than the screen: ${wide.join(", ")}`);
}

/** Every visible control has a name and every visible field a label; ids are unique. */
async function labelled(p, where) {
  const bad = await p.evaluate(() => {
    const out = [];
    const shown = (el) => el.getClientRects().length > 0;
    for (const el of document.querySelectorAll("button, a[href]")) {
      if (shown(el) && !(el.getAttribute("aria-label") || el.textContent || "").trim()) out.push(el.outerHTML.slice(0, 60));
    }
    for (const el of document.querySelectorAll("input, select")) {
      const ok = el.getAttribute("aria-label") || (el.id && document.querySelector(`label[for="${el.id}"]`));
      if (shown(el) && !ok) out.push(`no label: ${el.outerHTML.slice(0, 60)}`);
    }
    const seen = new Set();
    for (const el of document.querySelectorAll("[id]")) {
      if (seen.has(el.id)) out.push(`id ${el.id} twice`);
      seen.add(el.id);
    }
    return out;
  });
  expect(bad.length === 0, `${where}: ${bad.join("; ")}`);
}

/* ---------- two browsers' worth of contexts ---------- */

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--no-first-run"],
});
async function person(label) {
  const ctx = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    locale: "en-US",
    timezoneId: "UTC",
    reducedMotion: "reduce",
    permissions: ["clipboard-read", "clipboard-write"],
  });
  ctx.setDefaultTimeout(15000);
  await ctx.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (["127.0.0.1", "localhost"].includes(u.hostname) || u.protocol === "data:") return route.continue();
    problems.external.push(u.href);
    return route.abort("blockedbyclient");
  });
  const p = await ctx.newPage();
  p.on("console", (m) => problems.console.push(`${label} ${m.type()}: ${m.text()}`));
  p.on("pageerror", (e) => problems.errors.push(`${label} ${p.url()}: ${e.message}`));
  return p;
}

const owner = await person("owner");
let member = null;
let code = 0;
try {
  await flow();
  expect(problems.errors.length === 0, `uncaught JavaScript errors:\n  ${problems.errors.join("\n  ")}`);
  expect(problems.external.length === 0, `requests to other hosts: ${problems.external.join(", ")}`);
  say(`✔ all checks passed (${shots} screenshots in ${ART})`);
} catch (e) {
  code = 1;
  console.error(`\n✘ FAILED in step "${current}": ${e instanceof Failed ? e.message : e.stack || e}`);
  for (const [name, p] of [["owner", owner], ["member", member]]) {
    if (!p) continue;
    console.error(`  ${name} page: ${p.url()}`);
    await p.screenshot({ path: path.join(ART, `failure-${name}.png`), fullPage: true }).catch(() => {});
  }
  if (problems.errors.length) console.error(`  page errors:\n    ${problems.errors.join("\n    ")}`);
  console.error(`  console (last 30):\n    ${problems.console.slice(-30).join("\n    ")}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);

/* ---------- the flow ---------- */

async function flow() {
  const tag = `${Date.now()}-${process.pid}`;
  const ownerEmail = `owner-${tag}@example.com`;
  const memberEmail = `member-${tag}@example.com`;
  let firstLink = "";

  await step("landing sign-up answers 'check your e-mail' and shows no key", async () => {
    await owner.goto(`${BASE}/#signup`);
    await owner.locator("#signup-email").fill(ownerEmail);
    await owner.locator("#signup-submit").click();
    await owner.locator("#signup-sent").waitFor({ state: "visible" });
    expect((await textOf(owner, "#signup-sent-email")) === ownerEmail, "the message names the address");
    expect(await owner.locator("#key-reveal").isHidden(), "no key on the landing page");
    await snap(owner, "signup-check-mail");
  });

  await step("checkout without a session: the modal asks for the address, then 'check your e-mail' (202)", async () => {
    // No provider is configured here: the answers are stubbed to see what the page does with them.
    await providersOffered(owner);
    await owner.route("**/billing/stripe/checkout", (route) =>
      route.fulfill({ status: 202, contentType: "application/json", body: '{"detail":"Check your e-mail to continue"}' }),
    );
    // Where billing sends a GET checkout without a key or session.
    await owner.goto(`${BASE}/?checkout=sign-in&provider=stripe&tier=pro`);
    const dlg = owner.getByRole("dialog", { name: /subscribe to pro/i });
    await dlg.waitFor();
    await owner.locator("#checkout-status").filter({ hasText: /e-mail address and choose Stripe/ }).waitFor();
    expect(!new URL(owner.url()).searchParams.has("checkout"), `the address is cleaned up: ${owner.url()}`);
    await owner.locator("#checkout-email").fill(`buyer-${tag}@example.com`);
    await dlg.getByRole("button", { name: /stripe/i }).click();
    await owner.locator("#checkout-sent").waitFor({ state: "visible" });
    expect(await owner.locator("#pay-options").isHidden(), "the payment choices step aside");
    expect(await owner.locator("#checkout-key").isHidden(), "no key in the modal");
    await snap(owner, "checkout-check-mail");
    await owner.unrouteAll({ behavior: "ignoreErrors" });
  });

  let apiKey = "";
  await step("the verification link shows the first key once, then the dashboard", async () => {
    firstLink = await linkFor(ownerEmail, 1);
    const resp = await owner.goto(firstLink);
    expect(resp.headers()["cache-control"] === "no-store", `GET /auth/link is no-store (${resp.headers()["cache-control"]})`);
    expect(resp.headers()["referrer-policy"] === "no-referrer", `GET /auth/link sends no referrer (${resp.headers()["referrer-policy"]})`);
    await owner.locator("#link-key").waitFor({ state: "visible" });
    expect(!owner.url().includes("token"), `the token left the address bar (${owner.url()})`);
    apiKey = await textOf(owner, "#link-key-value");
    expect(KEY_RE.test(apiKey), `a well-formed key (${apiKey})`);
    expect(/not be shown again/i.test(await textOf(owner, "#link-key")), "it says the key is shown once");
    await owner.locator("#link-copy").click();
    await owner.locator("#link-copy").filter({ hasText: "Copied" }).waitFor();
    expect((await owner.evaluate(() => navigator.clipboard.readText())) === apiKey, "the clipboard holds the key");
    const usage = await fetch(`${BASE}/auth/usage`, { headers: { "X-API-Key": apiKey } });
    expect(usage.status === 200, `the key works (${usage.status})`);
    await snap(owner, "link-key-shown");
    await owner.locator("#link-continue").click();
    await owner.waitForURL((u) => u.pathname === "/dashboard");
    await owner.locator("#account-view").waitFor({ state: "visible" });
    await owner.locator("#keys-body tr").first().waitFor();
    expect((await textOf(owner, "#who-email")) === ownerEmail, `signed in as the owner: ${await textOf(owner, "#who")}`);
    expect((await textOf(owner, "#who-role")) === "Owner", `role owner: ${await textOf(owner, "#who-role")}`);
    expect((await owner.locator("#keys-body tr:not(.revoked)").count()) === 1, "the account has its first key");
    expect(await owner.locator("#no-keys").isHidden(), "no 'create your first key' while a key is active");
    expect(!(await owner.evaluate(() => sessionStorage.getItem("stellar-gate.api-key"))), "no key kept in the tab: the cookie signs in");
  });

  await step("the panels: this browser's session, the owner alone, the audit log", async () => {
    await owner.locator("#sessions-body tr .tag", { hasText: "this browser" }).waitFor();
    await owner.locator("#members-body tr", { hasText: ownerEmail }).waitFor();
    expect((await owner.locator("#members-body tr").count()) === 1, "one member: the owner");
    await owner.locator("#audit-body tr").first().waitFor();
    expect(await owner.locator("#audit").isVisible(), "the owner sees the audit log");
    await labelled(owner, "dashboard signed in by e-mail");
    await snap(owner, "dashboard-owner");
  });

  await step("the used link refuses a second use", async () => {
    await owner.goto(firstLink);
    await owner.locator("#link-error").waitFor({ state: "visible" });
    const why = await textOf(owner, "#link-error-text");
    expect(/already been used|expired/i.test(why), `billing's reason is shown: ${why}`);
    expect(await owner.getByRole("link", { name: /new sign-in link/i }).isVisible(), "a way to a new link");
    await snap(owner, "link-used");
  });

  await step("a key created while signed in by cookie (the CSRF header is sent)", async () => {
    await owner.goto(`${BASE}/dashboard`);
    await owner.locator("#keys-body tr").first().waitFor();
    // Without the header billing refuses a change by cookie: the page must be sending it.
    const bare = await inPage(owner, "POST", "/auth/sign-out");
    expect(bare.status === 403, `a change without X-CSRF-Token is refused: ${bare.status} ${bare.body}`);
    await owner.locator("#new-key-name").fill("laptop");
    await owner.locator("#create-key").click();
    await owner.locator("#created-key").waitFor({ state: "visible" });
    expect(KEY_RE.test(await textOf(owner, "#created-key-value")), "the new key is shown");
    await owner.locator("#keys-body tr", { hasText: "laptop" }).waitFor();
    await owner.locator("#created-done").click();
  });

  await step("sign out ends the session on the server", async () => {
    await owner.locator("#signout").click();
    await owner.locator("#signin-view").waitFor({ state: "visible" });
    const s = await inPage(owner, "GET", "/auth/session");
    expect(s.status === 401, `GET /auth/session after sign-out → ${s.status}`);
    await owner.reload();
    await owner.locator("#signin-view").waitFor({ state: "visible" });
    await labelled(owner, "dashboard sign-in");
    await snap(owner, "dashboard-signed-out");
  });

  await step("sign in with an e-mail link", async () => {
    await owner.locator("#signin-email").fill(ownerEmail);
    await owner.locator("#email-submit").click();
    await owner.locator("#email-sent").waitFor({ state: "visible" });
    expect((await textOf(owner, "#email-sent-to")) === ownerEmail, "the message names the address");
    await snap(owner, "signin-check-mail");
    await owner.goto(await linkFor(ownerEmail, 2));
    await owner.waitForURL((u) => u.pathname === "/dashboard");
    await owner.locator("#account-view").waitFor({ state: "visible" });
    await owner.locator("#keys-body tr").first().waitFor();
    expect((await textOf(owner, "#who-email")) === ownerEmail, "signed in as the owner again");
  });

  await step("'Upgrade' checks out for the account: the cookie with the CSRF token", async () => {
    await providersOffered(owner);
    let sent = null;
    await owner.route("**/billing/stripe/checkout", async (route) => {
      sent = route.request().headers();
      await route.fallback(); // billing answers 503: no Stripe here
    });
    await owner.locator("#upgrade").click();
    const dlg = owner.getByRole("dialog", { name: /subscribe to pro/i });
    await dlg.waitFor();
    expect((await owner.locator("#checkout-email").inputValue()) === ownerEmail, "the account's e-mail is filled in");
    await dlg.getByRole("button", { name: /stripe/i }).click();
    await owner.locator("#checkout-error").filter({ hasText: /not configured/i }).waitFor();
    expect(sent && /^[0-9a-f-]{16,}/i.test(sent["x-csrf-token"] || ""), `the checkout carried X-CSRF-Token: ${JSON.stringify(sent)}`);
    await owner.unrouteAll({ behavior: "ignoreErrors" });
    await owner.goto(`${BASE}/dashboard`);
    await owner.locator("#account-view").waitFor({ state: "visible" });
  });

  await step("the future member has an account of their own (another browser)", async () => {
    member = await person("member");
    await member.goto(`${BASE}/#signup`);
    await member.locator("#signup-email").fill(memberEmail);
    await member.locator("#signup-submit").click();
    await member.locator("#signup-sent").waitFor({ state: "visible" });
    await member.goto(await linkFor(memberEmail, 1));
    await member.locator("#link-key").waitFor({ state: "visible" });
    await member.locator("#link-continue").click();
    await member.locator("#account-view").waitFor({ state: "visible" });
    expect((await textOf(member, "#who-role")) === "Owner", "the owner of their own account");
    expect(await member.locator("#account-switch-field").isHidden(), "one account: no switcher");
  });

  await step("invite the member", async () => {
    await owner.locator("#invite-email").fill(memberEmail);
    await owner.locator("#invite-role").selectOption("member");
    await owner.locator("#invite-submit").click();
    await owner.locator("#members-status").filter({ hasText: /invitation sent/i }).waitFor();
    await owner.locator("#invitations-body tr", { hasText: memberEmail }).waitFor();
    const seats = await textOf(owner, "#seats");
    expect(/^2 of \d+ seats used$/.test(seats), `seats count the invitation: ${seats}`);
    await snap(owner, "member-invited");
  });

  let memberKey = "";
  await step("the invitation opens the owner's account, as member; the member creates a key", async () => {
    await member.goto(await linkFor(memberEmail, 2));
    await member.waitForURL((u) => u.pathname === "/dashboard");
    await member.locator("#members-body tr").nth(1).waitFor();
    await member.locator("#who-role").filter({ hasText: "Member" }).waitFor();
    expect((await textOf(member, "#who-email")) === memberEmail, `signed in as the member: ${await textOf(member, "#who")}`);
    expect((await textOf(member, "#who")).includes(ownerEmail), `in the owner's account: ${await textOf(member, "#who")}`);
    expect((await textOf(member, "#tier")).toLowerCase() === "free", "the account's plan");
    expect(await member.locator("#invite-form").isHidden(), "a member cannot invite");
    expect(await member.locator("#audit").isHidden(), "a member does not see the audit log");
    expect(await member.locator("#upgrade").isHidden(), "only the owner changes the plan");
    expect((await member.locator("#members-body select").count()) === 0, "a member changes no roles");
    const row = member.locator("#members-body tr", { hasText: memberEmail });
    expect((await row.getByRole("button", { name: /leave/i }).count()) === 1, "a member may leave");
    expect((await member.locator("#account-switch option").count()) === 2, "two accounts to switch between");
    // The owner's keys are listed, but none is the member's: "Create your API key" is offered.
    await member.locator("#no-keys").waitFor({ state: "visible" });
    await member.locator("#no-keys-create").click();
    await member.locator("#created-key").waitFor({ state: "visible" });
    memberKey = await textOf(member, "#created-key-value");
    expect(KEY_RE.test(memberKey), `the member's key is shown (${memberKey})`);
    await member.locator("#no-keys").waitFor({ state: "hidden" });
    await member.locator("#created-done").click();
    await member.setViewportSize({ width: 375, height: 812 });
    await fitsWidth(member, "member dashboard at 375 px");
    await snap(member, "dashboard-member-phone");
    await member.setViewportSize({ width: 1280, height: 900 });
  });

  await step("the account switcher: the member's own account and back", async () => {
    const own = await member.locator("#account-switch option", { hasNotText: ownerEmail }).getAttribute("value");
    const shared = await member.locator("#account-switch option", { hasText: ownerEmail }).getAttribute("value");
    await member.locator("#account-switch").selectOption(own);
    await member.locator("#who-role").filter({ hasText: "Owner" }).waitFor();
    await member.locator("#dash-status").filter({ hasText: memberEmail }).waitFor();
    expect(!(await textOf(member, "#who")).includes(ownerEmail), `acting in their own account: ${await textOf(member, "#who")}`);
    await snap(member, "dashboard-member-own-account");
    await member.locator("#account-switch").selectOption(shared);
    await member.locator("#who-role").filter({ hasText: "Member" }).waitFor();
    await member.locator("#keys-body tr", { hasText: memberKey.slice(0, 15) }).waitFor();
  });

  await step("the owner makes the member an admin, then removes them: session and key end", async () => {
    await owner.reload();
    const row = owner.locator("#members-body tr", { hasText: memberEmail });
    await row.waitFor();
    await owner.locator("#keys-body tr", { hasText: `by ${memberEmail}` }).waitFor();
    await row.getByRole("combobox", { name: `Role of ${memberEmail}` }).selectOption("admin");
    await owner.locator("#members-status").filter({ hasText: /now admin/i }).waitFor();
    await member.reload();
    await member.locator("#who-role").filter({ hasText: "Admin" }).waitFor();
    await member.locator("#audit-body tr").first().waitFor();
    await row.getByRole("button", { name: `Remove ${memberEmail}` }).click();
    const dlg = owner.getByRole("dialog", { name: /remove/i });
    await dlg.getByRole("button", { name: "Remove member" }).click();
    await owner.locator("#members-status").filter({ hasText: /removed/i }).waitFor();
    expect((await owner.locator("#members-body tr", { hasText: memberEmail }).count()) === 0, "the member is gone");
    await member.reload();
    await member.locator("#signin-view").waitFor({ state: "visible" });
    const usage = await fetch(`${BASE}/auth/usage`, { headers: { "X-API-Key": memberKey } });
    expect(usage.status === 401, `the key the member created is revoked (${usage.status})`);
    await owner.locator("#refresh").click();
    await owner.locator("#audit-body tr[data-action='member_removed']").first().waitFor();
    await snap(owner, "member-removed");
  });
}
