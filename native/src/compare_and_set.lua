-- Compare-and-set of one token-server session record (native/src/redis_store.rs).
-- KEYS[1]: the session's key. ARGV[1]: the version read, the record's first 4 bytes
-- ('' when the key was absent); ARGV[2]: the new record ('' deletes); ARGV[3]: its
-- expiry in ms since the epoch. Answers 1 when written, 0 when the record changed
-- meanwhile. No session rule lives here: those are token-server core's.
local current = redis.call('GET', KEYS[1])
if (current and string.sub(current, 1, 4) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
