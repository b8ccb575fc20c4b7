-- Idempotency keys are kept for IDEMPOTENCY_KEY_TTL_SECS (24 h by default);
-- the retention job finds the old ones through this index.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
