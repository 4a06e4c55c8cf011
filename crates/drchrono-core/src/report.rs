//! [`SupportReport`]: the e-mail DrChrono asks for when 5xx errors or erratic 401s persist.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::{DrChronoError, redact};

/// Where DrChrono wants error reports sent.
pub const SUPPORT_EMAIL: &str = "api@drchrono.com";

/// This crate's version, as recorded in reports.
pub(crate) const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The crate's minimum supported Rust version (`rust-version` in its manifest). The compiler
/// that built the crate is not known without a build script, so reports give this instead,
/// and say so.
pub(crate) const RUST_VERSION: Option<&str> = option_env!("CARGO_PKG_RUST_VERSION");

/// A report of a failed DrChrono API call, with every item DrChrono's guidance asks for and
/// no patient data.
///
/// From the error: the complete endpoint URL with method (query values other than ids, dates
/// and flags redacted), the request payload as redacted by the layer (`"Field": "REDACT"`),
/// the status, DrChrono's message, a 400's field errors (field names, and DRF's messages with
/// every quoted value redacted: `"\"REDACT\" is not a valid choice."`, see
/// [`redact_message`](crate::redact::redact_message)) and the redacted error body, and the
/// time of the error.
/// From the builder: the application's name, the API user, first and last occurrence, the use
/// case, when the system runs the task, and (for 401s) how tokens are generated and cached.
/// Times are RFC 3339 in UTC with an explicit `+00:00` offset.
///
/// `Display` renders the e-mail to [`SUPPORT_EMAIL`]; `Serialize` renders the same items as
/// JSON.
///
/// ```
/// use drchrono_core::{DrChronoError, ErrorContext, SupportReport};
/// use http::{Method, StatusCode};
///
/// let mut context = ErrorContext::new();
/// context.method = Some(Method::GET);
/// context.uri = Some("https://app.drchrono.com/api/patients?since=2016-01-01".parse().unwrap());
/// let error = DrChronoError::Server {
///     status: StatusCode::BAD_GATEWAY,
///     context: Box::new(context),
/// };
/// let report = SupportReport::from(&error)
///     .application("Acme Scheduler")
///     .api_user("dr_smith (user_id 42)");
/// let email = report.to_string();
/// assert!(email.contains("GET https://app.drchrono.com/api/patients?since=2016-01-01"));
/// assert!(email.contains("502 Bad Gateway"));
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct SupportReport {
    application: Option<String>,
    error_kind: &'static str,
    method: Option<String>,
    url: Option<String>,
    status: Option<u16>,
    status_text: Option<String>,
    drchrono_message: Option<String>,
    field_errors: Option<BTreeMap<String, Vec<String>>>,
    response_body: Option<String>,
    request_payload: Option<String>,
    api_user: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    first_occurrence: Option<SystemTime>,
    #[serde(serialize_with = "serialize_time")]
    last_occurrence: Option<SystemTime>,
    time_zone: &'static str,
    use_case: Option<String>,
    schedule: Option<String>,
    token_handling: Option<String>,
    environment: Environment,
}

/// The code environment DrChrono asks about.
#[derive(Debug, Clone, Serialize)]
struct Environment {
    language: &'static str,
    client: &'static str,
    client_version: &'static str,
    minimum_rust_version: Option<&'static str>,
    note: &'static str,
}

const ENVIRONMENT_NOTE: &str = "server-side Rust client (no browser); the Rust version is the \
     crate's minimum supported version, the compiler version is not recorded";

impl From<&DrChronoError> for SupportReport {
    fn from(error: &DrChronoError) -> Self {
        let context = error.context();
        let status = error.status();
        Self {
            application: None,
            error_kind: error.kind_name(),
            method: context.method.as_ref().map(ToString::to_string),
            url: context.uri.as_ref().map(|uri| {
                // Host and port only: a URI's user information (`user:secret@`) is a
                // credential, never reported.
                let base = match (uri.scheme_str(), uri.authority()) {
                    (Some(scheme), Some(authority)) => match authority.port() {
                        Some(port) => format!("{scheme}://{}:{port}", authority.host()),
                        None => format!("{scheme}://{}", authority.host()),
                    },
                    _ => String::new(),
                };
                match uri.query() {
                    Some(query) => {
                        format!("{base}{}?{}", uri.path(), redact::redact_query(query))
                    }
                    None => format!("{base}{}", uri.path()),
                }
            }),
            status: status.map(|s| s.as_u16()),
            status_text: status.map(|s| s.to_string()),
            drchrono_message: error.message().map(redact::redact_message),
            field_errors: match error {
                DrChronoError::BadRequest { field_errors, .. } if !field_errors.is_empty() => {
                    Some(field_errors.redacted())
                }
                _ => None,
            },
            response_body: context.body_snippet.clone(),
            request_payload: context.request_payload.clone(),
            api_user: None,
            first_occurrence: context.occurred_at,
            last_occurrence: context.occurred_at,
            time_zone: "UTC",
            use_case: None,
            schedule: None,
            token_handling: None,
            environment: Environment {
                language: "Rust",
                // The project the user depends on; its crates share one version.
                client: "drchrono-tower",
                client_version: CRATE_VERSION,
                minimum_rust_version: RUST_VERSION,
                note: ENVIRONMENT_NOTE,
            },
        }
    }
}

impl SupportReport {
    /// The name of the API application (DrChrono > Account > API). Default: not given.
    #[must_use]
    pub fn application(mut self, name: impl Into<String>) -> Self {
        self.application = Some(name.into());
        self
    }

    /// The connected API user: username or user id (`GET /api/users/current`). Default: not
    /// given.
    #[must_use]
    pub fn api_user(mut self, name_or_id: impl Into<String>) -> Self {
        self.api_user = Some(name_or_id.into());
        self
    }

    /// When the issue was first seen. Default: when this error occurred.
    #[must_use]
    pub fn first_occurrence(mut self, at: SystemTime) -> Self {
        self.first_occurrence = Some(at);
        self
    }

    /// When the issue was last seen. Default: when this error occurred.
    #[must_use]
    pub fn last_occurrence(mut self, at: SystemTime) -> Self {
        self.last_occurrence = Some(at);
        self
    }

    /// What the application uses the endpoint for. Default: not given.
    #[must_use]
    pub fn use_case(mut self, text: impl Into<String>) -> Self {
        self.use_case = Some(text.into());
        self
    }

    /// When the system performs the task (e.g. "nightly at 02:00 UTC"). Default: not given.
    #[must_use]
    pub fn schedule(mut self, text: impl Into<String>) -> Self {
        self.schedule = Some(text.into());
        self
    }

    /// How new access tokens are generated and how tokens are stored or cached (asked for
    /// 401s). Default: not given.
    #[must_use]
    pub fn token_handling(mut self, text: impl Into<String>) -> Self {
        self.token_handling = Some(text.into());
        self
    }

    /// The e-mail's subject line.
    pub fn subject(&self) -> String {
        let mut subject = String::from("DrChrono API error");
        if let Some(status) = &self.status_text {
            subject.push(' ');
            subject.push_str(status);
        }
        if let (Some(method), Some(url)) = (&self.method, &self.url) {
            subject.push_str(&format!(" on {method} {url}"));
        }
        if let Some(application) = &self.application {
            subject.push_str(&format!(" ({application})"));
        }
        subject
    }
}

impl fmt::Display for SupportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NOT_GIVEN: &str = "(not provided)";
        let or = |value: &Option<String>| value.clone().unwrap_or_else(|| NOT_GIVEN.to_owned());
        let unauthorized = matches!(self.status, Some(401)) || self.error_kind == "unauthorized";
        writeln!(f, "To: {SUPPORT_EMAIL}")?;
        writeln!(f, "Subject: {}", self.subject())?;
        writeln!(f)?;
        writeln!(f, "Hello DrChrono API team,")?;
        writeln!(f)?;
        writeln!(
            f,
            "Our application received the following error from the DrChrono API. Patient data \
             in the payload and response has been redacted (\"Field\": REDACT)."
        )?;
        writeln!(f)?;
        writeln!(f, "1. API application: {}", or(&self.application))?;
        let endpoint = match (&self.method, &self.url) {
            (Some(method), Some(url)) => format!("{method} {url}"),
            (None, Some(url)) => url.clone(),
            _ => NOT_GIVEN.to_owned(),
        };
        writeln!(f, "2. Complete API endpoint URL: {endpoint}")?;
        writeln!(
            f,
            "   Request payload (redacted): {}",
            or(&self.request_payload)
        )?;
        writeln!(f, "3. Connected API user: {}", or(&self.api_user))?;
        writeln!(f, "4. First occurrence: {}", time_or(self.first_occurrence))?;
        writeln!(f, "   Last occurrence: {}", time_or(self.last_occurrence))?;
        writeln!(f, "   Time zone: {}", self.time_zone)?;
        writeln!(f, "5. Other information:")?;
        let status = self
            .status_text
            .as_deref()
            .unwrap_or("no response (transport error)");
        writeln!(f, "   - Response status: {status}")?;
        writeln!(f, "   - Error kind: {}", self.error_kind)?;
        writeln!(f, "   - DrChrono's message: {}", or(&self.drchrono_message))?;
        if let Some(fields) = &self.field_errors {
            writeln!(f, "   - Field errors (quoted values redacted):")?;
            for (field, messages) in fields {
                writeln!(f, "     {field}: {}", messages.join(" "))?;
            }
        }
        writeln!(
            f,
            "   - Response body (redacted): {}",
            or(&self.response_body)
        )?;
        writeln!(f, "   - Use case for this endpoint: {}", or(&self.use_case))?;
        writeln!(
            f,
            "   - When our system performs this task: {}",
            or(&self.schedule)
        )?;
        if unauthorized || self.token_handling.is_some() {
            writeln!(
                f,
                "   - How access tokens are generated and cached: {}",
                or(&self.token_handling)
            )?;
        }
        let environment = &self.environment;
        writeln!(
            f,
            "   - Code environment: {} ({} {}, minimum Rust {}); {}",
            environment.language,
            environment.client,
            environment.client_version,
            environment.minimum_rust_version.unwrap_or("unknown"),
            environment.note,
        )?;
        writeln!(f)?;
        writeln!(f, "Thank you.")
    }
}

/// RFC 3339 in UTC with an explicit offset, e.g. `2026-01-05T10:37:00.000+00:00`; `None`
/// for a time chrono cannot represent.
pub(crate) fn rfc3339(at: SystemTime) -> Option<String> {
    let (secs, nanos) = match at.duration_since(UNIX_EPOCH) {
        Ok(since) => (i64::try_from(since.as_secs()).ok()?, since.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            // Round towards negative infinity: -1.25 s is -2 s + 0.75 s.
            let (secs, nanos) = if before.subsec_nanos() == 0 {
                (before.as_secs(), 0)
            } else {
                let whole = before.as_secs().checked_add(1)?;
                (whole, 1_000_000_000 - before.subsec_nanos())
            };
            (i64::try_from(secs).ok()?.checked_neg()?, nanos)
        }
    };
    let at: DateTime<Utc> = DateTime::from_timestamp(secs, nanos)?;
    Some(at.to_rfc3339_opts(SecondsFormat::Millis, false))
}

fn time_or(at: Option<SystemTime>) -> String {
    match at {
        Some(at) => rfc3339(at).unwrap_or_else(|| "(out of range)".to_owned()),
        None => "(not provided)".to_owned(),
    }
}

fn serialize_time<S: Serializer>(
    at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at.and_then(rfc3339) {
        Some(text) => serializer.serialize_some(&text),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
