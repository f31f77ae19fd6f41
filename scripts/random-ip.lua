-- wrk script for scripts/load-test.sh: every request is a POST /logs of one JSON log entry whose
-- client address is a fresh random IPv4 address, so the service's set grows during the run.
--
--   wrk -t1 -c64 -d10s -s scripts/random-ip.lua http://127.0.0.1:15000/logs

local counter = 0

-- Runs once per thread in the main Lua state: give each thread its own id for seeding.
function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
end

-- Runs inside each thread's own Lua state: seed its generator differently from the others.
function init(args)
   local tid = id or 1
   math.randomseed(os.time() * 1000 + tid * 7919 + math.floor((os.clock() * 1e6) % 1000))
   -- The first values after seeding are poorly mixed in some Lua versions; discard a few.
   for _ = 1, 10 do math.random() end
end

local headers = { ["Content-Type"] = "application/json" }
-- scripts/security-cost.sh measures the service with AUTH_TOKEN set this way.
local token = os.getenv("WRK_BEARER_TOKEN")
if token and token ~= "" then
   headers["Authorization"] = "Bearer " .. token
end

-- WRK_TIMESTAMP=now sends entries without a timestamp, counted at their arrival, so that with
-- time windows on each lands in them (scripts/windows-cost.sh); by default the seed's fixed
-- timestamp, older than any window.
local stamp = '"timestamp":"2024-01-01T00:00:00Z",'
if os.getenv("WRK_TIMESTAMP") == "now" then
   stamp = ""
end

-- WRK_POOL=N draws the addresses from N fixed ones instead (repeat traffic); with
-- WRK_NEW=F as well, a fraction F of the requests still carries a fresh random address
-- (WRK_POOL=20000 WRK_NEW=0.1: about 90 % repeats, as scripts/redis-cost.sh sends).
local pool = tonumber(os.getenv("WRK_POOL") or "")
local fresh = tonumber(os.getenv("WRK_NEW") or "") or 0

function request()
   local ip
   if pool and math.random() >= fresh then
      local i = math.random(0, pool - 1)
      ip = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
   else
      ip = string.format("%d.%d.%d.%d",
         math.random(0, 255), math.random(0, 255), math.random(0, 255), math.random(0, 255))
   end
   local body = '{' .. stamp .. '"ip":"' .. ip .. '","url":"/load-test"}'
   return wrk.format("POST", "/logs", headers, body)
end
