-- Billing additions (PostgreSQL).
-- billing_key_hash: SHA-256 hex of the Toss billing key, so a BILLING_DELETED webhook (which names
-- the key in clear) finds its account without decrypting every row; the key itself stays encrypted.
-- charge_attempts / next_charge_at: the retry schedule of a declined Toss renewal.
ALTER TABLE users ADD COLUMN IF NOT EXISTS billing_key_hash VARCHAR(64);
ALTER TABLE users ADD COLUMN IF NOT EXISTS charge_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN IF NOT EXISTS next_charge_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS users_provider_subscription ON users(provider_subscription_id);
CREATE INDEX IF NOT EXISTS users_provider_customer ON users(provider_customer_id);
CREATE INDEX IF NOT EXISTS users_billing_key_hash ON users(billing_key_hash);
CREATE INDEX IF NOT EXISTS toss_charges_status ON toss_charges(status);
