-- Shared by the wrk scripts: users from $PAIRS ("user_token queue_token"
-- per line), status counting in every thread, and one JSON summary line.

users = {}
if os.getenv("PAIRS") then
  for line in io.lines(os.getenv("PAIRS")) do
    local bearer, queue = line:match("(%S+) (%S+)")
    users[#users + 1] = { bearer = bearer, queue = queue }
  end
end

-- A reservation attempt on `seat` by the i-th user.
function reserve(i, seat)
  return wrk.format("POST", "/v1/reservations", {
    ["Authorization"] = "Bearer " .. users[i].bearer,
    ["Queue-Token"] = users[i].queue,
    ["Content-Type"] = "application/json",
  }, '{"seat_id":' .. seat .. '}')
end

local threads = {}
function setup(thread)
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do parts[#parts + 1] = string.format('"%s":%d', status, n) end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"socket_errors":%d,"statuses":{%s}}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ",")))
end
