//! What the whole DrChrono stack costs per request, next to a tower-only stack doing the
//! least a DrChrono client must do, in the same run.
//!
//! ```sh
//! cargo bench -p benches --bench stack -- stack_overhead --warm-up-time 1 --measurement-time 3
//! ```
//!
//! All three drive the same trivial inner `tower::service_fn` (a 200 with an empty
//! `Full<Bytes>` body, no I/O) on a current-thread tokio runtime, `ready().await` then
//! `call(request).await`, one request at a time:
//!
//! - `bare`: the inner service alone (request construction and the loop).
//! - `full_stack`: `DrChronoLayer` (retry → rate limit → OAuth → classify) with nothing to
//!   wait for: three rules with maxima of a billion and no safety margin, a token that
//!   expires in a year (its token client's transport is never called), 200 answers.
//! - `tower_baseline`: tower's `Retry` with a policy that never retries (but copies each
//!   request up front, as any retrying policy must) around tower-http's
//!   `SetRequestHeader::overriding` for a fixed `Authorization` header: retry + token
//!   attachment with no rate limit, no refresh, no classification.
//!
//! criterion's `to_async` needs its `async_tokio` feature, which the workspace does not
//! enable; `iter_custom` times a `block_on` of a loop of `iters` calls instead.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use drchrono_classify::ErrorClassifyLayer;
use drchrono_core::{BoxError, DrChronoError};
use drchrono_oauth::{ClientCredentials, OAuthRefreshLayer, TokenClient, TokenManager, TokenSet};
use drchrono_ratelimit::{DrChronoRateLimitLayer, RateLimitConfig, RateLimiter};
use drchrono_tower::DrChronoLayer;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tokio::runtime::Runtime;
use tower::retry::{Policy, RetryLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_http::set_header::SetRequestHeaderLayer;

type Req = Request<Full<Bytes>>;

/// The trivial transport every variant drives.
fn inner() -> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(|_request: Req| ready(Ok(Response::new(Full::new(Bytes::new())))))
}

fn request() -> Req {
    Request::get("https://app.drchrono.com/api/patients/1")
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// `iters` sequential calls; the time they took.
async fn drive<S>(service: &mut S, iters: u64) -> Duration
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = service.ready().await.expect("the service is ready");
        black_box(ready.call(request()).await.expect("a 200"));
    }
    start.elapsed()
}

/// Never retries; copies the request up front like every retrying policy.
#[derive(Debug, Clone, Copy)]
struct NeverRetry;

impl<Res, E> Policy<Req, Res, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _request: &mut Req, _result: &mut Result<Res, E>) -> Option<Ready<()>> {
        None
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

/// The baseline's fixed `Authorization` header, marked sensitive as the OAuth layer does.
fn bearer() -> HeaderValue {
    let mut bearer = HeaderValue::from_static("Bearer bench-access");
    bearer.set_sensitive(true);
    bearer
}

/// The full stack with nothing to wait for.
fn drchrono_layer() -> DrChronoLayer {
    let never_called = service_fn(|_request: Req| {
        ready(Err::<Response<Full<Bytes>>, BoxError>(
            "the bench's token never expires".into(),
        ))
    });
    let token_client = TokenClient::new(never_called, ClientCredentials::new("bench", "secret"));
    let year = Duration::from_secs(365 * 24 * 3600);
    let tokens = TokenManager::builder(token_client)
        .initial_tokens(TokenSet::new(
            "bench-access",
            "bench-refresh",
            SystemTime::now() + year,
        ))
        .build();
    let config = RateLimitConfig::builder()
        .max_per_second(1_000_000_000)
        .max_per_window(1_000_000_000)
        .max_per_hour(1_000_000_000)
        .safety_margin(Duration::ZERO)
        .build()
        .expect("a valid configuration");
    DrChronoLayer::new(tokens).rate_limit(RateLimiter::new(config))
}

fn bench<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    runtime: &Runtime,
    service: S,
) where
    S: Service<Req> + Clone,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut service = service.clone();
            runtime.block_on(drive(&mut service, iters))
        })
    });
}

fn stack_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("stack_overhead");

    bench(&mut group, "bare", &runtime, inner());

    // The limiter and the token manager spawn nothing, but build them inside the runtime
    // as an application would.
    let full = runtime.block_on(async { drchrono_layer().layer(inner()) });
    bench(&mut group, "full_stack", &runtime, full);

    let baseline = ServiceBuilder::new()
        .layer(RetryLayer::new(NeverRetry))
        .layer(SetRequestHeaderLayer::overriding(AUTHORIZATION, bearer()))
        .service(inner());
    bench(&mut group, "tower_baseline", &runtime, baseline);

    group.finish();
}

/// Each of the four layers alone over the same inner service, to see where
/// `full_stack`'s cost goes (not part of the `stack_overhead` comparison).
fn stack_layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("stack_layers");
    let layer = runtime.block_on(async { drchrono_layer() });

    let retry = RetryLayer::new(layer.retry_policy().clone()).layer(inner());
    bench(&mut group, "retry_policy", &runtime, retry);

    let rate_limit = DrChronoRateLimitLayer::new(layer.rate_limiter().clone()).layer(inner());
    bench(&mut group, "rate_limit", &runtime, rate_limit);

    let oauth = OAuthRefreshLayer::new(layer.token_manager().clone())
        .layer(inner().map_err(|e: Infallible| -> DrChronoError { match e {} }));
    bench(&mut group, "oauth", &runtime, oauth);

    let classify = ErrorClassifyLayer::new().layer(inner());
    bench(&mut group, "classify", &runtime, classify);

    // The baseline's two parts, for comparison with `retry_policy` and `oauth`.
    let never = RetryLayer::new(NeverRetry).layer(inner());
    bench(&mut group, "tower_retry_never", &runtime, never);

    let set_header = SetRequestHeaderLayer::overriding(AUTHORIZATION, bearer()).layer(inner());
    bench(&mut group, "set_header", &runtime, set_header);

    group.finish();
}

criterion_group!(benches, stack_overhead, stack_layers);
criterion_main!(benches);
