-- Every node whose lease has not run out, with where to reach it.
-- KEYS[1] nodes (node -> lease expiry, Redis ms)   KEYS[2] addrs (node -> address)
-- Returns {node, address, node, address, ...}, sorted by node.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
table.sort(live)
local out = {}
for _, node in ipairs(live) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('HGET', KEYS[2], node) or ''
end
return out
