-- Webhooks to customers and alerts (SQLite). docs/billing-api.md, "Webhooks and alerts".

-- An account's endpoints. events: a JSON array of event types ("*" = all). secret_enc: the
-- signing secret, AES-256-GCM encrypted with webhooks.encryption_key (billing's crypto module).
CREATE TABLE webhook_endpoints (
    id BLOB PRIMARY KEY,
    account_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret_enc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    secret_rotated_at TEXT
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints(account_id);

-- The outbox of events: one row per event and subscribed endpoint, written in the transaction
-- of the change that causes the event, delivered afterwards by billing's webhook worker (claim
-- with a lease, as the mail outbox). event_id is the same for every endpoint of one event (and
-- for a resend). payload: the JSON body exactly as it is signed and sent.
-- status: pending (due when next_attempt_at <= now; while claimed, next_attempt_at is the end
-- of the lease), delivered (a 2xx), failed (no 2xx within webhooks.max_age_secs).
CREATE TABLE webhook_deliveries (
    id BLOB PRIMARY KEY,
    endpoint_id BLOB NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    account_id BLOB NOT NULL,
    event_id BLOB NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claim_token TEXT,
    last_status_code INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    last_attempt_at TEXT,
    delivered_at TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries(created_at);

-- Every attempt of a delivery: the HTTP status (NULL when there was no answer) or the error.
CREATE TABLE webhook_attempts (
    delivery_id BLOB NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Alert thresholds of an account (no row: the defaults). memory_percent: a JSON array of
-- percentages of the tier's memory quota; 0 turns rate_limited_minutes / key_expiring_days off.
CREATE TABLE alert_settings (
    account_id BLOB PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    memory_percent TEXT NOT NULL,
    rate_limited_minutes INTEGER NOT NULL,
    key_expiring_days INTEGER NOT NULL,
    payment_failed INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

-- The alerts raised and not yet re-armed: a row exists while its condition holds (written when
-- it is raised, removed when the condition no longer holds), so each is raised once per crossing.
-- alert: memory_quota:<percent>, rate_limited, key_expiring:<key id>, payment_failed.
CREATE TABLE alert_state (
    account_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    alert TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    PRIMARY KEY (account_id, alert)
);
