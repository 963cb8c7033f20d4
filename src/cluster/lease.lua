-- The cluster's one count, decided atomically: every change to the set of
-- live sessions and its new size and version happen in this one script.
--
-- KEYS[1] epoch    a random id set when the data set is first registered;
--                  its absence or change means Redis lost its data
-- KEYS[2] version  bumped on every change; starts at Redis time (ms) x 1000
--                  so a new epoch's versions exceed the old epoch's
-- KEYS[3] members  zset of "node|sid", all scores 0, so that one node's
--                  sessions are one lexicographic range
-- KEYS[4] nodes    zset of node -> lease expiry (Redis ms)
-- KEYS[5] owners   hash of sid -> node, so any node finds a session's owner
-- KEYS[6] addrs    hash of node -> the address other nodes forward to
-- KEYS[7] away     zset of "node|sid" of sessions away (uncounted, kept
--                  for a resume), all scores 0: their owner records go
--                  when their node dies or parts
-- KEYS[8] streams  zset of "node|id" of the shared streams a node holds,
--                  all scores 0: their owner records go with their node
-- KEYS[9] persons  hash of person -> its live sessions, for the sessions
--                  that share a person (a user id, a browser)
-- KEYS[10] who     hash of sid -> person, for those sessions
-- KEYS[11] keyed   how many live sessions have a person: the others are
--                  people of their own, so users = count - keyed + persons
-- ARGV[1] op: register | join | leave | away | renew | part
--          (away: uncounted like leave, but its owner record stays so a
--          resume through any node finds the node holding it)
-- ARGV[2] the caller's epoch (for register: a fresh one to use if none)
-- ARGV[3] node id   ARGV[4] lease ms   ARGV[5] count channel
-- ARGV[6] this node's address   ARGV[7..] sids, each "sid" or, for a join,
--          "sid|person"
-- Returns {status, epoch, count, version, users}; status 'stale' asks the
-- node to register all its sessions again (new epoch, or its lease lapsed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, node, lease = ARGV[1], ARGV[3], tonumber(ARGV[4])
local epoch = redis.call('GET', KEYS[1])
if op == 'register' then
  if not epoch then
    epoch = ARGV[2]
    redis.call('SET', KEYS[1], epoch)
    redis.call('SET', KEYS[2], string.format('%d', now * 1000))
  end
elseif epoch ~= ARGV[2] then
  return {'stale', epoch or '', 0, 0}
end
local changed = 0
-- A live session no longer counted: its person loses it.
local function unperson(sid)
  local p = redis.call('HGET', KEYS[10], sid)
  if p then
    redis.call('HDEL', KEYS[10], sid)
    if redis.call('HINCRBY', KEYS[9], p, -1) <= 0 then
      redis.call('HDEL', KEYS[9], p)
    end
    redis.call('DECR', KEYS[11])
  end
end
local function drop(n, with_away)
  local lo, hi = '[' .. n .. '|', '[' .. n .. '|\255'
  local members = redis.call('ZRANGEBYLEX', KEYS[3], lo, hi)
  for _, m in ipairs(members) do
    local sid = string.sub(m, #n + 2)
    redis.call('HDEL', KEYS[5], sid)
    unperson(sid)
  end
  if #members > 0 then
    redis.call('ZREMRANGEBYLEX', KEYS[3], lo, hi)
  end
  -- A node registering again keeps its away sessions and shared streams
  -- findable (it records its streams again itself); a dead or parting
  -- node's go with it.
  if with_away then
    for _, k in ipairs({KEYS[7], KEYS[8]}) do
      local held = redis.call('ZRANGEBYLEX', k, lo, hi)
      for _, m in ipairs(held) do
        redis.call('HDEL', KEYS[5], string.sub(m, #n + 2))
      end
      if #held > 0 then
        redis.call('ZREMRANGEBYLEX', k, lo, hi)
      end
    end
  end
  return #members
end
-- Leases that ran out: a crashed node never leaves, so whoever calls next
-- removes its sessions. Bounded per call; the rest go on the next call.
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 64)
for _, d in ipairs(dead) do
  changed = changed + drop(d, true)
  redis.call('ZREM', KEYS[4], d)
  redis.call('HDEL', KEYS[6], d)
end
local status = 'ok'
if op == 'register' or op == 'part' then
  changed = changed + drop(node, op == 'part') + 1
  if op == 'part' then
    redis.call('ZREM', KEYS[4], node)
    redis.call('HDEL', KEYS[6], node)
  else
    redis.call('HSET', KEYS[6], node, ARGV[6])
  end
elseif not redis.call('ZSCORE', KEYS[4], node) then
  status = 'stale'
end
if status == 'ok' and op ~= 'part' then
  redis.call('ZADD', KEYS[4], now + lease, node)
  for i = 7, #ARGV do
    local sid, person = ARGV[i], nil
    local bar = string.find(sid, '|', 1, true)
    if bar then
      person = string.sub(sid, bar + 1)
      sid = string.sub(sid, 1, bar - 1)
    end
    local m = node .. '|' .. sid
    if op == 'leave' or op == 'away' then
      local removed = redis.call('ZREM', KEYS[3], m)
      changed = changed + removed
      if removed == 1 then
        unperson(sid)
      end
      if op == 'leave' then
        redis.call('HDEL', KEYS[5], sid)
      else
        redis.call('ZADD', KEYS[7], 0, m)
      end
    elseif op ~= 'renew' then
      local added = redis.call('ZADD', KEYS[3], 0, m)
      changed = changed + added
      redis.call('HSET', KEYS[5], sid, node)
      if added == 1 and person and person ~= '' then
        redis.call('HSET', KEYS[10], sid, person)
        redis.call('HINCRBY', KEYS[9], person, 1)
        redis.call('INCR', KEYS[11])
      end
      -- A join of an away sid is its resume on this node.
      redis.call('ZREM', KEYS[7], m)
    end
  end
end
local count = redis.call('ZCARD', KEYS[3])
local keyed = tonumber(redis.call('GET', KEYS[11]) or '0')
local users = count - keyed + redis.call('HLEN', KEYS[9])
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed > 0 then
  version = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[5], string.format('%d %d %d', version, count, users))
end
return {status, epoch, count, version, users}
