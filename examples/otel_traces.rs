//! The stack's spans exported through OpenTelemetry: the library side of the `otel_stdout`
//! example.
//!
//! ```text
//! tracing spans of the stack ── tracing-opentelemetry ── SdkTracerProvider ── stdout exporter
//! ```
//!
//! [`run`] installs, for the current thread, a `tracing` subscriber whose only layer is
//! `tracing-opentelemetry` over an SDK tracer provider with two exporters: OpenTelemetry's
//! stdout exporter (the spans as an operator's collector would receive them, printed, no
//! network) and a collector kept in memory, which the checks read. It then sends one `GET`
//! through a `DrChronoClient` against an embedded simulator, inside an application span, so
//! that the request meets what the span tree is for:
//!
//! ```text
//! sync_patients                      the application's own span
//! ├── oauth.refresh                  the client starts from a refresh token: the stack is
//! │                                  made ready (and refreshes) before the GET span opens
//! └── GET                            http.client.request: method, server, url.path,
//!     │                              url.full (query values redacted), status, error.type
//!     ├── http.client.attempt        resend_count 0: a 429 (another user spent the second)
//!     ├── http.client.attempt        resend_count 1: a 503
//!     │   └── rate_limit.wait        until the server's Retry-After and the client's rule
//!     └── http.client.attempt        resend_count 2: the 200
//!         └── rate_limit.wait        drchrono.rate_limit.rule = sliding_1s
//! ```
//!
//! Run it on a current-thread runtime: the subscriber is the thread's default, and the
//! stack's spawned work (the refresh) must run on the same thread to be seen by it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use drchrono_sim::SimConfig;
use drchrono_tower::DrChronoClient;
use drchrono_tower::ratelimit::{RateLimitConfig, Rule};
use drchrono_tower::retry::RetryPolicy;
use http::StatusCode;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::Value;
use tracing::Instrument;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;

use crate::Error;
use crate::checks::Report;

/// A query value that identifies a patient: it must reach no exported span.
const PATIENT_NAME: &str = "Henrietta";

/// Keeps every exported span, for the checks.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl Collected {
    fn spans(&self) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }
}

/// One exported span's attribute, as text.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// One exported span's attribute, when it is an int (as OpenTelemetry's conventions type
/// ports, statuses and resend counts).
fn int_attribute(span: &SpanData, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match kv.value {
            opentelemetry::Value::I64(value) => Some(value),
            _ => None,
        })
}

/// The spans called `name` whose parent is `parent`.
fn children<'a>(spans: &'a [SpanData], parent: SpanId, name: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent && s.name == name)
        .collect()
}

/// Spends the application's second at the server with another user's token, the way
/// another process of the same application would; returns whether the server refused one.
async fn spend_the_second(base_url: &str, access_token: &str) -> Result<bool, Error> {
    let http = reqwest::Client::new();
    let url = format!("{base_url}/api/users/current");
    for _ in 0..20 {
        let answer = http.get(&url).bearer_auth(access_token).send().await?;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Sends one `GET` through the stack with its spans exported to stdout, and checks the
/// exported tree.
///
/// # Errors
/// When the simulator cannot start, a configuration is refused or the exporter fails to
/// shut down; a wrong span tree is a failed check in the report, not an error.
pub async fn run() -> Result<Report, Error> {
    let started = Instant::now();
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .with_simple_exporter(collected.clone())
        .build();
    // The stack's crates only: not the simulator's or the HTTP client's own spans.
    let targets = Targets::new()
        .with_target("drchrono_tower", LevelFilter::INFO)
        .with_target("drchrono_ratelimit", LevelFilter::INFO)
        .with_target("drchrono_oauth", LevelFilter::INFO)
        .with_target("examples", LevelFilter::INFO);
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("drchrono-tower"))
            .with_filter(targets),
    );
    let report = {
        let _default = tracing::subscriber::set_default(subscriber);
        send_and_check(&collected).await?
    };
    provider.shutdown()?;
    let mut report = report;
    report.record(
        "finished",
        true,
        format!("in {:.1} s", started.elapsed().as_secs_f64()),
    );
    Ok(report)
}

async fn send_and_check(collected: &Collected) -> Result<Report, Error> {
    let sim = drchrono_sim::spawn(SimConfig::default()).await?;
    let credentials = sim.credentials();
    // DrChrono's schedule (25-30 s, doubling) scaled down 250x so the demo is quick.
    let policy = RetryPolicy::builder()
        .first_delay(Duration::from_millis(100), Duration::from_millis(120))
        .seed(7)
        .build()?;
    // One request a second, so that the last attempt waits for a rule.
    let limits = RateLimitConfig::builder()
        .rules([Rule::sliding(1, Duration::from_secs(1))?])
        .build()?;
    let client = DrChronoClient::builder()
        .credentials(credentials.client_id, credentials.client_secret)
        .refresh_token(credentials.refresh_token)
        .base_url(sim.base_url())
        .token_url(sim.token_url())
        .rate_limit(limits)
        .retry(policy)
        .build()?;

    let other = sim.simulator().authorize_user("frontdesk", None);
    let refused = spend_the_second(&sim.base_url(), &other.access_token).await?;
    // The attempt after the 429 is answered 503.
    sim.simulator()
        .fail_next_api([StatusCode::SERVICE_UNAVAILABLE]);
    let path = format!("/api/patients?first_name={PATIENT_NAME}&since=2024-06-11");
    let outcome = client
        .get_json::<Value>(&path)
        .instrument(tracing::info_span!("sync_patients"))
        .await;
    let stats = sim.stats();
    sim.shutdown().await?;

    let mut report = Report::default();
    report.record(
        "request_succeeded",
        refused && outcome.is_ok(),
        format!(
            "GET {}: {} (server: {} requests, {} throttled, {} faults)",
            "/api/patients?first_name=…",
            if outcome.is_ok() { "200" } else { "failed" },
            stats.requests,
            stats.throttled.total(),
            stats.faults
        ),
    );
    check_tree(&collected.spans(), &mut report);
    Ok(report)
}

/// Checks the exported spans against the tree in the module's docs.
fn check_tree(spans: &[SpanData], report: &mut Report) {
    let Some(app) = spans.iter().find(|s| s.name == "sync_patients") else {
        report.record(
            "span_tree",
            false,
            format!("{} spans, no sync_patients", spans.len()),
        );
        return;
    };
    let app_id = app.span_context.span_id();
    let refreshes = children(spans, app_id, "oauth.refresh");
    let requests = children(spans, app_id, "GET");
    let Some(request) = requests.first() else {
        report.record("span_tree", false, "no GET span under sync_patients");
        return;
    };
    let request_id = request.span_context.span_id();
    report.record(
        "request_span",
        requests.len() == 1
            && attribute(request, "http.request.method").as_deref() == Some("GET")
            && attribute(request, "url.path").as_deref() == Some("/api/patients")
            && int_attribute(request, "http.response.status_code") == Some(200)
            && int_attribute(request, "server.port").is_some()
            && attribute(request, "server.address").as_deref() == Some("127.0.0.1"),
        format!(
            "GET status {:?} (int), url.full={}",
            int_attribute(request, "http.response.status_code"),
            attribute(request, "url.full").unwrap_or_default()
        ),
    );

    let mut attempts: Vec<(Option<i64>, &SpanData)> =
        children(spans, request_id, "http.client.attempt")
            .into_iter()
            .map(|s| (int_attribute(s, "http.request.resend_count"), s))
            .collect();
    attempts.sort_by_key(|(count, _)| *count);
    let counts: Vec<Option<i64>> = attempts.iter().map(|(count, _)| *count).collect();
    report.record(
        "three_attempts",
        counts == [Some(0), Some(1), Some(2)]
            && attempts
                .iter()
                .all(|(_, s)| s.span_kind == SpanKind::Client),
        format!("http.client.attempt resend_count {counts:?}, kind client"),
    );

    let waits: Vec<(Option<i64>, Option<String>)> = attempts
        .iter()
        .flat_map(|(count, attempt)| {
            children(spans, attempt.span_context.span_id(), "rate_limit.wait")
                .into_iter()
                .map(|wait| (*count, attribute(wait, "drchrono.rate_limit.rule")))
        })
        .collect();
    report.record(
        "limiter_wait_names_rule",
        waits
            .iter()
            .any(|(count, rule)| *count == Some(2) && rule.as_deref() == Some("sliding_1s")),
        format!("rate_limit.wait under attempts: {waits:?}"),
    );
    report.record(
        "refresh_span",
        refreshes.len() == 1,
        format!(
            "oauth.refresh spans under sync_patients: {}",
            refreshes.len()
        ),
    );

    let leaked: Vec<Cow<'_, str>> = spans
        .iter()
        .flat_map(|s| s.attributes.iter())
        .map(|kv| kv.value.as_str())
        .filter(|value| value.contains(PATIENT_NAME))
        .collect();
    let by_name = spans
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, s| {
            *m.entry(s.name.as_ref()).or_default() += 1;
            m
        });
    report.record(
        "no_phi",
        leaked.is_empty(),
        format!(
            "{} spans exported {by_name:?}; values naming the patient: {}",
            spans.len(),
            leaked.len()
        ),
    );
}
