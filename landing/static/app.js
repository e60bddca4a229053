/* Stellar Gate: helpers shared by the landing page and the dashboard.
 *
 * Plain script (no modules, no build step). Everything hangs off `window.Stellar`.
 * DOM is built with `h()`, which only ever sets text through textContent, so data from the
 * server or the user is never parsed as HTML. */
(function () {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";

  /** Build an element. attrs: class, text, on<Event> handlers, hidden, dataset object, aria-*,
   *  anything else as an attribute. Children: nodes or strings (strings become text nodes). */
  function build(doc, ns, tag, attrs, children) {
    const el = ns ? doc.createElementNS(ns, tag) : doc.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") el.setAttribute("class", v);
        else if (k === "text") el.textContent = String(v);
        else if (k === "dataset") Object.assign(el.dataset, v);
        else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function h(tag, attrs, ...children) {
    return build(document, null, tag, attrs, children);
  }
  function s(tag, attrs, ...children) {
    return build(document, SVG_NS, tag, attrs, children);
  }

  /** Call the API on this origin. Never throws: returns {ok, status, data, detail, retryAfter}.
   *  status 0 means the request did not reach the server (network error or timeout). */
  async function api(method, path, opts) {
    opts = opts || {};
    const headers = { Accept: "application/json" };
    if (opts.key) headers["X-API-Key"] = opts.key;
    // Signed in by the session cookie: every state-changing request carries the CSRF token.
    if (opts.csrf && method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = opts.csrf;
    let body;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), opts.timeoutMs || 20000);
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body,
        // anonymous: without the session cookie (a visitor's request from a signed-in browser).
        credentials: opts.anonymous ? "omit" : "same-origin",
        cache: "no-store",
        signal: ctl.signal,
      });
    } catch (e) {
      clearTimeout(timer);
      return { ok: false, status: 0, data: null, detail: null, network: true };
    }
    let data = null;
    const text = await res.text().catch(() => "");
    clearTimeout(timer);
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    return {
      ok: res.ok,
      status: res.status,
      data,
      detail: detailOf(data),
      retryAfter: res.headers.get("Retry-After"),
    };
  }

  /** The human-readable part of an error body: `detail` as a string, or FastAPI-style list. */
  function detailOf(data) {
    if (!data || typeof data !== "object") return null;
    const d = data.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d) && d.length) {
      return d
        .map((x) => (x && typeof x.msg === "string" ? x.msg : ""))
        .filter(Boolean)
        .join("; ");
    }
    if (typeof data.title === "string") return data.title;
    return null;
  }

  /** One sentence for a failed api() result. */
  function errorText(res, fallback) {
    if (res.status === 0) {
      return "Couldn't reach the server. Check your connection and try again.";
    }
    if (res.status === 429) {
      const wait = res.retryAfter ? ` Try again in ${res.retryAfter} s.` : " Try again shortly.";
      return (res.detail ? res.detail.replace(/\.?$/, ".") : "Too many requests.") + wait;
    }
    if (res.detail) return res.detail;
    if (res.status >= 500) {
      return `${fallback || "Something went wrong"} (server error ${res.status}). Please try again.`;
    }
    return `${fallback || "Something went wrong"} (error ${res.status}).`;
  }

  const intFmt = new Intl.NumberFormat("en-US");
  const usdFmt = new Intl.NumberFormat("en-US", {
    style: "currency",
    currency: "USD",
    maximumFractionDigits: 2,
    minimumFractionDigits: 0,
  });
  const krwFmt = new Intl.NumberFormat("ko-KR", { style: "currency", currency: "KRW" });
  const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
  const hourFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  function toDate(v) {
    if (v === null || v === undefined || v === "") return null;
    const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }

  const fmt = {
    int: (n) => (typeof n === "number" && isFinite(n) ? intFmt.format(n) : "—"),
    usd: (n) => (typeof n === "number" ? usdFmt.format(n) : "—"),
    krw: (n) => (typeof n === "number" ? krwFmt.format(n) : "—"),
    date: (v) => {
      const d = toDate(v);
      return d ? dateFmt.format(d) : "—";
    },
    dateTime: (v) => {
      const d = toDate(v);
      return d ? dateTimeFmt.format(d) : "—";
    },
    hour: (v) => {
      const d = toDate(v);
      return d ? hourFmt.format(d) : "";
    },
    plural: (n, one, many) => `${fmt.int(n)} ${n === 1 ? one : many}`,
    title: (t) => (t ? String(t).charAt(0).toUpperCase() + String(t).slice(1) : ""),
  };

  /** The tier table from the server, fetched once per page. */
  let tiersPromise = null;
  function tiers() {
    if (!tiersPromise) {
      tiersPromise = api("GET", "/billing/tiers").then((r) => {
        if (!r.ok || !r.data || !Array.isArray(r.data.tiers)) {
          tiersPromise = null;
        }
        return r;
      });
    }
    return tiersPromise;
  }

  /* ---------- modal dialogs ----------
   * Native <dialog> with showModal(): the rest of the page becomes inert, Escape fires
   * `cancel`. On top of that: role/aria-modal for older assistive tech, Tab cycles inside the
   * dialog, a click on the backdrop closes, and focus goes back to the opener on close. */

  const FOCUSABLE =
    'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), ' +
    'select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

  function focusables(root) {
    return Array.from(root.querySelectorAll(FOCUSABLE)).filter(
      (el) => !el.closest("[hidden]") && el.getClientRects().length > 0,
    );
  }

  function setupModal(dlg) {
    if (dlg.dataset.modalReady) return;
    dlg.dataset.modalReady = "1";
    dlg.setAttribute("role", "dialog");
    dlg.setAttribute("aria-modal", "true");
    dlg.addEventListener("keydown", (e) => {
      if (e.key !== "Tab") return;
      const items = focusables(dlg);
      if (!items.length) {
        e.preventDefault();
        return;
      }
      const first = items[0];
      const last = items[items.length - 1];
      const active = document.activeElement;
      if (e.shiftKey && (active === first || !dlg.contains(active))) {
        e.preventDefault();
        last.focus();
      } else if (!e.shiftKey && (active === last || !dlg.contains(active))) {
        e.preventDefault();
        first.focus();
      }
    });
    // A click whose target is the <dialog> itself landed on the backdrop (content fills the box).
    dlg.addEventListener("click", (e) => {
      if (e.target === dlg) closeModal(dlg);
    });
    dlg.addEventListener("close", () => {
      // `close` is queued; if the dialog was opened again meanwhile, this one is stale.
      if (dlg.open) return;
      const opener = dlg._opener;
      dlg._opener = null;
      if (typeof dlg._onClose === "function") {
        const f = dlg._onClose;
        dlg._onClose = null;
        f(dlg.returnValue);
      }
      if (opener && opener.isConnected && typeof opener.focus === "function") {
        opener.focus();
      }
    });
    for (const b of dlg.querySelectorAll("[data-close]")) {
      b.addEventListener("click", () => closeModal(dlg, b.dataset.close || ""));
    }
  }

  function openModal(dlg, opts) {
    opts = opts || {};
    setupModal(dlg);
    dlg._opener = opts.opener || document.activeElement;
    dlg._onClose = opts.onClose || null;
    dlg.returnValue = "";
    if (!dlg.open) dlg.showModal();
    const target = opts.initialFocus || focusables(dlg)[0];
    if (target) target.focus();
  }

  function closeModal(dlg, value) {
    if (dlg.open) dlg.close(value || "");
  }

  /** An in-page confirmation (not window.confirm). Resolves true when confirmed. */
  function confirmDialog(opts) {
    const dlg = document.getElementById("confirm-dialog");
    dlg.querySelector("#confirm-title").textContent = opts.title;
    dlg.querySelector("#confirm-text").textContent = opts.text;
    const ok = dlg.querySelector("#confirm-ok");
    ok.textContent = opts.confirmLabel || "Confirm";
    const cancel = dlg.querySelector("#confirm-cancel");
    cancel.textContent = opts.cancelLabel || "Cancel";
    // opts.extra: a node shown under the text (e.g. a choice that goes with the confirmation).
    const extra = dlg.querySelector("#confirm-extra");
    if (extra) extra.replaceChildren(...(opts.extra ? [opts.extra] : []));
    return new Promise((resolve) => {
      openModal(dlg, {
        opener: opts.opener,
        initialFocus: cancel,
        onClose: (v) => resolve(v === "ok"),
      });
    });
  }

  /** Copy text to the clipboard; falls back to selecting it. Updates the button's label. */
  async function copyText(text, button, selectEl) {
    let done = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        done = true;
      }
    } catch (e) {
      done = false;
    }
    if (!done) {
      const ta = h("textarea", { class: "visually-hidden", readonly: true });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      try {
        done = document.execCommand("copy");
      } catch (e) {
        done = false;
      }
      ta.remove();
    }
    if (!done && selectEl) {
      const range = document.createRange();
      range.selectNodeContents(selectEl);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    if (button) {
      const label = button.dataset.label || button.textContent;
      button.dataset.label = label;
      button.textContent = done ? "Copied" : "Press Ctrl+C";
      setTimeout(() => {
        button.textContent = label;
      }, 2000);
    }
    return done;
  }

  /** Hand the browser `blob` as a download named `name` (for files fetched with a key header,
   *  which a plain link cannot send). */
  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  /** Show a message in a .msg element (empty string hides it). */
  function say(el, text, kind) {
    if (!el) return;
    el.textContent = text || "";
    if (kind) {
      el.classList.remove("msg-error", "msg-info", "msg-ok");
      el.classList.add(`msg-${kind}`);
    }
  }

  /** A plausible e-mail address (the server has the last word). */
  function looksLikeEmail(v) {
    return /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v);
  }

  /** The curl lines of a first call, for a given key. */
  function curlExample(key) {
    const o = location.origin;
    return [
      `curl -s ${o}/api/v1/store \\`,
      `  -H "X-API-Key: ${key}" \\`,
      `  -H "Content-Type: application/json" \\`,
      `  -d '{"content": "The user prefers dark mode", "importance": 0.8}'`,
      ``,
      `curl -s "${o}/api/v1/recall?q=dark+mode" \\`,
      `  -H "X-API-Key: ${key}"`,
    ].join("\n");
  }

  const KEY_STORAGE = "stellar-gate.api-key";
  const KEY_RE = /^sk-stellar-[0-9a-f]{32}$/;

  const session = {
    get() {
      try {
        return sessionStorage.getItem(KEY_STORAGE);
      } catch (e) {
        return null;
      }
    },
    set(key) {
      try {
        sessionStorage.setItem(KEY_STORAGE, key);
      } catch (e) {
        /* private mode: the dashboard then asks again */
      }
    },
    clear() {
      try {
        sessionStorage.removeItem(KEY_STORAGE);
      } catch (e) {
        /* nothing stored */
      }
    },
  };

  window.Stellar = {
    h,
    s,
    api,
    errorText,
    fmt,
    tiers,
    openModal,
    closeModal,
    setupModal,
    confirmDialog,
    copyText,
    saveBlob,
    say,
    curlExample,
    looksLikeEmail,
    session,
    KEY_RE,
  };
})();
