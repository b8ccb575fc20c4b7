-- The hot poll: GET /v1/queue/tokens/current for admitted users in turn.
dofile(os.getenv("WRK_LIB") or "bench/wrk/lib.lua")

local i = 0
function init(args)
  i = (thread_no or 0) * 7919
end

function request()
  i = i % #users + 1
  return wrk.format("GET", "/v1/queue/tokens/current", { ["Queue-Token"] = users[i].queue })
end
