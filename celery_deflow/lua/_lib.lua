-- Shared prelude, prepended to every transition script by celery_deflow.scripts.
--
-- Layout of a workflow's keys (all derived from its base key, which every script gets as KEYS[1] or reads
-- from a lease record; they share the base's {workflow id} hash tag):
--   base                 hash: the workflow record (status, cur, body, counters, ...)
--   base:plan            list: phase tokens still to run ("<sid>:b", "<sid>:t", "<sid>:a")
--   base:order           list: step sids in the order their tasks phases started
--   base:ins:<token>     zset (all scores 0, ordered by member): steps added during that phase
--   base:dedup           hash: replay markers of add_after / add_tasks calls
--   base:owed            zset: dispatches recorded but not yet confirmed published, scored by when the recovery
--                        scan publishes them itself: "r|<sid>|<lo>|<hi>" (tasks added to a running phase),
--                        "l|<sid>|<pos>,<attempt>,..." (retries made due)
--   base:s:<sid>         hash: a step record; its tasks live in base:s:<sid>:{data,st,fail,err,res,herr,slots}
-- Task state (base:s:<sid>:st, field = task position): "<a>" attempt a running, "<a>f" attempt a failed and a
-- retry is due, "d" finished. No field: never started.

local function step_key(base, sid)
  return base .. ':s:' .. sid
end

local function parse_token(token)
  local sid, kind = string.match(token, '^(%d+):(%a)$')
  return sid, kind
end

-- Whether the attempt that makes a call (add_after, add_tasks) is still the live one.
local function in_flight(base, sid, kind, pos, attempt, lease)
  local s = step_key(base, sid)
  if kind == 't' then
    return redis.call('HGET', s .. ':st', pos) == attempt
  end
  return redis.call('HGET', s, kind .. 'st') == lease
end

-- Records one outcome of attempt `attempt` of task `pos`. code: 's' success, 'f' failure, 'x' final failure.
-- Returns 'ok', 'failed' (final failure), 'retry' (another attempt is due) or 'stale' (already recorded).
local function record_outcome(s, pos, attempt, code, payload, max)
  local st = redis.call('HGET', s .. ':st', pos)
  if st ~= attempt then
    return 'stale'
  end
  local n = tonumber(attempt)
  if code == 's' then
    redis.call('HSET', s .. ':st', pos, 'd')
    redis.call('HSET', s .. ':res', pos, payload)
    if n > 1 then
      redis.call('HDEL', s .. ':err', pos)
    end
    return 'ok'
  end
  redis.call('HSET', s .. ':fail', pos, n)
  redis.call('HSET', s .. ':err', pos, payload)
  if code == 'x' or n >= max then
    redis.call('HSET', s .. ':st', pos, 'd')
    return 'failed'
  end
  redis.call('HSET', s .. ':st', pos, n .. 'f')
  return 'retry'
end

-- Takes one of `limit` slots of a worker node (members "<node>|<id>" of the step's slots zset, scored by their
-- expiry; expired ones belonged to dead holders). Returns true when `member` holds a slot (also on a replay).
local function take_slot(slots, member, prefix, limit, now, expiry, ttl)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  if redis.call('ZSCORE', slots, member) then
    return true
  end
  local held = 0
  for _, other in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
    if string.sub(other, 1, #prefix) == prefix then
      held = held + 1
    end
  end
  if held >= limit then
    return false
  end
  redis.call('ZADD', slots, expiry, member)
  redis.call('PEXPIRE', slots, ttl)
  return true
end

local function add_counts(base, s, done_n, failed_n)
  if done_n > 0 then
    redis.call('HINCRBY', s, 'done', done_n)
    redis.call('HINCRBY', base, 'done', done_n)
  end
  if failed_n > 0 then
    redis.call('HINCRBY', s, 'failed', failed_n)
    redis.call('HINCRBY', base, 'failed', failed_n)
  end
end

local function touch(ttl, ...)
  for _, key in ipairs({...}) do
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Records a dispatch its caller publishes next; should the caller die first, the recovery scan publishes it
-- once `due` (ms) has passed. The caller removes the entry once published.
local function owe(base, member, due, ttl)
  redis.call('ZADD', base .. ':owed', due, member)
  touch(ttl, base .. ':owed')
end

-- Records the retries `out[first..]` (pairs of position and attempt) of step `sid` as owed.
local function owe_retries(base, sid, out, first, due, ttl)
  if #out < first then
    return
  end
  local parts = {}
  for i = first, #out do
    parts[#parts + 1] = string.format('%d', out[i])
  end
  owe(base, 'l|' .. sid .. '|' .. table.concat(parts, ','), due, ttl)
end

-- Whether the running phase `token` can close: its chord body arrived and all its work is finished.
local function phase_complete(base, token)
  local m = redis.call('HMGET', base, 'status', 'cur', 'body')
  if m[1] ~= 'running' or m[2] ~= token or m[3] ~= '1' then
    return false
  end
  local sid, kind = parse_token(token)
  local s = step_key(base, sid)
  if kind == 't' then
    local v = redis.call('HMGET', s, 'done', 'total')
    return tonumber(v[1]) >= tonumber(v[2])
  end
  return redis.call('HGET', s, kind .. 'st') == 'done'
end

-- Every key of the workflow: {kept for the result, working state}.
local function workflow_keys(base)
  local keep = {base, base .. ':order'}
  local work = {base .. ':plan', base .. ':dedup', base .. ':owed'}
  local sids = tonumber(redis.call('HGET', base, 'sids') or '0')
  for sid = 1, sids do
    local s = step_key(base, sid)
    for _, part in ipairs({'', ':data', ':res', ':fail', ':err', ':herr'}) do
      keep[#keep + 1] = s .. part
    end
    work[#work + 1] = s .. ':st'
    work[#work + 1] = s .. ':slots'
    for _, kind in ipairs({'b', 't', 'a'}) do
      work[#work + 1] = base .. ':ins:' .. sid .. ':' .. kind
    end
  end
  return keep, work
end

local function expire_all(base, ttl)
  local keep, work = workflow_keys(base)
  for _, key in ipairs(keep) do
    redis.call('PEXPIRE', key, ttl)
  end
  for _, key in ipairs(work) do
    redis.call('PEXPIRE', key, ttl)
  end
end

local function finish_workflow(base, running, now, ttl)
  local m = redis.call('HMGET', base, 'id', 'clean', 'chan')
  redis.call('HSET', base, 'status', 'done', 'finished', now, 'cur', '')
  local keep, work = workflow_keys(base)
  for _, key in ipairs(work) do
    if m[2] == '1' then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, ttl)
    end
  end
  for _, key in ipairs(keep) do
    redis.call('PEXPIRE', key, ttl)
  end
  redis.call('ZREM', running, m[1])
  redis.call('PUBLISH', m[3], '{"type":"done","workflow_id":"' .. m[1] .. '"}')
  return {'done'}
end

-- Moves the workflow to its next phase. Returns {'launch', token, task total} or {'done'}. Tasks phases
-- without tasks complete on the spot (no task can add anything during them).
local function pick_next(base, running, now, ttl)
  while true do
    local token = redis.call('LPOP', base .. ':plan')
    if not token then
      return finish_workflow(base, running, now, ttl)
    end
    local sid, kind = parse_token(token)
    local s = step_key(base, sid)
    redis.call('HSET', base, 'cur', token, 'body', '0', 'launched', '', 'moved', now)
    if kind ~= 't' then
      return {'launch', token, 0}
    end
    redis.call('RPUSH', base .. ':order', sid)
    local total = tonumber(redis.call('HGET', s, 'total'))
    if total > 0 then
      redis.call('HSET', s, 'tph', 'running')
      return {'launch', token, total}
    end
    redis.call('HSET', s, 'tph', 'closed')
  end
end
