//! `tracing` spans shaped like OpenTelemetry's HTTP client conventions: one span per logical
//! request and one per attempt, both made by [`DrChronoService`](crate::DrChronoService)'s
//! retry loop ([`RequestFuture`](crate::RequestFuture)).

use drchrono_core::{LayerError, ResendCount, redact};
use std::borrow::Cow;

use http::{Request, Response, StatusCode, Uri};
use tracing::{Span, field};

/// The span of one logical request, retries included: `http.request.method`,
/// `server.address`, `server.port`, `url.path` (never the query), `url.full` (the query's
/// values redacted), and, when it ends, `http.response.status_code` and `error.type`.
#[inline]
pub(crate) fn request_span<B>(request: &Request<B>) -> Span {
    let span = tracing::info_span!(
        "http.client.request",
        otel.name = field::Empty,
        http.request.method = %request.method(),
        server.address = field::Empty,
        server.port = field::Empty,
        url.path = request.uri().path(),
        url.full = field::Empty,
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    );
    if !span.is_disabled() {
        let uri = request.uri();
        span.record("otel.name", request.method().as_str());
        if let Some(host) = uri.host() {
            span.record("server.address", host);
        }
        if let Some(port) = port_of(uri) {
            span.record("server.port", i64::from(port));
        }
        span.record("url.full", field::display(redacted_url(uri)));
    }
    span
}

/// The port a URI names, or its scheme's default.
fn port_of(uri: &Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

/// `uri` with every query value that may identify a patient replaced by `REDACT`.
fn redacted_url(uri: &Uri) -> String {
    let mut out = String::new();
    // Host and port, never user information (`user:secret@`).
    if let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) {
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(port) = uri.port() {
            out.push(':');
            out.push_str(port.as_str());
        }
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        out.push('?');
        out.push_str(&redact::redact_query(query));
    }
    out
}

/// What a request's `http.client.request.duration` needs: with the `metrics` feature, when
/// it started, its method and server; without it, nothing.
#[cfg(feature = "metrics")]
pub(crate) type DurationMetric = crate::metrics::RequestDuration;

/// What a request's `http.client.request.duration` needs: without the `metrics` feature,
/// nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct DurationMetric;

#[cfg(not(feature = "metrics"))]
impl DurationMetric {
    #[inline]
    pub(crate) fn start<B>(_request: &Request<B>) -> Self {
        Self
    }

    #[inline]
    pub(crate) fn finish<B, E: LayerError>(&self, _outcome: &Result<Response<B>, E>) {}
}

/// An outcome as OpenTelemetry's HTTP client conventions name it: the response's status,
/// if any, and, for a failure, `error.type`: the error's stable kind (`server`,
/// `throttled`, `transport`, …), the status of an error response that came back as a
/// response, or `_OTHER`.
pub(crate) fn outcome_of<B, E: LayerError>(
    outcome: &Result<Response<B>, E>,
) -> (Option<StatusCode>, Option<Cow<'static, str>>) {
    match outcome {
        Ok(response) => {
            let status = response.status();
            let error = (status.as_u16() >= 400).then(|| Cow::Owned(status.as_str().to_owned()));
            (Some(status), error)
        }
        Err(error) => match error.as_drchrono() {
            Some(error) => (error.status(), Some(Cow::Borrowed(error.kind_name()))),
            None => (None, Some(Cow::Borrowed("_OTHER"))),
        },
    }
}

/// Records `http.response.status_code` and `error.type` ([`outcome_of`]) in `span`.
#[cold]
pub(crate) fn record_outcome<B, E: LayerError>(span: &Span, outcome: &Result<Response<B>, E>) {
    let (status, error) = outcome_of(outcome);
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status.as_u16()));
    }
    if let Some(error) = error {
        span.record("error.type", &*error);
    }
}

/// The span of one attempt (each resend of a request: OpenTelemetry's client span), a
/// child of the span current where it is created (the request's), with
/// `http.request.resend_count` (0 for the first attempt, from [`ResendCount`]). The spans of
/// what the attempt waits for (a permit, a token refresh) are its children.
#[inline]
pub(crate) fn attempt_span<B>(request: &Request<B>) -> Span {
    tracing::info_span!(
        "http.client.attempt",
        otel.kind = "client",
        // Signed: `tracing-opentelemetry` exports unsigned values as strings, and
        // OpenTelemetry's conventions type these attributes as ints.
        http.request.resend_count = i64::from(ResendCount::of(request)),
    )
}
