//! `RedisRateLimitBackend` against a real `redis-server` (the shared one of `scripts/test`,
//! or a private child process; tests that stop Redis always use a private one).
//!
//! The Lua script is checked decision by decision against `LocalLimiter` on the caller's
//! clock (no sleeping: the instants are arguments). The tests on Redis's own clock assert
//! who is admitted and how long the script says to wait, never how long anything took.
#![cfg(feature = "redis")]

// One helper for every package that tests against Redis.
#[path = "../../../tests/redis_server/mod.rs"]
mod redis_server;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drchrono_core::DrChronoError;
use drchrono_ratelimit::{
    Backend, BackendError, DrChronoRateLimitLayer, LocalLimiter, NotUntil, Priority,
    RateLimitConfig, RateLimiter, RedisClock, RedisRateLimitBackend, Rule, Status,
};
use http::{Request, Response};
use redis_server::{TestRedis, unique_prefix};
use tower::{Layer, ServiceExt, service_fn};

/// 2026-01-05T10:59:30Z: half a minute before the top of the hour.
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_610_770)
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

async fn caller_clock_backend(
    redis: &TestRedis,
    config: &RateLimitConfig,
) -> RedisRateLimitBackend {
    RedisRateLimitBackend::builder(config)
        .key_prefix(unique_prefix("differential"))
        .clock(RedisClock::Caller)
        .connect(redis.url())
        .await
        .unwrap()
}

/// `t` rounded up to a whole microsecond (`step` 1 000 ns) or millisecond (1 000 000 ns).
fn ceil_to(t: SystemTime, step: u128) -> SystemTime {
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .div_ceil(step)
        * step;
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap())
}

/// The local limiter's answer on the script's microsecond grid: the script computes in whole
/// microseconds and rounds every wait up (pacing's gaps are the only instants off the
/// millisecond grid the arrivals are on).
fn on_micros(decision: Result<(), NotUntil>) -> Result<(), SystemTime> {
    decision.map_err(|not_until| ceil_to(not_until.earliest(), 1_000))
}

fn status_on_micros(mut status: Status) -> Status {
    let us = |t: SystemTime| ceil_to(t, 1_000);
    status.at = us(status.at);
    for rule in &mut status.rules {
        rule.resets_at = rule.resets_at.map(us);
    }
    status.next_reset = status.next_reset.map(us);
    status.next_available = us(status.next_available);
    status.next_available_background = us(status.next_available_background);
    status.paused_until = status.paused_until.map(us);
    status
}

/// Drives `LocalLimiter` and the Redis script through the same arrivals, pauses and status
/// reads, and asserts the same answers.
async fn same_decisions(redis: &TestRedis, config: RateLimitConfig, seed: u64, steps: usize) {
    let local = LocalLimiter::new(&config);
    let shared = caller_clock_backend(redis, &config).await;
    let mut rng = Lcg(seed);
    let mut now = start();
    let (mut admitted, mut refused) = (0, 0);
    for step in 0..steps {
        now += Duration::from_millis(match rng.below(20) {
            0..=13 => 0,
            14..=17 => rng.below(300),
            18 => rng.below(5_000),
            _ => rng.below(120_000),
        });
        let priority = if rng.below(4) == 0 {
            Priority::Background
        } else {
            Priority::Interactive
        };
        match rng.below(50) {
            0 => {
                let until = now + Duration::from_millis(rng.below(90_000));
                local.pause_until(now, until);
                shared.pause_until(now, until).await.unwrap();
            }
            1 => {
                let status = shared.status(now).await.unwrap();
                assert_eq!(
                    status,
                    status_on_micros(local.status(now)),
                    "status at step {step}"
                );
            }
            _ => {
                let expected = local.try_acquire_with(now, priority);
                let actual = shared.try_acquire(now, priority).await.unwrap();
                assert_eq!(
                    actual.map_err(|n| n.earliest()),
                    on_micros(expected),
                    "step {step}, {priority:?}"
                );
                match expected {
                    Ok(()) => admitted += 1,
                    Err(not_until) => {
                        refused += 1;
                        // Half the refused retry when told, on tokio's 1 ms grid, as the
                        // limiter does.
                        if rng.below(2) == 0 {
                            now = ceil_to(not_until.earliest(), 1_000_000);
                        }
                    }
                }
            }
        }
    }
    assert!(
        admitted > steps / 10 && refused > steps / 10,
        "{admitted} / {refused}"
    );
    assert_eq!(
        shared.status(now).await.unwrap(),
        status_on_micros(local.status(now))
    );
}

#[tokio::test]
async fn the_script_decides_exactly_as_the_local_limiter_with_drchronos_rules() {
    let redis = TestRedis::shared();
    let config = RateLimitConfig::builder()
        .max_per_second(9)
        .max_per_window(40)
        .window(Duration::from_secs(60))
        .max_per_hour(70)
        .hour(Duration::from_secs(300))
        .build()
        .unwrap();
    for seed in 1..=3 {
        same_decisions(&redis, config.clone(), seed, 2_000).await;
    }
}

#[tokio::test]
async fn the_script_decides_exactly_as_the_local_limiter_with_pacing_margin_and_reserve() {
    let redis = TestRedis::shared();
    let config = RateLimitConfig::builder()
        .rules([
            Rule::sliding(3, Duration::from_millis(700)).unwrap(),
            Rule::aligned(25, Duration::from_secs(30)).unwrap(),
            Rule::aligned(60, Duration::from_secs(120)).unwrap(),
        ])
        .safety_margin(Duration::from_millis(37))
        .background_reserve_percent(30)
        .smooth_pacing(true)
        .build()
        .unwrap();
    for seed in 7..=9 {
        same_decisions(&redis, config.clone(), seed, 2_000).await;
    }
}

/// A backend with the failover journal, 10 per rolling minute for `application`, deciding
/// on the caller's clock (the windows and the 800 ms hold run on the instants a test passes).
async fn journaled(url: &str, application: &str) -> RedisRateLimitBackend {
    let config = one_window(10, Duration::from_secs(60), application);
    RedisRateLimitBackend::builder(&config)
        .clock(RedisClock::Caller)
        .failover_hold(Duration::from_millis(800))
        .connect(url)
        .await
        .unwrap()
}

/// A connection of the test's own to `url`, for commands the backend never sends.
async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn one_window(max: u32, window: Duration, application: &str) -> RateLimitConfig {
    RateLimitConfig::builder()
        .rules([Rule::sliding(max, window).unwrap()])
        .safety_margin(Duration::ZERO)
        .application(application)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_one_budget_and_one_cool_down_on_redis_time() {
    let redis = TestRedis::shared();
    let config = one_window(5, Duration::from_secs(10), &unique_prefix("shared-app"));
    // Two "processes": two backends, two connections, one application.
    let first = RedisRateLimitBackend::connect(redis.url(), &config)
        .await
        .unwrap();
    let second = RedisRateLimitBackend::connect(redis.url(), &config)
        .await
        .unwrap();
    let mut admitted = 0;
    for round in 0..6 {
        for backend in [&first, &second] {
            let now = SystemTime::now();
            match backend
                .try_acquire(now, Priority::Interactive)
                .await
                .unwrap()
            {
                Ok(()) => admitted += 1,
                Err(not_until) => {
                    assert!(round >= 2, "refused before the budget was spent");
                    // The first admission leaves the window 10 s after it was charged. The
                    // wait counts from the script's answer: up to a round trip late, never
                    // early.
                    let wait = not_until.wait_time_from(now);
                    assert!(
                        wait > Duration::from_secs(8) && wait <= Duration::from_millis(10_500),
                        "{wait:?}"
                    );
                }
            }
        }
    }
    assert_eq!(admitted, 5);
    let status = first.status(SystemTime::now()).await.unwrap();
    assert_eq!(status.rules[0].remaining, 0);

    // A 429 seen by one process pauses the other.
    let other = one_window(100, Duration::from_secs(1), &unique_prefix("paused-app"));
    let first = RedisRateLimitBackend::connect(redis.url(), &other)
        .await
        .unwrap();
    let second = RedisRateLimitBackend::connect(redis.url(), &other)
        .await
        .unwrap();
    let now = SystemTime::now();
    first
        .pause_until(now, now + Duration::from_secs(30))
        .await
        .unwrap();
    let now = SystemTime::now();
    let refused = second
        .try_acquire(now, Priority::Interactive)
        .await
        .unwrap()
        .unwrap_err();
    let wait = refused.wait_time_from(now);
    assert!(
        wait > Duration::from_secs(29) && wait <= Duration::from_millis(30_500),
        "{wait:?}"
    );
    let status = second.status(SystemTime::now()).await.unwrap();
    assert!(status.paused_until.is_some());
}

#[tokio::test]
async fn every_decision_is_one_round_trip() {
    let redis = TestRedis::private();
    let config = one_window(1_000, Duration::from_secs(60), "round-trips");
    let backend = RedisRateLimitBackend::connect(redis.url(), &config)
        .await
        .unwrap();
    // The first call loads the script (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA).
    backend
        .try_acquire(SystemTime::now(), Priority::Interactive)
        .await
        .unwrap()
        .unwrap();
    let mut connection = raw_connection(redis.url()).await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut connection)
        .await
        .unwrap();
    for _ in 0..50 {
        backend
            .try_acquire(SystemTime::now(), Priority::Interactive)
            .await
            .unwrap()
            .unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let calls = |command: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse::<u64>().unwrap())
    };
    // One EVALSHA per decision, no script (re)loads; inside each, one TIME: Redis's clock.
    assert_eq!(calls("evalsha"), 50, "{info}");
    assert_eq!(calls("time"), 50, "{info}");
    assert_eq!(calls("eval") + calls("script|load"), 0, "{info}");
    // Every other command the server counted ran inside the script, or is this test's own.
    let inside_the_script = [
        "time", "hmget", "hget", "hset", "llen", "lindex", "rpush", "ltrim", "lrange", "pexpire",
        "get", "set",
    ];
    let outside: u64 = info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse::<u64>().ok()?;
            (!inside_the_script.contains(&name)).then_some(calls)
        })
        .sum();
    assert_eq!(outside, 50 + 1, "{info}"); // the decisions and CONFIG RESETSTAT
}

/// A layer over a service counting its calls, with `DrChronoError` as the error type.
fn counted(
    limiter: &RateLimiter,
    calls: &Arc<AtomicUsize>,
) -> impl tower::Service<Request<()>, Response = Response<()>, Error = DrChronoError> + Clone + use<>
{
    let calls = Arc::clone(calls);
    DrChronoRateLimitLayer::new(limiter.clone()).layer(service_fn(move |_request: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, DrChronoError>(Response::new(())))
    }))
}

/// Sends until a request succeeds (Redis back and asked again), for at most 20 s.
async fn until_recovered<S>(service: &S) -> usize
where
    S: tower::Service<Request<()>, Response = Response<()>, Error = DrChronoError> + Clone,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    loop {
        match service.clone().oneshot(Request::new(())).await {
            Ok(_) => return failures,
            Err(error) if std::time::Instant::now() < deadline => {
                assert!(error.is_not_sent(), "{error:?}");
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no recovery: {error:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_with_a_typed_error_and_recovers() {
    let mut redis = TestRedis::private();
    let config = one_window(100, Duration::from_secs(1), "fail-closed");
    let backend = RedisRateLimitBackend::builder(&config)
        .retry_interval(Duration::from_millis(200))
        .connect(redis.url())
        .await
        .unwrap();
    let limiter = RateLimiter::builder(config).backend(backend).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = counted(&limiter, &calls);
    service.clone().oneshot(Request::new(())).await.unwrap();

    redis.stop();
    for _ in 0..3 {
        let request = Request::get("https://app.drchrono.com/api/patients/7?since=2024-01-01")
            .body(())
            .unwrap();
        match service.clone().oneshot(request).await {
            Err(DrChronoError::Transport {
                not_sent: true,
                source,
                context,
            }) => {
                let backend = source.downcast_ref::<BackendError>().unwrap();
                assert_eq!(backend.backend(), "redis");
                assert_eq!(context.path(), Some("/api/patients/7"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "nothing sent without a permit"
    );
    assert!(limiter.status().await.is_err());
    assert!(limiter.pause_until(SystemTime::now()).await.is_err());

    redis.restart();
    until_recovered(&service).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(limiter.status().await.unwrap().rules[0].remaining, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_spends_its_share_locally_and_charges_redis_when_it_returns() {
    let mut redis = TestRedis::private();
    let config = RateLimitConfig::builder()
        .rules([
            Rule::sliding(10, Duration::from_secs(1)).unwrap(),
            Rule::sliding(40, Duration::from_secs(60)).unwrap(),
        ])
        .safety_margin(Duration::ZERO)
        .application("fallback")
        .build()
        .unwrap();
    // The fallback alone: Redis comes back empty, and the journal would re-assert this
    // process's charge and hold decisions (`a_server_that_lost_charges_gets_them_back`).
    let backend = RedisRateLimitBackend::builder(&config)
        .fallback_percent(50)
        .retry_interval(Duration::from_millis(200))
        .failover_journal(false)
        .connect(redis.url())
        .await
        .unwrap();
    assert!(format!("{backend:?}").contains("fallback_percent: Some(50)"));
    backend
        .try_acquire(SystemTime::now(), Priority::Interactive)
        .await
        .unwrap()
        .unwrap();

    redis.stop();
    // Redis held 1 of 10 and 1 of 40; other processes may have sent up to 10 more (the
    // per-second rule) before the outage was seen. So nothing for a second, then half of
    // 10 per second (the share) until half of 40 - 1 - 10 (14) is spent in this minute.
    let now = SystemTime::now();
    let refused = backend
        .try_acquire(now, Priority::Interactive)
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.wait_time_from(now) <= Duration::from_millis(200));
    let mut released = Vec::new();
    for second in 2..6 {
        let at = now + Duration::from_secs(second);
        for _ in 0..10 {
            if let Ok(Ok(())) = backend.try_acquire(at, Priority::Interactive).await {
                released.push(second);
            }
        }
    }
    assert_eq!(released, [2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4]);
    assert_eq!(backend.unsynced(), 14);

    // Redis is back, empty: its next decision charges the 14 first (10 of them fill the
    // second), then refuses this one.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        backend
            .try_acquire(SystemTime::now(), Priority::Interactive)
            .await
            .unwrap()
            .ok();
        if backend.unsynced() == 0 || std::time::Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(backend.unsynced(), 0);
    let status = backend.status(SystemTime::now()).await.unwrap();
    assert_eq!(status.rules[1].remaining, 40 - 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outages_backlog_is_charged_in_one_decision() {
    let mut redis = TestRedis::private();
    let config = RateLimitConfig::builder()
        .rules([
            Rule::sliding(10_000, Duration::from_secs(1)).unwrap(),
            Rule::sliding(20_000, Duration::from_secs(600)).unwrap(),
            Rule::aligned(40_000, Duration::from_secs(3_600)).unwrap(),
        ])
        .application("backlog")
        .build()
        .unwrap();
    // The fallback alone (see `a_fallback_spends_its_share_locally…`).
    let backend = RedisRateLimitBackend::builder(&config)
        .fallback_percent(100)
        .retry_interval(Duration::from_millis(100))
        .failover_journal(false)
        .connect(redis.url())
        .await
        .unwrap();
    backend
        .try_acquire(SystemTime::now(), Priority::Interactive)
        .await
        .unwrap()
        .unwrap();
    redis.stop();
    // Others may have sent 10 000 before the outage was seen: nothing for a second and a
    // margin, then up to 20 000 - 1 - 10 000 in the window in progress.
    let now = SystemTime::now();
    let refused = backend
        .try_acquire(now, Priority::Interactive)
        .await
        .unwrap();
    assert!(refused.is_err());
    let later = now + Duration::from_secs(2);
    for _ in 0..9_000 {
        let decision = backend
            .try_acquire(later, Priority::Interactive)
            .await
            .unwrap();
        assert!(decision.is_ok());
    }
    assert_eq!(backend.unsynced(), 9_000);

    // More entries than one Lua `unpack` may take (8 000): pushed in chunks, in one script run.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut admitted_since = 0;
    while backend.unsynced() > 0 {
        assert!(std::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let decision = backend
            .try_acquire(later, Priority::Interactive)
            .await
            .unwrap();
        assert!(decision.is_ok());
        admitted_since += 1;
    }
    // The decisions made while Redis was still away went to the fallback (and were synced
    // with the backlog); the last one was Redis's own.
    let status = backend.status(SystemTime::now()).await.unwrap();
    assert_eq!(status.rules[1].remaining, 20_000 - 9_000 - admitted_since);
    assert_eq!(status.rules[2].remaining, 40_000 - 9_000 - admitted_since);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_type_that_cannot_carry_the_failure_holds_the_request_instead() {
    let mut redis = TestRedis::private();
    let config = one_window(100, Duration::from_secs(1), "hold");
    let backend = RedisRateLimitBackend::builder(&config)
        .retry_interval(Duration::from_millis(100))
        .connect(redis.url())
        .await
        .unwrap();
    let limiter = RateLimiter::builder(config).backend(backend).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let inner_calls = Arc::clone(&calls);
    let service = DrChronoRateLimitLayer::new(limiter).layer(service_fn(move |_: Request<()>| {
        inner_calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    }));

    redis.stop();
    let pending = tokio::spawn(service.oneshot(Request::new(())));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!pending.is_finished());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    redis.restart();
    tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("released once Redis is back")
        .unwrap()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A server that lost this process's charges (a failover to a replica that lacked them; here
/// a restart, empty) gets them back before anything is decided, and holds every decision
/// briefly so that the other processes re-assert theirs; without the journal it forgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_charges_gets_them_back() {
    let mut redis = TestRedis::private();
    let config = one_window(10, Duration::from_secs(60), "journal");
    let forgetful_config = one_window(10, Duration::from_secs(60), "no-journal");
    // The caller's clock: the hold and the windows run on the instants this test passes.
    let backend = RedisRateLimitBackend::builder(&config)
        .clock(RedisClock::Caller)
        .failover_hold(Duration::from_millis(800))
        .connect(redis.url())
        .await
        .unwrap();
    let forgetful = RedisRateLimitBackend::builder(&forgetful_config)
        .clock(RedisClock::Caller)
        .failover_journal(false)
        .connect(redis.url())
        .await
        .unwrap();
    let start = SystemTime::now();
    for i in 0..4 {
        let at = start + Duration::from_millis(i * 10);
        assert!(
            backend
                .try_acquire(at, Priority::Interactive)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(
            forgetful
                .try_acquire(at, Priority::Interactive)
                .await
                .unwrap()
                .is_ok()
        );
    }

    redis.stop();
    redis.restart();
    let now = start + Duration::from_secs(1);
    // The first decision re-asserts the 4 charges, then is held (asked again within 50 ms).
    let refused = loop {
        match backend.try_acquire(now, Priority::Interactive).await {
            Ok(decision) => break decision.unwrap_err(),
            // Redis is still starting: the backend is not asked again for a moment.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(
        refused.wait_time_from(now) <= Duration::from_millis(50),
        "{refused:?}"
    );
    assert_eq!(backend.status(now).await.unwrap().rules[0].remaining, 6);
    // Re-asserted once: asking again adds nothing.
    assert!(
        backend
            .try_acquire(now, Priority::Interactive)
            .await
            .unwrap()
            .is_err()
    );
    assert_eq!(backend.status(now).await.unwrap().rules[0].remaining, 6);
    // After the hold, decisions resume on what the server holds again.
    let later = now + Duration::from_millis(900);
    assert!(
        backend
            .try_acquire(later, Priority::Interactive)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(backend.status(later).await.unwrap().rules[0].remaining, 5);

    // Without the journal the server has forgotten: the window looks empty. (Its
    // connection broke with the restart: the first command fails, the next reconnects.)
    let status = loop {
        match forgetful.status(later).await {
            Ok(status) => break status,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(status.rules[0].remaining, 10);
}

/// A decision whose reply was lost still charged on the server (the request was never
/// sent): the server then holds more of the process's charges than it was told of. The
/// journal takes the server's count, so that a failover losing a later charge is still seen
/// (else the phantom would hide it, one for one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_does_not_hide_a_later_loss() {
    let redis = TestRedis::private();
    let backend = journaled(redis.url(), "phantom").await;
    let start = SystemTime::now();
    let acquire =
        |ms: u64| backend.try_acquire(start + Duration::from_millis(ms), Priority::Interactive);
    assert!(acquire(0).await.unwrap().is_ok());
    assert!(acquire(10).await.unwrap().is_ok());

    let mut connection = raw_connection(redis.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*phantom*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let count_key = keys
        .iter()
        .find(|k| k.contains(":p:"))
        .expect("the process's count");
    let mut window_key = None;
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        if kind == "list" {
            window_key = Some(key.clone());
        }
    }
    let window_key = window_key.expect("the rolling window's list");
    // The lost reply's charge: the server counts one more than the process was told of.
    let _: redis::Value = redis::cmd("INCR")
        .arg(count_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(acquire(20).await.unwrap().is_ok());

    // A failover loses that last charge: the count and the window's newest entry.
    let _: redis::Value = redis::cmd("DECR")
        .arg(count_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("RPOP")
        .arg(&window_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    // Seen: the charge is re-asserted and the decision held for the others to re-assert.
    let now = start + Duration::from_millis(30);
    let refused = acquire(30).await.unwrap().unwrap_err();
    assert!(
        refused.wait_time_from(now) <= Duration::from_millis(50),
        "{refused:?}"
    );
    assert_eq!(backend.status(now).await.unwrap().rules[0].remaining, 7);
}

/// A process idle for longer than every rule finds its count expired: it re-asserts, but
/// nothing it re-asserts is within a rule any more, so nobody's decisions are held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waking_from_a_long_idle_holds_nobody() {
    let redis = TestRedis::private();
    let backend = journaled(redis.url(), "sleeper").await;
    let start = SystemTime::now();
    for ms in [0, 10] {
        let at = start + Duration::from_millis(ms);
        assert!(
            backend
                .try_acquire(at, Priority::Interactive)
                .await
                .unwrap()
                .is_ok()
        );
    }
    let mut connection = raw_connection(redis.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*sleeper*:p:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    // Two minutes later the count has expired (as Redis expires it after the longest rule).
    let _: redis::Value = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut connection)
        .await
        .unwrap();
    let later = start + Duration::from_secs(120);
    assert!(
        backend
            .try_acquire(later, Priority::Interactive)
            .await
            .unwrap()
            .is_ok(),
        "decided at once, not held"
    );
}

/// The requests the fallback released during an outage are charged to Redis with the next
/// decision; a caller that drops that decision midway (a timeout above the limiter) does not
/// lose them: the next decision charges them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_decision_keeps_the_outages_backlog() {
    let mut redis = TestRedis::private();
    let config = RateLimitConfig::builder()
        .rules([Rule::sliding(10_000, Duration::from_secs(1)).unwrap()])
        .application("dropped")
        .build()
        .unwrap();
    let backend = RedisRateLimitBackend::builder(&config)
        .fallback_percent(100)
        .retry_interval(Duration::from_millis(100))
        .failover_journal(false)
        .connect(redis.url())
        .await
        .unwrap();
    let now = SystemTime::now();
    assert!(
        backend
            .try_acquire(now, Priority::Interactive)
            .await
            .unwrap()
            .is_ok()
    );
    redis.stop();
    // After the first second's margin, the fallback releases.
    let later = now + Duration::from_secs(2);
    let _ = backend
        .try_acquire(now, Priority::Interactive)
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(
            backend
                .try_acquire(later, Priority::Interactive)
                .await
                .unwrap()
                .is_ok()
        );
    }
    assert_eq!(backend.unsynced(), 3);

    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while backend.status(later).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(backend.unsynced(), 3);
    // Redis holds every script for a second: the decision is dropped while it waits.
    let mut connection = raw_connection(redis.url()).await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_000)
        .arg("WRITE")
        .query_async(&mut connection)
        .await
        .unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        backend.try_acquire(later, Priority::Interactive),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the decision waited for Redis: {dropped:?}"
    );
    assert_eq!(
        backend.unsynced(),
        3,
        "the backlog is kept for the next decision"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        backend
            .try_acquire(later, Priority::Interactive)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(backend.unsynced(), 0);
}
