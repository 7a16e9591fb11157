-- leadpulse: one atomic, idempotent feature update per event (event time).
--
-- KEYS: 1 h (hash: counters, profile, clocks)   2 e (zset: event ids seen, by ts)
--       3 v (zset: property views "eid|pid")     4 a (zset: areas, by last ts)
--       5 x (hash: reply cache of in-flight events, deleted when the batch commits)
--       6 s (hash: score state, read only)       7 n (list: learning snapshots, read only)
-- ARGV: 1 event_id 2 type 3 ts 4 property_id 5 area 6 source 7 side 8 timeline
--       9 channel 10 dwell_s 11 agent_id 12 flags ("stop" = STOP reply)
--       13 w_short 14 w_mid 15 w_long 16 w_repeat 17 w_distinct (seconds)
--       18 reactivation_silence_s 19 reactivation_flag_s 20 dedup_horizon_s
--       21 max_members 22 idle_expire_s 23 reply_tau_s
-- Reply: {status, core, score_state, snapshots}
--   status 1 applied, 0 duplicate event_id, 2 replay of an applied but uncommitted
--   event (core from cache), 3 late (older than the dedup horizon: cannot be made idempotent)
--   core is cmsgpack: numeric features then raw fields (see features/definitions.py)

local h, e, v, a, x, s, n = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local eid, etype, ts = ARGV[1], ARGV[2], tonumber(ARGV[3])
local outcome = {appointment_set=1, appointment_held=1, agreement_signed=1, closed=1, lost=1}

local function state()
  local snaps = {}
  if outcome[etype] then snaps = redis.call('LRANGE', n, 0, -1) end
  return redis.call('HGETALL', s), snaps
end

local cached = redis.call('HGET', x, eid)
if cached then
  local st, snaps = state()
  return {2, cached, st, snaps}
end
if redis.call('ZSCORE', e, eid) then return {0} end

local last = tonumber(redis.call('HGET', h, 'last_ts') or '0')
local horizon = tonumber(ARGV[20])
if last > 0 and ts < last - horizon then return {3} end

local w_short, w_mid, w_long = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local w_repeat, w_distinct = tonumber(ARGV[16]), tonumber(ARGV[17])
local silence, flag_window = tonumber(ARGV[18]), tonumber(ARGV[19])
local max_members, idle, tau = tonumber(ARGV[21]), tonumber(ARGV[22]), tonumber(ARGV[23])
local pid, area, channel, agent = ARGV[4], ARGV[5], ARGV[9], ARGV[11]

local now = math.max(last, ts)
redis.call('ZADD', e, ts, eid)
redis.call('ZREMRANGEBYSCORE', e, '-inf', '(' .. (now - horizon))

local reactivated_now = 0
if ts > last then
  if last > 0 then
    redis.call('HSET', h, 'gap_s', ts - last)
    if ts - last >= silence then
      redis.call('HSET', h, 'react_ts', ts)
      reactivated_now = 1
    end
  end
  redis.call('HSET', h, 'last_ts', ts)
end

local function incr(field) redis.call('HINCRBY', h, field, 1) end
local function block(list)
  local cur = redis.call('HGET', h, 'blocked') or ''
  for c in string.gmatch(list, '[^,]+') do
    if not string.find(',' .. cur .. ',', ',' .. c .. ',', 1, true) then
      cur = (cur == '' and c) or (cur .. ',' .. c)
    end
  end
  redis.call('HSET', h, 'blocked', cur)
end
local function note_area()
  if area ~= '' then redis.call('ZADD', a, 'GT', ts, area) end
end
local function reply(ch)
  incr('replies')
  if ts >= tonumber(redis.call('HGET', h, 'last_reply_ts') or '0') then
    redis.call('HSET', h, 'last_reply_ts', ts, 'last_reply_channel', ch, 'unanswered', 0)
  end
end

local counters = {
  property_save='saves', property_unsave='unsaves', search='searches',
  saved_search='saved_searches', share='shares', mortgage_calc='mortgage_calcs',
  valuation_view='valuation_views', inquiry='inquiries', showing_request='showing_requests',
  valuation_request='valuation_requests', call_request='call_requests',
  email_open='email_opens', email_click='email_clicks', unsubscribe='unsubscribes',
  bounce='bounces', opt_out='opt_outs',
}
if counters[etype] then incr(counters[etype]) end

if etype == 'property_view' then
  if pid ~= '' then redis.call('ZADD', v, ts, eid .. '|' .. pid) end
  note_area()
  if ts >= last then redis.call('HSET', h, 'last_property', pid, 'last_area', area) end
elseif etype == 'property_save' or etype == 'search' or etype == 'saved_search' then
  note_area()
  if ts >= last and area ~= '' then redis.call('HSET', h, 'last_area', area) end
elseif etype == 'reply' then
  if ARGV[12] == 'stop' then block(channel ~= '' and channel or 'sms') else reply(channel) end
elseif etype == 'call_answered' then
  reply('call')
elseif etype == 'agent_contact' or etype == 'call_missed' then
  if ts > tonumber(redis.call('HGET', h, 'last_reply_ts') or '0') then incr('unanswered') end
elseif etype == 'unsubscribe' or etype == 'bounce' then
  block(channel ~= '' and channel ~= 'web' and channel or 'email')
elseif etype == 'opt_out' then
  block(channel ~= '' and channel ~= 'web' and channel or 'email,sms,call')
elseif etype == 'invalid_contact' then
  redis.call('HSET', h, 'invalid_contact', 1)
  block(channel ~= '' and channel ~= 'web' and channel or 'call,sms')
elseif etype == 'not_interested' then
  redis.call('HSET', h, 'not_interested', 1)
end
if pid ~= '' and etype ~= 'property_view' and ts >= last then
  redis.call('HSET', h, 'last_property', pid)
end

-- profile: newest event time wins (an older event cannot overwrite a newer value)
for i, field in ipairs({'source', 'side', 'timeline'}) do
  local value = ARGV[5 + i]
  if value ~= '' and value ~= 'unknown' then
    local at = tonumber(redis.call('HGET', h, field .. '_ts') or '-1')
    if ts >= at then redis.call('HSET', h, field, value, field .. '_ts', ts) end
  end
end
if agent ~= '' then redis.call('HSET', h, 'agent_id', agent) end
local dwell = tonumber(ARGV[10])
if dwell > 0 then redis.call('HINCRBYFLOAT', h, 'dwell_s', dwell) end

-- trim windows (bounded memory): by event time, then by count
redis.call('ZREMRANGEBYSCORE', v, '-inf', '(' .. (now - math.max(w_long, w_repeat, w_distinct)))
redis.call('ZREMRANGEBYRANK', v, 0, -(max_members + 1))
redis.call('ZREMRANGEBYSCORE', a, '-inf', '(' .. (now - w_distinct))
redis.call('ZREMRANGEBYRANK', a, 0, -(max_members + 1))
redis.call('ZREMRANGEBYRANK', e, 0, -(max_members * 4 + 1))

-- features as of `now` (the lead's newest event time); windows include their lower edge
local recent = redis.call('ZRANGEBYSCORE', v, now - math.max(w_repeat, w_distinct), '+inf', 'WITHSCORES')
local repeat_counts, distinct, n_distinct = {}, {}, 0
local best, best_pid = 0, ''
for i = 1, #recent, 2 do
  local p = string.match(recent[i], '|(.*)$')
  local at = tonumber(recent[i + 1])
  if at >= now - w_repeat then
    local c = (repeat_counts[p] or 0) + 1
    repeat_counts[p] = c
    if c > best or (c == best and p < best_pid) then best, best_pid = c, p end
  end
  if at >= now - w_distinct and not distinct[p] then
    distinct[p] = true
    n_distinct = n_distinct + 1
  end
end

local f = redis.call('HGETALL', h)
local hv = {}
for i = 1, #f, 2 do hv[f[i]] = f[i + 1] end
local function num(k) return tonumber(hv[k] or '0') end
local reply_recency = 0
if num('last_reply_ts') > 0 then reply_recency = math.exp(-(now - num('last_reply_ts')) / tau) end
local reactivated = 0
if num('react_ts') > 0 and now - num('react_ts') <= flag_window then reactivated = 1 end

local core = {
  redis.call('ZCOUNT', v, now - w_short, '+inf'),
  redis.call('ZCOUNT', v, now - w_mid, '+inf'),
  redis.call('ZCOUNT', v, now - w_long, '+inf'),
  best, n_distinct,
  redis.call('ZCOUNT', a, now - w_distinct, '+inf'),
  num('saves'), num('unsaves'), num('searches'), num('saved_searches'), num('shares'),
  num('mortgage_calcs'), num('valuation_views'), num('inquiries'), num('showing_requests'),
  num('valuation_requests'), num('call_requests'), num('email_opens'), num('email_clicks'),
  num('replies'), reply_recency, num('dwell_s') / 60, num('gap_s') / 86400, reactivated,
  num('unsubscribes'), num('bounces'), num('opt_outs'), num('unanswered'),
  -- raw fields (RAW_FIELDS)
  hv['source'] or '', hv['side'] or '', hv['timeline'] or '', now, best_pid,
  tostring(reactivated_now), hv['blocked'] or '', hv['last_reply_channel'] or '',
  hv['not_interested'] or '0', hv['invalid_contact'] or '0', hv['agent_id'] or '',
  hv['last_area'] or '', hv['last_property'] or '',
}
local packed = cmsgpack.pack(core)
redis.call('HSET', x, eid, packed)
for _, k in ipairs({h, e, v, a, x}) do redis.call('EXPIRE', k, idle) end
local st, snaps = state()
return {1, packed, st, snaps}
