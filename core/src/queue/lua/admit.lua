-- Admits the next batch of every line, once per tick across all instances:
-- the tick guard and the pops run in one atomic script, so nobody is
-- admitted twice and nobody is skipped.
-- KEYS: last tick, lines (set of concert ids)
-- ARGV: tick start (ms), now_ms, batch, max_active, window_ms, line key prefix
-- Returns the number admitted, or -1 when this tick already ran.
local tick = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tick <= last then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
local now, batch, max_active, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local admitted = 0
for _, concert in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local waiting = ARGV[6] .. concert .. ':waiting'
  local active = ARGV[6] .. concert .. ':active'
  local current = ARGV[6] .. concert .. ':current'
  -- Places whose window ended leave, and so does their user's place number
  -- (unless the user is back in line with a new one): nothing per user is
  -- kept for someone who has left.
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', active, '-inf', now)) do
    if not redis.call('ZSCORE', waiting, user) then redis.call('HDEL', current, user) end
  end
  redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
  local room = math.min(batch, max_active - redis.call('ZCARD', active))
  if room > 0 then
    local popped = redis.call('ZPOPMIN', waiting, room)
    for i = 1, #popped, 2 do
      redis.call('ZADD', active, now + window, popped[i])
      admitted = admitted + 1
    end
  end
end
return admitted
