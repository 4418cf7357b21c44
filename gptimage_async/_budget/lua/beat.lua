-- beat: this process is alive (the heartbeat, and the first call of a process).
-- KEYS: timeline, belief, procs
-- ARGV: me, alive for (s), logs kept for (s)
-- Returns {processes alive, belief version, pause left, now}.
local timeline, belief, procs = KEYS[1], KEYS[2], KEYS[3]
local me, alive, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) * 1e-6
local function fmt(x) return string.format('%.6f', x) end
redis.call('HSETNX', timeline, 'since', fmt(now))
redis.call('PEXPIRE', timeline, math.ceil(keep * 1000))
redis.call('ZREMRANGEBYSCORE', procs, '-inf', fmt(now))
redis.call('ZADD', procs, fmt(now + alive), me)
redis.call('PEXPIRE', procs, math.ceil(keep * 1000))
local pause = tonumber(redis.call('HGET', timeline, 'pause')) or 0
return {redis.call('ZCOUNT', procs, fmt(now), '+inf'), redis.call('HGET', belief, 'ver') or '0',
  fmt(math.max(pause - now, 0)), fmt(now)}
