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

/// The API user the simulator's starting grant belongs to: the practice's doctor.
pub const DEFAULT_USER: &str = "simdoctor";

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
    pub(crate) user: String,
}

#[derive(Debug)]
struct RefreshToken {
    scope: String,
    user: String,
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
    /// Successful refresh grants per user.
    refreshes: HashMap<String, u64>,
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
            refreshes: HashMap::new(),
        }
    }

    /// Registers a refresh token with no access token yet (the simulator's starting grant).
    pub(crate) fn seed_refresh(&mut self, rng: &mut StdRng, scope: &str) -> String {
        let token = random_token(rng);
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                scope: scope.to_owned(),
                user: DEFAULT_USER.to_owned(),
            },
        );
        token
    }

    /// Revokes every token of `user` (tokens are per application and user, as in
    /// django-oauth-toolkit). A revoked token and an unknown one get the same answers, so
    /// revoking is forgetting.
    fn revoke_user(&mut self, user: &str) {
        self.access.retain(|_, t| t.user != user);
        self.refresh.retain(|_, t| t.user != user);
    }

    fn issue(
        &mut self,
        rng: &mut StdRng,
        now: Instant,
        user: &str,
        scope: String,
    ) -> TokenResponse {
        let access_token = random_token(rng);
        let refresh_token = random_token(rng);
        self.access.insert(
            access_token.clone(),
            AccessToken {
                expires_at: now + self.lifetime,
                scope: scope.split_whitespace().map(str::to_owned).collect(),
                user: user.to_owned(),
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                scope: scope.clone(),
                user: user.to_owned(),
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
        let (scope, user) = match self.refresh.get(refresh_token) {
            Some(t) => (t.scope.clone(), t.user.clone()),
            None => return Err(RefreshError::InvalidGrant),
        };
        self.revoke_user(&user);
        *self.refreshes.entry(user.clone()).or_default() += 1;
        Ok(self.issue(rng, now, &user, scope))
    }

    /// Successful refresh grants of `user`'s tokens.
    pub(crate) fn refreshes_of(&self, user: &str) -> u64 {
        self.refreshes.get(user).copied().unwrap_or(0)
    }

    /// `user` went through OAuth again: every earlier token of that user is revoked.
    pub(crate) fn reauthorize(
        &mut self,
        rng: &mut StdRng,
        now: Instant,
        user: &str,
        scope: &str,
    ) -> TokenResponse {
        self.revoke_user(user);
        self.issue(rng, now, user, scope.to_owned())
    }

    /// Checks an access token; on success returns it (scopes and user).
    pub(crate) fn authenticate(
        &self,
        token: Option<&str>,
        now: Instant,
    ) -> Result<&AccessToken, Rejection> {
        let token = token.ok_or(Rejection::Missing)?;
        match self.access.get(token) {
            None => Err(Rejection::Invalid),
            Some(t) if now >= t.expires_at => Err(Rejection::Expired),
            Some(t) => Ok(t),
        }
    }
}
