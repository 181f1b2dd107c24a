-- dshared's Redis backend: every operation on a segment is one call of this
-- script (EVALSHA), atomic on the server. KEYS[1] is the segment's meta hash;
-- every other key the script touches shares its hash tag {dshared:NAME}, so
-- one call stays in one Cluster slot.
--
-- ARGV: prefix, op, lock token ('0' when the caller holds no lease), the
-- segment's creation id, the count of new containers followed by each one
-- (id, field count, fields and values), then the op's own arguments.
--
-- A container is a hash: fields not starting with NUL are its items (dict:
-- canonical key -> value; list: base + index -> value); NUL-prefixed fields
-- are its header: \0t type (d or l), \0r reference count, \0p pinned (a
-- root), \0v version, dict: \0s next insertion sequence, \0c item count,
-- \0o<key> insertion sequence [| original key]; list: \0n length, \0b base.
-- A value is an int in decimal (HINCRBY works on it), or a tag byte and a
-- payload; 'D'/'L' + id refer to a container.

-- The common write first, before anything below is built (each call runs
-- the script's top level: the functions and tables below cost about 3 us a
-- call on the server, and the full 'dset' runs seven commands or more where
-- this path runs four): d[k] = a plain value, by a caller that holds no lease.
-- ARGV: prefix, 'ds', creation id, container id, field, value, original key.
-- It writes nothing and answers DSHFULL where the full 'dset' must run (it
-- raises the errors, waits for a lock, recovers a dead holder's block,
-- drops the old value's reference, drains the free queue).
if ARGV[2] == 'ds' then
  local P = ARGV[1]
  if redis.call('HGET', KEYS[1], 'cid') ~= ARGV[3]
      or redis.call('EXISTS', P .. 'lock', P .. 'jnl', P .. 'free') ~= 0 then
    return redis.error_reply('DSHFULL')
  end
  local K, f = P .. ARGV[4], ARGV[5]
  local th = redis.call('HMGET', K, '\0t', f)
  if th[1] ~= 'd' then return redis.error_reply('DSHFULL') end
  local old = th[2]
  if old then
    local c = string.byte(old, 1)
    if c == 68 or c == 76 then return redis.error_reply('DSHFULL') end
    redis.call('HSET', K, f, ARGV[6])
  else
    local s = redis.call('HINCRBY', K, '\0s', 1)
    if ARGV[7] ~= '' then s = s .. '|' .. ARGV[7] end
    redis.call('HSET', K, f, ARGV[6], '\0o' .. f, s)
    redis.call('HINCRBY', K, '\0c', 1)
  end
  return 1
end

local M = KEYS[1]
local P = ARGV[1]
local op = ARGV[2]
local tok = ARGV[3]
local cid = ARGV[4]
local REG = P .. 'ids'
local FREE = P .. 'free'
local LOCK = P .. 'lock'
local ROOTS = P .. 'roots'
local JNL = P .. 'jnl'
-- the journal while this call writes inside a lock() or transaction() block
-- (the caller holds the lease): every change is preceded by its undo record
local J = nil

local function fail(s) error({err = s}) end

local function isref(v)
  local c = string.byte(v, 1)
  return c == 68 or c == 76
end

local function hdr(f) return string.byte(f, 1) == 0 end

-- ---------------------------------------------------------------- journal
-- An undo record (cmsgpack): {'h', key, field[, old value]} a hash field
-- changed (absent before: no old value); {'c', key} a container created;
-- {'q'} an id pushed on the free queue. Undone newest first by op 'undo'.
local function jrec(k, f)
  local old = redis.call('HGET', k, f)
  if old then
    redis.call('RPUSH', J, cmsgpack.pack({'h', k, f, old}))
  else
    redis.call('RPUSH', J, cmsgpack.pack({'h', k, f}))
  end
end

local function hset(k, f, v)
  if J then jrec(k, f) end
  redis.call('HSET', k, f, v)
end

local function hdel(k, f)
  if J then jrec(k, f) end
  redis.call('HDEL', k, f)
end

local function hincr(k, f, d)
  if J then jrec(k, f) end
  return redis.call('HINCRBY', k, f, d)
end

-- ---------------------------------------------------------------- freeing
local function decref(v)
  local id = string.sub(v, 2)
  local k = P .. id
  local r = hincr(k, '\0r', -1)
  if r <= 0 and redis.call('HEXISTS', k, '\0p') == 0 and redis.call('HEXISTS', k, '\0t') == 1 then
    hdel(k, '\0t')                        -- views of it are stale from now on
    if J then redis.call('RPUSH', J, cmsgpack.pack({'q'})) end
    redis.call('RPUSH', FREE, id)
  end
end

-- free queued containers, about `budget` fields per call (a script blocks the server)
-- (not while a block's journal exists: its rollback may need them again)
local function drain(budget)
  if J or redis.call('EXISTS', JNL) == 1 then return end
  while budget > 0 do
    local id = redis.call('LINDEX', FREE, 0)
    if not id then return end
    local k = P .. id
    local n = redis.call('HLEN', k)
    if n <= budget then
      local all = redis.call('HGETALL', k)
      for i = 1, #all, 2 do
        if not hdr(all[i]) and isref(all[i + 1]) then decref(all[i + 1]) end
      end
      redis.call('DEL', k)
      redis.call('HDEL', REG, id)
      redis.call('HDEL', M, 'gc:' .. id)
      redis.call('LPOP', FREE)
      budget = budget - n - 1
    else
      local cur = redis.call('HGET', M, 'gc:' .. id) or '0'
      local res = redis.call('HSCAN', k, cur, 'COUNT', budget)
      local kv = res[2]
      for i = 1, #kv, 2 do
        if not hdr(kv[i]) and isref(kv[i + 1]) then decref(kv[i + 1]) end
        redis.call('HDEL', k, kv[i])
      end
      redis.call('HSET', M, 'gc:' .. id, res[1])
      budget = budget - #kv / 2 - 1
    end
  end
end

-- ---------------------------------------------------------------- checks
local have = redis.call('HGET', M, 'cid')

if op == 'unlink' then
  local reg = redis.call('HKEYS', REG)
  for _, id in ipairs(reg) do redis.call('DEL', P .. id) end
  redis.call('DEL', REG, FREE, LOCK, ROOTS, JNL, M)
  return #reg
end

if op == 'init' then
  -- ARGV[6]: a new creation id; ARGV[7]: create if missing ('1') or not
  if have then return {have, 0} end
  if ARGV[7] ~= '1' then return {false, 0} end
  redis.call('HSET', M, 'cid', ARGV[6], 'fence', 0)
  redis.call('HSET', P .. 'root', '\0t', 'd', '\0r', 1, '\0p', 1, '\0s', 0, '\0c', 0)
  redis.call('HSET', REG, 'root', 'd')
  redis.call('HSET', ROOTS, '', 'root')
  return {ARGV[6], 1}
end

if not have then
  fail('DSHLOST the segment is gone from the server (unlinked, flushed, or the server restarted without its data)')
end
if have ~= cid then
  fail('DSHLOST the segment was recreated on the server (creation id ' .. have .. ', this handle has ' .. cid .. ')')
end

local WRITES = {dset = 1, dsetdef = 1, dpop = 1, dpopitem = 1, dclear = 1, dupd = 1, dincr = 1, dcas = 1,
                lset = 1, lext = 1, lins = 1, lpop = 1, lrepl = 1, col = 1, collect = 1}
if WRITES[op] then
  local h = redis.call('GET', LOCK)
  if h then
    if h ~= tok then
      if tok ~= '0' then fail('DSHLEASE the lock lease expired and was taken by another holder') end
      return redis.error_reply('DSHLOCKED')
    end
    if op ~= 'collect' then
      J = JNL
    elseif redis.call('EXISTS', JNL) == 1 then
      fail('DSHBLOCK collect() cannot run in a block that has written (what the block replaced must stay until it ends)')
    end
  elseif tok ~= '0' then
    fail('DSHLEASE the lock lease expired before this write')
  elseif redis.call('EXISTS', JNL) == 1 then
    -- a holder died inside a block: the next locker rolls it back first
    return redis.error_reply('DSHRECOVER')
  end
end

-- ---------------------------------------------------------------- new containers
local ai = 6
local newset = {}
local news = {}
local nnew = tonumber(ARGV[5])
for _ = 1, nnew do
  local id = ARGV[ai]
  local nf = tonumber(ARGV[ai + 1])
  news[#news + 1] = {id, ai + 2, nf}
  newset[id] = true
  ai = ai + 2 + 2 * nf
end

local function live(v)
  -- a stored reference must name a live container (or one made by this call)
  local id = string.sub(v, 2)
  if newset[id] then return end
  local t = redis.call('HGET', P .. id, '\0t')
  if not t then fail('DSHSTALE a stored view refers to a removed container') end
end

local function validate(first, last, step)
  for i = first, last, step do
    if isref(ARGV[i]) then live(ARGV[i]) end
  end
end

local function make_new()
  for _, n in ipairs(news) do
    local id, at, nf = n[1], n[2], n[3]
    for i = at + 1, at + 2 * nf - 1, 2 do
      if not hdr(ARGV[i - 1]) and isref(ARGV[i]) then live(ARGV[i]) end
    end
  end
  for _, n in ipairs(news) do
    local id, at, nf = n[1], n[2], n[3]
    local k = P .. id
    if redis.call('EXISTS', k) == 1 then fail('DSHID container id collision') end
    if J then redis.call('RPUSH', J, cmsgpack.pack({'c', k})) end
    local args = {}
    for i = at, at + 2 * nf - 1 do
      args[#args + 1] = ARGV[i]
      if #args >= 1000 then redis.call('HSET', k, unpack(args)); args = {} end
    end
    if #args > 0 then redis.call('HSET', k, unpack(args)) end
    hset(REG, id, redis.call('HGET', k, '\0t'))
  end
  for _, n in ipairs(news) do
    local id, at, nf = n[1], n[2], n[3]
    for i = at + 1, at + 2 * nf - 1, 2 do
      if not hdr(ARGV[i - 1]) and isref(ARGV[i]) then
        hincr(P .. string.sub(ARGV[i], 2), '\0r', 1)
      end
    end
  end
end

local function incref(v) hincr(P .. string.sub(v, 2), '\0r', 1) end

local function container(id, want)
  local k = P .. id
  local t = redis.call('HGET', k, '\0t')
  if not t then fail('DSHSTALE the shared object behind this view has been removed') end
  if t ~= want then fail('DSHTYPE container type changed') end
  return k
end

-- a popped container comes back as a deep copy (it may be freed by this call)
local function dump(v, seen)
  if not isref(v) then return v end
  local id = string.sub(v, 2)
  if seen[id] then return v end
  seen[id] = true
  local all = redis.call('HGETALL', P .. id)
  for i = 2, #all, 2 do
    if not hdr(all[i - 1]) then all[i] = dump(all[i], seen) end
  end
  return {v, all}
end

-- ---------------------------------------------------------------- dict
-- (olds: when given, a replaced reference is appended there for the caller
-- to release after all its stores: a batch may drop a container and store
-- it again, which must not free it in between)
local function dput(k, f, v, okey, olds)
  local old = redis.call('HGET', k, f)
  hset(k, f, v)
  if not old then
    local s = hincr(k, '\0s', 1)
    if okey == '' then
      hset(k, '\0o' .. f, s)
    else
      hset(k, '\0o' .. f, s .. '|' .. okey)
    end
    hincr(k, '\0c', 1)
  end
  if isref(v) then incref(v) end
  if old and isref(old) then
    if olds then olds[#olds + 1] = old else decref(old) end
  end
  return old
end

local function ddel(k, f)
  local old = redis.call('HGET', k, f)
  if not old then return false end
  hdel(k, f)
  hdel(k, '\0o' .. f)
  hincr(k, '\0c', -1)
  return old
end

local BUDGET = 256
local r = nil

if op == 'dset' then
  local k = container(ARGV[ai], 'd')
  validate(ai + 2, ai + 2, 1)
  make_new()
  dput(k, ARGV[ai + 1], ARGV[ai + 2], ARGV[ai + 3])
  r = 1
elseif op == 'dsetdef' then
  local k = container(ARGV[ai], 'd')
  local old = redis.call('HGET', k, ARGV[ai + 1])
  if old then return old end
  validate(ai + 2, ai + 2, 1)
  make_new()
  dput(k, ARGV[ai + 1], ARGV[ai + 2], ARGV[ai + 3])
  return false
elseif op == 'dupd' then
  local k = container(ARGV[ai], 'd')
  local n = tonumber(ARGV[ai + 1])
  validate(ai + 3, ai + 2 + 3 * n, 3)
  make_new()
  local olds = {}
  for i = 0, n - 1 do
    local j = ai + 2 + 3 * i
    dput(k, ARGV[j], ARGV[j + 1], ARGV[j + 2], olds)
  end
  for _, v in ipairs(olds) do decref(v) end
  r = 1
elseif op == 'dpop' then
  local k = container(ARGV[ai], 'd')
  local cur = redis.call('HGET', k, ARGV[ai + 1])
  if not cur then return false end
  r = dump(cur, {})                   -- as it is while still in the dict (it may hold the dict)
  local old = ddel(k, ARGV[ai + 1])
  if isref(old) then decref(old) end
elseif op == 'dpopitem' then
  local k = container(ARGV[ai], 'd')
  local all = redis.call('HGETALL', k)
  local best, bf, bo = -1, nil, nil
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == '\0o' then
      local s = all[i + 1]
      local bar = string.find(s, '|', 1, true)
      local n = tonumber(bar and string.sub(s, 1, bar - 1) or s)
      if n > best then best, bf, bo = n, string.sub(f, 3), s end
    end
  end
  if not bf then return false end
  r = {bf, bo, dump(redis.call('HGET', k, bf), {})}
  local old = ddel(k, bf)
  if isref(old) then decref(old) end
elseif op == 'dclear' then
  local k = container(ARGV[ai], 'd')
  local all = redis.call('HGETALL', k)
  local olds = {}
  for i = 1, #all, 2 do
    if not hdr(all[i]) then
      hdel(k, all[i])
      hdel(k, '\0o' .. all[i])
      if isref(all[i + 1]) then olds[#olds + 1] = all[i + 1] end
    end
  end
  hset(k, '\0c', 0)
  for _, v in ipairs(olds) do decref(v) end
  r = 1
elseif op == 'dincr' then
  -- ARGV: id, field, delta, default, original key, kind ('i' ints, 'f' floats)
  local k = container(ARGV[ai], 'd')
  local f, delta, default, okey, kind = ARGV[ai + 1], ARGV[ai + 2], ARGV[ai + 3], ARGV[ai + 4], ARGV[ai + 5]
  local cur = redis.call('HGET', k, f)
  if kind == 'i' and (cur == false or string.match(cur, '^-?%d+$')) then
    if not cur then dput(k, f, default, okey) end
    -- the new value goes back as its digits (a Lua number is a double)
    if J then jrec(k, f) end
    local ok = pcall(redis.call, 'HINCRBY', k, f, delta)
    if ok then return redis.call('HGET', k, f) end
    return 'DSHCAS'
  end
  return 'DSHCAS'
elseif op == 'dcas' then
  -- ARGV: id, field, expected ('' absent), new value, original key
  local k = container(ARGV[ai], 'd')
  local cur = redis.call('HGET', k, ARGV[ai + 1]) or ''
  if cur ~= ARGV[ai + 2] then return 0 end
  validate(ai + 3, ai + 3, 1)
  make_new()
  dput(k, ARGV[ai + 1], ARGV[ai + 3], ARGV[ai + 4])
  r = 1

-- ---------------------------------------------------------------- list
elseif op == 'lget' then
  local k = container(ARGV[ai], 'l')
  local n = tonumber(redis.call('HGET', k, '\0n'))
  local i = tonumber(ARGV[ai + 1])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then fail('DSHINDEX list index out of range') end
  local b = tonumber(redis.call('HGET', k, '\0b'))
  return redis.call('HGET', k, tostring(b + i))
elseif op == 'lset' then
  local k = container(ARGV[ai], 'l')
  local n = tonumber(redis.call('HGET', k, '\0n'))
  local i = tonumber(ARGV[ai + 1])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then fail('DSHINDEX list assignment index out of range') end
  validate(ai + 2, ai + 2, 1)
  make_new()
  local b = tonumber(redis.call('HGET', k, '\0b'))
  local f = tostring(b + i)
  local old = redis.call('HGET', k, f)
  local v = ARGV[ai + 2]
  hset(k, f, v)
  hincr(k, '\0v', 1)
  if isref(v) then incref(v) end
  if isref(old) then decref(old) end
  r = 1
elseif op == 'lext' then
  local k = container(ARGV[ai], 'l')
  local last = #ARGV
  validate(ai + 1, last, 1)
  make_new()
  local n = tonumber(redis.call('HGET', k, '\0n'))
  local b = tonumber(redis.call('HGET', k, '\0b'))
  for j = ai + 1, last do
    local v = ARGV[j]
    hset(k, tostring(b + n), v)
    n = n + 1
    if isref(v) then incref(v) end
  end
  hset(k, '\0n', n)
  hincr(k, '\0v', 1)
  r = 1
elseif op == 'lins' then
  local k = container(ARGV[ai], 'l')
  validate(ai + 2, ai + 2, 1)
  make_new()
  local n = tonumber(redis.call('HGET', k, '\0n'))
  local b = tonumber(redis.call('HGET', k, '\0b'))
  local i = tonumber(ARGV[ai + 1])
  if i < 0 then i = i + n; if i < 0 then i = 0 end end
  if i > n then i = n end
  local v = ARGV[ai + 2]
  if i < n / 2 then
    for j = 0, i - 1 do
      hset(k, tostring(b + j - 1), redis.call('HGET', k, tostring(b + j)))
    end
    b = b - 1
    hset(k, '\0b', b)
  else
    for j = n - 1, i, -1 do
      hset(k, tostring(b + j + 1), redis.call('HGET', k, tostring(b + j)))
    end
  end
  hset(k, tostring(b + i), v)
  hset(k, '\0n', n + 1)
  hincr(k, '\0v', 1)
  if isref(v) then incref(v) end
  r = 1
elseif op == 'lpop' then
  local k = container(ARGV[ai], 'l')
  local n = tonumber(redis.call('HGET', k, '\0n'))
  local b = tonumber(redis.call('HGET', k, '\0b'))
  if n == 0 then fail('DSHINDEX pop from empty list') end
  local i = tonumber(ARGV[ai + 1])
  local ver = ARGV[ai + 2]
  if ver ~= '' and redis.call('HGET', k, '\0v') ~= ver then return 0 end
  if i < 0 then i = i + n end
  if i < 0 or i >= n then fail('DSHINDEX pop index out of range') end
  local old = redis.call('HGET', k, tostring(b + i))
  r = {dump(old, {})}                 -- as it is while still in the list
  if i < n / 2 then
    for j = i, 1, -1 do
      hset(k, tostring(b + j), redis.call('HGET', k, tostring(b + j - 1)))
    end
    hdel(k, tostring(b))
    hset(k, '\0b', b + 1)
  else
    for j = i, n - 2 do
      hset(k, tostring(b + j), redis.call('HGET', k, tostring(b + j + 1)))
    end
    hdel(k, tostring(b + n - 1))
  end
  hset(k, '\0n', n - 1)
  hincr(k, '\0v', 1)
  if isref(old) then decref(old) end
elseif op == 'lrepl' then
  -- ARGV: id, expected version ('' any), new items...
  local k = container(ARGV[ai], 'l')
  if ARGV[ai + 1] ~= '' and redis.call('HGET', k, '\0v') ~= ARGV[ai + 1] then return 0 end
  local last = #ARGV
  validate(ai + 2, last, 1)
  make_new()
  local n = tonumber(redis.call('HGET', k, '\0n'))
  local b = tonumber(redis.call('HGET', k, '\0b'))
  local olds = {}
  for j = 0, n - 1 do
    local f = tostring(b + j)
    local v = redis.call('HGET', k, f)
    if v and isref(v) then olds[#olds + 1] = v end
    hdel(k, f)
  end
  local m = 0
  for j = ai + 2, last do
    hset(k, tostring(m), ARGV[j])
    if isref(ARGV[j]) then incref(ARGV[j]) end
    m = m + 1
  end
  hset(k, '\0n', m)
  hset(k, '\0b', 0)
  hincr(k, '\0v', 1)
  for _, v in ipairs(olds) do decref(v) end
  r = 1

-- ---------------------------------------------------------------- segment
elseif op == 'col' then
  -- ARGV: name, id for a new one
  local id = redis.call('HGET', ROOTS, ARGV[ai])
  if id then return id end
  id = ARGV[ai + 1]
  if J then redis.call('RPUSH', J, cmsgpack.pack({'c', P .. id})) end
  redis.call('HSET', P .. id, '\0t', 'd', '\0r', 1, '\0p', 1, '\0s', 0, '\0c', 0)
  hset(REG, id, 'd')
  hset(ROOTS, ARGV[ai], id)
  return id
elseif op == 'lock' then
  -- ARGV: lease ms; the fencing token is a counter that only grows
  -- returns {token, records of a dead holder's block to roll back first}
  if redis.call('EXISTS', LOCK) == 1 then return false end
  local t = redis.call('HINCRBY', M, 'fence', 1)
  redis.call('SET', LOCK, t, 'PX', ARGV[ai])
  return {t, redis.call('LLEN', JNL)}
elseif op == 'renew' then
  if redis.call('GET', LOCK) ~= tok then return 0 end
  redis.call('PEXPIRE', LOCK, ARGV[ai])
  return 1
elseif op == 'unlock' then
  -- the commit point of the block: its journal goes with the lease
  if redis.call('GET', LOCK) ~= tok then return 0 end
  redis.call('DEL', LOCK, JNL)
  if redis.call('LLEN', FREE) > 0 then drain(BUDGET) end
  return 1
elseif op == 'undo' then
  -- ARGV: mark, budget, count ('1': a rollback, '2': a dead holder's block).
  -- Undoes journal records newest first down to mark, at most budget of
  -- them; returns how many stay above mark (the caller calls again).
  if redis.call('GET', LOCK) ~= tok then fail('DSHLEASE the lock lease expired before the rollback') end
  local mark, budget = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1])
  local n = redis.call('LLEN', JNL)
  while n > mark and budget > 0 do
    local rec = cmsgpack.unpack(redis.call('RPOP', JNL))
    local kind = rec[1]
    if kind == 'h' then
      if rec[4] then redis.call('HSET', rec[2], rec[3], rec[4]) else redis.call('HDEL', rec[2], rec[3]) end
    elseif kind == 'c' then
      redis.call('DEL', rec[2])
    elseif kind == 'q' then
      redis.call('RPOP', FREE)
    end
    n = n - 1
    budget = budget - 1
  end
  if n <= mark and ARGV[ai + 2] ~= '0' then
    redis.call('HINCRBY', M, 'rollbacks', 1)
    if ARGV[ai + 2] == '2' then redis.call('HINCRBY', M, 'repairs', 1) end
  end
  return n - mark
elseif op == 'drain' then
  drain(tonumber(ARGV[ai]))
  return redis.call('LLEN', FREE)
elseif op == 'collect' then
  -- mark from the roots, sweep what is not reachable (cycles included)
  drain(1e12)
  local reg = redis.call('HGETALL', REG)
  local marked = {}
  local stack = {}
  local roots = redis.call('HVALS', ROOTS)
  for _, id in ipairs(roots) do marked[id] = true; stack[#stack + 1] = id end
  while #stack > 0 do
    local id = table.remove(stack)
    local all = redis.call('HGETALL', P .. id)
    for i = 1, #all, 2 do
      if not hdr(all[i]) and isref(all[i + 1]) then
        local c = string.sub(all[i + 1], 2)
        if not marked[c] then marked[c] = true; stack[#stack + 1] = c end
      end
    end
  end
  local freed = 0
  for i = 1, #reg, 2 do
    local id = reg[i]
    if not marked[id] then
      local k = P .. id
      local all = redis.call('HGETALL', k)
      for j = 1, #all, 2 do
        if not hdr(all[j]) and isref(all[j + 1]) then
          local c = string.sub(all[j + 1], 2)
          if marked[c] then redis.call('HINCRBY', P .. c, '\0r', -1) end
        end
      end
      redis.call('DEL', k)
      redis.call('HDEL', REG, id)
      freed = freed + 1
    end
  end
  return freed
elseif op == 'check' then
  -- returns problems, the count of unreachable containers, the container count
  local problems = {}
  local reg = redis.call('HGETALL', REG)
  local queued = {}
  for _, id in ipairs(redis.call('LRANGE', FREE, 0, -1)) do queued[id] = true end
  local refs = {}
  local data = {}
  for i = 1, #reg, 2 do
    local id = reg[i]
    local all = redis.call('HGETALL', P .. id)
    local h = {}
    local items = 0
    for j = 1, #all, 2 do
      local f, v = all[j], all[j + 1]
      if hdr(f) then h[f] = v else
        items = items + 1
        if isref(v) then
          local c = string.sub(v, 2)
          refs[c] = (refs[c] or 0) + 1
          if redis.call('HEXISTS', REG, c) == 0 then
            problems[#problems + 1] = id .. ': reference to unknown container ' .. c
          end
        end
      end
    end
    data[id] = {h, items, all}
    if not h['\0t'] then
      if not queued[id] then problems[#problems + 1] = id .. ': no type but not queued to be freed' end
    elseif h['\0t'] ~= reg[i + 1] then
      problems[#problems + 1] = id .. ': type ' .. h['\0t'] .. ' registered as ' .. reg[i + 1]
    elseif h['\0t'] == 'd' then
      if tonumber(h['\0c']) ~= items then
        problems[#problems + 1] = id .. ': count ' .. h['\0c'] .. ' but ' .. items .. ' items'
      end
      for j = 1, #all, 2 do
        if not hdr(all[j]) and not h['\0o' .. all[j]] then
          problems[#problems + 1] = id .. ': item without insertion order'
        end
      end
    else
      local n, b = tonumber(h['\0n']), tonumber(h['\0b'])
      if n ~= items then problems[#problems + 1] = id .. ': length ' .. n .. ' but ' .. items .. ' items' end
      for j = 0, n - 1 do
        if redis.call('HEXISTS', P .. id, tostring(b + j)) == 0 then
          problems[#problems + 1] = id .. ': list slot ' .. j .. ' missing'
        end
      end
    end
  end
  for id, d in pairs(data) do
    local h = d[1]
    if h['\0t'] and not h['\0p'] and tonumber(h['\0r']) ~= (refs[id] or 0) then
      problems[#problems + 1] = id .. ': refcount ' .. tostring(h['\0r']) .. ' but ' .. (refs[id] or 0) .. ' references'
    end
  end
  -- reachability: from the roots, and from the containers queued to be
  -- freed (what they alone hold is freed by the bounded steps, not garbage
  -- for collect())
  local marked = {}
  local stack = {}
  for _, id in ipairs(redis.call('HVALS', ROOTS)) do marked[id] = true; stack[#stack + 1] = id end
  for id, _ in pairs(queued) do
    if not marked[id] then marked[id] = true; stack[#stack + 1] = id end
  end
  while #stack > 0 do
    local id = table.remove(stack)
    local d = data[id]
    if d then
      local all = d[3]
      for j = 1, #all, 2 do
        if not hdr(all[j]) and isref(all[j + 1]) then
          local c = string.sub(all[j + 1], 2)
          if not marked[c] then marked[c] = true; stack[#stack + 1] = c end
        end
      end
    end
  end
  local garbage = 0
  for id, d in pairs(data) do
    if d[1]['\0t'] and not marked[id] then garbage = garbage + 1 end
  end
  return {problems, garbage, #reg / 2, redis.call('LLEN', FREE)}
else
  fail('DSHOP unknown operation ' .. op)
end

if redis.call('LLEN', FREE) > 0 then drain(BUDGET) end
return r
