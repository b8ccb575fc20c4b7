-- A place's status, plus the asked-for seat's fast-path flag, in one trip.
-- KEYS: current, waiting, active, last admitted tick, [seat flag]
-- ARGV: user, seq, now_ms
-- Returns {status (0 waiting, 1 active, 2 expired), position or active_until,
--          waiting: the last admitted tick (-1 if none), read with the position
--          for the wait estimate; active: seat_taken (0|1)}
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return {2, 0, 0} end
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if rank then return {0, rank + 1, tonumber(redis.call('GET', KEYS[4]) or '-1')} end
local untl = redis.call('ZSCORE', KEYS[3], ARGV[1])
local now = tonumber(ARGV[3])
if not untl or tonumber(untl) <= now then return {2, 0, 0} end
local taken = 0
if KEYS[5] then
  local flag = redis.call('GET', KEYS[5])
  if flag == 'S' or (flag and tonumber(flag) > now) then taken = 1 end
end
return {1, tonumber(untl), taken}
