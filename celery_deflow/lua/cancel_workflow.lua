-- cancel_workflow: stops a pending or running workflow: status 'cancelled', nothing more is dispatched, every
-- key gets the result ttl, and an 'error' event is published.
-- KEYS[1] workflow base key   KEYS[2] running-workflows zset
-- ARGV[1] now (ms)   ARGV[2] result ttl (ms)   ARGV[3] error event (JSON)
-- Returns {'cancelled'}, or {'noop', status} when there was nothing to cancel ('missing': unknown workflow).
local base = KEYS[1]
local m = redis.call('HMGET', base, 'status', 'id', 'chan')
if m[1] ~= 'running' and m[1] ~= 'pending' then
  return {'noop', m[1] or 'missing'}
end
redis.call('HSET', base, 'status', 'cancelled', 'finished', ARGV[1], 'cur', '')
redis.call('ZREM', KEYS[2], m[2])
expire_all(base, ARGV[2])
redis.call('PUBLISH', m[3], ARGV[3])
return {'cancelled'}
