/* Stellar Gate dashboard: scoped keys (docs/billing-api.md, "Scoped keys").
 *
 * What a key may do, shown and chosen: read-only, bound to one agent, an expiry, its own
 * requests per minute. Used by dashboard.js for the create form, the key list, the "Edit" dialog
 * (PATCH /auth/api-keys/{id}) and the overlap of a rotation. The server checks everything again;
 * its 422/403 is shown as it comes. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, fmt, say } = S;

  const DAY = 86400;
  const MAX_DAYS = 3650;
  const MAX_OVERLAP_SECS = 30 * DAY;
  const AGENT_RE = /^[A-Za-z0-9._:-]{1,64}$/;
  const UNITS = { seconds: 1, minutes: 60, hours: 3600 };

  const isExpired = (k, now) => !!k.expires_at && new Date(k.expires_at).getTime() <= (now || Date.now());
  const isRestricted = (k) => !!(k.read_only || k.agent || k.expires_at || k.requests_per_minute);

  /** The scope of key `k` as tags for the key list ("Full access" when unrestricted). */
  function tags(k, now) {
    if (!isRestricted(k)) return [h("span", { class: "scope-none" }, "Full access")];
    const out = [];
    if (k.read_only) out.push(h("span", { class: "tag scope-tag", "data-scope": "read_only" }, "read-only"));
    if (k.agent) out.push(h("span", { class: "tag scope-tag", "data-scope": "agent", title: "Bound to this agent" }, `agent ${k.agent}`));
    if (k.expires_at) {
      out.push(
        isExpired(k, now)
          ? h("span", { class: "tag off scope-tag", "data-scope": "expired", title: `Expired ${fmt.dateTime(k.expires_at)}` }, "expired")
          : h("span", { class: "tag scope-tag", "data-scope": "expires", title: fmt.dateTime(k.expires_at) }, `expires ${fmt.dateTime(k.expires_at)}`),
      );
    }
    if (k.requests_per_minute) {
      out.push(h("span", { class: "tag scope-tag", "data-scope": "rate", title: "Its own requests per minute" }, `${fmt.int(k.requests_per_minute)}/min`));
    }
    return out;
  }

  /** "YYYY-MM-DD" of a Date in local time (for <input type=date>). */
  function dayValue(d) {
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  }

  /** The scope fields, every id starting with `prefix`. For an existing key (`opts.key`) the
   *  expiry may be kept, and read() sends every field (an empty one clears it). */
  function fields(prefix, opts) {
    opts = opts || {};
    const id = (x) => `${prefix}-${x}`;
    const key = opts.key || null;
    const readOnly = h("input", { type: "checkbox", id: id("read-only") });
    const agent = h("input", {
      type: "text",
      id: id("agent"),
      maxlength: "64",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "any agent",
      "aria-describedby": id("agent-hint"),
    });
    const expiry = h(
      "select",
      { id: id("expiry") },
      key && key.expires_at ? h("option", { value: "keep" }, `Keep: ${isExpired(key) ? "expired" : "expires"} ${fmt.dateTime(key.expires_at)}`) : null,
      h("option", { value: "never" }, "Never"),
      h("option", { value: "days" }, "In a number of days"),
      h("option", { value: "date" }, "At the end of a date"),
    );
    const days = h("input", { type: "number", id: id("expiry-days"), min: "1", max: String(MAX_DAYS), step: "1", value: "30", inputmode: "numeric" });
    const date = h("input", { type: "date", id: id("expiry-date") });
    const rpm = h("input", { type: "number", id: id("rpm"), min: "1", step: "1", inputmode: "numeric", placeholder: "the plan's", "aria-describedby": id("rpm-hint") });
    const daysField = h("div", { class: "field field-narrow" }, h("label", { for: id("expiry-days") }, "Days"), days);
    const dateField = h("div", { class: "field field-narrow" }, h("label", { for: id("expiry-date") }, "Last day"), date);
    const rpmHint = h("span", { class: "hint", id: id("rpm-hint") }, "Empty: the plan's limit.");

    function sync() {
      daysField.hidden = expiry.value !== "days";
      dateField.hidden = expiry.value !== "date";
      date.min = dayValue(new Date());
    }
    function setMax(n) {
      if (n > 0) {
        rpm.max = String(n);
        rpmHint.textContent = `Empty: the plan's ${fmt.int(n)} per minute.`;
      }
    }
    function fill(k) {
      readOnly.checked = !!(k && k.read_only);
      agent.value = (k && k.agent) || "";
      rpm.value = k && k.requests_per_minute ? String(k.requests_per_minute) : "";
      expiry.value = k && k.expires_at ? "keep" : "never";
      days.value = "30";
      date.value = "";
      sync();
    }
    expiry.addEventListener("change", sync);
    setMax(opts.maxRpm);

    const node = h(
      "div",
      { class: "scope-fields" },
      h(
        "div",
        { class: "check-field" },
        readOnly,
        h("label", { for: id("read-only") }, "Read-only", h("span", { class: "hint" }, " — recall, memories, timeline, narrate, stats, events; no store or delete")),
      ),
      h(
        "div",
        { class: "scope-row" },
        h(
          "div",
          { class: "field" },
          h("label", { for: id("agent") }, "Bound to agent"),
          agent,
          h("span", { class: "hint", id: id("agent-hint") }, "Empty: any agent. Letters, digits, . _ : -"),
        ),
        h("div", { class: "field" }, h("label", { for: id("expiry") }, "Expires"), expiry),
        daysField,
        dateField,
        h("div", { class: "field field-narrow" }, h("label", { for: id("rpm") }, "Requests per minute"), rpm, rpmHint),
      ),
    );
    fill(key);

    /** The request's scope fields, or {error, el} for the first bad one. */
    function read() {
      const body = {};
      const a = agent.value.trim();
      const r = rpm.value.trim();
      if (a && !AGENT_RE.test(a)) return { error: "The agent is 1–64 letters, digits or . _ : -", el: agent };
      if (r && !(/^\d+$/.test(r) && Number(r) >= 1 && (!rpm.max || Number(r) <= Number(rpm.max)))) {
        return { error: `Requests per minute is a whole number from 1${rpm.max ? ` to ${fmt.int(Number(rpm.max))} (the plan's)` : ""}.`, el: rpm };
      }
      if (key) {
        body.read_only = readOnly.checked;
        body.agent = a || null;
        body.requests_per_minute = r ? Number(r) : null;
      } else {
        if (readOnly.checked) body.read_only = true;
        if (a) body.agent = a;
        if (r) body.requests_per_minute = Number(r);
      }
      if (expiry.value === "never" && key) body.expires_at = null;
      if (expiry.value === "days") {
        const n = days.value.trim();
        if (!/^\d+$/.test(n) || Number(n) < 1 || Number(n) > MAX_DAYS) return { error: `The number of days is 1 to ${MAX_DAYS}.`, el: days };
        body.expires_in_secs = Number(n) * DAY;
      }
      if (expiry.value === "date") {
        // The key works through the chosen day (local time) and stops at the next midnight.
        const d = date.value ? new Date(`${date.value}T00:00`) : null;
        if (!d || isNaN(d.getTime())) return { error: "Choose the key's last day.", el: date };
        d.setDate(d.getDate() + 1);
        if (d.getTime() <= Date.now()) return { error: "The last day must be today or later.", el: date };
        body.expires_at = d.toISOString();
      }
      return { body };
    }

    return { node, read, fill, setMax };
  }

  /* ---------- edit dialog: PATCH /auth/api-keys/{id} ---------- */

  let dialog = null;
  function editDialog() {
    if (dialog) return dialog;
    const name = h("input", { type: "text", id: "edit-key-name", maxlength: "100", autocomplete: "off" });
    const err = h("p", { id: "edit-key-error", class: "msg msg-error", role: "alert" });
    const mount = h("div", { id: "edit-key-fields" });
    const save = h("button", { id: "edit-key-save", class: "btn btn-primary", type: "submit" }, "Save changes");
    const form = h(
      "form",
      { id: "edit-key-form", novalidate: true },
      h("div", { class: "field" }, h("label", { for: "edit-key-name" }, "Name"), name),
      mount,
      err,
      h(
        "div",
        { class: "modal-actions" },
        h("button", { id: "edit-key-cancel", class: "btn", type: "button", "data-close": "cancel" }, "Cancel"),
        save,
      ),
    );
    const el = h(
      "dialog",
      { id: "edit-key-dialog", class: "modal", "aria-labelledby": "edit-key-title" },
      h("div", { class: "modal-head" }, h("h2", { id: "edit-key-title" }, "Edit key")),
      h(
        "div",
        { class: "modal-body" },
        h("p", { class: "modal-desc", id: "edit-key-desc" }, "Changes reach every gateway within a second."),
        form,
      ),
    );
    document.body.append(el);
    S.setupModal(el);
    dialog = { el, name, err, mount, save, form };
    return dialog;
  }

  /** Open the edit dialog for key `k`. opts: {call, maxRpm, opener, saved(key)}. */
  function edit(k, opts) {
    const d = editDialog();
    const label = k.name || "Default";
    d.el.querySelector("#edit-key-title").textContent = `Edit “${label}”`;
    d.el.querySelector("#edit-key-desc").textContent = `Key ${k.key_prefix}…: changes reach every gateway within a second.`;
    d.name.value = k.name || "";
    say(d.err, "");
    const f = fields("edit-key", { key: k, maxRpm: opts.maxRpm });
    d.mount.replaceChildren(f.node);
    d.form.onsubmit = async (e) => {
      e.preventDefault();
      say(d.err, "");
      const r = f.read();
      if (r.error) {
        say(d.err, r.error);
        r.el.focus();
        return;
      }
      const body = r.body;
      const n = d.name.value.trim();
      if (n && n !== (k.name || "")) body.name = n;
      d.save.disabled = true;
      const res = await opts.call("PATCH", `/auth/api-keys/${encodeURIComponent(k.id)}`, { body });
      d.save.disabled = false;
      if (!res.ok) {
        say(d.err, S.errorText(res, "Saving the key failed"));
        return;
      }
      S.closeModal(d.el, "ok");
      if (opts.saved) opts.saved(res.data || k);
    };
    S.openModal(d.el, { opener: opts.opener, initialFocus: d.name });
  }

  /* ---------- rotation overlap ---------- */

  /** The "old key keeps working for" field of the rotate confirmation. */
  function overlapField() {
    const amount = h("input", { type: "number", id: "rotate-overlap", min: "0", step: "1", value: "0", inputmode: "numeric" });
    const unit = h(
      "select",
      { id: "rotate-overlap-unit" },
      Object.keys(UNITS).map((u) => h("option", { value: u, selected: u === "minutes" }, u)),
    );
    const node = h(
      "div",
      { class: "overlap" },
      h(
        "div",
        { class: "inline-form" },
        h("div", { class: "field field-narrow" }, h("label", { for: "rotate-overlap" }, "Old key keeps working for"), amount),
        h("div", { class: "field field-narrow" }, h("label", { for: "rotate-overlap-unit" }, "Unit"), unit),
      ),
      h("p", { class: "hint-line" }, "0: it stops at once. At most 30 days, and never past its own expiry."),
    );
    /** Seconds, or null when the field is not a valid overlap. */
    function secs() {
      const v = amount.value.trim() || "0";
      if (!/^\d+$/.test(v)) return null;
      const n = Number(v) * UNITS[unit.value];
      return n <= MAX_OVERLAP_SECS ? n : null;
    }
    return { node, secs };
  }

  /** "5 minutes" for an overlap in seconds. */
  function duration(secs) {
    if (secs % 3600 === 0) return fmt.plural(secs / 3600, "hour", "hours");
    if (secs % 60 === 0) return fmt.plural(secs / 60, "minute", "minutes");
    return fmt.plural(secs, "second", "seconds");
  }

  S.keyScope = { tags, fields, edit, overlapField, duration, isExpired, isRestricted };
})();
