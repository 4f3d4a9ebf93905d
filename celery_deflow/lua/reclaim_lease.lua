-- reclaim_lease: claims an expired lease (its holder stopped renewing it: the worker died) and records each
-- attempt it held as failed with ARGV[3]; a hook run it held ends with that error. Several scanners may race
-- for the same lease: exactly one gets it, the others get {'gone'}. The record is kept for ten minutes, marked
-- with the claimant's call id, so that a replay of that call returns the first outcome.
-- KEYS[1] leases zset   KEYS[2] the lease's record
-- ARGV[1] lease id   ARGV[2] now (ms)   ARGV[3] error message   ARGV[4] running ttl (ms)   ARGV[5] call id
-- ARGV[6] when the retries' dispatch is overdue (ms)
-- Returns {'task', workflow id, sid, complete (0|1), pos, next attempt, ...} (retries due, owed until the
-- caller has published them),
-- {'hook', workflow id, sid, kind, complete}, {'live'}, {'gone'} or {'stop'} (workflow no longer running).
local raw = redis.call('GET', KEYS[2])
if not raw then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'gone'}
end
local lease = cjson.decode(raw)
local replay = lease.r == ARGV[5]
if lease.r and not replay then
  return {'gone'}
end
if not replay then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not score then
    return {'gone'}
  end
  if tonumber(score) > tonumber(ARGV[2]) then
    return {'live'}
  end
  redis.call('ZREM', KEYS[1], ARGV[1])
  lease.r = ARGV[5]
  redis.call('SET', KEYS[2], cjson.encode(lease), 'PX', 600000)
end
local base = lease.b
local sid = tostring(lease.s)
local m = redis.call('HMGET', base, 'status', 'id')
if m[1] ~= 'running' then
  return {'stop'}
end
local s = step_key(base, sid)
if lease.k ~= 't' then
  local complete = 0
  if redis.call('HGET', s, lease.k .. 'st') == ARGV[1] then
    redis.call('HSET', s, lease.k .. 'st', 'done')
    redis.call('RPUSH', s .. ':herr', ARGV[3])
    touch(ARGV[4], s .. ':herr')
  end
  if phase_complete(base, sid .. ':' .. lease.k) then
    complete = 1
  end
  return {'hook', m[2], tonumber(sid), lease.k, complete}
end
local max = tonumber(redis.call('HGET', s, 'max'))
local out = {'task', m[2], tonumber(sid), 0}
local done_n, failed_n = 0, 0
for i = 1, #lease.i, 2 do
  local pos = string.format('%d', lease.i[i])
  local attempt = string.format('%d', lease.i[i + 1])
  local r = record_outcome(s, pos, attempt, 'f', ARGV[3], max)
  if r == 'failed' then
    done_n = done_n + 1
    failed_n = failed_n + 1
  elseif r == 'retry' or (replay and redis.call('HGET', s .. ':st', pos) == attempt .. 'f') then
    out[#out + 1] = tonumber(pos)
    out[#out + 1] = tonumber(attempt) + 1
  end
end
add_counts(base, s, done_n, failed_n)
touch(ARGV[4], s .. ':fail', s .. ':err')
owe_retries(base, sid, out, 5, ARGV[6], ARGV[4])
if phase_complete(base, sid .. ':t') then
  out[4] = 1
end
return out
