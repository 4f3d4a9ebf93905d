-- finish_tasks: records the outcomes of the attempts held under one lease and releases the lease.
-- An outcome counts only if its attempt is still the live one, so replays and late duplicates count nothing;
-- a replay still reports the retries its failures made due, and whether the phase can close.
-- The last finish of a message also gives its concurrency slot back.
-- KEYS[1] workflow base key   KEYS[2] leases zset   KEYS[3] the lease's record   KEYS[4] the step's slots zset
-- ARGV[1] sid   ARGV[2] lease id   ARGV[3] running ttl (ms)   ARGV[4] slot member to release ('' for none)
-- ARGV[5] the outcomes, one JSON array of [position, attempt, code, payload]; code 's' success (payload =
--         result JSON), 'f' failure (payload = error message), 'x' final failure whatever attempts remain
-- ARGV[6] when the retries' dispatch is overdue (ms)
-- Returns {'ok', complete (0|1), pos, next attempt, ...} for the retries now due (recorded as owed until the
-- caller has published them), or {'stop'}.
local base = KEYS[1]
local sid = ARGV[1]
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[4], ARGV[4])
end
if redis.call('HGET', base, 'status') ~= 'running' then
  return {'stop'}
end
local s = step_key(base, sid)
local max = tonumber(redis.call('HGET', s, 'max'))
local done_n, failed_n = 0, 0
local out = {'ok', 0}
for _, outcome in ipairs(cjson.decode(ARGV[5])) do
  local pos, attempt = string.format('%d', outcome[1]), string.format('%d', outcome[2])
  local code = outcome[3]
  local r = record_outcome(s, pos, attempt, code, outcome[4], max)
  if r == 'ok' then
    done_n = done_n + 1
  elseif r == 'failed' then
    done_n = done_n + 1
    failed_n = failed_n + 1
  elseif r == 'retry' or (r == 'stale' and code == 'f' and redis.call('HGET', s .. ':st', pos) == attempt .. 'f') then
    out[#out + 1] = tonumber(pos)
    out[#out + 1] = tonumber(attempt) + 1
  end
end
add_counts(base, s, done_n, failed_n)
touch(ARGV[3], s .. ':res', s .. ':fail', s .. ':err')
owe_retries(base, sid, out, 3, ARGV[6], ARGV[3])
if phase_complete(base, sid .. ':t') then
  out[2] = 1
end
return out
