-- wrk script: POST-only load growing the store to a limit. Each thread stops after its
-- share of LIMIT (env var, default 1000000) successful creates and touches DONE_DIR/<id>,
-- so bench/run.sh can end wrk with SIGINT once every thread is done; tokens are discarded.
local body_meta = '{"meta":{"name":"bench user","year":2026,"period":11}}'
local limit = tonumber(os.getenv("LIMIT") or "1000000")
created, bad, share = 0, 0, 0

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  share = math.ceil(limit / tonumber(os.getenv("THREADS") or "2"))
  wrk.method = "POST"
  wrk.path = "/token"
  wrk.body = body_meta
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
  if status == 200 and #body == 32 then
    created = created + 1
    if created == share then
      local flag = io.open((os.getenv("DONE_DIR") or "/tmp") .. "/done-" .. id, "w")
      if flag then flag:close() end
      wrk.thread:stop()
    end
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local c, b = 0, 0
  for _, t in ipairs(threads) do c = c + t:get("created"); b = b + t:get("bad") end
  local secs = summary.duration / 1e6
  b = b + summary.errors.status + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.connect
  io.write(string.format("RESULT ops_per_s=%.0f created=%d bad=%d p50_us=%d p99_us=%d max_us=%d\n",
    c / secs, c, b, latency:percentile(50), latency:percentile(99), latency.max))
end
