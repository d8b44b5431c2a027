-- Rebuilds one scope's budget windows that Redis lost (restart, flush,
-- failover) from the ledger's sums, once: a scope whose marker exists is
-- left alone. Each counter becomes the larger of what it holds (settles
-- since the loss) and the ledger's sum: both undercount the true spend,
-- so the larger never counts a call twice, also when two instances
-- rebuild at once.
-- KEYS: the scope's 4 window keys (as in reserve.lua), then its marker.
-- ARGV: the ledger's sums for those 4 windows, then the TTL in seconds of
--       each of those keys, then the marker's TTL.
-- Returns 1 when rebuilt, 0 when the marker was there.
if redis.call('EXISTS', KEYS[5]) == 1 then
  return 0
end
for w = 1, 4 do
  local held = tonumber(redis.call('GET', KEYS[w]) or '0')
  local ledger = tonumber(ARGV[w])
  if ledger > held then
    redis.call('SET', KEYS[w], ARGV[w], 'EX', ARGV[4 + w])
  end
end
redis.call('SET', KEYS[5], '1', 'EX', ARGV[9])
return 1
