//! The rate-limit and retry layers on a tonic `Channel`: the library side of the `tonic`
//! example. The layers are plain tower middleware over `http::Request`, so they work for
//! gRPC as well as for DrChrono's REST API.
//!
//! The client is tonic-health's generated `HealthClient` over this stack, outermost first:
//!
//! ```text
//! BufferRequestBody            tonic::body::Body -> Full<Bytes> (bounded, 4 MiB)
//!  └ Retry<RetryPolicy>        retries transport failures of requests marked Idempotent
//!     └ DrChronoRateLimit      a custom rule: at most 3 calls in any rolling second
//!        └ Full<Bytes> -> tonic::body::Body, then tonic's Channel (HTTP/2)
//! ```
//!
//! **Why the buffer.** `RetryPolicy` retries a request only when its body implements
//! `ReplayBody`; `tonic::body::Body` is a one-shot stream and does not, so over a bare
//! `Channel` the policy cannot even be named. `BufferRequestBody` reads each (unary or
//! server-streaming) request body into `Full<Bytes>` first, which replays. Client-streaming
//! calls would be held until their stream ends: do not put it under those.
//!
//! **What is retried.** gRPC answers errors with HTTP 200 and a `grpc-status`, so the
//! policy's status rules (5xx, 429) never fire; it sees transport failures (tonic's
//! `transport::Error`, which it cannot classify: enabled with `retry_unclassified_errors`)
//! and, since every gRPC call is a `POST`, retries only calls marked with the
//! `drchrono_retry::Idempotent` request extension (a health check is read-only).
//!
//! The server (tonic-health's `health_reporter()`) starts listening only after the first
//! call's first attempt was refused, so the run always shows one retried call, then several
//! calls paced by the limiter.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drchrono_tower::core::BoxError;
use drchrono_tower::ratelimit::{DrChronoRateLimitLayer, RateLimitConfig, Rule};
use drchrono_tower::retry::{Idempotent, RetryPolicy};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, oneshot};
use tonic::codegen::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tower::retry::RetryLayer;
use tower::{Layer, Service, ServiceBuilder};

use crate::Error;
use crate::checks::Report;

/// The largest request body [`BufferRequestBody`] reads: tonic's default message limit.
pub const BUFFER_LIMIT: usize = 4 * 1024 * 1024;

/// Reads a tonic request body into `Full<Bytes>` (at most [`BUFFER_LIMIT`]) so that the
/// retry policy below can replay it.
#[derive(Debug, Clone, Default)]
pub struct BufferRequestBodyLayer;

impl<S> Layer<S> for BufferRequestBodyLayer {
    type Service = BufferRequestBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferRequestBody { inner }
    }
}

/// The service of [`BufferRequestBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferRequestBody<S> {
    inner: S,
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for BufferRequestBody<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // Call the service that was polled ready, after the body is read; leave a clone.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = Limited::new(body, BUFFER_LIMIT).collect().await?.to_bytes();
            let request = http::Request::from_parts(parts, Full::new(bytes));
            ready.call(request).await.map_err(Into::into)
        })
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Calls after the first (retried) one, sent at once. Default 6.
    pub concurrent_calls: usize,
    /// The limiter's custom rule: at most this many calls in any rolling second. Default 3.
    pub per_second: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            concurrent_calls: 6,
            per_second: 3,
        }
    }
}

/// One `Check` call as the caller saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The service name asked about (`""` is the server as a whole).
    pub service: String,
    /// When the call was made, after the run's start.
    pub started: Duration,
    /// When the call returned, after the run's start.
    pub finished: Duration,
    /// `SERVING`, or the gRPC error code.
    pub outcome: String,
}

/// What the run did: its checks, every attempt's release by the limiter, every call.
#[derive(Debug, Clone)]
pub struct TonicReport {
    /// Pass/fail checks.
    pub report: Report,
    /// When the limiter released each attempt (retries included), after the run's start.
    pub attempts: Vec<Duration>,
    /// Every call, in the order they were made.
    pub calls: Vec<Call>,
}

fn check_request(service: &str) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    // A health check is read-only: safe to retry although gRPC sends it as a POST.
    request.extensions_mut().insert(Idempotent);
    request
}

/// Starts a tonic-health server on `127.0.0.1`, calls it through the stack, and reports.
///
/// # Errors
/// When a socket, the channel or a configuration cannot be made; misbehaviour of the stack
/// is a failed check, not an error.
pub async fn run(options: Options) -> Result<TonicReport, Error> {
    // Bound but not yet listening: connections are refused until the server starts.
    let socket = TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    let addr = socket.local_addr()?;
    let refused = Arc::new(Notify::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("drchrono.Sync", ServingStatus::Serving)
        .await;
    let server = tokio::spawn({
        let refused = refused.clone();
        async move {
            refused.notified().await;
            let listener = socket.listen(1024)?;
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .map_err(Error::from)
        }
    });

    let start = Instant::now();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let config = RateLimitConfig::builder()
        .rules([Rule::sliding(options.per_second, Duration::from_secs(1))?])
        .application("grpc-health")
        .build()?;
    let policy = RetryPolicy::builder()
        .first_delay(Duration::from_millis(200), Duration::from_millis(250))
        .retry_unclassified_errors(true)
        .build()?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    let stack = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer)
        .layer(RetryLayer::new(policy.clone()))
        .layer(DrChronoRateLimitLayer::from_config(config))
        .map_request({
            let attempts = attempts.clone();
            move |request: http::Request<Full<Bytes>>| {
                let mut log = attempts.lock().unwrap_or_else(|e| e.into_inner());
                log.push(start.elapsed());
                request.map(tonic::body::Body::new)
            }
        })
        .map_result({
            let refused = refused.clone();
            // Boxed, as tower's own layers box: the layers above see a `BoxError`
            // (`LayerError`), and a tonic transport error inside it is unclassified.
            move |result: Result<_, tonic::transport::Error>| {
                if result.is_err() {
                    refused.notify_one();
                }
                result.map_err(drchrono_tower::core::BoxError::from)
            }
        })
        .service(channel);
    let client = HealthClient::new(stack);

    let mut calls = Vec::new();
    calls.push(call(client.clone(), "", start).await);
    let services = (0..options.concurrent_calls).map(|i| {
        let service = if i + 1 == options.concurrent_calls {
            "unknown.Service"
        } else {
            "drchrono.Sync"
        };
        call(client.clone(), service, start)
    });
    calls.extend(futures::future::join_all(services).await);
    drop(client);
    let _ = stop.send(());
    server.await??;

    let attempts = attempts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = checks(
        &options,
        &attempts,
        &calls,
        policy.stats().transport_retries,
    );
    Ok(TonicReport {
        report,
        attempts,
        calls,
    })
}

async fn call<S>(mut client: HealthClient<S>, service: &str, start: Instant) -> Call
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<BoxError>,
    S::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as Body>::Error: Into<BoxError> + Send,
{
    let started = start.elapsed();
    let outcome = match client.check(check_request(service)).await {
        Ok(response) => Wire::try_from(response.into_inner().status).map_or_else(
            |_| "invalid status".to_owned(),
            |s| s.as_str_name().to_owned(),
        ),
        Err(status) => format!("{:?}", status.code()),
    };
    Call {
        service: service.to_owned(),
        started,
        finished: start.elapsed(),
        outcome,
    }
}

fn checks(options: &Options, attempts: &[Duration], calls: &[Call], retries: u64) -> Report {
    let mut report = Report::default();
    let first = calls.first().map(|c| c.outcome.as_str());
    report.record(
        "refused_then_retried",
        first == Some("SERVING") && retries >= 1,
        format!("first call {first:?} after {retries} transport retries"),
    );
    let serving = calls.iter().filter(|c| c.outcome == "SERVING").count();
    let unknown = calls.iter().filter(|c| c.service == "unknown.Service");
    let not_found = unknown.clone().all(|c| c.outcome == "NotFound");
    report.record(
        "calls_answered",
        serving + unknown.count() == calls.len() && not_found,
        format!("{serving} SERVING, unknown service NotFound: {not_found}"),
    );
    let per_second = usize::try_from(options.per_second).unwrap_or(usize::MAX);
    let tightest = attempts
        .windows(per_second.saturating_add(1))
        .map(|w| w[w.len() - 1].saturating_sub(w[0]))
        .min();
    report.record(
        "limiter_paced_attempts",
        attempts.len() == calls.len() + usize::try_from(retries).unwrap_or(0)
            && tightest.is_none_or(|span| span >= Duration::from_secs(1)),
        format!(
            "{} attempts; the {} closest consecutive span {:?} (the rule needs >= 1 s)",
            attempts.len(),
            per_second.saturating_add(1),
            tightest
        ),
    );
    report
}
