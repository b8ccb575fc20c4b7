CREATE TABLE seats (
    id BIGINT PRIMARY KEY,
    hold_user_id BIGINT,
    hold_expires_at BIGINT,
    sold_reservation_id TEXT
);
INSERT INTO seats (id) SELECT g FROM generate_series(1, 1000000) g;
VACUUM ANALYZE seats;
