// Smoke test: one user walks every endpoint once, with checks.
//
//   BASE_URL=http://127.0.0.1:8080 k6 run k6/smoke.js
//
// Run it against a server with a short admission interval
// (ADMISSION_INTERVAL_SECS=1) so that it finishes in a few seconds.

import { check, fail, group } from 'k6';
import {
  BASE_URL,
  charge,
  createConcert,
  createUser,
  envFloat,
  envInt,
  getBalance,
  getReservation,
  idempotencyKey,
  joinQueue,
  json,
  listPerformances,
  listSeats,
  pay,
  queueStatus,
  release,
  request,
  reserve,
  summarize,
  summaryTrendStats,
  waitUntilActive,
} from './lib.js';

const MAX_WAIT_SECONDS = envInt('MAX_WAIT_SECONDS', 60);
const POLL_SECONDS = envFloat('POLL_SECONDS', 0.2);

export const options = {
  scenarios: {
    smoke: { executor: 'per-vu-iterations', vus: 1, iterations: 1, maxDuration: `${MAX_WAIT_SECONDS + 60}s` },
  },
  thresholds: {
    checks: ['rate==1'],
    unexpected_errors: ['rate<0.01'],
  },
  summaryTrendStats,
};

function isErrorJson(res, status, code) {
  const body = json(res);
  return (
    res.status === status &&
    (res.headers['Content-Type'] || '').startsWith('application/json') &&
    body !== null &&
    typeof body.error === 'object' &&
    typeof body.error.message === 'string' &&
    (code ? body.error.code === code : typeof body.error.code === 'string')
  );
}

export default function () {
  group('ops', () => {
    const health = request('GET', '/healthz', null);
    check(health, { 'healthz 200 ok': (r) => r.status === 200 && json(r).status === 'ok' });
    const ready = request('GET', '/readyz', null);
    check(ready, { 'readyz 200 ready': (r) => r.status === 200 && json(r).status === 'ready' });
    const spec = request('GET', '/openapi.json', null);
    check(spec, { 'openapi.json served': (r) => r.status === 200 && json(r) !== null && !!json(r).openapi });
    const metrics = request('GET', '/metrics', null);
    check(metrics, { 'metrics 200 text': (r) => r.status === 200 && r.body.length > 0 });
  });

  const buyer = createUser('k6 smoke buyer');
  const rival = createUser('k6 smoke rival');
  check(buyer, { 'user created with token': (u) => u !== null && u.user_id > 0 && !!u.token });
  check(rival, { 'second user created': (u) => u !== null && !!u.token });
  if (!buyer || !rival) fail('cannot create users');

  const concert = createConcert(6, 2, 'k6 smoke concert');
  check(concert, {
    'concert created': (c) => c !== null && c.concert_id > 0,
    'concert has 2 performances of 6 seats': (c) =>
      c !== null && c.performances.length === 2 && c.performances.every((p) => p.seat_count === 6),
  });
  if (!concert) fail('cannot create a concert');
  const concertId = concert.concert_id;
  const performanceId = concert.performances[0].performance_id;

  group('catalogue', () => {
    const list = request('GET', '/v1/concerts', null);
    check(list, {
      'concerts listed': (r) => r.status === 200 && json(r).concerts.some((c) => c.concert_id === concertId),
    });
    const perfs = listPerformances(concertId);
    check(perfs, {
      'performances listed with 6 available seats': (p) =>
        p !== null && p.length === 2 && p.every((x) => x.available_seats === 6 && x.total_seats === 6),
    });
  });

  // Both users queue; the server admits them at the next tick.
  let qt = null;
  let rivalQt = null;
  group('queue', () => {
    const first = joinQueue(buyer.token, concertId);
    check(first, {
      'queue join 201': (r) => r.status === 201,
      'queue join has a token and status': (r) =>
        r.status === 201 && !!json(r).queue_token && ['WAITING', 'ACTIVE'].indexOf(json(r).status) >= 0,
    });
    qt = first.status === 201 ? json(first).queue_token : null;
    const again = joinQueue(buyer.token, concertId);
    check(again, { 'second join returns the existing place (200)': (r) => r.status === 200 && !!json(r).queue_token });
    const r2 = joinQueue(rival.token, concertId);
    check(r2, { 'rival joins the queue': (r) => r.status === 201 });
    rivalQt = r2.status === 201 ? json(r2).queue_token : null;
    if (!qt || !rivalQt) fail('cannot join the queue');

    const waiting = queueStatus(qt);
    check(waiting, {
      'queue status 200': (r) =>
        r.status === 200 && ['WAITING', 'ACTIVE'].indexOf(json(r).status) >= 0 && json(r).position >= 0,
    });
    const active = waitUntilActive(qt, MAX_WAIT_SECONDS, POLL_SECONDS);
    check(active, { 'admitted: status ACTIVE': (a) => a.status === 'ACTIVE' && !!a.body.active_until });
    const rivalActive = waitUntilActive(rivalQt, MAX_WAIT_SECONDS, POLL_SECONDS);
    check(rivalActive, { 'rival admitted': (a) => a.status === 'ACTIVE' });
    if (active.status !== 'ACTIVE' || rivalActive.status !== 'ACTIVE') {
      fail(`not admitted within ${MAX_WAIT_SECONDS}s (is ADMISSION_INTERVAL_SECS small?)`);
    }
  });

  let kept = null;
  group('seats and holds', () => {
    const seatsRes = listSeats(buyer.token, qt, performanceId);
    check(seatsRes, {
      'seats listed: 6 AVAILABLE': (r) =>
        r.status === 200 && json(r).seats.length === 6 && json(r).seats.every((s) => s.status === 'AVAILABLE'),
    });
    if (seatsRes.status !== 200) fail('cannot list seats');
    const seats = json(seatsRes).seats.slice().sort((a, b) => a.seat_id - b.seat_id);

    const hold = reserve(buyer.token, qt, seats[0].seat_id);
    check(hold, {
      'reservation 201 HELD': (r) => r.status === 201 && json(r).status === 'HELD',
      'reservation has price and expiry': (r) =>
        r.status === 201 && json(r).price === seats[0].price && !!json(r).expires_at,
    });
    if (hold.status !== 201) fail('cannot reserve');
    kept = json(hold);

    const second = reserve(buyer.token, qt, seats[1].seat_id);
    check(second, { 'second reservation 201': (r) => r.status === 201 });

    const taken = reserve(rival.token, rivalQt, seats[0].seat_id);
    check(taken, { 'held seat: 409 SEAT_UNAVAILABLE': (r) => isErrorJson(r, 409, 'SEAT_UNAVAILABLE') });

    const shown = getReservation(buyer.token, kept.reservation_id);
    check(shown, {
      'get reservation 200 HELD': (r) =>
        r.status === 200 && json(r).status === 'HELD' && json(r).reservation_id === kept.reservation_id,
    });

    if (second.status === 201) {
      const released = release(buyer.token, json(second).reservation_id);
      check(released, { 'release 200 RELEASED': (r) => r.status === 200 && json(r).status === 'RELEASED' });
      const again = request('DELETE', `/v1/reservations/${json(second).reservation_id}`, null, {
        token: buyer.token,
        name: 'DELETE /v1/reservations/{id}',
        expect: [409],
      });
      check(again, {
        'second release: 409 RESERVATION_NOT_HELD': (r) => isErrorJson(r, 409, 'RESERVATION_NOT_HELD'),
      });
    }

    // A deliberate 404: another user's reservation does not exist for them.
    const others = request('GET', `/v1/reservations/${kept.reservation_id}`, null, {
      token: rival.token,
      name: 'GET /v1/reservations/{id}',
      expect: [404],
    });
    check(others, { "someone else's reservation: 404": (r) => isErrorJson(r, 404, 'RESERVATION_NOT_FOUND') });
  });

  group('balance and payment', () => {
    const before = getBalance(buyer.token);
    check(before, { 'balance 200, starts at 0': (r) => r.status === 200 && json(r).balance === 0 });

    const key = idempotencyKey('smoke-charge');
    const charged = charge(buyer.token, kept.price, key);
    check(charged, { 'charge 201 with the new balance': (r) => r.status === 201 && json(r).balance === kept.price });
    const replay = charge(buyer.token, kept.price, key);
    check(replay, {
      'charge replay with the same key: same result': (r) =>
        r.status === 201 && json(r).balance === kept.price && json(r).charge_id === json(charged).charge_id,
    });

    const paid = pay(buyer.token, qt, kept.reservation_id);
    check(paid, {
      'payment 201 PAID': (r) => r.status === 201 && json(r).status === 'PAID',
      'payment amount is the price, balance drops to 0': (r) =>
        r.status === 201 && json(r).amount === kept.price && json(r).balance === 0,
    });

    const after = queueStatus(qt);
    check(after, { 'queue token EXPIRED after payment': (r) => r.status === 200 && json(r).status === 'EXPIRED' });

    const shown = getReservation(buyer.token, kept.reservation_id);
    check(shown, {
      'reservation PAID with payment_id': (r) =>
        r.status === 200 && json(r).status === 'PAID' && json(r).payment_id === json(paid).payment_id,
    });

    const perfs = listPerformances(concertId);
    check(perfs, {
      'one seat fewer available': (p) =>
        p !== null && p.find((x) => x.performance_id === performanceId).available_seats === 5,
    });
  });

  group('error cases', () => {
    // The rival holds a seat but has no money: 402.
    const seatsRes = listSeats(rival.token, rivalQt, performanceId);
    const free = seatsRes.status === 200 ? json(seatsRes).seats.find((s) => s.status === 'AVAILABLE') : null;
    const rivalHold = free ? reserve(rival.token, rivalQt, free.seat_id) : null;
    check(rivalHold, { 'rival holds a free seat': (r) => r !== null && r.status === 201 });
    if (rivalHold && rivalHold.status === 201) {
      const broke = request('POST', '/v1/payments', { reservation_id: json(rivalHold).reservation_id }, {
        token: rival.token,
        queueToken: rivalQt,
        idempotencyKey: idempotencyKey('smoke-broke'),
        name: 'POST /v1/payments',
        expect: [402],
      });
      check(broke, { 'no balance: 402 INSUFFICIENT_BALANCE': (r) => isErrorJson(r, 402, 'INSUFFICIENT_BALANCE') });
      const freed = release(rival.token, json(rivalHold).reservation_id);
      check(freed, { 'rival releases the hold': (r) => r.status === 200 });
    }

    const after = request('POST', '/v1/reservations', { seat_id: 1 }, {
      token: buyer.token,
      queueToken: qt,
      name: 'POST /v1/reservations',
      expect: [403],
    });
    check(after, { 'token ended by payment: 403 QUEUE_TOKEN_NOT_ACTIVE': (r) => isErrorJson(r, 403, 'QUEUE_TOKEN_NOT_ACTIVE') });

    const noQueue = request('POST', '/v1/reservations', { seat_id: 1 }, {
      token: buyer.token,
      name: 'POST /v1/reservations',
      expect: [401],
    });
    check(noQueue, { 'no Queue-Token: 401 JSON error': (r) => isErrorJson(r, 401, 'INVALID_QUEUE_TOKEN') });

    const noAuth = request('GET', '/v1/users/me/balance', null, { name: 'GET /v1/users/me/balance', expect: [401] });
    check(noAuth, { 'no bearer: 401 JSON error': (r) => isErrorJson(r, 401) });

    const missing = request('GET', '/v1/concerts/999999999/performances', null, {
      name: 'GET /v1/concerts/{id}/performances',
      expect: [404],
    });
    check(missing, { 'unknown concert: 404 CONCERT_NOT_FOUND': (r) => isErrorJson(r, 404, 'CONCERT_NOT_FOUND') });

    const badBody = request('POST', '/v1/users', { name: '' }, { name: 'POST /v1/users', expect: [400] });
    check(badBody, { 'empty name: 400 JSON error': (r) => isErrorJson(r, 400) });

    const badAdmin = request('POST', '/v1/admin/concerts', { title: 'x', performances: [] }, {
      name: 'POST /v1/admin/concerts',
      expect: [401],
    });
    check(badAdmin, { 'no admin key: 401 JSON error': (r) => isErrorJson(r, 401) });

    const noKey = request('POST', '/v1/users/me/balance/charges', { amount: 10 }, {
      token: buyer.token,
      name: 'POST /v1/users/me/balance/charges',
      expect: [400],
    });
    check(noKey, { 'charge without Idempotency-Key: 400 JSON error': (r) => isErrorJson(r, 400) });

    const route = request('GET', '/v1/nowhere', null, { name: 'GET /v1/nowhere', expect: [404] });
    check(route, { 'unknown route: 404 JSON error': (r) => isErrorJson(r, 404) });
  });

  console.log(`smoke run against ${BASE_URL}: concert ${concertId}, performance ${performanceId}`);
}

export function handleSummary(data) {
  return summarize('smoke', data);
}
