-- Claims of free seats: every request asks for a seat nobody asked for yet
-- (FIRST_SEAT onwards, SEATS of them, split between threads), so each is a
-- real database write.
dofile(os.getenv("WRK_LIB") or "bench/wrk/lib.lua")

local first = tonumber(os.getenv("FIRST_SEAT"))
local seats = tonumber(os.getenv("SEATS"))
local threads_n = tonumber(os.getenv("THREADS") or "1")
local next_seat, last_seat, i = 0, 0, 0

function init(args)
  local share = math.floor(seats / threads_n)
  next_seat = first + (thread_no or 0) * share
  last_seat = next_seat + share - 1
  i = (thread_no or 0) * 7919
end

function request()
  i = i % #users + 1
  local seat = next_seat
  if next_seat < last_seat then next_seat = next_seat + 1 end
  return reserve(i, seat)
end
