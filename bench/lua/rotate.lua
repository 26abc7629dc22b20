-- wrk script: PUT each token exactly once, chaining. A connection with no token to hand
-- POSTs one (only at start); every answer's new token is queued and PUT by the next request.
-- Counts PUT answers with a token (puts), POST answers (posts) and anything else (bad).
local body_meta = '{"meta":{"name":"bench user","year":2026,"period":11}}'
local json = { ["Content-Type"] = "application/json" }
-- API_KEY set: every request carries it, for a server started with --api-key.
local api_key = os.getenv("API_KEY")
if api_key and api_key ~= "" then json["Authorization"] = "Bearer " .. api_key end
queue, puts, posts, bad = {}, 0, 0, 0

function request()
  local token = table.remove(queue)
  if token then
    return wrk.format("PUT", "/token", json, '{"token":"' .. token .. '"}')
  end
  return wrk.format("POST", "/token", json, body_meta)
end

function response(status, headers, body)
  local token = body:match('^{"Ok":{"token":"([^"]+)"')
  if status == 200 and token then
    puts = puts + 1
  elseif status == 200 and #body == 32 then
    token = body
    posts = posts + 1
  else
    bad = bad + 1
  end
  if token then table.insert(queue, token) end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local p, c, b = 0, 0, 0
  for _, t in ipairs(threads) do
    p = p + t:get("puts"); c = c + t:get("posts"); b = b + t:get("bad")
  end
  local secs = summary.duration / 1e6
  b = b + summary.errors.status + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.connect
  io.write(string.format("RESULT ops_per_s=%.0f puts=%d posts=%d bad=%d p50_us=%d p99_us=%d max_us=%d\n",
    p / secs, p, c, b, latency:percentile(50), latency:percentile(99), latency.max))
end
