-- wrk script of the benchmark's scenarios (bench/run.py starts wrk with it).
--
--   wrk -s bench/scenario.lua URL -- MODE FIRST ITEMS TAG WORDS_FILE [POOL_FILE BATCH]
--
-- MODE       unique | repeated | users | filtered | rerank | similar | feedback | ingest
-- FIRST      where this run's request counter starts: runs given disjoint ranges never repeat a
--            context or an id
-- ITEMS      catalog size (feedback names items item-0000000 .. item-<ITEMS-1>)
-- TAG        marks what this run writes: feedback request ids, ingested item ids
-- WORDS_FILE one word a line; contexts are made of them
-- POOL_FILE  ingest: one item a line, a JSON object without its item_id
-- BATCH      ingest: items per request
--
-- done() prints one line "BENCH {json}" with the counts and the latency distribution.

local THREAD_SPAN = 100000000 -- requests one thread may send before its counter meets the next's
local REPEATED = 100          -- distinct requests of the repeated mode
local USERS = 1000            -- known users (bench/dataset.py gives each one feedback)
local CATEGORIES = 20         -- bench/catalog.py's metadata categories
local INTERACTIONS = { "like", "click", "view", "dislike" }

local next_thread = 0
local threads = {}

function setup(thread)
   thread:set("thread_id", next_thread)
   next_thread = next_thread + 1
   table.insert(threads, thread)
end

local function read_lines(path)
   local lines = {}
   for line in io.lines(path) do
      if line ~= "" then
         lines[#lines + 1] = line
      end
   end
   return lines
end

local words
local mode, counter, items, tag, pool, batch

-- A short context that no other counter value gives: four words whose indexes are the base-W
-- digits of n, each shifted by the digits before it so that neighbouring n differ everywhere.
local function context(n)
   local w = #words
   local d0 = n % w
   local d1 = math.floor(n / w) % w
   local d2 = math.floor(n / (w * w)) % w
   local d3 = math.floor(n / (w * w * w)) % w
   local a = d0
   local b = (d1 + 37 * d0) % w
   local c = (d2 + 53 * d1 + 11 * d0) % w
   local d = (d3 + 71 * d2 + 29 * d1 + 7 * d0) % w
   return words[a + 1] .. " " .. words[b + 1] .. " and " .. words[c + 1] .. " " .. words[d + 1]
end

local bodies = {
   unique = function(n)
      return string.format('{"user_id":"visitor-%d","context":"%s"}', n, context(n))
   end,
   repeated = function(_)
      return string.format('{"user_id":"guest","context":"%s"}', context(math.random(0, REPEATED - 1)))
   end,
   users = function(_)
      return string.format('{"user_id":"bench-user-%04d"}', math.random(0, USERS - 1))
   end,
   filtered = function(n)
      return string.format(
         '{"user_id":"visitor-%d","context":"%s","filters":{"category":"category-%02d"}}',
         n, context(n), n % CATEGORIES)
   end,
   rerank = function(n)
      return string.format('{"user_id":"visitor-%d","context":"%s","rerank":true}', n, context(n))
   end,
   feedback = function(n)
      return string.format(
         '{"user_id":"bench-fan-%03d","item_id":"item-%07d","interaction_type":"%s","request_id":"%s-%d"}',
         math.random(0, USERS - 1), math.random(0, items - 1),
         INTERACTIONS[math.random(1, #INTERACTIONS)], tag, n)
   end,
   ingest = function(n)
      local parts = {}
      for k = 0, batch - 1 do
         local fields = pool[((n * batch + k) % #pool) + 1]
         parts[#parts + 1] = string.format('{"item_id":"%s-%d-%d",%s', tag, n, k, fields:sub(2))
      end
      return '{"items":[' .. table.concat(parts, ",") .. "]}"
   end,
}

-- GET requests: the path, which names what is asked for.
local gets = {
   similar = function(n)
      return string.format("/items/item-%07d/similar?user_id=visitor-%d", math.random(0, items - 1), n)
   end,
}

local paths = {
   unique = "/recommendations",
   repeated = "/recommendations",
   users = "/recommendations",
   filtered = "/recommendations",
   rerank = "/recommendations",
   feedback = "/feedback",
   ingest = "/items",
}

function init(args)
   mode = args[1]
   if bodies[mode] == nil and gets[mode] == nil then
      error("unknown mode " .. tostring(mode))
   end
   counter = tonumber(args[2]) + thread_id * THREAD_SPAN
   items = tonumber(args[3])
   tag = args[4]
   words = read_lines(args[5])
   if mode == "ingest" then
      pool = read_lines(args[6])
      batch = tonumber(args[7])
   end
   math.randomseed(counter + 1)
   wrk.method = "POST"
   wrk.path = paths[mode]
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local n = counter
   counter = counter + 1
   if gets[mode] ~= nil then
      return wrk.format("GET", gets[mode](n))
   end
   return wrk.format(nil, nil, nil, bodies[mode](n))
end

function done(summary, latency, requests)
   local percentiles = {}
   for _, p in ipairs({ 50, 90, 95, 99, 99.9 }) do
      percentiles[#percentiles + 1] = string.format('"%g":%d', p, latency:percentile(p))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"percentiles":{%s}}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.max, latency.mean, latency.stdev, table.concat(percentiles, ",")))
end
