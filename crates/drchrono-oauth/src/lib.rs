//! `OAuthRefreshLayer`: single-flight, rotation-safe DrChrono token refresh, with durable
//! token stores.
//!
//! DrChrono's access tokens live 48 hours; a refresh revokes the previous access token and
//! rotates the refresh token (a second use of the old one is `invalid_grant`); a user's
//! re-authorisation revokes everything; and DrChrono asks that "only one job runs the
//! refresh". This crate does all of that for any tower HTTP client:
//!
//! - [`TokenClient`] speaks the refresh grant over the application's own HTTP service and
//!   types every outcome (`invalid_grant` → `ReauthorizationRequired`, `invalid_client` →
//!   `InvalidClient`, transient failures retried with [`RefreshBackoff`], malformed
//!   responses → [`MalformedTokenResponse`]).
//! - [`TokenManager`] holds one token family: loads it from a [`TokenStore`]
//!   ([`MemoryTokenStore`], [`FileTokenStore`]: atomic, fsynced, mode 0600), refreshes
//!   proactively ([`RefreshTiming`]: `min(5 min, 10 %)` before expiry) with exactly one
//!   refresh in flight, persists the rotated pair **before** using it, and stops refreshing
//!   on `invalid_grant`, telling the application once per rejected refresh token (hook +
//!   [`AuthStatus`] watch) after the store was re-read and held nothing newer; a newer
//!   pair another process stores later is adopted (the store is re-read at most every 5 s).
//! - [`OAuthRefreshLayer`] attaches `Authorization: Bearer …` (marked sensitive) and
//!   triages 401s: a request that carried an older token is marked
//!   `replay_with_current_token` without a refresh; one that carried the current token
//!   causes one single-flight refresh first. The retry layer performs the replay. A 401
//!   that a new token does not cure causes at most one refresh per generation and per
//!   minute ([`RefreshTiming::unauthorized_refresh_interval`]): never a refresh loop.
//!
//! Several processes or hosts sharing one token family (two workers, a web tier and a sync
//! job) use the `redis` feature: `RedisTokenStore::connect(url, key)` holds the pair (the
//! source of truth: compare-and-swap on the generation in a Lua script) and
//! `RedisRefreshLease::connect(url, key, ttl)` lets exactly one process call the token
//! endpoint; the others wait for the lease, re-read the store and adopt the new pair, never
//! sending a refresh token another process already used. A holder that dies stops renewing
//! the lease, which expires after its TTL; another process takes over. See the README for
//! what happens when Redis is unreachable or loses data.
//!
//! No `Debug` output or `tracing` event contains a token or the client secret: events
//! carry generation numbers only.
//!
//! # Errors
//! The layer's error type is [`DrChronoError`]. A failure that concerns the whole token
//! family is surfaced to every caller waiting on it:
//! - `invalid_grant` → [`ReauthorizationRequired`]; `invalid_client` → [`InvalidClient`];
//!   any other OAuth error → [`OAuth`] (never retried);
//! - a transient failure of the token endpoint (5xx, 429, timeout, connection error, after
//!   [`RefreshBackoff`]'s retries), or a malformed token response
//!   ([`MalformedTokenResponse`]) → [`Transport`] with `not_sent: true` (the API request
//!   was not sent with a valid token, so the retry layer may retry any method) and a
//!   [`RefreshFailed`] source holding the token endpoint's own error. A malformed response
//!   that carries a rotated refresh token (its access token absent, empty, not header-safe
//!   or not `Bearer`) has still rotated the pair: that refresh token is persisted (or kept
//!   pending) first, in a pair without an access token, and the next request refreshes
//!   with it;
//! - the rotated pair could not be persisted → [`Transport`] with `not_sent: true` and a
//!   [`StoreError`] source; the pair stays in memory and the next request retries the save
//!   before using it.
//!
//! [`DrChronoError`]: drchrono_core::DrChronoError
//! [`ReauthorizationRequired`]: drchrono_core::DrChronoError::ReauthorizationRequired
//! [`InvalidClient`]: drchrono_core::DrChronoError::InvalidClient
//! [`OAuth`]: drchrono_core::DrChronoError::OAuth
//! [`Transport`]: drchrono_core::DrChronoError::Transport
//!
//! # Example
//! Against the simulator over loopback: start from a refresh token only; the first request
//! refreshes it, and the rotated pair lands in a 0600 file.
//! ```
//! use bytes::Bytes;
//! use drchrono_classify::ErrorClassifyLayer;
//! use drchrono_core::DrChronoError;
//! use drchrono_oauth::{
//!     AuthStatus, ClientCredentials, FileTokenStore, OAuthRefreshLayer, TokenClient,
//!     TokenManager, TokenSet,
//! };
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
//! let credentials = sim.credentials();
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//!
//! let client = TokenClient::new(
//!     http.clone(),
//!     ClientCredentials::new(credentials.client_id.clone(), credentials.client_secret.clone()),
//! )
//! .token_url(sim.token_url().parse()?);
//! let dir = tempfile::tempdir()?;
//! let manager = TokenManager::builder(client)
//!     .store(FileTokenStore::new(dir.path().join("tokens.json")))
//!     .initial_tokens(TokenSet::from_refresh_token(credentials.refresh_token.clone()))
//!     .on_reauthorization(|event| eprintln!("user must re-authorise: {:?}", event.reason))
//!     .build();
//!
//! let api = ServiceBuilder::new()
//!     .layer(OAuthRefreshLayer::new(manager.clone()))
//!     .layer(ErrorClassifyLayer::new())
//!     .service(http);
//! let request = http::Request::get(format!("{}/api/users/current", sim.base_url()))
//!     .body(Full::new(Bytes::new()))?;
//! let response = api.oneshot(request).await?;
//! assert_eq!(response.status(), http::StatusCode::OK);
//! // The configured refresh token was generation 1; the rotated pair is generation 2.
//! assert_eq!(*manager.status().borrow(), AuthStatus::Active { generation: 2 });
//! assert_eq!(sim.stats().token_refreshes, 1);
//!
//! // After the user re-authorises elsewhere, the next refresh fails for good: typed.
//! sim.simulator().reauthorize(None);
//! match manager.refresh_now().await {
//!     Err(DrChronoError::ReauthorizationRequired { .. }) => {} // run the OAuth flow, then set_tokens
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod active;
mod backoff;
mod client;
mod error;
mod future;
mod layer;
mod lease;
mod manager;
mod persist;
#[cfg(feature = "redis")]
mod redis;
mod refresh;
mod response;
mod service;
mod status;
mod store;
mod timing;
mod token;
mod unauthorized;

pub use backoff::RefreshBackoff;
pub use client::{ClientCredentials, DRCHRONO_TOKEN_URL, TokenClient};
#[cfg(feature = "redis")]
pub use drchrono_core::redis::{RedisConnect, RedisConnection};
pub use error::{MalformedTokenResponse, RefreshFailed};
pub use future::ResponseFuture;
pub use layer::OAuthRefreshLayer;
pub use lease::{LocalLease, RefreshLease};
pub use manager::{Bearer, TokenManager, TokenManagerBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisRefreshLease, RedisTokenStore};
pub use response::TokenGrant;
pub use service::OAuthRefresh;
pub use status::{AuthStatus, ReauthorizationEvent, ReauthorizationReason};
pub use store::{FileTokenStore, MemoryTokenStore, STALE_TEMP_AGE, StoreError, TokenStore};
pub use timing::RefreshTiming;
pub use token::TokenSet;
