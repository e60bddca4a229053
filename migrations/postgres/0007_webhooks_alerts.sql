-- Webhooks to customers and alerts (PostgreSQL). Same tables and meaning as the SQLite
-- migration (see there for the comments); docs/billing-api.md, "Webhooks and alerts".

CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id UUID PRIMARY KEY,
    account_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret_enc TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    secret_rotated_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_account ON webhook_endpoints(account_id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id UUID PRIMARY KEY,
    endpoint_id UUID NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    account_id UUID NOT NULL,
    event_id UUID NOT NULL,
    event_type VARCHAR(40) NOT NULL,
    payload TEXT NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claim_token VARCHAR(64),
    last_status_code INTEGER,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ,
    delivered_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_age ON webhook_deliveries(created_at);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id UUID NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE IF NOT EXISTS alert_settings (
    account_id UUID PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    memory_percent TEXT NOT NULL,
    rate_limited_minutes INTEGER NOT NULL,
    key_expiring_days INTEGER NOT NULL,
    payment_failed BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS alert_state (
    account_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    alert VARCHAR(80) NOT NULL,
    raised_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, alert)
);
