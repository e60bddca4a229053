-- Self-learning, per tenant (the original's PatternCollector / WeightOptimizer tables, keyed by
-- tenant): the recalls `POST /api/v1/optimize` learns from, each tenant's current score weights,
-- and the weight history `POST /api/v1/rollback-weights` steps back through.
CREATE TABLE recall_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    query      TEXT NOT NULL,
    result_ids TEXT NOT NULL,             -- JSON list of memory ids the recall returned
    timestamp  REAL NOT NULL
);
-- The engine keeps each tenant's newest 1,000 (all that optimize reads) and prunes the rest.
CREATE INDEX recall_logs_tenant ON recall_logs (user_id, agent_id, id);

-- One row per tenant that has called optimize: its weights (JSON), restored at start.
CREATE TABLE tenant_weights (
    user_id  TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    weights  TEXT NOT NULL,
    PRIMARY KEY (user_id, agent_id)
);

CREATE TABLE weight_history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    weights   TEXT NOT NULL,                -- JSON
    timestamp REAL NOT NULL,
    reason    TEXT NOT NULL DEFAULT ''      -- pre_optimize, optimize or rollback
);
CREATE INDEX weight_history_tenant ON weight_history (user_id, agent_id, id);
