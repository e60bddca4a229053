/* Stellar Gate: the page behind every link we mail (GET /auth/link#token=…).
 *
 * The token travels in the fragment, so it never reaches a server log or a Referer. This page
 * takes it out of the address bar at once, posts it to POST /auth/link (which sets the session
 * cookie), then shows the account's first key once (a verification) or goes on to `next` or the
 * dashboard. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, api, say } = S;

  const $ = (id) => document.getElementById(id);

  /** `next` only ever leads to a page of this site (never an open redirect). */
  function safeNext(next) {
    if (typeof next !== "string" || !next.startsWith("/") || next.startsWith("//")) return null;
    try {
      const u = new URL(next, location.origin);
      return u.origin === location.origin ? u.pathname + u.search + u.hash : null;
    } catch (e) {
      return null;
    }
  }

  function title(text) {
    $("link-title").textContent = text;
    document.title = `${text} — Stellar Gate`;
  }

  function fail(heading, text, help, retry) {
    title(heading);
    say($("link-status"), "");
    $("link-status").hidden = true;
    say($("link-error-text"), text);
    const parts = [help || ""];
    if (retry) parts.push(" ", h("button", { class: "btn btn-sm", type: "button", onclick: retry }, "Try again"));
    $("link-error-help").replaceChildren(...parts);
    $("link-error").hidden = false; // the message is role="alert": announced without moving focus
  }

  function go(to) {
    say($("link-status"), "Signed in. Opening your dashboard…");
    location.replace(to);
  }

  function showKey(key, to) {
    title("Your account is ready");
    say($("link-status"), "Your e-mail address is verified and you are signed in.");
    $("link-key-value").textContent = key;
    $("link-curl").textContent = S.curlExample(key);
    $("link-copy").onclick = (e) => S.copyText(key, e.currentTarget, $("link-key-value"));
    // The link of a checkout goes on to the provider once the key is saved.
    $("link-continue").textContent = /^\/billing\//.test(to) ? "Continue to payment" : "Continue";
    $("link-continue").onclick = () => {
      $("link-key-value").textContent = "";
      location.assign(to);
    };
    $("link-key").hidden = false;
    $("link-key").focus();
  }

  async function open(token) {
    $("link-error").hidden = true;
    $("link-status").hidden = false;
    title("Signing you in…");
    say($("link-status"), "Checking your link.");
    const res = await api("POST", "/auth/link", { body: { token } });
    if (res.ok && res.data && typeof res.data === "object") {
      const d = res.data;
      const to = safeNext(d.next) || "/dashboard";
      if (d.purpose === "verification" && typeof d.api_key === "string" && d.api_key) {
        showKey(d.api_key, to);
      } else {
        go(to);
      }
      return;
    }
    if (res.status === 400) {
      fail(
        "This link doesn't work",
        res.detail || "This link is not valid.",
        "Check that you opened the whole link from the e-mail, or ask for a new one.",
      );
    } else if (res.status === 410) {
      fail(
        "This link can't be used again",
        res.detail || "This link has expired or has already been used.",
        "Each link works once, and only for a short while. Ask for a new one; it arrives in a minute.",
      );
    } else if (res.status === 403) {
      fail(
        "This invitation can't be accepted",
        res.detail || "There is no seat left on this account.",
        "Ask the person who invited you to free a seat or upgrade the plan, then to invite you again.",
      );
    } else {
      // Nothing changed on the server: the same token may be tried again.
      fail("Couldn't sign you in", S.errorText(res, "Opening the link failed"), "", () => open(token));
    }
  }

  async function init() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = (params.get("token") || "").trim();
    // Out of the address bar (and so out of history, bookmarks and screenshots) at once.
    history.replaceState(null, "", location.pathname + location.search);
    if (token) {
      await open(token);
      return;
    }
    // No token: a reload after the link was used, or a link cut short. Already signed in? Go on.
    const session = await api("GET", "/auth/session");
    if (session.ok) {
      go("/dashboard");
      return;
    }
    fail(
      "This link is incomplete",
      "There is no sign-in code in this address.",
      "Open the link from the e-mail again (the whole of it), or ask for a new one.",
    );
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
