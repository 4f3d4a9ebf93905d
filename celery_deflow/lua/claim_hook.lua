-- claim_hook: takes the single run of a before_all ('b') or after_all ('a') phase under a lease.
-- KEYS[1] workflow base key   KEYS[2] leases zset   KEYS[3] the lease's record
-- ARGV[1] sid   ARGV[2] kind ('b'|'a')   ARGV[3] lease id   ARGV[4] lease expiry (ms)   ARGV[5] record ttl (ms)
-- Returns {'ok'} (also for a replay), {'busy'} when the hook already ran or runs elsewhere, or {'stop'}.
local base = KEYS[1]
local m = redis.call('HMGET', base, 'status', 'cur')
if m[1] ~= 'running' or m[2] ~= ARGV[1] .. ':' .. ARGV[2] then
  return {'stop'}
end
local s = step_key(base, ARGV[1])
if redis.call('HSETNX', s, ARGV[2] .. 'st', ARGV[3]) == 0 then
  if redis.call('HGET', s, ARGV[2] .. 'st') == ARGV[3] then
    return {'ok'}
  end
  return {'busy'}
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('SET', KEYS[3], cjson.encode({b = base, s = ARGV[1], k = ARGV[2], i = {}}), 'PX', ARGV[5])
return {'ok'}
