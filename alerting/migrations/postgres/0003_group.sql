-- One evaluator for a group of processes on one database: the row holds the
-- lease (who evaluates, until when, under which fencing epoch) and the alert
-- state machine's last snapshot, so a new evaluator carries pending `for`
-- timers on instead of restarting them. Times are Unix milliseconds of the
-- database's clock.
CREATE TABLE evaluator (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT,
    saved_at BIGINT
);
-- Who is sending a page (a token per claim); a claimed row's
-- next_attempt_at is its claim's deadline, after which another sender may
-- take it.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
