//! The errors this crate adds, and how refresh failures reach API callers (see the crate
//! docs' *Errors* section).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use drchrono_core::{DrChronoError, ErrorContext};

use crate::StoreError;

/// Why a 2xx token response could not be used. Never contains a token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedTokenResponse {
    /// The body is not a JSON object of the expected shape.
    NotJson,
    /// The body exceeded the read limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// `access_token` is empty or not a valid HTTP header value.
    InvalidAccessToken,
    /// `refresh_token` is present but empty.
    EmptyRefreshToken,
    /// `token_type` is present and is not `Bearer`.
    UnsupportedTokenType(String),
}

impl MalformedTokenResponse {
    /// A name for logs: never a value the server sent.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidAccessToken => "invalid_access_token",
            Self::EmptyRefreshToken => "empty_refresh_token",
            Self::UnsupportedTokenType(_) => "unsupported_token_type",
        }
    }
}

impl fmt::Display for MalformedTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed token response: ")?;
        match self {
            Self::NotJson => f.write_str("not a JSON token response"),
            Self::TooLarge { limit } => write!(f, "body larger than {limit} bytes"),
            Self::InvalidAccessToken => f.write_str("access_token is empty or not header-safe"),
            Self::EmptyRefreshToken => f.write_str("refresh_token is empty"),
            Self::UnsupportedTokenType(kind) => write!(f, "token_type {kind:?} is not Bearer"),
        }
    }
}

impl StdError for MalformedTokenResponse {}

/// The source of the [`DrChronoError::Transport`] that API callers get when a refresh
/// failed transiently: the token endpoint's own error, shared by every caller that waited
/// on the same refresh.
#[derive(Debug, Clone)]
pub struct RefreshFailed {
    error: Arc<DrChronoError>,
}

impl RefreshFailed {
    /// The token endpoint's error ([`DrChronoError::Server`], a transport failure, …).
    pub fn error(&self) -> &DrChronoError {
        &self.error
    }
}

impl fmt::Display for RefreshFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token refresh failed ({})", self.error.kind_name())
    }
}

impl StdError for RefreshFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.error.as_ref())
    }
}

/// Why a grant's access token is never sent: it lives no longer than the configured
/// [`RefreshTiming::expiry_skew`](crate::RefreshTiming::expiry_skew) (a misbehaving token
/// endpoint, or a skew set too large). The source of the token endpoint's error inside
/// [`RefreshFailed`]; never contains a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrantWithinSkew {
    /// The grant's `expires_in`.
    pub(crate) lifetime: Duration,
    /// The configured expiry skew.
    pub(crate) skew: Duration,
    /// How long refreshes are held back ([`RefreshTiming::retry_interval`](crate::RefreshTiming::retry_interval)).
    pub(crate) hold: Duration,
}

impl fmt::Display for GrantWithinSkew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the token endpoint granted an access token for {:?}, no longer than the \
             configured expiry skew of {:?}: it is never sent; the rotated pair is kept and \
             the next refresh is held back for {:?} (check the token endpoint's `expires_in`, \
             or lower `RefreshTiming::expiry_skew`)",
            self.lifetime, self.skew, self.hold
        )
    }
}

impl StdError for GrantWithinSkew {}

/// The error every caller of a failed refresh receives (see the module docs).
pub(crate) fn surface(error: &Arc<DrChronoError>) -> DrChronoError {
    let context = Box::new(error.context().clone());
    match error.as_ref() {
        DrChronoError::ReauthorizationRequired { description, .. } => {
            DrChronoError::ReauthorizationRequired {
                description: description.clone(),
                context,
            }
        }
        DrChronoError::InvalidClient { description, .. } => DrChronoError::InvalidClient {
            description: description.clone(),
            context,
        },
        DrChronoError::OAuth {
            error: code,
            description,
            ..
        } => DrChronoError::OAuth {
            error: code.clone(),
            description: description.clone(),
            context,
        },
        DrChronoError::UnexpectedStatus { status, .. } => DrChronoError::UnexpectedStatus {
            status: *status,
            context,
        },
        _ => DrChronoError::Transport {
            not_sent: true,
            source: Box::new(RefreshFailed {
                error: Arc::clone(error),
            }),
            context,
        },
    }
}

/// The error of a request that could not use the new pair because persisting it failed.
pub(crate) fn store_failure(error: StoreError, context: ErrorContext) -> DrChronoError {
    DrChronoError::Transport {
        not_sent: true,
        source: Box::new(error),
        context: Box::new(context),
    }
}

/// `ReauthorizationRequired` for a family whose refresh token is known to be dead.
pub(crate) fn reauthorization_required(
    description: Option<String>,
    context: ErrorContext,
) -> DrChronoError {
    DrChronoError::ReauthorizationRequired {
        description,
        context: Box::new(context),
    }
}

/// A token task that panicked or was cancelled (the runtime shut down): the request was not
/// sent.
pub(crate) fn join_failure(join: tokio::task::JoinError) -> DrChronoError {
    DrChronoError::Transport {
        not_sent: true,
        source: Box::new(join),
        context: Box::new(crate::refresh::context()),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn transient_failures_become_not_sent_transport_errors_for_every_waiter() {
        let mut context = ErrorContext::new();
        context.status = Some(StatusCode::SERVICE_UNAVAILABLE);
        let original = Arc::new(DrChronoError::Server {
            status: StatusCode::SERVICE_UNAVAILABLE,
            context: Box::new(context),
        });
        for _ in 0..2 {
            match surface(&original) {
                DrChronoError::Transport {
                    not_sent: true,
                    source,
                    ..
                } => {
                    let failed = source.downcast_ref::<RefreshFailed>().unwrap();
                    assert!(matches!(failed.error(), DrChronoError::Server { .. }));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn terminal_failures_keep_their_type() {
        let original = Arc::new(reauthorization_required(
            Some("revoked".into()),
            ErrorContext::new(),
        ));
        match surface(&original) {
            DrChronoError::ReauthorizationRequired { description, .. } => {
                assert_eq!(description.as_deref(), Some("revoked"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let invalid = Arc::new(DrChronoError::InvalidClient {
            description: None,
            context: Box::new(ErrorContext::new()),
        });
        assert!(matches!(
            surface(&invalid),
            DrChronoError::InvalidClient { .. }
        ));
    }

    #[test]
    fn malformed_reasons_name_no_token() {
        let shown = MalformedTokenResponse::UnsupportedTokenType("mac".into()).to_string();
        assert_eq!(
            shown,
            "malformed token response: token_type \"mac\" is not Bearer"
        );
    }
}
