//! [`TokenClient`]: DrChrono's refresh grant over the application's own HTTP client.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes};
use drchrono_core::{BoxError, DrChronoError, ErrorContext};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use secrecy::{ExposeSecret, SecretString};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::MalformedTokenResponse;
use crate::backoff::RefreshBackoff;
use crate::response::{self, Attempt, TokenGrant};

/// DrChrono's token endpoint.
pub const DRCHRONO_TOKEN_URL: &str = "https://drchrono.com/o/token/";

/// The largest token response body read, in bytes: 64 KiB.
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How long one attempt may take before it counts as a transient failure: 30 s.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The type-erased HTTP client the token endpoint is reached through.
type TokenTransport =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<UnsyncBoxBody<Bytes, BoxError>>, BoxError>;

/// The application's OAuth client credentials. `Debug` shows the id, never the secret.
#[derive(Clone)]
pub struct ClientCredentials {
    client_id: String,
    client_secret: SecretString,
}

impl ClientCredentials {
    /// The application's `client_id` and `client_secret` (DrChrono: Account > API).
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<SecretString>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .finish()
    }
}

/// A client of DrChrono's token endpoint that speaks the refresh grant:
/// `POST` with an `application/x-www-form-urlencoded` body
/// `grant_type=refresh_token&refresh_token=…&client_id=…&client_secret=…`.
///
/// It runs over any tower HTTP service, so the application's own client (and, if wanted,
/// the same rate-limit and classification stack as API calls) is reused. Outcomes:
/// a [`TokenGrant`]; `invalid_grant` (400 or 401, decided by the `error` code) →
/// [`DrChronoError::ReauthorizationRequired`]; `invalid_client` →
/// [`DrChronoError::InvalidClient`]; other OAuth errors → [`DrChronoError::OAuth`];
/// 5xx, 408, 429, timeouts and transport errors are retried per [`RefreshBackoff`] and
/// then returned as [`DrChronoError::Server`], [`DrChronoError::Throttled`] or
/// [`DrChronoError::Transport`]; a 2xx that is not a token response →
/// [`DrChronoError::Transport`] with a [`MalformedTokenResponse`] source.
#[derive(Clone)]
pub struct TokenClient {
    transport: TokenTransport,
    token_url: Uri,
    credentials: ClientCredentials,
    backoff: RefreshBackoff,
    attempt_timeout: Duration,
    body_limit: usize,
}

impl TokenClient {
    /// A client of [`DRCHRONO_TOKEN_URL`] over `transport`.
    ///
    /// `transport` is any `Service<http::Request<Full<Bytes>>>` answering
    /// `http::Response<B>`: hyper-util's client, an `ErrorClassifyLayer` stack (its
    /// [`DrChronoError`]s keep their classification), a `tower::service_fn` in tests.
    pub fn new<S, B>(transport: S, credentials: ClientCredentials) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let transport = transport
            .map_err(Into::into)
            .map_response(|response: Response<B>| {
                response.map(|body| {
                    body.map_frame(|frame| {
                        frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                    })
                    .map_err(Into::into)
                    .boxed_unsync()
                })
            });
        Self {
            transport: BoxCloneSyncService::new(transport),
            token_url: Uri::from_static(DRCHRONO_TOKEN_URL),
            credentials,
            backoff: RefreshBackoff::default(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The token endpoint. Default: [`DRCHRONO_TOKEN_URL`].
    #[must_use]
    pub fn token_url(mut self, url: Uri) -> Self {
        self.token_url = url;
        self
    }

    /// Retries of transient failures. Default: [`RefreshBackoff::default`] (3 retries,
    /// 1 s doubling, 30 s cap).
    #[must_use]
    pub fn backoff(mut self, backoff: RefreshBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The time limit of one attempt. Default: 30 s.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The largest response body read. Default: 64 KiB.
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// Spends `refresh_token` for a new pair, retrying transient failures.
    ///
    /// Calling this directly bypasses single-flight and the store: the old refresh token is
    /// revoked by the server when this succeeds, so the caller must persist the grant.
    /// [`TokenManager`](crate::TokenManager) does all of that. A 2xx answer whose access
    /// token cannot be used has rotated the pair too: this method returns its
    /// [`MalformedTokenResponse`] error, while [`TokenManager`](crate::TokenManager) also
    /// keeps the rotated refresh token and refreshes with it next.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenGrant, DrChronoError> {
        match self.exchange(refresh_token).await {
            Refreshed::Granted(grant) => Ok(grant),
            Refreshed::Rotated { error, .. } | Refreshed::Failed(error) => Err(error),
        }
    }

    /// [`refresh`](Self::refresh), keeping what a 2xx answer with an unusable access token
    /// rotated to.
    pub(crate) async fn exchange(&self, refresh_token: &SecretString) -> Refreshed {
        let mut retry = 0;
        loop {
            match self.attempt(refresh_token).await {
                Attempt::Granted(grant) => return Refreshed::Granted(grant),
                Attempt::Rotated { rotated, error } => {
                    return Refreshed::Rotated { rotated, error };
                }
                Attempt::Fail(error) => return Refreshed::Failed(error),
                Attempt::Retry { error, retry_after } => {
                    if retry >= self.backoff.retries() {
                        return Refreshed::Failed(error);
                    }
                    let delay = self.backoff.delay(retry, retry_after);
                    tracing::debug!(
                        retry = retry + 1,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        kind = error.kind_name(),
                        status = error.status().map(|s| s.as_u16()),
                        "token endpoint failed transiently; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
            }
        }
    }

    fn context(&self) -> ErrorContext {
        let mut context = ErrorContext::new();
        context.method = Some(Method::POST);
        context.uri = Some(self.token_url.clone());
        context.occurred_at = Some(std::time::SystemTime::now());
        context
    }

    fn request(&self, refresh_token: &SecretString) -> Result<Request<Full<Bytes>>, BoxError> {
        let form = serde_urlencoded::to_string([
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("client_id", self.credentials.client_id.as_str()),
            (
                "client_secret",
                self.credentials.client_secret.expose_secret(),
            ),
        ])?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(form)))?;
        Ok(request)
    }

    async fn attempt(&self, refresh_token: &SecretString) -> Attempt {
        let context = self.context();
        let request = match self.request(refresh_token) {
            Ok(request) => request,
            Err(source) => {
                return Attempt::Fail(DrChronoError::Transport {
                    not_sent: true,
                    source,
                    context: Box::new(context),
                });
            }
        };
        let transport = self.transport.clone();
        let limit = self.body_limit;
        let exchange = async move {
            match transport.oneshot(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    Ok((parts, read_limited(body, limit).await))
                }
                Err(error) => Err(error),
            }
        };
        match tokio::time::timeout(self.attempt_timeout, exchange).await {
            Err(elapsed) => Attempt::Retry {
                error: DrChronoError::Transport {
                    not_sent: false,
                    source: Box::new(elapsed),
                    context: Box::new(context),
                },
                retry_after: None,
            },
            Ok(Err(error)) => response::classify_error(error, context),
            Ok(Ok((parts, Ok(body)))) => {
                response::classify_response(parts.status, &parts.headers, &body, context)
            }
            Ok(Ok((parts, Err(ReadError::TooLarge)))) => {
                let mut context = context;
                context.status = Some(parts.status);
                Attempt::Fail(response::malformed(
                    MalformedTokenResponse::TooLarge { limit },
                    context,
                ))
            }
            Ok(Ok((_, Err(ReadError::Body(error))))) => response::classify_error(error, context),
        }
    }
}

/// How a refresh ended, for [`TokenManager`](crate::TokenManager).
#[derive(Debug)]
pub(crate) enum Refreshed {
    /// A usable grant.
    Granted(TokenGrant),
    /// A 2xx answer whose access token cannot be used: the refresh failed with `error` (a
    /// [`MalformedTokenResponse`]), but the server has rotated the pair, and `rotated`
    /// holds the new refresh token.
    Rotated {
        rotated: response::Rotated,
        error: DrChronoError,
    },
    /// Any other failure: no rotated refresh token was received.
    Failed(DrChronoError),
}

/// Why a body could not be read.
enum ReadError {
    TooLarge,
    Body(BoxError),
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(
    mut body: UnsyncBoxBody<Bytes, BoxError>,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Ok(data) = frame.into_data() {
            if collected.len().saturating_add(data.len()) > limit {
                return Err(ReadError::TooLarge);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(collected))
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("token_url", &self.token_url)
            .field("credentials", &self.credentials)
            .field("backoff", &self.backoff)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
