-- Replaces a reservation by the real usage (release: usage 0).
-- KEYS: per scope, the first 5 keys of reserve.lua (its 4 windows and its
--       open reservations).
-- ARGV: member, tokens, micro_usd, then the TTL in seconds of the current
--       minute, day, day and month keys (their window's end plus a
--       margin), then per scope the windows it counts: 4 characters, '1'
--       counted ('0110': a conversation's day windows only).
-- Returns per scope its 4 windows' settled amounts after this call (0
-- for a window it does not count).
local scopes = #KEYS / 5
local spent = {}
for s = 0, scopes - 1 do
  redis.call('ZREM', KEYS[s * 5 + 5], ARGV[1])
  local amounts = { ARGV[2], ARGV[2], ARGV[3], ARGV[3] }
  local counts = ARGV[8 + s]
  for w = 1, 4 do
    local now_spent = 0
    if string.sub(counts, w, w) == '1' then
      if tonumber(amounts[w]) > 0 then
        now_spent = redis.call('INCRBY', KEYS[s * 5 + w], amounts[w])
        redis.call('EXPIRE', KEYS[s * 5 + w], ARGV[3 + w])
      else
        now_spent = tonumber(redis.call('GET', KEYS[s * 5 + w]) or '0')
      end
    end
    spent[#spent + 1] = now_spent
  end
end
return spent
