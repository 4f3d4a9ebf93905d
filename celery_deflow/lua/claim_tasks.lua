-- claim_tasks: takes attempts of tasks of the running tasks phase of step ARGV[1] under one lease, and
-- publishes their next_task events. Only attempts that are due are taken: a first attempt that never
-- started, or attempt a of a task whose attempt a-1 failed. A replay (same lease id) returns the first outcome.
-- The first claim of a message also takes one of its worker node's task_concurrency slots for the step.
-- KEYS[1] workflow base key   KEYS[2] leases zset   KEYS[3] the lease's record (string, JSON)
-- KEYS[4] the step's slots zset
-- ARGV[1] sid   ARGV[2] lease id   ARGV[3] lease expiry (ms)   ARGV[4] running ttl (ms)
-- ARGV[5] slot member "<node>|<id>" to take ('' for none)   ARGV[6] "<node>|"   ARGV[7] slots per node
-- ARGV[8] now (ms)
-- ARGV[9] 'r' then ARGV[10] first position, ARGV[11] end position (exclusive): first attempts of a range
--         'l' then ARGV[10..] pairs (position, attempt): the listed attempts
-- Returns {'ok', '[[pos, attempt, data], ...]'} (one JSON text: the data items are the stored JSON), {'busy'}
-- when the node's slots are all taken, or {'stop'} when the workflow or phase is no longer running.
local base = KEYS[1]
local sid = ARGV[1]
local m = redis.call('HMGET', base, 'status', 'cur', 'id', 'chan')
if m[1] ~= 'running' or m[2] ~= sid .. ':t' then
  return {'stop'}
end
local s = step_key(base, sid)
local stk = s .. ':st'
local prior = redis.call('GET', KEYS[3])
if prior then
  local lease = cjson.decode(prior)
  local again = {}
  for i = 1, #lease.i, 2 do
    local pos = string.format('%d', lease.i[i])
    again[#again + 1] = '[' .. pos .. ',' .. string.format('%d', lease.i[i + 1]) .. ','
      .. redis.call('LINDEX', s .. ':data', pos) .. ']'
  end
  return {'ok', '[' .. table.concat(again, ',') .. ']'}
end
if ARGV[5] ~= '' and not take_slot(KEYS[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[3], ARGV[4]) then
  return {'busy'}
end
local sv = redis.call('HMGET', s, 'id', 'key')
local out = {}
local items = {}
local events = {}
local head = '{"id":"' .. sv[1] .. '-'
local mid = '","workflow_id":"' .. m[3] .. '","step_key":"' .. sv[2] .. '","attempt":'

local function take(pos, attempt, data)
  out[#out + 1] = '[' .. pos .. ',' .. attempt .. ',' .. data .. ']'
  items[#items + 1] = pos
  items[#items + 1] = attempt
  events[#events + 1] = head .. pos .. mid .. attempt .. ',"data":' .. data .. '}'
end

if ARGV[9] == 'r' then
  local lo = tonumber(ARGV[10])
  local data = redis.call('LRANGE', s .. ':data', lo, tonumber(ARGV[11]) - 1)
  for i = 1, #data do
    local pos = lo + i - 1
    if redis.call('HSETNX', stk, pos, '1') == 1 then
      take(pos, 1, data[i])
    end
  end
else
  for i = 10, #ARGV, 2 do
    local pos = ARGV[i]
    local attempt = tonumber(ARGV[i + 1])
    if redis.call('HGET', stk, pos) == (attempt - 1) .. 'f' then
      redis.call('HSET', stk, pos, attempt)
      take(tonumber(pos), attempt, redis.call('LINDEX', s .. ':data', pos))
    end
  end
end
if #items > 0 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('SET', KEYS[3], cjson.encode({b = base, s = sid, k = 't', i = items}), 'PX', ARGV[4])
  touch(ARGV[4], stk)
  redis.call('PUBLISH', m[4], '{"type":"next_task","tasks":[' .. table.concat(events, ',') .. ']}')
end
return {'ok', '[' .. table.concat(out, ',') .. ']'}
