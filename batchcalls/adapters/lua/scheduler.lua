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
-- A tenant may have ceilings (`limits`: calls per second, concurrent calls). A tenant at one is
-- parked, out of the running, until it may dial again (its next instant, or a recheck after
-- RECHECK_MS for concurrency), and keeps its virtual time. Its live calls are counted in a set
-- (call ids, and a turn's member until the turn's call is known), so a lost report over-counts
-- (stays under the ceiling) rather than under-counts.
-- ARGV[1], the operation, then its arguments:
--   settle batch tenant wants n released...  frees the released calls' places under the
--        tenant's ceiling and registers the batch when it wants a turn (wants: the priority of
--        its next call, or -1) -> 1 when no pacer runs (the caller starts one), else 0
--   take token limit window_ms lookahead_ms hold_ms tolerance_ms batch wants tenant give_back
--        member call   reports the last turn (batch '' when none: its batch, what it wants now,
--        the creation instant to give back when it placed no call, the turn's member and the
--        call it placed), then takes the next turn:
--        {'grant', batch, at_ms, member, tenant} | {'wait', ms} | {'idle'} | {'other'}
--   limits tenant calls_per_second concurrent_calls   (0: no ceiling)
--   handoff token               -> 1 when the caller's turn-taking passes to a new pacer task
--   kick                        -> 1 when batches wait and no pacer runs (the caller starts one)
local base, log, mark = KEYS[1], KEYS[2], KEYS[3]
local prios, where, clocks = base .. ':prios', base .. ':where', base .. ':clock'
local parked, parked_vt, limits = base .. ':parked', base .. ':parked-vt', base .. ':limits'
local START_MS = 10000
local RECHECK_MS = 100

local function level(p) return base .. ':p:' .. p end
local function batches(p, t) return base .. ':p:' .. p .. ':t:' .. t end
local function live(t) return base .. ':live:' .. t end
local function tenant_log(t) return base .. ':log:' .. t end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

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
  if not redis.call('ZSCORE', lv, t) and not redis.call('ZSCORE', parked, w) then
    redis.call('ZADD', lv, tonumber(redis.call('HGET', clocks, lv) or '0'), t)
    redis.call('ZADD', prios, tonumber(p), p)
  end
end

local function start_pacer()
  if redis.call('EXISTS', mark) == 1 then return 0 end
  redis.call('SET', mark, 'starting', 'PX', START_MS)
  return 1
end

-- A tenant's ceilings: calls per second (count per window_ms) and concurrent calls; 0: none.
local function ceilings(t, tolerance)
  local v = redis.call('HGET', limits, t)
  if not v then return 0, 0, 0 end
  local sep = string.find(v, '|', 1, true)
  local cps, conc = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  if cps <= 0 then return 0, 0, conc end
  if cps < 1 then return 1, math.floor(1000 / cps) + tolerance, conc end
  return math.floor(cps), 1000 + tolerance, conc
end

-- When the tenant may dial next (now when it may), under its ceilings.
local function tenant_ready_at(t, now, tolerance)
  local count, twindow, conc = ceilings(t, tolerance)
  if conc > 0 and redis.call('ZCARD', live(t)) >= conc then return now + RECHECK_MS end
  if count > 0 then
    local tl = tenant_log(t)
    redis.call('ZREMRANGEBYSCORE', tl, '-inf', now - twindow)
    if redis.call('ZCARD', tl) >= count then
      local nth = redis.call('ZRANGE', tl, -count, -count, 'WITHSCORES')
      return math.max(now + 1, tonumber(nth[2]) + twindow)
    end
  end
  return now
end

local function park(p, t, untill)
  local lv, w = level(p), p .. '|' .. t
  redis.call('HSET', parked_vt, w, redis.call('ZSCORE', lv, t))
  redis.call('ZREM', lv, t)
  if redis.call('ZCARD', lv) == 0 then redis.call('ZREM', prios, p) end
  redis.call('ZADD', parked, untill, w)
end

local function unpark_due(now)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', parked, '-inf', now)) do
    local sep = string.find(w, '|', 1, true)
    local p, t = string.sub(w, 1, sep - 1), string.sub(w, sep + 1)
    local vt = tonumber(redis.call('HGET', parked_vt, w) or '0')
    redis.call('ZREM', parked, w)
    redis.call('HDEL', parked_vt, w)
    if redis.call('ZCARD', batches(p, t)) > 0 then
      local clock = tonumber(redis.call('HGET', clocks, level(p)) or '0')
      redis.call('ZADD', level(p), math.max(vt, clock), t)
      redis.call('ZADD', prios, tonumber(p), p)
    end
  end
end

-- Nothing may dial now: wait for the earliest parked tenant, or stop when none is parked.
local function nothing_now(token, now, hold)
  local first = redis.call('ZRANGE', parked, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('DEL', mark)
    return {'idle'}
  end
  local wait = math.max(1, tonumber(first[2]) - now)
  redis.call('SET', mark, token, 'PX', wait + hold)
  return {'wait', wait}
end

local op = ARGV[1]
if op == 'settle' then
  local n = tonumber(ARGV[5])
  if n > 0 then redis.call('ZREM', live(ARGV[3]), unpack(ARGV, 6, 5 + n)) end
  if tonumber(ARGV[4]) < 0 then
    leave(ARGV[2])
    return 0
  end
  join(ARGV[2], ARGV[3], ARGV[4])
  return start_pacer()
elseif op == 'limits' then
  if tonumber(ARGV[3]) <= 0 and tonumber(ARGV[4]) <= 0 then
    redis.call('HDEL', limits, ARGV[2])
  else
    redis.call('HSET', limits, ARGV[2], ARGV[3] .. '|' .. ARGV[4])
  end
  return 0
elseif op == 'kick' then
  if redis.call('ZCARD', prios) == 0 and redis.call('ZCARD', parked) == 0 then return 0 end
  return start_pacer()
elseif op == 'handoff' then
  if redis.call('GET', mark) ~= ARGV[2] then return 0 end
  redis.call('SET', mark, 'starting', 'PX', START_MS)
  return 1
end

-- take
local token = ARGV[2]
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local lookahead, hold, tolerance = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local current = redis.call('GET', mark)
if current and current ~= token and current ~= 'starting' then return {'other'} end
if ARGV[8] ~= '' then
  local rb, rt, turn_member, placed = ARGV[8], ARGV[10], ARGV[12], ARGV[13]
  if ARGV[11] ~= '' then
    redis.call('ZREM', log, ARGV[11])
    redis.call('ZREM', tenant_log(rt), ARGV[11])
    if redis.call('GET', base .. ':last') == string.match(ARGV[11], '^(%d+):') then
      redis.call('DEL', base .. ':last')
    end
  end
  if redis.call('ZREM', live(rt), turn_member) == 1 and placed ~= '' then
    redis.call('ZADD', live(rt), now_ms(), placed)
  end
  if tonumber(ARGV[9]) >= 0 then join(rb, rt, ARGV[9]) else leave(rb) end
end
local now = now_ms()
unpark_due(now)
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
-- Turns are spaced evenly over the window as well, not given out in a burst at its start: a
-- burst's last calls would be created late, each `place_call` waiting for the one before it.
local last = tonumber(redis.call('GET', base .. ':last') or '0')
local at = math.max(now, last + math.floor((window - tolerance) / limit))
if redis.call('ZCARD', log) >= limit then
  local nth = redis.call('ZRANGE', log, -limit, -limit, 'WITHSCORES')
  local earliest = tonumber(nth[2]) + window
  if earliest > at then at = earliest end
end
if at > now + lookahead then
  if redis.call('ZCARD', prios) == 0 then return nothing_now(token, now, hold) end
  redis.call('SET', mark, token, 'PX', at - now + hold)
  return {'wait', at - now}
end
local p, tenant, b
while not b do
  local top = redis.call('ZRANGE', prios, 0, 0)
  if #top == 0 then return nothing_now(token, now, hold) end
  p = top[1]
  local ts = redis.call('ZRANGE', level(p), 0, 0)
  if #ts == 0 then
    redis.call('ZREM', prios, p)
  else
    tenant = ts[1]
    local bs = redis.call('ZRANGE', batches(p, tenant), 0, 0)
    local ready_at = tenant_ready_at(tenant, at, tolerance)
    if #bs == 0 then
      redis.call('ZREM', level(p), tenant)
    elseif ready_at > at then
      park(p, tenant, ready_at)
    else
      b = bs[1]
    end
  end
end
local member = at .. ':' .. token .. ':' .. redis.call('INCR', base .. ':seq')
redis.call('SET', base .. ':last', at, 'PX', window * 2)
redis.call('ZADD', log, at, member)
redis.call('PEXPIRE', log, window * 2 + (at - now))
local count, twindow, conc = ceilings(tenant, tolerance)
if count > 0 then
  redis.call('ZADD', tenant_log(tenant), at, member)
  redis.call('PEXPIRE', tenant_log(tenant), twindow * 2 + (at - now))
end
if conc > 0 then redis.call('ZADD', live(tenant), now, member) end
local lv, bk = level(p), batches(p, tenant)
local tv = tonumber(redis.call('ZSCORE', lv, tenant))
redis.call('HSET', clocks, lv, tv)
redis.call('ZADD', lv, tv + 1, tenant)
local bv = tonumber(redis.call('ZSCORE', bk, b))
redis.call('HSET', clocks, bk, bv)
redis.call('ZADD', bk, bv + 1, b)
redis.call('SET', mark, token, 'PX', hold)
return {'grant', b, at, member, tenant}
