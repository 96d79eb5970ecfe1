-- wrk script for bench/wrk.ts: cycles through the request paths listed (one per line) in the file named
-- by the first script argument, so that consecutive requests hit different files. Each thread starts at
-- a different offset. At the end it prints one line, "WRK_JSON {...}", with the totals and percentiles.

local counter = 0

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 7919
end

local paths = {}
local index = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      paths[#paths + 1] = line
    end
  end
  if #paths == 0 then
    error("no paths in " .. args[1])
  end
  index = (offset or 0) % #paths
end

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%.0f,"bytes":%.0f,"durationUs":%.0f,' ..
      '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
      '"latencyUs":{"p50":%.0f,"p90":%.0f,"p99":%.0f,"mean":%.3f,"max":%.0f}}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
