//! Against `drchrono-sim` with a 30 % fault rate, under paused time, with the simulator's
//! router as the transport: every GET succeeds, and no attempt came sooner (or later) than
//! the policy's schedule allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_retry::{RetryBudget, RetryPolicy};
use drchrono_sim::{SimConfig, Simulator};
use http::{Request, StatusCode, header};
use http_body_util::Full;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

type Attempts = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

#[tokio::test(start_paused = true)]
async fn two_hundred_gets_through_faults_all_succeed_on_schedule() {
    // Throttling limits generous enough that no 429 occurs: this test is about 5xx.
    let sim = Simulator::new(
        SimConfig::default()
            .fault_rate(0.3)
            .max_per_second(1_000)
            .max_per_window(1_000_000)
            .max_per_hour(1_000_000)
            .seed(1),
    );
    let token = sim.reauthorize(None).access_token;

    // At a 30 % fault rate a request fails 4 attempts in a row with probability 0.3^4
    // (≈ 1.6 of 200 expected): DrChrono's 3 retries are sized for rare faults. Allow 8
    // (0.3^9 ≈ 2·10⁻⁵ per request), and a budget that covers the expected retry share
    // (0.3 / 0.7 ≈ 43 %, above the default 20 %, which would rightly fail some fast).
    let policy = RetryPolicy::builder()
        .max_retries(8)
        .budget(RetryBudget::new(Duration::from_secs(600), 1.0, 10).unwrap())
        .seed(11)
        .build()
        .unwrap();

    let attempts: Attempts = Arc::default();
    let record = {
        let attempts = attempts.clone();
        move |req: Request<Full<Bytes>>| {
            let id = req.uri().path().to_owned();
            attempts
                .lock()
                .unwrap()
                .entry(id)
                .or_default()
                .push(Instant::now());
            req
        }
    };
    let client = ServiceBuilder::new()
        .layer(policy.clone().layer())
        .map_request(record)
        .layer(ErrorClassifyLayer::new())
        .map_request(|req: Request<Full<Bytes>>| req.map(axum::body::Body::new))
        .service(sim.router());

    let mut tasks = JoinSet::new();
    for id in 1..=200u32 {
        let request = Request::get(format!("http://127.0.0.1/api/patients/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = client.clone();
        tasks.spawn(async move { client.oneshot(request).await });
    }
    let mut succeeded = 0;
    while let Some(joined) = tasks.join_next().await {
        let response = joined.unwrap().expect("every GET succeeds");
        assert_eq!(response.status(), StatusCode::OK);
        succeeded += 1;
    }
    assert_eq!(succeeded, 200);

    // Every gap between attempts of one request lies within the policy's bounds.
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts.len(), 200);
    let mut total = 0u64;
    let mut retried = 0;
    for (id, times) in attempts.iter() {
        total += times.len() as u64;
        retried += usize::from(times.len() > 1);
        for (k, gap) in times.windows(2).map(|w| w[1] - w[0]).enumerate() {
            let (lo, hi) = policy.backoff().bounds(k as u32 + 1);
            assert!(
                gap >= lo && gap <= hi,
                "{id}: retry {} after {gap:?}, allowed [{lo:?}, {hi:?}]",
                k + 1
            );
        }
    }
    // The simulator saw exactly these attempts; every retry followed one injected fault.
    let stats = sim.stats();
    assert_eq!(stats.requests, total);
    assert_eq!(stats.faults, total - 200);
    assert_eq!(stats.throttled.total(), 0);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(policy.stats().server_error_retries, total - 200);
    // The faults were real: a share near 30 % of attempts, and some requests needed
    // several retries.
    assert!(retried > 30, "only {retried} requests were retried");
    assert!(attempts.values().any(|t| t.len() >= 3));
}
