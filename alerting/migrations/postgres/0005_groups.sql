-- Grouped warning pages: when each group (the values of `grouping.group_by`)
-- was last paged, and which incidents a grouped outbox row speaks for
-- beside its own (so each hears when it resolves).
CREATE TABLE page_groups (
    key TEXT PRIMARY KEY,
    flushed_at BIGINT NOT NULL
);
CREATE TABLE outbox_members (
    outbox_id BIGINT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    incident_id BIGINT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    PRIMARY KEY (outbox_id, incident_id)
);
CREATE INDEX outbox_members_incident ON outbox_members (incident_id);
