//! The `metrics` feature emits the stack's counters and gauges.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use drchrono_sim::{SimConfig, Simulator};
use drchrono_tower::DrChronoClient;
use drchrono_tower::ratelimit::{RateLimitConfig, RateLimiter};
use drchrono_tower::retry::RetryPolicy;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

#[derive(Debug, Default, Clone)]
struct Captured(Arc<Mutex<HashMap<String, f64>>>);

struct Slot(Captured, String);

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.0
            .0
            .lock()
            .unwrap()
            .insert(self.1.clone(), value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl Recorder for Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Slot(self.clone(), name(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Slot(self.clone(), name(key))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_attempts_retries_budget_and_token() {
    let sim = Simulator::new(SimConfig::default());
    let c = sim.credentials();
    let retry = RetryPolicy::builder()
        .first_delay(Duration::from_secs(1), Duration::from_secs(2))
        .build()
        .unwrap();
    let client = DrChronoClient::builder()
        .credentials(c.client_id, c.client_secret)
        .refresh_token(c.refresh_token)
        .base_url("https://sim.test")
        .token_url("https://sim.test/o/token/")
        .retry(retry)
        .build_with_transport(sim.router())
        .unwrap();
    sim.fail_next_api([http::StatusCode::SERVICE_UNAVAILABLE]);
    for id in 1..=3 {
        client.get(&format!("/api/patients/{id}")).await.unwrap();
    }
    let captured = Captured::default();
    let snapshot = client.layer().metrics().await;
    metrics::with_local_recorder(&captured, || snapshot.record());
    let values = captured.0.lock().unwrap().clone();
    assert_eq!(values["drchrono_requests_total"], 3.0);
    assert_eq!(values["drchrono_attempts_total"], 4.0);
    assert_eq!(values["drchrono_retries_total{reason=server_error}"], 1.0);
    assert_eq!(values["drchrono_retries_total{reason=throttled}"], 0.0);
    assert_eq!(values["drchrono_token_generation"], 2.0);
    let budgets: Vec<f64> = values
        .iter()
        .filter(|(k, _)| k.starts_with("drchrono_budget_remaining"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(budgets.len(), 3, "{values:?}");
    // Four attempts were charged to the hourly and 600 s rules.
    assert!(
        budgets.contains(&496.0) && budgets.contains(&286.0),
        "{values:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_each_tenants_permits() {
    let sim = Simulator::new(SimConfig::default());
    let c = sim.credentials();
    let client = DrChronoClient::builder()
        .credentials(c.client_id, c.client_secret)
        .refresh_token(c.refresh_token)
        .base_url("https://sim.test")
        .token_url("https://sim.test/o/token/")
        .tenant("practice-17")
        // 10:37 UTC: the retry's delay stays within the clock hour.
        .rate_limiter(
            RateLimiter::builder(RateLimitConfig::default())
                .start_at(UNIX_EPOCH + Duration::from_secs(1_767_609_420))
                .build(),
        )
        .build_with_transport(sim.router())
        .unwrap();
    sim.fail_next_api([http::StatusCode::SERVICE_UNAVAILABLE]);
    for id in 1..=2 {
        client.get(&format!("/api/patients/{id}")).await.unwrap();
    }
    let captured = Captured::default();
    let snapshot = client.layer().metrics().await;
    metrics::with_local_recorder(&captured, || snapshot.record());
    let values = captured.0.lock().unwrap().clone();
    // Two requests, one retried: three permits, each counted against the tenant.
    assert_eq!(
        values["drchrono_tenant_permits_total{tenant=practice-17}"],
        3.0
    );
    assert_eq!(
        values["drchrono_tenant_served_this_hour{tenant=practice-17}"],
        3.0
    );
    assert_eq!(values["drchrono_tenant_waiting{tenant=practice-17}"], 0.0);
}
