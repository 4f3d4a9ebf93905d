-- close_phase: the chord body of a phase (ARGV[2] = '1') or its last finisher (ARGV[2] = '0'). When the body
-- has arrived and the phase's work is finished, the phase closes: the steps added during it are put at the
-- front of the plan (in the order of their sort members: task position, attempt, call order), and the
-- workflow moves to its next phase, or finishes (status 'done', cleanup, 'done' event).
-- KEYS[1] workflow base key   KEYS[2] running-workflows zset
-- ARGV[1] phase token   ARGV[2] body arrived ('1'|'0')   ARGV[3] now (ms)   ARGV[4] result ttl (ms)
-- Returns {'launch', token, total} | {'done'} | {'wait'} | {'stale'} (phase already closed, or not running).
local base = KEYS[1]
local token = ARGV[1]
local m = redis.call('HMGET', base, 'status', 'cur')
if m[1] ~= 'running' or m[2] ~= token then
  return {'stale'}
end
if ARGV[2] == '1' then
  redis.call('HSET', base, 'body', '1')
end
if not phase_complete(base, token) then
  return {'wait'}
end
local sid, kind = parse_token(token)
if kind == 't' then
  redis.call('HSET', step_key(base, sid), 'tph', 'closed')
end
local ins = base .. ':ins:' .. token
local tokens = {}
for _, member in ipairs(redis.call('ZRANGE', ins, 0, -1)) do
  local child = string.match(member, ':(%d+)$')
  local flags = redis.call('HMGET', step_key(base, child), 'hb', 'ha')
  if flags[1] == '1' then
    tokens[#tokens + 1] = child .. ':b'
  end
  tokens[#tokens + 1] = child .. ':t'
  if flags[2] == '1' then
    tokens[#tokens + 1] = child .. ':a'
  end
end
for i = #tokens, 1, -1 do
  redis.call('LPUSH', base .. ':plan', tokens[i])
end
redis.call('DEL', ins)
return pick_next(base, KEYS[2], ARGV[3], ARGV[4])
