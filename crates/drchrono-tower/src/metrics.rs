//! The `metrics` feature: the stack's counters and gauges through the `metrics` crate.

use std::time::SystemTime;

use drchrono_ratelimit::{Status, TenantStatus};
use drchrono_retry::RetryStats;

use crate::DrChronoLayer;

/// A snapshot of the stack's counters and gauges, taken by [`DrChronoLayer::metrics`]
/// (`DrChronoClient::layer().metrics()`) and emitted to the installed `metrics` recorder by
/// [`MetricsSnapshot::record`].
///
/// | metric | kind | labels |
/// |---|---|---|
/// | `drchrono_requests_total` | counter | |
/// | `drchrono_attempts_total` | counter | |
/// | `drchrono_retries_total` | counter | `reason`: `server_error`, `transport`, `throttled`, `unauthorized` |
/// | `drchrono_retry_budget_exhausted_total`, `drchrono_gave_up_total` | counter | |
/// | `drchrono_budget_remaining` | gauge | `rule`, e.g. `9 per 1s` |
/// | `drchrono_next_release_seconds` | gauge | seconds until the next request may go |
/// | `drchrono_throttle_pause_seconds` | gauge | seconds left of a server 429's pause |
/// | `drchrono_token_generation` | gauge | increments with each refresh (each token refresh) |
/// | `http.client.request.duration` | histogram, seconds | recorded by [`DrChronoService`](crate::DrChronoService) as each request ends (retries and waits included), with OpenTelemetry's labels: `http.request.method`, `server.address`, `http.response.status_code` (when there is one), `error.type` (on failure: the error's kind, or the status of an error response) |
/// | `drchrono_tenant_waiting` | gauge | `tenant`: requests of that tenant waiting for a permit |
/// | `drchrono_tenant_served_this_hour` | gauge | `tenant`: permits it was given this clock hour |
/// | `drchrono_tenant_permits_total` | counter | `tenant`: permits it was given |
///
/// The `tenant` metrics cover the [`Tenant`](drchrono_ratelimit::Tenant)s the limiter
/// serves ([`DrChronoApp`](crate::DrChronoApp) names one per user; `""` for requests that
/// name none), one series per tenant: a label per practice, so keep tenant keys to stable
/// ids.
///
/// The histogram is recorded as requests end; the rest, call [`record`](Self::record) for,
/// on an interval, e.g. from a task:
/// `loop { client.layer().metrics().await.record(); sleep(15 s) }`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// The retry policy's counters.
    pub retries: RetryStats,
    /// The limiter's status; `None` when its backend (Redis) could not be asked.
    pub limiter: Option<Status>,
    /// The current token generation, once tokens are loaded.
    pub token_generation: Option<u64>,
    /// Per tenant of the limiter: [`RateLimiter::tenants`](drchrono_ratelimit::RateLimiter::tenants).
    pub tenants: Vec<TenantStatus>,
}

impl DrChronoLayer {
    /// Takes a [`MetricsSnapshot`] of this stack.
    pub async fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            retries: self.retry_policy().stats(),
            limiter: self.rate_limiter().status().await.ok(),
            token_generation: self.token_manager().generation(),
            tenants: self.rate_limiter().tenants(),
        }
    }
}

fn seconds_until(at: SystemTime, now: SystemTime) -> f64 {
    at.duration_since(now).map_or(0.0, |d| d.as_secs_f64())
}

impl MetricsSnapshot {
    /// Emits every metric to the recorder installed for the current thread or process.
    pub fn record(&self) {
        let r = &self.retries;
        metrics::counter!("drchrono_requests_total").absolute(r.requests);
        metrics::counter!("drchrono_attempts_total").absolute(r.requests + r.retries);
        for (reason, value) in [
            ("server_error", r.server_error_retries),
            ("transport", r.transport_retries),
            ("throttled", r.throttled_retries),
            ("unauthorized", r.unauthorized_replays),
        ] {
            metrics::counter!("drchrono_retries_total", "reason" => reason).absolute(value);
        }
        metrics::counter!("drchrono_retry_budget_exhausted_total").absolute(r.budget_exhausted);
        metrics::counter!("drchrono_gave_up_total").absolute(r.gave_up);
        if let Some(limiter) = &self.limiter {
            let now = limiter.at;
            for rule in &limiter.rules {
                metrics::gauge!("drchrono_budget_remaining", "rule" => rule.rule.to_string())
                    .set(f64::from(rule.remaining));
            }
            metrics::gauge!("drchrono_next_release_seconds")
                .set(seconds_until(limiter.next_available, now));
            metrics::gauge!("drchrono_throttle_pause_seconds").set(
                limiter
                    .paused_until
                    .map_or(0.0, |until| seconds_until(until, now)),
            );
        }
        for tenant in &self.tenants {
            let key = tenant
                .tenant
                .as_ref()
                .map_or_else(String::new, |t| t.as_str().to_owned());
            metrics::gauge!("drchrono_tenant_waiting", "tenant" => key.clone())
                .set(tenant.waiting as f64);
            metrics::gauge!("drchrono_tenant_served_this_hour", "tenant" => key.clone())
                .set(f64::from(tenant.served_this_hour));
            metrics::counter!("drchrono_tenant_permits_total", "tenant" => key)
                .absolute(tenant.served);
        }
        if let Some(generation) = self.token_generation {
            // Generations are small integers: exact in an f64.
            metrics::gauge!("drchrono_token_generation").set(generation as f64);
        }
    }
}

/// One request's `http.client.request.duration`: started when [`DrChronoService`] was
/// called, recorded when its future ends.
///
/// [`DrChronoService`]: crate::DrChronoService
#[derive(Debug)]
pub(crate) struct RequestDuration {
    started: tokio::time::Instant,
    method: http::Method,
    authority: Option<http::uri::Authority>,
}

impl RequestDuration {
    #[inline]
    pub(crate) fn start<B>(request: &http::Request<B>) -> Self {
        Self {
            started: tokio::time::Instant::now(),
            method: request.method().clone(),
            authority: request.uri().authority().cloned(),
        }
    }

    /// Records the duration with OpenTelemetry's HTTP client labels (low cardinality: no
    /// path, no query, no id).
    pub(crate) fn finish<B, E: drchrono_core::LayerError>(
        &self,
        outcome: &Result<http::Response<B>, E>,
    ) {
        let seconds = self.started.elapsed().as_secs_f64();
        let mut labels = vec![metrics::Label::new(
            "http.request.method",
            self.method.as_str().to_owned(),
        )];
        if let Some(authority) = &self.authority {
            labels.push(metrics::Label::new(
                "server.address",
                authority.host().to_owned(),
            ));
        }
        let (status, error) = crate::span::outcome_of(outcome);
        if let Some(status) = status {
            labels.push(metrics::Label::new(
                "http.response.status_code",
                status.as_str().to_owned(),
            ));
        }
        if let Some(error) = error {
            labels.push(metrics::Label::new("error.type", error.into_owned()));
        }
        metrics::histogram!("http.client.request.duration", labels).record(seconds);
    }
}
