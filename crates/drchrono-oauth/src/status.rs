//! [`AuthStatus`] and [`ReauthorizationEvent`]: what the application is told.

use std::sync::Arc;
use std::time::SystemTime;

/// The state of a token family, published on a `tokio::sync::watch` channel by
/// [`TokenManager::status`](crate::TokenManager::status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthStatus {
    /// Nothing loaded yet: tokens are loaded on the first request.
    Unloaded,
    /// A pair is installed and persisted.
    Active {
        /// Its generation.
        generation: u64,
    },
    /// A refreshed pair is held in memory but could not be persisted yet; requests fail
    /// (typed, retryable) until a save succeeds, which each request retries.
    PersistPending {
        /// Its generation.
        generation: u64,
    },
    /// Refreshing is impossible until the application installs new tokens with
    /// [`TokenManager::set_tokens`](crate::TokenManager::set_tokens), or another process
    /// saves a newer pair in the shared store (adopted at a later request, see
    /// [`RefreshTiming::store_recheck_interval`](crate::RefreshTiming::store_recheck_interval)).
    ReauthorizationRequired {
        /// Why.
        reason: ReauthorizationReason,
        /// The server's `error_description`, when it sent one.
        description: Option<String>,
    },
}

/// Why refreshing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReauthorizationReason {
    /// The refresh token was rejected (`invalid_grant`): revoked, or the user went through
    /// OAuth again. This user must authorise the application again.
    InvalidGrant,
    /// The client id or secret was rejected (`invalid_client`): the application's
    /// configuration is wrong; no user can be refreshed with it.
    InvalidClient,
    /// The store was empty and no initial tokens were configured.
    NoTokens,
}

impl ReauthorizationReason {
    /// A stable name, as logged: `invalid_grant`, `invalid_client`, `no_tokens`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidClient => "invalid_client",
            Self::NoTokens => "no_tokens",
        }
    }
}

/// Passed to the re-authorisation hook, once per rejected refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReauthorizationEvent {
    /// Why.
    pub reason: ReauthorizationReason,
    /// The generation whose refresh failed (0 when there were no tokens).
    pub generation: u64,
    /// The server's `error_description`, when it sent one.
    pub description: Option<String>,
    /// When (wall clock).
    pub at: SystemTime,
}

/// The re-authorisation hook: called when the family enters
/// [`AuthStatus::ReauthorizationRequired`], once per rejected refresh token.
pub(crate) type ReauthorizationHook = Arc<dyn Fn(&ReauthorizationEvent) + Send + Sync + 'static>;
