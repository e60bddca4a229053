/* Stellar Gate dashboard: the people of an account. Sessions (GET/DELETE /auth/sessions),
 * members and invitations (/auth/members, /auth/invitations) and the audit log (/auth/audit).
 *
 * Loaded before dashboard.js, which hands it a context at start-up (`S.people.attach(ctx)`):
 *   ctx.call(method, path, opts)  api() with the tab's credentials (key, or cookie + CSRF token)
 *   ctx.role()                    "owner" | "admin" | "member", or null when unknown (a key)
 *   ctx.email()                   the signed-in person's address, or null (a key)
 *   ctx.signOut(message, opts)    back to the sign-in screen ({local: true}: no server call)
 *   ctx.status(message)           the dashboard's status line
 * What a role cannot do is hidden or disabled; the server is the authority, and its 403 is shown
 * as it comes. */
(function () {
  "use strict";
  const S = window.Stellar;
  const { h, fmt, say } = S;

  const $ = (id) => document.getElementById(id);
  const RANK = { member: 1, admin: 2, owner: 3 };
  const ROLE_LABELS = { member: "Member", admin: "Admin", owner: "Owner" };
  const AUDIT_PAGE = 25;
  const ACTIONS = {
    account_created: "Account created",
    email_verified: "E-mail verified",
    sign_in: "Signed in",
    sign_out: "Signed out",
    session_revoked: "Session revoked",
    key_created: "Key created",
    key_revoked: "Key revoked",
    key_rotated: "Key rotated",
    member_invited: "Member invited",
    invitation_cancelled: "Invitation cancelled",
    member_joined: "Member joined",
    member_removed: "Member removed",
    member_role_changed: "Role changed",
    plan_changed: "Plan changed",
    subscription_cancelled: "Subscription cancelled",
    key_changed: "Key changed",
    webhook_created: "Webhook added",
    webhook_deleted: "Webhook deleted",
    webhook_secret_rotated: "Webhook secret rotated",
    webhook_resent: "Webhook re-sent",
    alerts_changed: "Alert thresholds changed",
    alert_raised: "Alert raised",
    memories_exported: "Memories exported",
  };

  let ctx = null;
  // Bumped by clear(): answers to requests started before it are dropped.
  let generation = 0;
  let auditBefore = null;

  /** Whether the caller's role is above `role`. An unknown role (signed in with a key) may try:
   *  the server decides. */
  function above(role) {
    const mine = ctx.role();
    return !mine || (RANK[mine] || 0) > (RANK[role] || 0);
  }
  function canManage() {
    const mine = ctx.role();
    return !mine || mine === "admin" || mine === "owner";
  }
  const roleTag = (role) => h("span", { class: `tag role-${role}` }, ROLE_LABELS[role] || role);

  /* ---------- sessions ---------- */

  /** "Chrome on Linux" from a user agent; the whole string goes in the title. */
  function browserName(ua) {
    if (!ua) return "Unknown browser";
    const b = /Edg\//.test(ua)
      ? "Edge"
      : /OPR\//.test(ua)
        ? "Opera"
        : /Firefox\//.test(ua)
          ? "Firefox"
          : /HeadlessChrome\//.test(ua)
            ? "Headless Chrome"
            : /Chrom(e|ium)\//.test(ua)
              ? "Chrome"
              : /Safari\//.test(ua)
                ? "Safari"
                : /^curl\//.test(ua)
                  ? "curl"
                  : "Browser";
    const os = /Android/.test(ua)
      ? "Android"
      : /iPhone|iPad/.test(ua)
        ? "iOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Mac OS X|Macintosh/.test(ua)
            ? "macOS"
            : /CrOS/.test(ua)
              ? "ChromeOS"
              : /Linux/.test(ua)
                ? "Linux"
                : "";
    return os ? `${b} on ${os}` : b;
  }

  function renderSessions(list) {
    const body = $("sessions-body");
    if (!list.length) {
      body.replaceChildren(h("tr", null, h("td", { colspan: "6" }, "No sessions: sign in with your e-mail to start one.")));
      return;
    }
    body.replaceChildren(
      ...list.map((s) => {
        const name = browserName(s.user_agent);
        return h(
          "tr",
          { "data-session-id": s.id, class: s.current ? "current" : "" },
          h(
            "td",
            { "data-label": "Browser", title: s.user_agent || "" },
            name,
            s.current ? h("span", { class: "tag" }, "this browser") : null,
          ),
          h("td", { "data-label": "IP address" }, h("code", null, s.ip || "—")),
          h("td", { "data-label": "Signed in" }, fmt.dateTime(s.created_at)),
          h("td", { "data-label": "Last active" }, fmt.dateTime(s.last_seen_at)),
          h("td", { "data-label": "Expires" }, fmt.dateTime(s.expires_at)),
          h(
            "td",
            { class: "actions" },
            h(
              "button",
              {
                class: "btn btn-danger btn-sm",
                type: "button",
                "aria-label": s.current
                  ? "Sign out this browser"
                  : `Revoke the session of ${name} from ${s.ip || "an unknown address"}, signed in ${fmt.dateTime(s.created_at)}`,
                onclick: (e) => onRevokeSession(s, name, e.currentTarget),
              },
              s.current ? "Sign out" : "Revoke",
            ),
          ),
        );
      }),
    );
  }

  async function onRevokeSession(s, name, opener) {
    const ok = await S.confirmDialog({
      title: s.current ? "Sign out this browser?" : `Revoke the session of ${name}?`,
      text: s.current
        ? "This browser's session ends now; you can sign in again with your e-mail."
        : `The browser signed in from ${s.ip || "an unknown address"} on ${fmt.dateTime(s.created_at)} is signed out at once.`,
      confirmLabel: s.current ? "Sign out" : "Revoke session",
      cancelLabel: "Keep it",
      opener,
    });
    if (!ok) return;
    say($("sessions-error"), "");
    const res = await ctx.call("DELETE", `/auth/sessions/${encodeURIComponent(s.id)}`);
    if (!res.ok) {
      say($("sessions-error"), S.errorText(res, "Revoking the session failed"));
      return;
    }
    if (s.current) {
      ctx.signOut("This browser's session was ended. Sign in again to continue.", { local: true });
      return;
    }
    await loadSessions(generation);
    ctx.status(`The session of ${name} was revoked.`);
  }

  async function loadSessions(gen) {
    const res = await ctx.call("GET", "/auth/sessions");
    if (gen !== generation) return;
    const panel = $("sessions");
    if (res.status === 404 || res.status === 401) {
      panel.hidden = true; // not offered by this server, or signed out meanwhile
      return;
    }
    panel.hidden = false;
    if (!res.ok || !res.data || !Array.isArray(res.data.sessions)) {
      say($("sessions-error"), S.errorText(res, "Loading the sessions failed"));
      return;
    }
    say($("sessions-error"), "");
    renderSessions(res.data.sessions);
  }

  /* ---------- members and invitations ---------- */

  function memberRow(m) {
    const me = ctx.email();
    const self = !!me && m.email === me;
    const changeable = m.role !== "owner" && !self && (ctx.role() === "owner" || !ctx.role());
    let roleCell;
    if (changeable) {
      const sel = h(
        "select",
        {
          class: "role-select",
          "aria-label": `Role of ${m.email}`,
          onchange: (e) => onChangeRole(m, e.currentTarget),
        },
        ["member", "admin"].map((r) => h("option", { value: r, selected: r === m.role }, ROLE_LABELS[r])),
      );
      roleCell = sel;
    } else {
      roleCell = roleTag(m.role);
    }
    const removable = m.role !== "owner" && (self || above(m.role));
    return h(
      "tr",
      { "data-member-id": m.id, "data-email": m.email },
      h("td", { "data-label": "E-mail" }, m.email, self ? h("span", { class: "tag" }, "you") : null),
      h("td", { "data-label": "Role", class: "role-cell" }, roleCell),
      h("td", { "data-label": "Joined" }, fmt.date(m.created_at)),
      h(
        "td",
        { class: "actions" },
        removable
          ? h(
              "button",
              {
                class: "btn btn-danger btn-sm",
                type: "button",
                "aria-label": self ? "Leave this account" : `Remove ${m.email}`,
                onclick: (e) => onRemove(m, self, e.currentTarget),
              },
              self ? "Leave" : "Remove",
            )
          : null,
      ),
    );
  }

  function invitationRow(inv) {
    const cancellable = canManage() && above(inv.role);
    return h(
      "tr",
      { "data-invitation-id": inv.id, "data-email": inv.email },
      h("td", { "data-label": "E-mail" }, inv.email),
      h("td", { "data-label": "Role" }, roleTag(inv.role)),
      h("td", { "data-label": "Invited by" }, inv.invited_by || "—"),
      h("td", { "data-label": "Expires" }, fmt.dateTime(inv.expires_at)),
      h(
        "td",
        { class: "actions" },
        cancellable
          ? h(
              "button",
              {
                class: "btn btn-danger btn-sm",
                type: "button",
                "aria-label": `Cancel the invitation of ${inv.email}`,
                onclick: (e) => onCancelInvitation(inv, e.currentTarget),
              },
              "Cancel",
            )
          : null,
      ),
    );
  }

  function renderMembers(d) {
    const members = Array.isArray(d.members) ? d.members : [];
    const invitations = Array.isArray(d.invitations) ? d.invitations : [];
    const max = Number(d.max_members) || 0;
    const used = members.length + invitations.length;
    $("seats").textContent = max ? `${fmt.int(used)} of ${fmt.plural(max, "seat", "seats")} used` : "";
    $("members-body").replaceChildren(...members.map(memberRow));
    $("invitations-body").replaceChildren(...invitations.map(invitationRow));
    $("invitations").hidden = invitations.length === 0;

    const form = $("invite-form");
    form.hidden = !canManage();
    // An admin invites members; the owner (or a key, whose role the page does not know) also admins.
    $("invite-role-admin").disabled = !above("admin");
    if ($("invite-role").value === "admin" && !above("admin")) $("invite-role").value = "member";
    const full = max > 0 && used >= max;
    $("invite-submit").disabled = full;
    $("invite-hint").textContent = !canManage()
      ? "Only the owner and admins invite people."
      : full
        ? `Every seat of this plan is taken (members and pending invitations). Remove someone or upgrade for more seats.`
        : "The invitation link works once, for 7 days.";
  }

  async function loadMembers(gen) {
    const res = await ctx.call("GET", "/auth/members");
    if (gen !== generation) return;
    const panel = $("members");
    if (res.status === 404 || res.status === 401) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    if (!res.ok || !res.data || !Array.isArray(res.data.members)) {
      say($("members-error"), S.errorText(res, "Loading the members failed"));
      return;
    }
    renderMembers(res.data);
  }

  async function onInvite(e) {
    e.preventDefault();
    const input = $("invite-email");
    const err = $("members-error");
    const email = input.value.trim();
    const role = $("invite-role").value;
    say(err, "");
    input.removeAttribute("aria-invalid");
    if (!S.looksLikeEmail(email)) {
      input.setAttribute("aria-invalid", "true");
      say(err, "Enter the e-mail address to invite, like you@example.com.");
      input.focus();
      return;
    }
    const btn = $("invite-submit");
    btn.disabled = true;
    const res = await ctx.call("POST", "/auth/members", { body: { email, role } });
    btn.disabled = false;
    if (!res.ok) {
      if (res.status === 422) input.setAttribute("aria-invalid", "true");
      say(err, S.errorText(res, "Sending the invitation failed"));
      return;
    }
    input.value = "";
    const to = (res.data && res.data.email) || email;
    await loadMembers(generation);
    say($("members-status"), `Invitation sent to ${to} as ${(ROLE_LABELS[role] || role).toLowerCase()}.`);
    input.focus();
  }

  async function onChangeRole(m, select) {
    const role = select.value;
    say($("members-error"), "");
    say($("members-status"), "");
    select.disabled = true;
    const res = await ctx.call("PATCH", `/auth/members/${encodeURIComponent(m.id)}`, { body: { role } });
    select.disabled = false;
    if (!res.ok) {
      select.value = m.role;
      say($("members-error"), S.errorText(res, "Changing the role failed"));
      return;
    }
    m.role = role;
    await loadMembers(generation);
    say($("members-status"), `${m.email} is now ${(ROLE_LABELS[role] || role).toLowerCase()}.`);
  }

  async function onRemove(m, self, opener) {
    const ok = await S.confirmDialog({
      title: self ? "Leave this account?" : `Remove ${m.email}?`,
      text: self
        ? "You lose access at once: your sessions in this account end and the keys you created are revoked."
        : `${m.email} loses access at once: their sessions end and the keys they created are revoked (the API refuses them within a second).`,
      confirmLabel: self ? "Leave account" : "Remove member",
      cancelLabel: "Cancel",
      opener,
    });
    if (!ok) return;
    say($("members-error"), "");
    const res = await ctx.call("DELETE", `/auth/members/${encodeURIComponent(m.id)}`);
    if (!res.ok) {
      say($("members-error"), S.errorText(res, self ? "Leaving the account failed" : "Removing the member failed"));
      return;
    }
    if (self) {
      ctx.signOut("You left the account.", { local: true });
      return;
    }
    await loadMembers(generation);
    say($("members-status"), `${m.email} was removed.`);
  }

  async function onCancelInvitation(inv, opener) {
    const ok = await S.confirmDialog({
      title: `Cancel the invitation of ${inv.email}?`,
      text: "The link in their e-mail stops working; you can invite them again later.",
      confirmLabel: "Cancel invitation",
      cancelLabel: "Keep it",
      opener,
    });
    if (!ok) return;
    say($("members-error"), "");
    const res = await ctx.call("DELETE", `/auth/invitations/${encodeURIComponent(inv.id)}`);
    if (!res.ok) {
      say($("members-error"), S.errorText(res, "Cancelling the invitation failed"));
      return;
    }
    await loadMembers(generation);
    say($("members-status"), `The invitation of ${inv.email} was cancelled.`);
  }

  /* ---------- audit log ---------- */

  function auditRow(ev) {
    return h(
      "tr",
      { "data-event-id": ev.id, "data-action": ev.action },
      h("td", { "data-label": "When" }, fmt.dateTime(ev.created_at)),
      h("td", { "data-label": "Who" }, ev.actor || "—"),
      h("td", { "data-label": "What" }, ACTIONS[ev.action] || ev.action),
      h("td", { "data-label": "Target" }, ev.target === null || ev.target === undefined ? "—" : String(ev.target)),
      h("td", { "data-label": "IP address" }, ev.ip ? h("code", null, ev.ip) : "—"),
    );
  }

  async function loadAudit(gen, more) {
    const q = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (more && auditBefore !== null && auditBefore !== undefined) q.set("before", String(auditBefore));
    const btn = $("audit-more");
    btn.disabled = true;
    const res = await ctx.call("GET", `/auth/audit?${q}`);
    btn.disabled = false;
    if (gen !== generation) return;
    const panel = $("audit");
    // Members do not see it (403); a server without it answers 404.
    if (res.status === 403 || res.status === 404 || res.status === 401) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    if (!res.ok || !res.data || !Array.isArray(res.data.events)) {
      say($("audit-error"), S.errorText(res, "Loading the audit log failed"));
      return;
    }
    say($("audit-error"), "");
    const rows = res.data.events.map(auditRow);
    const body = $("audit-body");
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    if (!body.children.length) body.append(h("tr", null, h("td", { colspan: "5" }, "No events yet.")));
    auditBefore = res.data.next_before;
    btn.hidden = auditBefore === null || auditBefore === undefined;
  }

  /* ---------- the module ---------- */

  function load() {
    const gen = generation;
    const role = ctx.role();
    const tasks = [loadSessions(gen), loadMembers(gen)];
    if (role === "member") $("audit").hidden = true;
    else tasks.push(loadAudit(gen, false));
    return Promise.all(tasks);
  }

  function clear() {
    generation += 1;
    auditBefore = null;
    for (const id of ["sessions", "members", "audit"]) $(id).hidden = true;
    for (const id of ["sessions-body", "members-body", "invitations-body", "audit-body"]) $(id).replaceChildren();
    for (const id of ["sessions-error", "members-error", "members-status", "audit-error"]) say($(id), "");
  }

  function attach(c) {
    ctx = c;
    $("invite-form").addEventListener("submit", onInvite);
    $("audit-more").addEventListener("click", () => loadAudit(generation, true));
    clear();
  }

  S.people = { attach, load, clear };
})();
