-- Waiting and live active counts of one line.
-- KEYS: waiting, active; ARGV: now_ms
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')}
