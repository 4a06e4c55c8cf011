//! The four layers composed by hand with `tower::ServiceBuilder` on a plain hyper-util
//! client: the library side of the `hyper` example.
//!
//! `DrChronoLayer` does this composition for you; doing it by hand shows each part and
//! where it goes, outermost first:
//!
//! ```text
//! tower::retry::Retry<RetryPolicy>   every attempt goes back through the layers below
//!  └ DrChronoRateLimit               waits for a permit of the shared budget; 429 pauses all
//!     └ OAuthRefresh                 attaches the token; refreshes; marks curable 401s
//!        └ ErrorClassify             error responses -> typed DrChronoError
//!           └ hyper_util Client      plain HTTP/1 to the embedded drchrono-sim
//! ```
//!
//! [`run`] drives it through the behaviours of DrChrono's error guidance against an embedded
//! simulator and reports one [`Check`](crate::checks::Check) per behaviour.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use drchrono_sim::{DOCTOR_ID, SimConfig};
use drchrono_tower::DrChronoError;
use drchrono_tower::classify::{ErrorClassify, ErrorClassifyLayer};
use drchrono_tower::oauth::{
    ClientCredentials, OAuthRefresh, OAuthRefreshLayer, TokenClient, TokenManager, TokenSet,
};
use drchrono_tower::ratelimit::{
    DrChronoRateLimit, DrChronoRateLimitLayer, RateLimitConfig, RateLimiter,
};
use drchrono_tower::retry::RetryPolicy;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::retry::{Retry, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

use crate::Error;
use crate::checks::Report;

/// An answer through the stack: the status and the whole body, or the typed error.
type Outcome = Result<(StatusCode, Bytes), DrChronoError>;

/// The stack's type, spelled out: what `DrChronoLayer` builds, composed by hand.
pub type HandStack = Retry<
    RetryPolicy,
    DrChronoRateLimit<OAuthRefresh<ErrorClassify<Client<HttpConnector, Full<Bytes>>>>>,
>;

/// Sends one request through `stack` (a clone: each request gets its own, as tower expects).
async fn send(stack: &HandStack, method: Method, url: String, json: Option<&Value>) -> Outcome {
    let mut request = Request::builder().method(method).uri(url);
    let body = match json {
        Some(value) => {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(body))
        .map_err(|e| DrChronoError::Transport {
            not_sent: true,
            source: Box::new(e),
            context: Box::default(),
        })?;
    let response = stack.clone().oneshot(request).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| DrChronoError::Decode {
            source: Box::new(e),
            context: Box::default(),
        })?;
    Ok((status, body.to_bytes()))
}

/// What an outcome was, for printing: a status, or the error's kind and message (DrChrono's
/// message and the crate's hint; never a body or a token).
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Ok((status, _)) => status.to_string(),
        Err(error) => format!("{}: {error}", error.kind_name()),
    }
}

/// Builds the stack by hand against an embedded simulator, runs every behaviour, and reports.
///
/// # Errors
/// When the simulator cannot start or a configuration is refused; a misbehaving stack is a
/// failed check in the report, not an error.
pub async fn run() -> Result<Report, Error> {
    let sim = drchrono_sim::spawn(SimConfig::default()).await?;
    let credentials = sim.credentials();
    let base = sim.base_url();

    // The transport: hyper-util's pooled HTTP/1 client, nothing DrChrono-specific.
    let transport = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // The token family: refreshed through the same transport, starting from a refresh token.
    let token_client = TokenClient::new(
        transport.clone(),
        ClientCredentials::new(credentials.client_id, credentials.client_secret),
    )
    .token_url(sim.token_url().parse()?);
    let tokens = TokenManager::builder(token_client)
        .initial_tokens(TokenSet::from_refresh_token(credentials.refresh_token))
        .build();

    // DrChrono's three rules, one budget shared by every clone of the stack.
    let limiter = RateLimiter::new(RateLimitConfig::default());
    // DrChrono's schedule scaled down 200x (25-30 s -> 125-150 ms) so the demo is quick.
    let policy = RetryPolicy::builder()
        .first_delay(Duration::from_millis(125), Duration::from_millis(150))
        .seed(7)
        .build()?;

    let stack: HandStack = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .layer(DrChronoRateLimitLayer::new(limiter.clone()))
        .layer(OAuthRefreshLayer::new(tokens.clone()))
        .layer(ErrorClassifyLayer::new().not_sent(drchrono_tower::not_sent))
        .service(transport);

    let mut report = Report::default();
    let url = |path: &str| format!("{base}{path}");

    let me = send(&stack, Method::GET, url("/api/users/current"), None).await;
    let refreshes = sim.stats().token_refreshes;
    report.record(
        "first_call_refreshes",
        matches!(me, Ok((StatusCode::OK, _))) && refreshes == 1,
        format!("{} (token refreshes: {refreshes})", describe(&me)),
    );

    let started = Instant::now();
    let burst = (1..=12).map(|id| {
        send(
            &stack,
            Method::GET,
            url(&format!("/api/patients/{id}")),
            None,
        )
    });
    let burst = futures::future::join_all(burst).await;
    let ok = burst
        .iter()
        .filter(|o| matches!(o, Ok((StatusCode::OK, _))))
        .count();
    let stats = sim.stats();
    let throttled = stats.throttled.total();
    report.record(
        "limiter_paces_burst",
        ok == 12 && throttled == 0 && stats.peak_second <= 9,
        format!(
            "{ok}/12 ok in {:.2} s; server peak {}/s, {throttled} throttled",
            started.elapsed().as_secs_f64(),
            stats.peak_second
        ),
    );

    sim.simulator()
        .fail_next_api([StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT]);
    let recovered = send(&stack, Method::GET, url("/api/patients/13"), None).await;
    let retries = policy.stats().server_error_retries;
    report.record(
        "5xx_retried",
        matches!(recovered, Ok((StatusCode::OK, _))) && retries == 2,
        format!("{} after {retries} retries", describe(&recovered)),
    );

    let missing = send(&stack, Method::GET, url("/api/patients/999999999"), None).await;
    report.record(
        "404_typed",
        matches!(missing, Err(DrChronoError::NotFound { .. })),
        describe(&missing),
    );

    let patch = send(
        &stack,
        Method::PATCH,
        url("/api/patients"),
        Some(&json!({})),
    )
    .await;
    report.record(
        "405_typed",
        matches!(&patch, Err(DrChronoError::MethodNotAllowed { method, .. }) if method == Method::PATCH),
        describe(&patch),
    );

    let appointment = json!({
        "doctor": DOCTOR_ID, "patient": 7, "office": 1, "exam_room": 1,
        "scheduled_time": "2026-01-05T10:00:00", "duration": 30,
    });
    let created = send(
        &stack,
        Method::POST,
        url("/api/appointments"),
        Some(&appointment),
    )
    .await;
    let created_id = created
        .as_ref()
        .ok()
        .and_then(|(_, body)| serde_json::from_slice::<Value>(body).ok())
        .and_then(|v| v["id"].as_u64());
    let overlap = send(
        &stack,
        Method::POST,
        url("/api/appointments"),
        Some(&appointment),
    )
    .await;
    report.record(
        "409_overlapping_id",
        created_id.is_some()
            && matches!(&overlap, Err(DrChronoError::AppointmentConflict { overlapping_id, .. }) if *overlapping_id == created_id),
        describe(&overlap),
    );

    // The user authorises the application again elsewhere: every earlier token is revoked.
    let fresh = sim.simulator().reauthorize(None);
    let revoked = send(&stack, Method::GET, url("/api/users/current"), None).await;
    report.record(
        "reauthorization_required",
        matches!(revoked, Err(DrChronoError::ReauthorizationRequired { .. })),
        describe(&revoked),
    );
    let expires_at = SystemTime::now() + Duration::from_secs(fresh.expires_in);
    tokens
        .set_tokens(TokenSet::new(
            fresh.access_token,
            fresh.refresh_token,
            expires_at,
        ))
        .await?;
    let resumed = send(&stack, Method::GET, url("/api/users/current"), None).await;
    report.record(
        "resumes_after_set_tokens",
        matches!(resumed, Ok((StatusCode::OK, _))),
        describe(&resumed),
    );

    let status = limiter.status().await?;
    let remaining: Vec<u32> = status.rules.iter().map(|r| r.remaining).collect();
    let stats = sim.stats();
    report.record(
        "budget_accounted",
        stats.throttled.total() == 0,
        format!(
            "server accepted {}, limiter remaining per rule {remaining:?}, retries {:?}",
            stats.accepted,
            policy.stats().retries
        ),
    );
    sim.shutdown().await?;
    Ok(report)
}
