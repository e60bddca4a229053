-- Accounts that belong to people (SQLite): verified addresses, members with roles, single-use
-- links, sessions and the audit log. docs/billing-api.md describes the flows.

-- When the account's address was proven by opening a link mailed to it (NULL: never; accounts
-- created before this migration, and those created with auth.immediate_key, start unverified).
ALTER TABLE users ADD COLUMN email_verified_at TEXT;

-- Addresses are compared trimmed and lower-cased. Rows that differ from another only by case are
-- never merged: the row whose address is already in that form (else the oldest) keeps it, every
-- other such row is listed here and keeps its address as it was (billing logs them at start;
-- they cannot be reached by e-mail until an operator resolves them).
CREATE TABLE email_case_conflicts (
    user_id BLOB PRIMARY KEY,
    email TEXT NOT NULL,
    canonical_user_id BLOB NOT NULL,
    found_at TEXT NOT NULL
);
INSERT INTO email_case_conflicts (user_id, email, canonical_user_id, found_at)
SELECT u.id, u.email, c.id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM users u
JOIN users c ON c.id = (
    SELECT x.id FROM users x WHERE lower(trim(x.email)) = lower(trim(u.email))
    ORDER BY (x.email = lower(trim(x.email))) DESC, x.created_at, x.id LIMIT 1)
WHERE c.id <> u.id;
UPDATE users SET email = lower(trim(email))
WHERE email <> lower(trim(email)) AND id NOT IN (SELECT user_id FROM email_case_conflicts);

-- The people of an account. The owner's row has the account's id and address; invited members
-- join through an invitation link. role: owner, admin or member.
CREATE TABLE members (
    id BLOB PRIMARY KEY,
    account_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (account_id, email)
);
CREATE INDEX members_email ON members(email);
INSERT INTO members (id, account_id, email, role, created_at)
SELECT id, id, email, 'owner', created_at FROM users;

-- Who created each key (a member id; NULL for keys from before this migration and from
-- immediate registration, which act as the owner's) and their address, kept for display.
ALTER TABLE api_keys ADD COLUMN created_by BLOB;
ALTER TABLE api_keys ADD COLUMN created_by_email TEXT;

-- Single-use links: verification, sign_in, invitation. Only the SHA-256 of the token is stored.
-- account_id: the account the link is for; role and invited_by: invitations; next: where the
-- link page goes afterwards (a checkout continued after verification).
CREATE TABLE auth_tokens (
    id BLOB PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    email TEXT NOT NULL,
    account_id BLOB REFERENCES users(id) ON DELETE CASCADE,
    role TEXT,
    invited_by BLOB,
    next TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX auth_tokens_account ON auth_tokens(account_id, purpose);

-- Dashboard sessions (cookie stellar_session). Only the SHA-256 of the token is stored; a
-- session belongs to one membership and ends with it.
CREATE TABLE sessions (
    id BLOB PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    member_id BLOB NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    ip TEXT,
    user_agent TEXT
);
CREATE INDEX sessions_member ON sessions(member_id);

-- Every account action, written in the transaction of the action. No foreign key: the rows
-- outlive the account. actor: the person's address, "key:<prefix>", "provider:<name>" or "system".
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BLOB,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    ip TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_events_account ON audit_events(account_id, id);
