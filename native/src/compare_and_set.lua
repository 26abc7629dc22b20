-- Compare-and-set of one token-server session record (native/src/redis_store.rs).
-- KEYS[1]: the session's key. ARGV[1]: the stamp of the record decided on, its first 21
-- bytes ('' when the key was absent); ARGV[2]: the new record ('' deletes); ARGV[3]: its
-- expiry in ms since the epoch. Answers 1 when written; else the record there now (nil:
-- none), so the caller decides again without another round trip. No session rule lives
-- here: those are token-server core's.
local current = redis.call('GET', KEYS[1])
if (current and string.sub(current, 1, 21) or '') ~= ARGV[1] then return current end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
