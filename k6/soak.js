// Soak: a steady RATE iterations per second for DURATION of mixed traffic
// from admitted users, to find leaks, slow drifts and stuck holds.
//
//   BASE_URL=http://127.0.0.1:8080 RATE=200 DURATION=10m k6 run k6/soak.js
//
// Each VU plays one user of its own (created on the VU's first iteration,
// or line n of TOKENS_FILE), and keeps that user's queue place across
// iterations. Each iteration sends one or two requests:
//   - no place yet, or the place EXPIRED: join the queue;
//   - WAITING, or ACTIVE but close to the end of its window: poll the status;
//   - ACTIVE: 30% poll the status, 25% list the seats, 30% hold a seat and
//     release it at once (so seats never run out), 15% read the balance
//     (weights from MIX="30,25,30,15").
// A place that reaches the end of its window (ACTIVE_WINDOW_SECS on the
// server) is renewed by joining again, so soaks longer than the window work.

import { check } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import {
  concertFromEnvOrCreate,
  createUser,
  envDuration,
  envFloat,
  envInt,
  errorCode,
  getBalance,
  joinQueue,
  json,
  listSeats,
  loadTokensFile,
  queueStatus,
  release,
  reserve,
  summarize,
  summaryTrendStats,
} from './lib.js';

const TOKENS = loadTokensFile();
const RATE = envInt('RATE', 200);
const DURATION = envDuration('DURATION', '10m');
const PRE_VUS = envInt('PRE_VUS', 50);
const MAX_VUS = envInt('MAX_VUS', Math.max(PRE_VUS, 500));
const SEATS = envInt('SEATS', 1000);
const EXPIRY_MARGIN_MS = envFloat('EXPIRY_MARGIN_SECONDS', 5) * 1000;

// Weights of the actions of an ACTIVE user: poll, seats, hold+release, balance.
const MIX = (__ENV.MIX || '30,25,30,15').split(',').map((w) => parseFloat(w));
if (MIX.length !== 4 || MIX.some((w) => Number.isNaN(w) || w < 0) || MIX.reduce((a, b) => a + b, 0) <= 0) {
  throw new Error(`MIX must be four non-negative weights "poll,seats,hold,balance", got ${__ENV.MIX}`);
}
const CUMULATIVE = MIX.map((w, i) => MIX.slice(0, i + 1).reduce((a, b) => a + b, 0) / MIX.reduce((a, b) => a + b, 0));

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    http_req_duration: ['p(95)<500'],
    'http_req_duration{admitted:yes}': ['p(95)<500'],
    http_req_failed: ['rate<0.01'],
    unexpected_errors: ['rate<0.01'],
  },
  summaryTrendStats,
};

const holds = new Counter('soak_holds');
const releases = new Counter('soak_releases');
const seatConflicts = new Counter('seat_conflicts');
const rejoins = new Counter('queue_rejoins');

export function setup() {
  const { concertId, performanceId } = concertFromEnvOrCreate(SEATS, 1);
  console.log(`soak: concert ${concertId}, performance ${performanceId}, ${RATE}/s for ${DURATION}`);
  return { concertId, performanceId };
}

// This VU's user: {token, qt, status, activeUntil, seats}.
let me = null;

function myUser() {
  if (me) return me;
  let token;
  if (TOKENS) {
    token = TOKENS[(exec.vu.idInTest - 1) % TOKENS.length].token;
  } else {
    const u = createUser(`k6-soak-${exec.vu.idInTest}`);
    if (!u) return null;
    token = u.token;
  }
  me = { token, qt: null, status: 'NONE', activeUntil: 0, seats: null };
  return me;
}

function remember(u, body) {
  if (!body) return;
  u.status = body.status;
  u.activeUntil = body.active_until ? Date.parse(body.active_until) : 0;
  if (body.queue_token) u.qt = body.queue_token;
}

function join(u, data) {
  const res = joinQueue(u.token, data.concertId);
  if (check(res, { 'joined the queue': (r) => r.status === 201 || r.status === 200 })) {
    if (u.qt !== null) rejoins.add(1);
    remember(u, json(res));
  }
}

function poll(u) {
  const res = queueStatus(u.qt);
  if (check(res, { 'queue status 200': (r) => r.status === 200 })) remember(u, json(res));
}

function seats(u, data) {
  const res = listSeats(u.token, u.qt, data.performanceId);
  if (check(res, { 'seats listed': (r) => r.status === 200 })) {
    u.seats = json(res)
      .seats.filter((s) => s.status === 'AVAILABLE')
      .map((s) => s.seat_id);
  } else if (res.status === 403) {
    u.status = 'UNKNOWN'; // ask the queue next time
  }
}

function holdAndRelease(u, data) {
  if (!u.seats || u.seats.length === 0) {
    seats(u, data);
    return;
  }
  const seatId = u.seats[Math.floor(Math.random() * u.seats.length)];
  const res = reserve(u.token, u.qt, seatId);
  if (res.status === 201) {
    holds.add(1);
    const freed = release(u.token, json(res).reservation_id);
    if (check(freed, { 'hold released': (r) => r.status === 200 && json(r).status === 'RELEASED' })) releases.add(1);
  } else if (res.status === 409) {
    seatConflicts.add(1, { code: errorCode(res) || 'unknown' });
  } else if (res.status === 403) {
    u.status = 'UNKNOWN';
  }
}

function balance(u) {
  const res = getBalance(u.token);
  check(res, { 'balance read': (r) => r.status === 200 && typeof json(r).balance === 'number' });
}

export default function (data) {
  const u = myUser();
  if (!u) return;
  if (u.qt === null || u.status === 'EXPIRED') {
    join(u, data);
    return;
  }
  if (u.status !== 'ACTIVE' || Date.now() > u.activeUntil - EXPIRY_MARGIN_MS) {
    poll(u);
    return;
  }
  const r = Math.random();
  if (r < CUMULATIVE[0]) poll(u);
  else if (r < CUMULATIVE[1]) seats(u, data);
  else if (r < CUMULATIVE[2]) holdAndRelease(u, data);
  else balance(u);
}

export function handleSummary(data) {
  return summarize('soak', data);
}
