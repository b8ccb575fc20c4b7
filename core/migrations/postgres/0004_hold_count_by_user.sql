-- The hold limit's count, made independent of the planner's statistics.
--
-- 0002 counted a user's live holds with `expires_at > p_now` in the WHERE.
-- Both reservations_live_by_user (user, performance) and
-- reservations_held_by_expiry (expires_at) fit that query, and on a
-- reservations table that was still empty when a connection first ran the
-- function the two cost the same; PL/pgSQL then kept whichever it picked
-- for the life of the connection. When it was the expiry index, every claim
-- read every live hold of the sale: in one benchmark run the expiry index
-- was scanned 5,664 times for 51.6 million tuples, the database spent
-- 0.5-0.8 ms of CPU per claim instead of 0.2, and the same code ran at
-- 1,400-2,700 or 4,900-5,500 claims/s from one run to the next. The test
-- a_claim_reads_only_the_claimants_holds_whatever_plan_was_cached_first
-- reproduces it (2,008 tuples read for one claim before this change).
-- Everything else is as in 0002.
CREATE OR REPLACE FUNCTION hold_seat(
    p_reservation_id TEXT, p_user_id BIGINT, p_concert_id BIGINT, p_seat_id BIGINT,
    p_now BIGINT, p_expires_at BIGINT, p_max_holds BIGINT)
RETURNS TABLE (outcome TEXT, performance_id BIGINT, price BIGINT, sold BIGINT, held_until BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_performance BIGINT;
    v_price BIGINT;
    v_previous TEXT;
    v_previous_until BIGINT;
    v_live BIGINT;
BEGIN
    -- A user's claims run one at a time, so the hold limit is exact. An
    -- advisory lock, unlike a row lock, writes nothing to the table.
    PERFORM pg_advisory_xact_lock(p_user_id);
    -- Lapsed holds are filtered after the lookup, not in it: with
    -- `expires_at > p_now` in the WHERE, a plan made while the table was
    -- small could walk reservations_held_by_expiry instead, which reads
    -- every live hold of the sale on every claim. The user's own holds,
    -- found through reservations_live_by_user, are a handful.
    SELECT count(*) FILTER (WHERE r.expires_at > p_now) INTO v_live FROM reservations r
     WHERE r.user_id = p_user_id AND r.status = 'HELD'
       AND r.performance_id = (SELECT s.performance_id FROM seats s WHERE s.id = p_seat_id);
    IF v_live >= p_max_holds THEN
        RETURN QUERY SELECT 'LIMIT'::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    -- A lapsed hold on the seat stops being HELD first (reservation before
    -- seat, like every other writer), which keeps seat_hold_unique free.
    SELECT s.hold_reservation_id, s.hold_expires_at INTO v_previous, v_previous_until FROM seats s WHERE s.id = p_seat_id;
    IF v_previous IS NOT NULL AND v_previous_until <= p_now THEN
        UPDATE reservations SET status = 'EXPIRED' WHERE id = v_previous AND status = 'HELD' AND expires_at <= p_now;
    END IF;
    -- The claim: one conditional write decides the winner.
    UPDATE seats s
       SET hold_reservation_id = p_reservation_id, hold_user_id = p_user_id, hold_expires_at = p_expires_at
     WHERE s.id = p_seat_id AND s.sold_reservation_id IS NULL
       AND (s.hold_expires_at IS NULL OR s.hold_expires_at <= p_now)
       AND s.performance_id IN (SELECT p.id FROM performances p WHERE p.concert_id = p_concert_id)
    RETURNING s.performance_id, s.price INTO v_performance, v_price;
    IF NOT FOUND THEN
        RETURN QUERY
            SELECT CASE WHEN s.id IS NULL THEN 'NO_SEAT' ELSE 'TAKEN' END,
                   NULL::BIGINT, NULL::BIGINT,
                   CASE WHEN s.sold_reservation_id IS NULL THEN 0::BIGINT ELSE 1::BIGINT END,
                   s.hold_expires_at
              FROM (SELECT 1) one
              LEFT JOIN (seats s JOIN performances p ON p.id = s.performance_id AND p.concert_id = p_concert_id)
                ON s.id = p_seat_id;
        RETURN;
    END IF;
    INSERT INTO reservations (id, user_id, seat_id, performance_id, price, status, expires_at, created_at)
    VALUES (p_reservation_id, p_user_id, p_seat_id, v_performance, v_price, 'HELD', p_expires_at, p_now);
    RETURN QUERY SELECT 'HELD'::TEXT, v_performance, v_price, NULL::BIGINT, NULL::BIGINT;
END
$$;
