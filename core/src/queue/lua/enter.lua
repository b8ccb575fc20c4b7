-- Joins a concert's line, or returns the caller's live place in it.
-- KEYS: current (hash user -> place number), waiting (zset), active (zset),
--       seq (counter), the line's last admitted tick, [lines (set of concert ids)]
-- ARGV: user, concert, now_ms, current tick start (ms)
-- The lines key is given on a single node only: on a cluster it lives in
-- another slot, and the caller adds the concert to it after a new place.
-- Returns {seq, created (0|1), position (0 unless waiting), active_until (0 unless active),
--          last admitted tick (-1 if none), read with the position for the wait estimate}
-- A new line starts as admitted at the current tick, so its first batch is
-- the next tick's, as on a line that has been running.
redis.call('SET', KEYS[5], ARGV[4], 'NX')
local last_tick = tonumber(redis.call('GET', KEYS[5]))
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
  if rank then return {tonumber(cur), 0, rank + 1, 0, last_tick} end
  local untl = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if untl and tonumber(untl) > tonumber(ARGV[3]) then return {tonumber(cur), 0, 0, tonumber(untl), last_tick} end
end
-- The counter makes every place number unique: strict FIFO, no ties.
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], ARGV[1], seq)
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
if KEYS[6] then redis.call('SADD', KEYS[6], ARGV[2]) end
return {seq, 1, redis.call('ZRANK', KEYS[2], ARGV[1]) + 1, 0, last_tick}
