-- Checks and holds one LLM call's estimated charge in every scope, all or none;
-- first, when given request counters (the user's, a key's), counts the call
-- against each request rate (an LLM call's admission, folded in here to save
-- a round trip).
-- KEYS: per scope, 6 keys: tokens this minute, tokens today, micro-USD
--       today, micro-USD this month, the scope's open reservations (ZSET
--       member -> expiry ms), and its marker (see rebuild.lua); then up to
--       two request counters (same hash slot).
-- ARGV: now_ms, expires_at_ms, member ("id:tokens:micro_usd"), tokens,
--       micro_usd, then per scope 4 limits (minute tokens, day tokens, day
--       micro-USD, month micro-USD; -1 = none) and 1 when the scope's
--       limits are in shadow mode (reported, never refusing), else 0;
--       then per request counter: its limit, its TTL in seconds, and 1 when
--       it refuses (0: shadow mode, counted only).
-- Returns {-3, scope index} when a scope's marker is missing: Redis lost its
-- windows, which must be rebuilt from the ledger first (nothing counted);
-- {-2, seen1, seen2} when a request rate refuses the call (nothing held);
-- else {-1, minute, day, s, w, limit, used, seen1, seen2} when held, where
-- minute and day are the first scope's tokens in use in that window (settled
-- + every hold, this one included; -1 for a window without a limit, which
-- is not read) and s.. the first shadow-mode limit passed (-1 for none);
-- else {scope index (0-based), window (1..4), limit, used, seen1, seen2}.
-- `seenN` is counter N after this call (0 without it).
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
local seen = { 0, 0 }
local rate_refused = false
for c = 1, #KEYS - scopes * 6 do
  local counter = KEYS[scopes * 6 + c]
  local arg = 5 + scopes * 5 + (c - 1) * 3
  seen[c] = redis.call('INCR', counter)
  if seen[c] == 1 then
    redis.call('EXPIRE', counter, ARGV[arg + 2])
  end
  if seen[c] > tonumber(ARGV[arg + 1]) and ARGV[arg + 3] == '1' then
    rate_refused = true
  end
end
if rate_refused then
  return { -2, seen[1], seen[2] }
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
          return { s, w, limit, used, seen[1], seen[2] }
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
return { -1, in_use[1], in_use[2], shadow[1], shadow[2], shadow[3], shadow[4], seen[1], seen[2] }
