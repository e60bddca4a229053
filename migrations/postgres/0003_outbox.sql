-- Outbox of e-mail (PostgreSQL). A row is written in the same transaction as the change that
-- causes the mail (billing's mail::enqueue) and sent afterwards by billing's mail worker, so a
-- mail is never lost to an SMTP outage or a crash between the change and the send.
-- status: pending (to send; due when next_attempt_at <= now), sent, or failed (gave up after
-- mail.max_attempts; kept with its payload so it can be re-queued by hand).
-- attempts counts claims (a claim is an attempt, even one a crash cut short).
-- claim_token: set by the worker that claimed the row; next_attempt_at is then the end of its
-- lease, after which another worker may take the row again.
-- payload: the template's data as JSON (it carries single-use links, so it is cleared once the
-- mail is sent).
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    recipient VARCHAR(320) NOT NULL,
    template VARCHAR(40) NOT NULL,
    payload TEXT,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claim_token VARCHAR(64),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    sent_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt_at);
