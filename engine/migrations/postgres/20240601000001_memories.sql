-- The engine's own tables. They live in the schema `stellar_engine` (the engine sets its
-- search_path), so the engine can share a PostgreSQL database with the account DB without the
-- two migration histories (_sqlx_migrations) colliding.
-- The engine loads all rows at start-up and keeps its working copy and full-text index in RAM,
-- so the only access paths are by primary key. Timestamps are Unix seconds, as in the API.
CREATE TABLE memories (
    id               TEXT             NOT NULL PRIMARY KEY, -- UUID, hyphenated
    user_id          TEXT             NOT NULL,             -- X-Stellar-User, '' = default space
    agent_id         TEXT             NOT NULL,             -- X-Stellar-Agent, '' when absent
    content          TEXT             NOT NULL,
    importance       DOUBLE PRECISION NOT NULL,
    metadata         TEXT             NOT NULL DEFAULT '{}',
    emotion          TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    last_recalled_at DOUBLE PRECISION NOT NULL,
    recall_count     BIGINT           NOT NULL DEFAULT 0,
    context_score    DOUBLE PRECISION NOT NULL DEFAULT 0,
    score            DOUBLE PRECISION NOT NULL,
    zone             INTEGER          NOT NULL
);
