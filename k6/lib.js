// Shared helpers for the k6 scripts of the booking service.
//
// Only k6 built-ins are used (no remote modules), so the scripts run
// offline. Every request goes through `request()`, which tags it, parses the
// JSON body and feeds the `unexpected_errors` rate.

import http from 'k6/http';
import { sleep } from 'k6';
import { Rate } from 'k6/metrics';
import { SharedArray } from 'k6/data';
import { setTimeout } from 'k6/timers';

// ---------------------------------------------------------------- config

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const ADMIN_KEY = __ENV.ADMIN_KEY || 'dev-admin-key';

/** An integer environment parameter, or `def`. */
export function envInt(name, def) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  const n = parseInt(raw, 10);
  if (Number.isNaN(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** A number environment parameter, or `def`. */
export function envFloat(name, def) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  const n = parseFloat(raw);
  if (Number.isNaN(n)) throw new Error(`${name} must be a number, got ${JSON.stringify(raw)}`);
  return n;
}

/** A k6 duration environment parameter ("20s", "10m"), or `def`. */
export function envDuration(name, def) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  return /^\d+(\.\d+)?$/.test(raw) ? `${raw}s` : raw;
}

export const summaryTrendStats = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];

// --------------------------------------------------------------- metrics

// 2xx and 409 (a lost race for a seat, the hold limit) are not failures of
// the service; everything else counts in http_req_failed.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409));

/** Share of responses that are neither 2xx nor an expected 409. */
export const unexpectedErrors = new Rate('unexpected_errors');

const EXPECTED_CONFLICTS = ['SEAT_UNAVAILABLE', 'HOLD_LIMIT_REACHED'];

/** The tags of requests made by users admitted through the queue (the SLO). */
export const ADMITTED = { admitted: 'yes' };

// ------------------------------------------------------------ requests

/** The `error.code` of an error response, or null. */
export function errorCode(res) {
  const body = json(res);
  return body && body.error && typeof body.error.code === 'string' ? body.error.code : null;
}

const parsedBodies = new WeakMap();

/** The parsed JSON body of `res` (cached), or null. */
export function json(res) {
  if (parsedBodies.has(res)) return parsedBodies.get(res);
  let parsed = null;
  try {
    if (res.body && typeof res.body === 'string') parsed = JSON.parse(res.body);
  } catch (e) {
    parsed = null;
  }
  parsedBodies.set(res, parsed);
  return parsed;
}

/** Whether a response is the service working as intended. */
export function isExpected(res, alsoExpected) {
  if (res.status >= 200 && res.status < 300) return true;
  if (alsoExpected && alsoExpected.indexOf(res.status) >= 0) return true;
  return res.status === 409 && EXPECTED_CONFLICTS.indexOf(errorCode(res)) >= 0;
}

let warnings = 0;
const MAX_WARNINGS = envInt('MAX_WARNINGS', 10);

/**
 * The URL, body and params of one request. `opts`: token (bearer),
 * queueToken, idempotencyKey, admin (bool), tags, name (the URL template for
 * the `name` tag), expect (extra statuses that are not unexpected, for
 * deliberate error cases), timeout.
 */
function prepare(method, path, body, opts) {
  const o = opts || {};
  const headers = { Accept: 'application/json' };
  if (body !== null && body !== undefined) headers['Content-Type'] = 'application/json';
  if (o.token) headers.Authorization = `Bearer ${o.token}`;
  if (o.queueToken) headers['Queue-Token'] = o.queueToken;
  if (o.idempotencyKey) headers['Idempotency-Key'] = o.idempotencyKey;
  if (o.admin) headers['X-Admin-Key'] = ADMIN_KEY;
  const tags = Object.assign({ name: o.name || `${method} ${path}` }, o.tags || {});
  const params = { headers, tags };
  if (o.expect) params.responseCallback = http.expectedStatuses({ min: 200, max: 299 }, 409, ...o.expect);
  if (o.timeout) params.timeout = o.timeout;
  const payload = body === null || body === undefined ? null : JSON.stringify(body);
  return { url: `${BASE_URL}${path}`, payload, params, tags, expect: o.expect };
}

/** One HTTP request (see `prepare` for `opts`), waiting for the answer. */
export function request(method, path, body, opts) {
  const r = prepare(method, path, body, opts);
  const res = http.request(method, r.url, r.payload, r.params);
  track(res, r.tags, r.expect);
  return res;
}

/**
 * The same request with `http.asyncRequest`: a Promise of the response, so
 * one VU can keep many users' requests in flight (see sale-20k.js).
 */
export async function requestAsync(method, path, body, opts) {
  const r = prepare(method, path, body, opts);
  const res = await http.asyncRequest(method, r.url, r.payload, r.params);
  track(res, r.tags, r.expect);
  return res;
}

/** A Promise resolved after `seconds`: `sleep` for async code (k6/timers). */
export function sleepAsync(seconds) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds * 1000)));
}

const observers = [];

/** Calls `fn(res, tags)` for every response `track` sees (per VU). */
export function observeResponses(fn) {
  observers.push(fn);
}

/** Feeds `unexpected_errors` and logs the first few surprises. */
export function track(res, tags, alsoExpected) {
  const ok = isExpected(res, alsoExpected);
  unexpectedErrors.add(!ok, tags);
  for (const fn of observers) fn(res, tags);
  if (!ok && warnings < MAX_WARNINGS) {
    warnings += 1;
    const body = (res.body && typeof res.body === 'string' ? res.body : String(res.error || '')).slice(0, 300);
    console.warn(`unexpected ${res.status} on ${(tags && tags.name) || res.url}: ${body}`);
  }
  return ok;
}

// ------------------------------------------------------- unique keys

let keyCounter = 0;

/** A fresh Idempotency-Key ([A-Za-z0-9_-], at most 128 characters). */
export function idempotencyKey(prefix) {
  keyCounter += 1;
  const rand = Math.random().toString(36).slice(2, 12);
  return `${prefix || 'k6'}-${Date.now().toString(36)}-${rand}-${keyCounter}`.replace(/[^A-Za-z0-9_-]/g, '');
}

// ------------------------------------------------------------- the API

/** POST /v1/users -> {user_id, token} or null. */
export function createUser(name) {
  const res = request('POST', '/v1/users', { name: name || `k6-${idempotencyKey('u')}` }, { name: 'POST /v1/users' });
  return res.status === 201 ? json(res) : null;
}

/**
 * Creates `count` users with http.batch, `batchSize` at a time; returns
 * their tokens as `{user_id, token}` (fewer if some failed).
 */
export function createUsers(count, batchSize, prefix) {
  const out = [];
  const size = Math.max(1, batchSize || 50);
  for (let start = 0; start < count; start += size) {
    const reqs = [];
    for (let i = start; i < Math.min(count, start + size); i += 1) {
      reqs.push({
        method: 'POST',
        url: `${BASE_URL}/v1/users`,
        body: JSON.stringify({ name: `${prefix || 'k6-user'}-${i}` }),
        params: { headers: { 'Content-Type': 'application/json' }, tags: { name: 'POST /v1/users' } },
      });
    }
    for (const res of http.batch(reqs)) {
      track(res, { name: 'POST /v1/users' });
      if (res.status === 201) {
        const b = json(res);
        out.push({ user_id: b.user_id, token: b.token });
      }
    }
  }
  return out;
}

/** The price and grade of seat `n` (1-based) of `total`: the first 20% are VIP. */
export function seatClass(n, total) {
  const share = n / Math.max(1, total);
  if (share <= 0.2) return { grade: 'VIP', price: 150000 };
  if (share <= 0.5) return { grade: 'R', price: 120000 };
  return { grade: 'S', price: 90000 };
}

/**
 * POST /v1/admin/concerts with `performances` dates of `seatsPerPerformance`
 * seats each -> {concert_id, performances:[{performance_id, seat_count}]} or null.
 */
export function createConcert(seatsPerPerformance, performances, title) {
  const seats = Math.min(5000, Math.max(1, seatsPerPerformance || 100));
  const dates = Math.min(100, Math.max(1, performances || 1));
  const seatList = [];
  for (let n = 1; n <= seats; n += 1) {
    const c = seatClass(n, seats);
    seatList.push({ seat_no: `S${String(n).padStart(4, '0')}`, grade: c.grade, price: c.price });
  }
  const day = 24 * 3600 * 1000;
  const perfList = [];
  for (let i = 0; i < dates; i += 1) {
    perfList.push({ starts_at: new Date(Date.now() + (30 + i) * day).toISOString(), seats: seatList });
  }
  const res = request(
    'POST',
    '/v1/admin/concerts',
    { title: title || `k6 concert ${new Date().toISOString()}`, performances: perfList },
    { admin: true, name: 'POST /v1/admin/concerts', timeout: '120s' },
  );
  return res.status === 201 ? json(res) : null;
}

/**
 * The concert and performance to use: CONCERT_ID/PERFORMANCE_ID from the
 * environment, else a new concert of `seats` seats per performance.
 */
export function concertFromEnvOrCreate(seats, performances) {
  if (__ENV.CONCERT_ID) {
    const concertId = parseInt(__ENV.CONCERT_ID, 10);
    let performanceId = __ENV.PERFORMANCE_ID ? parseInt(__ENV.PERFORMANCE_ID, 10) : null;
    if (!performanceId) {
      const perfs = listPerformances(concertId);
      if (!perfs || perfs.length === 0) throw new Error(`concert ${concertId} has no performances`);
      performanceId = perfs[0].performance_id;
    }
    return { concertId, performanceId };
  }
  const c = createConcert(seats, performances);
  if (!c) throw new Error('could not create the concert (is ADMIN_KEY right? is the server up?)');
  return { concertId: c.concert_id, performanceId: c.performances[0].performance_id };
}

/** GET /v1/concerts/{id}/performances -> the performances, or null. */
export function listPerformances(concertId) {
  const res = request('GET', `/v1/concerts/${concertId}/performances`, null, {
    name: 'GET /v1/concerts/{id}/performances',
  });
  return res.status === 200 ? json(res).performances : null;
}

/** POST /v1/queue/tokens -> the response (check `.status` 201 new, 200 existing). */
export function joinQueue(token, concertId, tags) {
  return request('POST', '/v1/queue/tokens', { concert_id: concertId }, { token, tags, name: 'POST /v1/queue/tokens' });
}

/** GET /v1/queue/tokens/current -> the response. */
export function queueStatus(queueToken, tags) {
  return request('GET', '/v1/queue/tokens/current', null, { queueToken, tags, name: 'GET /v1/queue/tokens/current' });
}

/**
 * Polls the queue status about every `pollIntervalSeconds` (±10% jitter)
 * until ACTIVE, EXPIRED, or `maxSeconds` have passed. Returns
 * `{status: 'ACTIVE'|'EXPIRED'|'TIMEOUT'|'ERROR', waitedMs, polls, body}`.
 */
export function waitUntilActive(queueToken, maxSeconds, pollIntervalSeconds, tags) {
  const started = Date.now();
  const deadline = started + maxSeconds * 1000;
  let polls = 0;
  let errors = 0;
  for (;;) {
    const res = queueStatus(queueToken, tags);
    polls += 1;
    const body = res.status === 200 ? json(res) : null;
    if (body && (body.status === 'ACTIVE' || body.status === 'EXPIRED')) {
      return { status: body.status, waitedMs: Date.now() - started, polls, body };
    }
    if (!body) {
      errors += 1;
      if (errors >= 5) return { status: 'ERROR', waitedMs: Date.now() - started, polls, body: null };
    }
    const pause = pollIntervalSeconds * (0.9 + 0.2 * Math.random());
    if (Date.now() + pause * 1000 > deadline) {
      return { status: 'TIMEOUT', waitedMs: Date.now() - started, polls, body };
    }
    // A 503 carries Retry-After; honour it, within the deadline.
    const retryAfter = res.status === 503 ? parseFloat(res.headers['Retry-After'] || '0') : 0;
    sleep(Math.max(pause, Math.min(retryAfter, (deadline - Date.now()) / 1000)));
  }
}

/** GET /v1/performances/{id}/seats (admitted) -> the response. */
export function listSeats(token, queueToken, performanceId) {
  return request('GET', `/v1/performances/${performanceId}/seats`, null, {
    token,
    queueToken,
    tags: ADMITTED,
    name: 'GET /v1/performances/{id}/seats',
  });
}

/** POST /v1/reservations (admitted) -> the response (201, or 409 on a lost race). */
export function reserve(token, queueToken, seatId) {
  return request('POST', '/v1/reservations', { seat_id: seatId }, {
    token,
    queueToken,
    tags: ADMITTED,
    name: 'POST /v1/reservations',
  });
}

/** GET /v1/reservations/{id} -> the response. */
export function getReservation(token, reservationId) {
  return request('GET', `/v1/reservations/${reservationId}`, null, {
    token,
    tags: ADMITTED,
    name: 'GET /v1/reservations/{id}',
  });
}

/** DELETE /v1/reservations/{id} (release a hold) -> the response. */
export function release(token, reservationId) {
  return request('DELETE', `/v1/reservations/${reservationId}`, null, {
    token,
    tags: ADMITTED,
    name: 'DELETE /v1/reservations/{id}',
  });
}

/** GET /v1/users/me/balance -> the response. */
export function getBalance(token) {
  return request('GET', '/v1/users/me/balance', null, { token, name: 'GET /v1/users/me/balance' });
}

/** POST /v1/users/me/balance/charges (admitted) -> the response. */
export function charge(token, amount, key) {
  return request('POST', '/v1/users/me/balance/charges', { amount }, {
    token,
    idempotencyKey: key || idempotencyKey('charge'),
    tags: ADMITTED,
    name: 'POST /v1/users/me/balance/charges',
  });
}

/** POST /v1/payments (admitted) -> the response. */
export function pay(token, queueToken, reservationId, key) {
  return request('POST', '/v1/payments', { reservation_id: reservationId }, {
    token,
    queueToken,
    idempotencyKey: key || idempotencyKey('pay'),
    tags: ADMITTED,
    name: 'POST /v1/payments',
  });
}

// ------------------------------------------------- the API, asynchronous
//
// The same calls as above through `requestAsync`: each returns a Promise of
// the response. `tags` are added to the call's own (the admitted calls keep
// `admitted:yes`).

/** POST /v1/queue/tokens. */
export function joinQueueAsync(token, concertId, tags) {
  return requestAsync('POST', '/v1/queue/tokens', { concert_id: concertId }, { token, tags, name: 'POST /v1/queue/tokens' });
}

/** GET /v1/queue/tokens/current. */
export function queueStatusAsync(queueToken, tags) {
  return requestAsync('GET', '/v1/queue/tokens/current', null, { queueToken, tags, name: 'GET /v1/queue/tokens/current' });
}

/** GET /v1/concerts/{id}/performances. */
export function listPerformancesAsync(concertId, tags) {
  return requestAsync('GET', `/v1/concerts/${concertId}/performances`, null, {
    tags,
    name: 'GET /v1/concerts/{id}/performances',
  });
}

/** GET /v1/performances/{id}/seats (admitted). */
export function listSeatsAsync(token, queueToken, performanceId, tags) {
  return requestAsync('GET', `/v1/performances/${performanceId}/seats`, null, {
    token,
    queueToken,
    tags: Object.assign({}, ADMITTED, tags || {}),
    name: 'GET /v1/performances/{id}/seats',
  });
}

/** POST /v1/reservations (admitted): 201, or 409 on a lost race. */
export function reserveAsync(token, queueToken, seatId, tags) {
  return requestAsync('POST', '/v1/reservations', { seat_id: seatId }, {
    token,
    queueToken,
    tags: Object.assign({}, ADMITTED, tags || {}),
    name: 'POST /v1/reservations',
  });
}

/** POST /v1/users/me/balance/charges (admitted); pass the same `key` to retry. */
export function chargeAsync(token, amount, key, tags) {
  return requestAsync('POST', '/v1/users/me/balance/charges', { amount }, {
    token,
    idempotencyKey: key || idempotencyKey('charge'),
    tags: Object.assign({}, ADMITTED, tags || {}),
    name: 'POST /v1/users/me/balance/charges',
  });
}

/** POST /v1/payments (admitted); pass the same `key` to retry. */
export function payAsync(token, queueToken, reservationId, key, tags) {
  return requestAsync('POST', '/v1/payments', { reservation_id: reservationId }, {
    token,
    queueToken,
    idempotencyKey: key || idempotencyKey('pay'),
    tags: Object.assign({}, ADMITTED, tags || {}),
    name: 'POST /v1/payments',
  });
}

// ------------------------------------------------------------- tokens file

function resolvePath(p) {
  if (p.startsWith('/')) return p;
  // open() resolves relative paths against this file; users mean the cwd.
  return __ENV.PWD ? `${__ENV.PWD}/${p}` : p;
}

/**
 * The users of TOKENS_FILE (`user_id,token` lines, as written by
 * `booking seed --tokens-out`) as a SharedArray of {user_id, token}, or
 * null when TOKENS_FILE is unset. Call in the init context only.
 */
export function loadTokensFile() {
  const file = __ENV.TOKENS_FILE;
  if (!file) return null;
  return new SharedArray('tokens', () => {
    const lines = open(resolvePath(file)).split(/\r?\n/);
    const out = [];
    for (const line of lines) {
      const t = line.trim();
      if (!t || t.startsWith('#')) continue;
      const comma = t.indexOf(',');
      if (comma < 0) continue;
      const id = parseInt(t.slice(0, comma), 10);
      if (Number.isNaN(id)) continue; // a header line
      out.push({ user_id: id, token: t.slice(comma + 1).trim() });
    }
    if (out.length === 0) throw new Error(`TOKENS_FILE ${file} has no user_id,token lines`);
    return out;
  });
}

// ---------------------------------------------------------------- summary

function fmtNum(n, unitMs) {
  if (n === undefined || n === null || Number.isNaN(n)) return '-';
  if (unitMs) {
    if (n >= 1000) return `${(n / 1000).toFixed(2)}s`;
    if (n >= 1) return `${n.toFixed(2)}ms`;
    return `${(n * 1000).toFixed(0)}µs`;
  }
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(Math.abs(n) >= 100 ? 1 : 4).replace(/\.?0+$/, '');
}

function fmtBytes(n) {
  if (n === undefined || n === null) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${Math.round(n)} B`;
}

function statOrder(stat) {
  const i = summaryTrendStats.indexOf(stat);
  return i < 0 ? summaryTrendStats.length : i;
}

function thresholdMark(metric) {
  if (!metric.thresholds) return '  ';
  return Object.values(metric.thresholds).every((t) => t.ok) ? '✓ ' : '✗ ';
}

function collectChecks(group, out) {
  for (const c of group.checks || []) out.push({ path: group.path, ...c });
  for (const g of group.groups || []) collectChecks(g, out);
  return out;
}

/** A plain-text end-of-test summary (a small stand-in for jslib's textSummary). */
export function textSummary(data, scriptName) {
  const lines = [];
  const state = data.state || {};
  lines.push('');
  lines.push(`  ${scriptName || 'k6'} summary — ${((state.testRunDurationMs || 0) / 1000).toFixed(1)}s`);
  lines.push('');

  const checks = collectChecks(data.root_group || {}, []);
  if (checks.length) {
    lines.push('  checks:');
    for (const c of checks) {
      const total = c.passes + c.fails;
      const mark = c.fails === 0 ? '✓' : '✗';
      lines.push(`    ${mark} ${c.name}  ${c.passes}/${total}`);
    }
    lines.push('');
  }

  const names = Object.keys(data.metrics).sort();
  const width = Math.min(60, Math.max(...names.map((n) => n.length)) + 1);
  lines.push('  metrics:');
  for (const name of names) {
    const m = data.metrics[name];
    const v = m.values || {};
    const pad = `${name} `.padEnd(width + 1, '.');
    let desc;
    if (m.type === 'trend') {
      const ms = m.contains === 'time';
      const keys = Object.keys(v).sort((a, b) => statOrder(a) - statOrder(b) || (a < b ? -1 : 1));
      desc = keys
        .map((k) => `${k}=${fmtNum(v[k], ms)}`)
        .join(' ');
    } else if (m.type === 'counter' && m.contains === 'data') {
      desc = `${fmtBytes(v.count)}  ${fmtBytes(v.rate)}/s`;
    } else if (m.type === 'counter') {
      desc = `${fmtNum(v.count)}  ${fmtNum(v.rate)}/s`;
    } else if (m.type === 'rate') {
      desc = `${(100 * (v.rate || 0)).toFixed(2)}%  (${v.passes} of ${v.passes + v.fails})`;
    } else {
      desc = `${fmtNum(v.value)}  min=${fmtNum(v.min)} max=${fmtNum(v.max)}`;
    }
    lines.push(`  ${thresholdMark(m)}${pad}: ${desc}`);
  }
  lines.push('');

  const failed = [];
  for (const name of names) {
    const th = data.metrics[name].thresholds || {};
    for (const expr of Object.keys(th)) {
      if (!th[expr].ok) failed.push(`${name}: ${expr}`);
    }
  }
  const withThresholds = names.filter((n) => data.metrics[n].thresholds).length;
  if (withThresholds) {
    lines.push(failed.length ? `  THRESHOLDS FAILED: ${failed.join('; ')}` : '  all thresholds passed');
    lines.push('');
  }
  return lines.join('\n');
}

// k6/results next to this file, whatever the working directory (k6 does
// not create directories for handleSummary).
const RESULTS_DIR = (() => {
  try {
    const url = import.meta.resolve('./results');
    if (url.startsWith('file://')) return decodeURIComponent(url.slice('file://'.length)).replace(/\/+$/, '');
  } catch (e) {
    // fall through
  }
  return 'k6/results';
})();

/**
 * The body of every script's `handleSummary`: the full JSON to SUMMARY
 * (default k6/results/<script>-summary.json) and a text summary on stdout.
 */
export function summarize(scriptName, data) {
  const file = __ENV.SUMMARY || `${RESULTS_DIR}/${scriptName}-summary.json`;
  return {
    stdout: textSummary(data, scriptName),
    [file]: JSON.stringify(data, null, 2),
  };
}
