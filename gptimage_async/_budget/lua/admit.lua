-- admit: ask for the budget's next slot (the shared GCRA timeline, one round trip).
-- KEYS: timeline, belief, polls, waiting, grants, procs
-- ARGV: me, priority (0 poll, 1 create, 2 speculative), more polls ('1'/'0'),
--       more waiting ('1'/'0'), interval when the fleet holds no belief (s),
--       catch-up share, create-ahead share, grant-ahead (s), mark intervals,
--       mark slack (s), alive for (s), logs kept for (s), the server's window (s),
--       how many slots follow that this process booked earlier and gave up (a
--       pause began: out of the log), those slots, then pairs (slot, send time)
--       of slots this process sent since it last asked: the log holds when each
--       request really went out, not when its slot was
-- Returns {admitted, delay, belief version, interval, pause left, processes alive, now, slot}.
-- Every time is Redis's (TIME) in seconds, sent as '%.6f' strings: Redis
-- truncates Lua numbers to integers.
local timeline, belief, w0, w1, grants, procs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local me, prio, more_polls, more = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local catch_up, create_ahead, grant_ahead = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local mark_n, mark_s, alive, keep = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local window, n_released = tonumber(ARGV[13]), tonumber(ARGV[14])
for i = 15, 14 + n_released do redis.call('ZREM', grants, me .. ':' .. ARGV[i]) end
for i = 15 + n_released, #ARGV - 1, 2 do
  redis.call('ZADD', grants, 'XX', ARGV[i + 1], me .. ':' .. ARGV[i])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) * 1e-6
local function fmt(x) return string.format('%.6f', x) end

local b = redis.call('HMGET', belief, 'rate', 'margin', 'ver')
local iv = tonumber(ARGV[5])
local per_window, margin = 0, 0
if tonumber(b[1]) then
  margin = tonumber(b[2]) or 0
  iv = 1 / (tonumber(b[1]) * (1 - margin))
  per_window = math.floor(tonumber(b[1]) * window + 1e-9)
end
local h = redis.call('HMGET', timeline, 'tat', 'pause', 'since')
local tat, pause = tonumber(h[1]) or 0, tonumber(h[2]) or 0
-- When the logs began (a new budget, or Redis restarted empty).
if not h[3] then redis.call('HSET', timeline, 'since', fmt(now)) end

redis.call('ZREMRANGEBYSCORE', w0, '-inf', fmt(now))
redis.call('ZREMRANGEBYSCORE', w1, '-inf', fmt(now))
redis.call('ZREMRANGEBYSCORE', procs, '-inf', fmt(now))
redis.call('ZADD', procs, fmt(now + alive), me)

local start = math.max(tat, pause, now - catch_up * iv)
-- Window-free (as one process's limiter does): a request sent late leaves
-- less than a window between it and the one ``per_window`` slots later, and a
-- sliding window at the server then counts one too many. The log's sends are
-- the real ones, so the send ``per_window`` back bounds this slot, less the
-- lateness every send around it had (this one will be as late): only a send
-- later than its neighbours costs budget, as only it draws a 429.
if per_window > 0 then
  local back = redis.call('ZREVRANGE', grants, per_window - 1, per_window + 14, 'WITHSCORES')
  if back[2] then
    local late = math.huge
    for i = 1, #back, 2 do
      local slot = tonumber(string.match(back[i], ':([^:]+)$')) or tonumber(back[i + 1])
      late = math.min(late, math.max(0, tonumber(back[i + 1]) - slot))
    end
    start = math.max(start, tonumber(back[2]) - late + window * (1 + margin))
  end
end
local polls_elsewhere = redis.call('ZCARD', w0) - (redis.call('ZSCORE', w0, me) and 1 or 0)
local waits_elsewhere = redis.call('ZCARD', w1) - (redis.call('ZSCORE', w1, me) and 1 or 0)
local admit = 0
if prio == 0 then
  admit = 1
elseif prio == 1 then
  if polls_elsewhere == 0 and start <= now + create_ahead * iv then admit = 1 end
elseif waits_elsewhere == 0 and start <= now + grant_ahead then
  admit = 1
end
local at
if admit == 1 then
  at = start
  redis.call('HSET', timeline, 'tat', fmt(start + iv))
  redis.call('ZADD', grants, fmt(at), me .. ':' .. fmt(at))
  redis.call('ZREMRANGEBYSCORE', grants, '-inf', fmt(now - keep))
elseif (prio == 1 and polls_elsewhere > 0) or (prio == 2 and waits_elsewhere > 0) then
  at = math.max(start, now) + iv
else
  at = math.max(start, now + grant_ahead)
end
local mark = fmt(math.max(at, now) + mark_n * iv + mark_s)
if more_polls == '1' or (admit == 0 and prio == 0) then
  redis.call('ZADD', w0, mark, me)
else
  redis.call('ZREM', w0, me)
end
if more == '1' or (admit == 0 and prio < 2) then
  redis.call('ZADD', w1, mark, me)
else
  redis.call('ZREM', w1, me)
end
local keep_ms = math.ceil(keep * 1000)
for _, key in ipairs({timeline, w0, w1, grants, procs}) do redis.call('PEXPIRE', key, keep_ms) end
local live = redis.call('ZCOUNT', procs, fmt(now), '+inf')
return {admit, fmt(at - now), b[3] or '0', fmt(iv), fmt(math.max(pause - now, 0)), live, fmt(now),
  fmt(at)}
