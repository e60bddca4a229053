-- The engine's own database (not the account DB): one row per memory, every tenant in one table.
-- The engine loads all rows at start-up and keeps its working copy and full-text index in RAM,
-- so the only access paths are by primary key; no secondary indexes slow the writes down.
-- Timestamps are Unix seconds (REAL), as in the API.
CREATE TABLE memories (
    id               TEXT    NOT NULL PRIMARY KEY,  -- UUID, hyphenated
    user_id          TEXT    NOT NULL,              -- X-Stellar-User, '' for the default space
    agent_id         TEXT    NOT NULL,              -- X-Stellar-Agent, '' when absent
    content          TEXT    NOT NULL,
    importance       REAL    NOT NULL,
    metadata         TEXT    NOT NULL DEFAULT '{}', -- JSON object as given
    emotion          TEXT,                          -- JSON emotion vector, NULL when neutral
    created_at       REAL    NOT NULL,
    last_recalled_at REAL    NOT NULL,
    recall_count     INTEGER NOT NULL DEFAULT 0,
    context_score    REAL    NOT NULL DEFAULT 0,    -- relevance to the last recalling query
    score            REAL    NOT NULL,              -- score when last computed
    zone             INTEGER NOT NULL               -- 0 core .. 4 cloud
);
