//! Shared helpers of the end-to-end tests: a simulator and a rate limiter anchored at the same
//! fixed wall-clock instant, the whole drchrono-tower stack over the simulator's router (no
//! socket, so paused time runs simulated hours in seconds), and a wire log of every exchange.

#![allow(
    dead_code,
    reason = "each test binary uses the subset of the helpers it needs"
)]

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use drchrono_sim::{DOCTOR_ID, SimConfig, Simulator, TokenResponse};
use drchrono_tower::oauth::TokenSet;
use drchrono_tower::ratelimit::{RateLimitConfig, RateLimiter};
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{DrChronoClient, DrChronoClientBuilder};
use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tower::{Service, ServiceExt};

/// The API base URL the client is given. The router ignores the host: any absolute URL works.
/// `https`, as in production: the client refuses plain `http` to a host that is not loopback,
/// and upgrades the simulator's `http://` `next` links on this host to `https`.
pub(crate) const BASE_URL: &str = "https://drchrono.sim";

/// 2026-01-05T10:37:00Z (a Monday), as the `plan` example starts.
pub(crate) const MONDAY_10_37_UTC: u64 = 1_767_609_420;

/// The wall-clock instant `unix_secs` seconds after the Unix epoch.
pub(crate) fn utc(unix_secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs)
}

/// A simulator whose wall clock reads `start` now (tokio's clock, paused or not).
pub(crate) fn simulator(config: SimConfig, start: SystemTime) -> Simulator {
    Simulator::new(config.start_at(start))
}

/// A rate limiter whose wall clock reads `start` now. Created in the same instant as the
/// simulator, both clocks read the same wall time for the whole test.
pub(crate) fn limiter(config: RateLimitConfig, start: SystemTime) -> RateLimiter {
    RateLimiter::builder(config).start_at(start).build()
}

/// A client builder for the simulator's application, starting from its refresh token only
/// (the first request refreshes it), with `limiter` as the rate limiter.
pub(crate) fn client_builder(sim: &Simulator, limiter: RateLimiter) -> DrChronoClientBuilder {
    let credentials = sim.credentials();
    DrChronoClient::builder()
        .credentials(credentials.client_id, credentials.client_secret)
        .refresh_token(credentials.refresh_token)
        .base_url(BASE_URL)
        .token_url(format!("{BASE_URL}/o/token/"))
        .rate_limiter(limiter)
}

/// A token pair the simulator granted, as the client keeps it. The OAuth layer measures the
/// remaining lifetime against the system clock, so the expiry is set from it.
pub(crate) fn token_set(granted: &TokenResponse) -> TokenSet {
    let now = SystemTime::now();
    TokenSet::new(
        granted.access_token.clone(),
        granted.refresh_token.clone(),
        now + Duration::from_secs(granted.expires_in),
    )
    .with_issued_at(now)
    .with_scope(granted.scope.clone())
}

/// One request the transport carried, and its answer.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    /// Tokio's clock when the request was handed to the transport.
    pub(crate) sent_at: Instant,
    /// The request method.
    pub(crate) method: Method,
    /// The request path.
    pub(crate) path: String,
    /// The answer's status.
    pub(crate) status: StatusCode,
    /// The answer's `Retry-After`, in seconds, when it had one.
    pub(crate) retry_after: Option<u64>,
}

impl Exchange {
    /// Whether this exchange was an API call (not the token endpoint).
    pub(crate) fn is_api(&self) -> bool {
        self.path.starts_with("/api/")
    }
}

/// Every exchange a [`Recorded`] transport carried, in the order the answers came.
#[derive(Debug, Clone, Default)]
pub(crate) struct WireLog {
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

impl WireLog {
    /// A copy of the exchanges so far.
    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        self.lock().clone()
    }

    /// The API exchanges so far.
    pub(crate) fn api(&self) -> Vec<Exchange> {
        self.lock().iter().filter(|e| e.is_api()).cloned().collect()
    }

    /// Forgets every exchange so far.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Exchange>> {
        self.exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A transport that hands every request to `inner` (the simulator's router) and logs the
/// exchange. It never fails on its own.
#[derive(Clone)]
pub(crate) struct Recorded<S> {
    inner: S,
    log: WireLog,
}

impl<S> fmt::Debug for Recorded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded").finish_non_exhaustive()
    }
}

/// Wraps `inner` in a [`Recorded`] transport; returns it with its log.
pub(crate) fn record<S>(inner: S) -> (Recorded<S>, WireLog) {
    let log = WireLog::default();
    (
        Recorded {
            inner,
            log: log.clone(),
        },
        log,
    )
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> Service<Request<B>> for Recorded<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: 'static,
{
    type Response = Response<RB>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<RB>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let log = self.log.clone();
        let sent_at = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let exchange = Exchange {
                sent_at,
                method,
                path,
                status: response.status(),
                retry_after,
            };
            log.lock().push(exchange);
            Ok(response)
        })
    }
}

/// A client over `sim`'s recorded router with DrChrono's default rules and retry policy
/// (jitter seeded), starting from the simulator's refresh token.
pub(crate) fn default_client(sim: &Simulator, start: SystemTime) -> (DrChronoClient, WireLog) {
    let (transport, wire) = record(sim.router());
    let client = client_builder(sim, limiter(RateLimitConfig::default(), start))
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();
    (client, wire)
}

/// DrChrono's retry advice (the defaults), with the jitter seeded for reproducible runs.
pub(crate) fn seeded_policy() -> RetryPolicy {
    RetryPolicy::builder().seed(3).build().unwrap()
}

/// An appointment body for `POST /api/appointments`: 30 minutes with the simulator's
/// doctor and patient 7, in office 1.
pub(crate) fn appointment(exam_room: u64, scheduled_time: &str) -> Value {
    json!({
        "doctor": DOCTOR_ID, "patient": 7, "office": 1, "exam_room": exam_room,
        "scheduled_time": scheduled_time, "duration": 30,
    })
}

/// `GET path` straight to the router, as another program of the same application would.
pub(crate) async fn raw_get(sim: &Simulator, path: &str, access_token: &str) -> StatusCode {
    let request = Request::get(format!("{}{path}", BASE_URL))
        .header(AUTHORIZATION, format!("Bearer {access_token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    sim.router().oneshot(request).await.unwrap().status()
}

/// Workers sending one `GET` each `every` for `rounds` rounds; every answer must be a 200.
pub(crate) async fn steady_traffic(
    client: &DrChronoClient,
    workers: u64,
    rounds: u64,
    every: Duration,
) {
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let client = client.clone();
        tasks.spawn(async move {
            for round in 0..rounds {
                let id = 1 + worker * rounds + round;
                let response = client.get(&format!("/api/patients/{id}")).await;
                let response = response.unwrap_or_else(|e| panic!("patient {id}: {e:?}"));
                assert_eq!(response.status(), StatusCode::OK);
                sleep(every).await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
}
