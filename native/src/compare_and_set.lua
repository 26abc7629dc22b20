-- Compare-and-set of one token-server session record (native/src/redis_store.rs).
-- KEYS[1]: the session's key. ARGV[1]: the version read ('' when the key was absent);
-- ARGV[2]: the new value ('' deletes); ARGV[3]: its expiry in ms since the epoch.
-- Answers 1 when written, 0 when the record changed meanwhile. No session rule lives
-- here: those are token-server core's.
local current = redis.call('GET', KEYS[1])
local version = ''
if current then version = string.match(current, '^(%d+) ') or '?' end
if version ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return 1
