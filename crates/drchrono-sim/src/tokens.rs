//! OAuth tokens as django-oauth-toolkit keeps them: refresh rotation revokes the old
//! refresh token and every access token issued before; re-authorisation revokes everything.

use std::collections::HashMap;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The scope a new grant gets when none is asked for: everything the simulator serves.
pub const DEFAULT_SCOPE: &str = "user:read patients:read patients:write calendar:read \
                                 calendar:write clinical:read clinical:write";

/// The body of a successful token response, as DrChrono sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The new refresh token; the one used to get this response is now revoked.
    pub refresh_token: String,
    /// Space-separated scopes granted.
    pub scope: String,
}

#[derive(Debug)]
pub(crate) struct AccessToken {
    pub(crate) expires_at: Instant,
    pub(crate) scope: Vec<String>,
}

#[derive(Debug)]
struct RefreshToken {
    scope: String,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    Missing,
    Invalid,
    Expired,
}

/// Why a refresh grant failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshError {
    InvalidGrant,
}

#[derive(Debug)]
pub(crate) struct Tokens {
    lifetime: Duration,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
}

fn random_token(rng: &mut StdRng) -> String {
    Alphanumeric.sample_string(rng, 30)
}

impl Tokens {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            access: HashMap::new(),
            refresh: HashMap::new(),
        }
    }

    /// Registers a refresh token with no access token yet (the simulator's starting grant).
    pub(crate) fn seed_refresh(&mut self, rng: &mut StdRng, scope: &str) -> String {
        let token = random_token(rng);
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                scope: scope.to_owned(),
            },
        );
        token
    }

    /// Revokes every token. A revoked token and an unknown one get the same answers, so
    /// revoking is forgetting.
    fn revoke_all(&mut self) {
        self.access.clear();
        self.refresh.clear();
    }

    fn issue(&mut self, rng: &mut StdRng, now: Instant, scope: String) -> TokenResponse {
        let access_token = random_token(rng);
        let refresh_token = random_token(rng);
        self.access.insert(
            access_token.clone(),
            AccessToken {
                expires_at: now + self.lifetime,
                scope: scope.split_whitespace().map(str::to_owned).collect(),
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                scope: scope.clone(),
            },
        );
        TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: self.lifetime.as_secs(),
            refresh_token,
            scope,
        }
    }

    /// The refresh grant: rotation revokes the used refresh token and every earlier access
    /// token of the user.
    pub(crate) fn refresh(
        &mut self,
        rng: &mut StdRng,
        now: Instant,
        refresh_token: &str,
    ) -> Result<TokenResponse, RefreshError> {
        let scope = match self.refresh.get(refresh_token) {
            Some(t) => t.scope.clone(),
            None => return Err(RefreshError::InvalidGrant),
        };
        self.revoke_all();
        Ok(self.issue(rng, now, scope))
    }

    /// The user went through OAuth again: every earlier token is revoked.
    pub(crate) fn reauthorize(
        &mut self,
        rng: &mut StdRng,
        now: Instant,
        scope: &str,
    ) -> TokenResponse {
        self.revoke_all();
        self.issue(rng, now, scope.to_owned())
    }

    /// Checks an access token; on success returns its scopes.
    pub(crate) fn authenticate(
        &self,
        token: Option<&str>,
        now: Instant,
    ) -> Result<&[String], Rejection> {
        let token = token.ok_or(Rejection::Missing)?;
        match self.access.get(token) {
            None => Err(Rejection::Invalid),
            Some(t) if now >= t.expires_at => Err(Rejection::Expired),
            Some(t) => Ok(&t.scope),
        }
    }
}
