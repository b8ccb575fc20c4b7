-- The seat map: GET /v1/performances/$PERFORMANCE_ID/seats for admitted users
-- in turn (cached per instance for a second, as in a sale).
dofile(os.getenv("WRK_LIB") or "bench/wrk/lib.lua")

local path = "/v1/performances/" .. (os.getenv("PERFORMANCE_ID") or "1") .. "/seats"
local i = 0
function init(args)
  i = (thread_no or 0) * 7919
end

function request()
  i = i % #users + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. users[i].bearer, ["Queue-Token"] = users[i].queue })
end
