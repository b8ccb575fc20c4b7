// The seed's sale at full scale (seed 004, issue 15): 20,000 users arrive
// within 10 s for one concert of 20 dates × 1,000 seats, wait in the queue
// (500 admitted every 15 s), and the admitted ones pick a date, list its
// seats, hold one (80% of them aiming at the hot 20% of seats), charge
// their balance and pay.
//
//   booking seed --concerts 1 --performances 20 --seats 1000 --users 20000 --tokens-out tokens.csv
//   k6 run -e BASE_URL=http://127.0.0.1:7100 -e TOKENS_FILE=tokens.csv -e CONCERT_ID=1 k6/sale-20k.js
//   scripts/bench-sale.sh       # the same against scripts/cluster.sh, with CPU and Redis figures
//
// Unlike ticket-open.js (one VU per user, about 1 MB and a connection
// each), a VU here drives many users at once: each user is an async
// function whose requests go out with http.asyncRequest and whose pauses
// are k6/timers, so USERS / VUS users share one VU's event loop. 20,000
// users take 20 VUs (VUS: one per 1,000 users, at least 2). Each waiting
// user holds a k6/timers timer, and a VU's timer queue is a sorted list:
// at 1,000 users a VU spends about 4% of k6's CPU inserting into it, but
// 40 VUs of 500 were no faster (BENCHMARKS.md, the 13:51Z sale).
//
// Waiting users poll when the answer says (`poll_after_seconds`, a fifth of
// the wait estimate, 1 to 30 s), never sooner. A 502/503/504, a 408, a 429
// or a network error is retried (up to RETRIES times, after Retry-After or a
// second); charges and payments keep their Idempotency-Key across retries,
// so a retry can never pay twice.
//
// Every VU also counts its responses per endpoint, status and second and
// logs them every STATS_FLUSH_SECONDS as `SALE_STATS {json}` lines
// (run k6 with --console-output=FILE --log-format=raw to keep them in a
// file); scripts/lib/sale_report.py turns them into peak and steady rates.

import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import { clearInterval, setInterval } from 'k6/timers';
import {
  chargeAsync,
  concertFromEnvOrCreate,
  createUsers,
  envFloat,
  envInt,
  errorCode,
  joinQueueAsync,
  json,
  listPerformances,
  listPerformancesAsync,
  listSeatsAsync,
  loadTokensFile,
  observeResponses,
  payAsync,
  queueStatusAsync,
  reserveAsync,
  sleepAsync,
  summarize,
  summaryTrendStats,
} from './lib.js';

const TOKENS = loadTokensFile();
const USERS = envInt('USERS', TOKENS ? TOKENS.length : 2000);
const VUS = Math.max(1, Math.min(USERS, envInt('VUS', Math.max(2, Math.ceil(USERS / 1000)))));
const ARRIVAL_SECONDS = envFloat('ARRIVAL_SECONDS', 10);
// The server's admission settings, only to size the default wait.
const ADMISSION_BATCH = envInt('ADMISSION_BATCH', 500);
const ADMISSION_INTERVAL_SECS = envFloat('ADMISSION_INTERVAL_SECS', 15);
const MAX_WAIT_SECONDS = envFloat(
  'MAX_WAIT_SECONDS',
  Math.ceil(USERS / ADMISSION_BATCH + 1) * ADMISSION_INTERVAL_SECS + ARRIVAL_SECONDS + 60,
);
const POLL_SECONDS = envFloat('POLL_SECONDS', 1); // when an answer has no poll_after_seconds
const SEATS = envInt('SEATS', 1000);
const PERFORMANCES = envInt('PERFORMANCES', 20);
const HOT_SHARE = envFloat('HOT_SHARE', 0.8);
const HOT_SEAT_SHARE = envFloat('HOT_SEAT_SHARE', 0.2);
const RESERVE_ATTEMPTS = envInt('RESERVE_ATTEMPTS', 3);
const DATE_ATTEMPTS = envInt('DATE_ATTEMPTS', 3); // dates a user looks at when one shows nothing left
const RETRIES = envInt('RETRIES', 5);
const MAX_POLL_ERRORS = envInt('MAX_POLL_ERRORS', 30);
const SETUP_BATCH = envInt('SETUP_BATCH', 50);
const STATS_FLUSH_SECONDS = envFloat('STATS_FLUSH_SECONDS', 10);

// The endpoints, for per-endpoint figures in the summary.
const ENDPOINTS = [
  'POST /v1/queue/tokens',
  'GET /v1/queue/tokens/current',
  'GET /v1/concerts/{id}/performances',
  'GET /v1/performances/{id}/seats',
  'POST /v1/reservations',
  'POST /v1/users/me/balance/charges',
  'POST /v1/payments',
];

const thresholds = {
  'http_req_duration{admitted:yes}': ['p(95)<500'],
  http_5xx: ['count==0'],
  unexpected_errors: ['rate<0.01'],
};
// Always-true thresholds: they only make k6 keep these sub-metrics in the
// summary, for the per-endpoint P95. Every sub-metric is one more tag test
// and sink per sample of its metric: the per-endpoint counts come from the
// SALE_STATS lines instead of `http_reqs{name:...}`.
for (const name of ENDPOINTS) {
  thresholds[`http_req_duration{name:${name}}`] = ['max>=0'];
}

export const options = {
  scenarios: {
    sale: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil(ARRIVAL_SECONDS + MAX_WAIT_SECONDS + 180)}s`,
      gracefulStop: '30s',
    },
  },
  setupTimeout: __ENV.SETUP_TIMEOUT || '10m',
  // k6 sizes each VU's idle connection pool by these (Go's MaxIdleConns and
  // MaxIdleConnsPerHost; defaults 20 and 6). A VU here has hundreds of
  // requests in flight at an admission tick: with 6 idle slots most
  // connections were closed after one request and a new one dialled for the
  // next (286,000 connections for 460,000 requests in the first full run).
  batch: envInt('MAX_IDLE_CONNS', 2000),
  batchPerHost: envInt('MAX_IDLE_CONNS', 2000),
  // No `url` tag (every performance's seat URL would be a series of its own)
  // and none of the tags nothing here reads: less work per sample.
  systemTags: ['status', 'method', 'name', 'scenario', 'expected_response', 'error_code', 'check'],
  thresholds,
  summaryTrendStats,
};

const http5xx = new Counter('http_5xx');
const retries = new Counter('retries');
const queueWait = new Trend('queue_wait', true);
const queuePositionAtJoin = new Trend('queue_position_at_join');
const pollsPerUser = new Trend('polls_per_user');
const joinFailed = new Counter('join_failed');
const gaveUp = new Counter('gave_up');
const queueExpired = new Counter('queue_expired');
const admitted = new Counter('admitted_users');
const seatsHeld = new Counter('seats_held');
const seatsPaid = new Counter('seats_paid');
const paymentsUnknown = new Counter('payments_unknown');
const seatConflicts = new Counter('seat_conflicts');
const noSeat = new Counter('no_seat');
const soldOut = new Counter('sold_out_seen');
const abandoned = new Counter('abandoned_after_errors');
const timeToPaid = new Trend('time_to_paid', true);

// ------------------------------------------------ per-second tallies

// `${name}|${status}` -> {second: count}, since the last flush; admittedTally:
// second -> [admitted requests, of them >= 500 ms, summed ms].
let tally = {};
let admittedTally = {};
let scenarioStart = 0;

observeResponses((res, tags) => {
  if (!scenarioStart) return; // setup: not part of the sale
  const key = `${tags.name}|${res.status}`;
  const sec = Math.floor((Date.now() - scenarioStart) / 1000);
  const row = tally[key] || (tally[key] = {});
  row[sec] = (row[sec] || 0) + 1;
  if (tags.admitted === 'yes') {
    // Per second: admitted requests, those over 500 ms, and their summed duration (ms).
    const a = admittedTally[sec] || (admittedTally[sec] = [0, 0, 0]);
    const ms = res.timings.duration;
    a[0] += 1;
    if (ms >= 500) a[1] += 1;
    a[2] += Math.round(ms);
  }
  if (res.status >= 500) http5xx.add(1, { status: String(res.status), name: tags.name });
});

function flushTally() {
  if (Object.keys(tally).length === 0) return;
  console.log(`SALE_STATS ${JSON.stringify({ vu: exec.vu.idInTest, t0: scenarioStart, tally, admitted: admittedTally })}`);
  tally = {};
  admittedTally = {};
}

// ---------------------------------------------------------------- setup

export function setup() {
  const { concertId } = concertFromEnvOrCreate(SEATS, PERFORMANCES);
  const perfs = listPerformances(concertId);
  if (!perfs || perfs.length === 0) throw new Error(`concert ${concertId} has no performances`);
  let tokens = [];
  if (!TOKENS) {
    tokens = createUsers(USERS, SETUP_BATCH, 'k6-sale').map((u) => u.token);
    if (tokens.length < USERS) throw new Error(`created only ${tokens.length} of ${USERS} users`);
  } else if (TOKENS.length < USERS) {
    console.warn(`TOKENS_FILE has ${TOKENS.length} users for USERS=${USERS}: some users will queue twice`);
  }
  console.log(
    `sale-20k: concert ${concertId}, ${perfs.length} performances, ${USERS} users on ${VUS} VUs, ` +
      `arrival ${ARRIVAL_SECONDS} s, max wait ${MAX_WAIT_SECONDS} s`,
  );
  return { concertId, performanceIds: perfs.map((p) => p.performance_id), tokens };
}

// ---------------------------------------------------------------- a user

function retryable(res) {
  // 408: HAProxy closed a connection that sent no request within its timeout.
  return res.status === 0 || res.status === 408 || res.status === 429 || res.status === 502 || res.status === 503 || res.status === 504;
}

function retryDelay(res) {
  const after = parseFloat((res.headers && res.headers['Retry-After']) || '');
  const base = Number.isNaN(after) ? 1 : Math.min(Math.max(after, 0.2), 30);
  return base * (1 + 0.2 * Math.random());
}

/** `call()` again while it answers something retryable, up to RETRIES more times. */
async function retrying(call, name) {
  let res = await call();
  for (let i = 0; i < RETRIES && retryable(res); i += 1) {
    retries.add(1, { name });
    await sleepAsync(retryDelay(res));
    res = await call();
  }
  return res;
}

/**
 * A seat to try: a hot one (seat_id <= hotMax) with probability HOT_SHARE,
 * else any; only seats shown AVAILABLE and not yet tried.
 */
function pickSeat(available, hotMax, tried) {
  const open = available.filter((id) => !tried[id]);
  const hot = open.filter((id) => id <= hotMax);
  const pool = Math.random() < HOT_SHARE && hot.length > 0 ? hot : open;
  if (pool.length === 0) return null;
  return pool[Math.floor(Math.random() * pool.length)];
}

/**
 * The seats shown AVAILABLE and the last hot seat's id (the listing is in
 * seat_id order; the hot seats are its first HOT_SEAT_SHARE). gjson
 * selectors (`res.json(path)`) run in Go: about 1 ms for 1,000 seats where
 * JSON.parse in the VU takes about 9 ms, which at an admission tick of 500
 * users would stall the VU's event loop for seconds. One filtered pass, a
 * count and one indexed lookup: no array of every seat id is built.
 */
function seatChoices(res) {
  const available = res.json('seats.#(status=="AVAILABLE")#.seat_id') || [];
  const total = res.json('seats.#') || 0;
  const hotMax = total ? res.json(`seats.${Math.max(1, Math.ceil(total * HOT_SEAT_SHARE)) - 1}.seat_id`) || 0 : 0;
  return { available, hotMax };
}

/** A date with seats left (by the listing), uniformly; any date if the listing failed. */
function pickPerformance(listing, fallback, skip) {
  const withSeats = (listing || [])
    .filter((p) => p.available_seats === undefined || p.available_seats > 0)
    .map((p) => p.performance_id)
    .filter((id) => !skip[id]);
  const pool = withSeats.length > 0 ? withSeats : fallback.filter((id) => !skip[id]);
  if (pool.length === 0) return null;
  return pool[Math.floor(Math.random() * pool.length)];
}

async function waitForAdmission(place) {
  const started = Date.now();
  const deadline = started + MAX_WAIT_SECONDS * 1000;
  let status = place.status;
  let pollAfter = place.poll_after_seconds;
  let polls = 0;
  let errors = 0;
  while (status === 'WAITING') {
    const pause = (pollAfter > 0 ? pollAfter : POLL_SECONDS) * (1 + 0.1 * Math.random());
    if (Date.now() + pause * 1000 > deadline) {
      pollsPerUser.add(polls);
      return 'TIMEOUT';
    }
    await sleepAsync(pause);
    const res = await queueStatusAsync(place.queue_token);
    polls += 1;
    const body = res.status === 200 ? json(res) : null;
    if (body && body.status) {
      status = body.status;
      pollAfter = body.poll_after_seconds;
    } else if (retryable(res) && errors < MAX_POLL_ERRORS) {
      errors += 1;
      pollAfter = retryDelay(res);
    } else {
      pollsPerUser.add(polls);
      return 'ERROR';
    }
  }
  pollsPerUser.add(polls);
  return status;
}

async function user(token, data) {
  await sleepAsync(Math.random() * ARRIVAL_SECONDS);

  const joined = await retrying(() => joinQueueAsync(token, data.concertId), 'POST /v1/queue/tokens');
  if (!check(joined, { 'joined the queue': (r) => r.status === 201 || r.status === 200 })) {
    joinFailed.add(1);
    return;
  }
  const place = json(joined);
  const arrived = Date.now();
  queuePositionAtJoin.add(place.position);

  const status = await waitForAdmission(place);
  if (status === 'TIMEOUT') {
    gaveUp.add(1);
    return;
  }
  if (status === 'EXPIRED') {
    queueExpired.add(1);
    return;
  }
  if (status !== 'ACTIVE') {
    abandoned.add(1, { step: 'queue' });
    return;
  }
  queueWait.add(Date.now() - arrived);
  admitted.add(1);

  // The dates, then a date's seat map.
  const perfsRes = await retrying(
    () => listPerformancesAsync(data.concertId, { admitted: 'yes' }),
    'GET /v1/concerts/{id}/performances',
  );
  const listing = perfsRes.status === 200 ? json(perfsRes).performances : null;

  const triedPerf = {};
  const tried = {};
  let hold = null;
  let attempts = 0;
  let dates = 0;
  let conflicted = false;
  while (hold === null && attempts < RESERVE_ATTEMPTS && dates < DATE_ATTEMPTS) {
    dates += 1;
    const performanceId = pickPerformance(listing, data.performanceIds, triedPerf);
    if (performanceId === null) break;
    const seatsRes = await retrying(
      () => listSeatsAsync(token, place.queue_token, performanceId),
      'GET /v1/performances/{id}/seats',
    );
    if (!check(seatsRes, { 'seats listed': (r) => r.status === 200 })) {
      abandoned.add(1, { step: 'seats' });
      return;
    }
    const { available, hotMax } = seatChoices(seatsRes);
    let relist = false;
    while (hold === null && attempts < RESERVE_ATTEMPTS && !relist) {
      const seatId = pickSeat(available, hotMax, tried);
      if (seatId === null) {
        soldOut.add(1); // nothing AVAILABLE left in this date's listing: try another date
        triedPerf[performanceId] = true;
        relist = true;
        break;
      }
      tried[seatId] = true;
      attempts += 1;
      const res = await retrying(() => reserveAsync(token, place.queue_token, seatId), 'POST /v1/reservations');
      if (res.status === 201) {
        hold = json(res);
      } else if (res.status === 409) {
        conflicted = true;
        seatConflicts.add(1, { code: errorCode(res) || 'unknown' });
        if (errorCode(res) === 'HOLD_LIMIT_REACHED') attempts = RESERVE_ATTEMPTS;
      } else {
        abandoned.add(1, { step: 'reserve' });
        return; // unexpected, already counted
      }
    }
  }
  if (hold === null) {
    noSeat.add(1, { conflicted: conflicted ? 'yes' : 'no' });
    return;
  }
  seatsHeld.add(1);

  // One key per charge and per payment, kept across retries.
  const chargeKey = `sale-charge-${hold.reservation_id}-${Math.random().toString(36).slice(2, 10)}`;
  const charged = await retrying(() => chargeAsync(token, hold.price, chargeKey), 'POST /v1/users/me/balance/charges');
  if (!check(charged, { 'balance charged': (r) => r.status === 201 || r.status === 200 })) {
    abandoned.add(1, { step: 'charge' });
    return;
  }
  const payKey = `sale-pay-${hold.reservation_id}-${Math.random().toString(36).slice(2, 10)}`;
  const paid = await retrying(() => payAsync(token, place.queue_token, hold.reservation_id, payKey), 'POST /v1/payments');
  const ok = check(paid, { 'seat paid': (r) => (r.status === 201 || r.status === 200) && json(r) && json(r).status === 'PAID' });
  if (ok) {
    seatsPaid.add(1);
    timeToPaid.add(Date.now() - arrived);
  } else if (retryable(paid)) {
    // No answer after every retry: the payment may or may not have happened.
    paymentsUnknown.add(1);
  }
}

// ------------------------------------------------------------------ a VU

export default async function (data) {
  scenarioStart = exec.scenario.startTime;
  http5xx.add(0);
  const vu = exec.vu.idInTest - 1;
  const tokenOf = (i) => (TOKENS ? TOKENS[i % TOKENS.length].token : data.tokens[i % data.tokens.length]);
  const flusher = setInterval(flushTally, STATS_FLUSH_SECONDS * 1000);
  const users = [];
  for (let i = vu; i < USERS; i += VUS) {
    users.push(
      user(tokenOf(i), data).catch((e) => {
        abandoned.add(1, { step: 'exception' });
        console.error(`user ${i}: ${e}`);
      }),
    );
  }
  await Promise.all(users);
  clearInterval(flusher);
  flushTally();
}

export function handleSummary(data) {
  return summarize('sale-20k', data);
}
