//! Acceptance: one simulated day of a heavy DrChrono job through the whole stack.
//!
//! 16 concurrent workers pull `GET /api/patients/{i}`, `i = 1..=20,000`, from a shared
//! counter and push them through [`DrChronoClient`] (retry, rate limit, OAuth refresh, error
//! classification) with the simulator's router as the transport: no socket, paused time, so
//! the simulated day runs in seconds. The simulator injects 2 % faults (500/502/503/504) and
//! issues 48 h tokens; the client starts from a refresh token only.
//!
//! **The hourly maximum is raised to 900** in both the simulator and the limiter, as DrChrono
//! does on request: at its default 500 an hour, 20,000 requests would take 40 hours. 900 is
//! below what the other two rules allow in an hour (290 per rolling 10 minutes caps an hour
//! at 1,740), so the hourly rule still binds every hour, and the run (about 20,400 attempts
//! with the retries, from 10:37 UTC) takes about 21.7 simulated hours.
//!
//! Checked: the simulator throttles nothing and its peak counters stay within every rule;
//! every request ends in a response or a typed error (a failure is a 5xx met on all four
//! attempts; the hours spent queued for the limiter's permit do not count against the retry
//! deadline);
//! one token refresh; the attempts the simulator received are the attempts the client sent;
//! no attempt went out earlier than an independent greedy schedule allows, and the makespan
//! is within 1 % of that optimum for the number of attempts actually sent.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use drchrono_sim::SimConfig;
use drchrono_tower::ratelimit::RateLimitConfig;
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{DrChronoClient, DrChronoError};
use http::StatusCode;
use tokio::time::Instant;

use support::{MONDAY_10_37_UTC, client_builder, limiter, record, simulator, utc};

const REQUESTS: u64 = 20_000;
const WORKERS: usize = 16;
/// DrChrono's per-second and 10-minute rules (not configurable at DrChrono).
const MAX_PER_SECOND: u32 = 9;
const MAX_PER_WINDOW: u32 = 290;
const WINDOW_MS: u64 = 600_000;
/// The raised hourly maximum (see the crate docs).
const MAX_PER_HOUR: u32 = 900;
const HOUR_MS: u64 = 3_600_000;
const FAULT_RATE: f64 = 0.02;

/// What one worker saw.
#[derive(Debug, Default)]
struct Outcome {
    succeeded: u64,
    failed: Vec<Failure>,
    last_answer: Option<Instant>,
}

/// A request that ended in an error.
#[derive(Debug)]
struct Failure {
    id: u64,
    error: DrChronoError,
}

/// The release instants (milliseconds after the start) of `n` requests all queued at the
/// start, each released at the earliest instant that breaks no rule, computed from a plain
/// log of the releases: at most 9 in any `(t - 1 s - margin, t]`, 290 in any
/// `(t - 600 s - margin, t]`, and `max_per_hour` per clock hour whose periods run from
/// `k * 3600 s + margin` (the limiter's documented semantics of its safety margin).
///
/// Releasing greedily is optimal for these rules: whatever schedule obeys them, its i-th
/// release is no earlier than the i-th one here (by induction on i: each rule's earliest
/// instant only grows with the earlier releases).
fn optimum_releases(n: usize, start_unix_ms: u64, max_per_hour: u32, margin_ms: u64) -> Vec<u64> {
    let second_span = 1_000 + margin_ms;
    let window_span = WINDOW_MS + margin_ms;
    let per_second = MAX_PER_SECOND as usize;
    let per_window = MAX_PER_WINDOW as usize;
    let period_of = |t: u64| (start_unix_ms + t - margin_ms) / HOUR_MS;
    let mut releases: Vec<u64> = Vec::with_capacity(n);
    let (mut period, mut in_period) = (u64::MAX, 0u32);
    for i in 0..n {
        let mut t = releases.last().copied().unwrap_or(0);
        loop {
            let mut earliest = t;
            if i >= per_second {
                earliest = earliest.max(releases[i - per_second] + second_span);
            }
            if i >= per_window {
                earliest = earliest.max(releases[i - per_window] + window_span);
            }
            let k = period_of(earliest);
            if k == period && in_period >= max_per_hour {
                earliest = (k + 1) * HOUR_MS + margin_ms - start_unix_ms;
            }
            if earliest == t {
                break;
            }
            t = earliest;
        }
        let k = period_of(t);
        if k != period {
            (period, in_period) = (k, 0);
        }
        in_period += 1;
        releases.push(t);
    }
    releases
}

async fn worker(client: DrChronoClient, next: Arc<AtomicU64>) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        let id = next.fetch_add(1, Ordering::Relaxed);
        if id > REQUESTS {
            return outcome;
        }
        let result = client.get(&format!("/api/patients/{id}")).await;
        outcome.last_answer = Some(Instant::now());
        match result {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK, "patient {id}");
                let patient: serde_json::Value = DrChronoClient::json(&response).unwrap();
                assert_eq!(patient["id"], id, "the answer is patient {id}'s");
                outcome.succeeded += 1;
            }
            Err(error) => outcome.failed.push(Failure { id, error }),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_simulated_day_of_20_000_requests_through_the_full_stack() {
    let wall = std::time::Instant::now();
    let start = utc(MONDAY_10_37_UTC);
    // The simulator and the limiter are created in the same (paused) instant, so their wall
    // clocks agree for the whole run.
    let sim = simulator(
        SimConfig::default()
            .max_per_hour(MAX_PER_HOUR)
            .fault_rate(FAULT_RATE)
            .seed(1),
        start,
    );
    let limits = RateLimitConfig::builder()
        .max_per_hour(MAX_PER_HOUR)
        .build()
        .unwrap();
    let margin = limits.safety_margin();
    let limiter = limiter(limits, start);
    let started = Instant::now();
    // DrChrono's retry advice as the defaults (3 retries, first delay 25-30 s, doubling,
    // jitter, budget, 30 min deadline); only the jitter is seeded, for a reproducible run.
    let policy = RetryPolicy::builder().seed(7).build().unwrap();
    let (transport, wire) = record(sim.router());
    let client = client_builder(&sim, limiter)
        .retry(policy)
        .build_with_transport(transport)
        .unwrap();

    let next = Arc::new(AtomicU64::new(1));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(client.clone(), next.clone())))
        .collect();
    let mut succeeded = 0;
    let mut failed = Vec::new();
    let mut last_answer = started;
    for worker in workers {
        let outcome = worker.await.unwrap();
        succeeded += outcome.succeeded;
        failed.extend(outcome.failed);
        last_answer = last_answer.max(outcome.last_answer.unwrap());
    }
    let stats = sim.stats();
    let retries = client.layer().retry_policy().stats();

    // Every request ended in a response or a typed error; the failures are rare 5xx.
    assert_eq!(succeeded + failed.len() as u64, REQUESTS);
    for Failure { id, error, .. } in &failed {
        assert!(
            matches!(error, DrChronoError::Server { .. }),
            "patient {id}: only 5xx may fail, got {error:?}"
        );
    }
    // A request fails only when its retries cannot cure a 5xx: four faults in a row (2 %^4,
    // about one in 160,000). The policy's 30 min deadline does not count the hours spent
    // queued for the limiter's permit, so no retry is lost to it.
    assert!(failed.len() <= 2, "{} requests failed", failed.len());
    assert_eq!(retries.budget_exhausted, 0, "{retries:?}");
    assert_eq!(retries.gave_up, failed.len() as u64, "{retries:?}");

    // The simulator throttled nothing, and no rule was ever exceeded.
    assert_eq!(
        (
            stats.throttled.second,
            stats.throttled.window,
            stats.throttled.hour
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.peak_second <= u64::from(MAX_PER_SECOND), "{stats:?}");
    assert!(stats.peak_window <= u64::from(MAX_PER_WINDOW), "{stats:?}");
    assert!(stats.peak_hour <= u64::from(MAX_PER_HOUR), "{stats:?}");
    assert_eq!(stats.unauthorized, 0, "{stats:?}");

    // One refresh (the first request, from the refresh token alone), plus one per 48 h.
    let makespan = last_answer - started;
    let expected_refreshes = 1 + makespan.as_secs() / (48 * 3600);
    assert_eq!(stats.token_refreshes, expected_refreshes, "{stats:?}");

    // The attempts the client sent are the attempts the simulator received: every request's
    // first attempt plus the policy's retries.
    let sent = wire.api();
    let attempts = stats.requests;
    assert_eq!(sent.len() as u64, attempts);
    assert_eq!(
        attempts,
        REQUESTS + retries.server_error_retries + retries.transport_retries,
        "{retries:?}"
    );
    assert_eq!(stats.accepted, attempts);
    assert!(
        stats.faults > 0 && stats.faults < attempts / 20,
        "{stats:?}"
    );

    // No attempt went earlier than the greedy optimum allows, and the makespan is within 1 %
    // of the optimum for that many attempts.
    let start_unix_ms =
        u64::try_from(start.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let margin_ms = u64::try_from(margin.as_millis()).unwrap();
    let optimum = optimum_releases(sent.len(), start_unix_ms, MAX_PER_HOUR, margin_ms);
    let mut sent_ms: Vec<u64> = sent
        .iter()
        .map(|e| u64::try_from((e.sent_at - started).as_millis()).unwrap())
        .collect();
    sent_ms.sort_unstable();
    for (i, (&actual, &best)) in sent_ms.iter().zip(&optimum).enumerate() {
        assert!(
            actual >= best,
            "attempt {i} went at {actual} ms, before the earliest instant the rules allow ({best} ms)"
        );
    }
    let optimum_makespan = Duration::from_millis(*optimum.last().unwrap());

    // Each failure used all 4 attempts.
    for Failure { id, .. } in &failed {
        let path = format!("/api/patients/{id}");
        let tries = sent.iter().filter(|e| e.path == path).count();
        assert_eq!(tries, 4, "patient {id} gave up after {tries} attempts");
    }
    let ratio = makespan.as_secs_f64() / optimum_makespan.as_secs_f64();

    println!(
        "day: {REQUESTS} requests, {succeeded} succeeded, {} failed (out of retries); \
         {attempts} attempts \
         ({} faults, {} retries); makespan {:.3} s ({:.2} h), optimum {:.3} s, ratio {ratio:.5}; \
         peaks {}/s {}/600s {}/h; {} refreshes; wall time {:.2?}",
        failed.len(),
        stats.faults,
        retries.server_error_retries,
        makespan.as_secs_f64(),
        makespan.as_secs_f64() / 3600.0,
        optimum_makespan.as_secs_f64(),
        stats.peak_second,
        stats.peak_window,
        stats.peak_hour,
        stats.token_refreshes,
        wall.elapsed(),
    );
    assert!(
        makespan >= optimum_makespan && ratio <= 1.01,
        "makespan {makespan:?} vs optimum {optimum_makespan:?}"
    );
    // The run is the day the test is about: 20 to 24 simulated hours.
    assert!(
        (20.0..=24.0).contains(&(makespan.as_secs_f64() / 3600.0)),
        "{makespan:?}"
    );
}
