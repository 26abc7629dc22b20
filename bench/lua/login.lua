-- wrk script: POST /token (a login) on every request, for logins/s per host; counts the
-- answers that are not a 32-character token as bad.
local body_meta = '{"meta":{"name":"bench user","year":2026,"period":11}}'
logins, bad = 0, 0

function init(args)
  wrk.method = "POST"
  wrk.path = "/token"
  wrk.body = body_meta
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
  if status == 200 and #body == 32 then logins = logins + 1 else bad = bad + 1 end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local l, b = 0, 0
  for _, t in ipairs(threads) do l = l + t:get("logins"); b = b + t:get("bad") end
  b = b + summary.errors.status + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.connect
  io.write(string.format("RESULT logins_per_s=%.0f logins=%d bad=%d p99_us=%d\n",
    l / (summary.duration / 1e6), l, b, latency:percentile(99)))
end
