-- Hot-seat reservation attempts: HOT_SHARE (default 0.8) of requests go to
-- the first HOT_SEATS seats starting at FIRST_SEAT, the rest to any of the
-- ALL_SEATS seats. The hot seats are soon all taken, after which the
-- refusals must be answered without a database round trip.
dofile(os.getenv("WRK_LIB") or "bench/wrk/lib.lua")

local first = tonumber(os.getenv("FIRST_SEAT"))
local all = tonumber(os.getenv("ALL_SEATS"))
local hot = tonumber(os.getenv("HOT_SEATS"))
local hot_share = tonumber(os.getenv("HOT_SHARE") or "0.8")
local i = 0

function init(args)
  i = (thread_no or 0) * 7919
  math.randomseed(os.time() + (thread_no or 0))
end

function request()
  i = i % #users + 1
  local seat
  if math.random() < hot_share then seat = first + math.random(0, hot - 1) else seat = first + math.random(0, all - 1) end
  return reserve(i, seat)
end
