/* Stellar Gate dashboard: webhooks, alerts and the account's data (docs/billing-api.md,
 * "Webhooks and alerts" and "Your data").
 *
 *   webhooks   POST/GET /auth/webhooks, DELETE /auth/webhooks/{id}, …/rotate-secret (the
 *              secret is shown once), GET …/{id}/deliveries, POST …/deliveries/{id}/resend
 *   alerts     GET/PUT /auth/alerts (any role reads; admins and the owner change)
 *   your data  GET /auth/export (NDJSON), DELETE /auth/account {"confirm": <e-mail>} (owner)
 *
 * Loaded before dashboard.js, which hands it a context at start-up (`S.integrations.attach`):
 *   ctx.call(method, path, opts)  api() with the tab's credentials
 *   ctx.key()                     the tab's API key, or null when signed in by cookie
 *   ctx.role()                    "owner" | "admin" | "member", or null when unknown (a key)
 *   ctx.accountEmail()            the account's address (what a deletion must be confirmed with)
 *   ctx.signOut(message, opts)    back to the sign-in screen
 *   ctx.status(message)           the dashboard's status line
 * What a role cannot do is hidden; the server decides, and its 403 is shown as it comes. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, fmt, say } = S;

  const $ = (id) => document.getElementById(id);
  const EVENT_LABELS = {
    "key.created": "Key created",
    "key.revoked": "Key revoked",
    "key.rotated": "Key rotated",
    "key.changed": "Key changed (scope or name)",
    "subscription.updated": "Subscription changed",
    "alert.memory_quota": "Alert: memory quota",
    "alert.rate_limited": "Alert: rate-limited",
    "alert.key_expiring": "Alert: key expiring",
    "alert.payment_failed": "Alert: payment failed",
  };
  const ALERT_LABELS = {
    memory_quota: "Memory quota",
    rate_limited: "Rate-limited",
    key_expiring: "Key expiring",
    payment_failed: "Payment failed",
  };

  let ctx = null;
  let built = false;
  // Bumped by clear(): answers to requests started before it are dropped.
  let generation = 0;
  let eventTypes = [];
  // The endpoint whose deliveries are shown.
  let watched = null;

  const role = () => (ctx ? ctx.role() : null);
  const canManage = () => !role() || role() === "admin" || role() === "owner";
  const isOwner = () => !role() || role() === "owner";
  const eventId = (e) => `webhook-event-${e === "*" ? "all" : e.replace(/[^a-z0-9]+/gi, "-")}`;
  const hidden = (res) => res.status === 401 || res.status === 403 || res.status === 404;

  /* ---------- the panels' skeletons ---------- */

  function build() {
    if (built) return;
    built = true;
    $("webhooks").replaceChildren(
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "webhooks-title", tabindex: "-1" }, "Webhooks"),
        h("span", { class: "sub" }, "Signed POSTs to your endpoints: Stellar-Signature t=…,v1=HMAC-SHA256(secret, \"t.body\")."),
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "keys", id: "webhooks-table" },
          h("caption", { class: "visually-hidden" }, "Your webhook endpoints"),
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              h("th", { scope: "col" }, "Endpoint"),
              h("th", { scope: "col" }, "Events"),
              h("th", { scope: "col" }, "Created"),
              h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
            ),
          ),
          h("tbody", { id: "webhooks-body" }),
        ),
      ),
      h(
        "form",
        { id: "webhook-form", novalidate: true },
        h(
          "div",
          { class: "field" },
          h("label", { for: "webhook-url" }, "Endpoint URL"),
          h("input", {
            type: "text",
            id: "webhook-url",
            inputmode: "url",
            autocomplete: "off",
            spellcheck: "false",
            maxlength: "2000",
            placeholder: "https://example.com/stellar-webhooks",
            "aria-describedby": "webhook-url-hint",
          }),
          h("span", { class: "hint", id: "webhook-url-hint" }, "https:// (plain http:// only on this machine: localhost, 127.0.0.1)."),
        ),
        h("fieldset", { class: "checks", id: "webhook-events" }, h("legend", null, "Events")),
        h("button", { id: "webhook-add", class: "btn btn-primary", type: "submit" }, "Add endpoint"),
      ),
      h(
        "div",
        { id: "webhook-secret", class: "key-reveal", hidden: true, tabindex: "-1", "aria-labelledby": "webhook-secret-title" },
        h("h3", { id: "webhook-secret-title" }, "Signing secret"),
        h("p", { class: "warning-line" }, "Shown once — copy it now. Your endpoint verifies every delivery with it."),
        h(
          "div",
          { class: "key-box" },
          h("code", { id: "webhook-secret-value" }),
          h("button", { id: "webhook-secret-copy", class: "btn btn-sm", type: "button" }, "Copy secret"),
        ),
        h("button", { id: "webhook-secret-done", class: "btn btn-sm", type: "button" }, "Done, I saved it"),
      ),
      h("p", { id: "webhooks-error", class: "msg msg-error", role: "alert" }),
      h("p", { id: "webhooks-status", class: "msg msg-ok", role: "status" }),
      h(
        "div",
        { id: "deliveries", hidden: true, tabindex: "-1", "aria-labelledby": "deliveries-title" },
        h(
          "div",
          { class: "panel-head" },
          h("h3", { id: "deliveries-title" }, "Deliveries"),
          h("button", { id: "deliveries-refresh", class: "btn btn-sm", type: "button" }, "Refresh deliveries"),
          h("button", { id: "deliveries-close", class: "btn btn-sm", type: "button" }, "Close"),
        ),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "keys", id: "deliveries-table" },
            h("caption", { class: "visually-hidden" }, "Deliveries to this endpoint, newest first"),
            h(
              "thead",
              null,
              h(
                "tr",
                null,
                ["Event", "Status", "Response", "Attempts", "Created", "Last attempt"].map((t) => h("th", { scope: "col" }, t)),
                h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
              ),
            ),
            h("tbody", { id: "deliveries-body" }),
          ),
        ),
      ),
    );

    $("alerts").replaceChildren(
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "alerts-title" }, "Alerts"),
        h("span", { class: "sub" }, "E-mailed to the owner and admins, and sent to your webhooks, once per crossing."),
      ),
      h("ul", { id: "alerts-raised", class: "alerts-raised", "aria-label": "Alerts raised now" }),
      h(
        "form",
        { id: "alerts-form", class: "alerts-form", novalidate: true },
        h(
          "div",
          { class: "field" },
          h("label", { for: "alert-memory" }, "Memory quota, % used"),
          h("input", { type: "text", id: "alert-memory", inputmode: "numeric", autocomplete: "off", "aria-describedby": "alert-memory-hint" }),
          h("span", { class: "hint", id: "alert-memory-hint" }, "Up to 5 thresholds, 1–100, e.g. 80, 100. Empty: off."),
        ),
        h(
          "div",
          { class: "field" },
          h("label", { for: "alert-rate" }, "Rate-limited for, minutes"),
          h("input", { type: "number", id: "alert-rate", min: "0", max: "60", step: "1", inputmode: "numeric", "aria-describedby": "alert-rate-hint" }),
          h("span", { class: "hint", id: "alert-rate-hint" }, "Requests refused by the rate limit in each of that many minutes. 0: off."),
        ),
        h(
          "div",
          { class: "field" },
          h("label", { for: "alert-expiring" }, "Key expiring within, days"),
          h("input", { type: "number", id: "alert-expiring", min: "0", max: "365", step: "1", inputmode: "numeric", "aria-describedby": "alert-expiring-hint" }),
          h("span", { class: "hint", id: "alert-expiring-hint" }, "0: off."),
        ),
        h(
          "div",
          { class: "check-field" },
          h("input", { type: "checkbox", id: "alert-payment" }),
          h("label", { for: "alert-payment" }, "A payment failed"),
        ),
        h("button", { id: "alerts-save", class: "btn btn-primary", type: "submit" }, "Save thresholds"),
      ),
      h("p", { id: "alerts-hint", class: "hint-line" }),
      h("p", { id: "alerts-error", class: "msg msg-error", role: "alert" }),
      h("p", { id: "alerts-status", class: "msg msg-ok", role: "status" }),
    );

    $("your-data").replaceChildren(
      h("div", { class: "panel-head" }, h("h2", { id: "your-data-title" }, "Your data")),
      h(
        "div",
        { id: "export-block" },
        h("h3", null, "Export"),
        h("p", null, "Every memory of every agent, one JSON object per line (NDJSON), streamed from the engine."),
        h("a", { id: "export-memories", class: "btn", href: "/auth/export", download: "stellar-memories.ndjson" }, "Download all memories"),
        h("p", { id: "export-status", class: "msg msg-ok", role: "status" }),
      ),
      h(
        "form",
        { id: "delete-account-form", class: "danger-zone", novalidate: true },
        h("h3", null, "Delete the account"),
        h(
          "p",
          null,
          "Cancels the subscription, revokes every key, deletes every memory and removes the account and its members. This can't be undone.",
        ),
        h(
          "div",
          { class: "field" },
          h("label", { for: "delete-confirm", id: "delete-confirm-label" }, "Type the account's e-mail address to confirm"),
          h("input", { type: "email", id: "delete-confirm", autocomplete: "off", spellcheck: "false", inputmode: "email" }),
        ),
        h("button", { id: "delete-account", class: "btn btn-danger solid", type: "submit", disabled: true }, "Delete account and all memories"),
      ),
      h("p", { id: "data-error", class: "msg msg-error", role: "alert" }),
    );

    $("webhook-form").addEventListener("submit", onAddWebhook);
    $("webhook-secret-done").addEventListener("click", () => {
      $("webhook-secret").hidden = true;
      $("webhook-secret-value").textContent = "";
      $("webhook-url").focus();
    });
    $("deliveries-refresh").addEventListener("click", () => watched && loadDeliveries(watched, generation));
    $("deliveries-close").addEventListener("click", () => {
      watched = null;
      $("deliveries").hidden = true;
    });
    $("alerts-form").addEventListener("submit", onSaveAlerts);
    $("export-memories").addEventListener("click", onExport);
    $("delete-confirm").addEventListener("input", syncDelete);
    $("delete-account-form").addEventListener("submit", onDeleteAccount);
  }

  /* ---------- webhooks ---------- */

  function renderEvents(types) {
    eventTypes = types;
    const box = $("webhook-events");
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    box.replaceChildren(
      h("legend", null, "Events"),
      ...["*", ...types].map((e) =>
        h(
          "span",
          { class: "check-field" },
          h("input", { type: "checkbox", id: eventId(e), value: e, checked: checked.has(e) }),
          h("label", { for: eventId(e) }, e === "*" ? "All events, also future ones (*)" : EVENT_LABELS[e] || e, e === "*" ? null : h("code", null, ` ${e}`)),
        ),
      ),
    );
  }

  function webhookRow(w) {
    const events = (w.events || []).map((e) => (e === "*" ? "all events" : e));
    return h(
      "tr",
      { "data-webhook-id": w.id },
      h("td", { "data-label": "Endpoint" }, h("code", { class: "url" }, w.url)),
      h("td", { "data-label": "Events" }, events.map((e) => h("span", { class: "tag" }, e))),
      h(
        "td",
        { "data-label": "Created" },
        fmt.dateTime(w.created_at),
        w.secret_rotated_at ? h("span", { class: "by" }, `secret rotated ${fmt.dateTime(w.secret_rotated_at)}`) : null,
      ),
      h(
        "td",
        { class: "actions" },
        h("button", { class: "btn btn-sm", type: "button", "aria-label": `Deliveries to ${w.url}`, onclick: () => showDeliveries(w) }, "Deliveries"),
        h("button", { class: "btn btn-sm", type: "button", "aria-label": `Rotate the secret of ${w.url}`, onclick: (e) => onRotateSecret(w, e.currentTarget) }, "Rotate secret"),
        h("button", { class: "btn btn-danger btn-sm", type: "button", "aria-label": `Delete the endpoint ${w.url}`, onclick: (e) => onDeleteWebhook(w, e.currentTarget) }, "Delete"),
      ),
    );
  }

  async function loadWebhooks(gen) {
    const panel = $("webhooks");
    if (!canManage()) {
      panel.hidden = true;
      return;
    }
    const res = await ctx.call("GET", "/auth/webhooks");
    if (gen !== generation) return;
    if (hidden(res)) {
      panel.hidden = true; // a member (by key), or a server without webhooks
      return;
    }
    panel.hidden = false;
    if (!res.ok || !res.data || !Array.isArray(res.data.webhooks)) {
      say($("webhooks-error"), S.errorText(res, "Loading the webhooks failed"));
      return;
    }
    renderEvents(Array.isArray(res.data.event_types) ? res.data.event_types : eventTypes);
    const list = res.data.webhooks;
    $("webhooks-body").replaceChildren(
      ...(list.length ? list.map(webhookRow) : [h("tr", null, h("td", { colspan: "4" }, "No endpoints yet."))]),
    );
    if (watched) {
      const still = list.find((w) => w.id === watched.id);
      if (still) loadDeliveries(still, gen);
      else {
        watched = null;
        $("deliveries").hidden = true;
      }
    }
  }

  function showSecret(secret, title) {
    $("webhook-secret-title").textContent = title;
    $("webhook-secret-value").textContent = secret;
    $("webhook-secret-copy").textContent = "Copy secret";
    $("webhook-secret-copy").onclick = (ev) => S.copyText(secret, ev.currentTarget, $("webhook-secret-value"));
    $("webhook-secret").hidden = false;
    $("webhook-secret").focus();
  }

  async function onAddWebhook(e) {
    e.preventDefault();
    const err = $("webhooks-error");
    const input = $("webhook-url");
    say(err, "");
    say($("webhooks-status"), "");
    input.removeAttribute("aria-invalid");
    const url = input.value.trim();
    let events = [...$("webhook-events").querySelectorAll("input:checked")].map((i) => i.value);
    if (events.includes("*")) events = ["*"];
    if (!/^https?:\/\/\S+$/i.test(url)) {
      input.setAttribute("aria-invalid", "true");
      say(err, "Enter the endpoint's URL, starting with https://.");
      input.focus();
      return;
    }
    if (!events.length) {
      say(err, "Choose at least one event.");
      $("webhook-events").querySelector("input").focus();
      return;
    }
    const btn = $("webhook-add");
    btn.disabled = true;
    const res = await ctx.call("POST", "/auth/webhooks", { body: { url, events } });
    btn.disabled = false;
    if (!res.ok || !res.data || typeof res.data.secret !== "string") {
      if (res.status === 422) input.setAttribute("aria-invalid", "true");
      say(err, S.errorText(res, "Adding the endpoint failed"));
      return;
    }
    input.value = "";
    for (const c of $("webhook-events").querySelectorAll("input")) c.checked = false;
    await loadWebhooks(generation);
    say($("webhooks-status"), `Endpoint ${res.data.url} added.`);
    showSecret(res.data.secret, `Signing secret of ${res.data.url}`);
  }

  async function onRotateSecret(w, opener) {
    const ok = await S.confirmDialog({
      title: "Rotate the signing secret?",
      text: `Every delivery to ${w.url} from now on, retries of older events included, is signed with a new secret, shown once. Deliveries signed with the old one stop verifying.`,
      confirmLabel: "Rotate secret",
      cancelLabel: "Keep it",
      opener,
    });
    if (!ok) return;
    say($("webhooks-error"), "");
    const res = await ctx.call("POST", `/auth/webhooks/${encodeURIComponent(w.id)}/rotate-secret`);
    if (!res.ok || !res.data || typeof res.data.secret !== "string") {
      say($("webhooks-error"), S.errorText(res, "Rotating the secret failed"));
      return;
    }
    await loadWebhooks(generation);
    say($("webhooks-status"), `The secret of ${w.url} was rotated.`);
    showSecret(res.data.secret, `New signing secret of ${w.url}`);
  }

  async function onDeleteWebhook(w, opener) {
    const ok = await S.confirmDialog({
      title: "Delete this endpoint?",
      text: `Nothing more is sent to ${w.url}; its deliveries, pending ones included, are deleted with it.`,
      confirmLabel: "Delete endpoint",
      cancelLabel: "Keep it",
      opener,
    });
    if (!ok) return;
    say($("webhooks-error"), "");
    const res = await ctx.call("DELETE", `/auth/webhooks/${encodeURIComponent(w.id)}`);
    if (!res.ok) {
      say($("webhooks-error"), S.errorText(res, "Deleting the endpoint failed"));
      return;
    }
    if (watched && watched.id === w.id) {
      watched = null;
      $("deliveries").hidden = true;
    }
    await loadWebhooks(generation);
    say($("webhooks-status"), `Endpoint ${w.url} deleted.`);
  }

  /* ---------- deliveries ---------- */

  function showDeliveries(w) {
    watched = w;
    $("deliveries-title").textContent = `Deliveries to ${w.url}`;
    $("deliveries").hidden = false;
    loadDeliveries(w, generation).then(() => $("deliveries").focus());
  }

  function statusTag(d) {
    const cls = d.status === "delivered" ? "tag ok" : d.status === "failed" ? "tag off" : "tag warn";
    return h("span", { class: cls, "data-status": d.status }, d.status);
  }

  function attemptsTitle(d) {
    return (d.attempt_log || [])
      .map((a) => `#${a.attempt} ${fmt.dateTime(a.at)}: ${a.status_code || a.error || "no answer"}${a.duration_ms !== undefined ? ` (${a.duration_ms} ms)` : ""}`)
      .join("\n");
  }

  function deliveryRow(d) {
    const response = d.last_status_code ? String(d.last_status_code) : d.last_error || "—";
    return h(
      "tr",
      { "data-delivery-id": d.id, "data-event-id": d.event_id },
      h("td", { "data-label": "Event" }, d.event_type, h("span", { class: "by" }, h("code", null, d.event_id))),
      h(
        "td",
        { "data-label": "Status" },
        statusTag(d),
        d.status === "pending" && d.next_attempt_at ? h("span", { class: "by" }, `next ${fmt.dateTime(d.next_attempt_at)}`) : null,
      ),
      h("td", { "data-label": "Response", class: "code" }, response),
      h("td", { "data-label": "Attempts", class: "attempts", title: attemptsTitle(d) }, fmt.int(Number(d.attempts) || 0)),
      h("td", { "data-label": "Created" }, fmt.dateTime(d.created_at)),
      h("td", { "data-label": "Last attempt" }, d.last_attempt_at ? fmt.dateTime(d.last_attempt_at) : "—"),
      h(
        "td",
        { class: "actions" },
        h(
          "button",
          { class: "btn btn-sm", type: "button", "aria-label": `Resend ${d.event_type} ${d.event_id} (delivery ${d.id})`, onclick: (e) => onResend(d, e.currentTarget) },
          "Resend",
        ),
      ),
    );
  }

  async function loadDeliveries(w, gen) {
    const res = await ctx.call("GET", `/auth/webhooks/${encodeURIComponent(w.id)}/deliveries?limit=50`);
    if (gen !== generation || !watched || watched.id !== w.id) return;
    if (!res.ok || !res.data || !Array.isArray(res.data.deliveries)) {
      say($("webhooks-error"), S.errorText(res, "Loading the deliveries failed"));
      return;
    }
    const list = res.data.deliveries;
    $("deliveries-body").replaceChildren(
      ...(list.length ? list.map(deliveryRow) : [h("tr", null, h("td", { colspan: "7" }, "Nothing sent to this endpoint yet."))]),
    );
  }

  async function onResend(d, btn) {
    say($("webhooks-error"), "");
    btn.disabled = true;
    const res = await ctx.call("POST", `/auth/webhooks/deliveries/${encodeURIComponent(d.id)}/resend`);
    btn.disabled = false;
    if (!res.ok) {
      say($("webhooks-error"), S.errorText(res, "Re-sending failed"));
      return;
    }
    say($("webhooks-status"), `${d.event_type} ${d.event_id} is being sent again.`);
    if (watched) await loadDeliveries(watched, generation);
  }

  /* ---------- alerts ---------- */

  function alertName(a) {
    const [kind, arg] = String(a).split(":");
    const label = ALERT_LABELS[kind] || kind;
    if (kind === "memory_quota" && arg) return `${label} at ${arg}%`;
    if (kind === "key_expiring" && arg) return `${label} (${arg.slice(0, 8)}…)`;
    return label;
  }

  function renderAlerts(d) {
    $("alert-memory").value = (d.memory_percent || []).join(", ");
    $("alert-rate").value = String(d.rate_limited_minutes ?? 0);
    $("alert-expiring").value = String(d.key_expiring_days ?? 0);
    $("alert-payment").checked = !!d.payment_failed;
    const raised = Array.isArray(d.raised) ? d.raised : [];
    $("alerts-raised").replaceChildren(
      ...raised.map((r) =>
        h("li", { "data-alert": r.alert }, h("span", { class: "tag warn" }, "raised"), ` ${alertName(r.alert)} since ${fmt.dateTime(r.raised_at)}`),
      ),
    );
    const editable = canManage();
    for (const el of $("alerts-form").querySelectorAll("input, button")) el.disabled = !editable;
    $("alerts-hint").textContent = editable ? "" : "Only the owner and admins change the thresholds.";
  }

  async function loadAlerts(gen) {
    const res = await ctx.call("GET", "/auth/alerts");
    if (gen !== generation) return;
    const panel = $("alerts");
    if (res.status === 404 || res.status === 401) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    if (!res.ok || !res.data) {
      say($("alerts-error"), S.errorText(res, "Loading the alerts failed"));
      return;
    }
    renderAlerts(res.data);
  }

  async function onSaveAlerts(e) {
    e.preventDefault();
    const err = $("alerts-error");
    say(err, "");
    say($("alerts-status"), "");
    const raw = $("alert-memory").value.trim();
    const parts = raw ? raw.split(/[\s,;%]+/).filter(Boolean) : [];
    if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1 || Number(p) > 100) || parts.length > 5) {
      say(err, "Memory thresholds are up to 5 whole numbers from 1 to 100, e.g. 80, 100.");
      $("alert-memory").focus();
      return;
    }
    const whole = (id, max, what) => {
      const v = $(id).value.trim() || "0";
      return /^\d+$/.test(v) && Number(v) <= max ? Number(v) : { error: `${what} is a whole number from 0 to ${max}.`, el: $(id) };
    };
    const rate = whole("alert-rate", 60, "Rate-limited minutes");
    const days = whole("alert-expiring", 365, "Key expiring days");
    for (const x of [rate, days]) {
      if (typeof x === "object") {
        say(err, x.error);
        x.el.focus();
        return;
      }
    }
    const body = {
      memory_percent: [...new Set(parts.map(Number))].sort((a, b) => a - b),
      rate_limited_minutes: rate,
      key_expiring_days: days,
      payment_failed: $("alert-payment").checked,
    };
    const btn = $("alerts-save");
    btn.disabled = true;
    const res = await ctx.call("PUT", "/auth/alerts", { body });
    btn.disabled = false;
    if (!res.ok || !res.data) {
      say(err, S.errorText(res, "Saving the thresholds failed"));
      return;
    }
    renderAlerts(res.data);
    say($("alerts-status"), "Thresholds saved.");
  }

  /* ---------- your data ---------- */

  function renderData() {
    const exportable = canManage();
    const deletable = isOwner();
    $("export-block").hidden = !exportable;
    $("delete-account-form").hidden = !deletable;
    $("your-data").hidden = !exportable && !deletable;
    const email = ctx.accountEmail() || "";
    $("delete-confirm").placeholder = email;
    $("delete-confirm-label").textContent = email
      ? `Type ${email} to confirm`
      : "Type the account's e-mail address to confirm";
    syncDelete();
  }

  function syncDelete() {
    const want = (ctx.accountEmail() || "").trim().toLowerCase();
    const typed = $("delete-confirm").value.trim().toLowerCase();
    $("delete-account").disabled = !want || typed !== want;
  }

  /** Signed in with a key, a link cannot carry the key's header: fetch the file and hand it to
   *  the browser. Signed in by cookie, the link streams it straight to disk. */
  async function onExport(e) {
    const key = ctx.key();
    say($("data-error"), "");
    say($("export-status"), "");
    if (!key) {
      say($("export-status"), "The download has started.");
      return;
    }
    e.preventDefault();
    const a = e.currentTarget;
    a.setAttribute("aria-disabled", "true");
    let res;
    try {
      res = await fetch("/auth/export", { headers: { "X-API-Key": key, Accept: "application/x-ndjson" }, cache: "no-store" });
    } catch (x) {
      a.removeAttribute("aria-disabled");
      say($("data-error"), "Couldn't reach the server. Check your connection and try again.");
      return;
    }
    if (!res.ok) {
      a.removeAttribute("aria-disabled");
      const body = await res.json().catch(() => null);
      say($("data-error"), (body && body.detail) || `The export failed (error ${res.status}).`);
      return;
    }
    const text = await res.text();
    a.removeAttribute("aria-disabled");
    const lines = text.split("\n").filter((l) => l.trim());
    let last = null;
    try {
      last = lines.length ? JSON.parse(lines[lines.length - 1]) : null;
    } catch (x) {
      last = null;
    }
    const incomplete = last && last.error && !last.id;
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
    S.saveBlob(new Blob([text], { type: "application/x-ndjson" }), name ? name[1] : "stellar-memories.ndjson");
    if (incomplete) say($("data-error"), `${last.error} The file ends with this error line.`);
    else say($("export-status"), `Exported ${fmt.plural(lines.length, "memory", "memories")}.`);
  }

  async function onDeleteAccount(e) {
    e.preventDefault();
    const email = ctx.accountEmail() || "";
    const typed = $("delete-confirm").value.trim();
    if (!email || typed.toLowerCase() !== email.trim().toLowerCase()) return;
    say($("data-error"), "");
    const btn = $("delete-account");
    btn.disabled = true;
    btn.textContent = "Deleting…";
    const res = await ctx.call("DELETE", "/auth/account", { body: { confirm: typed }, timeoutMs: 120000 });
    btn.textContent = "Delete account and all memories";
    if (!res.ok || !res.data || !res.data.deleted) {
      syncDelete();
      say($("data-error"), S.errorText(res, "Deleting the account failed"));
      return;
    }
    const n = Number(res.data.memories_deleted) || 0;
    await ctx.signOut("", { local: true });
    say($("banner"), `The account ${email} was deleted, with ${fmt.plural(n, "memory", "memories")}.`);
  }

  /* ---------- the module ---------- */

  function load() {
    if (!ctx) return Promise.resolve();
    build();
    const gen = generation;
    renderData();
    return Promise.all([loadWebhooks(gen), loadAlerts(gen)]);
  }

  function clear() {
    generation += 1;
    watched = null;
    if (!built) return;
    for (const id of ["webhooks", "alerts", "your-data", "deliveries", "webhook-secret"]) $(id).hidden = true;
    for (const id of ["webhooks-body", "deliveries-body", "alerts-raised"]) $(id).replaceChildren();
    for (const id of ["webhooks-error", "webhooks-status", "alerts-error", "alerts-status", "data-error", "export-status"]) say($(id), "");
    $("webhook-secret-value").textContent = "";
    $("delete-confirm").value = "";
  }

  function attach(c) {
    ctx = c;
  }

  S.integrations = { attach, load, clear };
})();
