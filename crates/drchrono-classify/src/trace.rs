//! The one `tracing` event per classified error: status, method, path (no query string) and
//! kind; never a body, a payload, a token or a query string.

use drchrono_core::DrChronoError;

/// Emits the event for `error`, at a level by severity: 5xx and transport failures `WARN`
/// (an invalid client, which stops the whole application, `ERROR`), 429 and 401/403/OAuth
/// `INFO`, other 4xx `DEBUG`.
pub(crate) fn emit(error: &DrChronoError) {
    let context = error.context();
    let status = context.status.map(|status| status.as_u16());
    let method = context.method.as_ref().map(http::Method::as_str);
    let path = context.path();
    let kind = error.kind_name();
    let retry_after_ms = error
        .retry_after()
        .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    let not_sent = matches!(error, DrChronoError::Transport { .. }).then(|| error.is_not_sent());
    macro_rules! event {
        ($level:ident) => {
            tracing::$level!(
                status,
                method,
                path,
                kind,
                retry_after_ms,
                not_sent,
                "DrChrono API call failed"
            )
        };
    }
    match error {
        DrChronoError::InvalidClient { .. } => event!(error),
        DrChronoError::Server { .. } | DrChronoError::Transport { .. } => event!(warn),
        DrChronoError::Throttled { .. }
        | DrChronoError::Unauthorized { .. }
        | DrChronoError::ReauthorizationRequired { .. }
        | DrChronoError::OAuth { .. }
        | DrChronoError::Forbidden { .. } => event!(info),
        _ => event!(debug),
    }
}
