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
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
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

/// A histogram keeps `<name>#count` and `<name>#sum`.
impl HistogramFn for Slot {
    fn record(&self, value: f64) {
        let mut values = self.0.0.lock().unwrap();
        *values.entry(format!("{}#count", self.1)).or_default() += 1.0;
        *values.entry(format!("{}#sum", self.1)).or_default() += value;
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
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Slot(self.clone(), name(key))))
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

/// Each request's `http.client.request.duration`, in seconds, retries and waits included,
/// with OpenTelemetry's low-cardinality labels: no path, no query, no id.
#[test]
fn each_request_records_its_duration_with_opentelemetrys_labels() {
    let captured = Captured::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&captured, || {
        runtime.block_on(async {
            let sim = Simulator::new(SimConfig::default());
            let c = sim.credentials();
            let retry = RetryPolicy::builder()
                .first_delay(Duration::from_secs(2), Duration::from_secs(2))
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
            // A 503, retried 2 s later: one request of 2 s.
            sim.fail_next_api([http::StatusCode::SERVICE_UNAVAILABLE]);
            client
                .get("/api/patients/1?last_name=Lovelace")
                .await
                .unwrap();
            // A path Django does not know: a typed 404.
            assert!(client.get("/api/nowhere").await.is_err());
        });
    });
    let values = captured.0.lock().unwrap().clone();
    let ok = "http.client.request.duration{http.request.method=GET,server.address=sim.test,\
              http.response.status_code=200}";
    assert_eq!(values[&format!("{ok}#count")], 1.0, "{values:?}");
    let seconds = values[&format!("{ok}#sum")];
    assert!((2.0..2.1).contains(&seconds), "{seconds}");
    let not_found = "http.client.request.duration{http.request.method=GET,\
                     server.address=sim.test,http.response.status_code=404,error.type=not_found}";
    assert_eq!(values[&format!("{not_found}#count")], 1.0, "{values:?}");
    // No patient data and no path in any key.
    assert!(
        values
            .keys()
            .all(|key| !key.contains("Lovelace") && !key.contains("/api"))
    );
}
