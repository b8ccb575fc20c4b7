-- A plain GET of the URL given to wrk, summarised like the other scripts.
dofile(os.getenv("WRK_LIB") or "bench/wrk/lib.lua")
