//! [`DrChronoClientBuilder`]: one place to configure the whole stack.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use drchrono_classify::{BoxError, ErrorClassifyLayer};
use drchrono_oauth::{
    ClientCredentials, ReauthorizationEvent, RefreshLease, RefreshTiming, TokenClient,
    TokenManager, TokenSet, TokenStore,
};
use drchrono_ratelimit::{RateLimitConfig, RateLimiter};
use drchrono_retry::RetryPolicy;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use secrecy::SecretString;
use tower::Service;

use crate::client::DrChronoClient;
use crate::layer::DrChronoLayer;
use crate::transport::{https_client, not_sent};

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
}

impl fmt::Debug for DrChronoClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrChronoClientBuilder")
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("has_tokens", &self.tokens.is_some())
            .field("has_store", &self.store.is_some())
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
        }
    }
}

fn absolute(setting: &'static str, value: &str) -> Result<Uri, BuildError> {
    let invalid = || BuildError::InvalidUrl {
        setting,
        value: value.to_owned(),
    };
    let uri: Uri = value.parse().map_err(|_| invalid())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(invalid()),
    }
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
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The token endpoint (default: `https://drchrono.com/o/token/`).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
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

    /// The retry policy (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The classifier's options (default: a 64 KiB error-body limit).
    pub fn classify(mut self, classify: ErrorClassifyLayer) -> Self {
        self.classify = Some(classify);
        self
    }

    /// Builds the client over the default HTTPS transport ([`https_client`]).
    ///
    /// # Errors
    /// See [`BuildError`].
    pub fn build(self) -> Result<DrChronoClient, BuildError> {
        let transport = https_client().map_err(BuildError::Transport)?;
        self.build_with_transport(transport)
    }

    /// Builds the client over any transport: hyper-util's client, a `drchrono_sim` router,
    /// a test double. The token endpoint is called through the same transport.
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
        let (layer, base) = self.into_layer(transport.clone())?;
        Ok(DrChronoClient::new(layer, transport, base))
    }

    /// Builds only the layer (for composing with `tower::ServiceBuilder` yourself) with the
    /// token endpoint called through `token_transport`; returns it with the base URL.
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
        let base = absolute("base_url", &self.base_url)?;
        let (client_id, client_secret) = self.credentials.ok_or(BuildError::MissingCredentials)?;
        if self.tokens.is_none() && self.store.is_none() {
            return Err(BuildError::MissingTokens);
        }
        let mut token_client = TokenClient::new(
            token_transport,
            ClientCredentials::new(client_id, client_secret),
        );
        if let Some(url) = &self.token_url {
            token_client = token_client.token_url(absolute("token_url", url)?);
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
        let classify = self
            .classify
            .unwrap_or_else(|| ErrorClassifyLayer::new().not_sent(not_sent));
        let mut layer = DrChronoLayer::new(tokens.build()).classify(classify);
        if let Some(limiter) = self.rate_limiter {
            layer = layer.rate_limit(limiter);
        }
        if let Some(policy) = self.retry {
            layer = layer.retry(policy);
        }
        Ok((layer, base))
    }
}
