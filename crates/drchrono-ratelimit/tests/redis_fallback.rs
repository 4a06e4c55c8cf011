//! The Redis backend's fallback during an outage, against a real `redis-server` that each
//! test stops: the processes together never exceed any rule, whatever was spent before.
//!
//! Each "process" is a `RedisRateLimitBackend` of its own, with its own connection. They
//! decide on the caller's clock (`RedisClock::Caller`) at instants the test passes, before
//! and during the outage: nothing sleeps, and hours of fallback take a second.
#![cfg(feature = "redis")]

// One helper for every package that tests against Redis.
#[path = "../../../tests/redis_server/mod.rs"]
mod redis_server;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drchrono_ratelimit::{
    Backend, LocalLimiter, Priority, RateLimitConfig, RedisClock, RedisRateLimitBackend, Rule,
    RuleKind,
};
use redis_server::{TestRedis, unique_prefix};

/// 2026-01-05T10:37:00Z.
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_609_420)
}

/// 2026-01-05T11:00:00Z: the end of `start`'s hour.
fn top_of_the_hour() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_610_800)
}

const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// `count` processes of one application, each with a fallback of `percent` %.
async fn processes(
    redis: &TestRedis,
    config: &RateLimitConfig,
    percent: u8,
    count: usize,
) -> Vec<RedisRateLimitBackend> {
    let prefix = unique_prefix("fallback");
    let mut processes = Vec::with_capacity(count);
    for _ in 0..count {
        let backend = RedisRateLimitBackend::builder(config)
            .key_prefix(&prefix)
            .clock(RedisClock::Caller)
            .fallback_percent(percent)
            .retry_interval(RETRY_INTERVAL)
            .connect(redis.url())
            .await
            .unwrap();
        processes.push(backend);
    }
    processes
}

async fn admitted(process: &RedisRateLimitBackend, now: SystemTime) -> bool {
    process
        .try_acquire(now, Priority::Interactive)
        .await
        .expect("with a fallback, the backend always decides")
        .is_ok()
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Asserts that the requests released at `released` (sorted) break none of `config`'s rules
/// as DrChrono counts them: at most `max` in any rolling window, in any aligned period.
fn assert_within_rules(released: &[SystemTime], config: &RateLimitConfig) {
    assert!(released.is_sorted());
    for rule in config.rules() {
        let max = rule.max() as usize;
        match rule.kind() {
            RuleKind::Aligned => {
                let mut per_period = HashMap::<u128, usize>::new();
                for &t in released {
                    *per_period
                        .entry(nanos(t) / rule.period().as_nanos())
                        .or_default() += 1;
                }
                let busiest = per_period.values().max().copied().unwrap_or(0);
                assert!(busiest <= max, "{busiest} in one period of {rule}");
            }
            _ => {
                let mut oldest = 0;
                for (newest, &t) in released.iter().enumerate() {
                    while released[oldest] + rule.period() <= t {
                        oldest += 1;
                    }
                    let in_window = newest + 1 - oldest;
                    assert!(
                        in_window <= max,
                        "{in_window} in the window of {rule} ending at {t:?}"
                    );
                }
            }
        }
    }
}

/// The acceptance test: DrChrono's rules; 280 of the 290 per 10 minutes are spent
/// through Redis by three processes; Redis stops; each process, with a 33 % fallback, asks
/// for permits four times a second for the next hour and a half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_after_280_of_290_releases_at_most_10_more_in_that_window() {
    let mut redis = TestRedis::private();
    let config = RateLimitConfig::default();
    let processes = processes(&redis, &config, 33, 3).await;
    // Nine every 1.1 s (a rolling second plus the margin), by the processes in turn.
    let mut released = Vec::new();
    let mut now = start();
    while released.len() < 280 {
        for _ in 0..9.min(280 - released.len()) {
            assert!(admitted(&processes[released.len() % 3], now).await);
            released.push(now);
        }
        now += Duration::from_millis(1_100);
    }
    let last = released[279];
    redis.stop();

    let mut now = last + Duration::from_millis(500);
    let end = top_of_the_hour() + Duration::from_secs(3_600);
    while now < end {
        for process in &processes {
            for _ in 0..3 {
                if admitted(process, now).await {
                    released.push(now);
                }
            }
        }
        now += Duration::from_millis(250);
    }

    // Nothing charged before the outage leaves the window before 10:47:00.
    let fallback = &released[280..];
    let window = start() + Duration::from_secs(600);
    let in_that_window = fallback.iter().filter(|&&t| t < window).count();
    assert!(in_that_window <= 10, "{in_that_window} more in the window");
    assert_within_rules(&released, &config);
    // In the hour in progress, each released at most a third of what remained of it
    // (500 - 280, less the 9 others might have sent between its last decision and the
    // outage): 70; from 11:00:00.1 the plain shares apply, 165 of the hour each.
    let in_that_hour = fallback.iter().filter(|&&t| t < top_of_the_hour()).count();
    assert!(
        (1..=3 * 70).contains(&in_that_hour),
        "{in_that_hour} more in the hour"
    );
    let in_the_next_hour = fallback.len() - in_that_hour;
    assert_eq!(in_the_next_hour, 3 * 165);
    let margin = config.safety_margin();
    assert!(fallback.contains(&(top_of_the_hour() + margin)));
    assert!(
        !fallback
            .iter()
            .any(|&t| t >= top_of_the_hour() && t < top_of_the_hour() + margin)
    );
}

/// A deterministic pseudo-random sequence (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The script's reply tells each process what every rule held: after random arrivals
/// through two processes, each one's fallback releases exactly half of what `LocalLimiter`
/// (fed the same arrivals) says remained at its last decision, less what the other may
/// have sent since (30: the tightest rule's maximum), in the window and hour in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_releases_its_share_of_what_the_script_said_remained() {
    let config = RateLimitConfig::builder()
        .rules([
            Rule::sliding(30, Duration::from_secs(10)).unwrap(),
            Rule::sliding(200, Duration::from_secs(600)).unwrap(),
            Rule::aligned(400, Duration::from_secs(3_600)).unwrap(),
        ])
        .safety_margin(Duration::ZERO)
        .build()
        .unwrap();
    let mut outcomes = Vec::new();
    for seed in 1..=4 {
        let mut redis = TestRedis::private();
        let processes = processes(&redis, &config, 50, 2).await;
        let mirror = LocalLimiter::new(&config);
        let mut rng = Lcg(seed);
        let mut now = start();
        let mut used = [vec![], vec![]];
        let arrivals = 60 + 40 * seed;
        for step in 0..arrivals {
            now += Duration::from_millis(rng.below(2) * rng.below(2_000));
            // Both processes decide last, within 4 s: the outage comes 1 s later.
            let index = match arrivals - step {
                1 => 0,
                2 => 1,
                _ => usize::try_from(rng.below(2)).unwrap(),
            };
            let expected = mirror.try_acquire(now);
            let actual = processes[index]
                .try_acquire(now, Priority::Interactive)
                .await
                .unwrap();
            assert_eq!(actual.is_ok(), expected.is_ok(), "seed {seed}, step {step}");
            used[index] = mirror
                .status(now)
                .rules
                .iter()
                .map(|rule| rule.rule.max() - rule.remaining)
                .collect::<Vec<_>>();
        }
        redis.stop();

        // The outage is seen a second later; the 10 s rule's own allowance is 0
        // (30 - used - 30) until 10 s after that, then the window's and the hour's bind.
        let fail = now + Duration::from_secs(1);
        let mut released = [0, 0];
        for (index, process) in processes.iter().enumerate() {
            assert!(!admitted(process, fail).await);
            let mut at = fail + Duration::from_millis(10_500);
            while at < fail + Duration::from_secs(599) {
                for _ in 0..20 {
                    released[index] += usize::from(admitted(process, at).await);
                }
                at += Duration::from_secs(10);
            }
        }
        let remaining = mirror.status(now).rules;
        for index in 0..2 {
            let share = |rule: usize| {
                (config.rules()[rule].max() - used[index][rule]).saturating_sub(30) / 2
            };
            let expected = share(1).min(share(2)) as usize;
            assert_eq!(
                released[index], expected,
                "seed {seed}, process {index}, used {:?}",
                used[index]
            );
        }
        let together = released[0] + released[1];
        assert!(together <= remaining[1].remaining as usize);
        assert!(together <= remaining[2].remaining as usize);
        outcomes.push(together);
    }
    // The seeds reach different states, and the fallback released something in some.
    assert!(
        outcomes.iter().any(|&together| together > 0),
        "{outcomes:?}"
    );
}

/// `floor(9 × 10 %) = 0`: ten processes at 10 % release nothing in their fallback, at any
/// time (they used to release one a second each, ten together); each refusal names the
/// instant Redis may be asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_round_down_so_ten_processes_at_10_percent_of_9_per_second_release_nothing() {
    let mut redis = TestRedis::private();
    let config = RateLimitConfig::default();
    let processes = processes(&redis, &config, 10, 10).await;
    for (index, process) in processes.iter().enumerate() {
        let at = start() + Duration::from_millis(200) * u32::try_from(index).unwrap();
        assert!(admitted(process, at).await);
    }
    redis.stop();

    let mut released = 0;
    let mut waits = Vec::new();
    let mut now = start() + Duration::from_secs(3);
    // Two hours: past the window and the hour in progress.
    while now < start() + Duration::from_secs(7_200) {
        for process in &processes {
            match process
                .try_acquire(now, Priority::Interactive)
                .await
                .unwrap()
            {
                Ok(()) => released += 1,
                Err(refused) => waits.push(refused.wait_time_from(now)),
            }
        }
        now += Duration::from_secs(1);
    }
    assert_eq!(released, 0);
    assert!(
        waits
            .iter()
            .all(|&wait| wait > Duration::ZERO && wait <= RETRY_INTERVAL)
    );
    assert!(processes.iter().all(|process| process.unsynced() == 0));
}
