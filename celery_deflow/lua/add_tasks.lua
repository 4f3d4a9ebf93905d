-- add_tasks: appends tasks to step ARGV[6], called from a live attempt (see add_after for ARGV[1..5]).
-- A replay of the same call returns the first outcome.
-- KEYS[1] workflow base key
-- ARGV[1] calling phase token   ARGV[2] position   ARGV[3] attempt   ARGV[4] lease id   ARGV[5] call number
-- ARGV[6] target sid   ARGV[7] running ttl (ms)   ARGV[8] when the dispatch is overdue (ms)
-- ARGV[9..] task data (JSON each)
-- Returns {'ok', first position, end position, running (0|1)}: running = 1 when the target's tasks phase is
-- under way (the caller dispatches the new range, recorded as owed until then); {'closed'} when the caller is
-- no longer live;
-- {'ended'} when the target's tasks phase is over.
local base = KEYS[1]
local token = ARGV[1]
local m = redis.call('HMGET', base, 'status', 'cur')
if m[1] ~= 'running' or m[2] ~= token then
  return {'closed'}
end
local caller, kind = parse_token(token)
if not in_flight(base, caller, kind, ARGV[2], ARGV[3], ARGV[4]) then
  return {'closed'}
end
local dedup = base .. ':dedup'
local mark = token .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[5]
local t = step_key(base, ARGV[6])
local phase = redis.call('HGET', t, 'tph')
local prev = redis.call('HGET', dedup, mark)
if prev then
  local lo, hi = string.match(prev, '^(%d+):(%d+)$')
  return {'ok', tonumber(lo), tonumber(hi), phase == 'running' and 1 or 0}
end
if phase == 'closed' then
  return {'ended'}
end
local lo = tonumber(redis.call('HGET', t, 'total'))
local n = #ARGV - 8
for i = 9, #ARGV, 1000 do
  redis.call('RPUSH', t .. ':data', unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HINCRBY', t, 'total', n)
redis.call('HINCRBY', base, 'total', n)
redis.call('HSET', dedup, mark, lo .. ':' .. (lo + n))
touch(ARGV[7], t .. ':data', dedup)
if phase == 'running' and n > 0 then
  owe(base, 'r|' .. ARGV[6] .. '|' .. lo .. '|' .. (lo + n), ARGV[8], ARGV[7])
end
return {'ok', lo, lo + n, phase == 'running' and 1 or 0}
