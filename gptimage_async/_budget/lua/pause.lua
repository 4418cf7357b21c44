-- pause: hold the budget's timeline back (a 429's Retry-After, an outage's backoff).
-- KEYS: timeline, refusals, procs
-- ARGV: events channel, me, seconds, when the refused request went out (on
--       Redis's clock, as the grant log's sends; '' for an outage), alive for
--       (s), logs kept for (s)
-- Returns {pause left, processes alive, now}.
local timeline, refusals, procs = KEYS[1], KEYS[2], KEYS[3]
local chan, me, seconds, sent = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local alive, keep = tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) * 1e-6
local function fmt(x) return string.format('%.6f', x) end

redis.call('HSETNX', timeline, 'since', fmt(now))
local h = redis.call('HMGET', timeline, 'tat', 'pause')
local pause = math.max(tonumber(h[2]) or 0, now + seconds)
local tat = math.max(tonumber(h[1]) or 0, pause)
redis.call('HSET', timeline, 'tat', fmt(tat), 'pause', fmt(pause))
redis.call('PUBLISH', chan, 'p ' .. fmt(pause - now))
redis.call('ZREMRANGEBYSCORE', procs, '-inf', fmt(now))
redis.call('ZADD', procs, fmt(now + alive), me)
if sent then
  -- A refusal: every process stops probing on it at once (the pause goes as 'p').
  redis.call('PUBLISH', chan, 'r ' .. fmt(pause - now))
  redis.call('ZADD', refusals, fmt(sent), me .. ':' .. fmt(sent))
  redis.call('ZREMRANGEBYSCORE', refusals, '-inf', fmt(now - keep))
end
local keep_ms = math.ceil(keep * 1000)
for _, key in ipairs({timeline, refusals, procs}) do redis.call('PEXPIRE', key, keep_ms) end
return {fmt(pause - now), redis.call('ZCOUNT', procs, fmt(now), '+inf'), fmt(now)}
