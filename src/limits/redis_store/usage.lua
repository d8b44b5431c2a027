-- One scope's usage: settled tokens this minute and today, micro-USD
-- today and this month, and what open (unexpired) reservations hold.
-- KEYS: the scope's first 5 keys as in reserve.lua. ARGV: now_ms.
-- Returns {tokens_minute, tokens_day, micro_usd_day, micro_usd_month,
-- reserved_tokens, reserved_micro_usd}.
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[1]))
local tokens, usd = 0, 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local t, u = string.match(m, ':(%d+):(%d+)$')
  tokens = tokens + tonumber(t)
  usd = usd + tonumber(u)
end
local function get(key)
  return tonumber(redis.call('GET', key) or '0')
end
return { get(KEYS[1]), get(KEYS[2]), get(KEYS[3]), get(KEYS[4]), tokens, usd }
