-- Fixed-rate load for wrk (issue 22's tail-latency table): `wrk -t1 -cN -s bench/fixed_rate.lua URL -- RATE`.
--
-- wrk itself sends as fast as its connections allow. Here every request of a thread takes the next slot of
-- one schedule, RATE per second for the thread (wrk calls delay() before each request and waits that many
-- whole milliseconds), so the server sees a steady rate however fast it answers, and latency is measured at
-- a load the server keeps up with. A connection still waits for its own response before its next request:
-- during a stall the other connections take the slots (64 connections cover stalls of 64 slots), and
-- latency counts from when a request was sent, not from its slot (wrk2 would correct that; it is not
-- packaged). done() prints the percentiles wrk's --latency does not (p99.9) in microseconds.
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } omnii_bench_timespec;
int clock_gettime(int clk_id, omnii_bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("omnii_bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

local interval_ms
local next_slot

function init(args)
  interval_ms = 1000 / tonumber(args[1])
end

function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then
    next_slot = now -- the first request, or a stall of over a second: the schedule starts again from now
  end
  next_slot = next_slot + interval_ms
  local wait = next_slot - now
  if wait < 0 then
    return 0
  end
  return wait
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("FIXED requests %d\n", summary.requests))
  io.write(string.format("FIXED duration_us %d\n", summary.duration))
  io.write(string.format("FIXED errors %d\n", errors.connect + errors.read + errors.write + errors.status + errors.timeout))
  io.write(string.format("FIXED p50_us %d\n", latency:percentile(50)))
  io.write(string.format("FIXED p99_us %d\n", latency:percentile(99)))
  io.write(string.format("FIXED p99.9_us %d\n", latency:percentile(99.9)))
  io.write(string.format("FIXED max_us %d\n", latency.max))
end
