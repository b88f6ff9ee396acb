"""The Lua scripts of `RedisCacheBackend`: every merge runs in Redis, atomically.

Keys of one account start with ``B = <prefix>:<account>`` (the account escaped so that
it holds no ``:``); ``KEYS[1]`` is ``B``, ``KEYS[2]`` the registry of accounts::

    B:epoch          the account's epoch (tokens are "<account epoch>.<chat epoch>")
    B:known          set: every chat id with a key below (kept after a drop: its epoch)
    B:c:<chat>:m     hash: message id -> "<deleted>.<edit_date>.<pts>.<date>|" + body
    B:c:<chat>:live  sorted set of live message ids (score = id)
    B:c:<chat>:dead  sorted set of tombstoned message ids
    B:c:<chat>:s     hash: ep (epoch), sp lo fs at (the span), mi mo (read marks),
                     lr (last read)
    B:orph           sorted set: orphan deleted ids by arrival; B:orph:pts their pts,
                     B:orph:seq the arrival counter
    B:cur, B:cur:ch  hash: the cursor (pts qts date seq at); hash: channel -> pts
    B:dlg, B:ds      hash: chat -> "<top_id>.<top_date>.<pinned>|" + body; the dialog
                     span (ep sp lo fs at)
    B:ent            hash: peer id -> entity bytes

Numbers are compared with ``tonumber`` (exact below 2**53: ids, pts, dates, chat ids);
floats (times) are stored as Python wrote them and only compared.
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

_COMMON = r"""
local B = KEYS[1]
local function chat_key(chat, suffix) return B .. ':c:' .. chat .. ':' .. suffix end
local function is_channel(chat) return tonumber(chat) <= -1000000000000 end
local function header(v)
  local d, e, p, dt = string.match(v, '^(%d+)%.(%d+)%.(%d+)%.(%-?%d+)|')
  return tonumber(d), tonumber(e), tonumber(p), dt
end
local function newer(d, e, p, od, oe, op)
  if d ~= od then return d > od end
  if e ~= oe then return e > oe end
  return p > op
end
local function num(v) if v then return tonumber(v) end return 0 end
local function register() redis.call('SADD', KEYS[2], ARGV[1]) end
"""

# ARGV: account, then 7 per message: chat, id, deleted, edit_date, pts, date, body.
_PUT = r"""
register()
local n = 0
for i = 2, #ARGV, 7 do
  local chat, id = ARGV[i], ARGV[i + 1]
  local d, e, p, dt = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]),
    ARGV[i + 5]
  local body = ARGV[i + 6]
  if not is_channel(chat) then
    local opts = redis.call('HGET', B .. ':orph:pts', id)
    if opts then
      redis.call('HDEL', B .. ':orph:pts', id)
      redis.call('ZREM', B .. ':orph', id)
      d, body, p = 1, '', math.max(p, tonumber(opts))
    end
  end
  local old = redis.call('HGET', chat_key(chat, 'm'), id)
  local take = true
  if old then
    local od, oe, op = header(old)
    take = newer(d, e, p, od, oe, op)
  end
  if take then
    redis.call('HSET', chat_key(chat, 'm'), id,
      string.format('%d.%d.%d.%s|', d, e, p, dt) .. body)
    if d == 1 then
      redis.call('ZREM', chat_key(chat, 'live'), id)
      redis.call('ZADD', chat_key(chat, 'dead'), id, id)
    else
      redis.call('ZADD', chat_key(chat, 'live'), id, id)
    end
    redis.call('SADD', B .. ':known', chat)
    n = n + 1
  end
end
return n
"""

# ARGV: account, pts, orphan bound, ids...
_DELETE = r"""
register()
local pts, bound = tonumber(ARGV[2]), tonumber(ARGV[3])
local chats = {}
for _, chat in ipairs(redis.call('SMEMBERS', B .. ':known')) do
  if not is_channel(chat) then table.insert(chats, chat) end
end
local held = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local found = false
  for _, chat in ipairs(chats) do
    local old = redis.call('HGET', chat_key(chat, 'm'), id)
    if old then
      found = true
      held[chat] = true
      local od, oe, op, dt = header(old)
      if od == 0 then
        redis.call('HSET', chat_key(chat, 'm'), id,
          string.format('1.%d.%d.%s|', oe, math.max(op, pts), dt))
        redis.call('ZREM', chat_key(chat, 'live'), id)
        redis.call('ZADD', chat_key(chat, 'dead'), id, id)
      end
    end
  end
  if not found then
    local seq = redis.call('INCR', B .. ':orph:seq')
    redis.call('ZADD', B .. ':orph', seq, id)
    redis.call('HSET', B .. ':orph:pts', id, pts)
    local extra = redis.call('ZCARD', B .. ':orph') - bound
    if extra > 0 then
      local popped = redis.call('ZPOPMIN', B .. ':orph', extra)
      for k = 1, #popped, 2 do  -- member, score, member, score...
        redis.call('HDEL', B .. ':orph:pts', popped[k])
      end
    end
  end
end
local out = {}
for chat in pairs(held) do table.insert(out, chat) end
return out
"""

# ARGV: account, chat, below ("+inf" or "(<id>"), limit
_HISTORY = r"""
local ids = redis.call('ZREVRANGEBYSCORE', chat_key(ARGV[2], 'live'), ARGV[3], '-inf',
  'LIMIT', 0, tonumber(ARGV[4]))
if #ids == 0 then return {} end
local values = redis.call('HMGET', chat_key(ARGV[2], 'm'), unpack(ids))
local out = {}
for i, id in ipairs(ids) do
  if values[i] then table.insert(out, id); table.insert(out, values[i]) end
end
return out
"""

# ARGV: account, chat, below, limit, touch ("" for none), then peer ids. One snapshot
# (a script runs alone): the span as _SPAN, the messages as _HISTORY, the entities among
# the peers (id, value pairs), and a read recorded as _FORWARD's "lr".
_READ_HISTORY = r"""
local chat = ARGV[2]
local ep = redis.call('GET', B .. ':epoch') or '0'
local s = redis.call('HMGET', chat_key(chat, 's'), 'ep', 'sp', 'lo', 'fs', 'at')
local span = {ep .. '.' .. (s[1] or '0'), s[2] or '0', s[3] or '0', s[4] or '0', s[5] or '0'}
local messages = {}
local ids = redis.call('ZREVRANGEBYSCORE', chat_key(chat, 'live'), ARGV[3], '-inf',
  'LIMIT', 0, tonumber(ARGV[4]))
if #ids > 0 then
  local values = redis.call('HMGET', chat_key(chat, 'm'), unpack(ids))
  for i, id in ipairs(ids) do
    if values[i] then table.insert(messages, id); table.insert(messages, values[i]) end
  end
end
local entities = {}
if #ARGV >= 6 then
  local peers = {unpack(ARGV, 6)}
  local values = redis.call('HMGET', B .. ':ent', unpack(peers))
  for i, peer in ipairs(peers) do
    if values[i] then table.insert(entities, peer); table.insert(entities, values[i]) end
  end
end
if ARGV[5] ~= '' then
  register()
  local state = chat_key(chat, 's')
  if tonumber(ARGV[5]) > num(redis.call('HGET', state, 'lr')) then
    redis.call('HSET', state, 'lr', ARGV[5])
  end
  redis.call('SADD', B .. ':known', chat)
end
return {span, messages, entities}
"""

# ARGV: account, chat, keep
_TRIM = r"""
local chat, keep = ARGV[2], tonumber(ARGV[3])
local live = chat_key(chat, 'live')
if redis.call('ZCARD', live) <= keep then return 0 end
local floor
if keep > 0 then
  floor = tonumber(redis.call('ZREVRANGE', live, keep - 1, keep - 1)[1])
else
  floor = tonumber(redis.call('ZREVRANGE', live, 0, 0)[1]) + 1
end
local below = '(' .. string.format('%d', floor)
local removed = 0
for _, name in ipairs({'live', 'dead'}) do
  local key = chat_key(chat, name)
  local ids = redis.call('ZRANGEBYSCORE', key, '-inf', below)
  if name == 'live' then removed = #ids end
  for s = 1, #ids, 1000 do
    redis.call('HDEL', chat_key(chat, 'm'), unpack(ids, s, math.min(s + 999, #ids)))
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', below)
end
local state = chat_key(chat, 's')
if redis.call('HGET', state, 'sp') == '1' then
  local low = math.max(num(redis.call('HGET', state, 'lo')), floor)
  redis.call('HSET', state, 'lo', string.format('%d', low), 'fs', '0')
end
return removed
"""

# ARGV: account, chat
_SPAN = r"""
local ep = redis.call('GET', B .. ':epoch') or '0'
local s = redis.call('HMGET', chat_key(ARGV[2], 's'), 'ep', 'sp', 'lo', 'fs', 'at')
return {ep .. '.' .. (s[1] or '0'), s[2] or '0', s[3] or '0', s[4] or '0', s[5] or '0'}
"""

# ARGV: account, chat, token, low, from_start, anchored_at
_SET_SPAN = r"""
local state = chat_key(ARGV[2], 's')
local ep = redis.call('GET', B .. ':epoch') or '0'
if ep .. '.' .. (redis.call('HGET', state, 'ep') or '0') ~= ARGV[3] then return 0 end
register()
redis.call('HSET', state, 'sp', '1', 'lo', ARGV[4], 'fs', ARGV[5], 'at', ARGV[6])
redis.call('SADD', B .. ':known', ARGV[2])
return 1
"""

# ARGV: account, "all" or "some", chats...
_END_SPANS = r"""
redis.call('HINCRBY', B .. ':ds', 'ep', 1)
redis.call('HDEL', B .. ':ds', 'sp', 'lo', 'fs', 'at')
if ARGV[2] == 'all' then
  redis.call('INCR', B .. ':epoch')
  for _, chat in ipairs(redis.call('SMEMBERS', B .. ':known')) do
    redis.call('HDEL', chat_key(chat, 's'), 'sp', 'lo', 'fs', 'at')
  end
  return 0
end
for i = 3, #ARGV do
  redis.call('HINCRBY', chat_key(ARGV[i], 's'), 'ep', 1)
  redis.call('HDEL', chat_key(ARGV[i], 's'), 'sp', 'lo', 'fs', 'at')
  redis.call('SADD', B .. ':known', ARGV[i])
end
return 0
"""

# ARGV: account, chat, then field/value pairs moved forward only (numbers).
_FORWARD = r"""
register()
local state = chat_key(ARGV[2], 's')
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > num(redis.call('HGET', state, ARGV[i])) then
    redis.call('HSET', state, ARGV[i], ARGV[i + 1])
  end
end
redis.call('SADD', B .. ':known', ARGV[2])
return 0
"""

# ARGV: account, chat
_DROP_CHAT = r"""
local chat = ARGV[2]
local ep = num(redis.call('HGET', chat_key(chat, 's'), 'ep'))
redis.call('DEL', chat_key(chat, 'm'), chat_key(chat, 'live'), chat_key(chat, 'dead'),
  chat_key(chat, 's'))
redis.call('HSET', chat_key(chat, 's'), 'ep', string.format('%d', ep + 1))
redis.call('SADD', B .. ':known', chat)
redis.call('HINCRBY', B .. ':ds', 'ep', 1)
redis.call('HDEL', B .. ':ds', 'sp', 'lo', 'fs', 'at')
return 0
"""

# ARGV: account. Answers chat, live count, last read for every chat holding anything.
_CHATS = r"""
local out = {}
for _, chat in ipairs(redis.call('SMEMBERS', B .. ':known')) do
  local live = redis.call('ZCARD', chat_key(chat, 'live'))
  local s = redis.call('HMGET', chat_key(chat, 's'), 'sp', 'mi', 'mo', 'lr')
  if live > 0 or redis.call('EXISTS', chat_key(chat, 'dead')) == 1 or s[1] == '1'
      or num(s[2]) > 0 or num(s[3]) > 0 or num(s[4]) > 0 then
    table.insert(out, chat); table.insert(out, live); table.insert(out, s[4] or '0')
  end
end
return out
"""

# ARGV: account, pts, qts, date, seq, current_at, then channel/pts pairs.
_SET_CURSOR = r"""
register()
local cur = B .. ':cur'
local fields = {'pts', 'qts', 'date', 'seq', 'at'}
for i, field in ipairs(fields) do
  local old = redis.call('HGET', cur, field)
  if not old or tonumber(ARGV[i + 1]) > tonumber(old) then
    redis.call('HSET', cur, field, ARGV[i + 1])
  end
end
for i = 7, #ARGV, 2 do
  local old = redis.call('HGET', cur .. ':ch', ARGV[i])
  if not old or tonumber(ARGV[i + 1]) > tonumber(old) then
    redis.call('HSET', cur .. ':ch', ARGV[i], ARGV[i + 1])
  end
end
return 0
"""

# ARGV: account, token ("" for none), low, from_start, anchored_at, then 4 per dialog:
# chat, top_id, header, body.
_PUT_DIALOGS = r"""
register()
for i = 6, #ARGV, 4 do
  local old = redis.call('HGET', B .. ':dlg', ARGV[i])
  if not old or tonumber(ARGV[i + 1]) >= tonumber(string.match(old, '^(%d+)%.')) then
    redis.call('HSET', B .. ':dlg', ARGV[i], ARGV[i + 2] .. ARGV[i + 3])
  end
end
if ARGV[2] == '' then return 0 end
local ep = redis.call('GET', B .. ':epoch') or '0'
if ep .. '.' .. (redis.call('HGET', B .. ':ds', 'ep') or '0') ~= ARGV[2] then return 0 end
redis.call('HSET', B .. ':ds', 'sp', '1', 'lo', ARGV[3], 'fs', ARGV[4], 'at', ARGV[5])
return 1
"""

# ARGV: account
_DIALOGS = r"""
local ep = redis.call('GET', B .. ':epoch') or '0'
local s = redis.call('HMGET', B .. ':ds', 'ep', 'sp', 'lo', 'fs', 'at')
return {ep .. '.' .. (s[1] or '0'), s[2] or '0', s[3] or '0', s[4] or '0', s[5] or '0',
  redis.call('HGETALL', B .. ':dlg')}
"""

# ARGV: account
_PURGE = r"""
for _, chat in ipairs(redis.call('SMEMBERS', B .. ':known')) do
  redis.call('DEL', chat_key(chat, 'm'), chat_key(chat, 'live'), chat_key(chat, 'dead'),
    chat_key(chat, 's'))
end
redis.call('DEL', B .. ':known', B .. ':orph', B .. ':orph:pts', B .. ':orph:seq',
  B .. ':cur', B .. ':cur:ch', B .. ':dlg', B .. ':ds', B .. ':ent')
redis.call('INCR', B .. ':epoch')
redis.call('SREM', KEYS[2], ARGV[1])
return 0
"""

SCRIPTS = {
    name: _COMMON + body
    for name, body in {
        "put": _PUT,
        "delete": _DELETE,
        "history": _HISTORY,
        "read_history": _READ_HISTORY,
        "trim": _TRIM,
        "span": _SPAN,
        "set_span": _SET_SPAN,
        "end_spans": _END_SPANS,
        "forward": _FORWARD,
        "drop_chat": _DROP_CHAT,
        "chats": _CHATS,
        "set_cursor": _SET_CURSOR,
        "put_dialogs": _PUT_DIALOGS,
        "dialogs": _DIALOGS,
        "purge": _PURGE,
    }.items()
}
