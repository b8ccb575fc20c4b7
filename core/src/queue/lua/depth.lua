-- Waiting and active counts over all lines.
-- KEYS: lines; ARGV: line key prefix, now_ms
local waiting, active = 0, 0
for _, concert in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  waiting = waiting + redis.call('ZCARD', ARGV[1] .. concert .. ':waiting')
  active = active + redis.call('ZCOUNT', ARGV[1] .. concert .. ':active', '(' .. ARGV[2], '+inf')
end
return {waiting, active}
