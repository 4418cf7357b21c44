-- publish: write the fleet's belief if it is still at the version the writer read.
-- A compare-and-set: learning happens in each process; Redis only keeps the result.
-- KEYS: belief
-- ARGV: events channel, version read, kept for (ms), rate, margin, refused rate
--       ('' for none), last cut, last 429 (Redis's clock, '' for never)
-- Returns {1, new version}, or {0, version, rate, margin, refused, last cut, last 429}
-- when another process wrote first (the writer re-reads, merges and tries again).
local belief = KEYS[1]
local ver = tonumber(redis.call('HGET', belief, 'ver') or '0')
if ver ~= tonumber(ARGV[2]) then
  local h = redis.call('HMGET', belief, 'rate', 'margin', 'refused', 'cut', 'l429')
  return {0, tostring(ver), h[1] or '', h[2] or '', h[3] or '', h[4] or '', h[5] or ''}
end
ver = ver + 1
redis.call('HSET', belief, 'ver', tostring(ver), 'rate', ARGV[4], 'margin', ARGV[5],
  'refused', ARGV[6], 'cut', ARGV[7], 'l429', ARGV[8])
redis.call('PEXPIRE', belief, tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[1], 'v ' .. tostring(ver))
return {1, tostring(ver)}
