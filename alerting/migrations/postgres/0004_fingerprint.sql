-- An inhibited alert is recorded on its inhibitor's newest incident, open
-- or just resolved: found by fingerprint.
CREATE INDEX incidents_fingerprint ON incidents (fingerprint, id);
