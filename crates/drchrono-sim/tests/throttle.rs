//! The three throttling rules at their exact boundaries, under paused time.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use support::{Http, Reply, SimConfig, spawn};
use tokio::time::advance;

fn assert_throttled(reply: &Reply, secs: u64) {
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let unit = if secs == 1 { "second" } else { "seconds" };
    assert_eq!(
        reply.detail(),
        format!("Request was throttled. Expected available in {secs} {unit}.")
    );
    assert_eq!(reply.header("retry-after"), Some(secs.to_string().as_str()));
}

/// 2026-01-05 at the given UTC time of day.
fn utc(h: u64, m: u64, s: u64) -> SystemTime {
    // 2026-01-05T00:00:00Z
    UNIX_EPOCH + Duration::from_secs(1_767_571_200 + h * 3600 + m * 60 + s)
}

#[tokio::test(start_paused = true)]
async fn tenth_call_in_a_second_is_throttled_for_one_second() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for _ in 0..9 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK
        );
    }
    assert_throttled(&http.get("/api/users/current", &token).await, 1);
    advance(Duration::from_millis(999)).await;
    assert_throttled(&http.get("/api/users/current", &token).await, 1);
    advance(Duration::from_millis(1)).await;
    // Exactly one second after the first: it has left the window (DRF drops `<= now - 1 s`).
    assert_eq!(
        http.get("/api/users/current", &token).await.status,
        StatusCode::OK
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.accepted, stats.throttled.second, stats.peak_second),
        (10, 2, 9)
    );
}

#[tokio::test(start_paused = true)]
async fn rolling_window_rule_at_its_boundary() {
    let config = SimConfig::default()
        .max_per_second(100)
        .max_per_window(20)
        .window(Duration::from_secs(60));
    let sim = spawn(config).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for i in 0..20 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK,
            "{i}"
        );
        advance(Duration::from_millis(100)).await;
    }
    // Now t = 2 s; the first request (t = 0) leaves the window at t = 60 s.
    assert_throttled(&http.get("/api/users/current", &token).await, 58);
    advance(Duration::from_millis(57_500)).await;
    assert_throttled(&http.get("/api/users/current", &token).await, 1);
    advance(Duration::from_millis(499)).await;
    assert_throttled(&http.get("/api/users/current", &token).await, 1);
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        http.get("/api/users/current", &token).await.status,
        StatusCode::OK
    );
    assert_throttled(&http.get("/api/users/current", &token).await, 1);
    let stats = sim.stats();
    assert_eq!(stats.throttled.window, 4);
    assert_eq!(stats.peak_window, 20);
}

#[tokio::test(start_paused = true)]
async fn hourly_budget_resets_at_the_top_of_the_utc_hour() {
    let config = SimConfig::default()
        .max_per_hour(5)
        .start_at(utc(10, 59, 58));
    let sim = spawn(config).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for _ in 0..5 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK
        );
    }
    assert_throttled(&http.get("/api/users/current", &token).await, 2);
    advance(Duration::from_millis(1_999)).await;
    assert_throttled(&http.get("/api/users/current", &token).await, 1);
    advance(Duration::from_millis(1)).await;
    // 11:00:00 exactly: a new hour, two seconds after the first request, not an hour.
    for _ in 0..5 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK
        );
    }
    assert_throttled(&http.get("/api/users/current", &token).await, 3600);
    let stats = sim.stats();
    assert_eq!((stats.throttled.hour, stats.peak_hour), (3, 5));
}

#[tokio::test(start_paused = true)]
async fn hour_does_not_reset_one_hour_after_the_first_request() {
    let config = SimConfig::default()
        .max_per_hour(3)
        .start_at(utc(10, 30, 0));
    let sim = spawn(config).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for _ in 0..3 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK
        );
    }
    assert_throttled(&http.get("/api/users/current", &token).await, 1800);
    // 11:00:00 opens a new hour; by 11:30:00 (one hour after the first request) it is spent.
    advance(Duration::from_secs(1800)).await;
    for _ in 0..3 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK
        );
    }
    advance(Duration::from_secs(1800)).await;
    assert_throttled(&http.get("/api/users/current", &token).await, 1800);
}

#[tokio::test(start_paused = true)]
async fn throttled_requests_are_not_counted_by_the_rule_that_refused_them() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for _ in 0..9 {
        http.get("/api/users/current", &token).await;
    }
    for _ in 0..20 {
        assert_throttled(&http.get("/api/users/current", &token).await, 1);
    }
    advance(Duration::from_secs(1)).await;
    for _ in 0..9 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::OK
        );
    }
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.throttled.second), (18, 20));
}

#[tokio::test(start_paused = true)]
async fn a_request_refused_by_one_rule_still_spends_the_others() {
    // As DRF: every throttle is asked; the ones that allowed a refused request record it.
    let config = SimConfig::default()
        .max_per_second(2)
        .max_per_window(5)
        .window(Duration::from_secs(10));
    let sim = spawn(config).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http.get("/api/users/current", &token).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    advance(Duration::from_secs(1)).await;
    // The window holds 4 (2 accepted + 2 refused by the second rule): one more fits.
    assert_eq!(
        http.get("/api/users/current", &token).await.status,
        StatusCode::OK
    );
    let reply = http.get("/api/users/current", &token).await;
    assert_throttled(&reply, 9);
}

#[tokio::test(start_paused = true)]
async fn unauthorized_and_forbidden_requests_spend_no_budget() {
    let sim = spawn(SimConfig::default().max_per_second(2)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let read_only = sim.simulator().reauthorize(Some("user:read"));
    // The reauthorisation revoked `token`: these are 401s.
    for _ in 0..5 {
        assert_eq!(
            http.get("/api/users/current", &token).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..5 {
        let reply = http.get("/api/patients/1", &read_only.access_token).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    for _ in 0..2 {
        let reply = http
            .get("/api/users/current", &read_only.access_token)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}
