-- The name of the API key behind a change (`api-key`, `read-key` or a keys
-- file entry), beside the `actor` the client typed; NULL for the engine's
-- own events and for an open loopback API without keys.
ALTER TABLE timeline ADD COLUMN key_name TEXT;
ALTER TABLE silences ADD COLUMN key_name TEXT;
-- Retention deletes resolved incidents by age.
CREATE INDEX incidents_resolved_at ON incidents (resolved_at) WHERE state = 'resolved';
-- ...and the outbox rows that go with them (also who hears of a resolution).
CREATE INDEX outbox_incident ON outbox (incident_id);
