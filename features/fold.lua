-- leadpulse: fold one lead's feature state into another (identify, merge). Atomic, idempotent.
--
-- KEYS 1-8: source h e v a x s n p   KEYS 9-16: target h e v a x s n p
--      17 alias hash of the tenant (source id -> target id)  18 the tenant's hot list
--      19 the source's due index  20 the target's due index
-- ARGV: 1 source lead id  2 target lead id  3 source due member  4 idle expiry seconds
--       5 target due member
-- Returns 1 if state was folded, 0 if there was nothing to fold (already folded or empty).
-- Window sets are unioned (their members carry event ids, so nothing counts twice),
-- counters added, clocks and profile fields take the newest value, consent is the union.

local sh, se, sv, sa, sx, ss, sn, sp = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local th, te, tv, ta, tx, ts_, tn, tp = KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local alias, hot, due, tdue = KEYS[17], KEYS[18], KEYS[19], KEYS[20]
local idle = tonumber(ARGV[4])

redis.call('HSET', alias, ARGV[1], ARGV[2])  -- the pointer: later events of the source go to the target
if redis.call('EXISTS', sh) == 0 then return 0 end

for _, pair in ipairs({{sv, tv}, {sa, ta}, {se, te}, {sp, tp}}) do
  if redis.call('EXISTS', pair[1]) == 1 then
    redis.call('ZUNIONSTORE', pair[2], 2, pair[2], pair[1], 'AGGREGATE', 'MAX')
  end
end

local function hash(k)
  local raw = redis.call('HGETALL', k)
  local t = {}
  for i = 1, #raw, 2 do t[raw[i]] = raw[i + 1] end
  return t
end
local src, dst = hash(sh), hash(th)
local function num(t, k) return tonumber(t[k] or '0') end
local out = {}
local sums = {@SUMS@}  -- generated from features/definitions.py COUNTERS
for _, k in ipairs(sums) do
  if src[k] then out[k] = num(src, k) + num(dst, k) end
end
for _, k in ipairs({'react_ts', 'not_interested', 'invalid_contact'}) do
  if src[k] then out[k] = math.max(num(src, k), num(dst, k)) end
end
if num(src, 'last_reply_ts') > num(dst, 'last_reply_ts') then
  out['last_reply_ts'] = src['last_reply_ts']
  out['last_reply_channel'] = src['last_reply_channel'] or ''
end
if num(src, 'last_ts') > num(dst, 'last_ts') then
  out['last_ts'] = src['last_ts']
  for _, k in ipairs({'last_property', 'last_area'}) do
    if src[k] then out[k] = src[k] end
  end
end
for _, field in ipairs({'source', 'side', 'timeline'@PROFILE_FIELDS@}) do
  if src[field] and num(src, field .. '_ts') > tonumber(dst[field .. '_ts'] or '-1') then
    out[field] = src[field]
    out[field .. '_ts'] = src[field .. '_ts']
  end
end
if src['blocked'] and src['blocked'] ~= '' then
  local cur = dst['blocked'] or ''
  for c in string.gmatch(src['blocked'], '[^,]+') do
    if not string.find(',' .. cur .. ',', ',' .. c .. ',', 1, true) then
      cur = (cur == '' and c) or (cur .. ',' .. c)
    end
  end
  out['blocked'] = cur
end
if (dst['agent_id'] or '') == '' and src['agent_id'] then out['agent_id'] = src['agent_id'] end
local flat = {}
for k, v in pairs(out) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
if #flat > 0 then redis.call('HSET', th, unpack(flat)) end
-- learning snapshots move with the person; the anonymous score record goes away
local snaps = redis.call('LRANGE', sn, 0, -1)
if #snaps > 0 then
  redis.call('RPUSH', tn, unpack(snaps))
  local oldest = nil
  for _, blob in ipairs(snaps) do
    local at = cmsgpack.unpack(blob)['ts']
    if oldest == nil or at < oldest then oldest = at end
  end
  redis.call('ZADD', tdue, 'LT', oldest, ARGV[5])  -- so the target's sweep sees them
end
redis.call('ZREM', hot, ARGV[1])
redis.call('ZREM', due, ARGV[3])
redis.call('DEL', sh, se, sv, sa, ss, sn, sp)  -- not sx: uncommitted replies of the source stay
for _, k in ipairs({th, te, tv, ta, tp, tn}) do redis.call('EXPIRE', k, idle) end
return 1
