-- The reference seat claim: the same single conditional UPDATE the service
-- runs, on a 1M-seat table, with no application in between.
\set sid random(1, 1000000)
\set uid random(1, 20000)
UPDATE seats SET hold_user_id = :uid, hold_expires_at = 9999999999999
 WHERE id = :sid AND sold_reservation_id IS NULL AND (hold_expires_at IS NULL OR hold_expires_at <= 0);
