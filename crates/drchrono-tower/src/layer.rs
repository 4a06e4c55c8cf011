//! [`DrChronoLayer`]: the four layers in the recommended order, as one `tower::Layer`.

use std::sync::Arc;
use std::task::{Context, Poll};

use drchrono_classify::{ErrorClassify, ErrorClassifyLayer};
use drchrono_core::{CallAt, LayerError};
use drchrono_oauth::{OAuthRefresh, OAuthRefreshLayer, TokenManager};
use drchrono_ratelimit::{DrChronoRateLimit, DrChronoRateLimitLayer, RateLimiter};
use drchrono_retry::{ReplayBody, RetryPolicy};
use tower::layer::util::Stack;
use tower::{Layer, Service, ServiceBuilder};

use crate::request::{RequestFuture, Retries};
use crate::span::{DurationMetric, request_span};

/// The layers of [`DrChronoService`] below its retry loop, outermost first: rate limit,
/// OAuth refresh, error classification. Every attempt goes through all three.
pub type DrChronoStack<S> = DrChronoRateLimit<OAuthRefresh<ErrorClassify<S>>>;

/// The service [`DrChronoLayer`] builds around a transport `S`: a retry loop following the
/// [`RetryPolicy`] (tower's `Retry`, with its spans) around the [`DrChronoStack`], each request
/// inside its own `tracing` span and each attempt inside a child span.
///
/// # Spans
/// Shaped like OpenTelemetry's HTTP client conventions (`tracing-opentelemetry` exports
/// them as they are; `otel.name` is the method):
///
/// ```text
/// http.client.request   http.request.method, server.address, server.port, url.path,
/// │                     url.full (query values redacted), http.response.status_code, error.type
/// ├── http.client.attempt   http.request.resend_count = 0, otel.kind = client
/// ├── http.client.attempt   http.request.resend_count = 1
/// │   ├── rate_limit.wait   the rule that held it
/// │   └── oauth.refresh     a token refresh it waited for
/// └── http.client.attempt   http.request.resend_count = 2
/// ```
///
/// No span field holds a query value, a body, a payload or a token.
///
/// # Retries
/// The policy is asked about every attempt's outcome exactly as tower's `Retry` asks it
/// (`clone_request` before each attempt, `retry` after it). A retry is sent by a fresh clone
/// of the stack, polled ready first, so that it waits for a permit and carries the current
/// token like any request. Clones of the service share that one copy of the stack: a
/// request holds a reference to it, not a clone of every layer.
///
/// # One clock reading per attempt
/// Each attempt reads tokio's clock once and passes the reading down with
/// [`CallAt::call_at`]: it starts the policy's deadline and dates its budget deposit (for the
/// first attempt), the limiter charges the attempt at it, and the OAuth layer checks at it
/// that the token it attaches has not expired. (Composed by hand, each layer reads the clock
/// itself.) The token's freshness is still read in `poll_ready`, which comes before it and
/// may be far from it.
#[derive(Debug)]
pub struct DrChronoService<S> {
    inner: DrChronoStack<S>,
    retries: Arc<Retries<DrChronoStack<S>>>,
}

impl<S: Clone> Clone for DrChronoService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            retries: Arc::clone(&self.retries),
        }
    }
}

impl<S> DrChronoService<S> {
    /// The layers below the retry loop, outermost first.
    pub fn get_ref(&self) -> &DrChronoStack<S> {
        &self.inner
    }

    /// The retry policy; its [`RetryPolicy::stats`] are shared by every clone.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retries.policy
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for DrChronoService<S>
where
    DrChronoStack<S>: CallAt<http::Request<B>, Response = http::Response<ResBody>> + Clone,
    <DrChronoStack<S> as Service<http::Request<B>>>::Error: LayerError,
    B: ReplayBody,
{
    type Response = http::Response<ResBody>;
    type Error = <DrChronoStack<S> as Service<http::Request<B>>>::Error;
    type Future = RequestFuture<DrChronoStack<S>, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = request_span(&request);
        let duration = DurationMetric::start(&request);
        RequestFuture::first(&mut self.inner, request, &self.retries, span, duration)
    }
}

/// The recommended DrChrono stack as one layer, outermost first:
///
/// 1. [`RetryPolicy`], in [`DrChronoService`]'s retry loop (tower's `Retry`, with the
///    request's and each attempt's spans): every attempt goes back through the limiter and
///    the token layer, so retries are throttled and carry the current token.
/// 2. [`DrChronoRateLimitLayer`]: each attempt waits for a permit and is charged; it sees
///    every attempt's outcome, so a 429 holds every caller of the application.
/// 3. [`OAuthRefreshLayer`]: attaches the current token, refreshes before expiry (one
///    refresh at a time), and marks a 401 that a replay with the current token cures.
/// 4. [`ErrorClassifyLayer`]: directly above the transport, turns error responses into
///    typed [`DrChronoError`](crate::DrChronoError)s once, for the layers above.
///
/// Each part can be replaced: [`DrChronoLayer::retry`], [`DrChronoLayer::rate_limit`],
/// [`DrChronoLayer::classify`]. Clones share the limiter's budget and the token family.
///
/// # Example
/// ```
/// use drchrono_tower::DrChronoLayer;
/// use drchrono_tower::oauth::{ClientCredentials, TokenClient, TokenManager, TokenSet};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes;
/// # use http_body_util::Full;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
/// let credentials = sim.credentials();
/// let transport = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
///     .build_http::<Full<Bytes>>();
/// let token_client = TokenClient::new(
///     transport.clone(),
///     ClientCredentials::new(credentials.client_id, credentials.client_secret),
/// )
/// .token_url(sim.token_url().parse().unwrap());
/// let tokens = TokenManager::builder(token_client)
///     .initial_tokens(TokenSet::from_refresh_token(credentials.refresh_token))
///     .build();
/// let service = ServiceBuilder::new()
///     .layer(DrChronoLayer::new(tokens))
///     .service(transport);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DrChronoLayer {
    retry: RetryPolicy,
    rate_limit: DrChronoRateLimitLayer,
    oauth: OAuthRefreshLayer,
    classify: ErrorClassifyLayer,
}

impl DrChronoLayer {
    /// The stack with DrChrono's defaults around `tokens`: [`RetryPolicy::default`], the
    /// default rules (9 / s, 290 / 600 s, 500 per clock hour) and a 64 KiB error-body limit.
    pub fn new(tokens: TokenManager) -> Self {
        Self {
            retry: RetryPolicy::default(),
            rate_limit: DrChronoRateLimitLayer::new(RateLimiter::new(Default::default())),
            oauth: OAuthRefreshLayer::new(tokens),
            classify: ErrorClassifyLayer::new().not_sent(crate::transport::not_sent),
        }
    }

    /// Replaces the retry policy (default: [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Replaces the rate limiter, e.g. one shared with other stacks of the same application
    /// or kept in Redis (default: DrChrono's rules, in memory).
    #[must_use]
    pub fn rate_limit(mut self, limiter: RateLimiter) -> Self {
        self.rate_limit = DrChronoRateLimitLayer::new(limiter);
        self
    }

    /// Replaces the classifier's options (default: [`ErrorClassifyLayer::new`]). Unless
    /// `classify` sets its own [`not_sent`](ErrorClassifyLayer::not_sent) predicate, the
    /// layer's stays: [`not_sent`](crate::not_sent), which knows this crate's transport
    /// errors (a connect timeout is `not_sent: true`).
    #[must_use]
    pub fn classify(mut self, classify: ErrorClassifyLayer) -> Self {
        self.classify = classify.default_not_sent(crate::transport::not_sent);
        self
    }

    /// The retry policy; its [`RetryPolicy::stats`] are shared by every clone.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The rate limiter: [`RateLimiter::status`] shows the remaining budget.
    pub fn rate_limiter(&self) -> &RateLimiter {
        self.rate_limit.limiter()
    }

    /// The token family's manager.
    pub fn token_manager(&self) -> &TokenManager {
        self.oauth.manager()
    }
}

impl<S: Clone> Layer<S> for DrChronoLayer {
    type Service = DrChronoService<S>;

    fn layer(&self, transport: S) -> Self::Service {
        let classified = self.classify.layer(transport);
        let authorized = self.oauth.layer(classified);
        let limited = self.rate_limit.layer(authorized);
        DrChronoService {
            inner: limited.clone(),
            retries: Arc::new(Retries::new(self.retry.clone(), limited)),
        }
    }
}

/// Adds [`DrChronoLayer`] to a [`ServiceBuilder`].
///
/// ```
/// use drchrono_tower::{DrChronoLayer, ServiceBuilderExt};
/// # fn build(tokens: drchrono_tower::oauth::TokenManager) {
/// let builder = tower::ServiceBuilder::new().drchrono(DrChronoLayer::new(tokens));
/// # let _ = builder;
/// # }
/// ```
pub trait ServiceBuilderExt<L>: Sized {
    /// Wraps the services built next in the DrChrono stack.
    fn drchrono(self, layer: DrChronoLayer) -> ServiceBuilder<Stack<DrChronoLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn drchrono(self, layer: DrChronoLayer) -> ServiceBuilder<Stack<DrChronoLayer, L>> {
        self.layer(layer)
    }
}
