-- delete_workflow: removes every key of a workflow (if_exist="replace"). A pending or running one is
-- cancelled first: its subscribers get the 'error' event ARGV[1], and its workers find nothing left to do.
-- KEYS[1] workflow base key   KEYS[2] running-workflows zset   KEYS[3] the name's workflow set
-- ARGV[1] error event (JSON)   ARGV[2] workflow id
-- Returns {status} of the deleted workflow ('missing' when it was already gone).
local base = KEYS[1]
local m = redis.call('HMGET', base, 'status', 'chan')
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
if not m[1] then
  return {'missing'}
end
if m[1] == 'running' or m[1] == 'pending' then
  redis.call('PUBLISH', m[2], ARGV[1])
end
local keep, work = workflow_keys(base)
for _, key in ipairs(work) do
  redis.call('DEL', key)
end
for _, key in ipairs(keep) do
  redis.call('DEL', key)
end
return {m[1]}
