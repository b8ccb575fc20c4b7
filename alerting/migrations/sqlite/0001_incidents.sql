-- Times are Unix milliseconds: one portable type for both backends.
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    alert TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    labels TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    op TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('firing', 'acked', 'resolved')),
    started_at BIGINT NOT NULL,
    acked_at BIGINT,
    acked_by TEXT,
    resolved_at BIGINT,
    plan_started_at BIGINT NOT NULL,
    steps_paged INTEGER NOT NULL DEFAULT 0
);
-- At most one open incident per alert: the dedup key of every page.
CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (fingerprint) WHERE state <> 'resolved';
CREATE INDEX incidents_state ON incidents (state, id);

CREATE TABLE timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    text TEXT NOT NULL,
    data TEXT
);
CREATE INDEX timeline_incident ON timeline (incident_id, id);

-- Every page is written here before it is sent; `dedup_key` makes writing
-- the same page twice (a retried evaluation, a restart) a no-op.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    dedup_key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    recipients TEXT NOT NULL,
    page TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('silence', 'maintenance')),
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL
);
