-- wrk script: every request POSTs one prepared multipart upload; done() prints wrk's figures as
-- one JSON line starting with "wrk-json ".
--
--   wrk -t1 -c32 -d10s --timeout 10s -s bench/wrk/upload.lua URL -- BODY_FILE CONTENT_TYPE AUTH RATE
--     [STAGGER_MS CONNECTIONS]
--
-- BODY_FILE: the request body; CONTENT_TYPE: its header (with the multipart boundary); AUTH: the
-- Authorization header ("" sends none); RATE: requests per second for an open loop (run it with
-- -t1), or 0 for a closed loop (each connection sends again as soon as it has its answer).
-- STAGGER_MS (closed loop, with -t1): the CONNECTIONS first requests go out that far apart
-- rather than all at once, as a steady stream of requests has them spread; 0 or none: at once.
--
-- Open loop: wrk has no fixed-rate mode (wrk2 is not packaged), so delay() gives each request a
-- slot on one schedule of 1/RATE steps and holds the connection until then. wrk times a request
-- from when it is written, so this holds only while a free connection is there for every slot:
-- a request written after its slot is counted as late, and a run with late requests understates
-- its latencies (the wait for a connection is not in them). Use more connections than the rate
-- times the longest latency.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } upload_timespec;
int clock_gettime(int clock_id, upload_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("upload_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
   return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

-- Globals, so that done() can read them from each thread with thread:get().
late = 0
local interval_ms = 0
local next_slot = nil
local stagger_ms = 0
local staggered_left = 0

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = args[2]
   if args[3] ~= nil and args[3] ~= "" then
      wrk.headers["Authorization"] = args[3]
   end
   local rate = tonumber(args[4] or "0") or 0
   stagger_ms = tonumber(args[5] or "0") or 0
   staggered_left = tonumber(args[6] or "0") or 0
   if rate > 0 then
      interval_ms = 1000 / rate
   elseif stagger_ms > 0 then
      delay = staggered_start
   else
      delay = nil -- closed loop: wrk sends at once
   end
end

-- Closed loop, staggered: the connections' first requests go out STAGGER_MS apart, then each
-- connection sends again as soon as it has its answer.
function staggered_start()
   if staggered_left <= 0 then
      return 0
   end
   staggered_left = staggered_left - 1
   local wait = next_slot or 0
   next_slot = wait + stagger_ms
   return wait
end

function delay()
   local now = now_ms()
   if next_slot == nil then
      next_slot = now
   end
   next_slot = next_slot + interval_ms
   local wait = next_slot - now
   if wait < -1 then
      late = late + 1
      return 0
   end
   return math.max(wait, 0)
end

function done(summary, latency, requests)
   local late_total = 0
   for _, thread in ipairs(threads) do
      late_total = late_total + (tonumber(thread:get("late")) or 0)
   end
   local errors = summary.errors
   io.write(string.format(
      'wrk-json {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, '
         .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, '
         .. '"p90_us": %d, "p99_us": %d, "max_us": %d, "late": %d}\n',
      summary.requests, summary.duration, errors.status, errors.connect, errors.read,
      errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, late_total
   ))
end
