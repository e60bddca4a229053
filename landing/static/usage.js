/* Stellar Gate dashboard: the usage history (docs/billing-api.md, "Usage history").
 *
 * GET /auth/usage/history?from=&to=&granularity=[&group_by=][&format=csv]: a range picker, a
 * chart of requests over time stacked by status class, a breakdown by key, agent or route family,
 * and the same range as CSV. Loaded before dashboard.js, which hands it a context at start-up
 * (`S.usage.attach(ctx)`):
 *   ctx.call(method, path, opts)  api() with the tab's credentials
 *   ctx.key()                     the tab's API key, or null when signed in by cookie
 * and calls `S.usage.load(keys)` (the account's keys, for their names) on every refresh. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, s, fmt, say } = S;

  const $ = (id) => document.getElementById(id);
  const HOUR = 3600;
  const DAY = 24 * HOUR;
  const PRESETS = {
    "1h": { label: "Last hour, by minute", granularity: "minute", span: HOUR, short: "the last hour" },
    "24h": { label: "Last 24 hours, by hour", granularity: "hour", span: DAY, short: "the last 24 hours" },
    "7d": { label: "Last 7 days, by hour", granularity: "hour", span: 7 * DAY, short: "the last 7 days" },
    "30d": { label: "Last 30 days, by hour", granularity: "hour", span: 30 * DAY, short: "the last 30 days" },
    "90d": { label: "Last 90 days, by hour", granularity: "hour", span: 90 * DAY, short: "the last 90 days" },
  };
  const CLASSES = ["2xx", "3xx", "4xx", "429", "5xx"];
  const CLASS_LABELS = { "2xx": "2xx success", "3xx": "3xx", "4xx": "4xx refused", 429: "429 rate-limited", "5xx": "5xx error" };
  const GROUPS = { key: "Key", agent: "Agent", route: "Route" };
  const ROUTES = { store: "Store", recall: "Recall", read: "Other reads", other: "Other" };
  const MAX_BARS = 180;

  const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const dayTimeFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  let ctx = null;
  let built = false;
  let keys = [];
  // Bumped by clear() and by every load: answers to older requests are dropped.
  let generation = 0;
  // The range of the chart on screen (the CSV link asks for the same one).
  let shown = null;

  /* ---------- the panel ---------- */

  function build() {
    if (built) return;
    built = true;
    const rangeSel = h(
      "select",
      { id: "usage-range" },
      Object.entries(PRESETS).map(([v, p]) => h("option", { value: v }, p.label)),
      h("option", { value: "custom" }, "Custom range…"),
    );
    const gran = h(
      "select",
      { id: "usage-granularity" },
      h("option", { value: "hour" }, "By hour"),
      h("option", { value: "minute" }, "By minute (last 48 hours)"),
    );
    const breakdown = h(
      "fieldset",
      { class: "segmented", id: "usage-group" },
      h("legend", null, "Breakdown by"),
      Object.entries(GROUPS).flatMap(([v, label]) => [
        h("input", { type: "radio", name: "usage-group", id: `usage-by-${v}`, value: v, checked: v === "key" }),
        h("label", { for: `usage-by-${v}` }, label),
      ]),
    );
    $("usage").replaceChildren(
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "usage-title", tabindex: "-1" }, "Usage history"),
        h("span", { class: "sub", id: "usage-total", "aria-live": "polite" }),
      ),
      h(
        "form",
        { id: "usage-form", class: "inline-form usage-controls", novalidate: true },
        h("div", { class: "field field-narrow usage-range" }, h("label", { for: "usage-range" }, "Range"), rangeSel),
        h(
          "div",
          { id: "usage-custom", class: "usage-custom", hidden: true },
          h("div", { class: "field field-narrow" }, h("label", { for: "usage-from" }, "From"), h("input", { type: "datetime-local", id: "usage-from" })),
          h("div", { class: "field field-narrow" }, h("label", { for: "usage-to" }, "To"), h("input", { type: "datetime-local", id: "usage-to" })),
          h("div", { class: "field field-narrow" }, h("label", { for: "usage-granularity" }, "Buckets"), gran),
          h("button", { id: "usage-apply", class: "btn btn-sm", type: "submit" }, "Show"),
        ),
        h("a", { id: "usage-csv", class: "btn btn-sm", href: "/auth/usage/history?format=csv", download: "stellar-usage.csv" }, "Download CSV"),
      ),
      h("p", { id: "usage-error", class: "msg msg-error", role: "alert" }),
      h("div", { id: "usage-chart", class: "chart usage-chart" }),
      h("ul", { id: "usage-legend", class: "usage-legend", "aria-label": "Requests by status class" }),
      h("p", { id: "usage-empty", class: "usage-empty", hidden: true }, "No requests in this range."),
      breakdown,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "keys", id: "usage-table" },
          h("caption", { class: "visually-hidden", id: "usage-caption" }, "Requests by key"),
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              h("th", { scope: "col", id: "usage-group-col" }, "Key"),
              h("th", { scope: "col" }, "Requests"),
              CLASSES.map((c) => h("th", { scope: "col" }, c)),
            ),
          ),
          h("tbody", { id: "usage-body" }),
        ),
      ),
    );
    rangeSel.addEventListener("change", () => {
      const custom = rangeSel.value === "custom";
      $("usage-custom").hidden = !custom;
      if (custom) {
        fillCustom();
        $("usage-from").focus();
      } else {
        reload();
      }
    });
    $("usage-form").addEventListener("submit", (e) => {
      e.preventDefault();
      reload();
    });
    breakdown.addEventListener("change", () => reload({ tableOnly: true }));
    $("usage-csv").addEventListener("click", onCsv);
  }

  /** `<input type=datetime-local>` value of a Unix time, in local time. */
  function localValue(t) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  /** The custom range starts as the range on screen. */
  function fillCustom() {
    const now = Math.floor(Date.now() / 1000);
    const r = shown || { from: now - DAY, to: now, granularity: "hour" };
    $("usage-from").value = localValue(r.from);
    $("usage-to").value = localValue(Math.min(r.to, now));
    $("usage-granularity").value = r.granularity;
  }

  /** The range the controls ask for: {from, to, granularity, label}, or {error, el}. */
  function wanted() {
    const v = $("usage-range").value;
    if (v !== "custom") {
      const p = PRESETS[v] || PRESETS["1h"];
      const step = p.granularity === "minute" ? 60 : HOUR;
      const now = Math.floor(Date.now() / 1000);
      const to = now - (now % step) + step;
      return { from: to - p.span, to, granularity: p.granularity, label: p.short };
    }
    const from = Date.parse($("usage-from").value);
    const to = Date.parse($("usage-to").value);
    if (isNaN(from)) return { error: "Choose where the range starts.", el: $("usage-from") };
    if (isNaN(to)) return { error: "Choose where the range ends.", el: $("usage-to") };
    if (to <= from) return { error: "The range must end after it starts.", el: $("usage-to") };
    return {
      from: Math.floor(from / 1000),
      to: Math.floor(to / 1000),
      granularity: $("usage-granularity").value,
      label: "this range",
    };
  }

  const group = () => (document.querySelector('input[name="usage-group"]:checked') || {}).value || "key";

  function query(r, extra) {
    const q = new URLSearchParams({ from: String(r.from), to: String(r.to), granularity: r.granularity });
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return `/auth/usage/history?${q}`;
  }

  /* ---------- loading ---------- */

  async function reload(opts) {
    if (!ctx || !built) return;
    const err = $("usage-error");
    const r = wanted();
    if (r.error) {
      say(err, r.error);
      r.el.focus();
      return;
    }
    say(err, "");
    const gen = ++generation;
    const tableOnly = opts && opts.tableOnly && shown;
    const range = tableOnly ? shown : r;
    const g = group();
    $("usage").setAttribute("aria-busy", "true");
    const [all, grouped] = await Promise.all([
      tableOnly ? Promise.resolve(null) : ctx.call("GET", query(range)),
      ctx.call("GET", query(range, { group_by: g })),
    ]);
    if (gen !== generation) return;
    $("usage").removeAttribute("aria-busy");
    for (const res of [all, grouped]) {
      if (res && (!res.ok || !res.data || !Array.isArray(res.data.rows))) {
        // 422 names the parameter (a range too far back, too many buckets, …).
        say(err, S.errorText(res, "Loading the usage history failed"));
        return;
      }
    }
    if (all) {
      shown = {
        from: Number(all.data.from),
        to: Number(all.data.to),
        granularity: all.data.granularity || range.granularity,
        label: range.label,
      };
      renderChart(all.data);
    }
    renderTable(g, grouped.data);
    const csv = $("usage-csv");
    csv.href = query(shown, { group_by: g, format: "csv" });
    csv.setAttribute("download", `stellar-usage-${stamp(shown.from)}-${stamp(shown.to)}.csv`);
  }

  const stamp = (t) => new Date(t * 1000).toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-");

  /** Download the CSV of the range on screen. Signed in with a key, a link cannot carry the
   *  key's header: fetch it and hand the browser the file. */
  async function onCsv(e) {
    e.preventDefault();
    const a = e.currentTarget;
    const err = $("usage-error");
    say(err, "");
    const headers = { Accept: "text/csv" };
    const key = ctx.key();
    if (key) headers["X-API-Key"] = key;
    let res;
    try {
      res = await fetch(a.getAttribute("href"), { headers, credentials: "same-origin", cache: "no-store" });
    } catch (x) {
      say(err, "Couldn't reach the server. Check your connection and try again.");
      return;
    }
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      say(err, (body && body.detail) || `Downloading the CSV failed (error ${res.status}).`);
      return;
    }
    S.saveBlob(await res.blob(), a.getAttribute("download") || "stellar-usage.csv");
  }

  /* ---------- chart: stacked by status class, inline SVG ---------- */

  function renderChart(d) {
    const step = d.granularity === "minute" ? 60 : HOUR;
    const from = Number(d.from);
    const to = Number(d.to);
    const n = Math.max(1, Math.round((to - from) / step));
    // Long ranges are drawn in wider bars (the CSV keeps every bucket).
    const per = Math.ceil(n / MAX_BARS);
    const bars = Math.ceil(n / per);
    const counts = Array.from({ length: bars }, () => Object.fromEntries(CLASSES.map((c) => [c, 0])));
    const totals = Object.fromEntries(CLASSES.map((c) => [c, 0]));
    let total = 0;
    for (const r of d.rows) {
      const i = Math.floor((Number(r.start) - from) / step / per);
      const v = Number(r.requests) || 0;
      const c = CLASSES.includes(r.status_class) ? r.status_class : "5xx";
      if (i < 0 || i >= bars) continue;
      counts[i][c] += v;
      totals[c] += v;
      total += v;
    }
    const sums = counts.map((c) => CLASSES.reduce((a, k) => a + c[k], 0));
    const max = Math.max(1, ...sums);
    const span = to - from;
    const label = (t) => (span <= DAY ? timeFmt.format(new Date(t * 1000)) : span <= 3 * DAY ? dayTimeFmt.format(new Date(t * 1000)) : dayFmt.format(new Date(t * 1000)));
    const when = (t) => (span <= DAY ? timeFmt.format(new Date(t * 1000)) : dayTimeFmt.format(new Date(t * 1000)));

    const W = 720;
    const H = 200;
    const padL = 40;
    const padR = 8;
    const padT = 10;
    const padB = 24;
    const plotH = H - padT - padB;
    const slot = (W - padL - padR) / bars;
    const bw = Math.max(1, slot * (bars > 90 ? 0.9 : 0.72));
    const busiest = total > 0 ? sums.indexOf(max) : -1;
    const rangeText = `${dayTimeFmt.format(new Date(from * 1000))} – ${dayTimeFmt.format(new Date(to * 1000))}`;
    const summary =
      total === 0
        ? `No requests from ${rangeText}.`
        : `${fmt.plural(total, "request", "requests")} from ${rangeText}` +
          `${CLASSES.filter((c) => totals[c]).map((c) => `, ${fmt.int(totals[c])} ${c}`).join("")}; ` +
          `busiest ${when(from + busiest * per * step)} with ${fmt.int(max)}.`;
    const svg = s("svg", {
      id: "usage-svg",
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": summary,
      preserveAspectRatio: "xMidYMid meet",
      "data-total": String(total),
      "data-from": String(from),
      "data-to": String(to),
      "data-granularity": d.granularity,
    });
    svg.append(
      s("title", null, summary),
      s("line", { class: "axis", x1: padL, y1: padT + plotH, x2: W - padR, y2: padT + plotH }),
      s("line", { class: "axis", x1: padL, y1: padT, x2: W - padR, y2: padT, "stroke-dasharray": "3 4", opacity: "0.6" }),
      s("text", { x: padL - 6, y: padT + 4, "text-anchor": "end" }, fmt.int(max)),
      s("text", { x: padL - 6, y: padT + plotH + 4, "text-anchor": "end" }, "0"),
    );
    counts.forEach((c, i) => {
      const v = sums[i];
      const start = from + i * per * step;
      const end = Math.min(to, start + per * step);
      const x = padL + i * slot + (slot - bw) / 2;
      const dataset = { start: String(start), requests: String(v) };
      for (const k of CLASSES) dataset[`c${k}`] = String(c[k]);
      const g = s("g", { class: "bar" }, s("title", null, barTitle(when(start), when(end), v, c)));
      Object.assign(g.dataset, dataset);
      let y = padT + plotH;
      for (const k of CLASSES) {
        if (!c[k]) continue;
        const bh = Math.max(1.5, (c[k] / max) * plotH);
        y -= bh;
        g.append(s("rect", { class: `seg seg-${k}`, x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: bh.toFixed(1) }));
      }
      svg.append(g);
    });
    const ticks = Math.min(6, bars);
    for (let t = 0; t < ticks; t++) {
      const i = Math.round((t * (bars - 1)) / Math.max(1, ticks - 1));
      // The first and last labels stay inside the picture.
      const anchor = t === 0 && ticks > 1 ? "start" : t === ticks - 1 && ticks > 1 ? "end" : "middle";
      const x = anchor === "start" ? padL + i * slot : anchor === "end" ? padL + (i + 1) * slot : padL + i * slot + slot / 2;
      svg.append(s("text", { x: x.toFixed(1), y: H - 6, "text-anchor": anchor }, label(from + i * per * step)));
    }
    $("usage-chart").replaceChildren(svg);
    $("usage-legend").replaceChildren(
      ...CLASSES.filter((c) => totals[c] || c === "2xx").map((c) =>
        h(
          "li",
          { "data-class": c },
          h("span", { class: `swatch seg-${c}`, "aria-hidden": "true" }),
          `${CLASS_LABELS[c]} `,
          h("strong", null, fmt.int(totals[c])),
        ),
      ),
    );
    $("usage-empty").hidden = total > 0;
    $("usage-total").textContent = `${fmt.plural(total, "request", "requests")} in ${shown.label}`;
  }

  function barTitle(a, b, v, c) {
    const parts = CLASSES.filter((k) => c[k]).map((k) => `${fmt.int(c[k])} ${k}`);
    return `${a} – ${b}: ${fmt.plural(v, "request", "requests")}${parts.length ? ` (${parts.join(", ")})` : ""}`;
  }

  /* ---------- breakdown table ---------- */

  function groupLabel(g, value) {
    if (g === "agent") return value ? [value] : [h("span", { class: "sub" }, "No agent")];
    if (g === "route") return [ROUTES[value] || value];
    if (value === "all") return ["All"];
    const k = keys.find((x) => String(x.id) === String(value));
    if (!k) return [h("span", { class: "sub" }, "A deleted key"), " ", h("code", null, String(value).slice(0, 8))];
    return [
      k.name || "Default",
      " ",
      h("code", null, `${k.key_prefix}…`),
      k.is_active ? null : h("span", { class: "tag off" }, "revoked"),
    ];
  }

  function renderTable(g, d) {
    $("usage-group-col").textContent = GROUPS[g];
    $("usage-caption").textContent = `Requests by ${GROUPS[g].toLowerCase()}`;
    const by = new Map();
    for (const r of d.rows) {
      const row = by.get(r.group) || Object.fromEntries([["total", 0], ...CLASSES.map((c) => [c, 0])]);
      const c = CLASSES.includes(r.status_class) ? r.status_class : "5xx";
      const v = Number(r.requests) || 0;
      row[c] += v;
      row.total += v;
      by.set(r.group, row);
    }
    const body = $("usage-body");
    if (!by.size) {
      body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: String(2 + CLASSES.length) }, "No requests in this range.")));
      return;
    }
    const rows = [...by.entries()].sort((a, b) => b[1].total - a[1].total || String(a[0]).localeCompare(String(b[0])));
    body.replaceChildren(
      ...rows.map(([value, c]) =>
        h(
          "tr",
          { "data-group": value },
          h("td", { "data-label": GROUPS[g], class: "group" }, groupLabel(g, value)),
          h("td", { "data-label": "Requests", class: "num total" }, fmt.int(c.total)),
          CLASSES.map((k) => h("td", { "data-label": k, class: `num c${k}` }, c[k] ? fmt.int(c[k]) : "·")),
        ),
      ),
    );
  }

  /* ---------- the module ---------- */

  function load(list) {
    if (!ctx) return Promise.resolve();
    keys = Array.isArray(list) ? list : [];
    build();
    $("usage").hidden = false;
    return reload();
  }

  function clear() {
    generation += 1;
    shown = null;
    keys = [];
    if (!built) return;
    $("usage").hidden = true;
    $("usage-chart").replaceChildren();
    $("usage-legend").replaceChildren();
    $("usage-body").replaceChildren();
    $("usage-total").textContent = "";
    $("usage-empty").hidden = true;
    say($("usage-error"), "");
  }

  function attach(c) {
    ctx = c;
  }

  S.usage = { attach, load, clear };
})();
