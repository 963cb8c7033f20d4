-- Which node holds a session, and where to reach it.
-- KEYS[1] owners (sid -> node)   KEYS[2] addrs (node -> address)
-- ARGV[1] sid
-- Returns {node, address}, or false if no live node holds the session.
local node = redis.call('HGET', KEYS[1], ARGV[1])
if not node then
  return false
end
local addr = redis.call('HGET', KEYS[2], node)
if not addr then
  return false
end
return {node, addr}
