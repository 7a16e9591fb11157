-- leadpulse: one atomic, idempotent feature update per event (event time).
--
-- KEYS: 1 h (hash: counters, profile, clocks)   2 e (zset: event ids seen, by ts)
--       3 v (zset: property views "eid|pid")     4 a (zset: areas, by last ts)
--       5 x (hash: reply cache of in-flight events, deleted when the batch commits)
--       6 s (hash: score state, read only)       7 n (list: learning snapshots, read only)
--       8 p (zset: properties viewed, by last view ts)
-- ARGV[1]: the event, cmsgpack array: event_id type ts property_id area source side
--          timeline channel dwell_s agent_id flags ("stop" = a STOP reply)
--          [declared profile values, in features.profile order]
-- Config (windows in seconds, caps) is baked in when the script is loaded (placeholders).
-- Reply: {status, core, score_state (HMGET of STATE_FIELDS), snapshots}
--   status 1 applied, 0 duplicate event_id, 2 replay of an applied but uncommitted
--   event (core from cache), 3 late (older than the dedup horizon: cannot be made idempotent)
--   core is one string, fields joined by \31: numeric features then raw fields
--   (see features/definitions.py)

local h, e, v, a, x, s, n, p = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ARGV = cmsgpack.unpack(ARGV[1])
local eid, etype, ts = ARGV[1], ARGV[2], tonumber(ARGV[3])
local outcome = {appointment_set=1, appointment_held=1, agreement_signed=1, closed=1, lost=1}

local function state()
  local snaps = {}
  if outcome[etype] then snaps = redis.call('LRANGE', n, 0, -1) end
  return redis.call('HMGET', s, @STATE_FIELDS@), snaps
end

local cached = redis.call('HGET', x, eid)
if cached then
  local st, snaps = state()
  return {2, cached, st, snaps}
end
if redis.call('ZSCORE', e, eid) then return {0} end

-- the lead's hash is read once and written once: Lua calls cost ~1-2 us each
local hv = {}
local raw = redis.call('HGETALL', h)
for i = 1, #raw, 2 do hv[raw[i]] = raw[i + 1] end
local upd, nupd = {}, 0
local function num(k) return tonumber(hv[k] or '0') end
local function put(k, value)
  hv[k] = value
  nupd = nupd + 2
  upd[nupd - 1] = k
  upd[nupd] = value
end

local last = num('last_ts')
local horizon = @DEDUP_HORIZON_S@
if last > 0 and ts < last - horizon then return {3} end

local w_short, w_mid, w_long = @W_SHORT_S@, @W_MID_S@, @W_LONG_S@
local w_repeat, w_distinct = @W_REPEAT_S@, @W_DISTINCT_S@
local silence, flag_window = @REACTIVATION_SILENCE_S@, @REACTIVATION_FLAG_S@
local max_members, idle, tau = @MAX_MEMBERS@, @IDLE_EXPIRE_S@, @REPLY_TAU_S@
local pid, area, channel, agent = ARGV[4], ARGV[5], ARGV[9], ARGV[11]

local now = math.max(last, ts)
redis.call('ZADD', e, ts, eid)
redis.call('ZREMRANGEBYSCORE', e, '-inf', '(' .. (now - horizon))

local reactivated_now = 0
if ts > last then
  if last > 0 then
    put('gap_s', ts - last)
    if ts - last >= silence then
      put('react_ts', ts)
      reactivated_now = 1
    end
  end
  put('last_ts', ts)
end

local function incr(field) put(field, num(field) + 1) end
incr('n')
local function block(list)
  local cur = hv['blocked'] or ''
  for c in string.gmatch(list, '[^,]+') do
    if not string.find(',' .. cur .. ',', ',' .. c .. ',', 1, true) then
      cur = (cur == '' and c) or (cur .. ',' .. c)
    end
  end
  put('blocked', cur)
end
local touched_a = false
local function note_area()
  if area ~= '' then
    redis.call('ZADD', a, 'GT', ts, area)
    touched_a = true
  end
end
local function reply(ch)
  incr('replies')
  if ts >= num('last_reply_ts') then
    put('last_reply_ts', ts)
    put('last_reply_channel', ch)
    put('unanswered', 0)
  end
end

local counters = @COUNTERS@
if counters[etype] then incr(counters[etype]) end
local hand_raises = {inquiry=1, showing_request=1, valuation_request=1, call_request=1}
if hand_raises[etype] and ts >= num('last_hand_ts') then put('last_hand_ts', ts) end

local viewed = false
if etype == 'property_view' then
  if pid ~= '' then
    redis.call('ZADD', v, ts, eid .. '|' .. pid)
    redis.call('ZADD', p, 'GT', ts, pid)
    viewed = true
  end
  note_area()
  if ts >= last then
    put('last_property', pid)
    put('last_area', area)
  end
elseif etype == 'property_save' or etype == 'search' or etype == 'saved_search' then
  note_area()
  if ts >= last and area ~= '' then put('last_area', area) end
elseif etype == 'reply' then
  if ARGV[12] == 'stop' then block(channel ~= '' and channel or 'sms') else reply(channel) end
elseif etype == 'call_answered' then
  reply('call')
elseif etype == 'agent_contact' or etype == 'call_missed' then
  if ts > num('last_reply_ts') then incr('unanswered') end
elseif etype == 'unsubscribe' or etype == 'bounce' then
  block(channel ~= '' and channel ~= 'web' and channel or 'email')
elseif etype == 'opt_out' then
  block(channel ~= '' and channel ~= 'web' and channel or 'email,sms,call')
elseif etype == 'invalid_contact' then
  put('invalid_contact', 1)
  block(channel ~= '' and channel ~= 'web' and channel or 'call,sms')
elseif etype == 'not_interested' then
  put('not_interested', 1)
end
if pid ~= '' and etype ~= 'property_view' and ts >= last then put('last_property', pid) end

-- profile: newest event time wins (an older event cannot overwrite a newer value)
for i, field in ipairs({'source', 'side', 'timeline'}) do
  local value = ARGV[5 + i]
  if value ~= '' and value ~= 'unknown' then
    local at = tonumber(hv[field .. '_ts'] or '-1')
    if ts >= at then
      put(field, value)
      put(field .. '_ts', ts)
    end
  end
end
-- declared profile fields from props (features.profile): newest event time wins too
local props = ARGV[13] or {}
for i = 1, #props do
  local value, field = props[i], 'pp' .. i
  if value ~= '' then
    local at = tonumber(hv[field .. '_ts'] or '-1')
    if ts >= at then
      put(field, value)
      put(field .. '_ts', ts)
    end
  end
end
if agent ~= '' then put('agent_id', agent) end
local dwell = tonumber(ARGV[10])
if dwell > 0 then put('dwell_s', num('dwell_s') + dwell) end
if nupd > 0 then redis.call('HSET', h, unpack(upd)) end

-- trim windows (bounded memory): by event time, then by count; only what changed
if viewed then
  redis.call('ZREMRANGEBYSCORE', v, '-inf', '(' .. (now - math.max(w_long, w_repeat)))
  redis.call('ZREMRANGEBYRANK', v, 0, -(max_members + 1))
  redis.call('ZREMRANGEBYSCORE', p, '-inf', '(' .. (now - w_distinct))
  redis.call('ZREMRANGEBYRANK', p, 0, -(max_members + 1))
end
if touched_a then
  redis.call('ZREMRANGEBYSCORE', a, '-inf', '(' .. (now - w_distinct))
  redis.call('ZREMRANGEBYRANK', a, 0, -(max_members + 1))
end
if num('n') % 64 == 0 then redis.call('ZREMRANGEBYRANK', e, 0, -(max_members * 4 + 1)) end

-- features as of `now` (the lead's newest event time); windows include their lower edge
-- repeat views: only the members inside the (short) repeat window are read
local recent = redis.call('ZRANGEBYSCORE', v, now - w_repeat, '+inf')
local repeat_counts = {}
local best, best_pid = 0, ''
for i = 1, #recent do
  local prop = string.match(recent[i], '|(.*)$')
  local c = (repeat_counts[prop] or 0) + 1
  repeat_counts[prop] = c
  if c > best or (c == best and prop < best_pid) then best, best_pid = c, prop end
end

local reply_recency = 0
if num('last_reply_ts') > 0 then reply_recency = math.exp(-(now - num('last_reply_ts')) / tau) end
local reactivated = 0
if num('react_ts') > 0 and now - num('react_ts') <= flag_window then reactivated = 1 end

-- one string, fields joined by \31 (unit separator): numeric features in NUMERIC order
-- (the list is generated from features/definitions.py), then RAW_FIELDS, then the
-- declared profile fields; stored values go out as they are stored (no round trip)
local function f(k) return hv[k] or '0' end
local out = {@NUMERIC_EXPR@}
local raw_fields = {
  hv['source'] or '', hv['side'] or '', hv['timeline'] or '', string.format('%.17g', now),
  best_pid, reactivated_now, hv['blocked'] or '', hv['last_reply_channel'] or '',
  f('not_interested'), f('invalid_contact'), hv['agent_id'] or '', hv['last_area'] or '',
  hv['last_property'] or '', hv['last_hand_ts'] or '0'}
for i = 1, #raw_fields do out[#out + 1] = raw_fields[i] end
for i = 1, @N_PROPS@ do out[#out + 1] = hv['pp' .. i] or '' end
local packed = table.concat(out, '\31')
redis.call('HSET', x, eid, packed)
for _, k in ipairs({h, e, x}) do redis.call('EXPIRE', k, idle) end
if viewed then
  redis.call('EXPIRE', v, idle)
  redis.call('EXPIRE', p, idle)
end
if touched_a then redis.call('EXPIRE', a, idle) end
local st, snaps = state()
return {1, packed, st, snaps}
