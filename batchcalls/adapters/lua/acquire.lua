-- Release finished leases, park retries, promote due retries, and lease free slots to the
-- best waiting calls of one batch (at most max_grant of them; -1: every free slot), atomically.
-- KEYS: meta, ready, delayed, leases (all with the {batch_id} hash tag)
-- ARGV: lease_ms, max_grant, n_release, release..., n_delay, (due_ms, member)...
-- Returns {now_ms, next_due_in_ms or -1, {call_id, score, ...}, {expired call_id, ...},
-- wants, tenant}: `wants` is the priority of the best waiting call when the batch could dial
-- one more call now (not paused, a free slot, a call waiting), else -1; or {-1} when the batch's
-- state is missing from Redis and must be rebuilt from Postgres.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[1])
local max_grant = tonumber(ARGV[2])
local i = 3
local n_release = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_release do
  redis.call('ZREM', KEYS[4], ARGV[i]); i = i + 1
end
local n_delay = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_delay do
  redis.call('ZADD', KEYS[3], tonumber(ARGV[i]), ARGV[i + 1]); i = i + 2
end
-- Meta without concurrency is not a whole state either (a lone HSET of 'paused' creates one).
local concurrency = tonumber(redis.call('HGET', KEYS[1], 'concurrency'))
if not concurrency then
  return {-1}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  redis.call('ZADD', KEYS[2], tonumber(string.sub(member, 1, sep - 1)), string.sub(member, sep + 1))
  redis.call('ZREM', KEYS[3], member)
end
local granted = {}
local wants = -1
if redis.call('HGET', KEYS[1], 'paused') ~= '1' then
  local free = concurrency - redis.call('ZCARD', KEYS[4])
  local n = free
  if max_grant >= 0 and max_grant < n then n = max_grant end
  if n > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], n)
    for j = 1, #popped, 2 do
      redis.call('ZADD', KEYS[4], now + lease_ms, popped[j])
      granted[#granted + 1] = popped[j]
      granted[#granted + 1] = popped[j + 1]
    end
    free = free - #popped / 2
  end
  if free > 0 then
    local best = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    if #best > 0 then wants = math.floor(tonumber(best[2]) / 4294967296) end
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local next_due = -1
if #nxt > 0 then
  next_due = tonumber(nxt[2]) - now
  if next_due < 0 then next_due = 0 end
end
return {now, next_due, granted, expired, wants, redis.call('HGET', KEYS[1], 'tenant') or ''}
