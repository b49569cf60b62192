-- One event per request, unique ids: `<run>-<thread>-<n>`. The sku and location are drawn like
-- the in-process benchmark's (100k skus x 20 locations), one event in fifty a count (`set`).
local counter = 0
local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   prefix = (args[1] or "w") .. "-" .. tid .. "-"
   skus = tonumber(args[2] or "100000")
   math.randomseed(tid * 7919 + os.time())
end

function request()
   counter = counter + 1
   local sku = string.format("SKU-%06d", math.random(0, skus - 1))
   local loc = string.format("L%02d", math.random(0, 19))
   local at = os.date("!%Y-%m-%dT%H:%M:%SZ")
   local change
   if math.random(50) == 1 then
      change = string.format('"set":{"on_hand":%d}', math.random(0, 499))
   else
      change = string.format('"adjust":{"on_hand":%d}', math.random(-10, 10))
   end
   local body = string.format(
      '{"id":"%s%d","source":"wms","sku":"%s","location":"%s","occurred_at":"%s",%s}',
      prefix, counter, sku, loc, at, change)
   return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body)
end
