//! Property test: a wall clock that steps, forward and back, mid-run.
//!
//! `LocalLimiter` is given two readings per decision: a monotonic clock, and a wall clock
//! that NTP steps now and then. For random rule sets, margins, arrivals and steps, every
//! rolling window holds at most its maximum on the monotonic clock (steps move none), every
//! aligned period holds at most its maximum on a server whose clock steps with ours (within
//! the margin of it, whichever way), and a refused request is admitted at the instant the
//! limiter named, as long as the wall clock does not step meanwhile.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use drchrono_ratelimit::{Clock, LocalLimiter, Now, Priority, RateLimitConfig, RateLimiter};
use proptest::prelude::*;

mod random_rules;

use random_rules::{BASE_MS, Kind, R, rule_strategy};

/// One arrival: the gap before it (ms of the monotonic clock), a step of the wall clock
/// just before it (ms, ahead positive), and whether it is background work.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    gap: u64,
    step: i64,
    background: bool,
}

#[derive(Debug, Clone)]
struct Case {
    rules: Vec<R>,
    margin: u64,
    arrivals: Vec<Arrival>,
}

/// A release: both readings, in ms.
#[derive(Debug, Clone, Copy)]
struct Release {
    mono: u64,
    wall: u64,
}

fn reading(mono: u64, offset: i64) -> Now {
    let wall = mono.checked_add_signed(offset).unwrap();
    Now::new(
        UNIX_EPOCH + Duration::from_millis(wall),
        Duration::from_millis(mono),
    )
}

fn ms(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(
        since.subsec_nanos() % 1_000_000,
        0,
        "off the ms grid: {since:?}"
    );
    u64::try_from(since.as_millis()).unwrap()
}

fn assert_no_rule_broken(case: &Case, released: &[Release]) {
    for rule in &case.rules {
        for r in released {
            let count = match rule.kind {
                // On the monotonic clock, whatever the wall clock did.
                Kind::Sliding => released
                    .iter()
                    .filter(|x| x.mono + rule.period > r.mono && x.mono <= r.mono)
                    .count(),
                // On a server whose clock is ours, stepped when ours is, within the margin.
                Kind::Aligned => {
                    let margin = case.margin as i64;
                    (-margin..=margin)
                        .map(|skew| {
                            let period = |x: &Release| {
                                x.wall.checked_add_signed(skew).unwrap() / rule.period
                            };
                            released.iter().filter(|x| period(x) == period(r)).count()
                        })
                        .max()
                        .unwrap_or(0)
                }
            };
            assert!(
                count as u64 <= rule.max,
                "{rule:?} broken at {r:?}: {count}"
            );
        }
    }
}

fn run(case: &Case) {
    let rules = case.rules.iter().map(R::rule);
    let config = RateLimitConfig::builder()
        .rules(rules)
        .safety_margin(Duration::from_millis(case.margin))
        .background_reserve_percent(0)
        .build()
        .unwrap();
    let limiter = LocalLimiter::new(&config);

    let mut released: Vec<Release> = Vec::new();
    let mut mono = BASE_MS;
    let mut offset = 0i64;
    for arrival in &case.arrivals {
        mono = mono.max(released.last().map_or(0, |r| r.mono)) + arrival.gap;
        offset += arrival.step;
        let priority = if arrival.background {
            Priority::Background
        } else {
            Priority::Interactive
        };
        let release = match limiter.try_acquire_with(reading(mono, offset), priority) {
            Ok(()) => mono,
            Err(not_until) => {
                // The earliest wall instant, at this offset.
                let at = ms(not_until.earliest())
                    .checked_add_signed(-offset)
                    .unwrap();
                assert!(at > mono);
                let earliest = limiter.earliest(reading(mono, offset), priority);
                assert_eq!(earliest, not_until.earliest());
                if at > mono + 1 {
                    assert!(
                        limiter
                            .try_acquire_with(reading(at - 1, offset), priority)
                            .is_err()
                    );
                }
                limiter
                    .try_acquire_with(reading(at, offset), priority)
                    .unwrap_or_else(|e| panic!("refused at its own earliest instant: {e}"));
                at
            }
        };
        released.push(Release {
            mono: release,
            wall: release.checked_add_signed(offset).unwrap(),
        });
    }
    assert_no_rule_broken(case, &released);
}

fn arrival_strategy() -> impl Strategy<Value = Arrival> {
    (
        0u64..=9,
        prop_oneof![
            6 => Just(0i64),
            1 => -200i64..=200,
        ],
        prop::bool::weighted(0.3),
    )
        .prop_map(|(gap, step, background)| Arrival {
            gap,
            step,
            background,
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(rule_strategy(), 1..=4),
        prop_oneof![Just(0u64), 1u64..=4],
        prop::collection::vec(arrival_strategy(), 1..=60),
    )
        .prop_map(|(rules, margin, arrivals)| {
            // Aligned periods must be longer than twice the margin.
            let margin = rules
                .iter()
                .filter(|r| r.kind == Kind::Aligned)
                .map(|r| (r.period - 1) / 2)
                .fold(margin, u64::min);
            Case {
                rules,
                margin,
                arrivals,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_rule_is_broken_whatever_the_wall_clock_does(case in case_strategy()) {
        run(&case);
    }
}

#[test]
fn an_hour_budget_across_steps_of_a_minute_both_ways() {
    // DrChrono's hour scaled down: 5 per aligned 3,600 ms, steps of 60 ms each way around
    // the top of the "hour", traffic every 10 ms.
    let arrivals = (0..1_000)
        .map(|i| Arrival {
            gap: 10,
            step: match i {
                30 => 60,
                400 => -60,
                700 => -60,
                800 => 60,
                _ => 0,
            },
            background: false,
        })
        .collect();
    let case = Case {
        rules: vec![R {
            kind: Kind::Aligned,
            max: 5,
            period: 3_600,
        }],
        margin: 1,
        arrivals,
    };
    run(&case);
}

#[test]
fn a_step_back_into_a_spent_hour_waits_for_the_hour_it_left() {
    let config = RateLimitConfig::builder().max_per_hour(5).build().unwrap();
    let limiter = LocalLimiter::new(&config);
    let secs = |s: u64| s * 1_000;
    // 10:59:50 UTC: the hour of 10:00 spent, then two requests at 11:00:10.
    let ten_59_50 = 1_767_610_790_000;
    for _ in 0..5 {
        limiter.try_acquire(reading(ten_59_50, 0)).unwrap();
    }
    let eleven = ten_59_50 + secs(20);
    limiter.try_acquire(reading(eleven, 0)).unwrap();
    limiter.try_acquire(reading(eleven + secs(1), 0)).unwrap();
    // NTP steps the wall clock 60 s back, to 10:59:12: the hour of 10:00 is spent, on a
    // server whose clock stepped too and on one whose clock was behind ours. Nothing goes
    // until 11:00:00 plus the margin, 48.1 s later, then the hour of 11:00 has 3 left.
    let back = -60_000;
    let mono = eleven + secs(2);
    let refused = limiter.try_acquire(reading(mono, back)).unwrap_err();
    let top = ten_59_50 + secs(10);
    assert_eq!(ms(refused.earliest()), top + 100);
    let reopened = mono + secs(48) + 100;
    for _ in 0..3 {
        limiter.try_acquire(reading(reopened, back)).unwrap();
    }
    assert!(limiter.try_acquire(reading(reopened, back)).is_err());
}

#[tokio::test(start_paused = true)]
async fn the_default_clock_crosses_the_hour_under_paused_time() {
    // `TokioClock::new`: the system clock, seen through tokio's paused clock. The second
    // request waits for the next top of the hour (plus the margin) on virtual time.
    let config = RateLimitConfig::builder().max_per_hour(1).build().unwrap();
    let limiter = RateLimiter::new(config);
    let first = limiter.acquire(Priority::Interactive).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let second = limiter.acquire(Priority::Interactive).await.unwrap();
    let margin = Duration::from_millis(100);
    // The hour the first may fall in on the server, latest first (the margin counts a
    // request at most 100 ms before the top of the hour in both).
    let hour = (first + margin)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3_600;
    let reopens = UNIX_EPOCH + Duration::from_secs((hour + 1) * 3_600) + margin;
    assert_eq!(second, reopens);
    assert_eq!(t0.elapsed(), reopens.duration_since(first).unwrap());
}

/// A wall clock that follows tokio's, and that NTP steps an hour back, once armed, the next
/// time the limiter converts a wall instant into a tokio one: a step that lands between a
/// decision and its sleep.
#[derive(Debug)]
struct StepsBackAtConversion {
    start: SystemTime,
    origin: tokio::time::Instant,
    armed: AtomicBool,
    stepped: AtomicBool,
}

impl Clock for StepsBackAtConversion {
    fn now(&self) -> SystemTime {
        let now = self.start + self.origin.elapsed();
        if self.stepped.load(Ordering::SeqCst) {
            now - Duration::from_secs(3_600)
        } else {
            now
        }
    }

    fn instant_at(&self, t: SystemTime) -> tokio::time::Instant {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.stepped.store(true, Ordering::SeqCst);
        }
        let (wall, instant) = (self.now(), tokio::time::Instant::now());
        instant + t.duration_since(wall).unwrap_or(Duration::ZERO)
    }
}

#[derive(Debug)]
struct Shared(Arc<StepsBackAtConversion>);

impl Clock for Shared {
    fn now(&self) -> SystemTime {
        self.0.now()
    }

    fn instant_at(&self, t: SystemTime) -> tokio::time::Instant {
        self.0.instant_at(t)
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_after_a_decision_does_not_move_a_rolling_wait() {
    // A rolling window is measured on tokio's clock: however the wall clock steps once the
    // limiter has decided, the wait for the window is the window's, not an hour more.
    let clock = Arc::new(StepsBackAtConversion {
        start: UNIX_EPOCH + Duration::from_secs(1_767_610_000),
        origin: tokio::time::Instant::now(),
        armed: AtomicBool::new(false),
        stepped: AtomicBool::new(false),
    });
    let config = RateLimitConfig::builder()
        .max_per_second(1)
        .safety_margin(Duration::ZERO)
        .build()
        .unwrap();
    let limiter = RateLimiter::builder(config)
        .clock(Shared(Arc::clone(&clock)))
        .build();
    limiter.acquire(Priority::Interactive).await.unwrap();
    let t0 = tokio::time::Instant::now();
    clock.armed.store(true, Ordering::SeqCst);
    let released = tokio::time::timeout(
        Duration::from_secs(2),
        limiter.acquire(Priority::Interactive),
    )
    .await
    .expect("the rolling second's wait, not an hour more")
    .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    // Released on the wall clock as it reads then, whether or not it stepped meanwhile.
    assert_eq!(released, clock.now());
}
