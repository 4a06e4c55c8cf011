//! [`DrChronoClientBuilder`]: one place to configure the whole stack.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_core::BoxError;
use drchrono_oauth::{
    ClientCredentials, ReauthorizationEvent, RefreshLease, RefreshTiming, TokenClient,
    TokenManager, TokenSet, TokenStore,
};
use drchrono_ratelimit::{RateLimitConfig, RateLimiter, Tenant};
use drchrono_retry::RetryPolicy;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use secrecy::SecretString;
use tower::Service;

use crate::attempt::Limits;
use crate::client::{ClientConfig, DrChronoClient};
use crate::layer::DrChronoLayer;
use crate::origin::is_loopback;
use crate::redirect::DEFAULT_MAX_REDIRECTS;
use crate::transport::{DEFAULT_CONNECT_TIMEOUT, https_client_with_connect_timeout};

/// DrChrono's API base URL.
pub const DRCHRONO_API_URL: &str = "https://app.drchrono.com";

/// Why a client could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// No client id / secret were given ([`DrChronoClientBuilder::credentials`]).
    MissingCredentials,
    /// Neither a refresh token, a token pair nor a token store was given.
    MissingTokens,
    /// A URL did not parse, or lacks a scheme and host.
    InvalidUrl {
        /// Which setting.
        setting: &'static str,
        /// The value given.
        value: String,
    },
    /// A plain `http` URL to a host that is not loopback: tokens and client credentials
    /// would cross the network in clear text. Use `https`, or opt in with
    /// [`DrChronoClientBuilder::allow_insecure_http`].
    InsecureUrl {
        /// Which setting.
        setting: &'static str,
        /// The value given.
        value: String,
    },
    /// The default HTTPS transport could not be created.
    Transport(BoxError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingCredentials => f.write_str("no client id and secret were configured"),
            Self::MissingTokens => {
                f.write_str("no refresh token, token pair or token store was configured")
            }
            Self::InvalidUrl { setting, value } => {
                write!(f, "{setting} `{value}` is not an absolute http(s) URL")
            }
            Self::InsecureUrl { setting, value } => write!(
                f,
                "{setting} `{value}` is plain http to a host that is not loopback: use https, \
                 or allow_insecure_http(true)"
            ),
            Self::Transport(e) => write!(f, "the HTTPS transport could not be created: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(e) => Some(&**e),
            _ => None,
        }
    }
}

type Hook = Arc<dyn Fn(&ReauthorizationEvent) + Send + Sync>;

/// Configures a [`DrChronoClient`]: credentials, tokens and where they are kept, URLs, and
/// each layer's options. Every setting has a default but the credentials and the tokens.
///
/// Clones share what was handed over already built: the rate limiter (once
/// [`rate_limit`](Self::rate_limit) or [`rate_limiter`](Self::rate_limiter) was called), the
/// retry policy's budget and statistics, a shared token store, the lease and the hook. Two
/// clients built from clones of one builder with a limiter set draw on one budget, as
/// DrChrono counts it; [`DrChronoApp`](crate::DrChronoApp) keeps such a builder as the
/// template of every user's client.
#[derive(Clone)]
#[must_use]
pub struct DrChronoClientBuilder {
    base_url: String,
    token_url: Option<String>,
    credentials: Option<(String, SecretString)>,
    tokens: Option<TokenSet>,
    store: Option<Arc<dyn TokenStore>>,
    lease: Option<Arc<dyn RefreshLease>>,
    timing: Option<RefreshTiming>,
    hook: Option<Hook>,
    rate_limiter: Option<RateLimiter>,
    retry: Option<RetryPolicy>,
    classify: Option<ErrorClassifyLayer>,
    allow_insecure_http: bool,
    connect_timeout: Duration,
    limits: Limits,
    max_redirects: usize,
    tenant: Option<Tenant>,
}

impl fmt::Debug for DrChronoClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrChronoClientBuilder")
            .field("base_url", &shown(&self.base_url))
            .field("token_url", &self.token_url.as_deref().map(shown))
            .field("client_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("has_tokens", &self.tokens.is_some())
            .field("has_store", &self.store.is_some())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_head_timeout", &self.limits.response_head)
            .field("body_read_timeout", &self.limits.body_read)
            .field("max_body_size", &self.limits.max_body)
            .field("max_redirects", &self.max_redirects)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Default for DrChronoClientBuilder {
    fn default() -> Self {
        Self {
            base_url: DRCHRONO_API_URL.to_owned(),
            token_url: None,
            credentials: None,
            tokens: None,
            store: None,
            lease: None,
            timing: None,
            hook: None,
            rate_limiter: None,
            retry: None,
            classify: None,
            allow_insecure_http: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            limits: Limits::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            tenant: None,
        }
    }
}

/// `value` as an absolute `http` or `https` URL; plain `http` only to a loopback host or
/// when `allow_insecure_http`.
fn absolute(
    setting: &'static str,
    value: &str,
    allow_insecure_http: bool,
) -> Result<Uri, BuildError> {
    let invalid = || BuildError::InvalidUrl {
        setting,
        value: shown(value),
    };
    let uri: Uri = value.parse().map_err(|_| invalid())?;
    // User information (`https://user:secret@host/`) is refused: it would be sent, logged
    // and printed with every URL built on this one.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid());
    }
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(uri),
        (Some("http"), Some(host)) if allow_insecure_http || is_loopback(host) => Ok(uri),
        (Some("http"), Some(_)) => Err(BuildError::InsecureUrl {
            setting,
            value: shown(value),
        }),
        _ => Err(invalid()),
    }
}

/// A configured URL as errors and `Debug` show it: scheme, host, port and path; never user
/// information or a query (an unparsable value is shown as `<unparsable URL>`).
fn shown(value: &str) -> String {
    let Ok(uri) = value.parse::<Uri>() else {
        return "<unparsable URL>".to_owned();
    };
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(host) = uri.host() {
        out.push_str(host);
    }
    if let Some(port) = uri.port_u16() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(uri.path());
    out
}

impl DrChronoClientBuilder {
    /// The application's OAuth client id and secret (required).
    pub fn credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<SecretString>,
    ) -> Self {
        self.credentials = Some((client_id.into(), client_secret.into()));
        self
    }

    /// Start from a refresh token only: the first request refreshes it.
    pub fn refresh_token(mut self, refresh_token: impl Into<SecretString>) -> Self {
        self.tokens = Some(TokenSet::from_refresh_token(refresh_token));
        self
    }

    /// Start from a token pair.
    pub fn tokens(mut self, tokens: TokenSet) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Where tokens are kept (default: in memory). The rotated refresh token is saved here
    /// before the new access token is used; a stored pair wins over the starting tokens.
    pub fn token_store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A token store shared with other clients.
    pub fn shared_token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Who may refresh: a lease shared by every process of the application (e.g. in Redis),
    /// so that exactly one of them calls the token endpoint (default: this process only).
    pub fn refresh_lease(mut self, lease: Arc<dyn RefreshLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// When to refresh before expiry (default: `min(5 min, 10 %)` of the lifetime).
    pub fn refresh_timing(mut self, timing: RefreshTiming) -> Self {
        self.timing = Some(timing);
        self
    }

    /// Called once when the refresh token is rejected and the user must authorise the
    /// application again.
    pub fn on_reauthorization(
        mut self,
        hook: impl Fn(&ReauthorizationEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The API base URL (default: [`DRCHRONO_API_URL`]); relative request paths are resolved
    /// against it.
    ///
    /// Its origin (scheme, host, port) is the only one the client sends the access token to:
    /// an absolute URL or a `next` link elsewhere is refused before anything is sent (see
    /// [`DrChronoError::ForeignOrigin`](crate::DrChronoError::ForeignOrigin)). Plain `http` is refused for a host that is
    /// not loopback unless [`allow_insecure_http`](Self::allow_insecure_http).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The token endpoint (default: `https://drchrono.com/o/token/`). Plain `http` is
    /// refused for a host that is not loopback unless
    /// [`allow_insecure_http`](Self::allow_insecure_http).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// Whether a plain `http` base or token URL may name a host that is not loopback
    /// (default: **`false`**: only `https`, and `http` to `localhost`, 127.0.0.0/8 or `::1`,
    /// as for a local `drchrono-sim`). With `http` the access token, the refresh token and
    /// the client secret cross the network in clear text: allow it only for a test host on
    /// a trusted network.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// How long setting up a new connection (TCP and TLS) may take (default: **10 s**).
    /// Applies to the default transport built by [`build`](Self::build); a transport given
    /// to [`build_with_transport`](Self::build_with_transport) sets up its connections its
    /// own way (see [`https_client_with_connect_timeout`](crate::https_client_with_connect_timeout)).
    ///
    /// A connect timeout fails the attempt with [`TimedOut`](crate::TimedOut)
    /// ([`TimeoutPhase::Connect`](crate::TimeoutPhase::Connect)): the request was not sent,
    /// so the retry policy may retry any method.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long each attempt may wait for its response head (status and headers), counted
    /// from the moment the transport is called, connection set-up included (default:
    /// **60 s**). Every attempt gets its own: each retry, each redirect, each page.
    ///
    /// A timed-out attempt fails with [`TimedOut`](crate::TimedOut)
    /// ([`TimeoutPhase::ResponseHead`](crate::TimeoutPhase::ResponseHead)) as a
    /// [`DrChronoError::Transport`](crate::DrChronoError::Transport) with `not_sent: false`:
    /// the request may have reached DrChrono, so the retry policy retries it only when it is
    /// idempotent (GET, PUT, DELETE, …, or opted in). With the default retry policy a `GET`
    /// to a server that never answers fails after 4 attempts and 3 backoffs: at most
    /// 4 × 60 s + 30 s + 60 s + 120 s = 450 s; a `POST` after 60 s.
    pub fn response_head_timeout(mut self, timeout: Duration) -> Self {
        self.limits.response_head = timeout;
        self
    }

    /// How long reading a success body (status below 400) may take (default: **60 s**).
    /// Error bodies are read by the classifier under its own limit (see
    /// [`classify`](Self::classify)).
    ///
    /// A body that stalls, or breaks off before its end, fails the attempt as a
    /// [`DrChronoError::Transport`](crate::DrChronoError::Transport) with `not_sent: false`
    /// ([`TimedOut`](crate::TimedOut) of phase [`TimeoutPhase::Body`](crate::TimeoutPhase::Body)
    /// for a stall): like a 5xx, the retry policy retries it when the request is
    /// idempotent, with the policy's backoff, retry count and budget.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.body_read = timeout;
        self
    }

    /// The largest success body read, in bytes (default: **32 MiB**). A larger one (by its
    /// `Content-Length`, or once that many bytes arrived) is a
    /// [`DrChronoError::Decode`](crate::DrChronoError::Decode) whose source is
    /// [`BodyTooLarge`](crate::BodyTooLarge), not retried; the rest of the body is never
    /// buffered.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.limits.max_body = bytes;
        self
    }

    /// How many redirects one request follows (default: **5**; 0 follows none).
    ///
    /// Only redirects to the API origin are followed (see [`base_url`](Self::base_url)),
    /// each one a new request through the whole stack (rate limited, with the current
    /// token). 301, 302, 307 and 308 replay the method, headers and body (DrChrono documents
    /// replaying a 302); a 303 becomes a `GET` without a body. A redirect to another origin,
    /// or one past the limit, is returned to the caller as the 3xx response itself, never
    /// followed with the token.
    pub fn max_redirects(mut self, redirects: usize) -> Self {
        self.max_redirects = redirects;
        self
    }

    /// The rate limiter's rules and options (default: [`RateLimitConfig::default`]: 9 / s,
    /// 290 / 600 s, 500 per clock hour).
    pub fn rate_limit(mut self, config: RateLimitConfig) -> Self {
        self.rate_limiter = Some(RateLimiter::new(config));
        self
    }

    /// A rate limiter shared with other clients of the same application, or kept in Redis.
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// Whose requests these are, when one rate limiter serves several users (practices) of
    /// the application: every request the client sends (each attempt, redirect and page)
    /// carries this [`Tenant`] in its extensions, which the
    /// [`RateLimiter`](drchrono_ratelimit::RateLimiter) reads to divide the application's
    /// budget among its tenants. It replaces any `Tenant` a request given to
    /// [`send`](DrChronoClient::send) carried: the tenant names whose token the request
    /// carries. Default: none (the limiter's unnamed tenant).
    ///
    /// [`DrChronoApp`](crate::DrChronoApp) sets it to the user's key. It applies to the
    /// clients [`build`](Self::build) and its siblings make; a layer from
    /// [`into_layer`](Self::into_layer) sends what it is given, so put the `Tenant` in your
    /// requests' extensions yourself.
    pub fn tenant(mut self, tenant: impl Into<Tenant>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The retry policy (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The classifier's options (default: a 64 KiB error-body limit). Unless they set their
    /// own [`not_sent`](ErrorClassifyLayer::not_sent) predicate, the client's stays
    /// ([`not_sent`](crate::not_sent): a connect timeout is `not_sent: true`).
    pub fn classify(mut self, classify: ErrorClassifyLayer) -> Self {
        self.classify = Some(classify);
        self
    }

    /// Builds the client over the default HTTPS transport
    /// ([`https_client_with_connect_timeout`](crate::https_client_with_connect_timeout) with
    /// the [`connect_timeout`](Self::connect_timeout)).
    ///
    /// # Errors
    /// See [`BuildError`].
    pub fn build(self) -> Result<DrChronoClient, BuildError> {
        let transport = https_client_with_connect_timeout(self.connect_timeout)
            .map_err(BuildError::Transport)?;
        self.build_with_transport(transport)
    }

    /// Builds the client over any transport: hyper-util's client, a `drchrono_sim` router,
    /// a test double. The token endpoint is called through the same transport.
    ///
    /// Every API attempt through it is bounded by the
    /// [`response_head_timeout`](Self::response_head_timeout), and its success body by the
    /// [`body_read_timeout`](Self::body_read_timeout) and the
    /// [`max_body_size`](Self::max_body_size).
    ///
    /// # Errors
    /// See [`BuildError`].
    pub fn build_with_transport<S, B>(self, transport: S) -> Result<DrChronoClient, BuildError>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let config = ClientConfig {
            limits: self.limits,
            max_redirects: self.max_redirects,
            tenant: self.tenant.clone(),
        };
        let (layer, base) = self.into_layer(transport.clone())?;
        Ok(DrChronoClient::new(layer, transport, base, config))
    }

    /// Builds the client over the application's own [`reqwest::Client`](::reqwest::Client)
    /// (feature `reqwest`): its TLS, proxy, pool, DNS and timeout settings carry every API
    /// attempt and every call to the token endpoint, through a [`ReqwestTransport`](crate::ReqwestTransport).
    ///
    /// The same path as [`build_with_transport`](Self::build_with_transport): the stack, the
    /// response-head and body bounds, origin pinning and redirects are the same. reqwest
    /// connects its own way, so the [`connect_timeout`](Self::connect_timeout) set here does
    /// not apply: set `connect_timeout` on the `reqwest::ClientBuilder` (a reqwest connect
    /// error, its connect timeout included, counts as not sent). Build the client with
    /// `redirect(reqwest::redirect::Policy::none())` so that redirects are this client's,
    /// each one through the rate limiter and only on the API origin
    /// ([`max_redirects`](Self::max_redirects)).
    ///
    /// # Example
    /// ```
    /// use drchrono_tower::DrChronoClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
    /// # let c = sim.credentials();
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .connect_timeout(std::time::Duration::from_secs(10))
    ///     .build()?;
    /// let client = DrChronoClient::builder()
    ///     .credentials(c.client_id, c.client_secret)
    ///     .refresh_token(c.refresh_token)
    /// #   .base_url(sim.base_url()).token_url(sim.token_url())
    ///     .build_with_reqwest(http)?;
    /// let me: serde_json::Value = client.get_json("/api/users/current").await?;
    /// # assert!(me["is_doctor"].as_bool().unwrap());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// See [`BuildError`].
    #[cfg(feature = "reqwest")]
    pub fn build_with_reqwest(
        self,
        client: ::reqwest::Client,
    ) -> Result<DrChronoClient, BuildError> {
        self.build_with_transport(crate::ReqwestTransport::new(client))
    }

    /// Checks what can be checked before any token is given: the credentials and both
    /// URLs.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        absolute("base_url", &self.base_url, self.allow_insecure_http)?;
        if self.credentials.is_none() {
            return Err(BuildError::MissingCredentials);
        }
        if let Some(url) = &self.token_url {
            absolute("token_url", url, self.allow_insecure_http)?;
        }
        Ok(())
    }

    /// The configured rate limiter, created with DrChrono's defaults and kept in the builder
    /// when none was set, so that every client built from clones of it shares one budget.
    pub(crate) fn shared_rate_limiter(&mut self) -> RateLimiter {
        self.rate_limiter
            .get_or_insert_with(|| RateLimiter::new(RateLimitConfig::default()))
            .clone()
    }

    /// Keeps a retry policy in the builder ([`RetryPolicy::default`] when none was set), so
    /// that every client built from clones of it shares the policy's budget and statistics.
    pub(crate) fn share_retry_policy(&mut self) {
        self.retry.get_or_insert_with(RetryPolicy::default);
    }

    /// The configured connect timeout (for a transport built once and shared).
    pub(crate) fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    /// Builds only the layer (for composing with `tower::ServiceBuilder` yourself) with the
    /// token endpoint called through `token_transport`; returns it with the base URL.
    ///
    /// The layer attaches the token to whatever request it is given, adds no timeout and
    /// follows no redirect: origin pinning, the response and body timeouts, the body limit
    /// and redirects are [`DrChronoClient`]'s. Put your own timeout around the transport.
    ///
    /// # Errors
    /// See [`BuildError`].
    pub fn into_layer<S, B>(self, token_transport: S) -> Result<(DrChronoLayer, Uri), BuildError>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let base = absolute("base_url", &self.base_url, self.allow_insecure_http)?;
        let (client_id, client_secret) = self.credentials.ok_or(BuildError::MissingCredentials)?;
        if self.tokens.is_none() && self.store.is_none() {
            return Err(BuildError::MissingTokens);
        }
        let mut token_client = TokenClient::new(
            token_transport,
            ClientCredentials::new(client_id, client_secret),
        );
        if let Some(url) = &self.token_url {
            token_client =
                token_client.token_url(absolute("token_url", url, self.allow_insecure_http)?);
        }
        let mut tokens = TokenManager::builder(token_client);
        if let Some(store) = self.store {
            tokens = tokens.shared_store(store);
        }
        if let Some(lease) = self.lease {
            tokens = tokens.lease(lease);
        }
        if let Some(initial) = self.tokens {
            tokens = tokens.initial_tokens(initial);
        }
        if let Some(timing) = self.timing {
            tokens = tokens.timing(timing);
        }
        if let Some(hook) = self.hook {
            tokens = tokens.on_reauthorization(move |event| hook(event));
        }
        let mut layer = DrChronoLayer::new(tokens.build());
        if let Some(classify) = self.classify {
            layer = layer.classify(classify);
        }
        if let Some(limiter) = self.rate_limiter {
            layer = layer.rate_limit(limiter);
        }
        if let Some(policy) = self.retry {
            layer = layer.retry(policy);
        }
        Ok((layer, base))
    }
}
