-- wrk script for benches/http_load.sh (HTTP_LOAD_PIPELINE=N): every write carries N
-- requests back to back (HTTP/1.1 pipelining). wrk then makes one write per N requests
-- instead of one each (at N=16 its CPU per request about halves on our 2-core VM), and
-- the server, not wrk, becomes the bottleneck.
init = function(args)
   local depth = tonumber(args[1]) or 1
   local requests = {}
   for i = 1, depth do
      requests[i] = wrk.format()
   end
   pipelined = table.concat(requests)
end

request = function()
   return pipelined
end
