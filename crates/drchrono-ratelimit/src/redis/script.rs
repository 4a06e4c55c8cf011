//! The limiter core as one Lua script, run atomically by Redis: every decision, pause and
//! status read is a single `EVALSHA` round trip.
//!
//! It mirrors `algorithm.rs` rule for rule, in integer microseconds since the Unix epoch
//! (Lua numbers are doubles: microseconds stay exact until the year 2255, nanoseconds would
//! not). Time is Redis's own `TIME` (allowed in scripts since Redis 5 with effect
//! replication, the default since Redis 5), so every host decides on one clock; the script
//! answers with *waits* relative to that clock, which the caller adds to its own `now`.
//!
//! Keys (one hash slot per application: `{application}` is a Redis Cluster hash tag):
//! - `<prefix>:{<app>}:meta`, a hash: `last_now` (time never runs backwards), `paused_until`
//!   (a server 429's cool-down, shared), `last_charge` (pacing);
//! - per sliding rule `<prefix>:{<app>}:r<index>:s:<max>:<window µs>`, a list of the last
//!   `max` charged instants, oldest first;
//! - per aligned rule `<prefix>:{<app>}:r<index>:a:<max>:<period µs>`, a hash: `period`,
//!   `count` and `next` (the count of the period after it: a request within the margin of a
//!   boundary counts in both periods it may fall in).
//!
//! Every key expires (`PEXPIRE`) once nothing in it can matter: a sliding log one window
//! (plus margin) after its newest entry, aligned counts at the end of the later of their two
//! periods, the meta hash after the longest of those or the end of the pause.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Script, ScriptInvocation};

use crate::algorithm::background_max;
use crate::{Priority, RateLimitConfig, RuleKind};

/// `ARGV`: op, caller's now in µs (empty: Redis `TIME`), margin µs, pacing, rule count, then
/// per rule kind (`s`/`a`), max, background max, span µs (sliding: window + margin;
/// aligned: period); then the op's arguments (`acquire`: priority `i`/`b`, backlog count,
/// the process's journal id (empty: no journal) and the charges it was told of; `assert`:
/// journal id, charges told of, hold µs, then the instants (µs) of the charges to
/// re-assert, oldest first; `pause`: wait µs). With a journal id, the last key is the
/// process's: the number of its charges this server holds.
///
/// Replies (µs are offsets from the clock reading the script used):
/// - `acquire`: `{1, 0, now, held, used_1, …}` admitted and charged, `{0, wait, now, held,
///   used_1, …}` refused (`now`: the script's clock, µs since the epoch; `held`: the
///   process's charges this server holds after the decision); `used_i` is what rule `i`
///   holds after the decision (the live entries of a rolling window, the count of the
///   aligned period: the `used` of `status`), for the fallback; `{2, held, now}` when this
///   server holds fewer of the process's charges than it was told of (a failover lost
///   them): nothing decided, the process re-asserts its journal first;
/// - `assert`: `{1}`: the charges merged into the rules, the count set, every decision held
///   for the hold (so that the other processes re-assert theirs first);
/// - `pause`: `{1, 0}`;
/// - `status`: `{now, used_1, resets_1 (-1: none), …, next, next_background, paused (-1)}`.
const SOURCE: &str = r"
local op = ARGV[1]
local margin = tonumber(ARGV[3])
local pacing = ARGV[4] == '1'
local n = tonumber(ARGV[5])

local function fmt(x) return string.format('%.0f', x) end
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local server_now
if ARGV[2] ~= '' then
  server_now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  server_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local meta = redis.call('HMGET', KEYS[1], 'last_now', 'paused_until', 'last_charge', 'hold_until')
local last_now = tonumber(meta[1]) or 0
local paused_until = tonumber(meta[2]) or 0
local last_charge = tonumber(meta[3])
-- After a failover lost charges: decisions wait until then (see `assert`).
local hold_until = tonumber(meta[4]) or 0
local now = math.max(server_now, last_now)

-- Drops the entries of a rolling log that left its window for good (time never runs
-- backwards), as the local core does: the log then holds exactly the live entries. The log
-- is sorted: a binary search finds the first live entry, one LTRIM drops the rest.
local function prune(r)
  if r.len == 0 or tonumber(redis.call('LINDEX', r.key, 0)) + r.span > now then return end
  local lo, hi = 1, r.len
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', r.key, mid)) + r.span > now then hi = mid else lo = mid + 1 end
  end
  redis.call('LTRIM', r.key, lo, -1)
  r.len = r.len - lo
end

local rules = {}
local longest = 1
for i = 1, n do
  local b = 5 + (i - 1) * 4
  local r = { kind = ARGV[b + 1], max = tonumber(ARGV[b + 2]), maxbg = tonumber(ARGV[b + 3]),
              span = tonumber(ARGV[b + 4]), key = KEYS[i + 1] }
  if r.kind == 's' then
    r.len = redis.call('LLEN', r.key)
    if op == 'acquire' then prune(r) end
    if r.len >= r.max then
      r.oldest = tonumber(redis.call('LINDEX', r.key, r.len - r.max))
    end
    if r.span > longest then longest = r.span end
  else
    local v = redis.call('HMGET', r.key, 'period', 'count', 'next')
    r.period = tonumber(v[1]) or 0
    r.count = tonumber(v[2]) or 0
    r.next = tonumber(v[3]) or 0
    if 2 * r.span + margin > longest then longest = 2 * r.span + margin end
  end
  rules[i] = r
end

-- Expiry in ms, rounded up. Redis expires keys on its own clock: on the caller's clock
-- (which may run apart from it: paused time), nothing expires before the longest window.
local caller_clock = ARGV[2] ~= ''
local function ms(us)
  if caller_clock and us < longest then us = longest end
  return math.floor(us / 1000) + 1
end

-- The aligned periods a request at t may fall in on a clock within the margin of ours.
local function periods_of(r, t)
  return fdiv(math.max(t - margin, 0), r.span), fdiv(t + margin, r.span)
end
local function period_end(r, k) return (k + 1) * r.span + margin end
-- The count of period k; the state holds r.period and r.period + 1.
local function aligned_count(r, k)
  if k == r.period then return r.count end
  if k == r.period + 1 then return r.next end
  if k > r.period then return 0 end
  return r.count
end
local function shift_to(r, k)
  if k == r.period + 1 then
    r.count = r.next
    r.next = 0
    r.period = k
  elseif k > r.period then
    r.count = 0
    r.next = 0
    r.period = k
  end
end

local function rule_earliest(r, t, bg)
  if r.kind == 's' then
    if r.oldest then return math.max(t, r.oldest + r.span) end
    return t
  end
  local k, k2 = periods_of(r, t)
  local max = r.max
  if bg then max = r.maxbg end
  local used = aligned_count(r, k)
  if used >= max then return period_end(r, k) end
  if aligned_count(r, k2) >= max then return period_end(r, k2) end
  if pacing and used > 0 and last_charge and k == r.period then
    local d = max - used + 1
    local gap = fdiv(math.max(period_end(r, k) - last_charge, 0) + d - 1, d)
    return math.max(t, last_charge + gap)
  end
  return t
end

local function earliest(now, bg)
  local t = math.max(now, last_now, paused_until)
  while true do
    local before = t
    for i = 1, n do t = rule_earliest(rules[i], t, bg) end
    if t == before then return t end
  end
end

local function save_aligned(r, now)
  redis.call('HSET', r.key, 'period', fmt(r.period), 'count', fmt(r.count), 'next', fmt(r.next))
  redis.call('PEXPIRE', r.key, ms(period_end(r, r.period + 1) - now))
end

local function charge(t, count)
  for i = 1, n do
    local r = rules[i]
    if r.kind == 's' then
      local c = math.min(count, r.max)
      local left = c
      while left > 0 do
        local entries = {}
        for j = 1, math.min(left, 1000) do entries[j] = fmt(t) end
        redis.call('RPUSH', r.key, unpack(entries))
        left = left - #entries
      end
      r.len = r.len + c
      if r.len > r.max then
        redis.call('LTRIM', r.key, -r.max, -1)
        r.len = r.max
      end
      if r.len >= r.max then r.oldest = tonumber(redis.call('LINDEX', r.key, 0)) end
      redis.call('PEXPIRE', r.key, ms(r.span))
    else
      local k, k2 = periods_of(r, t)
      shift_to(r, k)
      r.count = r.count + count
      if k2 > k then r.next = r.next + count end
      save_aligned(r, t)
    end
  end
  last_charge = t
end

local function save_meta(now)
  if last_charge then
    redis.call('HSET', KEYS[1], 'last_now', fmt(last_now), 'paused_until', fmt(paused_until),
               'last_charge', fmt(last_charge))
  else
    redis.call('HSET', KEYS[1], 'last_now', fmt(last_now), 'paused_until', fmt(paused_until))
  end
  redis.call('PEXPIRE', KEYS[1], ms(math.max(longest, paused_until - now)))
end

local rest = 6 + 4 * n

-- What each rule holds at `now`.
local function used_at(r)
  if r.kind == 's' then return r.len end
  local k, k2 = periods_of(r, now)
  return math.max(aligned_count(r, k), aligned_count(r, k2))
end
local function decision(admitted, wait)
  local out = {admitted, wait}
  for i = 1, n do out[#out + 1] = used_at(rules[i]) end
  return out
end

-- The process's count of charges held here, and its key's expiry.
local pkey = KEYS[n + 2]
local function held_count()
  if not pkey then return 0 end
  return tonumber(redis.call('GET', pkey)) or 0
end
local function set_held(count)
  if pkey then redis.call('SET', pkey, fmt(count), 'PX', ms(longest)) end
end

if op == 'acquire' then
  local bg = ARGV[rest] == 'b'
  local backlog = tonumber(ARGV[rest + 1]) or 0
  local told = tonumber(ARGV[rest + 3]) or 0
  local held = held_count()
  if held < told then
    -- This server lost charges of this process (a failover): re-assert them first.
    return {2, held, now}
  end
  last_now = now
  if backlog > 0 then charge(now, backlog) end
  local e = earliest(now, bg)
  if hold_until > now then
    -- Just after a failover: the other processes re-assert their charges first. Ask
    -- again soon (at most 50 ms), so that a waiting process comes back within the hold.
    e = math.max(e, now + math.min(hold_until - now, 50000))
  end
  if e > now then
    if backlog > 0 then
      held = math.max(held, told) + backlog
      set_held(held)
    end
    save_meta(now)
    local out = decision(0, e - server_now)
    table.insert(out, 3, now)
    table.insert(out, 4, held)
    return out
  end
  charge(now, 1)
  held = math.max(held, told) + backlog + 1
  set_held(held)
  save_meta(now)
  local out = decision(1, 0)
  table.insert(out, 3, now)
  table.insert(out, 4, held)
  return out
elseif op == 'assert' then
  local told = tonumber(ARGV[rest + 1]) or 0
  local hold = tonumber(ARGV[rest + 2]) or 0
  last_now = now
  local merged = false
  for j = rest + 3, #ARGV do
    local t = tonumber(ARGV[j])
    for i = 1, n do
      local r = rules[i]
      if r.kind == 's' then
        if t + r.span > now then
          merged = true
          -- Sorted insert: the first entry later than t, found by binary search.
          local lo, hi = 0, r.len
          while lo < hi do
            local mid = math.floor((lo + hi) / 2)
            if tonumber(redis.call('LINDEX', r.key, mid)) <= t then lo = mid + 1 else hi = mid end
          end
          if lo == r.len then
            redis.call('RPUSH', r.key, fmt(t))
          else
            redis.call('LINSERT', r.key, 'BEFORE', redis.call('LINDEX', r.key, lo), fmt(t))
          end
          r.len = r.len + 1
          if r.len > r.max then
            redis.call('LTRIM', r.key, -r.max, -1)
            r.len = r.max
          end
          redis.call('PEXPIRE', r.key, ms(r.span))
        end
      else
        local k, k2 = periods_of(r, t)
        if k >= r.period then
          shift_to(r, k)
          r.count = r.count + 1
          if k2 > k then r.next = r.next + 1 end
          merged = true
        elseif k2 == r.period then
          r.count = r.count + 1
          merged = true
        end
      end
    end
  end
  for i = 1, n do
    if rules[i].kind == 'a' then save_aligned(rules[i], now) end
  end
  set_held(math.max(held_count(), told))
  if merged and now + hold > hold_until then
    -- Charges still within a rule were lost: the other processes' too, likely. (A count
    -- that expired while the process was idle loses nothing that matters: no hold.)
    redis.call('HSET', KEYS[1], 'hold_until', fmt(now + hold))
  end
  save_meta(now)
  return {1}
elseif op == 'pause' then
  local untilt = server_now + tonumber(ARGV[rest])
  if untilt > paused_until then paused_until = untilt end
  for i = 1, n do
    local r = rules[i]
    if r.kind == 'a' then
      local raw = fdiv(now, r.span)
      if untilt >= (raw + 1) * r.span then
        if raw > r.period + 1 then shift_to(r, raw) end
        if raw == r.period and r.count < r.max then
          r.count = r.max
          save_aligned(r, now)
        elseif raw == r.period + 1 and r.next < r.max then
          r.next = r.max
          save_aligned(r, now)
        end
      end
    end
  end
  save_meta(now)
  return {1, 0}
elseif op == 'status' then
  local out = {now - server_now}
  for i = 1, n do
    local r = rules[i]
    local used = 0
    local resets = -1
    if r.kind == 's' then
      local log = redis.call('LRANGE', r.key, 0, -1)
      for j = 1, #log do
        local e = tonumber(log[j])
        if e + r.span > now then
          if resets < 0 then resets = e + r.span - server_now end
          used = used + 1
        end
      end
    else
      local k, k2 = periods_of(r, now)
      used = math.max(aligned_count(r, k), aligned_count(r, k2))
      resets = period_end(r, k) - server_now
    end
    out[#out + 1] = used
    out[#out + 1] = resets
  end
  out[#out + 1] = earliest(now, false) - server_now
  out[#out + 1] = earliest(now, true) - server_now
  if paused_until > now then out[#out + 1] = paused_until - server_now else out[#out + 1] = -1 end
  return out
end
return redis.error_reply('unknown op ' .. tostring(op))
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Which clock the script decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RedisClock {
    /// Redis's own `TIME`: every process and host decides on the one clock, and clock skew
    /// between hosts cannot break a rule. The default.
    #[default]
    Server,
    /// The caller's [`Clock`](crate::Clock) (the `now` the limiter passes): for tests under
    /// paused time and for deployments whose hosts' clocks are known to agree. Keys then
    /// live at least as long as the longest window (plus margin) on Redis's clock, since
    /// the two clocks may run apart.
    Caller,
}

/// The script's keys and the configuration part of its arguments, computed once.
#[derive(Debug, Clone)]
pub(crate) struct LimiterScript {
    keys: Vec<String>,
    /// margin, pacing, rule count, and per rule kind, max, background max, span.
    config_args: Vec<String>,
    clock: RedisClock,
}

/// An operation of the script.
pub(crate) enum Op<'a> {
    /// A decision; with a journal, its id and the charges this process was told of.
    Acquire {
        priority: Priority,
        backlog: u64,
        journal: Option<(&'a str, u64)>,
    },
    /// Re-asserts charges a failover lost: the journal's id, the charges told of, how long
    /// to hold every decision, and the instants (µs, oldest first).
    Assert {
        journal: &'a str,
        told: u64,
        hold: Duration,
        instants: Vec<u64>,
    },
    Pause {
        wait: Duration,
    },
    Status,
}

impl LimiterScript {
    pub(crate) fn new(config: &RateLimitConfig, prefix: &str, clock: RedisClock) -> Self {
        let app = config.application();
        let margin = micros_ceil(config.safety_margin());
        let percent = u64::from(config.background_reserve_percent());
        let mut keys = vec![format!("{prefix}:{{{app}}}:meta")];
        let mut config_args = vec![
            margin.to_string(),
            if config.smooth_pacing() { "1" } else { "0" }.to_owned(),
            config.rules().len().to_string(),
        ];
        for (index, rule) in config.rules().iter().enumerate() {
            let period = micros_ceil(rule.period());
            let (kind, span, background) = match rule.kind() {
                RuleKind::Sliding => ("s", period.saturating_add(margin), rule.max()),
                RuleKind::Aligned => ("a", period, background_max(rule.max(), percent)),
            };
            keys.push(format!(
                "{prefix}:{{{app}}}:r{index}:{kind}:{}:{period}",
                rule.max()
            ));
            config_args.extend([
                kind.to_owned(),
                rule.max().to_string(),
                background.to_string(),
                span.to_string(),
            ]);
        }
        Self {
            keys,
            config_args,
            clock,
        }
    }

    pub(crate) fn clock(&self) -> RedisClock {
        self.clock
    }

    /// The key of journal `id`: the count of its charges the server holds.
    fn journal_key(&self, id: &str) -> String {
        // The meta key with `:p:<id>` in place of `:meta`: the same hash slot.
        let meta = &self.keys[0];
        format!("{}:p:{id}", meta.trim_end_matches(":meta"))
    }

    /// The invocation of `op` at the caller's `now`.
    pub(crate) fn invocation(&self, op: &Op<'_>, now: SystemTime) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        match op {
            Op::Acquire {
                journal: Some((id, _)),
                ..
            }
            | Op::Assert { journal: id, .. } => {
                invocation.key(self.journal_key(id));
            }
            _ => {}
        }
        let name = match op {
            Op::Acquire { .. } => "acquire",
            Op::Assert { .. } => "assert",
            Op::Pause { .. } => "pause",
            Op::Status => "status",
        };
        invocation.arg(name);
        match self.clock {
            RedisClock::Server => invocation.arg(""),
            RedisClock::Caller => invocation.arg(micros_since_epoch(now)),
        };
        for arg in &self.config_args {
            invocation.arg(arg);
        }
        match op {
            Op::Acquire {
                priority,
                backlog,
                journal,
            } => {
                let priority = match priority {
                    Priority::Background => "b",
                    _ => "i",
                };
                invocation.arg(priority).arg(*backlog);
                match journal {
                    Some((id, told)) => invocation.arg(*id).arg(*told),
                    None => invocation.arg("").arg(0),
                };
            }
            Op::Assert {
                journal,
                told,
                hold,
                instants,
            } => {
                invocation.arg(*journal).arg(*told).arg(micros_ceil(*hold));
                for instant in instants {
                    invocation.arg(*instant);
                }
            }
            Op::Pause { wait } => {
                invocation.arg(micros_ceil(*wait));
            }
            Op::Status => {}
        }
        invocation
    }
}

/// `d` in whole microseconds, rounded up, saturating.
pub(crate) fn micros_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// `t` in whole microseconds since the Unix epoch, rounded down (0 before the epoch).
pub(crate) fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rule;

    #[test]
    fn keys_share_one_hash_slot_per_application_and_name_each_rule() {
        let config = RateLimitConfig::builder()
            .application("clinic-7")
            .build()
            .unwrap();
        let script = LimiterScript::new(&config, "drchrono:ratelimit", RedisClock::Server);
        assert_eq!(
            script.keys,
            [
                "drchrono:ratelimit:{clinic-7}:meta",
                "drchrono:ratelimit:{clinic-7}:r0:s:9:1000000",
                "drchrono:ratelimit:{clinic-7}:r1:s:290:600000000",
                "drchrono:ratelimit:{clinic-7}:r2:a:500:3600000000",
            ]
        );
        // Margin 100 ms: sliding spans include it, the aligned period does not; the hour
        // keeps 10 % (50) from background work.
        assert_eq!(
            script.config_args,
            [
                "100000",
                "0",
                "3",
                "s",
                "9",
                "9",
                "1100000",
                "s",
                "290",
                "290",
                "600100000",
                "a",
                "500",
                "450",
                "3600000000"
            ]
        );
    }

    #[test]
    fn microseconds_round_conservatively() {
        assert_eq!(micros_ceil(Duration::from_nanos(1_001)), 2);
        assert_eq!(micros_ceil(Duration::from_millis(3)), 3_000);
        assert_eq!(micros_ceil(Duration::MAX), u64::MAX);
        let t = UNIX_EPOCH + Duration::new(1_767_609_420, 1_999);
        assert_eq!(micros_since_epoch(t), 1_767_609_420_000_001);
        assert_eq!(micros_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), 0);
        let custom = RateLimitConfig::builder()
            .rules([Rule::aligned(10, Duration::from_secs(60)).unwrap()])
            .background_reserve_percent(100)
            .build()
            .unwrap();
        let script = LimiterScript::new(&custom, "p", RedisClock::Caller);
        assert_eq!(script.config_args[3..], ["a", "10", "1", "60000000"]);
        assert_eq!(script.clock(), RedisClock::Caller);
    }
}
