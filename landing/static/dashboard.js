/* Stellar Gate dashboard: sign in with an e-mail link (session cookie) or an API key
 * (sessionStorage only); usage, keys, billing; the people panels live in people.js, key scopes
 * in keyscope.js, the usage history in usage.js, webhooks, alerts and data in integrations.js. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, s, fmt, api, say } = S;

  const $ = (id) => document.getElementById(id);
  const PROVIDER_NAMES = { lemonsqueezy: "Lemon Squeezy", stripe: "Stripe", toss: "TossPayments" };
  const STATUS_LABELS = {
    none: "No subscription",
    active: "Active",
    cancelled: "Cancelled",
    past_due: "Payment past due",
    expired: "Expired",
  };

  // Signed in with a key (this tab's sessionStorage) or, when null, by the session cookie.
  let key = null;
  // GET /auth/session's answer while signed in by cookie: e-mail, role, CSRF token, accounts.
  let session = null;
  let usage = null;
  let loading = false;
  // The scope fields of the create-key form (keyscope.js).
  let newScope = null;

  /** The API with this tab's credentials: the key, or the cookie plus the CSRF token that every
   *  state-changing request signed in by cookie must carry. */
  function call(method, path, opts) {
    const o = Object.assign({}, opts);
    if (key) o.key = key;
    else if (session) o.csrf = session.csrf_token;
    return api(method, path, o);
  }

  function show(view) {
    $("signin-view").hidden = view !== "signin";
    $("account-view").hidden = view !== "account";
    $("signout").hidden = view !== "account";
  }

  /** Back to the sign-in screen. Signed in by cookie, the session is ended on the server too,
   *  unless opts.local (it has ended already). */
  async function signOut(message, opts) {
    const wasSession = !key && session;
    if (wasSession && !(opts && opts.local)) {
      await call("POST", "/auth/sign-out");
    }
    S.session.clear();
    key = null;
    session = null;
    usage = null;
    $("keys-body").replaceChildren();
    $("chart").replaceChildren();
    S.usage.clear();
    S.integrations.clear();
    $("created-key").hidden = true;
    $("no-keys").hidden = true;
    $("account-switch-field").hidden = true;
    S.people.clear();
    show("signin");
    const input = $("signin-key");
    input.value = "";
    say($("signin-error"), wasSession ? "" : message || "");
    say($("email-error"), "");
    if (wasSession) {
      say($("dash-status"), "");
      say($("banner"), message || "");
      resetEmailForm();
      $("signin-email").focus();
    } else {
      input.focus();
    }
  }

  /* ---------- sign in ---------- */

  async function onSignin(e) {
    e.preventDefault();
    const input = $("signin-key");
    const err = $("signin-error");
    const candidate = input.value.trim();
    say(err, "");
    input.removeAttribute("aria-invalid");
    if (!S.KEY_RE.test(candidate)) {
      input.setAttribute("aria-invalid", "true");
      say(err, "That doesn't look like a Stellar Gate key: it is sk-stellar- followed by 32 characters 0–9 and a–f.");
      input.focus();
      return;
    }
    const btn = $("signin-submit");
    btn.disabled = true;
    btn.textContent = "Signing in…";
    const res = await api("GET", "/auth/usage", { key: candidate });
    btn.disabled = false;
    btn.textContent = "Sign in";
    if (res.status === 401 || res.status === 403) {
      input.setAttribute("aria-invalid", "true");
      say(err, /expired/i.test(res.detail || "") ? "This key has expired." : "This key isn't valid, or it has been revoked.");
      input.focus();
      return;
    }
    if (!res.ok || !res.data) {
      say(err, S.errorText(res, "Sign-in failed"));
      return;
    }
    key = candidate;
    session = null;
    S.session.set(key);
    input.value = "";
    show("account");
    renderUsage(res.data);
    $("dash-error").textContent = "";
    await refresh({ skipUsage: true });
    $("main").focus?.();
  }

  /* ---------- sign in with an e-mail link ---------- */

  async function onEmailSignin(e) {
    e.preventDefault();
    const input = $("signin-email");
    const err = $("email-error");
    const email = input.value.trim();
    say(err, "");
    input.removeAttribute("aria-invalid");
    if (!S.looksLikeEmail(email)) {
      input.setAttribute("aria-invalid", "true");
      say(err, "Please enter a valid e-mail address, like you@example.com.");
      input.focus();
      return;
    }
    const btn = $("email-submit");
    btn.disabled = true;
    btn.textContent = "Sending…";
    const res = await api("POST", "/auth/sign-in", { body: { email } });
    btn.disabled = false;
    btn.textContent = "E-mail me a sign-in link";
    if (!res.ok) {
      if (res.status === 422) input.setAttribute("aria-invalid", "true");
      say(err, S.errorText(res, "Sending the sign-in link failed"));
      return;
    }
    $("email-form").hidden = true;
    $("email-sent-to").textContent = email;
    $("email-sent").hidden = false;
    $("email-sent").focus();
  }

  function resetEmailForm() {
    $("email-sent").hidden = true;
    $("email-form").hidden = false;
  }

  /** Signed in by cookie: GET /auth/session (or its twin from POST /auth/session/account). */
  function startSession(data) {
    session = data;
    key = null;
    show("account");
    renderSession();
  }

  function renderSession() {
    renderWho();
    const field = $("account-switch-field");
    const accounts = session && Array.isArray(session.accounts) ? session.accounts : [];
    if (accounts.length < 2) {
      field.hidden = true;
      return;
    }
    $("account-switch").replaceChildren(
      ...accounts.map((a) =>
        h(
          "option",
          { value: a.account_id, selected: String(a.account_id) === String(session.account_id) },
          `${a.owner_email} · ${fmt.title(a.role)} · ${fmt.title(a.tier)}`,
        ),
      ),
    );
    field.hidden = false;
  }

  async function onSwitchAccount(e) {
    const select = e.currentTarget;
    const target = select.value;
    say($("dash-error"), "");
    select.disabled = true;
    const res = await call("POST", "/auth/session/account", { body: { account_id: accountId(target) } });
    select.disabled = false;
    if (res.status === 401) {
      signOut("Your session has ended. Sign in again.", { local: true });
      return;
    }
    if (!res.ok || !res.data || !res.data.csrf_token) {
      select.value = String(session.account_id);
      say($("dash-error"), S.errorText(res, "Switching accounts failed"));
      return;
    }
    usage = null;
    $("created-key").hidden = true;
    S.people.clear();
    S.usage.clear();
    S.integrations.clear();
    startSession(res.data);
    const a = (res.data.accounts || []).find((x) => String(x.account_id) === String(res.data.account_id));
    say($("dash-status"), `Now in the account of ${a ? a.owner_email : res.data.email}.`);
    await refresh();
  }

  /** The id as the server sent it (a number stays a number). */
  function accountId(value) {
    const a = ((session && session.accounts) || []).find((x) => String(x.account_id) === value);
    return a ? a.account_id : value;
  }

  /* ---------- loading ---------- */

  async function refresh(opts) {
    if ((!key && !session) || loading) return;
    loading = true;
    const used = key;
    $("refresh").disabled = true;
    const skipUsage = opts && opts.skipUsage;
    const [u, k, hist, tiers, sess] = await Promise.all([
      skipUsage ? Promise.resolve(null) : call("GET", "/auth/usage"),
      call("GET", "/auth/api-keys"),
      call("GET", "/auth/usage/history"),
      S.tiers(),
      // The role, the accounts and the CSRF token may have changed since.
      key ? Promise.resolve(null) : api("GET", "/auth/session"),
    ]);
    loading = false;
    $("refresh").disabled = false;
    if (used !== key) {
      // The session switched keys (rotation) while this was loading: load again with the new one.
      refresh();
      return;
    }
    if (!key && !session) return; // signed out meanwhile
    if ((sess && sess.status === 401) || (!key && ((u && u.status === 401) || k.status === 401))) {
      signOut("Your session has ended (it may have been revoked, or it expired). Sign in again.", { local: true });
      return;
    }
    if ((u && u.status === 401) || k.status === 401) {
      signOut("Your key is no longer valid (it may have been revoked). Sign in with another key.");
      return;
    }
    if (sess && sess.ok && sess.data && sess.data.csrf_token) {
      session = sess.data;
      renderSession();
    }
    const problems = [];
    if (u) {
      if (u.ok && u.data) renderUsage(u.data);
      else problems.push(S.errorText(u, "Loading usage failed"));
    }
    const keyList = k.ok && k.data && Array.isArray(k.data.keys) ? k.data.keys : null;
    if (keyList) renderKeys(keyList);
    else problems.push(S.errorText(k, "Loading keys failed"));
    if (hist.ok && hist.data && Array.isArray(hist.data.hours)) renderChart(hist.data.hours);
    else {
      $("chart").replaceChildren(h("p", { class: "sub" }, "The request history is not available right now."));
      $("chart-total").textContent = "";
    }
    renderUpgrade(tiers);
    say($("dash-error"), problems.join(" "));
    S.people.load();
    S.usage.load(keyList || []);
    S.integrations.load();
  }

  /* ---------- usage and plan ---------- */

  function renderUsage(u) {
    usage = u;
    try {
      if (u.email) sessionStorage.setItem("stellar-gate.email", u.email);
    } catch (e) {
      /* not important */
    }
    renderWho();

    $("tier").textContent = u.tier;

    const st = u.subscription_status || "none";
    const badge = $("sub-status");
    badge.className = `status status-${st}`;
    badge.textContent = STATUS_LABELS[st] || st;
    let period = "";
    if (u.current_period_end) {
      const ending = st === "cancelled" || st === "expired" || u.cancel_at_period_end;
      period = `${ending ? "Ends" : "Renews"} ${fmt.date(u.current_period_end)}`;
    }
    $("period").textContent = period;

    const used = Number(u.memories_used) || 0;
    const limit = Number(u.memories_limit) || 0;
    $("memories").replaceChildren(fmt.int(used), h("small", null, ` / ${fmt.int(limit)}`));
    const pct = limit > 0 ? Math.min(100, (used / limit) * 100) : 0;
    const meter = $("mem-meter");
    meter.setAttribute("aria-valuenow", String(used));
    meter.setAttribute("aria-valuemax", String(limit));
    meter.setAttribute("aria-valuetext", `${fmt.int(used)} of ${fmt.int(limit)} memories`);
    meter.classList.toggle("high", pct >= 90);
    meter.firstElementChild.style.width = `${used > 0 ? Math.max(pct, 1.5) : 0}%`;
    $("mem-pct").textContent =
      used === 0 ? "None stored yet" : pct < 1 ? "Less than 1% used" : `${Math.round(pct)}% used`;

    $("rpm").textContent = fmt.int(u.requests_per_minute);
    $("keys-count").replaceChildren(fmt.int(u.keys_used), h("small", null, ` / ${fmt.int(u.keys_limit)}`));
    $("agents").textContent =
      u.agents_limit !== undefined
        ? `Agents: ${fmt.int(u.agents_used || 0)} / ${fmt.int(u.agents_limit)}`
        : "";

    // Subscription panel.
    const provider = PROVIDER_NAMES[u.provider] || u.provider || "";
    const tierName = fmt.title(u.tier);
    let text;
    if (st === "active" && u.cancel_at_period_end) {
      text = `Cancelled: your ${tierName} plan stays until ${fmt.date(u.current_period_end)}.`;
    } else if (st === "active") {
      text = `${tierName} plan, renews ${fmt.date(u.current_period_end)}${provider ? `, paid with ${provider}` : ""}.`;
    } else if (st === "cancelled") {
      text = `Cancelled: your ${tierName} plan stays until ${fmt.date(u.current_period_end)}, then the account moves to the free plan.`;
    } else if (st === "past_due") {
      text = `The last payment for ${tierName} failed. Update your payment method to keep the plan.`;
    } else if (st === "expired") {
      text = `Your subscription has ended; the account is on the ${tierName} plan.`;
    } else {
      text = `You are on the ${tierName} plan. Upgrade for more memories, agents, keys and requests.`;
    }
    const owns = billingOwner();
    $("billing-text").textContent = owns ? text : `${text} Only the account's owner changes the plan.`;
    const hasSub = u.provider && (st === "active" || st === "cancelled" || st === "past_due");
    // Toss has no hosted portal: this panel is where a Toss subscription is managed.
    $("portal").hidden = !owns || !hasSub || u.provider === "toss";
    $("cancel-sub").hidden = !owns || !(st === "active" && !u.cancel_at_period_end);

    newScope.setMax(Number(u.requests_per_minute) || 0);
    const create = $("create-key");
    const full = Number(u.keys_used) >= Number(u.keys_limit);
    create.title = full ? "Your plan's key limit is reached" : "";
  }

  /** The address of the account's owner (signed in by cookie: from the session's accounts). */
  function accountOwner() {
    const accounts = (session && session.accounts) || [];
    const a = accounts.find((x) => String(x.account_id) === String(session.account_id));
    return (a && a.owner_email) || (usage && usage.email) || null;
  }

  function renderWho() {
    const who = $("who");
    if (key) {
      who.replaceChildren("Signed in as ", h("strong", null, (usage && usage.email) || "—"), " with key ", h("code", null, `${key.slice(0, 15)}…`));
      return;
    }
    if (!session) return;
    const owner = accountOwner();
    who.replaceChildren(
      "Signed in as ",
      h("strong", { id: "who-email" }, session.email),
      " ",
      h("span", { class: `tag role-${session.role}`, id: "who-role" }, fmt.title(session.role)),
      ...(owner && owner !== session.email ? [" in the account of ", h("strong", null, owner)] : []),
    );
  }

  /** Checkout, portal and cancel are the owner's (a key's role is not known here: the server
   *  decides). */
  function billingOwner() {
    return !!key || !session || session.role === "owner";
  }

  function renderUpgrade(tiersRes) {
    const link = $("upgrade");
    link.hidden = !billingOwner();
    if (link.hidden) return;
    if (!usage || !tiersRes || !tiersRes.ok || !tiersRes.data) {
      link.href = "/#pricing";
      link.textContent = "See plans";
      return;
    }
    const list = tiersRes.data.tiers || [];
    const i = list.findIndex((t) => t.name === usage.tier);
    const next = i >= 0 ? list[i + 1] : null;
    if (next) {
      link.hidden = false;
      link.href = `/?subscribe=${encodeURIComponent(next.name)}#pricing`;
      link.textContent = `Upgrade to ${fmt.title(next.name)}`;
    } else {
      link.hidden = false;
      link.href = "/#pricing";
      link.textContent = "See plans";
    }
  }

  async function onPortal(e) {
    const btn = e.currentTarget;
    const err = $("billing-error");
    say(err, "");
    btn.disabled = true;
    const res = await call("GET", "/billing/portal");
    btn.disabled = false;
    let url = null;
    try {
      const u = new URL(res.data && res.data.url, location.href);
      if (u.protocol === "https:" || u.protocol === "http:") url = u.href;
    } catch (x) {
      url = null;
    }
    if (!res.ok || !url) {
      say(err, S.errorText(res, "Opening the billing portal failed"));
      return;
    }
    location.assign(url);
  }

  async function onCancelSub(e) {
    const opener = e.currentTarget;
    const until = usage && usage.current_period_end ? fmt.date(usage.current_period_end) : "the end of the paid period";
    const ok = await S.confirmDialog({
      title: "Cancel your subscription?",
      text: `You keep the ${fmt.title(usage && usage.tier)} plan until ${until}; after that the account moves to the free plan. Your memories are kept, but stores beyond the free limit are refused.`,
      confirmLabel: "Cancel subscription",
      cancelLabel: "Keep subscription",
      opener,
    });
    if (!ok) return;
    const res = await call("POST", "/billing/cancel");
    if (!res.ok) {
      say($("billing-error"), S.errorText(res, "Cancelling failed"));
      return;
    }
    say($("dash-status"), `Subscription cancelled. It stays active until ${fmt.date(res.data && res.data.current_period_end)}.`);
    refresh();
  }

  /* ---------- keys ---------- */

  function renderKeys(keys) {
    const body = $("keys-body");
    // Signed in by e-mail without an active key of one's own (a new member, or every key
    // revoked): offer one. Keys from before teams (no creator) are the owner's.
    const me = !key && session ? session.email : null;
    const owner = accountOwner();
    const byOther = (k) => me && k.created_by_email && k.created_by_email !== me;
    $("no-keys").hidden = !me || keys.some((k) => k.is_active && (k.created_by_email || owner) === me);
    if (!keys.length) {
      body.replaceChildren(h("tr", null, h("td", { colspan: "6" }, "No keys.")));
      return;
    }
    // The owner and admins change any key; a member the keys they created (the server decides
    // for a key, whose role the page does not know).
    const role = !key && session ? session.role : null;
    const mayEdit = (k) => !role || role === "owner" || role === "admin" || (k.created_by_email || owner) === me;
    const now = Date.now();
    body.replaceChildren(
      ...keys.map((k) => {
        const current = k.is_active && k.key_prefix && key && key.startsWith(k.key_prefix);
        const expired = k.is_active && S.keyScope.isExpired(k, now);
        return h(
          "tr",
          { class: k.is_active ? (expired ? "expired" : "") : "revoked", "data-key-id": k.id },
          h(
            "td",
            { "data-label": "Name" },
            k.name || "Default",
            current ? h("span", { class: "tag" }, "this session") : null,
            byOther(k) ? h("span", { class: "by" }, `by ${k.created_by_email}`) : null,
            k.is_active ? null : h("span", { class: "tag off" }, "revoked"),
          ),
          h("td", { "data-label": "Key" }, h("code", null, `${k.key_prefix}…`)),
          h("td", { "data-label": "Scope", class: "scope" }, k.is_active ? S.keyScope.tags(k, now) : "—"),
          h("td", { "data-label": "Created" }, fmt.dateTime(k.created_at)),
          h("td", { "data-label": "Last used" }, k.last_used_at ? fmt.dateTime(k.last_used_at) : "Never"),
          h(
            "td",
            { class: "actions" },
            k.is_active && mayEdit(k)
              ? h(
                  "button",
                  {
                    class: "btn btn-sm",
                    type: "button",
                    "aria-label": `Edit key ${k.name || "Default"} (${k.key_prefix}…)`,
                    onclick: (e) => onEdit(k, e.currentTarget),
                  },
                  "Edit",
                )
              : null,
            k.is_active
              ? h(
                  "button",
                  {
                    class: "btn btn-sm",
                    type: "button",
                    "aria-label": `Rotate key ${k.name || "Default"} (${k.key_prefix}…)`,
                    onclick: (e) => onRotate(k, current, e.currentTarget),
                  },
                  "Rotate",
                )
              : null,
            k.is_active
              ? h(
                  "button",
                  {
                    class: "btn btn-danger btn-sm",
                    type: "button",
                    "aria-label": `Revoke key ${k.name || "Default"} (${k.key_prefix}…)`,
                    onclick: (e) => onRevoke(k, current, e.currentTarget),
                  },
                  "Revoke",
                )
              : null,
          ),
        );
      }),
    );
  }

  async function onRevoke(k, current, opener) {
    const name = k.name || "Default";
    const ok = await S.confirmDialog({
      title: `Revoke “${name}”?`,
      text:
        `Requests with ${k.key_prefix}… will get 401 within a second. This can't be undone.` +
        (current ? " It is the key you are signed in with, so you will be signed out." : ""),
      confirmLabel: "Revoke key",
      cancelLabel: "Keep key",
      opener,
    });
    if (!ok) return;
    say($("keys-error"), "");
    const res = await call("DELETE", `/auth/api-keys/${encodeURIComponent(k.id)}`);
    if (!res.ok) {
      // 409: the account's last active key; billing's message says to rotate it instead.
      say($("keys-error"), S.errorText(res, "Revoking the key failed"));
      return;
    }
    if (current) {
      signOut(`Key “${name}” was revoked. Sign in with another key.`);
      return;
    }
    say($("dash-status"), `Key “${name}” revoked.`);
    await refresh();
    $("keys-title").focus?.();
  }

  function onEdit(k, opener) {
    say($("keys-error"), "");
    S.keyScope.edit(k, {
      call,
      maxRpm: usage ? Number(usage.requests_per_minute) || 0 : 0,
      opener,
      saved: async (changed) => {
        say($("dash-status"), `Key “${changed.name || k.name || "Default"}” changed; every gateway applies it within a second.`);
        await refresh();
      },
    });
  }

  async function onRotate(k, current, opener) {
    const name = k.name || "Default";
    const overlap = S.keyScope.overlapField();
    const ok = await S.confirmDialog({
      title: `Rotate “${name}”?`,
      text:
        `A new key named “${name}”, with the same scope, replaces ${k.key_prefix}…, which gets 401 within a second ` +
        "(or when the overlap below ends). The new key is shown once; update everything that uses the old one." +
        (current ? " It is the key you are signed in with, so this tab switches to the new key." : ""),
      confirmLabel: "Rotate key",
      cancelLabel: "Keep key",
      extra: overlap.node,
      opener,
    });
    if (!ok) return;
    say($("keys-error"), "");
    const secs = overlap.secs();
    if (secs === null) {
      say($("keys-error"), "The overlap is a whole number, at most 30 days: nothing was rotated.");
      return;
    }
    const res = await call(
      "POST",
      `/auth/api-keys/${encodeURIComponent(k.id)}/rotate`,
      secs > 0 ? { body: { overlap_secs: secs } } : undefined,
    );
    if (!res.ok || !res.data || typeof res.data.api_key !== "string" || !S.KEY_RE.test(res.data.api_key)) {
      say($("keys-error"), S.errorText(res, "Rotating the key failed"));
      return;
    }
    const fresh = res.data.api_key;
    if (current) {
      key = fresh;
      S.session.set(key);
    }
    const box = $("created-key");
    $("created-key-title").textContent = `Replacement for “${res.data.name || name}”`;
    $("created-key-value").textContent = fresh;
    $("copy-created").textContent = "Copy key";
    $("copy-created").onclick = (ev) => S.copyText(fresh, ev.currentTarget, $("created-key-value"));
    box.hidden = false;
    say(
      $("dash-status"),
      `Key “${name}” rotated: ${k.key_prefix}… stops working ${secs > 0 ? `in ${S.keyScope.duration(secs)}` : "within a second"}.` +
        (current ? " This tab now uses the new key." : ""),
    );
    box.focus();
    await refresh();
  }

  async function onCreateKey(e) {
    e.preventDefault();
    await createKey($("new-key-name").value.trim(), $("create-key"), true);
  }

  /** POST /auth/api-keys; `scoped`: with the restrictions chosen in the form. */
  async function createKey(name, btn, scoped) {
    const nameEl = $("new-key-name");
    const err = $("keys-error");
    say(err, "");
    const scope = scoped ? newScope.read() : { body: {} };
    if (scope.error) {
      $("new-key-scope").open = true;
      say(err, scope.error);
      scope.el.focus();
      return;
    }
    btn.disabled = true;
    const res = await call("POST", "/auth/api-keys", { body: Object.assign(name ? { name } : {}, scope.body) });
    btn.disabled = false;
    if (!res.ok || !res.data || typeof res.data.api_key !== "string") {
      let text = S.errorText(res, "Creating the key failed");
      if (res.status === 403 && /limit/i.test(text) && !/revoke|upgrade/i.test(text)) {
        text = `${text.replace(/\.?$/, ".")} Revoke a key you no longer use, or upgrade for more keys.`;
      }
      say(err, text);
      return;
    }
    nameEl.value = "";
    if (scoped) {
      newScope.fill(null);
      $("new-key-scope").open = false;
    }
    const box = $("created-key");
    $("created-key-title").textContent = `New key “${res.data.name || name || "Default"}”`;
    $("created-key-value").textContent = res.data.api_key;
    $("copy-created").onclick = (ev) => S.copyText(res.data.api_key, ev.currentTarget, $("created-key-value"));
    box.hidden = false;
    box.focus();
    refresh();
  }

  /* ---------- chart: requests per hour, inline SVG ---------- */

  function renderChart(hours) {
    const box = $("chart");
    const W = 480;
    const H = 170;
    const padL = 34;
    const padR = 6;
    const padT = 10;
    const padB = 24;
    const n = hours.length || 1;
    const values = hours.map((x) => Math.max(0, Number(x.requests) || 0));
    const total = values.reduce((a, b) => a + b, 0);
    const max = Math.max(1, ...values);
    const peakIdx = total > 0 ? values.indexOf(max) : -1;
    const slot = (W - padL - padR) / n;
    const bw = Math.max(2, slot * 0.72);
    const plotH = H - padT - padB;

    const summary =
      total === 0
        ? "No requests in the last 24 hours."
        : `${fmt.int(total)} requests in the last 24 hours; busiest hour ${fmt.hour(hours[peakIdx].hour_start)} with ${fmt.int(max)}.`;
    $("chart-total").textContent = `${fmt.plural(total, "request", "requests")} in 24 h`;

    const svg = s("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": summary,
      preserveAspectRatio: "xMidYMid meet",
    });
    svg.append(s("title", null, summary));
    // Axis and max label.
    svg.append(
      s("line", { class: "axis", x1: padL, y1: padT + plotH, x2: W - padR, y2: padT + plotH }),
      s("line", { class: "axis", x1: padL, y1: padT, x2: W - padR, y2: padT, "stroke-dasharray": "3 4", opacity: "0.6" }),
      s("text", { x: padL - 6, y: padT + 4, "text-anchor": "end" }, fmt.int(max)),
      s("text", { x: padL - 6, y: padT + plotH + 4, "text-anchor": "end" }, "0"),
    );
    values.forEach((v, i) => {
      const bh = v > 0 ? Math.max(2, (v / max) * plotH) : 0;
      const x = padL + i * slot + (slot - bw) / 2;
      const label = `${fmt.hour(hours[i].hour_start)}: ${fmt.plural(v, "request", "requests")}`;
      svg.append(
        s(
          "rect",
          {
            class: `bar-rect${i === peakIdx ? " peak" : ""}`,
            x: x.toFixed(1),
            y: (padT + plotH - bh).toFixed(1),
            width: bw.toFixed(1),
            height: bh.toFixed(1),
            rx: "2",
            "data-requests": String(v),
          },
          s("title", null, label),
        ),
      );
      if (i % 6 === 0 || i === n - 1) {
        svg.append(
          s(
            "text",
            { x: (padL + i * slot + slot / 2).toFixed(1), y: H - 6, "text-anchor": "middle" },
            i === n - 1 ? "now" : fmt.hour(hours[i].hour_start),
          ),
        );
      }
    });
    box.replaceChildren(svg);
    if (total === 0) box.append(h("p", { class: "sub" }, "No requests yet — your first call will show up here."));
  }

  /* ---------- start ---------- */

  async function init() {
    S.setupModal($("confirm-dialog"));
    $("signin-form").addEventListener("submit", onSignin);
    $("signout").addEventListener("click", () => signOut("Signed out."));
    $("refresh").addEventListener("click", () => refresh());
    $("email-form").addEventListener("submit", onEmailSignin);
    $("email-again").addEventListener("click", () => {
      resetEmailForm();
      $("signin-email").value = "";
      $("signin-email").focus();
    });
    $("account-switch").addEventListener("change", onSwitchAccount);
    $("no-keys-create").addEventListener("click", (e) => createKey("", e.currentTarget, false));
    newScope = S.keyScope.fields("new-key", {});
    $("new-key-scope-fields").append(newScope.node);
    S.usage.attach({ call, key: () => key });
    S.integrations.attach({
      call,
      key: () => key,
      role: () => (key ? null : session && session.role) || null,
      accountEmail: () => (usage && usage.email) || (session ? accountOwner() : null),
      signOut,
      status: (text) => say($("dash-status"), text),
    });
    S.people.attach({
      call,
      role: () => (key ? null : session && session.role) || null,
      email: () => (key ? null : session && session.email) || null,
      signOut,
      status: (text) => say($("dash-status"), text),
    });
    $("create-key-form").addEventListener("submit", onCreateKey);
    $("portal").addEventListener("click", onPortal);
    $("cancel-sub").addEventListener("click", onCancelSub);
    $("created-done").addEventListener("click", () => {
      $("created-key").hidden = true;
      $("created-key-value").textContent = "";
      $("new-key-name").focus();
    });
    $("keys-title").setAttribute("tabindex", "-1");
    $("main").setAttribute("tabindex", "-1");

    // Where Lemon Squeezy and Stripe send the customer back after paying.
    const params = new URLSearchParams(location.search);
    if (params.get("checkout") === "success") {
      say(
        $("banner"),
        "Thank you! Your payment went through. The new plan shows here as soon as the payment provider confirms it, usually within seconds; press Refresh if it doesn't.",
      );
    } else if (params.get("checkout") === "pending") {
      say(
        $("banner"),
        "Your card is registered and the first charge is being processed. The plan shows here once it is confirmed; press Refresh in a moment.",
      );
    }

    if (params.has("checkout")) {
      // Shown once: a reload or a bookmark should not thank anyone again.
      history.replaceState(null, "", location.pathname + location.hash);
    }

    const saved = S.session.get();
    if (saved && S.KEY_RE.test(saved)) {
      key = saved;
      show("account");
      refresh();
      return;
    }
    // No key in this tab: signed in by the cookie a mailed link set?
    show("none");
    const res = await api("GET", "/auth/session");
    if (key) return; // signed in with a key meanwhile
    if (res.ok && res.data && res.data.csrf_token) {
      startSession(res.data);
      refresh();
      return;
    }
    show("signin");
    if (location.hash === "#email-signin") {
      const email = rememberedEmail();
      if (email) $("signin-email").value = email;
      $("signin-email").focus();
    }
  }

  function rememberedEmail() {
    try {
      return sessionStorage.getItem("stellar-gate.email") || "";
    } catch (e) {
      return "";
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
