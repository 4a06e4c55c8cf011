//! [`DrChronoApp`]: one application's budget, shared by the clients of its many users.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_core::BoxError;
use drchrono_oauth::{ReauthorizationEvent, RefreshLease, RefreshTiming, TokenSet, TokenStore};
use drchrono_ratelimit::{RateLimitConfig, RateLimiter, Tenant};
use drchrono_retry::RetryPolicy;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use secrecy::SecretString;
use tower::Service;

use crate::builder::{BuildError, DrChronoClientBuilder};
use crate::client::DrChronoClient;
use crate::transport::https_client_with_connect_timeout;

/// Builds a user's client from the template, on the application's transport.
type Connect =
    Arc<dyn Fn(DrChronoClientBuilder) -> Result<DrChronoClient, BuildError> + Send + Sync>;
type StoreFactory = Arc<dyn Fn(&Tenant) -> Arc<dyn TokenStore> + Send + Sync>;
type LeaseFactory = Arc<dyn Fn(&Tenant) -> Arc<dyn RefreshLease> + Send + Sync>;
type AppHook = Arc<dyn Fn(&Tenant, &ReauthorizationEvent) + Send + Sync>;
type UserHook = Arc<dyn Fn(&ReauthorizationEvent) + Send + Sync>;

/// One DrChrono application serving many practices: one rate limit for all of them, one
/// token family for each.
///
/// # Example
/// ```
/// use drchrono_tower::DrChronoApp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
/// # let c = sim.credentials();
/// # let (client_id, client_secret) = (c.client_id, c.client_secret);
/// # let adams_refresh_token = sim.simulator().authorize_user("dr-adams", None).refresh_token;
/// # let baker_refresh_token = sim.simulator().authorize_user("dr-baker", None).refresh_token;
/// let app = DrChronoApp::builder()
///     .credentials(client_id, client_secret) // the application's
/// #   .base_url(sim.base_url()).token_url(sim.token_url())
///     .build()?; // one budget: 9 / s, 290 / 600 s, 500 per clock hour
///
/// // One client per practice that authorised the application, each with its own tokens.
/// let adams = app.user("dr-adams").refresh_token(adams_refresh_token).build()?;
/// let baker = app.user("dr-baker").refresh_token(baker_refresh_token).build()?;
///
/// let me: serde_json::Value = adams.get_json("/api/users/current").await?;
/// assert_eq!(me["username"], "dr-adams");
/// let me: serde_json::Value = baker.get_json("/api/users/current").await?;
/// assert_eq!(me["username"], "dr-baker");
///
/// // Both requests came out of the application's one budget.
/// let status = app.limiter().status().await?;
/// assert_eq!(status.rules[1].remaining, 290 - 2); // the 10-minute window
/// assert_eq!(app.limiter().tenants().len(), 2); // each practice's part
/// # Ok(())
/// # }
/// ```
///
/// # Why
/// DrChrono throttles per application: every practice (every user who authorised the
/// application) draws on the same 9 / s, 290 per 10 minutes and 500 per clock hour. Tokens
/// are per application *and* user: each practice has its own access and refresh token,
/// rotated on every refresh, revoked when that user authorises the application again. So
/// the budget is the application's and the tokens are each user's, and a client per
/// practice each with its own limiter would spend the application's budget several times
/// over.
///
/// # Shared by every user's client
/// - The [`RateLimiter`] ([`limiter`](Self::limiter)): in memory by default, or the one
///   given to [`rate_limiter`](DrChronoAppBuilder::rate_limiter) (a file or Redis backend,
///   shared with other processes and hosts of the application). A 429 pauses every
///   practice, as DrChrono's counter does.
/// - The [`RetryPolicy`]: its budget and its statistics.
/// - The transport (one connection pool) and the configuration: URLs, credentials,
///   timeouts, limits, refresh timing.
///
/// # Each user's own
/// - The token family: a [`TokenManager`](crate::oauth::TokenManager) per client, with its
///   own single-flight refresh. A client sends its own user's token and no other: it has no
///   other.
/// - Its token store (from [`token_stores`](DrChronoAppBuilder::token_stores), or given to
///   the user's builder; default: in memory), its refresh lease, and its re-authorisation
///   hook ([`UserClientBuilder::on_reauthorization`], after the application's
///   [`on_reauthorization`](DrChronoAppBuilder::on_reauthorization)). A user who authorises
///   the application again revokes that user's tokens only: that user's client fails with
///   [`ReauthorizationRequired`](crate::DrChronoError::ReauthorizationRequired) until
///   it is given the new pair (`client.layer().token_manager().set_tokens(..)`); the other
///   users' clients never notice.
/// - Its [`Tenant`]: every request of the client carries `Tenant` (the user's key) in its
///   extensions, each attempt and redirect included, so the limiter knows whose request it
///   is and divides the budget among the practices (see [`Tenant`] and
///   [`FairShares`](drchrono_ratelimit::FairShares)). Per-tenant status comes from the
///   limiter too: [`RateLimiter::tenants`].
///
/// Build one client per user and keep it (clones share its token family). A second client
/// built for the same user is a second holder of that family, like a second process: it
/// needs the same durable store and a shared lease, or the two rotate each other's refresh
/// token out.
///
/// Cheap to clone; `Debug` prints no secret.
#[derive(Clone)]
pub struct DrChronoApp {
    inner: Arc<Inner>,
}

struct Inner {
    template: DrChronoClientBuilder,
    limiter: RateLimiter,
    stores: Option<StoreFactory>,
    leases: Option<LeaseFactory>,
    hook: Option<AppHook>,
    connect: Connect,
}

impl fmt::Debug for DrChronoApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("DrChronoApp")
            .field("template", &inner.template)
            .field("limiter", &inner.limiter)
            .field("has_token_stores", &inner.stores.is_some())
            .field("has_refresh_leases", &inner.leases.is_some())
            .field("has_hook", &inner.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl DrChronoApp {
    /// Configures an application.
    pub fn builder() -> DrChronoAppBuilder {
        DrChronoAppBuilder {
            client: DrChronoClientBuilder::default(),
            stores: None,
            leases: None,
            hook: None,
        }
    }

    /// Starts the client of `user`: the key naming that practice (or user) in the
    /// application, its [`Tenant`]. Use a stable identifier (the practice's or user's id),
    /// never a token.
    pub fn user(&self, user: impl Into<Tenant>) -> UserClientBuilder<'_> {
        UserClientBuilder {
            app: self,
            user: user.into(),
            tokens: None,
            store: None,
            lease: None,
            hook: None,
        }
    }

    /// The application's rate limiter, which every user's client shares:
    /// [`RateLimiter::status`] is what is left of the application's budget, and
    /// [`RateLimiter::tenants`] each practice's part of it (its key is the user's
    /// [`Tenant`]).
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }
}

/// Configures a [`DrChronoApp`]: the application's credentials, URLs, limits and timeouts,
/// its rate limiter, and where each user's tokens are kept. Every option but the
/// credentials has a default; each applies to every user's client, as the option of the
/// same name on [`DrChronoClientBuilder`] does.
#[must_use]
pub struct DrChronoAppBuilder {
    client: DrChronoClientBuilder,
    stores: Option<StoreFactory>,
    leases: Option<LeaseFactory>,
    hook: Option<AppHook>,
}

impl fmt::Debug for DrChronoAppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrChronoAppBuilder")
            .field("client", &self.client)
            .field("has_token_stores", &self.stores.is_some())
            .field("has_refresh_leases", &self.leases.is_some())
            .field("has_hook", &self.hook.is_some())
            .finish()
    }
}

/// Setters that configure the template every user's client is built from.
macro_rules! template_options {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $($arg: $ty),*) -> Self {
                self.client = self.client.$name($($arg),*);
                self
            }
        )*
    };
}

impl DrChronoAppBuilder {
    template_options! {
        /// The application's OAuth client id and secret (required): the same for every
        /// user.
        fn credentials(client_id: impl Into<String>, client_secret: impl Into<SecretString>);
        /// The API base URL (default: [`DRCHRONO_API_URL`](crate::DRCHRONO_API_URL)), the
        /// only origin the access tokens are sent to. See
        /// [`DrChronoClientBuilder::base_url`].
        fn base_url(url: impl Into<String>);
        /// The token endpoint (default: `https://drchrono.com/o/token/`). See
        /// [`DrChronoClientBuilder::token_url`].
        fn token_url(url: impl Into<String>);
        /// Whether a plain `http` URL may name a host that is not loopback (default:
        /// **`false`**). See [`DrChronoClientBuilder::allow_insecure_http`].
        fn allow_insecure_http(allow: bool);
        /// How long setting up a new connection may take (default: **10 s**), for the
        /// transport [`build`](Self::build) creates. See
        /// [`DrChronoClientBuilder::connect_timeout`].
        fn connect_timeout(timeout: Duration);
        /// How long each attempt may wait for its response head (default: **60 s**). See
        /// [`DrChronoClientBuilder::response_head_timeout`].
        fn response_head_timeout(timeout: Duration);
        /// How long reading a success body may take (default: **60 s**). See
        /// [`DrChronoClientBuilder::body_read_timeout`].
        fn body_read_timeout(timeout: Duration);
        /// The largest success body read, in bytes (default: **32 MiB**). See
        /// [`DrChronoClientBuilder::max_body_size`].
        fn max_body_size(bytes: usize);
        /// How many redirects one request follows (default: **5**). See
        /// [`DrChronoClientBuilder::max_redirects`].
        fn max_redirects(redirects: usize);
        /// The rules of the application's rate limiter, kept in memory (default:
        /// [`RateLimitConfig::default`]: 9 / s, 290 / 600 s, 500 per clock hour).
        fn rate_limit(config: RateLimitConfig);
        /// The application's rate limiter, e.g. one on a file or Redis backend shared with
        /// the application's other processes and hosts (default: DrChrono's rules in
        /// memory). [`DrChronoApp::limiter`] gives it back.
        fn rate_limiter(limiter: RateLimiter);
        /// The retry policy, shared by every user's client (default:
        /// [`RetryPolicy::default`]).
        fn retry(policy: RetryPolicy);
        /// The classifier's options (default: a 64 KiB error-body limit).
        fn classify(classify: ErrorClassifyLayer);
        /// When each user's tokens are refreshed before expiry (default:
        /// `min(5 min, 10 %)` of the lifetime).
        fn refresh_timing(timing: RefreshTiming);
    }

    /// Where each user's tokens are kept: `stores(user)` gives the store of `user`'s token
    /// family, called once per client built (default: a new in-memory store per client,
    /// which nothing outlives). Each user needs a store of its own: a file per user, or a
    /// Redis key per user on one connection. A store given to
    /// [`UserClientBuilder::token_store`] wins.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use drchrono_tower::DrChronoApp;
    /// use drchrono_tower::oauth::FileTokenStore;
    ///
    /// use drchrono_tower::ratelimit::Tenant;
    ///
    /// /// A file name for `user`'s tokens, whatever its key holds: every byte but letters,
    /// /// digits, `-` and `_` hex-encoded, so that no key (`../42`) names another file.
    /// fn file_name(user: &Tenant) -> String {
    ///     let mut name: String = user
    ///         .as_str()
    ///         .bytes()
    ///         .map(|b| match b {
    ///             b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => char::from(b).to_string(),
    ///             _ => format!("%{b:02x}"),
    ///         })
    ///         .collect();
    ///     name.push_str(".json");
    ///     name
    /// }
    ///
    /// let dir = std::path::PathBuf::from("/var/lib/my-app/tokens");
    /// let app = DrChronoApp::builder()
    ///     .credentials("client-id", "client-secret".to_owned())
    ///     .token_stores(move |user| Arc::new(FileTokenStore::new(dir.join(file_name(user)))))
    ///     .build()?;
    /// assert_eq!(file_name(&Tenant::new("../42")), "%2e%2e%2f42.json");
    /// # Ok::<(), drchrono_tower::BuildError>(())
    /// ```
    pub fn token_stores(
        mut self,
        stores: impl Fn(&Tenant) -> Arc<dyn TokenStore> + Send + Sync + 'static,
    ) -> Self {
        self.stores = Some(Arc::new(stores));
        self
    }

    /// Who may refresh each user's tokens when several processes share that user's store:
    /// `leases(user)` gives the lease of `user`'s token family (default: this process
    /// only). A lease given to [`UserClientBuilder::refresh_lease`] wins. See
    /// [`RefreshLease`].
    pub fn refresh_leases(
        mut self,
        leases: impl Fn(&Tenant) -> Arc<dyn RefreshLease> + Send + Sync + 'static,
    ) -> Self {
        self.leases = Some(Arc::new(leases));
        self
    }

    /// Called with the user and the event when a user's refresh token is rejected and that
    /// user must authorise the application again (once per rejected refresh token), before
    /// the user's own [`on_reauthorization`](UserClientBuilder::on_reauthorization) hook.
    /// Default: none. Runs on the refreshing task: keep it short and non-blocking.
    pub fn on_reauthorization(
        mut self,
        hook: impl Fn(&Tenant, &ReauthorizationEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Builds the application over the default HTTPS transport, one connection pool for
    /// every user (see [`DrChronoClientBuilder::build`]).
    ///
    /// # Errors
    /// [`BuildError::MissingCredentials`], [`BuildError::InvalidUrl`],
    /// [`BuildError::InsecureUrl`] or [`BuildError::Transport`].
    pub fn build(self) -> Result<DrChronoApp, BuildError> {
        let transport = https_client_with_connect_timeout(self.client.connect_timeout_value())
            .map_err(BuildError::Transport)?;
        self.build_with_transport(transport)
    }

    /// Builds the application over any transport (see
    /// [`DrChronoClientBuilder::build_with_transport`]); every user's client and token
    /// refresh goes through clones of it.
    ///
    /// # Errors
    /// [`BuildError::MissingCredentials`], [`BuildError::InvalidUrl`] or
    /// [`BuildError::InsecureUrl`].
    pub fn build_with_transport<S, B>(self, transport: S) -> Result<DrChronoApp, BuildError>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut template = self.client;
        template.validate()?;
        let limiter = template.shared_rate_limiter();
        template.share_retry_policy();
        let connect: Connect = Arc::new(move |client: DrChronoClientBuilder| {
            client.build_with_transport(transport.clone())
        });
        Ok(DrChronoApp {
            inner: Arc::new(Inner {
                template,
                limiter,
                stores: self.stores,
                leases: self.leases,
                hook: self.hook,
                connect,
            }),
        })
    }

    /// Builds the application over its own [`reqwest::Client`](::reqwest::Client) (feature
    /// `reqwest`; see [`DrChronoClientBuilder::build_with_reqwest`]).
    ///
    /// # Errors
    /// [`BuildError::MissingCredentials`], [`BuildError::InvalidUrl`] or
    /// [`BuildError::InsecureUrl`].
    #[cfg(feature = "reqwest")]
    pub fn build_with_reqwest(self, client: ::reqwest::Client) -> Result<DrChronoApp, BuildError> {
        self.build_with_transport(crate::ReqwestTransport::new(client))
    }
}

/// Builds the [`DrChronoClient`] of one user of a [`DrChronoApp`]
/// ([`DrChronoApp::user`]): that user's tokens, store, lease and hook; everything else is
/// the application's.
#[must_use]
pub struct UserClientBuilder<'a> {
    app: &'a DrChronoApp,
    user: Tenant,
    tokens: Option<TokenSet>,
    store: Option<Arc<dyn TokenStore>>,
    lease: Option<Arc<dyn RefreshLease>>,
    hook: Option<UserHook>,
}

impl fmt::Debug for UserClientBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserClientBuilder")
            .field("user", &self.user)
            .field("has_tokens", &self.tokens.is_some())
            .field("has_store", &self.store.is_some())
            .field("has_lease", &self.lease.is_some())
            .field("has_hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl UserClientBuilder<'_> {
    /// Start from the user's refresh token only: the first request refreshes it.
    pub fn refresh_token(mut self, refresh_token: impl Into<SecretString>) -> Self {
        self.tokens = Some(TokenSet::from_refresh_token(refresh_token));
        self
    }

    /// Start from the user's token pair (e.g. the one the OAuth flow just returned).
    pub fn tokens(mut self, tokens: TokenSet) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Where this user's tokens are kept (default: the application's
    /// [`token_stores`](DrChronoAppBuilder::token_stores), else in memory). A stored pair
    /// wins over the starting tokens.
    pub fn token_store(self, store: impl TokenStore) -> Self {
        self.shared_token_store(Arc::new(store))
    }

    /// Like [`token_store`](Self::token_store), for a store shared with other code.
    pub fn shared_token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Who may refresh this user's tokens (default: the application's
    /// [`refresh_leases`](DrChronoAppBuilder::refresh_leases), else this process only).
    pub fn refresh_lease(mut self, lease: Arc<dyn RefreshLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Called once per rejected refresh token when this user must authorise the application
    /// again (after the application's hook, if any). Default: none.
    pub fn on_reauthorization(
        mut self,
        hook: impl Fn(&ReauthorizationEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The user's client: its own token family, on the application's limiter, retry
    /// policy and transport; every request it sends carries the user's [`Tenant`].
    ///
    /// # Errors
    /// [`BuildError::MissingTokens`] when neither tokens nor a store (the user's or the
    /// application's) were given.
    pub fn build(self) -> Result<DrChronoClient, BuildError> {
        let app = &*self.app.inner;
        let user = self.user;
        let mut client = app.template.clone().tenant(user.clone());
        if let Some(tokens) = self.tokens {
            client = client.tokens(tokens);
        }
        if let Some(store) = self.store.or_else(|| app.stores.as_ref().map(|f| f(&user))) {
            client = client.shared_token_store(store);
        }
        if let Some(lease) = self.lease.or_else(|| app.leases.as_ref().map(|f| f(&user))) {
            client = client.refresh_lease(lease);
        }
        let app_hook = app.hook.clone();
        let user_hook = self.hook;
        if app_hook.is_some() || user_hook.is_some() {
            client = client.on_reauthorization(move |event| {
                if let Some(hook) = &app_hook {
                    hook(&user, event);
                }
                if let Some(hook) = &user_hook {
                    hook(event);
                }
            });
        }
        (app.connect)(client)
    }
}
