-- Account DB, SQLite (the embedded default). Same tables and columns as the PostgreSQL
-- migration; UUIDs are 16-byte BLOBs, timestamps RFC 3339 TEXT, booleans INTEGER.

CREATE TABLE users (
    id BLOB PRIMARY KEY,
    email TEXT UNIQUE NOT NULL,
    tier TEXT NOT NULL DEFAULT 'free',
    provider TEXT,
    provider_customer_id TEXT,
    provider_subscription_id TEXT,
    billing_key TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    subscription_status TEXT NOT NULL DEFAULT 'none',
    current_period_end TEXT,
    cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
    past_due_since TEXT,
    provider_state_at TEXT,
    toss_customer_key TEXT UNIQUE,
    billing_key_enc TEXT
);

CREATE TABLE api_keys (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    name TEXT DEFAULT 'Default',
    is_active INTEGER NOT NULL DEFAULT 1,
    last_used_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE subscription_events (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    event_type TEXT NOT NULL,
    tier TEXT NOT NULL,
    amount_cents INTEGER,
    currency TEXT DEFAULT 'USD',
    raw_data TEXT,
    created_at TEXT NOT NULL,
    provider_event_id TEXT
);
CREATE INDEX idx_subscription_events_user ON subscription_events(user_id);

CREATE TABLE account_usage (
    user_id BLOB PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    memories_used INTEGER NOT NULL DEFAULT 0,
    agents_used INTEGER NOT NULL DEFAULT 0,
    reconciled_at TEXT
);

CREATE TABLE account_agents (
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, agent)
);

CREATE TABLE usage_hourly (
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hour_start INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour_start)
);

CREATE TABLE processed_webhooks (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- SQLite serialises writers, so ids become visible in order (no gaps to wait for).
CREATE TABLE change_feed (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BLOB,
    key_hash TEXT,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE toss_charges (
    order_id TEXT PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    tier TEXT NOT NULL,
    status TEXT NOT NULL,
    payment_key TEXT,
    failure_code TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (user_id, period, attempt)
);
