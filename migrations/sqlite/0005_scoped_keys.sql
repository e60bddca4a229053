-- Scoped keys (SQLite): a key can be read-only, bound to one agent, expire, and have its own
-- requests-per-minute below the account's. NULL / 0 = unrestricted (every key before this).
ALTER TABLE api_keys ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN agent TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER;
