-- finish_hook: records the end of a hook run and releases its lease.
-- KEYS[1] workflow base key   KEYS[2] leases zset   KEYS[3] the lease's record
-- ARGV[1] sid   ARGV[2] kind ('b'|'a')   ARGV[3] lease id   ARGV[4] error message ('' when none)
-- ARGV[5] running ttl (ms)
-- Returns {'ok', complete (0|1)} -- for a replay too: complete then says whether the phase can close --,
-- or {'stop'}.
local base = KEYS[1]
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
if redis.call('HGET', base, 'status') ~= 'running' then
  return {'stop'}
end
local s = step_key(base, ARGV[1])
if redis.call('HGET', s, ARGV[2] .. 'st') == ARGV[3] then
  redis.call('HSET', s, ARGV[2] .. 'st', 'done')
  if ARGV[4] ~= '' then
    redis.call('RPUSH', s .. ':herr', ARGV[4])
    touch(ARGV[5], s .. ':herr')
  end
end
if phase_complete(base, ARGV[1] .. ':' .. ARGV[2]) then
  return {'ok', 1}
end
return {'ok', 0}
