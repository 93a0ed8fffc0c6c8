-- wrk script for benchmarks/load.py: a fixed total number of requests, each body sent once.
--
--   wrk -t N -c N -d 600s --timeout 60s -s wrk_fixed.lua URL -- METHOD PATH COUNT N [BODIES]
--
-- BODIES: a file with one JSON request body per line, sent as POST bodies (COUNT is ignored:
-- every line is sent once); without it the same bodiless request is sent COUNT times. Request i
-- goes to thread i mod N. Each thread must have ONE connection (-t equal to -c): a thread stops
-- as soon as its last answer arrives, and with one connection nothing is in flight then, so no
-- request beyond the fixed total reaches the server (wrk itself only knows durations).
--
-- wrk's main thread sleeps for the whole -d whatever its threads do, so each thread prints
-- "thread-done ID FIRST LAST" (CLOCK_MONOTONIC seconds of its first request and last answer)
-- when it stops; the caller sends SIGINT once every thread has, which ends the sleep, and takes
-- the wall time from those stamps. done() then prints one JSON line (answers, latency
-- percentiles in ms, non-2xx answers, socket errors). A thread whose connection breaks never
-- gets all its answers and runs until -d: the caller compares "answered" with "queued".

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } wrk_fixed_timespec;
int clock_gettime(int clock_id, wrk_fixed_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("wrk_fixed_timespec")

local function monotonic_s()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) / 1e9
end

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

-- Per-thread globals (thread:get reads them from done()): answers, non-2xx answers, queue length.
answered, non2xx, queued = 0, 0, 0
local queue, first_s = {}, nil

function init(args)
   local method, path, total, nthreads = args[1], args[2], tonumber(args[3]), tonumber(args[4])
   local bodies_file = args[5]
   local headers = {}
   if bodies_file and bodies_file ~= "" then
      headers["Content-Type"] = "application/json"
      local i = 0
      for line in io.lines(bodies_file) do
         if i % nthreads == id then
            table.insert(queue, wrk.format(method, path, headers, line))
         end
         i = i + 1
      end
   else
      local one = wrk.format(method, path, headers, nil)
      for i = 0, total - 1 do
         if i % nthreads == id then
            table.insert(queue, one)
         end
      end
   end
   queued = #queue
end

function request()
   -- With one connection per thread the next request goes out after the previous answer, and
   -- response() stops the thread at the last one. Indexed by answers, not by calls: wrk calls
   -- request() once more on the first thread to check the script (which makes that thread's
   -- start a little early), and resends on a reconnect.
   if first_s == nil then
      first_s = monotonic_s()
   end
   return queue[answered + 1]
end

function response(status, headers, body)
   answered = answered + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
   if answered >= queued then
      io.stdout:write(string.format("thread-done %d %.6f %.6f\n", id, first_s, monotonic_s()))
      io.stdout:flush()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local answered_all, non2xx_all, queued_all = 0, 0, 0
   for _, t in ipairs(threads) do
      answered_all = answered_all + t:get("answered")
      non2xx_all = non2xx_all + t:get("non2xx")
      queued_all = queued_all + t:get("queued")
   end
   local e = summary.errors
   local line = string.format(
      '{"answered": %d, "queued": %d, "requests": %d, "p50": %.3f, "p90": %.3f, '
         .. '"p99": %.3f, "max": %.3f, "non2xx": %d, "connect_errors": %d, "read_errors": %d, '
         .. '"write_errors": %d, "timeouts": %d}',
      answered_all, queued_all, summary.requests,
      latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
      latency.max / 1e3, non2xx_all, e.connect, e.read, e.write, e.timeout
   )
   print(line)
end
