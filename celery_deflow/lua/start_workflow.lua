-- start_workflow: a stored, pending workflow becomes running and moves to its first phase.
-- KEYS[1] workflow base key   KEYS[2] running-workflows zset
-- ARGV[1] now (ms)            ARGV[2] result ttl (ms)
-- Returns {'launch', token, total} | {'done'} | {'stale', status}. A replay returns {'stale', 'running'}.
local base = KEYS[1]
local status = redis.call('HGET', base, 'status')
if status ~= 'pending' then
  return {'stale', status or 'missing'}
end
redis.call('HSET', base, 'status', 'running', 'started', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], redis.call('HGET', base, 'id'))
return pick_next(base, KEYS[2], ARGV[1], ARGV[2])
