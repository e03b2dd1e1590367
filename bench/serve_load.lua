-- wrk script for bench/serve_load.sh: POSTs image files to vit serve.
--   wrk ... -s bench/serve_load.lua URL -- LIST [BROKEN_EVERY] [PATH]
-- LIST names one file a line as "good PATH" or "broken PATH"; every
-- BROKEN_EVERY-th request (0: none) sends a broken file instead of the next
-- good one. Each wrk thread starts at another place in the list. done()
-- prints one RESULT line the shell script reads, with the count of each
-- status code (s200=..., s422=...).
local bodies = {}
local next_body = 0
local path = "/classify"
local threads = 0
local all_threads = {}
statuses = {}

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
  table.insert(all_threads, thread)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function init(args)
  local list, broken_every = args[1], tonumber(args[2] or "0")
  path = args[3] or path
  local good, broken = {}, {}
  for line in io.lines(list) do
    local kind, file = line:match("^(%a+) (.+)$")
    local f = assert(io.open(file, "rb"))
    local data = f:read("*a")
    f:close()
    if kind == "broken" then table.insert(broken, data) else table.insert(good, data) end
  end
  for k = 1, #good do
    table.insert(bodies, good[k])
    if broken_every > 0 and #broken > 0 and k % broken_every == 0 then
      table.insert(bodies, broken[(math.floor(k / broken_every) - 1) % #broken + 1])
    end
  end
  next_body = (id or 0) * 37
end

function request()
  next_body = next_body + 1
  local body = bodies[(next_body - 1) % #bodies + 1]
  return wrk.format("POST", path, {["Content-Type"] = "application/octet-stream"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local codes = {}
  for _, thread in ipairs(all_threads) do
    for code, n in pairs(thread:get("statuses") or {}) do codes[code] = (codes[code] or 0) + n end
  end
  local by_code = ""
  for code, n in pairs(codes) do by_code = by_code .. string.format(" s%d=%d", code, n) end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d " ..
                         "socket_errors=%d%s\n", summary.requests, summary.duration,
                         latency:percentile(50), latency:percentile(99), e.status,
                         e.connect + e.read + e.write + e.timeout, by_code))
end
