//! [`Clock`] and [`Now`]: the wall clock the aligned rules follow, the monotonic clock the
//! sliding windows are measured on, and the bridge to tokio's timer.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::time::{Reading, duration_nanos, floor_ms_time, from_nanos, to_nanos};

/// Supplies the wall-clock `now` the limiter's aligned rules follow, and maps wall instants
/// to tokio instants for sleeping.
///
/// Two clocks take part in every decision. The **wall clock**, [`Clock::now`], says which
/// aligned period (the UTC hour) a request falls in, and dates every instant the limiter
/// reports; it is read at every decision, so a step of the system clock (NTP, a resume
/// after suspend) is seen at the next one (with the default [`TokioClock`], which reads the
/// system clock's steps at most once a millisecond, within a millisecond). The **monotonic
/// clock** is tokio's ([`tokio::time::Instant`]): sliding windows, pauses and waits are
/// measured on it, so no step of the wall clock moves them, and the limiter sleeps on it
/// (paused time, `tokio::time::pause`, drives both).
///
/// The default conversions assume the two clocks advance together from this very moment.
/// A sleep until an aligned boundary may therefore end early or late when the wall clock
/// steps meanwhile: the limiter then reads both clocks again and decides (and sleeps) anew.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The tokio instant at which this clock will read `t` (now, if `t` has passed).
    fn instant_at(&self, t: SystemTime) -> Instant {
        let (wall, instant) = (self.now(), Instant::now());
        t.duration_since(wall).map_or(instant, |d| {
            instant.checked_add(d).unwrap_or_else(far_future)
        })
    }

    /// The wall time this clock reads at tokio instant `i`.
    fn wall_at(&self, i: Instant) -> SystemTime {
        let (wall, instant) = (self.now(), Instant::now());
        if i >= instant {
            wall.checked_add(i - instant).unwrap_or(wall)
        } else {
            wall.checked_sub(instant - i)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

/// One reading of the two clocks a decision is made on: the wall clock and a monotonic one.
///
/// The wall reading places a request in the aligned periods and dates every instant the
/// limiter returns. The monotonic reading is the time elapsed on a clock that no step of
/// the system clock moves, since an origin of the caller's choosing (the same for every
/// reading given to one limiter): sliding windows, pauses and waits are measured on it.
/// [`RateLimiter`](crate::RateLimiter) reads the wall clock from its [`Clock`] and the
/// monotonic one from tokio's clock. A [`SystemTime`] converts into a reading of two clocks
/// that agree (the monotonic one counting from the Unix epoch), which is how
/// [`LocalLimiter`](crate::LocalLimiter)'s methods take plain instants.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use drchrono_ratelimit::{LocalLimiter, Now, RateLimitConfig};
///
/// let config = RateLimitConfig::builder()
///     .max_per_hour(1)
///     .safety_margin(Duration::ZERO)
///     .build()?;
/// let limiter = LocalLimiter::new(&config);
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_610_740); // 10:59:00 UTC
/// assert!(limiter.try_acquire(start).is_ok());
/// // The hour is spent until 11:00.
/// let refused = limiter.try_acquire(start + Duration::from_secs(1)).unwrap_err();
/// assert_eq!(refused.earliest(), start + Duration::from_secs(60));
/// // One more second on the monotonic clock, but NTP stepped the wall clock 60 s ahead:
/// // 11:00:02, a new hour.
/// let since_epoch = Duration::from_secs(1_767_610_742);
/// let stepped = Now::new(start + Duration::from_secs(62), since_epoch);
/// assert!(limiter.try_acquire(stepped).is_ok());
/// # Ok::<(), drchrono_ratelimit::ConfigError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Now {
    wall: SystemTime,
    monotonic: Duration,
    /// Both in nanoseconds, converted once when the reading is made: a decision on a `Now`
    /// converts nothing (a `SystemTime` costs a non-inlined subtraction to convert).
    reading: Reading,
}

impl fmt::Debug for Now {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Now")
            .field("wall", &self.wall)
            .field("monotonic", &self.monotonic)
            .finish()
    }
}

impl Now {
    /// A reading: the wall clock reads `wall`, and `monotonic` has elapsed on the monotonic
    /// clock since its origin.
    pub fn new(wall: SystemTime, monotonic: Duration) -> Self {
        Self {
            wall,
            monotonic,
            reading: Reading {
                mono: duration_nanos(monotonic),
                wall: to_nanos(wall),
            },
        }
    }

    /// The wall clock's reading.
    pub fn wall(&self) -> SystemTime {
        self.wall
    }

    /// The monotonic clock's reading: the time elapsed since its origin.
    pub fn monotonic(&self) -> Duration {
        self.monotonic
    }

    /// Both readings in nanoseconds (the wall clock's since the Unix epoch, 0 before it).
    #[inline]
    pub(crate) fn reading(&self) -> Reading {
        self.reading
    }

    pub(crate) fn from_reading(reading: Reading) -> Self {
        Self {
            wall: from_nanos(reading.wall),
            monotonic: Duration::from_nanos(reading.mono),
            reading,
        }
    }
}

/// Two clocks that agree: both read `t` (the monotonic one as the time since the Unix
/// epoch, zero before it).
impl From<SystemTime> for Now {
    /// One conversion, for both clocks.
    fn from(t: SystemTime) -> Self {
        let monotonic = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let nanos = duration_nanos(monotonic);
        Self {
            wall: t,
            monotonic,
            reading: Reading {
                mono: nanos,
                wall: nanos,
            },
        }
    }
}

/// How long, on the monotonic clock, a reading of the system clock's steps stands for a
/// limiter ([`TokioClock::reading_cached`]): one millisecond, the grid the wall clock
/// follows the system clock on.
pub(crate) const STEP_CHECK_NANOS: u64 = 1_000_000;

/// The system clock's steps as a limiter last read them, and until when (on the monotonic
/// line, in nanoseconds) that reading stands. On a cache line of its own: every decision
/// reads it, and it is written once a millisecond at most.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct StepCache {
    until: AtomicU64,
    steps: AtomicI64,
}

/// The default clock: the monotonic clock is tokio's, and the wall clock is the system
/// clock as it is at each reading ([`TokioClock::new`]), or a fixed start that advances
/// with tokio's clock ([`TokioClock::starting_at`], for planning and tests).
///
/// Both follow tokio's clock, so paused-time tests (`tokio::time::pause`,
/// `start_paused = true`) move the wall clock too, and a 24-hour run takes milliseconds.
/// The wall clock is anchored on a whole millisecond (and [`TokioClock::new`] follows the
/// system clock's steps to the millisecond), so that whole-millisecond instants of the wall
/// clock fall on tokio's 1 ms timer ticks when the anchor instant does (always under paused
/// time): sleeps then end exactly on the instants the limiter computed.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use drchrono_ratelimit::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
/// let clock = TokioClock::starting_at(start);
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// assert_eq!(clock.now(), start + Duration::from_secs(5));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    /// The wall clock at creation, rounded down to the millisecond.
    anchor_wall: SystemTime,
    /// `anchor_wall` in nanoseconds since the Unix epoch (`None` before it).
    anchor_nanos: Option<u64>,
    /// tokio's instant at creation.
    anchor_instant: Instant,
    /// For [`TokioClock::new`]: where the system clock stood at creation, to follow it.
    system: Option<SystemAnchor>,
    /// The system clock at creation in nanoseconds since the Unix epoch (`None` before it,
    /// or for [`TokioClock::starting_at`]).
    system_nanos: Option<u64>,
}

/// The system clock and the real monotonic clock, read together.
#[derive(Debug, Clone, Copy)]
struct SystemAnchor {
    wall: SystemTime,
    instant: std::time::Instant,
}

impl SystemAnchor {
    fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            instant: std::time::Instant::now(),
        }
    }

    /// How far, in nanoseconds, the system clock has been stepped since this anchor (ahead
    /// positive), as `now` shows it: how far it moved, less the real time that passed (the
    /// real monotonic clock, which tokio's is under paused time no longer), rounded to the
    /// nearest millisecond (so that the jitter of reading two clocks is no step).
    fn steps_at(&self, now: SystemAnchor) -> i64 {
        let moved = signed_since(now.wall, self.wall);
        let real = signed_nanos(now.instant.saturating_duration_since(self.instant));
        let steps = moved.saturating_sub(real);
        steps
            .saturating_add(500_000)
            .div_euclid(1_000_000)
            .saturating_mul(1_000_000)
    }
}

/// `t` in nanoseconds since the Unix epoch (`None` before it).
fn since_epoch_nanos(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(duration_nanos)
}

/// `d` in nanoseconds, saturating.
fn signed_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `later - earlier` in nanoseconds (negative when `later` is earlier), saturating.
fn signed_since(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(ahead) => signed_nanos(ahead),
        Err(back) => signed_nanos(back.duration()).saturating_neg(),
    }
}

/// `t` moved by `nanos` (ahead positive), saturating at the Unix epoch and far in the future.
fn shifted(t: SystemTime, nanos: i64) -> SystemTime {
    let by = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        t.checked_add(by).unwrap_or(t)
    } else {
        t.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl TokioClock {
    /// The system clock, as it is at each reading, seen through tokio's clock: the system
    /// clock's time at creation (rounded down to the millisecond), plus the time elapsed on
    /// tokio's clock since, plus however far the system clock has been stepped since (NTP,
    /// a resume after suspend; to the millisecond). Outside paused time that is the system
    /// clock, to the millisecond; under paused time, the system clock at creation advanced
    /// by virtual time. Sliding windows follow tokio's clock alone.
    ///
    /// Each reading costs one read of the system clock besides tokio's; the real monotonic
    /// clock is read too only while the two disagree (after a step, or under paused time).
    /// A [`RateLimiter`](crate::RateLimiter) on this clock reads the system clock at most
    /// once a millisecond of tokio's clock, and the steps it read in between.
    pub fn new() -> Self {
        let system = SystemAnchor::now();
        Self {
            system: Some(system),
            system_nanos: since_epoch_nanos(system.wall),
            ..Self::starting_at(system.wall)
        }
    }

    /// Reads `start` (rounded down to the millisecond) at tokio's current instant, and
    /// advances with tokio's clock only: for planning and tests under paused time. The
    /// system clock is never read.
    pub fn starting_at(start: SystemTime) -> Self {
        let anchor_wall = floor_ms_time(start);
        Self {
            anchor_wall,
            anchor_nanos: since_epoch_nanos(anchor_wall),
            anchor_instant: Instant::now(),
            system: None,
            system_nanos: None,
        }
    }

    /// How far the system clock has been stepped since creation, `mono` being the monotonic
    /// reading (now, or the one shared by a call): 0 for [`starting_at`](Self::starting_at).
    ///
    /// The system clock is compared with tokio's first: outside paused time tokio's clock is
    /// the real monotonic one, and a system clock within half a millisecond of where it
    /// says has not stepped (the usual case: one read of the system clock, integer
    /// arithmetic). Otherwise (a step, or paused time) the real monotonic clock tells them
    /// apart.
    #[inline]
    fn steps(&self, mono: u64) -> i64 {
        let Some(anchor) = self.system else {
            return 0;
        };
        let wall = SystemTime::now();
        if let (Some(system), Some(tokio)) = (self.system_nanos, self.anchor_nanos) {
            // Both differences fit in an i64 (292 years): wrapping arithmetic is exact.
            let system_moved = to_nanos(wall).wrapping_sub(system) as i64;
            let tokio_moved = mono.wrapping_sub(tokio) as i64;
            if system_moved.wrapping_sub(tokio_moved).unsigned_abs() < 500_000 {
                return 0;
            }
        }
        anchor.steps_at(SystemAnchor {
            wall,
            instant: std::time::Instant::now(),
        })
    }

    /// The monotonic line at tokio instant `instant`, in nanoseconds: the anchor's wall
    /// time plus the time elapsed on tokio's clock since.
    #[inline]
    pub(crate) fn monotonic_nanos_at(&self, instant: Instant) -> u64 {
        if let Some(anchor) = self.anchor_nanos
            && instant >= self.anchor_instant
            && let Some(now) = anchor.checked_add(duration_nanos(instant - self.anchor_instant))
        {
            return now;
        }
        to_nanos(self.anchored_at(instant))
    }

    /// The monotonic reading now, in nanoseconds.
    #[inline]
    pub(crate) fn monotonic_nanos(&self) -> u64 {
        self.monotonic_nanos_at(Instant::now())
    }

    /// Both readings now, in nanoseconds, the system clock's steps read afresh.
    #[cfg(test)]
    pub(crate) fn reading(&self) -> Reading {
        self.reading_cached(&StepCache::default())
    }

    /// Both readings now, in nanoseconds, in integer arithmetic: what the limiter decides
    /// on. The system clock's steps are read at most once per
    /// [`STEP_CHECK_NANOS`] of the monotonic clock, through `cache`: a step is seen within a
    /// millisecond, the precision this clock follows the system clock to anyway, and a
    /// decision costs one clock read instead of two.
    #[inline]
    pub(crate) fn reading_cached(&self, cache: &StepCache) -> Reading {
        self.reading_cached_at(cache, Instant::now())
    }

    /// [`reading_cached`](Self::reading_cached) with tokio's clock at `now`, a reading the
    /// caller has just taken ([`CallAt`](drchrono_core::CallAt)).
    #[inline]
    pub(crate) fn reading_cached_at(&self, cache: &StepCache, now: Instant) -> Reading {
        let mono = self.monotonic_nanos_at(now);
        let steps = if self.system.is_none() {
            0
        } else if mono < cache.until.load(Ordering::Acquire) {
            cache.steps.load(Ordering::Relaxed)
        } else {
            let steps = self.steps(mono);
            // Two threads may both read and store: each stores a step it has just read.
            cache.steps.store(steps, Ordering::Relaxed);
            cache
                .until
                .store(mono.saturating_add(STEP_CHECK_NANOS), Ordering::Release);
            steps
        };
        Reading {
            mono,
            wall: mono.saturating_add_signed(steps),
        }
    }

    /// The anchor's wall time plus the time elapsed on tokio's clock until `i`.
    fn anchored_at(&self, i: Instant) -> SystemTime {
        if i >= self.anchor_instant {
            let ahead = i - self.anchor_instant;
            self.anchor_wall
                .checked_add(ahead)
                .unwrap_or(self.anchor_wall)
        } else {
            let back = self.anchor_instant - i;
            self.anchor_wall
                .checked_sub(back)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    /// This clock, as if the system clock had been stepped by `nanos` since it was created.
    #[cfg(test)]
    pub(crate) fn stepped(mut self, nanos: i64) -> Self {
        let anchor = self
            .system
            .as_mut()
            .expect("a clock that follows the system");
        anchor.wall = shifted(anchor.wall, nanos.saturating_neg());
        self.system_nanos = since_epoch_nanos(anchor.wall);
        self
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        let instant = Instant::now();
        let steps = self.steps(self.monotonic_nanos_at(instant));
        shifted(self.anchored_at(instant), steps)
    }

    fn instant_at(&self, t: SystemTime) -> Instant {
        let steps = self.steps(self.monotonic_nanos());
        let t = shifted(t, steps.saturating_neg());
        match t.duration_since(self.anchor_wall) {
            Ok(d) => self
                .anchor_instant
                .checked_add(d)
                .unwrap_or_else(far_future),
            Err(e) => self
                .anchor_instant
                .checked_sub(e.duration())
                .unwrap_or_else(Instant::now),
        }
    }

    fn wall_at(&self, i: Instant) -> SystemTime {
        let steps = self.steps(self.monotonic_nanos());
        shifted(self.anchored_at(i), steps)
    }
}

/// An instant no wait reaches (30 years ahead), as tokio uses for "never".
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reading_is_now_in_nanoseconds() {
        let starts = [
            UNIX_EPOCH + Duration::new(1_767_609_420, 123_456_789),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_secs(5),
        ];
        for start in starts {
            let clock = TokioClock::starting_at(start);
            for step in [0, 1, 999_999, 1_000_000, 3_600_000_000_000] {
                tokio::time::advance(Duration::from_nanos(step)).await;
                let reading = clock.reading();
                assert_eq!(reading.wall, to_nanos(clock.now()), "{start:?} +{step}");
                assert_eq!(reading.mono, reading.wall, "{start:?} +{step}");
            }
        }
    }

    #[test]
    fn steps_are_the_system_clocks_moves_beyond_real_time_to_the_millisecond() {
        let anchor = SystemAnchor::now();
        let at = |wall: Duration, back: bool, real: Duration| SystemAnchor {
            wall: if back {
                anchor.wall - wall
            } else {
                anchor.wall + wall
            },
            instant: anchor.instant + real,
        };
        let secs = Duration::from_secs;
        assert_eq!(anchor.steps_at(at(secs(10), false, secs(10))), 0);
        // Jitter between the two readings is no step.
        let jitter = Duration::from_micros(300);
        assert_eq!(anchor.steps_at(at(secs(10) + jitter, false, secs(10))), 0);
        assert_eq!(anchor.steps_at(at(secs(10), false, secs(10) + jitter)), 0);
        // NTP steps 60 s ahead, or 60 s back; a suspended host resumes 2 h later.
        assert_eq!(
            anchor.steps_at(at(secs(70), false, secs(10))),
            60_000_000_000
        );
        assert_eq!(
            anchor.steps_at(at(secs(50), true, secs(10))),
            -60_000_000_000
        );
        assert_eq!(
            anchor.steps_at(at(secs(7_210), false, secs(10))),
            7_200_000_000_000
        );
    }

    #[tokio::test]
    async fn the_system_clock_outside_paused_time() {
        let clock = TokioClock::new();
        let reading = clock.reading();
        assert_eq!(reading.wall, reading.mono);
        let system = to_nanos(SystemTime::now());
        assert!(
            system.abs_diff(reading.wall) < 100_000_000,
            "{system} {reading:?}"
        );
        let ahead = clock.stepped(60_000_000_000).reading();
        assert_eq!(ahead.wall - ahead.mono, 60_000_000_000);
        let back = clock.stepped(-60_000_000_000).reading();
        assert_eq!(back.mono - back.wall, 60_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limiters_reading_sees_a_step_within_a_millisecond() {
        let clock = TokioClock::new();
        let cache = StepCache::default();
        let before = clock.reading_cached(&cache);
        assert_eq!(before.wall, before.mono);
        // The system clock steps 60 s ahead: within the millisecond, the step read last
        // stands; the next millisecond reads the system clock again.
        let ahead = clock.stepped(60_000_000_000);
        let step = 60_000_000_000;
        tokio::time::advance(Duration::from_nanos(STEP_CHECK_NANOS - 1)).await;
        let within = ahead.reading_cached(&cache);
        assert_eq!(within.wall, within.mono);
        tokio::time::advance(Duration::from_nanos(1)).await;
        let after = ahead.reading_cached(&cache);
        assert_eq!(after.wall, after.mono + step);
        assert_eq!(after.mono - before.mono, STEP_CHECK_NANOS);
        // And the reading stands again for a millisecond.
        tokio::time::advance(Duration::from_nanos(STEP_CHECK_NANOS - 1)).await;
        assert_eq!(
            clock.reading_cached(&cache).wall - step,
            before.mono + 2 * STEP_CHECK_NANOS - 1
        );
        // A clock that never follows the system reads no step, cached or not.
        let fixed = TokioClock::starting_at(UNIX_EPOCH + Duration::from_secs(1_767_609_420));
        let reading = fixed.reading_cached(&StepCache::default());
        assert_eq!(reading.wall, reading.mono);
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_follows_paused_time_and_its_steps() {
        let clock = TokioClock::new();
        let before = clock.reading();
        // Real time barely passes: no step. The wall clock is on the millisecond grid.
        assert_eq!(before.wall, before.mono);
        assert_eq!(before.wall % 1_000_000, 0);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        let later = clock.reading();
        assert_eq!(later.mono - before.mono, 3_600_000_000_000);
        assert_eq!(later.wall, later.mono);
        // The system clock stepped 60 s ahead: the wall clock follows; the monotonic does not.
        let ahead = clock.stepped(60_000_000_000);
        let reading = ahead.reading();
        assert_eq!(reading.mono, later.mono);
        assert_eq!(reading.wall, later.mono + 60_000_000_000);
        assert_eq!(to_nanos(ahead.now()), reading.wall);
        assert_eq!(ahead.wall_at(Instant::now()), ahead.now());
        // Sleeping until a wall instant maps it at the present offset.
        let in_ten = ahead.now() + Duration::from_secs(10);
        assert_eq!(
            ahead.instant_at(in_ten),
            Instant::now() + Duration::from_secs(10)
        );
        let back = clock.stepped(-60_000_000_000);
        assert_eq!(back.reading().wall, later.mono - 60_000_000_000);
        assert_eq!(
            back.instant_at(back.now() + Duration::from_secs(10)),
            Instant::now() + Duration::from_secs(10)
        );
    }
}
