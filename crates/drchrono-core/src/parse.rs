//! Small, pure parsers for what DrChrono's error responses say.
//!
//! Each function takes untrusted input and never panics: no byte-index slicing of text, no
//! `unwrap` on input, saturating arithmetic for huge numbers. `None` means "not present or
//! not understood".
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use drchrono_core::parse;
//!
//! let wait = parse::throttle_wait("Request was throttled. Expected available in 1 second.");
//! assert_eq!(wait, Some(Duration::from_secs(1)));
//! assert_eq!(
//!     parse::overlapping_appointment_id("Appointment overlaps with 323351400"),
//!     Some(323_351_400)
//! );
//! assert_eq!(
//!     parse::retry_after_value("120", SystemTime::UNIX_EPOCH),
//!     Some(Duration::from_secs(120))
//! );
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{DATE, RETRY_AFTER};
use serde_json::Value;

use crate::FieldErrors;
use crate::redact::redact_message;

/// The longest wait a `Retry-After` header or DRF's throttle message is taken to ask for:
/// 365 days. A longer one (`Retry-After: 99999999999`, an HTTP-date in year 9999) saturates
/// here, so that every clock can add it without overflow (an overflow used to read as no
/// wait at all). The layers above cap it further: the retry policy fails a request whose
/// wait exceeds its `max_throttle_wait` (15 min by default) at once, typed, and the rate
/// limiter pauses its callers for at most an hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The `Retry-After` wait of a response.
///
/// Delta-seconds are taken as they are; an HTTP-date is measured from the response's own
/// `Date` header when it has a valid one (so that a skewed local clock does not matter), else
/// from `now`. A date in the past is a zero wait; a wait longer than [`MAX_RETRY_AFTER`]
/// saturates there.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let reference = headers
        .get(DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| httpdate::parse_http_date(date.trim()).ok())
        .unwrap_or(now);
    retry_after_value(value, reference)
}

/// Parses one `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date (IMF-fixdate,
/// RFC 850 or asctime), the latter measured from `reference`. Saturates at
/// [`MAX_RETRY_AFTER`]; never panics.
///
/// ```
/// use std::time::SystemTime;
/// use drchrono_core::parse::{MAX_RETRY_AFTER, retry_after_value};
///
/// let now = SystemTime::now();
/// assert_eq!(retry_after_value("99999999999", now), Some(MAX_RETRY_AFTER));
/// assert_eq!(retry_after_value("Fri, 31 Dec 9999 23:59:59 GMT", now), Some(MAX_RETRY_AFTER));
/// ```
pub fn retry_after_value(value: &str, reference: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match parse_u64_saturating(value) {
        Some(secs) => Duration::from_secs(secs),
        None => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(reference).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The wait in Django REST Framework's throttling message,
/// `"Request was throttled. Expected available in N seconds."` (`"1 second."` singular;
/// a fractional `N` is accepted too). Saturates at [`MAX_RETRY_AFTER`].
pub fn throttle_wait(detail: &str) -> Option<Duration> {
    let (_, rest) = detail.split_once("available in")?;
    let rest = rest.trim_start();
    let (whole, rest) = split_leading_digits(rest);
    let secs = parse_u64_saturating(whole)?;
    let (nanos, rest) = match rest.strip_prefix('.') {
        Some(fraction) => {
            let (digits, rest) = split_leading_digits(fraction);
            (fraction_nanos(digits), rest)
        }
        None => (0, rest),
    };
    if !rest.trim_start().starts_with("second") {
        return None;
    }
    let wait = Duration::from_secs(secs).saturating_add(Duration::from_nanos(nanos));
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The id in DrChrono's 409 message `"Appointment overlaps with 323351400"`.
pub fn overlapping_appointment_id(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let (_, rest) = lower.split_once("overlaps with")?;
    let rest = rest.trim_start().trim_start_matches('#');
    let (digits, _) = split_leading_digits(rest);
    digits.parse().ok()
}

/// The field errors of a DRF 400 body, `{"field": ["message", …]}`.
///
/// Nested serializer errors are flattened with dotted keys (`"address.zip"`) and list
/// indices (`"items[1].name"`); a bare string becomes a one-message list; a top-level list
/// is filed under `non_field_errors`. `detail`, `error` and `error_description` are not
/// field errors. `None` when the body is not JSON or has no field errors.
pub fn field_errors(body: &[u8]) -> Option<FieldErrors> {
    field_errors_in(&serde_json::from_slice(body).ok()?)
}

/// [`field_errors`] of an already parsed body.
pub(crate) fn field_errors_in(value: &Value) -> Option<FieldErrors> {
    let mut out = FieldErrors::new();
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if !matches!(key.as_str(), "detail" | "error" | "error_description") {
                    collect_field_errors(key, value, &mut out);
                }
            }
        }
        Value::Array(_) => collect_field_errors("non_field_errors", value, &mut out),
        _ => return None,
    }
    (!out.is_empty()).then_some(out)
}

/// An OAuth 2.0 error response body (RFC 6749 §5.2).
///
/// `Debug` shows the description through [`redact_message`].
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthErrorBody {
    /// The `error` code, e.g. `invalid_grant`.
    pub error: String,
    /// `error_description`, when present.
    pub description: Option<String>,
}

/// The OAuth error of a token-endpoint response, `{"error": "invalid_grant", …}`.
///
/// Only a code-like `error` counts (1 to 64 characters of `[A-Za-z0-9_.-]`), so DrChrono's
/// prose in `{"error": "Appointment overlaps with 1"}` is not taken for an OAuth error.
pub fn oauth_error(body: &[u8]) -> Option<OAuthErrorBody> {
    oauth_error_in(&serde_json::from_slice(body).ok()?)
}

/// [`oauth_error`] of an already parsed body.
pub(crate) fn oauth_error_in(value: &Value) -> Option<OAuthErrorBody> {
    let error = value.get("error")?.as_str()?;
    let code_like = (1..=64).contains(&error.len())
        && error
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !code_like {
        return None;
    }
    Some(OAuthErrorBody {
        error: error.to_owned(),
        description: value
            .get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The parameters of a `Bearer` challenge in a `WWW-Authenticate` header (RFC 6750 §3).
///
/// `Debug` shows the description through [`redact_message`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `realm`, e.g. `api`.
    pub realm: Option<String>,
    /// `error`, e.g. `invalid_token`.
    pub error: Option<String>,
    /// `error_description`, e.g. `The access token has expired.`
    pub description: Option<String>,
    /// `scope`, when the server named the scopes required.
    pub scope: Option<String>,
}

/// Parses the `Bearer` challenge of a `WWW-Authenticate` value such as
/// `Bearer realm="api",error="invalid_token",error_description="The access token has expired."`.
///
/// Other schemes in the same value are skipped; quoted strings may contain commas and
/// backslash escapes. `None` when there is no `Bearer` challenge.
pub fn bearer_challenge(value: &str) -> Option<BearerChallenge> {
    let mut chars = value.chars().peekable();
    let mut found: Option<BearerChallenge> = None;
    let mut in_bearer = false;
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut token = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ',' && *c != '=') {
            token.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_some() {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut param = String::new();
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => param.extend(chars.next()),
                        other => param.push(other),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ',') {
                    param.push(c);
                }
            }
            if let (true, Some(challenge)) = (in_bearer, found.as_mut()) {
                let slot = match token.to_ascii_lowercase().as_str() {
                    "realm" => &mut challenge.realm,
                    "error" => &mut challenge.error,
                    "error_description" => &mut challenge.description,
                    "scope" => &mut challenge.scope,
                    _ => continue,
                };
                slot.get_or_insert(param);
            }
        } else if token.is_empty() {
            // A stray '=' or similar: skip one character so that the loop always advances.
            chars.next();
        } else {
            in_bearer = token.eq_ignore_ascii_case("bearer") && found.is_none();
            if in_bearer {
                found = Some(BearerChallenge::default());
            }
        }
    }
    found
}

impl fmt::Debug for OAuthErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthErrorBody")
            .field("error", &redact_message(&self.error))
            .field(
                "description",
                &self.description.as_deref().map(redact_message),
            )
            .finish()
    }
}

impl fmt::Debug for BearerChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerChallenge")
            .field("realm", &self.realm)
            .field("error", &self.error)
            .field(
                "description",
                &self.description.as_deref().map(redact_message),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

fn collect_field_errors(key: &str, value: &Value, out: &mut FieldErrors) {
    match value {
        Value::String(message) => out.entry(key.to_owned()).or_default().push(message.clone()),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                match item {
                    Value::String(message) => {
                        out.entry(key.to_owned()).or_default().push(message.clone());
                    }
                    Value::Object(_) | Value::Array(_) => {
                        collect_field_errors(&format!("{key}[{index}]"), item, out);
                    }
                    _ => {}
                }
            }
        }
        Value::Object(map) => {
            for (sub, value) in map {
                collect_field_errors(&format!("{key}.{sub}"), value, out);
            }
        }
        _ => {}
    }
}

/// Splits `text` after its leading ASCII digits (on a character boundary by construction).
fn split_leading_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at_checked(end).unwrap_or((text, ""))
}

/// A non-empty run of ASCII digits as `u64`, saturating at `u64::MAX`.
fn parse_u64_saturating(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Up to nine fractional digits as nanoseconds (further digits are ignored).
fn fraction_nanos(digits: &str) -> u64 {
    let mut nanos = 0u64;
    let mut scale = 100_000_000u64;
    for b in digits.bytes().take(9) {
        nanos += u64::from(b - b'0') * scale;
        scale /= 10;
    }
    nanos
}

#[cfg(test)]
mod tests;
