-- wrk script for scripts/bench-service: POSTs a source bundle to the package endpoint.
--
-- Environment (set by scripts/bench-service):
--   BENCH_BODY          file whose bytes are the request body (a tar.gz or a raw tar)
--   BENCH_MODE          "same": every request sends the same body;
--                       "fresh": every request sends a different package: the body must be a raw
--                       tar in which BENCH_PATCH_LEN bytes at BENCH_PATCH_OFFSET lie inside a
--                       file's contents (a placeholder); each request overwrites them with a
--                       unique tag (nonce, thread, counter). A tar header's checksum covers only
--                       the header, so the archive stays valid and every request is a new zip.
--   BENCH_PATCH_OFFSET  0-based byte offset of the placeholder (fresh mode)
--   BENCH_PATCH_LEN     its length (fresh mode, at least 16)
--   BENCH_NONCE         digits that make tags unique across runs (fresh mode)
--
-- done() prints one line "BENCH_RESULT k=v k=v ..." that scripts/bench-service parses: requests,
-- duration, socket errors, latency mean/p50/p90/p99/max (microseconds), HTTP statuses and how
-- many answers said "uploaded":true / false.

local body_path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is required")
local mode = os.getenv("BENCH_MODE") or "same"
local f = assert(io.open(body_path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local prefix, suffix, tag_len, nonce, counter, fixed

function init(args)
  counter = 0
  s200, s201, s503, sother, up_true, up_false = 0, 0, 0, 0, 0, 0
  if mode == "fresh" then
    local off = tonumber((assert(os.getenv("BENCH_PATCH_OFFSET"), "BENCH_PATCH_OFFSET is required")))
    tag_len = tonumber((assert(os.getenv("BENCH_PATCH_LEN"), "BENCH_PATCH_LEN is required")))
    nonce = os.getenv("BENCH_NONCE") or "0"
    prefix = body:sub(1, off)
    suffix = body:sub(off + tag_len + 1)
  else
    fixed = wrk.format()
  end
end

function request()
  if mode ~= "fresh" then
    return fixed
  end
  counter = counter + 1
  local tag = string.format("%s-%d-%d", nonce, thread_id, counter)
  tag = tag .. string.rep("x", tag_len - #tag)
  return wrk.format(nil, nil, nil, prefix .. tag .. suffix)
end

function response(status, headers, resp_body)
  if status == 200 then
    s200 = s200 + 1
  elseif status == 201 then
    s201 = s201 + 1
  elseif status == 503 then
    s503 = s503 + 1
  else
    sother = sother + 1
  end
  if resp_body:find('"uploaded":true', 1, true) then
    up_true = up_true + 1
  elseif resp_body:find('"uploaded":false', 1, true) then
    up_false = up_false + 1
  end
end

function done(summary, latency, requests)
  local t = { s200 = 0, s201 = 0, s503 = 0, sother = 0, up_true = 0, up_false = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d errors_connect=%d errors_read=%d errors_write=%d "
      .. "errors_timeout=%d errors_status=%d lat_mean_us=%.1f lat_p50_us=%d lat_p90_us=%d "
      .. "lat_p99_us=%d lat_max_us=%d s200=%d s201=%d s503=%d sother=%d up_true=%d up_false=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, t.s200, t.s201, t.s503, t.sother, t.up_true, t.up_false))
end
