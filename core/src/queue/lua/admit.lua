-- Admits the next batch of one concert's line, once per tick across all
-- instances: the tick guard and the pops run in one atomic script, so nobody
-- is admitted twice and nobody is skipped. Every key is the line's own (one
-- hash tag), so lines on different cluster nodes admit independently.
-- KEYS: last admitted tick, waiting (zset), active (zset), current (hash)
-- ARGV: tick start (ms), now_ms, batch, max_active, window_ms
-- Returns the number admitted, or -1 when this tick already ran.
local tick = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tick <= last then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
local now, batch, max_active, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local waiting, active, current = KEYS[2], KEYS[3], KEYS[4]
-- Places whose window ended leave, and so does their user's place number
-- (unless the user is back in line with a new one): nothing per user is
-- kept for someone who has left.
for _, user in ipairs(redis.call('ZRANGEBYSCORE', active, '-inf', now)) do
  if not redis.call('ZSCORE', waiting, user) then redis.call('HDEL', current, user) end
end
redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
local admitted = 0
local room = math.min(batch, max_active - redis.call('ZCARD', active))
if room > 0 then
  local popped = redis.call('ZPOPMIN', waiting, room)
  for i = 1, #popped, 2 do
    redis.call('ZADD', active, now + window, popped[i])
    admitted = admitted + 1
  end
end
return admitted
