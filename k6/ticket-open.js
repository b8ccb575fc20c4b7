// Ticket opening: USERS users arrive in a burst for one concert, wait in the
// queue until admitted, pick a seat (most of them the same few hot seats),
// hold it, charge their balance and pay.
//
//   BASE_URL=http://127.0.0.1:8080 USERS=2000 SEATS=1000 k6 run k6/ticket-open.js
//
// Arrival model: one VU per user, each running one iteration; every user
// sleeps a uniformly random delay in [0, ARRIVAL_SECONDS) before joining,
// so USERS / ARRIVAL_SECONDS users per second hit the queue at once: the
// burst of a sale opening. A VU then lives as long as its user waits.

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import {
  charge,
  concertFromEnvOrCreate,
  createUsers,
  envFloat,
  envInt,
  errorCode,
  joinQueue,
  json,
  listSeats,
  loadTokensFile,
  pay,
  reserve,
  summarize,
  summaryTrendStats,
  waitUntilActive,
} from './lib.js';

const TOKENS = loadTokensFile();
const USERS = envInt('USERS', TOKENS ? TOKENS.length : 2000);
const ARRIVAL_SECONDS = envFloat('ARRIVAL_SECONDS', 10);
const POLL_SECONDS = envFloat('POLL_SECONDS', 1);
const MAX_WAIT_SECONDS = envFloat('MAX_WAIT_SECONDS', 300);
const SEATS = envInt('SEATS', 1000);
const HOT_SHARE = envFloat('HOT_SHARE', 0.8);
const HOT_SEAT_SHARE = envFloat('HOT_SEAT_SHARE', 0.2);
const RESERVE_ATTEMPTS = envInt('RESERVE_ATTEMPTS', 3);
const SETUP_BATCH = envInt('SETUP_BATCH', 50);

export const options = {
  scenarios: {
    ticket_open: {
      executor: 'per-vu-iterations',
      vus: USERS,
      iterations: 1,
      maxDuration: `${Math.ceil(ARRIVAL_SECONDS + MAX_WAIT_SECONDS + 120)}s`,
      gracefulStop: '30s',
    },
  },
  setupTimeout: __ENV.SETUP_TIMEOUT || '10m',
  thresholds: {
    'http_req_duration{admitted:yes}': ['p(95)<500'],
    unexpected_errors: ['rate<0.01'],
  },
  summaryTrendStats,
};

const queueWait = new Trend('queue_wait', true);
const queuePositionAtJoin = new Trend('queue_position_at_join');
const gaveUp = new Counter('gave_up');
const queueExpired = new Counter('queue_expired');
const admitted = new Counter('admitted_users');
const seatsHeld = new Counter('seats_held');
const seatsPaid = new Counter('seats_paid');
const seatConflicts = new Counter('seat_conflicts');
const noSeat = new Counter('no_seat');
const soldOut = new Counter('sold_out_seen');
const timeToPaid = new Trend('time_to_paid', true);

export function setup() {
  const { concertId, performanceId } = concertFromEnvOrCreate(SEATS, 1);
  // Only tokens travel to the VUs: setup data is copied into every VU.
  let tokens = [];
  if (!TOKENS) {
    tokens = createUsers(USERS, SETUP_BATCH, 'k6-ticket-open').map((u) => u.token);
    if (tokens.length < USERS) throw new Error(`created only ${tokens.length} of ${USERS} users`);
  } else if (TOKENS.length < USERS) {
    console.warn(`TOKENS_FILE has ${TOKENS.length} users for USERS=${USERS}: some users will queue twice`);
  }
  console.log(`ticket-open: concert ${concertId}, performance ${performanceId}, ${USERS} users`);
  return { concertId, performanceId, tokens };
}

function userToken(data) {
  const i = exec.vu.idInTest - 1;
  if (TOKENS) return TOKENS[i % TOKENS.length].token;
  return data.tokens[i % data.tokens.length];
}

/** A seat to try: a hot one with probability HOT_SHARE, else any; only seats shown AVAILABLE and not yet tried. */
function pickSeat(sorted, hotCount, tried) {
  const open = (s) => s.status === 'AVAILABLE' && !tried[s.seat_id];
  const hot = sorted.slice(0, hotCount).filter(open);
  const any = sorted.filter(open);
  const pool = Math.random() < HOT_SHARE && hot.length > 0 ? hot : any;
  if (pool.length === 0) return null;
  return pool[Math.floor(Math.random() * pool.length)];
}

export default function (data) {
  const token = userToken(data);
  sleep(Math.random() * ARRIVAL_SECONDS);

  const joined = joinQueue(token, data.concertId);
  if (!check(joined, { 'joined the queue': (r) => r.status === 201 || r.status === 200 })) return;
  const place = json(joined);
  const arrived = Date.now();
  queuePositionAtJoin.add(place.position);

  let status = place.status;
  if (status !== 'ACTIVE') {
    const waited = waitUntilActive(place.queue_token, MAX_WAIT_SECONDS, POLL_SECONDS);
    status = waited.status;
    if (status === 'TIMEOUT') {
      gaveUp.add(1);
      return;
    }
    if (status === 'EXPIRED') {
      queueExpired.add(1);
      return;
    }
    if (status !== 'ACTIVE') return; // ERROR: already counted as unexpected
  }
  queueWait.add(Date.now() - arrived);
  admitted.add(1);

  const seatsRes = listSeats(token, place.queue_token, data.performanceId);
  if (!check(seatsRes, { 'seats listed': (r) => r.status === 200 })) return;
  const sorted = json(seatsRes).seats.slice().sort((a, b) => a.seat_id - b.seat_id);
  const hotCount = Math.max(1, Math.ceil(sorted.length * HOT_SEAT_SHARE));

  const tried = {};
  let hold = null;
  for (let attempt = 0; attempt < RESERVE_ATTEMPTS && hold === null; attempt += 1) {
    const seat = pickSeat(sorted, hotCount, tried);
    if (seat === null) {
      soldOut.add(1); // no AVAILABLE seat left in this user's listing
      break;
    }
    tried[seat.seat_id] = true;
    const res = reserve(token, place.queue_token, seat.seat_id);
    if (res.status === 201) {
      hold = json(res);
    } else if (res.status === 409) {
      seatConflicts.add(1, { code: errorCode(res) || 'unknown' });
    } else {
      break; // unexpected, already counted
    }
  }
  if (hold === null) {
    noSeat.add(1);
    return;
  }
  seatsHeld.add(1);

  const charged = charge(token, hold.price);
  if (!check(charged, { 'balance charged': (r) => r.status === 201 })) return;
  const paid = pay(token, place.queue_token, hold.reservation_id);
  if (check(paid, { 'seat paid': (r) => r.status === 201 && json(r).status === 'PAID' })) {
    seatsPaid.add(1);
    timeToPaid.add(Date.now() - arrived);
  }
}

export function handleSummary(data) {
  return summarize('ticket-open', data);
}
