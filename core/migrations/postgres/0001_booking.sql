-- Times are milliseconds since the Unix epoch (BIGINT) in both backends, so
-- the two schemas and every query stay alike.

CREATE TABLE users (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT   NOT NULL,
    -- The balance can never go negative, whatever the application does.
    balance     BIGINT NOT NULL DEFAULT 0 CONSTRAINT balance_not_negative CHECK (balance >= 0),
    created_at  BIGINT NOT NULL
);

CREATE TABLE concerts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE performances (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    concert_id  BIGINT NOT NULL REFERENCES concerts (id),
    starts_at   BIGINT NOT NULL
);
CREATE INDEX performances_by_concert ON performances (concert_id, starts_at);

-- The seat row is the claim: one holder column and one sale column, written
-- by a single conditional UPDATE. Two holders cannot fit in one row.
CREATE TABLE seats (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    performance_id      BIGINT NOT NULL REFERENCES performances (id),
    seat_no             TEXT   NOT NULL,
    grade               TEXT   NOT NULL,
    price               BIGINT NOT NULL CHECK (price >= 0),
    hold_reservation_id TEXT,
    hold_user_id        BIGINT,
    hold_expires_at     BIGINT,
    sold_reservation_id TEXT,
    CONSTRAINT seat_no_unique UNIQUE (performance_id, seat_no),
    CONSTRAINT hold_is_whole CHECK ((hold_reservation_id IS NULL) = (hold_expires_at IS NULL)),
    CONSTRAINT sold_is_not_held CHECK (sold_reservation_id IS NULL OR hold_reservation_id IS NULL)
);

CREATE TABLE reservations (
    id              TEXT   PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    seat_id         BIGINT NOT NULL REFERENCES seats (id),
    performance_id  BIGINT NOT NULL,
    price           BIGINT NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('HELD', 'RELEASED', 'EXPIRED', 'PAID')),
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    paid_at         BIGINT
);
-- At most one HELD and at most one PAID reservation per seat, ever: a second
-- live hold or a second sale of one seat cannot be written at all.
CREATE UNIQUE INDEX seat_hold_unique ON reservations (seat_id) WHERE status = 'HELD';
CREATE UNIQUE INDEX seat_sale_unique ON reservations (seat_id) WHERE status = 'PAID';
CREATE INDEX reservations_live_by_user ON reservations (user_id, performance_id) WHERE status = 'HELD';
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'HELD';

CREATE TABLE payments (
    id              TEXT   PRIMARY KEY,
    reservation_id  TEXT   NOT NULL UNIQUE REFERENCES reservations (id),
    user_id         BIGINT NOT NULL REFERENCES users (id),
    amount          BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

-- Every change of a balance, signed: charges positive, payments negative.
CREATE TABLE ledger (
    id          TEXT   PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    kind        TEXT   NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT')),
    amount      BIGINT NOT NULL,
    reference   TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX ledger_by_user ON ledger (user_id);

-- The first result of each idempotent request; a replay returns it.
CREATE TABLE idempotency_keys (
    user_id       BIGINT NOT NULL,
    scope         TEXT   NOT NULL,
    key           TEXT   NOT NULL,
    request_hash  TEXT   NOT NULL,
    response      TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, scope, key)
);
