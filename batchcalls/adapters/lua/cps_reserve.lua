-- Reserve the earliest instant at which one more provider call may be created without any
-- window of `window_ms` holding more than `limit` creations (a sliding-window log with
-- reservations: callers wait for their instant instead of polling, so waiters never stampede).
-- KEYS: the account's reservation log. ARGV: limit, window_ms, unique token.
-- Returns {reserved_ms, now_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local at = now
if redis.call('ZCARD', KEYS[1]) >= limit then
  local nth = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
  local earliest = tonumber(nth[2]) + window
  if earliest > at then at = earliest end
end
redis.call('ZADD', KEYS[1], at, at .. ':' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], window * 2 + (at - now))
return {at, now}
