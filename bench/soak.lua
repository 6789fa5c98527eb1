-- wrk script for bench/soak.sh: POSTs one wafer row per request and stops each thread after its
-- share of SOAK_REQUESTS responses.
local quota = tonumber(os.getenv("SOAK_PER_THREAD") or "100000")
local seen = 0
local errors = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1.01,49.5,2.02,55.0,3.0,-4.0,1.1,1003.0]}]}'

function response(status, headers, body)
  seen = seen + 1
  if status ~= 200 then errors = errors + 1 end
  if seen >= quota then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format("wrk: %d requests, %d non-2xx/3xx, %d socket errors (connect %d, read %d, write %d, timeout %d)\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
  io.write(string.format("wrk: latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
