//! The retry budget stops a retry storm of 5xx retries, and leaves 429 waits alone.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_retry::{RetryBudget, RetryPolicy};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tower::retry::budget::TpsBudget;
use tower::{Service, ServiceBuilder, ServiceExt};

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
        .custom_budget(TpsBudget::new(Duration::from_secs(10), 0, 0.5))
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

/// What the stand-in below answers at once.
type Reply = Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// A DrChrono stand-in that answers each request (told apart by its path) with a 429 with
/// `Retry-After: 2`, a 429 whose only hint is DRF's body, a 503, then 200: raw responses,
/// read by the classifier as in the real stack.
fn two_cool_downs_then_a_503() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = Reply,
> + Clone {
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let attempt = {
            let mut attempts = attempts.lock().unwrap();
            let n = attempts.entry(req.uri().path().to_owned()).or_default();
            *n += 1;
            *n
        };
        let throttled = |seconds: &str| {
            Full::new(Bytes::from(format!(
                r#"{{"detail":"Request was throttled. Expected available in {seconds}."}}"#
            )))
        };
        let response = match attempt {
            1 => Response::builder()
                .status(429)
                .header("retry-after", "2")
                .body(throttled("2 seconds")),
            2 => Response::builder().status(429).body(throttled("1 second")),
            3 => Response::builder()
                .status(503)
                .body(Full::new(Bytes::new())),
            _ => Response::builder().body(Full::new(Bytes::new())),
        };
        std::future::ready(Ok(response.unwrap()))
    })
}

/// Issue 12's acceptance line: 6 requests each meet two 429 cool-downs and one 503 with a
/// budget of 2 tokens; all 6 succeed. The budget allows 2 retries a minute and nothing
/// more; the requests come in three pairs, a minute apart, and the two of a pair share
/// each cool-down. Only the 503 retries draw from the budget, so each pair's two fit. When
/// 429 retries drew from it too, each pair spent both tokens on its first cool-down and
/// both requests failed at the second with their 429.
#[tokio::test(start_paused = true)]
async fn requests_that_wait_out_429s_keep_the_budget_for_5xx() {
    let minute = Duration::from_secs(60);
    let budget = Arc::new(RetryBudget::new(minute, 0.0, 2).unwrap());
    let policy = RetryPolicy::builder()
        .shared_budget(budget.clone())
        .seed(12)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(policy.clone().layer())
        .layer(ErrorClassifyLayer::new())
        .service(two_cool_downs_then_a_503());

    let start = Instant::now();
    let mut succeeded = 0;
    for pair in 0..3u32 {
        sleep_until(start + minute * pair).await;
        assert_eq!(budget.available(), 2, "pair {pair} starts with 2 tokens");
        let mut tasks = JoinSet::new();
        for id in [2 * pair + 1, 2 * pair + 2] {
            let svc = svc.clone();
            let req = Request::get(format!("https://app.drchrono.com/api/patients/{id}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            tasks.spawn(async move { svc.oneshot(req).await });
        }
        while let Some(joined) = tasks.join_next().await {
            let response = joined.unwrap().expect("every request succeeds");
            assert_eq!(response.status(), StatusCode::OK);
            succeeded += 1;
        }
        // The pair's two 503 retries took both tokens; its four 429 retries took none.
        assert_eq!(budget.available(), 0, "pair {pair}");
        // Each request waited 2 s, 1 s, then 25-30 s of backoff: done within the minute.
        assert!(start.elapsed() < minute * (pair + 1));
    }
    assert_eq!(succeeded, 6);
    let stats = policy.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.throttled_retries, 12);
    assert_eq!(stats.server_error_retries, 6);
    assert_eq!(stats.retries, 18);
    assert_eq!((stats.budget_exhausted, stats.gave_up), (0, 0));
}
