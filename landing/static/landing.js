/* Stellar Gate landing page: plans from GET /billing/tiers, free key sign-up, checkout modal. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, fmt, api, say, looksLikeEmail } = S;

  const EMAIL_STORAGE = "stellar-gate.email";
  const PROVIDER_NAMES = { lemonsqueezy: "Lemon Squeezy", stripe: "Stripe", toss: "TossPayments" };

  let tierList = [];
  let providers = {};

  const $ = (id) => document.getElementById(id);

  function rememberEmail(v) {
    try {
      sessionStorage.setItem(EMAIL_STORAGE, v);
    } catch (e) {
      /* not important */
    }
  }
  function rememberedEmail() {
    try {
      return sessionStorage.getItem(EMAIL_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  /* ---------- plans ---------- */

  async function loadPlans() {
    const box = $("plans");
    const err = $("plans-error");
    say(err, "");
    box.setAttribute("aria-busy", "true");
    const res = await S.tiers();
    box.setAttribute("aria-busy", "false");
    if (!res.ok || !res.data || !Array.isArray(res.data.tiers) || !res.data.tiers.length) {
      box.replaceChildren();
      say(err, `Couldn't load the plans. ${S.errorText(res, "Loading plans failed")}`);
      err.append(
        " ",
        h("button", { class: "btn btn-sm", type: "button", onclick: loadPlans }, "Try again"),
      );
      return;
    }
    tierList = res.data.tiers;
    providers = res.data.providers || {};
    renderPlans();
    openFromQuery();
  }

  function limitItem(n, one, many) {
    return h("li", null, h("strong", null, fmt.int(n)), " ", n === 1 ? one : many);
  }

  function renderPlans() {
    const box = $("plans");
    const firstPaid = tierList.find((t) => t.price_usd > 0);
    const cards = tierList.map((t) => {
      const paid = t.price_usd > 0;
      const featured = t === firstPaid && tierList.length > 2;
      const nameId = `plan-${t.name}-name`;
      return h(
        "article",
        {
          class: `card plan${featured ? " featured" : ""}`,
          "aria-labelledby": nameId,
          "data-tier": t.name,
        },
        featured ? h("span", { class: "badge-top" }, "Most popular") : null,
        h("h3", { id: nameId }, t.name),
        h(
          "div",
          { class: "price" },
          paid ? fmt.usd(t.price_usd) : fmt.usd(0),
          h("small", null, paid ? " / month" : " forever"),
        ),
        h(
          "p",
          { class: "krw" },
          paid && t.price_krw > 0
            ? `or ${fmt.krw(t.price_krw)} / month with a Korean card`
            : "No card needed",
        ),
        h(
          "ul",
          null,
          limitItem(t.max_memories, "memory", "memories"),
          limitItem(t.max_agents, "agent", "agents"),
          limitItem(t.requests_per_minute, "request / minute", "requests / minute"),
          limitItem(t.max_api_keys, "API key", "API keys"),
        ),
        paid
          ? h(
              "button",
              {
                class: `btn ${featured ? "btn-primary" : ""} btn-block`,
                type: "button",
                "data-subscribe": t.name,
                onclick: (e) => openCheckout(t.name, e.currentTarget),
              },
              `Subscribe to ${fmt.title(t.name)}`,
            )
          : h("a", { class: "btn btn-block", href: "#signup" }, "Get a free key"),
      );
    });
    box.replaceChildren(...cards);
  }

  /** `/?subscribe=pro` (the dashboard's upgrade link) opens the modal for that tier. */
  /** `/?checkout=sign-in&provider=…&tier=…`: a checkout link opened without a key or session
   *  (billing sends no mail for a GET); the modal asks for the address. */
  let signInCheckout = null;

  function openFromQuery() {
    const want = signInCheckout ? signInCheckout.tier : new URLSearchParams(location.search).get("subscribe");
    if (!want) return;
    const t = tierList.find((x) => x.name === want && x.price_usd > 0);
    if (!t) return;
    const btn = document.querySelector(`[data-subscribe="${CSS.escape(t.name)}"]`);
    if (btn) btn.scrollIntoView({ block: "center" });
    openCheckout(t.name, btn);
    if (signInCheckout) {
      const via = PROVIDER_NAMES[signInCheckout.provider];
      say(
        $("checkout-status"),
        `Enter your e-mail address${via ? ` and choose ${via}` : ""}: we send you a link that signs you in and continues to payment.`,
      );
      signInCheckout = null;
    }
  }

  /* ---------- free key sign-up ---------- */

  async function onSignup(e) {
    e.preventDefault();
    const input = $("signup-email");
    const err = $("signup-error");
    const submit = $("signup-submit");
    const email = input.value.trim();
    say(err, "");
    input.removeAttribute("aria-invalid");
    if (!looksLikeEmail(email)) {
      input.setAttribute("aria-invalid", "true");
      say(err, "Please enter a valid e-mail address, like you@example.com.");
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.replaceChildren(h("span", { class: "spinner", "aria-hidden": "true" }), "Creating your key…");
    const res = await api("POST", "/auth/register", { body: { email } });
    submit.disabled = false;
    submit.textContent = "Create my free key";
    if (res.status === 409) {
      say(
        err,
        "This e-mail already has an account, and keys are shown only once. Sign in to your dashboard with a key you saved, or use another e-mail.",
      );
      err.append(" ", h("a", { href: "/dashboard" }, "Go to the dashboard"));
      return;
    }
    if (res.status === 202) {
      // Verified sign-up: the key is shown once the link in the mail is opened.
      rememberEmail(email);
      showSent(email);
      return;
    }
    if (!res.ok || !res.data || typeof res.data.api_key !== "string") {
      if (res.status === 422) input.setAttribute("aria-invalid", "true");
      say(err, S.errorText(res, "Sign-up failed"));
      return;
    }
    rememberEmail(email);
    showKey(res.data.api_key);
  }

  /** "Check your e-mail": the same answer for a new and a known address. */
  function showSent(email) {
    $("signup-form").hidden = true;
    $("signup-sent-email").textContent = email;
    const box = $("signup-sent");
    box.hidden = false;
    box.focus();
  }

  function onSignupAgain() {
    $("signup-sent").hidden = true;
    $("signup-form").hidden = false;
    const input = $("signup-email");
    input.value = "";
    input.focus();
  }

  function showKey(key) {
    $("signup-form").hidden = true;
    const reveal = $("key-reveal");
    $("new-key").textContent = key;
    $("first-curl").textContent = S.curlExample(key);
    $("copy-key").onclick = (e) => S.copyText(key, e.currentTarget, $("new-key"));
    $("copy-curl").onclick = (e) => S.copyText(S.curlExample(key), e.currentTarget, $("first-curl"));
    $("open-dashboard").onclick = () => {
      S.session.set(key);
      location.assign("/dashboard");
    };
    reveal.hidden = false;
    reveal.focus();
  }

  /* ---------- checkout modal ---------- */

  let checkoutTier = null;
  let checkoutOpener = null;
  // Bumped whenever the modal closes or a new choice starts, so a late answer is ignored.
  let checkoutSeq = 0;

  function setBusy(btn) {
    for (const b of document.querySelectorAll(".pay-option")) {
      b.removeAttribute("aria-busy");
      b.disabled = b.dataset.unavailable === "1";
      const go = b.querySelector(".go");
      if (go) go.replaceChildren("→");
    }
    if (btn) {
      btn.setAttribute("aria-busy", "true");
      const go = btn.querySelector(".go");
      if (go) go.replaceChildren(h("span", { class: "spinner" }));
    }
  }

  function openCheckout(tierName, opener) {
    const t = tierList.find((x) => x.name === tierName);
    if (!t) return;
    checkoutTier = t;
    checkoutOpener = opener || document.activeElement;
    const dlg = $("checkout-dialog");
    $("checkout-title").textContent = `Subscribe to ${fmt.title(t.name)}`;
    $("checkout-desc").textContent =
      `${fmt.usd(t.price_usd)} per month` +
      (t.price_krw > 0 ? `, or ${fmt.krw(t.price_krw)} with a Korean card` : "") +
      `: ${fmt.int(t.max_memories)} memories, ${fmt.int(t.requests_per_minute)} requests / minute. ` +
      "Cancel any time; the plan stays until the end of the paid month.";
    for (const b of dlg.querySelectorAll(".pay-option")) {
      const p = b.dataset.provider;
      const sub = b.querySelector(".txt span");
      const available = providers[p] !== false;
      b.dataset.unavailable = available ? "0" : "1";
      if (p === "toss") {
        sub.textContent = `Korean cards, billed in won · ${fmt.krw(t.price_krw)} / month`;
      } else {
        sub.textContent = `${p === "stripe" ? "Card or wallet via Stripe Checkout" : "Card payment via Lemon Squeezy"} · ${fmt.usd(t.price_usd)} / month`;
      }
      if (!available) sub.textContent = "Not available right now";
    }
    setBusy(null);
    showPayChoices(true);
    say($("checkout-error"), "");
    say($("checkout-status"), "");
    const email = $("checkout-email");
    email.removeAttribute("aria-invalid");
    if (!email.value) email.value = $("signup-email").value.trim() || rememberedEmail();
    S.openModal(dlg, {
      opener: checkoutOpener,
      initialFocus: email.value ? dlg.querySelector(".pay-option:not([disabled])") || email : email,
      onClose: () => {
        checkoutSeq++;
        setBusy(null);
      },
    });
  }

  function checkoutError(text) {
    setBusy(null);
    say($("checkout-status"), "");
    say($("checkout-error"), text);
  }

  function safeUrl(u) {
    try {
      const url = new URL(u, location.href);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  async function onPay(e) {
    const btn = e.currentTarget;
    const provider = btn.dataset.provider;
    const t = checkoutTier;
    if (!t || btn.disabled) return;
    const emailEl = $("checkout-email");
    const email = emailEl.value.trim();
    say($("checkout-error"), "");
    emailEl.removeAttribute("aria-invalid");
    if (!looksLikeEmail(email)) {
      emailEl.setAttribute("aria-invalid", "true");
      checkoutError("Enter your e-mail address first, like you@example.com.");
      emailEl.focus();
      return;
    }
    rememberEmail(email);
    const seq = ++checkoutSeq;
    setBusy(btn);
    say($("checkout-status"), `Contacting ${PROVIDER_NAMES[provider]}…`);
    // An e-mail that has an account checks out only with that account's key or its owner's
    // session (billing answers 409 otherwise): send this tab's key, else the session's CSRF
    // token with the cookie. When they are another account's (403) or no longer valid (401),
    // check out as a visitor instead (a new e-mail gets its own account).
    const body = { tier: t.name, email };
    const key = S.session.get();
    let csrf;
    if (!key) {
      const s = await api("GET", "/auth/session");
      if (s.ok && s.data && typeof s.data.csrf_token === "string") csrf = s.data.csrf_token;
    }
    let res = await api("POST", `/billing/${provider}/checkout`, { body, key: key || undefined, csrf });
    if ((key || csrf) && (res.status === 401 || res.status === 403)) {
      res = await api("POST", `/billing/${provider}/checkout`, { body, anonymous: true });
    }
    if (seq !== checkoutSeq) return; // closed or another choice meanwhile
    if (res.status === 202) {
      // A new e-mail without immediate keys: the mailed link confirms the address, shows the
      // key and continues to payment.
      setBusy(null);
      say($("checkout-status"), "");
      showPayChoices(false, "sent");
      $("checkout-sent-email").textContent = email;
      $("checkout-sent").focus();
      return;
    }
    if (!res.ok || !res.data) {
      checkoutError(S.errorText(res, `${PROVIDER_NAMES[provider]} checkout failed`));
      return;
    }
    if (typeof res.data.api_key === "string") {
      // A new e-mail: billing created the account and its first key, shown this once.
      await revealNewKey(res.data.api_key, seq);
      if (seq !== checkoutSeq) return;
    }
    if (provider === "toss") {
      await tossCheckout(res.data, seq);
      return;
    }
    const url = safeUrl(res.data.checkout_url);
    if (!url) {
      checkoutError(`${PROVIDER_NAMES[provider]} did not return a checkout page. Please try again.`);
      return;
    }
    say($("checkout-status"), `Opening the ${PROVIDER_NAMES[provider]} checkout…`);
    location.assign(url);
  }

  /** The payment choices, or instead of them the new key ("key") or "check your e-mail"
   *  ("sent"). */
  function showPayChoices(on, instead) {
    $("checkout-email-field").hidden = !on;
    $("pay-label").hidden = !on;
    $("pay-options").hidden = !on;
    $("checkout-key").hidden = on || instead === "sent";
    $("checkout-sent").hidden = on || instead !== "sent";
  }

  /** Show the new account's key (copy button, "save it now") and wait for "Continue to
   *  payment". The key is also kept for this tab's dashboard session, so coming back from the
   *  provider signs in with it. Resolves when the user continues (or the modal closes). */
  function revealNewKey(key, seq) {
    setBusy(null);
    say($("checkout-status"), "");
    S.session.set(key);
    $("checkout-new-key").textContent = key;
    $("checkout-copy-key").onclick = (e) => S.copyText(key, e.currentTarget, $("checkout-new-key"));
    showPayChoices(false);
    $("checkout-key").focus();
    return new Promise((resolve) => {
      const done = () => {
        clearInterval(watch);
        resolve();
      };
      // Closing the modal bumps checkoutSeq: stop waiting then.
      const watch = setInterval(() => {
        if (seq !== checkoutSeq) done();
      }, 250);
      $("checkout-continue").onclick = () => {
        $("checkout-continue").onclick = null;
        say($("checkout-status"), "Continuing to payment…");
        done();
      };
    });
  }

  /* TossPayments: its SDK is loaded only now that it was chosen. */

  const scriptLoads = new Map();
  function loadScript(src) {
    if (scriptLoads.has(src)) return scriptLoads.get(src);
    const p = new Promise((resolve, reject) => {
      const el = document.createElement("script");
      const timer = setTimeout(() => fail(new Error("timeout")), 15000);
      function fail(err) {
        clearTimeout(timer);
        el.remove();
        scriptLoads.delete(src);
        reject(err);
      }
      el.src = src;
      el.async = true;
      el.onload = () => {
        clearTimeout(timer);
        resolve();
      };
      el.onerror = () => fail(new Error("load failed"));
      document.head.append(el);
    });
    scriptLoads.set(src, p);
    return p;
  }

  async function tossCheckout(d, seq) {
    const sdk = safeUrl(d.sdk_url);
    if (!sdk || !d.client_key || !d.customer_key) {
      checkoutError("TossPayments checkout is not set up correctly. Please choose another way to pay.");
      return;
    }
    say($("checkout-status"), "Loading the TossPayments payment window…");
    try {
      await loadScript(sdk);
    } catch (e) {
      if (seq !== checkoutSeq) return;
      checkoutError(
        "Couldn't load the TossPayments payment window. Check your connection and try again, or choose another way to pay.",
      );
      return;
    }
    if (seq !== checkoutSeq) return;
    if (typeof window.TossPayments !== "function") {
      checkoutError("The TossPayments payment window failed to start. Please try again later.");
      return;
    }
    const opts = {
      successUrl: d.success_url,
      failUrl: d.fail_url,
      customerEmail: d.customer_email,
    };
    let started;
    try {
      const tp = window.TossPayments(d.client_key);
      if (tp && typeof tp.payment === "function") {
        // SDK v2: payment({customerKey}).requestBillingAuth({method: "CARD", ...})
        started = () =>
          tp.payment({ customerKey: d.customer_key }).requestBillingAuth({ method: "CARD", ...opts });
      } else if (tp && typeof tp.requestBillingAuth === "function") {
        // SDK v1: requestBillingAuth("카드", {customerKey, ...})
        started = () => tp.requestBillingAuth("카드", { customerKey: d.customer_key, ...opts });
      }
    } catch (e) {
      started = null;
    }
    if (!started) {
      checkoutError("The TossPayments payment window failed to start. Please try again later.");
      return;
    }
    say($("checkout-status"), "Opening the TossPayments payment window…");
    // Toss draws its own window over the page; a modal <dialog> would sit above it and make it
    // unclickable, so ours steps aside and comes back if Toss reports a problem.
    const opener = checkoutOpener;
    const tierName = checkoutTier.name;
    S.closeModal($("checkout-dialog"));
    try {
      await started();
    } catch (e) {
      const cancelled = e && (e.code === "USER_CANCEL" || e.code === "PAY_PROCESS_CANCELED");
      openCheckout(tierName, opener);
      checkoutError(
        cancelled
          ? "The TossPayments window was closed; nothing was charged."
          : `TossPayments: ${(e && e.message) || "the card could not be registered"}. Please try again.`,
      );
    }
  }

  function init() {
    for (const el of document.querySelectorAll(".origin")) el.textContent = location.origin;
    // Where the providers send people back when they did not pay.
    const params = new URLSearchParams(location.search);
    const outcome = params.get("checkout");
    if (outcome === "cancelled") {
      say($("banner"), "Checkout cancelled; nothing was charged. You can pick a plan again below.");
    } else if (outcome === "failed") {
      const reason = params.get("reason") || "";
      const why =
        reason === "declined"
          ? "the card was declined"
          : /CANCEL/i.test(reason)
            ? "the payment window was closed"
            : "the payment could not be completed";
      const who = PROVIDER_NAMES[params.get("provider")] || "The payment provider";
      say($("banner"), `${who}: ${why}. Nothing was charged; you can try again below.`, "error");
      $("banner").setAttribute("role", "alert");
    }
    if (outcome === "sign-in") {
      signInCheckout = { tier: params.get("tier"), provider: params.get("provider") };
      params.delete("tier");
    }
    if (outcome) {
      params.delete("checkout");
      params.delete("provider");
      params.delete("reason");
      const q = params.toString();
      history.replaceState(null, "", location.pathname + (q ? `?${q}` : "") + location.hash);
    }
    $("signup-form").addEventListener("submit", onSignup);
    $("signup-again").addEventListener("click", onSignupAgain);
    for (const b of document.querySelectorAll(".pay-option")) b.addEventListener("click", onPay);
    S.setupModal($("checkout-dialog"));
    loadPlans();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
