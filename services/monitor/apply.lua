#!lua
-- Apply a batch of trace events to one dictionary's aggregates and acknowledge them, in one
-- atomic script: either every effect of the batch and its XACKs happen, or none do.
-- Each event's idempotency key (request_id:chunk_index, kept dedup_ms) makes its effect
-- happen at most once even when the same event is delivered again (claimed from a crashed
-- consumer, or published twice); the XACK in the same script makes it happen at least once.
-- Redis does not roll back a script that fails half-way, so every check (idempotency keys,
-- key types) runs before the first write; with the shebang Redis refuses the whole script
-- up front when it is out of memory instead of failing one of its writes.
--
-- KEYS[1] stream  KEYS[2] totals  KEYS[3] max  KEYS[4] flag_min  KEYS[5] deadletter
-- KEYS[6 .. 5+nb] bucket hashes; then one idempotency key per ok event, then per bad event.
-- ARGV[1] group  ARGV[2] nb  ARGV[3] JSON batch  ARGV[4] feature blob
-- ARGV[5 ..] payloads of the bad events.
-- batch = {ttl = [ms per bucket], dedup_ms, dl_maxlen, consumer,
--          ok = [[entry_id, bucket (0 = late), tokens, n_features], ...],
--          bad = [[entry_id, reason], ...], gone = [entry_id, ...]}
-- The blob holds, per ok event in order: n uint32 feature ids, n uint32 fire counts and
-- n float32 max activations, little-endian.
-- Returns {applied, duplicates, dead_lettered, increments, deleted}.

local stream, totals, maxkey, flagkey, dlkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group = ARGV[1]
local nb = tonumber(ARGV[2])
local batch = cjson.decode(ARGV[3])
local blob = ARGV[4]
local seen_base = 5 + nb
local CHUNK = 500
local UNPACK = 64
local formats = {}
local pos = 1

-- The next n values of one kind ('I4' or 'f') from the blob, UNPACK per struct call.
local function read_array(kind, n)
  local out, done = {}, 0
  while done < n do
    local k = math.min(UNPACK, n - done)
    local fmt = formats[kind .. k]
    if fmt == nil then
      fmt = '<' .. string.rep(kind, k)
      formats[kind .. k] = fmt
    end
    local values = {struct.unpack(fmt, blob, pos)}
    pos = values[k + 1]
    for j = 1, k do out[done + j] = values[j] end
    done = done + k
  end
  return out
end

local flags = {}
local raw_flags = redis.call('HGETALL', flagkey)
for i = 1, #raw_flags, 2 do flags[tonumber(raw_flags[i])] = tonumber(raw_flags[i + 1]) end

local buckets = {}      -- bucket number -> {fires, hits, hmax, tokens, events}
local maxacc = {}       -- feature -> largest activation in the batch
local fire_tot, hit_tot = {}, {}
local applied, increments, late, tokens = 0, 0, 0, 0
local ack = {}

local function bucket(b)
  local a = buckets[b]
  if a == nil then
    a = {fires = {}, hits = {}, hmax = {}, tokens = 0, events = 0}
    buckets[b] = a
  end
  return a
end

local function count_flagged(a, f, c, m)
  local minimum = flags[f]
  if minimum == nil then return end
  fire_tot[f] = (fire_tot[f] or 0) + c
  if m >= minimum then
    hit_tot[f] = (hit_tot[f] or 0) + 1
    if a then a.hits[f] = (a.hits[f] or 0) + 1 end
  end
  if a and (a.hmax[f] == nil or m > a.hmax[f]) then a.hmax[f] = m end
end

local function count_event(ev)
  local a = nil
  if ev[2] > 0 then
    a = bucket(ev[2])
    a.tokens = a.tokens + ev[3]
    a.events = a.events + 1
  else
    late = late + 1
  end
  tokens = tokens + ev[3]
  local n = ev[4]
  local ids, counts, maxes = read_array('I4', n), read_array('I4', n), read_array('f', n)
  for j = 1, #ids do
    local f, c, m = ids[j], counts[j], maxes[j]
    if a then a.fires[f] = (a.fires[f] or 0) + c end
    local cur = maxacc[f]
    if cur == nil or m > cur then maxacc[f] = m end
    count_flagged(a, f, c, m)
  end
  increments = increments + #ids
end

-- Checks, reads only: a failing check must leave Redis untouched (no rollback exists).
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want)
  end
end
for b = 1, nb do check_type(KEYS[5 + b], 'hash') end
check_type(totals, 'hash')
check_type(maxkey, 'hash')
check_type(dlkey, 'stream')

local fresh = {}        -- idempotency keys first seen in this batch
local function is_new(key)
  if fresh[key] or redis.call('EXISTS', key) == 1 then return false end
  fresh[key] = true
  return true
end

local dups = 0
for i, ev in ipairs(batch.ok) do
  ack[#ack + 1] = ev[1]
  if is_new(KEYS[seen_base + i]) then
    applied = applied + 1
    count_event(ev)
  else
    dups = dups + 1
    pos = pos + 12 * ev[4]  -- skip its arrays
  end
end
local n_ok = #batch.ok
local letters = {}
for i, bad in ipairs(batch.bad) do
  ack[#ack + 1] = bad[1]
  if is_new(KEYS[seen_base + n_ok + i]) then letters[#letters + 1] = i end
end
for _, id in ipairs(batch.gone) do ack[#ack + 1] = id end

-- Writes: the key types fit and Redis checked its memory before starting the script.
for key in pairs(fresh) do redis.call('SET', key, '1', 'PX', batch.dedup_ms) end
for b, a in pairs(buckets) do
  local key = KEYS[5 + b]
  for f, c in pairs(a.fires) do redis.call('HINCRBY', key, f, c) end
  redis.call('HINCRBY', key, '_tokens', a.tokens)
  redis.call('HINCRBY', key, '_events', a.events)
  for f, h in pairs(a.hits) do redis.call('HINCRBY', key, 'h:' .. f, h) end
  for f, m in pairs(a.hmax) do
    local cur = redis.call('HGET', key, 'm:' .. f)
    if not cur or m > tonumber(cur) then redis.call('HSET', key, 'm:' .. f, m) end
  end
  redis.call('PEXPIRE', key, batch.ttl[b])
end

local fids = {}
for f in pairs(maxacc) do fids[#fids + 1] = f end
for s = 1, #fids, CHUNK do
  local e = math.min(s + CHUNK - 1, #fids)
  local cur = redis.call('HMGET', maxkey, unpack(fids, s, e))
  local upd = {}
  for j = s, e do
    local f, c = fids[j], cur[j - s + 1]
    if not c or maxacc[f] > tonumber(c) then
      upd[#upd + 1] = f
      upd[#upd + 1] = maxacc[f]
    end
  end
  if #upd > 0 then redis.call('HSET', maxkey, unpack(upd)) end
end

for f, c in pairs(fire_tot) do redis.call('HINCRBY', totals, 'fires:' .. f, c) end
for f, h in pairs(hit_tot) do redis.call('HINCRBY', totals, 'hits:' .. f, h) end

for _, i in ipairs(letters) do
  local bad = batch.bad[i]
  redis.call('XADD', dlkey, 'MAXLEN', '~', batch.dl_maxlen, '*', 'entry_id', bad[1],
             'reason', bad[2], 'consumer', batch.consumer, 'event', ARGV[4 + i])
end
local dead = #letters

local scalars = {tokens = tokens, events = applied, duplicates = dups, late = late,
                 dead_lettered = dead, deleted = #batch.gone}
for name, value in pairs(scalars) do
  if value > 0 then redis.call('HINCRBY', totals, name, value) end
end
for s = 1, #ack, CHUNK do
  redis.call('XACK', stream, group, unpack(ack, s, math.min(s + CHUNK - 1, #ack)))
end
return {applied, dups, dead, increments, #batch.gone}
