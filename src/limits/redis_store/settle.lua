-- Replaces a reservation by the real usage (release: usage 0).
-- KEYS: per scope, the first 5 keys of reserve.lua (its 4 windows and its
--       open reservations).
-- ARGV: member, tokens, micro_usd, then the TTL in seconds of the current
--       minute, day, day and month keys (their window's end plus a
--       margin), then per scope the windows it counts: 4 characters, '1'
--       counted ('0101': a conversation's day windows only).
local scopes = #KEYS / 5
for s = 0, scopes - 1 do
  redis.call('ZREM', KEYS[s * 5 + 5], ARGV[1])
  local amounts = { ARGV[2], ARGV[2], ARGV[3], ARGV[3] }
  local counts = ARGV[8 + s]
  for w = 1, 4 do
    if string.sub(counts, w, w) == '1' and tonumber(amounts[w]) > 0 then
      redis.call('INCRBY', KEYS[s * 5 + w], amounts[w])
      redis.call('EXPIRE', KEYS[s * 5 + w], ARGV[3 + w])
    end
  end
end
return 0
