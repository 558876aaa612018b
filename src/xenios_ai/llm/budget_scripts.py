"""The Redis Lua scripts of the LLM budgets (`xenios_ai.llm.budgets` says what they guarantee).

An owner's month is one hash (``<ns>:budget:<YYYY-MM>:<owner>``) of nano-USD integers: ``spent``, ``held``,
``held_at`` (ms), per task ``spent:<task>`` / ``held:<task>``, and ``seeded`` once the spend was counted
from PostgreSQL's usage rows. `ADMIT` holds a call's estimate (or a lease) when it fits; `SETTLE` releases
holds and charges costs, a batch per owner's month; `SEED` raises the spend to what the usage rows say
(a month Redis lost, or one not seen before).
"""

from __future__ import annotations

__all__ = ["ADMIT", "NANO", "SEED", "SETTLE"]

NANO = 1_000_000_000
"""The scripts count nano-USD integers (Redis HINCRBY is exact; floats would drift)."""

ADMIT = """
-- KEYS[1]: the owner's month. ARGV: now ms, stale ms, estimate, user cap, task, task cap, expire-at s,
-- lease wanted, '1' to refuse a month not yet seeded. Returns {admitted 1/0 (-1: not seeded), spent,
-- which cap refused ('user'/'task'/''), used up 1/0, held}.
local k = KEYS[1]
if ARGV[9] == '1' and redis.call('HEXISTS', k, 'seeded') == 0 then return {-1, 0, '', 0, 0} end
local now, stale, est = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ucap, task, tcap, want = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[8])
local v = redis.call('HMGET', k, 'spent', 'held', 'held_at', 'spent:' .. task, 'held:' .. task)
local spent, held, at = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
local tspent, theld = tonumber(v[4]) or 0, tonumber(v[5]) or 0
if held > 0 and now - at > stale then
  for _, f in ipairs(redis.call('HKEYS', k)) do
    if string.sub(f, 1, 4) == 'held' and f ~= 'held_at' then redis.call('HSET', k, f, 0) end
  end
  held, theld = 0, 0
end
local grant = est
if ucap > 0 then
  if spent >= ucap then return {0, spent, 'user', 1, 0} end
  local avail = ucap - spent - held
  if held > 0 and avail < est then return {0, spent, 'user', 0, 0} end
  if tcap == 0 and want > est then
    grant = math.min(want, math.floor(avail / 4))
    if grant < est then grant = est end
  end
end
if tcap > 0 then
  if tspent >= tcap then return {0, tspent, 'task', 1, 0} end
  if theld > 0 and tspent + theld + est > tcap then return {0, tspent, 'task', 0, 0} end
  redis.call('HINCRBY', k, 'held:' .. task, est)
end
redis.call('HINCRBY', k, 'held', grant)
redis.call('HSET', k, 'held_at', now)
redis.call('EXPIREAT', k, tonumber(ARGV[7]))
return {1, spent, '', 0, grant}
"""

SETTLE = """
-- KEYS[1]: the owner's month. ARGV: held to release, now ms, expire-at s, then per task: task, cost charged,
-- task hold to release.
local k = KEYS[1]
local release = tonumber(ARGV[1])
if release > 0 then
  if redis.call('HINCRBY', k, 'held', -release) < 0 then redis.call('HSET', k, 'held', 0) end
  redis.call('HSET', k, 'held_at', tonumber(ARGV[2]))
end
local total = 0
for i = 4, #ARGV, 3 do
  local task, cost, trelease = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if cost ~= 0 then redis.call('HINCRBY', k, 'spent:' .. task, cost) end
  total = total + cost
  if trelease > 0 and redis.call('HINCRBY', k, 'held:' .. task, -trelease) < 0 then
    redis.call('HSET', k, 'held:' .. task, 0)
  end
end
if total ~= 0 then redis.call('HINCRBY', k, 'spent', total) end
redis.call('EXPIREAT', k, tonumber(ARGV[3]))
return 1
"""

SEED = """
-- KEYS[1]: the owner's month. ARGV: expire-at s, then per task: task, spent according to the usage rows.
-- Each count becomes the larger of Redis' and the rows' (charges written after a loss are in both).
local k = KEYS[1]
if redis.call('HEXISTS', k, 'seeded') == 1 then return 0 end
local total = 0
for i = 2, #ARGV, 2 do
  local f, v = 'spent:' .. ARGV[i], tonumber(ARGV[i + 1])
  total = total + v
  if v > (tonumber(redis.call('HGET', k, f)) or 0) then redis.call('HSET', k, f, v) end
end
if total > (tonumber(redis.call('HGET', k, 'spent')) or 0) then redis.call('HSET', k, 'spent', total) end
redis.call('HSET', k, 'seeded', 1)
redis.call('EXPIREAT', k, tonumber(ARGV[1]))
return 1
"""
