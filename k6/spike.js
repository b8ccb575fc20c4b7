// Spike: 0 to PEAK virtual users in SPIKE_SECONDS, held for HOLD_SECONDS,
// then down. Each iteration is a user joining the queue of one concert and
// polling their place a few times, so the queue takes the spike.
//
//   BASE_URL=http://127.0.0.1:8080 PEAK=500 k6 run k6/spike.js
//
// VU n plays user n of a pool of USERS (default PEAK) created in setup or
// read from TOKENS_FILE. A user's first join makes a place (201); later
// iterations re-join and get the same place back (200), as a browser
// refresh would, and a place that ended is replaced by a new one (201).

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  concertFromEnvOrCreate,
  createUsers,
  envFloat,
  envInt,
  joinQueue,
  json,
  loadTokensFile,
  queueStatus,
  summarize,
  summaryTrendStats,
} from './lib.js';

const TOKENS = loadTokensFile();
const PEAK = envInt('PEAK', 500);
const USERS = envInt('USERS', TOKENS ? Math.min(TOKENS.length, PEAK) : PEAK);
const SPIKE_SECONDS = envFloat('SPIKE_SECONDS', 5);
const HOLD_SECONDS = envFloat('HOLD_SECONDS', 20);
const RAMP_DOWN_SECONDS = envFloat('RAMP_DOWN_SECONDS', 5);
const POLLS = envInt('POLLS', 5);
const POLL_SECONDS = envFloat('POLL_SECONDS', 1);
const SEATS = envInt('SEATS', 100);
const SETUP_BATCH = envInt('SETUP_BATCH', 50);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: `${SPIKE_SECONDS}s`, target: PEAK },
        { duration: `${HOLD_SECONDS}s`, target: PEAK },
        { duration: `${RAMP_DOWN_SECONDS}s`, target: 0 },
      ],
      gracefulRampDown: `${Math.ceil(POLLS * POLL_SECONDS + 5)}s`,
    },
  },
  setupTimeout: __ENV.SETUP_TIMEOUT || '5m',
  thresholds: {
    http_req_duration: ['p(95)<500'],
    http_req_failed: ['rate<0.01'],
    unexpected_errors: ['rate<0.01'],
  },
  summaryTrendStats,
};

const newPlaces = new Rate('queue_join_new_place');
const position = new Trend('queue_position');
const activeSeen = new Counter('active_seen');
const expiredSeen = new Counter('expired_seen');

export function setup() {
  const { concertId } = concertFromEnvOrCreate(SEATS, 1);
  let tokens = [];
  if (!TOKENS) {
    tokens = createUsers(USERS, SETUP_BATCH, 'k6-spike').map((u) => u.token);
    if (tokens.length < USERS) throw new Error(`created only ${tokens.length} of ${USERS} users`);
  }
  console.log(`spike: concert ${concertId}, ${USERS} users, peak ${PEAK} VUs`);
  return { concertId, tokens };
}

function userToken(data) {
  const i = exec.vu.idInTest - 1;
  return TOKENS ? TOKENS[i % USERS].token : data.tokens[i % data.tokens.length];
}

export default function (data) {
  const token = userToken(data);
  const joined = joinQueue(token, data.concertId);
  if (!check(joined, { 'joined the queue': (r) => r.status === 201 || r.status === 200 })) {
    sleep(POLL_SECONDS);
    return;
  }
  const place = json(joined);
  newPlaces.add(joined.status === 201);
  if (place.status === 'WAITING') position.add(place.position);

  for (let i = 0; i < POLLS; i += 1) {
    sleep(POLL_SECONDS * (0.9 + 0.2 * Math.random()));
    const res = queueStatus(place.queue_token);
    if (!check(res, { 'queue status 200': (r) => r.status === 200 })) continue;
    const st = json(res);
    if (st.status === 'WAITING') position.add(st.position);
    if (st.status === 'ACTIVE') activeSeen.add(1);
    if (st.status === 'EXPIRED') {
      expiredSeen.add(1);
      break;
    }
  }
}

export function handleSummary(data) {
  return summarize('spike', data);
}
