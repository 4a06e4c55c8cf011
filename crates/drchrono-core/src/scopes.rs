//! [`required_scopes`]: the OAuth scopes DrChrono's main endpoints require.

use http::Method;

/// `appointments_create`, verbatim from DrChrono's documentation.
const CALENDAR_WRITE: &[&str] = &[
    "calendar:read",
    "calendar:write",
    "clinical:read",
    "clinical:write",
];
const CALENDAR_ONLY_READ: &[&str] = &["calendar:read"];
const CALENDAR_ONLY_WRITE: &[&str] = &["calendar:read", "calendar:write"];
const PATIENTS_READ: &[&str] = &["patients:read"];
const PATIENTS_WRITE: &[&str] = &["patients:read", "patients:write"];
const PATIENTS_SUMMARY_READ: &[&str] = &["patients:summary:read"];
const PATIENTS_SUMMARY_WRITE: &[&str] = &["patients:summary:read", "patients:summary:write"];
const CLINICAL_READ: &[&str] = &["clinical:read"];
const CLINICAL_WRITE: &[&str] = &["clinical:read", "clinical:write"];
const BILLING_READ: &[&str] = &["billing:read"];
const BILLING_WRITE: &[&str] = &["billing:read", "billing:write"];
const PAYMENT_READ: &[&str] = &["billing:patient-payment:read"];
const PAYMENT_WRITE: &[&str] = &[
    "billing:patient-payment:read",
    "billing:patient-payment:write",
];
const USER_READ: &[&str] = &["user:read"];
const USER_WRITE: &[&str] = &["user:read", "user:write"];

/// `(resource, read scopes, write scopes)`: the first path segment after `/api/`.
const TABLE: &[(&str, &[&str], &[&str])] = &[
    ("appointments", CALENDAR_ONLY_READ, CALENDAR_WRITE),
    (
        "appointment_profiles",
        CALENDAR_ONLY_READ,
        CALENDAR_ONLY_WRITE,
    ),
    (
        "appointment_templates",
        CALENDAR_ONLY_READ,
        CALENDAR_ONLY_WRITE,
    ),
    ("patients", PATIENTS_READ, PATIENTS_WRITE),
    (
        "patients_summary",
        PATIENTS_SUMMARY_READ,
        PATIENTS_SUMMARY_WRITE,
    ),
    ("clinical_notes", CLINICAL_READ, CLINICAL_WRITE),
    ("clinical_note_templates", CLINICAL_READ, CLINICAL_WRITE),
    ("clinical_note_field_types", CLINICAL_READ, CLINICAL_WRITE),
    ("clinical_note_field_values", CLINICAL_READ, CLINICAL_WRITE),
    ("line_items", BILLING_READ, BILLING_WRITE),
    ("transactions", BILLING_READ, BILLING_WRITE),
    ("billing_profiles", BILLING_READ, BILLING_WRITE),
    ("eligibility_checks", BILLING_READ, BILLING_WRITE),
    ("claim_billing_notes", BILLING_READ, BILLING_WRITE),
    ("fee_schedules", BILLING_READ, BILLING_WRITE),
    ("patient_payments", PAYMENT_READ, PAYMENT_WRITE),
    ("patient_payment_log", PAYMENT_READ, PAYMENT_WRITE),
    ("users", USER_READ, USER_WRITE),
    ("user_groups", USER_READ, USER_WRITE),
    ("doctors", USER_READ, USER_WRITE),
    ("offices", USER_READ, USER_WRITE),
];

/// The OAuth scopes DrChrono documents for `method` on `path`, for its main endpoints
/// (appointments, patients, clinical notes, billing, users); `None` when unknown.
///
/// `path` may be a bare path or a full URL, with ids (`/api/appointments/123`), a trailing
/// slash and a query string. Read methods (`GET`, `HEAD`, `OPTIONS`) need the `:read`
/// scopes; writes (`POST`, `PUT`, `PATCH`, `DELETE`) list the `:read` scopes too, as
/// DrChrono's `appointments_create` does
/// (`calendar:read calendar:write clinical:read clinical:write`).
///
/// ```
/// use drchrono_core::required_scopes;
/// use http::Method;
///
/// assert_eq!(
///     required_scopes(&Method::POST, "/api/appointments?verbose=true"),
///     Some(&["calendar:read", "calendar:write", "clinical:read", "clinical:write"][..])
/// );
/// assert_eq!(required_scopes(&Method::GET, "/api/users/current"), Some(&["user:read"][..]));
/// assert_eq!(required_scopes(&Method::GET, "/api/unknown"), None);
/// ```
pub fn required_scopes(method: &Method, path: &str) -> Option<&'static [&'static str]> {
    let write = match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => true,
        _ => return None,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = match path.split_once("://") {
        // A full URL: drop the scheme and the authority.
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => path,
    };
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    if segments.next() != Some("api") {
        return None;
    }
    let resource = segments.next()?;
    TABLE
        .iter()
        .find(|(name, _, _)| *name == resource)
        .map(|(_, read, written)| if write { *written } else { *read })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_methods() {
        let create = Some(CALENDAR_WRITE);
        assert_eq!(required_scopes(&Method::POST, "/api/appointments"), create);
        assert_eq!(
            required_scopes(&Method::PATCH, "/api/appointments/123/"),
            create
        );
        assert_eq!(
            required_scopes(
                &Method::POST,
                "https://app.drchrono.com/api/appointments?x=1"
            ),
            create
        );
        assert_eq!(
            required_scopes(&Method::GET, "/api/patients/5"),
            Some(PATIENTS_READ)
        );
        assert_eq!(
            required_scopes(&Method::DELETE, "/api/patients/5"),
            Some(PATIENTS_WRITE)
        );
        assert_eq!(
            required_scopes(&Method::GET, "/api/clinical_notes"),
            Some(CLINICAL_READ)
        );
        assert_eq!(
            required_scopes(&Method::PUT, "/api/line_items/1"),
            Some(BILLING_WRITE)
        );
        assert_eq!(
            required_scopes(&Method::GET, "/api/users/current"),
            Some(USER_READ)
        );
        assert_eq!(required_scopes(&Method::HEAD, "api/users"), Some(USER_READ));
    }

    #[test]
    fn unknown_is_none() {
        assert_eq!(required_scopes(&Method::GET, "/api/nothing"), None);
        assert_eq!(required_scopes(&Method::GET, "/o/token/"), None);
        assert_eq!(required_scopes(&Method::GET, ""), None);
        assert_eq!(required_scopes(&Method::GET, "/api"), None);
        assert_eq!(required_scopes(&Method::TRACE, "/api/patients"), None);
        assert_eq!(
            required_scopes(&Method::GET, "https://app.drchrono.com"),
            None
        );
    }
}
