-- leave: this process is gone (its session closed): it waits for nothing, counts for nothing.
-- KEYS: polls, waiting, procs
-- ARGV: me
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 1
