//! [`TokenSet`]: one access/refresh token pair, with its expiry and generation.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One OAuth token pair of a DrChrono user, as the layer holds and persists it.
///
/// `generation` numbers the pairs of one token family: every refresh (and every
/// [`TokenManager::set_tokens`](crate::TokenManager::set_tokens)) installs the next
/// generation, and stores compare-and-swap on it. `0` means "never stored".
///
/// `Debug` prints the generation, expiry and scope only; the tokens are never printed.
/// `Serialize` writes the tokens in clear text (that is what a store needs): only write
/// it where the secrets belong (a 0600 file, Redis).
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenSet {
    /// The bearer token attached to API requests. Empty when only a refresh token is known.
    pub access_token: SecretString,
    /// The refresh token; DrChrono rotates it on every refresh.
    pub refresh_token: SecretString,
    /// When the access token expires (wall clock).
    pub expires_at: SystemTime,
    /// When the access token was issued (wall clock), when known: with `expires_at` it gives
    /// the token's lifetime, from which the proactive-refresh margin is computed.
    pub issued_at: Option<SystemTime>,
    /// The scopes granted, space separated, when the server said.
    pub scope: Option<String>,
    /// The generation of this pair in its token family.
    pub generation: u64,
}

impl TokenSet {
    /// A pair with the given tokens and expiry, no scope, generation 0.
    pub fn new(
        access_token: impl Into<SecretString>,
        refresh_token: impl Into<SecretString>,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: refresh_token.into(),
            expires_at,
            issued_at: None,
            scope: None,
            generation: 0,
        }
    }

    /// Only a refresh token (e.g. from configuration): the first request refreshes it.
    pub fn from_refresh_token(refresh_token: impl Into<SecretString>) -> Self {
        Self::new(SecretString::from(String::new()), refresh_token, UNIX_EPOCH)
    }

    /// Sets the granted scopes.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets when the access token was issued.
    #[must_use]
    pub fn with_issued_at(mut self, issued_at: SystemTime) -> Self {
        self.issued_at = Some(issued_at);
        self
    }

    /// Sets the generation.
    #[must_use]
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Whether an access token is present (a pair built with
    /// [`TokenSet::from_refresh_token`] has none).
    pub(crate) fn has_access_token(&self) -> bool {
        !self.access_token.expose_secret().is_empty()
    }

    /// The access token's lifetime (`expires_at - issued_at`), when `issued_at` is known.
    pub fn lifetime(&self) -> Option<Duration> {
        self.issued_at
            .and_then(|issued| self.expires_at.duration_since(issued).ok())
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("expires_at", &unix_seconds(self.expires_at))
            .field("issued_at", &self.issued_at.map(unix_seconds))
            .field("scope", &self.scope)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Whole seconds since the Unix epoch; instants before it count as 0.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The instant `seconds` after the Unix epoch; beyond what `SystemTime` holds (a foreign or
/// hand-edited store), the latest instant it holds within 10 000 years.
fn from_unix_seconds(seconds: u64) -> SystemTime {
    const LATEST: u64 = 10_000 * 365 * 24 * 3600;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(LATEST))
}

/// The serialised form, borrowing the secrets for as short as possible.
#[derive(Serialize)]
struct TokenSetRef<'a> {
    access_token: &'a str,
    refresh_token: &'a str,
    expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    generation: u64,
}

/// The deserialised form: secrets go straight into `SecretString`.
#[derive(Deserialize)]
struct TokenSetOwned {
    access_token: SecretString,
    refresh_token: SecretString,
    expires_at: u64,
    #[serde(default)]
    issued_at: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    generation: u64,
}

/// JSON object `{"access_token","refresh_token","expires_at","issued_at"?,"scope"?,"generation"}`,
/// times in whole seconds since the Unix epoch.
impl Serialize for TokenSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TokenSetRef {
            access_token: self.access_token.expose_secret(),
            refresh_token: self.refresh_token.expose_secret(),
            expires_at: unix_seconds(self.expires_at),
            issued_at: self.issued_at.map(unix_seconds),
            scope: self.scope.as_deref(),
            generation: self.generation,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TokenSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let owned = TokenSetOwned::deserialize(deserializer)?;
        Ok(Self {
            access_token: owned.access_token,
            refresh_token: owned.refresh_token,
            expires_at: from_unix_seconds(owned.expires_at),
            issued_at: owned.issued_at.map(from_unix_seconds),
            scope: owned.scope,
            generation: owned.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenSet {
        TokenSet::new("acc-SECRET-1", "ref-SECRET-2", from_unix_seconds(2_000))
            .with_issued_at(from_unix_seconds(1_000))
            .with_scope("calendar:read")
            .with_generation(7)
    }

    #[test]
    fn an_expiry_beyond_what_system_time_holds_loads_without_a_panic() {
        let json = format!(
            r#"{{"access_token":"a","refresh_token":"r","expires_at":{},"generation":1}}"#,
            u64::MAX
        );
        let tokens: TokenSet = serde_json::from_str(&json).unwrap();
        assert!(tokens.expires_at > SystemTime::now());
    }

    #[test]
    fn serde_round_trip_keeps_every_field() {
        let json = serde_json::to_string(&sample()).unwrap();
        let back: TokenSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.access_token.expose_secret(), "acc-SECRET-1");
        assert_eq!(back.refresh_token.expose_secret(), "ref-SECRET-2");
        assert_eq!(back.expires_at, from_unix_seconds(2_000));
        assert_eq!(back.issued_at, Some(from_unix_seconds(1_000)));
        assert_eq!(back.scope.as_deref(), Some("calendar:read"));
        assert_eq!(back.generation, 7);
        assert_eq!(back.lifetime(), Some(Duration::from_secs(1_000)));
    }

    #[test]
    fn debug_never_prints_tokens() {
        let debug = format!("{:?} {:#?}", sample(), sample());
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("generation: 7"));
    }

    #[test]
    fn refresh_token_only_has_no_access_token() {
        let set = TokenSet::from_refresh_token("r");
        assert!(!set.has_access_token());
        assert_eq!(set.expires_at, UNIX_EPOCH);
        assert!(sample().has_access_token());
    }

    #[test]
    fn missing_fields_are_errors_and_unknown_fields_are_ignored() {
        assert!(serde_json::from_str::<TokenSet>(r#"{"access_token":"a"}"#).is_err());
        let extra =
            r#"{"access_token":"a","refresh_token":"r","expires_at":1,"generation":1,"x":1}"#;
        let set: TokenSet = serde_json::from_str(extra).unwrap();
        assert_eq!(set.generation, 1);
        assert_eq!(set.scope, None);
    }
}
