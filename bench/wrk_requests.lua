-- wrk script for bench/run.py: sends requests picked at random from a file, with a bearer
-- token, and prints wrk's summary as one JSON line.
--
--   wrk -t2 -c32 -d15s -s bench/wrk_requests.lua http://127.0.0.1:8000 -- REQUESTS_FILE [TOKEN]
--
-- REQUESTS_FILE holds one request per line: METHOD <tab> PATH [<tab> JSON BODY]. Every request
-- is formatted once, at start-up, so picking one costs next to nothing while measuring.

local thread_number = 0

function setup(thread)
  thread_number = thread_number + 1
  thread:set("thread_number", thread_number)
end

local prepared = {}

function init(args)
  local file, token = args[1], args[2]
  local headers = {}
  if token ~= nil and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  local with_body = {["Content-Type"] = "application/json"}
  for name, value in pairs(headers) do
    with_body[name] = value
  end
  for line in io.lines(file) do
    local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
    if method ~= nil then
      if body ~= nil and body ~= "" then
        prepared[#prepared + 1] = wrk.format(method, path, with_body, body)
      else
        prepared[#prepared + 1] = wrk.format(method, path, headers, nil)
      end
    end
  end
  if #prepared == 0 then
    error("no requests in " .. tostring(file))
  end
  math.randomseed(os.time() * 100 + (thread_number or 0))
end

function request()
  return prepared[math.random(#prepared)]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, ' ..
    '"p50": %d, "p75": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
