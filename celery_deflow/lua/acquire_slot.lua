-- acquire_slot: takes one of the ARGV[3] concurrency slots of a worker node for a step (task_concurrency).
-- Slots are leases: members whose expiry passed (their holder died) are dropped first.
-- KEYS[1] the step's slots zset
-- ARGV[1] member ("<node>|<lease id>")   ARGV[2] node prefix ("<node>|")   ARGV[3] limit
-- ARGV[4] now (ms)   ARGV[5] expiry (ms)   ARGV[6] running ttl (ms)
-- Returns 1 when the slot is held (also for a replay), 0 when the node's slots are all taken.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
local held = 0
local prefix = ARGV[2]
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then
    held = held + 1
  end
end
if held >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
