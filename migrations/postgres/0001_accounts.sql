-- Account DB, PostgreSQL. A superset of the original Python system's schema: the three original
-- tables are created exactly as it created them (IF NOT EXISTS, so a database it made is kept as
-- is), then everything Stellar Gate adds comes as new columns with defaults and new tables.
-- Every statement is idempotent, so this applies both on an empty database and on an old one.

-- The original tables (names, columns and types as the original system created them).
CREATE TABLE IF NOT EXISTS users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) UNIQUE NOT NULL,
    tier VARCHAR(20) NOT NULL DEFAULT 'free',
    provider VARCHAR(20),
    provider_customer_id VARCHAR(255),
    provider_subscription_id VARCHAR(255),
    billing_key VARCHAR(255),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash VARCHAR(64) NOT NULL,
    key_prefix VARCHAR(20) NOT NULL,
    name VARCHAR(100) DEFAULT 'Default',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    last_used_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS subscription_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id),
    provider VARCHAR(20) NOT NULL,
    event_type VARCHAR(50) NOT NULL,
    tier VARCHAR(20) NOT NULL,
    amount_cents INTEGER,
    currency VARCHAR(3) DEFAULT 'USD',
    raw_data JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_api_keys_hash ON api_keys(key_hash) WHERE is_active = TRUE;
CREATE INDEX IF NOT EXISTS idx_users_email ON users(email);
CREATE INDEX IF NOT EXISTS idx_subscription_events_user ON subscription_events(user_id);

-- Additions.

-- Subscription state: status is one of none | active | cancelled (paid period still running) |
-- past_due | expired. provider_state_at is the provider's timestamp of the newest event applied,
-- so an older event delivered late never moves the account back to a stale state.
ALTER TABLE users ADD COLUMN IF NOT EXISTS subscription_status VARCHAR(20) NOT NULL DEFAULT 'none';
ALTER TABLE users ADD COLUMN IF NOT EXISTS current_period_end TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN IF NOT EXISTS cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN IF NOT EXISTS past_due_since TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN IF NOT EXISTS provider_state_at TIMESTAMPTZ;
-- Toss: the customerKey we issued (a UUID, never guessable) and the billing key, AES-256-GCM
-- encrypted (the original plaintext billing_key column is left unused).
ALTER TABLE users ADD COLUMN IF NOT EXISTS toss_customer_key VARCHAR(300);
ALTER TABLE users ADD COLUMN IF NOT EXISTS billing_key_enc TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS users_toss_customer_key ON users(toss_customer_key);

-- One key hash is one key: lookups are by hash.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_key_hash_unique ON api_keys(key_hash);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys(user_id);

ALTER TABLE subscription_events ADD COLUMN IF NOT EXISTS provider_event_id VARCHAR(255);

-- Memory quota: reservations are counted here (reserve on store, commit on 2xx, release
-- otherwise); a periodic reconciliation with the engine corrects drift.
CREATE TABLE IF NOT EXISTS account_usage (
    user_id UUID PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    memories_used BIGINT NOT NULL DEFAULT 0,
    agents_used INTEGER NOT NULL DEFAULT 0,
    reconciled_at TIMESTAMPTZ
);

-- Distinct X-Stellar-Agent values an account has used (bounded by the tier's max_agents).
CREATE TABLE IF NOT EXISTS account_agents (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent VARCHAR(200) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (user_id, agent)
);

-- Requests per account per hour (written behind by the gateway, read by the dashboard).
CREATE TABLE IF NOT EXISTS usage_hourly (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hour_start BIGINT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour_start)
);

-- Provider event ids already applied (webhook idempotency).
CREATE TABLE IF NOT EXISTS processed_webhooks (
    provider VARCHAR(20) NOT NULL,
    event_id VARCHAR(255) NOT NULL,
    event_type VARCHAR(100),
    processed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (provider, event_id)
);

-- The change feed: billing appends a row in the same transaction as every tier or key change;
-- gateways poll it (and LISTEN for the wake-up below) and evict what changed.
CREATE TABLE IF NOT EXISTS change_feed (
    id BIGSERIAL PRIMARY KEY,
    user_id UUID,
    key_hash VARCHAR(64),
    kind VARCHAR(40) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE OR REPLACE FUNCTION stellar_change_feed_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('stellar_change_feed', NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS change_feed_notify ON change_feed;
CREATE TRIGGER change_feed_notify AFTER INSERT ON change_feed
    FOR EACH ROW EXECUTE FUNCTION stellar_change_feed_notify();

-- Recurring Toss charges: one row per attempt; order_id is unique per account, month and attempt.
CREATE TABLE IF NOT EXISTS toss_charges (
    order_id VARCHAR(64) PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    period VARCHAR(7) NOT NULL,
    attempt INTEGER NOT NULL,
    amount BIGINT NOT NULL,
    tier VARCHAR(20) NOT NULL,
    status VARCHAR(20) NOT NULL,
    payment_key VARCHAR(200),
    failure_code VARCHAR(100),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (user_id, period, attempt)
);
