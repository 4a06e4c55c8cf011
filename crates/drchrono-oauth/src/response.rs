//! What one answer of the token endpoint means: a grant, a transient failure, or a final one.

use std::fmt;
use std::time::{Duration, SystemTime};

use drchrono_core::{BoxError, DrChronoError, ErrorContext, parse};
use http::{HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::MalformedTokenResponse;

/// A successful refresh grant, as the token endpoint sent it.
///
/// `Debug` never prints the tokens.
#[non_exhaustive]
pub struct TokenGrant {
    /// The new access token.
    pub access_token: SecretString,
    /// The rotated refresh token; `None` when the server kept the old one (RFC 6749 allows
    /// it; DrChrono always rotates).
    pub refresh_token: Option<SecretString>,
    /// `expires_in`; `None` when absent or unreadable (DrChrono always sends it).
    pub expires_in: Option<Duration>,
    /// The scopes granted, when sent.
    pub scope: Option<String>,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    Granted(TokenGrant),
    /// A 2xx answer whose access token cannot be used: the server has rotated the pair, so
    /// the attempt is never repeated (the refresh token it sent is dead), and its rotated
    /// refresh token must be kept. `error` is the [`MalformedTokenResponse`] failure.
    Rotated {
        rotated: Rotated,
        error: DrChronoError,
    },
    Retry {
        error: DrChronoError,
        retry_after: Option<Duration>,
    },
    Fail(DrChronoError),
}

/// The body as sent. `access_token` and the optional fields are read as any JSON value and
/// interpreted leniently (see [`parse_grant`]): by the time the body arrives the server has
/// rotated the pair, so an odd `expires_in`, or an access token that cannot be used, must
/// never throw away the new refresh token.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    access_token: Option<AccessToken>,
    #[serde(default)]
    token_type: Option<Value>,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    scope: Option<Value>,
}

/// `access_token` as sent: a string, or any other JSON value (then it cannot be used, but the
/// rotated refresh token beside it still can).
#[derive(Deserialize)]
#[serde(untagged)]
enum AccessToken {
    Text(SecretString),
    Other(IgnoredAny),
}

/// What is kept of a 2xx answer whose access token cannot be used: the rotated refresh
/// token (the server has spent the one it was sent) and the scopes.
///
/// `Debug` never prints the token.
pub(crate) struct Rotated {
    /// Why the access token cannot be used.
    pub(crate) reason: MalformedTokenResponse,
    /// The rotated refresh token; never empty.
    pub(crate) refresh_token: SecretString,
    /// The scopes granted, when sent as a string.
    pub(crate) scope: Option<String>,
}

impl fmt::Debug for Rotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotated")
            .field("reason", &self.reason)
            .field("refresh_token", &"[REDACTED]")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why [`parse_grant`] refused a 2xx body.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Nothing in the body can be kept.
    Malformed(MalformedTokenResponse),
    /// The access token cannot be used; the rotated refresh token can, and must be kept.
    Rotated(Rotated),
}

impl Refused {
    /// Why the body was refused.
    pub(crate) fn reason(&self) -> &MalformedTokenResponse {
        match self {
            Self::Malformed(reason) => reason,
            Self::Rotated(rotated) => &rotated.reason,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.reason(), f)
    }
}

/// Parses a 2xx body.
///
/// A grant has a non-empty, header-safe `access_token` string of type `Bearer` (an absent
/// `token_type` counts as `Bearer`) and, when sent, a non-empty `refresh_token` string;
/// anything else is refused with the [`MalformedTokenResponse`] a strict reading gives (an
/// absent or non-string token: `NotJson`). By the time a 2xx body arrives the server has
/// rotated the pair, so a body whose access token cannot be used but that carries a
/// non-empty `refresh_token` string is [`Refused::Rotated`], which keeps that refresh
/// token; only one without it (absent, empty, not a string) is [`Refused::Malformed`].
///
/// The optional fields are read leniently; the odd ones are reported in one `warn` event
/// per grant that names each field and its JSON type, never a value:
/// - `expires_in`: a non-negative integer; else an integer-valued string (`"7200"`,
///   surrounding whitespace ignored) or a finite non-negative float (`7200.9`), rounded
///   *down* to whole seconds (the token is then refreshed at most a second early, never
///   sent after the server's expiry). Values past `u64::MAX` seconds saturate (and the
///   refresh caps the lifetime at a year). Anything else (a negative number, `"-1"`,
///   `"2h"`, `"7200.0"`, `true`, an array…) is taken as absent, as `null` is: the lifetime
///   is then
///   [`RefreshTiming::assumed_lifetime`](crate::RefreshTiming::assumed_lifetime).
/// - `token_type` and `scope`: a string; any other type is taken as absent (a `token_type`
///   *string* other than `Bearer` is still refused, its refresh token kept).
pub(crate) fn parse_grant(body: &[u8]) -> Result<TokenGrant, Refused> {
    let (grant, odd) = read_grant(body)?;
    odd.report(grant.expires_in);
    Ok(grant)
}

/// [`parse_grant`] without the report of odd fields.
fn read_grant(body: &[u8]) -> Result<(TokenGrant, Oddities), Refused> {
    // A JSON object only: serde's derived reader also takes an array by field position
    // (`["x"]` would read as a grant of access token `x`).
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Refused::Malformed(MalformedTokenResponse::NotJson));
    }
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|_| Refused::Malformed(MalformedTokenResponse::NotJson))?;
    let mut odd = Oddities::default();
    let token_type = odd.string("token_type", wire.token_type);
    let scope = odd.string("scope", wire.scope);
    let expires_in = wire.expires_in.and_then(|value| odd.seconds(&value));
    let (refresh_token, refresh_is_empty) = match wire.refresh_token {
        Some(refresh) if refresh.expose_secret().is_empty() => (None, true),
        refresh => (refresh, false),
    };
    let access_token = match usable_access_token(wire.access_token, token_type.as_deref()) {
        Ok(access_token) => access_token,
        Err(reason) => {
            return Err(match refresh_token {
                Some(refresh_token) => Refused::Rotated(Rotated {
                    reason,
                    refresh_token,
                    scope,
                }),
                None => Refused::Malformed(reason),
            });
        }
    };
    if refresh_is_empty {
        return Err(Refused::Malformed(
            MalformedTokenResponse::EmptyRefreshToken,
        ));
    }
    let grant = TokenGrant {
        access_token,
        refresh_token,
        expires_in: expires_in.map(Duration::from_secs),
        scope,
    };
    Ok((grant, odd))
}

/// The access token, or why it cannot be used: absent or not a string (`NotJson`, as a
/// strict reading of the body says), a `token_type` string other than `Bearer`, empty or
/// not header-safe; checked in that order.
fn usable_access_token(
    token: Option<AccessToken>,
    token_type: Option<&str>,
) -> Result<SecretString, MalformedTokenResponse> {
    let Some(AccessToken::Text(token)) = token else {
        return Err(MalformedTokenResponse::NotJson);
    };
    if let Some(kind) = token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        let shown: String = kind.chars().take(32).collect();
        return Err(MalformedTokenResponse::UnsupportedTokenType(shown));
    }
    let text = token.expose_secret();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MalformedTokenResponse::InvalidAccessToken);
    }
    Ok(token)
}

/// The optional fields of a grant that had an unexpected shape: `(field, JSON type, what
/// was made of it)`. Never a value: a misbehaving server may put anything there.
#[derive(Default)]
struct Oddities(Vec<(&'static str, &'static str, &'static str)>);

impl Oddities {
    /// A string field; any other type (`null` aside) is noted and taken as absent.
    fn string(&mut self, field: &'static str, value: Option<Value>) -> Option<String> {
        match value? {
            Value::String(text) => Some(text),
            other => {
                self.0.push((field, json_type(&other), "ignored"));
                None
            }
        }
    }

    /// `expires_in` as whole seconds, or `None` when it cannot be read.
    fn seconds(&mut self, value: &Value) -> Option<u64> {
        const READ: &str = "read as whole seconds";
        const IGNORED: &str = "ignored";
        let (secs, outcome) = match value {
            Value::Number(number) => match (number.as_u64(), number.as_f64()) {
                (Some(secs), _) => return Some(secs),
                // `as` saturates: a float past `u64::MAX` seconds becomes `u64::MAX`.
                (None, Some(secs)) if secs.is_finite() && secs >= 0.0 => {
                    (Some(secs.trunc() as u64), READ)
                }
                _ => (None, IGNORED),
            },
            Value::String(text) => {
                let digits = text.trim();
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    (Some(digits.parse().unwrap_or(u64::MAX)), READ)
                } else {
                    (None, IGNORED)
                }
            }
            _ => (None, IGNORED),
        };
        self.0.push(("expires_in", json_type(value), outcome));
        secs
    }

    /// `field: JSON type, outcome; …`, or `None` when nothing was odd.
    fn summary(&self) -> Option<String> {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(field, kind, outcome)| format!("{field}: {kind}, {outcome}"))
            .collect();
        (!fields.is_empty()).then(|| fields.join("; "))
    }

    /// One `warn` event for the whole grant, when anything was odd.
    fn report(&self, expires_in: Option<Duration>) {
        if let Some(fields) = self.summary() {
            tracing::warn!(
                odd_fields = %fields,
                expires_in_secs = expires_in.map(|lifetime| lifetime.as_secs()),
                "the token endpoint sent optional fields of an unexpected type; the grant is kept"
            );
        }
    }
}

/// The JSON type of `value`, for logs.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(number) if number.is_u64() => "integer",
        Value::Number(number) if number.is_i64() => "negative integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Classifies a complete response of the token endpoint.
pub(crate) fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    mut context: ErrorContext,
) -> Attempt {
    context.status = Some(status);
    if status.is_success() {
        return match parse_grant(body) {
            Ok(grant) => Attempt::Granted(grant),
            Err(Refused::Rotated(rotated)) => Attempt::Rotated {
                error: malformed(rotated.reason.clone(), context),
                rotated,
            },
            Err(Refused::Malformed(reason)) => Attempt::Fail(malformed(reason, context)),
        };
    }
    let context = Box::new(context);
    let retry_after = parse::retry_after(headers, SystemTime::now());
    if status.is_server_error() {
        return Attempt::Retry {
            error: DrChronoError::Server { status, context },
            retry_after,
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            error: DrChronoError::Throttled {
                retry_after,
                available_at: retry_after.map(|wait| tokio::time::Instant::now() + wait),
                context,
            },
            retry_after,
        };
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        return Attempt::Retry {
            error: DrChronoError::UnexpectedStatus { status, context },
            retry_after,
        };
    }
    // `invalid_grant` arrives as 400 (RFC 6749, django-oauth-toolkit) or 401 (DrChrono's
    // article): the `error` code decides, never the status.
    Attempt::Fail(match parse::oauth_error(body) {
        Some(oauth) => DrChronoError::from_oauth(oauth.error, oauth.description, context),
        None => DrChronoError::UnexpectedStatus { status, context },
    })
}

/// Classifies an error of the transport. A [`DrChronoError`] (the token endpoint reached
/// through an `ErrorClassifyLayer` stack) keeps its classification.
pub(crate) fn classify_error(error: BoxError, context: ErrorContext) -> Attempt {
    match error.downcast::<DrChronoError>() {
        Ok(error) => {
            let error = *error;
            if error.is_retryable() {
                let retry_after = error.retry_after();
                Attempt::Retry { error, retry_after }
            } else {
                Attempt::Fail(error)
            }
        }
        Err(source) => Attempt::Retry {
            error: DrChronoError::Transport {
                not_sent: false,
                source,
                context: Box::new(context),
            },
            retry_after: None,
        },
    }
}

pub(crate) fn malformed(reason: MalformedTokenResponse, context: ErrorContext) -> DrChronoError {
    DrChronoError::Transport {
        not_sent: false,
        source: Box::new(reason),
        context: Box::new(context),
    }
}

#[cfg(test)]
mod tests;
