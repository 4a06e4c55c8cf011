//! What one answer of the token endpoint means: a grant, a transient failure, or a final one.

use std::fmt;
use std::time::{Duration, SystemTime};

use drchrono_core::{BoxError, DrChronoError, ErrorContext, parse};
use http::{HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    /// `expires_in`; `None` when absent (DrChrono always sends it).
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
    Retry {
        error: DrChronoError,
        retry_after: Option<Duration>,
    },
    Fail(DrChronoError),
}

#[derive(Deserialize)]
struct Wire {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    scope: Option<String>,
}

/// Parses a 2xx body.
pub(crate) fn parse_grant(body: &[u8]) -> Result<TokenGrant, MalformedTokenResponse> {
    let wire: Wire = serde_json::from_slice(body).map_err(|_| MalformedTokenResponse::NotJson)?;
    if let Some(kind) = &wire.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        let shown: String = kind.chars().take(32).collect();
        return Err(MalformedTokenResponse::UnsupportedTokenType(shown));
    }
    let token = wire.access_token.expose_secret();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MalformedTokenResponse::InvalidAccessToken);
    }
    if wire
        .refresh_token
        .as_ref()
        .is_some_and(|refresh| refresh.expose_secret().is_empty())
    {
        return Err(MalformedTokenResponse::EmptyRefreshToken);
    }
    Ok(TokenGrant {
        access_token: wire.access_token,
        refresh_token: wire.refresh_token,
        expires_in: wire.expires_in.map(Duration::from_secs),
        scope: wire.scope,
    })
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
            Err(reason) => Attempt::Fail(malformed(reason, context)),
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
