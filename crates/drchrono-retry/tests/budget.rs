//! The retry budget stops a retry storm.

mod support;

use std::time::Duration;

use drchrono_retry::{RetryBudget, RetryPolicy};
use http::Method;
use support::*;
use tokio::task::JoinSet;
use tower::retry::budget::TpsBudget;
use tower::{ServiceBuilder, ServiceExt};

/// A server that answers every attempt with a 503.
fn outage() -> Script {
    Script::new((0..100_000).map(|_| server_error(503)).collect())
}

#[tokio::test(start_paused = true)]
async fn a_burst_against_an_outage_stays_within_the_share() {
    let script = outage();
    // 20 % of first attempts plus 10 retries per 10 minutes.
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::new(Duration::from_secs(600), 0.2, 10).unwrap())
        .seed(5)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(policy.clone().layer())
        .service(script.service());

    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(request(Method::GET)).await });
    }
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().is_err());
        failed += 1;
    }
    assert_eq!(failed, 100);
    // Without the budget: 100 × 4 = 400 attempts. With it: 100 + 10 + 20 % of 100.
    assert_eq!(script.attempts(), 130);
    let stats = policy.stats();
    assert_eq!(stats.retries, 30);
    // 70 refused their first retry; the 30 that got one were refused their second.
    assert_eq!(stats.budget_exhausted, 100);
    // Every retry kept DrChrono's schedule: the whole storm was over within 3.5 min.
    assert!(
        script
            .offsets()
            .iter()
            .all(|t| *t <= Duration::from_secs(210))
    );
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_against_an_outage_stays_within_the_share() {
    let script = outage();
    let window = Duration::from_secs(600);
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::new(window, 0.2, 10).unwrap())
        .seed(6)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(policy.clone().layer())
        .service(script.service());

    // One request every 2 s for 30 minutes (DrChrono's "2-second sleep").
    let requests = 900u64;
    let mut tasks = JoinSet::new();
    for _ in 0..requests {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(request(Method::GET)).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().is_err());
    }
    let retries = script.attempts() as u64 - requests;
    assert_eq!(policy.stats().retries, retries);
    // Over 30 min (+ the last retries) the window rolls about four times: at most 20 % of
    // the first attempts plus the reserve of each window.
    let windows = 5;
    assert!(
        retries <= requests / 5 + 10 * windows,
        "{retries} retries for {requests} requests"
    );
    // And far below the 3 per request that max retries alone would allow.
    assert!(retries < requests);
}

#[tokio::test(start_paused = true)]
async fn any_tower_budget_can_be_plugged_in() {
    let script = outage();
    // tower's TpsBudget: 10 s of deposits, no reserve, 50 %.
    let policy = RetryPolicy::builder()
        .budget(TpsBudget::new(Duration::from_secs(10), 0, 0.5))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(policy.clone().layer())
        .service(script.service());
    let mut tasks = JoinSet::new();
    for _ in 0..40 {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(request(Method::GET)).await });
    }
    while tasks.join_next().await.is_some() {}
    assert_eq!(script.attempts(), 60);
}
