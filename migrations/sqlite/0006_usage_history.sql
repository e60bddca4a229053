-- Usage history (SQLite): requests served, counted by the gateways in memory and added here in
-- batches (several gateways add up exactly: each flush adds its counts). One row per account,
-- key, agent ('' = none), route family (store, recall, read, other) and status class (2xx, 3xx,
-- 4xx, 429 — counted apart from other 4xx —, 5xx), per minute (kept 48 hours) and per hour
-- (kept 90 days). Times are the bucket's start in Unix seconds.
CREATE TABLE usage_minutes (
    user_id BLOB NOT NULL,
    key_id BLOB NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL,
    status_class TEXT NOT NULL,
    minute_start INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, minute_start, key_id, agent, route, status_class)
);
CREATE INDEX usage_minutes_age ON usage_minutes(minute_start);

CREATE TABLE usage_hours (
    user_id BLOB NOT NULL,
    key_id BLOB NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL,
    status_class TEXT NOT NULL,
    hour_start INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour_start, key_id, agent, route, status_class)
);
CREATE INDEX usage_hours_age ON usage_hours(hour_start);
