-- Accounts that belong to people (PostgreSQL): verified addresses, members with roles,
-- single-use links, sessions and the audit log. Same tables and meaning as the SQLite migration
-- (see there for the comments); docs/billing-api.md describes the flows.

ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified_at TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS email_case_conflicts (
    user_id UUID PRIMARY KEY,
    email VARCHAR(255) NOT NULL,
    canonical_user_id UUID NOT NULL,
    found_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
INSERT INTO email_case_conflicts (user_id, email, canonical_user_id)
SELECT u.id, u.email, c.id
FROM users u
JOIN users c ON c.id = (
    SELECT x.id FROM users x WHERE lower(trim(x.email)) = lower(trim(u.email))
    ORDER BY (x.email = lower(trim(x.email))) DESC, x.created_at, x.id LIMIT 1)
WHERE c.id <> u.id
ON CONFLICT (user_id) DO NOTHING;
UPDATE users SET email = lower(trim(email))
WHERE email <> lower(trim(email)) AND id NOT IN (SELECT user_id FROM email_case_conflicts);

CREATE TABLE IF NOT EXISTS members (
    id UUID PRIMARY KEY,
    account_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email VARCHAR(255) NOT NULL,
    role VARCHAR(20) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (account_id, email)
);
CREATE INDEX IF NOT EXISTS members_email ON members(email);
INSERT INTO members (id, account_id, email, role, created_at)
SELECT id, id, email, 'owner', created_at FROM users
ON CONFLICT DO NOTHING;

ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS created_by UUID;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS created_by_email VARCHAR(255);

CREATE TABLE IF NOT EXISTS auth_tokens (
    id UUID PRIMARY KEY,
    token_hash VARCHAR(64) NOT NULL UNIQUE,
    purpose VARCHAR(20) NOT NULL,
    email VARCHAR(255) NOT NULL,
    account_id UUID REFERENCES users(id) ON DELETE CASCADE,
    role VARCHAR(20),
    invited_by UUID,
    next TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS auth_tokens_account ON auth_tokens(account_id, purpose);

CREATE TABLE IF NOT EXISTS sessions (
    id UUID PRIMARY KEY,
    token_hash VARCHAR(64) NOT NULL UNIQUE,
    member_id UUID NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    ip VARCHAR(64),
    user_agent VARCHAR(256)
);
CREATE INDEX IF NOT EXISTS sessions_member ON sessions(member_id);

CREATE TABLE IF NOT EXISTS audit_events (
    id BIGSERIAL PRIMARY KEY,
    account_id UUID,
    actor VARCHAR(320) NOT NULL,
    action VARCHAR(40) NOT NULL,
    target TEXT,
    ip VARCHAR(64),
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_account ON audit_events(account_id, id);
