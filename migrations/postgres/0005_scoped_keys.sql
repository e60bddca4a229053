-- Scoped keys (PostgreSQL): a key can be read-only, bound to one agent, expire, and have its
-- own requests-per-minute below the account's. NULL / FALSE = unrestricted (every key before this).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS read_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS agent VARCHAR(64);
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS requests_per_minute INTEGER;
