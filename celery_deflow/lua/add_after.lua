-- add_after: creates a step (with its tasks) that runs right after the calling phase. The caller is one live
-- attempt: task position ARGV[2], attempt ARGV[3] of the phase ARGV[1] (hooks: position 0, attempt 1, lease
-- ARGV[4]). ARGV[5] numbers the attempt's calls; a replay of the same call returns the first outcome.
-- KEYS[1] workflow base key
-- ARGV[1] calling phase token   ARGV[2] position   ARGV[3] attempt   ARGV[4] lease id   ARGV[5] call number
-- ARGV[6] new step id   ARGV[7] name   ARGV[8] handler path   ARGV[9] data JSON   ARGV[10] options JSON
-- ARGV[11] attempts per task   ARGV[12] has before_all ('1'|'0')   ARGV[13] has after_all ('1'|'0')
-- ARGV[14] running ttl (ms)   ARGV[15..] task data (JSON each)
-- Returns {'ok', sid, step id, index, key} or {'closed'} when the caller's attempt is no longer live.
local base = KEYS[1]
local token = ARGV[1]
local m = redis.call('HMGET', base, 'status', 'cur', 'id')
if m[1] ~= 'running' or m[2] ~= token then
  return {'closed'}
end
local caller, kind = parse_token(token)
if not in_flight(base, caller, kind, ARGV[2], ARGV[3], ARGV[4]) then
  return {'closed'}
end
local dedup = base .. ':dedup'
local mark = token .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[5]
local prev = redis.call('HGET', dedup, mark)
if prev then
  local v = redis.call('HMGET', step_key(base, prev), 'id', 'index', 'key')
  return {'ok', tonumber(prev), v[1], v[2], v[3]}
end
local sid = redis.call('HINCRBY', base, 'sids', 1)
local parent = step_key(base, caller)
local pv = redis.call('HMGET', parent, 'index', 'key')
local index = pv[1] .. '.' .. redis.call('HINCRBY', parent, 'kids', 1)
local key = m[3] .. ':' .. ARGV[6]
local s = step_key(base, sid)
local total = #ARGV - 14
redis.call('HSET', s, 'sid', sid, 'id', ARGV[6], 'key', key, 'wf', m[3], 'name', ARGV[7], 'handler', ARGV[8],
  'data', ARGV[9], 'options', ARGV[10], 'max', ARGV[11], 'hb', ARGV[12], 'ha', ARGV[13], 'index', index,
  'parent', pv[2], 'total', total, 'done', 0, 'failed', 0, 'kids', 0, 'tph', 'pending')
for i = 15, #ARGV, 1000 do
  redis.call('RPUSH', s .. ':data', unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HINCRBY', base, 'total', total)
local ins = base .. ':ins:' .. token
redis.call('ZADD', ins, 0, string.format('%012d:%06d:%06d:%d', tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[5]), sid))
redis.call('HSET', dedup, mark, sid)
touch(ARGV[14], s, s .. ':data', ins, dedup)
return {'ok', sid, ARGV[6], index, key}
