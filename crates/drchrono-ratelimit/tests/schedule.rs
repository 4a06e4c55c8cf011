//! Paused-time tests of the layer's schedule: exact release instants, sharing among clones,
//! cancellation, timer rounding.

mod support;

use std::time::Duration;

use drchrono_ratelimit::{RateLimitConfig, RateLimiter, Rule};
use http::Request;
use support::{Log, assert_drchrono_rules, limiter, limiter_with, recorded, secs};
use tower::{Service, ServiceExt};

/// Queues `n` requests at the start, one task each, in order; returns the release offsets
/// by request index.
async fn queue(n: usize, limiter: &RateLimiter) -> Vec<Duration> {
    let log = Log::default();
    let service = recorded(limiter, &log);
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(service.clone().oneshot(Request::new(i))))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let by_index = log.by_index();
    assert_eq!(by_index.len(), n);
    by_index.into_iter().map(|(_, d)| d).collect()
}

fn released_by(offsets: &[Duration], t: f64) -> usize {
    offsets.iter().filter(|&&d| d <= secs(t)).count()
}

#[tokio::test(start_paused = true)]
async fn thousand_requests_from_10_37_are_released_at_the_earliest_instants() {
    let offsets = queue(1000, &limiter(0)).await;
    // First-come first-served, and exact to the millisecond.
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    assert!(offsets.iter().all(|d| d.subsec_nanos() % 1_000_000 == 0));
    // 10:37:00 + 32 s: 290 gone (9 per second, 2 in the 33rd second).
    assert_eq!(released_by(&offsets, 31.999), 288);
    assert_eq!(released_by(&offsets, 32.0), 290);
    // 10:47:00 - 10:47:23: the first entries leave the 10-minute window; 500 by 10:47:23.
    assert_eq!(released_by(&offsets, 599.999), 290);
    assert_eq!(offsets[290], secs(600.0));
    assert_eq!(released_by(&offsets, 623.0), 500);
    assert_eq!(offsets[499], secs(623.0));
    // Nothing more until 11:00:00 exactly (23 min after the start), then the new hour.
    assert_eq!(released_by(&offsets, 1379.999), 500);
    assert_eq!(offsets[500], secs(1380.0));
    assert_eq!(released_by(&offsets, 1380.0), 509);
    // All by 11:10:23: a makespan of 2003 s, the optimum.
    assert_eq!(offsets[999], secs(2003.0));
    assert_drchrono_rules(&offsets);
}

#[tokio::test(start_paused = true)]
async fn the_margin_opens_the_hour_late_and_widens_every_window() {
    let offsets = queue(520, &limiter(100)).await;
    // 9 per 1.1 s: the 10th goes 1.1 s after the first.
    assert_eq!(offsets[8], secs(0.0));
    assert_eq!(offsets[9], secs(1.1));
    // The 291st waits for the first to leave 600.1 s.
    assert_eq!(offsets[290], secs(600.1));
    assert!(offsets[499] < secs(1380.0));
    // The hour opens at 11:00:00.100.
    assert_eq!(offsets[500], secs(1380.1));
    assert_drchrono_rules(&offsets);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_tasks_on_clones_never_break_a_rule() {
    let limiter = limiter(0);
    let log = Log::default();
    let service = recorded(&limiter, &log);
    let tasks: Vec<_> = (0..100)
        .map(|task| {
            let mut clone = service.clone();
            tokio::spawn(async move {
                for i in 0..6 {
                    // Stagger the tasks a little, so arrivals interleave.
                    tokio::time::sleep(Duration::from_millis((task * 37 + i * 11) as u64 % 900))
                        .await;
                    let response = clone
                        .ready()
                        .await
                        .unwrap()
                        .call(Request::new(task * 6 + i));
                    response.await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let offsets = log.sorted_offsets();
    assert_eq!(offsets.len(), 600);
    assert_drchrono_rules(&offsets);
    // One shared budget: the clones together reached the hourly maximum, then waited for 11:00.
    assert_eq!(released_by(&offsets, 1379.999), 500);
    assert_eq!(offsets[500], secs(1380.0));
    assert_eq!(limiter.status().await.unwrap().rules[2].remaining, 400);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_charge_nothing_and_free_their_turns() {
    let limiter = limiter(0);
    let log = Log::default();
    let service = recorded(&limiter, &log);
    let tasks: Vec<_> = (0..30)
        .map(|i| tokio::spawn(service.clone().oneshot(Request::new(i))))
        .collect();
    // Let everyone queue: 9 go at once, request 9 holds the turn until 1 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log.by_index().len(), 9);
    // Cancel half of the waiters, the head among them.
    for (i, task) in tasks.iter().enumerate() {
        if i >= 9 && i % 2 == 1 {
            task.abort();
        }
    }
    let mut cancelled = 0;
    for task in tasks {
        match task.await {
            Ok(result) => drop(result.unwrap()),
            Err(e) if e.is_cancelled() => cancelled += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(cancelled, 11);
    let released = log.by_index();
    let after: Vec<_> = released.iter().filter(|(i, _)| *i >= 9).collect();
    // The 10 survivors: 9 at 1 s (the next in line took the freed turn), 1 at 2 s.
    assert_eq!(after.len(), 10);
    assert!(after.iter().all(|(i, _)| i % 2 == 0));
    assert_eq!(after.iter().filter(|(_, d)| *d == secs(1.0)).count(), 9);
    assert_eq!(after.iter().filter(|(_, d)| *d == secs(2.0)).count(), 1);
    // Only released requests were charged.
    assert_eq!(limiter.status().await.unwrap().rules[2].remaining, 500 - 19);
}

#[tokio::test(start_paused = true)]
async fn sub_millisecond_instants_round_up_to_the_timer_grid() {
    let rule = Rule::sliding(1, Duration::from_micros(1500)).unwrap();
    let limiter = limiter_with(
        RateLimitConfig::builder()
            .rules([rule])
            .safety_margin(Duration::ZERO),
    );
    let offsets = queue(3, &limiter).await;
    assert_eq!(offsets, [secs(0.0), secs(0.002), secs(0.004)]);
}

#[test]
fn threads_share_one_budget() {
    let config = RateLimitConfig::default();
    let limiter = std::sync::Arc::new(drchrono_ratelimit::LocalLimiter::new(&config));
    let now = support::start();
    let admitted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limiter = &limiter;
                scope.spawn(move || {
                    (0..1000)
                        .filter(|_| limiter.try_acquire(now).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 9);
}

#[tokio::test(start_paused = true)]
async fn shared_limiters_are_one_budget_per_application() {
    let config = |key: &str| RateLimitConfig::builder().application(key).build().unwrap();
    let a = RateLimiter::shared(config("shared-test-a"));
    let a_again = RateLimiter::shared(config("shared-test-a"));
    let b = RateLimiter::shared(config("shared-test-b"));
    a.acquire(drchrono_ratelimit::Priority::Interactive)
        .await
        .unwrap();
    assert_eq!(a_again.status().await.unwrap().rules[2].remaining, 499);
    assert_eq!(b.status().await.unwrap().rules[2].remaining, 500);
}
