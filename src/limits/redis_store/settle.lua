-- Replaces a reservation by the real usage (release: usage 0).
-- KEYS: per scope, the same 4 keys as reserve.lua.
-- ARGV: member, tokens, micro_usd, then the TTL in seconds of the current
--       minute, day and month keys (their window's end plus a margin).
for s = 0, #KEYS / 4 - 1 do
  redis.call('ZREM', KEYS[s * 4 + 4], ARGV[1])
  local amounts = { ARGV[2], ARGV[2], ARGV[3] }
  for w = 1, 3 do
    if tonumber(amounts[w]) > 0 then
      redis.call('INCRBY', KEYS[s * 4 + w], amounts[w])
      redis.call('EXPIRE', KEYS[s * 4 + w], ARGV[3 + w])
    end
  end
end
return 0
