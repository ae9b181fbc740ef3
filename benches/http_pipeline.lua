-- wrk script for benches/http_load.sh (HTTP_LOAD_PIPELINE=N): every write carries N
-- requests back to back (HTTP/1.1 pipelining), so wrk spends about 1/N of its usual
-- CPU per request and the server, not wrk, becomes the bottleneck.
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
