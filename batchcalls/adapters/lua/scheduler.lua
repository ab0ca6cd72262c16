-- The account's dial scheduler: which batch creates the next provider call when the
-- calls-per-second limit is the bottleneck. Priority first (a lower number first), then fair
-- among tenants waiting at that priority, then fair among a tenant's batches: start-time fair
-- queueing, each tenant and batch with a virtual time advanced by one per dial, the least going
-- next; a newcomer starts at the virtual time of the last one served, so waiting earns no credit
-- and a bigger concurrency buys no bigger share. Every step is O(log n) in the waiting batches.
-- A batch is registered (`join`) when it could dial; one that no longer can is dropped when its
-- turn comes (the taker reports it), so registrations need not be exact.
-- The keys of levels and tenants are built here from the prefix KEYS[1] (their number varies);
-- they carry its hash tag, so every key the script touches is in one cluster slot.
-- The creation log is a sliding-window log: a sorted set of the instants given out lately, so
-- that no window of window_ms ever holds more than `limit` of them.
-- KEYS: the scheduler's key prefix, the account's creation log, the pacer's mark (the token of the one task taking turns, or 'starting').
-- ARGV[1], the operation, then its arguments:
--   join batch tenant priority  -> 1 when no pacer runs (the caller starts one), else 0
--   take token limit window_ms lookahead_ms hold_ms [batch wants tenant give_back]
--        reports the last turn's batch (wants: its priority, or -1 when it cannot dial) and
--        the creation instant to give back when it placed no call, then takes the next turn:
--        {'grant', batch, at_ms, member} | {'wait', ms} | {'idle'} | {'other'}
--   handoff token               -> 1 when the caller's turn-taking passes to a new pacer task
--   kick                        -> 1 when batches wait and no pacer runs (the caller starts one)
local base, log, mark = KEYS[1], KEYS[2], KEYS[3]
local prios, where, clocks = base .. ':prios', base .. ':where', base .. ':clock'
local START_MS = 10000

local function level(p) return base .. ':p:' .. p end
local function batches(p, t) return base .. ':p:' .. p .. ':t:' .. t end

local function leave(b)
  local w = redis.call('HGET', where, b)
  if not w then return end
  local sep = string.find(w, '|', 1, true)
  local p, t = string.sub(w, 1, sep - 1), string.sub(w, sep + 1)
  redis.call('HDEL', where, b)
  local bk = batches(p, t)
  redis.call('ZREM', bk, b)
  if redis.call('ZCARD', bk) == 0 then
    redis.call('ZREM', level(p), t)
    if redis.call('ZCARD', level(p)) == 0 then redis.call('ZREM', prios, p) end
  end
end

local function join(b, t, p)
  local w = p .. '|' .. t
  if redis.call('HGET', where, b) == w then return end
  leave(b)
  redis.call('HSET', where, b, w)
  local bk, lv = batches(p, t), level(p)
  redis.call('ZADD', bk, tonumber(redis.call('HGET', clocks, bk) or '0'), b)
  if not redis.call('ZSCORE', lv, t) then
    redis.call('ZADD', lv, tonumber(redis.call('HGET', clocks, lv) or '0'), t)
  end
  redis.call('ZADD', prios, tonumber(p), p)
end

local function start_pacer()
  if redis.call('EXISTS', mark) == 1 then return 0 end
  redis.call('SET', mark, 'starting', 'PX', START_MS)
  return 1
end

local op = ARGV[1]
if op == 'join' then
  join(ARGV[2], ARGV[3], ARGV[4])
  return start_pacer()
elseif op == 'kick' then
  if redis.call('ZCARD', prios) == 0 then return 0 end
  return start_pacer()
elseif op == 'handoff' then
  if redis.call('GET', mark) ~= ARGV[2] then return 0 end
  redis.call('SET', mark, 'starting', 'PX', START_MS)
  return 1
end

-- take
local token = ARGV[2]
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local lookahead, hold = tonumber(ARGV[5]), tonumber(ARGV[6])
local current = redis.call('GET', mark)
if current and current ~= token and current ~= 'starting' then return {'other'} end
if ARGV[7] then
  if ARGV[10] ~= '' then redis.call('ZREM', log, ARGV[10]) end
  if tonumber(ARGV[8]) >= 0 then join(ARGV[7], ARGV[9], ARGV[8]) else leave(ARGV[7]) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
local at = now
if redis.call('ZCARD', log) >= limit then
  local nth = redis.call('ZRANGE', log, -limit, -limit, 'WITHSCORES')
  local earliest = tonumber(nth[2]) + window
  if earliest > at then at = earliest end
end
local p, tenant, b
while not b do
  local top = redis.call('ZRANGE', prios, 0, 0)
  if #top == 0 then
    redis.call('DEL', mark)
    return {'idle'}
  end
  p = top[1]
  local ts = redis.call('ZRANGE', level(p), 0, 0)
  if #ts == 0 then
    redis.call('ZREM', prios, p)
  else
    tenant = ts[1]
    local bs = redis.call('ZRANGE', batches(p, tenant), 0, 0)
    if #bs == 0 then redis.call('ZREM', level(p), tenant) else b = bs[1] end
  end
end
if at > now + lookahead then
  redis.call('SET', mark, token, 'PX', at - now + hold)
  return {'wait', at - now}
end
local member = at .. ':' .. token .. ':' .. redis.call('INCR', base .. ':seq')
redis.call('ZADD', log, at, member)
redis.call('PEXPIRE', log, window * 2 + (at - now))
local lv, bk = level(p), batches(p, tenant)
local tv = tonumber(redis.call('ZSCORE', lv, tenant))
redis.call('HSET', clocks, lv, tv)
redis.call('ZADD', lv, tv + 1, tenant)
local bv = tonumber(redis.call('ZSCORE', bk, b))
redis.call('HSET', clocks, bk, bv)
redis.call('ZADD', bk, bv + 1, b)
redis.call('SET', mark, token, 'PX', hold)
return {'grant', b, at, member}
