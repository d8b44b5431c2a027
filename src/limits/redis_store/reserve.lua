-- Checks and holds one LLM call's estimated charge in every scope, all or none;
-- first, when given a request counter, counts the call against its request
-- rate (an LLM call's admission, folded in here to save a round trip).
-- KEYS: per scope, 6 keys: tokens this minute, tokens today, micro-USD
--       today, micro-USD this month, the scope's open reservations (ZSET
--       member -> expiry ms), and its marker (see rebuild.lua); then,
--       optionally, the request counter (same hash slot).
-- ARGV: now_ms, expires_at_ms, member ("id:tokens:micro_usd"), tokens,
--       micro_usd, then per scope 4 limits (minute tokens, day tokens, day
--       micro-USD, month micro-USD; -1 = none) and 1 when the scope's
--       limits are in shadow mode (reported, never refusing), else 0;
--       then with a request counter: its limit and its TTL in seconds.
-- Returns {-3, scope index} when a scope's marker is missing: Redis lost its
-- windows, which must be rebuilt from the ledger first (nothing counted);
-- {-2, seen} when the request rate refuses the call (nothing held);
-- else {-1, minute, day, seen, s, w, limit, used} when held, where minute
-- and day are the first scope's tokens in use in that window (settled +
-- every hold, this one included; -1 for a window without a limit, which
-- is not read) and s.. the first shadow-mode limit passed (-1 for none);
-- else {scope index (0-based), window (1..4), limit, used, seen}. `seen` is
-- the counter after this call (0 without a counter).
local now = tonumber(ARGV[1])
local expires_at = tonumber(ARGV[2])
local member = ARGV[3]
local charge = { tonumber(ARGV[4]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[5]) }
local scopes = math.floor(#KEYS / 6)

for s = 0, scopes - 1 do
  if redis.call('EXISTS', KEYS[s * 6 + 6]) == 0 then
    return { -3, s }
  end
end

-- Counted like count.lua: every call, a refused one included.
local seen = 0
if #KEYS > scopes * 6 then
  local counter = KEYS[#KEYS]
  local rate_limit = tonumber(ARGV[6 + scopes * 5])
  seen = redis.call('INCR', counter)
  if seen == 1 then
    redis.call('EXPIRE', counter, ARGV[7 + scopes * 5])
  end
  if seen > rate_limit then
    return { -2, seen }
  end
end

-- Drops holds whose instance never settled them (crashed), then sums the rest.
local function held(reservations)
  redis.call('ZREMRANGEBYSCORE', reservations, '-inf', now)
  local tokens, usd = 0, 0
  for _, m in ipairs(redis.call('ZRANGE', reservations, 0, -1)) do
    local t, u = string.match(m, ':(%d+):(%d+)$')
    tokens = tokens + tonumber(t)
    usd = usd + tonumber(u)
  end
  return { tokens, tokens, usd, usd }
end

local in_use = { -1, -1 }
local shadow = { -1, -1, -1, -1 }
for s = 0, scopes - 1 do
  local reserved = held(KEYS[s * 6 + 5])
  local in_shadow = ARGV[5 + s * 5 + 5] == '1'
  for w = 1, 4 do
    local limit = tonumber(ARGV[5 + s * 5 + w])
    if limit >= 0 then
      local used = tonumber(redis.call('GET', KEYS[s * 6 + w]) or '0') + reserved[w]
      if s == 0 and w < 3 then
        in_use[w] = used + charge[w]
      end
      if used + charge[w] > limit then
        if not in_shadow then
          return { s, w, limit, used, seen }
        end
        if shadow[1] < 0 then
          shadow = { s, w, limit, used }
        end
        break
      end
    end
  end
end

for s = 0, scopes - 1 do
  local reservations = KEYS[s * 6 + 5]
  redis.call('ZADD', reservations, expires_at, member)
  -- The set lives as long as its longest hold.
  if redis.call('PTTL', reservations) < expires_at - now then
    redis.call('PEXPIRE', reservations, expires_at - now)
  end
end
return { -1, in_use[1], in_use[2], seen, shadow[1], shadow[2], shadow[3], shadow[4] }
