-- Usage history (PostgreSQL): requests served, counted by the gateways in memory and added here in
-- batches (several gateways add up exactly: each flush adds its counts). One row per account,
-- key, agent ('' = none), route family (store, recall, read, other) and status class (2xx, 3xx,
-- 4xx, 429 — counted apart from other 4xx —, 5xx), per minute (kept 48 hours) and per hour
-- (kept 90 days). Times are the bucket's start in Unix seconds.
CREATE TABLE IF NOT EXISTS usage_minutes (
    user_id UUID NOT NULL,
    key_id UUID NOT NULL,
    agent VARCHAR(64) NOT NULL DEFAULT '',
    route VARCHAR(10) NOT NULL,
    status_class VARCHAR(4) NOT NULL,
    minute_start BIGINT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, minute_start, key_id, agent, route, status_class)
);
CREATE INDEX IF NOT EXISTS usage_minutes_age ON usage_minutes(minute_start);

CREATE TABLE IF NOT EXISTS usage_hours (
    user_id UUID NOT NULL,
    key_id UUID NOT NULL,
    agent VARCHAR(64) NOT NULL DEFAULT '',
    route VARCHAR(10) NOT NULL,
    status_class VARCHAR(4) NOT NULL,
    hour_start BIGINT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour_start, key_id, agent, route, status_class)
);
CREATE INDEX IF NOT EXISTS usage_hours_age ON usage_hours(hour_start);
