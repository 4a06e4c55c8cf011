//! [`LocalLimiter`]: the in-memory backend, one application's budget behind one lock.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::SystemTime;

use crate::algorithm::{Policy, Refusal, State};
use crate::backend::{Backend, BackendFuture};
use crate::credits::{Charged, Credits, Take};
use crate::fair::Held;
use crate::time::{Reading, from_nanos, to_nanos};
use crate::{BackendError, NotUntil, Now, Priority, RateLimitConfig, Status};

/// One application's budget in this process: the limiter core behind a `std::sync::Mutex`.
///
/// Every method takes `now` as an argument and never waits: [`LocalLimiter::try_acquire`]
/// checks all rules and charges all of them atomically, or returns the exact earliest
/// instant that breaks no rule. A decision under the lock costs O(1) work per rule (a
/// ring of the last `max` instants per sliding rule, a few counters per aligned rule).
/// Far from every limit, most admissions take no lock: an admission under the lock grants
/// as many credits as every rule still admits at any later instant (spread over four
/// shards of at most 128, each on its own cache line; none with pacing, during a pause or
/// after a step back of the wall clock), and a request takes one with a compare-and-swap
/// and records its instant. Every operation under the lock first charges those instants,
/// in order (and revokes the credits left before it decides), so that every decision is the
/// one it would be had each credited request been charged under the lock at its instant;
/// the taker that finds its shard half spent charges them too, when the lock is free, and
/// tops the credits up, so that the others never wait for it.
/// A refusal is cheaper still: the earliest instant of the last refusal and the rule that set
/// it are kept in atomics (written only under the lock, cleared by every charge and pause,
/// so they are always exact for the current state), and a request before that instant is
/// refused without taking the lock, naming the same rule ([`NotUntil::rule`]).
/// [`RateLimiter`](crate::RateLimiter) adds the waiting, the clock and first-come
/// first-served order on top.
///
/// # Two clocks
///
/// `now` is a [`Now`]: a reading of the wall clock and of a monotonic clock. Sliding rules,
/// pauses and the instants the limiter remembers are measured on the monotonic clock, so a
/// step of the wall clock (NTP, a resume after suspend) moves none of them; aligned rules
/// place each request in the period of the wall clock as it reads at that decision. A wall
/// clock that steps back into an earlier period is conservative: a request then counts
/// against what that period held plus everything charged since (the server's clock may be
/// the one that was behind, or may have stepped back too), and a period the limiter no
/// longer knows (it keeps the latest periods and those before the latest move) counts as
/// full, so nothing goes until the wall clock is back in one it knows: at most the step's
/// length. So no period sees more than its maximum on a server whose clock steps with ours,
/// nor, after a step back, on one whose clock ours was ahead of. Every instant returned is
/// a wall instant, at the offset between the clocks that `now` shows. A [`SystemTime`] is
/// a reading of two clocks that agree.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use drchrono_ratelimit::{LocalLimiter, RateLimitConfig};
///
/// let config = RateLimitConfig::builder().safety_margin(Duration::ZERO).build()?;
/// let limiter = LocalLimiter::new(&config);
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420); // 2026-01-05T10:37:00Z
/// for _ in 0..9 {
///     assert!(limiter.try_acquire(now).is_ok());
/// }
/// let refused = limiter.try_acquire(now).unwrap_err();
/// assert_eq!(refused.earliest(), now + Duration::from_secs(1));
/// # Ok::<(), drchrono_ratelimit::ConfigError>(())
/// ```
pub struct LocalLimiter {
    policy: Policy,
    state: Mutex<Locked>,
    /// Admissions granted under the lock, taken without it.
    credits: Credits,
    /// Per priority: the earliest monotonic instant computed by the last refusal since the
    /// last charge or pause (0 = none). Nothing is admissible before it while the clocks
    /// keep the offset it was computed at.
    refused_until: [AtomicU64; 2],
    /// Per priority: that refusal's offset between the clocks ([`Reading::offset`]). A step
    /// of the wall clock changes the offset: the request is then decided under the lock.
    refused_offset: [AtomicU64; 2],
    /// Per priority: the rule that set that instant ([`Policy::binding`]), as its index plus
    /// one (0 = a server's pause).
    refused_rule: [AtomicUsize; 2],
    /// Per priority: odd while a refusal is being cached (under the lock), bumped again once
    /// it is. A request refused from the cache reads the three fields above between two
    /// equal even readings of it (a seqlock), so the instant, the offset and the rule it
    /// answers with are one refusal's, never a mix of two racing ones.
    refused_seq: [AtomicUsize; 2],
}

/// What the lock guards: the core's state, the lock's side of the credits, and room to
/// charge the credits taken.
struct Locked {
    state: State,
    charged: Charged,
    credited: Vec<u64>,
    /// The clocks' offset at the last admission under the lock: credits are granted only
    /// when two admissions in a row saw the same (clocks read apart, whose offset moves at
    /// every reading, would have every credit refused and granted again for nothing).
    admitted_at_offset: Option<u64>,
}

fn slot(priority: Priority) -> usize {
    match priority {
        Priority::Interactive => 0,
        Priority::Background => 1,
    }
}

impl LocalLimiter {
    /// A fresh budget for `config`'s rules.
    pub fn new(config: &RateLimitConfig) -> Self {
        let policy = Policy::new(config);
        // More credits than the tightest rule's maximum are never granted.
        let tightest = config.rules().iter().map(|rule| rule.max()).min();
        let credits = Credits::new(tightest.unwrap_or(u32::MAX));
        let state = Mutex::new(Locked {
            state: policy.new_state(),
            charged: Charged::default(),
            credited: Vec::new(),
            admitted_at_offset: None,
        });
        Self {
            policy,
            state,
            credits,
            refused_until: [AtomicU64::new(0), AtomicU64::new(0)],
            refused_offset: [AtomicU64::new(0), AtomicU64::new(0)],
            refused_rule: [AtomicUsize::new(0), AtomicUsize::new(0)],
            refused_seq: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    /// The state, locked, with the credits taken since the last lock charged (and those
    /// left revoked): what every operation under the lock decides on.
    fn state(&self) -> StateGuard<'_> {
        // The state is consistent after every statement that mutates it: a panic elsewhere
        // while the lock was held leaves nothing half-done.
        let mut locked = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.charge_credited(&mut locked, true);
        StateGuard(locked)
    }

    /// Charges the credits taken since the last time, in order; first revokes those left
    /// with `revoke`.
    fn charge_credited(&self, locked: &mut Locked, revoke: bool) {
        let Locked {
            state,
            charged,
            credited,
            ..
        } = locked;
        credited.clear();
        let offset = self.credits.collect(charged, revoke, credited);
        for &mono in &*credited {
            let wall = mono.wrapping_add(offset);
            self.policy.charge_credited(state, Reading { mono, wall });
        }
    }

    /// A taker found the credits low: if the lock is free, charges those taken and tops
    /// the grant up to the headroom at `now`, so that the others keep taking credits.
    #[cold]
    #[inline(never)]
    fn extend_credits(&self, now: Reading) {
        let mut locked = match self.state.try_lock() {
            Ok(locked) => locked,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Someone decides under the lock: they charge the credits.
            Err(TryLockError::WouldBlock) => return,
        };
        self.charge_credited(&mut locked, false);
        let now = now.not_before(locked.state.last_now());
        let headroom = self.policy.headroom(&locked.state, now);
        self.credits.extend(&locked.charged, headroom, now);
    }

    /// [`try_acquire_with`](Self::try_acquire_with) for interactive work.
    ///
    /// # Errors
    /// [`NotUntil`] with the earliest instant at which the request breaks no rule.
    #[inline]
    pub fn try_acquire(&self, now: impl Into<Now>) -> Result<(), NotUntil> {
        self.try_acquire_with(now, Priority::Interactive)
    }

    /// Admits a request at `now` and charges every rule, or refuses it and charges nothing.
    ///
    /// A monotonic reading earlier than one already seen is taken as that later one (both
    /// clocks moved forward together): time never runs backwards inside the limiter.
    ///
    /// # Errors
    /// [`NotUntil`] with the earliest (wall) instant at which the request breaks no rule.
    #[inline]
    pub fn try_acquire_with(
        &self,
        now: impl Into<Now>,
        priority: Priority,
    ) -> Result<(), NotUntil> {
        self.try_acquire_reading(now.into().reading(), priority)
            .map_err(|refusal| refusal.not_until(&self.policy))
    }

    /// [`try_acquire_with`](Self::try_acquire_with) on a reading in nanoseconds; the refusal
    /// is the earliest admissible wall instant, in nanoseconds since the Unix epoch, and the
    /// index of the rule that set it. Which rule is worked out on refusal only.
    #[inline]
    pub(crate) fn try_acquire_reading(
        &self,
        now: Reading,
        priority: Priority,
    ) -> Result<(), Refusal> {
        let slot = slot(priority);
        // One load when nothing is cached (0), as after every charge.
        if now.mono < self.refused_until[slot].load(Ordering::Relaxed)
            && let Some(refusal) = self.cached_refusal(slot, now)
        {
            return Err(refusal);
        }
        match self.credits.take(now) {
            Take::Taken => Ok(()),
            Take::Low => {
                self.extend_credits(now);
                Ok(())
            }
            Take::Empty => self.decide_locked(now, priority),
        }
    }

    /// [`try_acquire_reading`](Self::try_acquire_reading) past the cached refusals: out of
    /// line, so that a cached refusal is a few loads in the caller.
    /// An admission grants the credits every rule leaves.
    #[inline(never)]
    fn decide_locked(&self, now: Reading, priority: Priority) -> Result<(), Refusal> {
        let mut state = self.state();
        let decided = self.decide(&mut state, now, priority);
        if decided.is_ok() {
            let now = now.not_before(state.last_now());
            let headroom = self.policy.headroom(&state, now);
            let locked = &mut *state.0;
            if locked.admitted_at_offset.replace(now.offset()) == Some(now.offset()) {
                self.credits.grant(&mut locked.charged, headroom, now);
            }
        }
        decided.map_err(|(_, refusal)| refusal)
    }

    /// Admits and charges, or refuses and caches the refusal, with the state locked; a
    /// refusal comes with its earliest monotonic instant.
    #[inline]
    fn decide(
        &self,
        state: &mut State,
        now: Reading,
        priority: Priority,
    ) -> Result<(), (u64, Refusal)> {
        match self.policy.try_acquire(state, now, priority) {
            Ok(()) => {
                self.clear_refusals();
                Ok(())
            }
            Err(earliest) => {
                let rule = self.policy.binding(state, now, priority);
                self.cache_refusal(slot(priority), now, earliest, rule);
                let refusal = Refusal {
                    earliest: now.wall_at(earliest),
                    rule,
                };
                Err((earliest, refusal))
            }
        }
    }

    /// [`try_acquire_reading`](Self::try_acquire_reading) for a tenant's request that must
    /// leave other tenants' protected shares: under the same lock, `keep` is asked (with the
    /// status at `now`, computed when it needs it) whether the budget leaves enough, and the
    /// request is charged only if it does and every rule admits it. A refusal for the shares
    /// is not cached: it holds only this tenant. A background request refused while an
    /// interactive one would be admitted is [`Held::Reserved`] until its earliest instant:
    /// others may go meanwhile.
    pub(crate) fn try_acquire_keeping(
        &self,
        now: Reading,
        priority: Priority,
        keep: impl FnOnce(&dyn Fn() -> Status) -> Result<(), u64>,
    ) -> Result<(), Held> {
        let mut state = self.state();
        let status = || self.policy.status(&state, now);
        keep(&status).map_err(Held::Reserved)?;
        self.decide(&mut state, now, priority)
            .map_err(|(earliest, refusal)| {
                if priority == Priority::Background
                    && self.policy.earliest(&state, now, Priority::Interactive)
                        <= now.not_before(state.last_now()).mono
                {
                    // Only the background reserve holds it: interactive work may go now.
                    Held::Reserved(earliest)
                } else {
                    Held::Refused(refusal.not_until(&self.policy))
                }
            })
    }

    /// The cached refusal of `slot`, if it still refuses a request at `now`: read as one
    /// (see `refused_seq`), or `None` (decide under the lock) while one is being written.
    #[inline]
    fn cached_refusal(&self, slot: usize, now: Reading) -> Option<Refusal> {
        let seq = self.refused_seq[slot].load(Ordering::Acquire);
        if seq % 2 == 1 {
            return None;
        }
        let until = self.refused_until[slot].load(Ordering::Relaxed);
        let offset = self.refused_offset[slot].load(Ordering::Relaxed);
        let rule = self.refused_rule[slot].load(Ordering::Relaxed);
        // Orders the loads above before the second reading of the sequence.
        fence(Ordering::Acquire);
        if self.refused_seq[slot].load(Ordering::Relaxed) != seq
            || now.mono >= until
            || offset != now.offset()
        {
            return None;
        }
        Some(Refusal {
            earliest: now.wall_at(until),
            rule: rule.checked_sub(1),
        })
    }

    /// Caches a refusal computed under the lock (the only writer).
    fn cache_refusal(&self, slot: usize, now: Reading, earliest: u64, rule: Option<usize>) {
        let seq = self.refused_seq[slot].load(Ordering::Relaxed);
        self.refused_seq[slot].store(seq.wrapping_add(1), Ordering::Relaxed);
        // The odd number is seen by any reader that sees a store below.
        fence(Ordering::Release);
        self.refused_offset[slot].store(now.offset(), Ordering::Relaxed);
        self.refused_rule[slot].store(rule.map_or(0, |i| i + 1), Ordering::Relaxed);
        self.refused_until[slot].store(earliest, Ordering::Relaxed);
        self.refused_seq[slot].store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Forgets the cached refusals; called with the state locked, after it changed. A slot
    /// already clear is not written: the admitted request's path writes nothing shared. The
    /// sequence is not bumped: a request that read the instant before it was cleared is
    /// refused as of before the change, with that refusal's rule and offset (only a new
    /// refusal writes them, and it bumps the sequence).
    fn clear_refusals(&self) {
        for refused_until in &self.refused_until {
            if refused_until.load(Ordering::Relaxed) != 0 {
                refused_until.store(0, Ordering::Release);
            }
        }
    }

    /// The earliest (wall) instant at or after `now` at which a request of `priority`
    /// breaks no rule; charges nothing.
    pub fn earliest(&self, now: impl Into<Now>, priority: Priority) -> SystemTime {
        let now = now.into().reading();
        from_nanos(now.wall_at(self.policy.earliest(&self.state(), now, priority)))
    }

    /// Holds every request until `until` (a server 429's advertised instant, on the wall
    /// clock of `now`: the pause lasts from `now` for the time between the two, whatever the
    /// wall clock does next). When `until` reaches the next boundary of an aligned rule,
    /// that period is marked spent, so it reopens at the boundary plus the safety margin.
    pub fn pause_until(&self, now: impl Into<Now>, until: SystemTime) {
        let now = now.into().reading();
        let mut state = self.state();
        self.policy.pause(&mut state, now, to_nanos(until));
        // A refusal computed before the pause may name an instant the pause now forbids.
        self.clear_refusals();
    }

    /// Remaining budget per rule, the next reset and the earliest instants, at `now`.
    pub fn status(&self, now: impl Into<Now>) -> Status {
        self.policy.status(&self.state(), now.into().reading())
    }
}

/// [`LocalLimiter::state`]'s guard: the core's state.
struct StateGuard<'a>(MutexGuard<'a, Locked>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0.state
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0.state
    }
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Never fails. Through this trait `now` is one wall-clock reading, taken as a reading of
/// two clocks that agree; [`RateLimiter`](crate::RateLimiter) gives a `LocalLimiter` both
/// readings ([`Now`]), so that its sliding windows ignore steps of the wall clock.
impl Backend for LocalLimiter {
    fn try_acquire(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> BackendFuture<'_, Result<Result<(), NotUntil>, BackendError>> {
        Box::pin(std::future::ready(Ok(self.try_acquire_with(now, priority))))
    }

    /// Always decides: the state is in memory.
    fn try_acquire_now(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> Option<Result<Result<(), NotUntil>, BackendError>> {
        Some(Ok(self.try_acquire_with(now, priority)))
    }

    fn pause_until(
        &self,
        now: SystemTime,
        until: SystemTime,
    ) -> BackendFuture<'_, Result<(), BackendError>> {
        LocalLimiter::pause_until(self, now, until);
        Box::pin(std::future::ready(Ok(())))
    }

    fn status(&self, now: SystemTime) -> BackendFuture<'_, Result<Status, BackendError>> {
        Box::pin(std::future::ready(Ok(LocalLimiter::status(self, now))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_pause_replaces_a_cached_refusal() {
        let config = RateLimitConfig::builder()
            .max_per_second(1)
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        let limiter = LocalLimiter::new(&config);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
        limiter.try_acquire(now).unwrap();
        let refused = limiter.try_acquire(now).unwrap_err();
        assert_eq!(refused.earliest(), now + Duration::from_secs(1));
        limiter.pause_until(now, now + Duration::from_secs(7));
        let refused = limiter.try_acquire(now).unwrap_err();
        assert_eq!(refused.earliest(), now + Duration::from_secs(7));
    }

    /// Refused twice at `now`: under the lock, then (as the cache shows) from the cache.
    fn refused_twice(limiter: &LocalLimiter, now: SystemTime, p: Priority) -> [NotUntil; 2] {
        let locked = limiter.try_acquire_with(now, p).unwrap_err();
        let reading = Now::from(now).reading();
        assert!(limiter.cached_refusal(slot(p), reading).is_some());
        let cached = limiter.try_acquire_with(now, p).unwrap_err();
        assert_eq!(locked.earliest(), cached.earliest());
        [locked, cached]
    }

    #[test]
    fn a_cached_refusal_names_the_rule_the_lock_named() {
        let config = RateLimitConfig::builder()
            .max_per_second(1)
            .max_per_window(2)
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        let rules = config.rules();
        let limiter = LocalLimiter::new(&config);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
        let p = Priority::Interactive;
        limiter.try_acquire(now).unwrap();
        for refused in refused_twice(&limiter, now, p) {
            assert_eq!(refused.rule(), Some(rules[0]));
        }
        // Background work has its own cached refusal.
        for refused in refused_twice(&limiter, now, Priority::Background) {
            assert_eq!(refused.rule(), Some(rules[0]));
        }
        // A second later the window is full: the charge cleared the cache.
        let later = now + Duration::from_secs(1);
        limiter.try_acquire(later).unwrap();
        for refused in refused_twice(&limiter, later, p) {
            assert_eq!(refused.rule(), Some(rules[1]));
            assert_eq!(refused.earliest(), now + Duration::from_secs(600));
        }
        // A pause past the window: it names no rule, cached or not.
        limiter.pause_until(later, now + Duration::from_secs(700));
        for refused in refused_twice(&limiter, later, p) {
            assert_eq!(refused.rule(), None);
            assert_eq!(refused.earliest(), now + Duration::from_secs(700));
        }
        // Refusals compare by their instants alone.
        let paused = limiter.try_acquire(later).unwrap_err();
        assert_eq!(paused, NotUntil::new(paused.earliest(), Some(rules[2])));
    }

    /// Many threads at once, most of them admitted by credits: exactly what the rules
    /// allow, no more and no fewer, and the state under the lock knows every one.
    #[test]
    fn credits_taken_by_many_threads_admit_exactly_the_budget() {
        use crate::Rule;
        use std::sync::atomic::AtomicU64;

        let config = RateLimitConfig::builder()
            .rules([
                Rule::sliding(1_000, Duration::from_secs(1)).unwrap(),
                Rule::sliding(5_000, Duration::from_secs(600)).unwrap(),
                Rule::aligned(8_000, Duration::from_secs(3_600)).unwrap(),
            ])
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        let limiter = LocalLimiter::new(&config);
        // 2026-01-05T10:00:00Z: a fresh hour.
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_607_200);
        // A shared clock each attempt moves a microsecond: 40,000 attempts stay in one
        // rolling second.
        let micros = AtomicU64::new(0);
        let burst = |from: Duration| {
            micros.store(0, Ordering::Relaxed);
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            (0..5_000)
                                .filter(|_| {
                                    let t = micros.fetch_add(1, Ordering::Relaxed);
                                    let now = start + from + Duration::from_micros(t);
                                    limiter.try_acquire(now).is_ok()
                                })
                                .count()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .sum::<usize>()
            })
        };
        assert_eq!(burst(Duration::ZERO), 1_000);
        let status = limiter.status(start + Duration::from_millis(100));
        let remaining: Vec<_> = status.rules.iter().map(|r| r.remaining).collect();
        assert_eq!(remaining, [0, 4_000, 7_000]);
        // The next rolling second: another thousand exactly.
        assert_eq!(burst(Duration::from_secs(2)), 1_000);
        let status = limiter.status(start + Duration::from_millis(2_100));
        let remaining: Vec<_> = status.rules.iter().map(|r| r.remaining).collect();
        assert_eq!(remaining, [0, 3_000, 6_000]);
    }

    /// Credits are granted only once two admissions in a row saw the clocks at one offset:
    /// clocks read apart (whose offset moves at each reading) decide under the lock alone.
    #[test]
    fn credits_wait_for_a_steady_offset_between_the_clocks() {
        let config = RateLimitConfig::builder()
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        let at = |mono: u64, wall: u64| Reading { mono, wall };
        let base = 1_767_609_420_000_000_000;
        let limiter = LocalLimiter::new(&config);
        let p = Priority::Interactive;
        // Each reading's offset differs from the last one's by a few nanoseconds.
        for i in 0..3 {
            let now = at(base + i, base + 2 * i);
            limiter.try_acquire_reading(now, p).unwrap();
            assert_eq!(limiter.credits.take(now), Take::Empty, "reading {i}");
        }
        // The same offset twice: credits.
        let steady = LocalLimiter::new(&config);
        steady.try_acquire_reading(at(base, base), p).unwrap();
        assert_eq!(steady.credits.take(at(base, base)), Take::Empty);
        steady
            .try_acquire_reading(at(base + 1, base + 1), p)
            .unwrap();
        assert_ne!(steady.credits.take(at(base + 2, base + 2)), Take::Empty);
    }
}
