-- A fixed-window counter: request rate per user, failed authentications
-- per client IP. The key names its window, so it expires with it.
-- KEYS[1]: the counter. ARGV: increment (0 = only read), TTL in seconds.
-- Returns the count before this increment.
local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local by = tonumber(ARGV[1])
if by > 0 then
  redis.call('INCRBY', KEYS[1], by)
  if before == 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
  end
end
return before
