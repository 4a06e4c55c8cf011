//! Property tests: no parser panics on arbitrary input, valid input round-trips, and
//! redaction leaves no value behind. A unit-test module, so that it reaches the redaction
//! rules that are not public.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{DATE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use proptest::prelude::*;

use crate::parse::{self, OAuthErrorBody};
use crate::{ErrorContext, FieldErrors, classify_response, redact};

const CASES: u32 = 10_000;

/// The last second httpdate can format (9999-12-31T23:59:59Z).
const MAX_HTTP_DATE: u64 = 253_402_300_799;

fn header_map(pairs: &[(http::HeaderName, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name.clone(), value);
        }
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn retry_after_value_never_panics(value in any::<String>(), secs in any::<u64>()) {
        let _ = parse::retry_after_value(&value, UNIX_EPOCH + Duration::from_secs(secs % MAX_HTTP_DATE));
    }

    #[test]
    fn retry_after_headers_never_panic(
        retry in proptest::collection::vec(any::<u8>(), 0..64),
        date in proptest::collection::vec(any::<u8>(), 0..64),
        now in any::<u64>(),
    ) {
        let headers = header_map(&[(RETRY_AFTER, retry), (DATE, date)]);
        let _ = parse::retry_after(&headers, UNIX_EPOCH + Duration::from_secs(now % MAX_HTTP_DATE));
    }

    #[test]
    fn delta_seconds_round_trip(n in any::<u64>()) {
        prop_assert_eq!(
            parse::retry_after_value(&n.to_string(), SystemTime::now()),
            Some(Duration::from_secs(n).min(parse::MAX_RETRY_AFTER))
        );
    }

    #[test]
    fn waits_saturate_and_every_clock_can_add_them(
        digits in "[0-9]{1,40}",
        year in 1970u64..10_000,
    ) {
        let now = SystemTime::now();
        let wait = parse::retry_after_value(&digits, now).unwrap();
        prop_assert!(wait <= parse::MAX_RETRY_AFTER);
        prop_assert!(now.checked_add(wait).is_some());
        prop_assert!(tokio::time::Instant::now().checked_add(wait).is_some());
        let date = format!("Fri, 31 Dec {year:04} 23:59:59 GMT");
        if let Some(wait) = parse::retry_after_value(&date, now) {
            prop_assert!(wait <= parse::MAX_RETRY_AFTER);
        }
    }

    #[test]
    fn http_date_round_trips(reference in 0..MAX_HTTP_DATE / 2, delta in 0u64..100_000_000) {
        let reference = UNIX_EPOCH + Duration::from_secs(reference);
        let at = reference + Duration::from_secs(delta);
        let value = httpdate::fmt_http_date(at);
        let delta = Duration::from_secs(delta).min(parse::MAX_RETRY_AFTER).as_secs();
        prop_assert_eq!(
            parse::retry_after_value(&value, reference),
            Some(Duration::from_secs(delta))
        );
        // Through headers: relative to the response's Date, whatever the local clock says.
        let headers = header_map(&[
            (RETRY_AFTER, value.into_bytes()),
            (DATE, httpdate::fmt_http_date(reference).into_bytes()),
        ]);
        prop_assert_eq!(
            parse::retry_after(&headers, UNIX_EPOCH),
            Some(Duration::from_secs(delta))
        );
    }

    #[test]
    fn throttle_wait_never_panics(detail in any::<String>()) {
        let _ = parse::throttle_wait(&detail);
    }

    #[test]
    fn throttle_wait_never_panics_near_the_pattern(tail in any::<String>()) {
        let _ = parse::throttle_wait(&format!("Expected available in {tail}"));
    }

    #[test]
    fn throttle_wait_round_trips(n in any::<u64>()) {
        let unit = if n == 1 { "second" } else { "seconds" };
        let detail = format!("Request was throttled. Expected available in {n} {unit}.");
        prop_assert_eq!(
            parse::throttle_wait(&detail),
            Some(Duration::from_secs(n).min(parse::MAX_RETRY_AFTER))
        );
    }

    #[test]
    fn overlapping_id_never_panics(message in any::<String>()) {
        let _ = parse::overlapping_appointment_id(&message);
        let _ = parse::overlapping_appointment_id(&format!("Appointment overlaps with {message}"));
    }

    #[test]
    fn overlapping_id_round_trips(id in any::<u64>()) {
        prop_assert_eq!(
            parse::overlapping_appointment_id(&format!("Appointment overlaps with {id}")),
            Some(id)
        );
    }

    #[test]
    fn field_errors_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse::field_errors(&body);
    }

    #[test]
    fn field_errors_round_trip(
        errors in proptest::collection::btree_map(
            "[a-z][a-z_]{0,11}".prop_filter("not a message key", |k| {
                !matches!(k.as_str(), "detail" | "error" | "error_description")
            }),
            proptest::collection::vec(any::<String>(), 1..4),
            1..6,
        )
    ) {
        let body = serde_json::to_vec(&errors).unwrap();
        prop_assert_eq!(parse::field_errors(&body).map(FieldErrors::into_inner), Some(errors));
    }

    #[test]
    fn oauth_error_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse::oauth_error(&body);
    }

    #[test]
    fn oauth_error_round_trips(code in "[a-z][a-z_]{0,30}", description in any::<Option<String>>()) {
        let body = serde_json::json!({"error": code, "error_description": description});
        prop_assert_eq!(
            parse::oauth_error(&serde_json::to_vec(&body).unwrap()),
            Some(OAuthErrorBody { error: code, description })
        );
    }

    #[test]
    fn bearer_challenge_never_panics(value in any::<String>()) {
        let _ = parse::bearer_challenge(&value);
        let _ = parse::bearer_challenge(&format!("Bearer {value}"));
    }

    #[test]
    fn bearer_challenge_round_trips(error in "[a-z_]{1,20}", description in "[ -~]{0,60}") {
        let quoted = description.replace('\\', "\\\\").replace('"', "\\\"");
        let value = format!(r#"Bearer realm="api",error="{error}",error_description="{quoted}""#);
        let challenge = parse::bearer_challenge(&value).unwrap();
        prop_assert_eq!(challenge.error, Some(error));
        prop_assert_eq!(challenge.description, Some(description));
        prop_assert_eq!(challenge.realm.as_deref(), Some("api"));
    }

    #[test]
    fn redaction_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256), flag in any::<bool>()) {
        let _ = redact::redact_payload(&body);
        let _ = redact::redact_error_body(&body, None, flag, flag);
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = redact::redact_query(text);
            let _ = redact::shorten(text, body.len() % 7);
        }
    }

    #[test]
    fn redaction_removes_every_value(
        record in proptest::collection::btree_map(
            "[a-z]{1,10}".prop_filter("not an allow-listed key", |k| {
                !redact::ALLOWED_KEYS.contains(&k.as_str())
                    && !redact::CODE_KEYS.contains(&k.as_str())
                    && !redact::MESSAGE_KEYS.contains(&k.as_str())
            }),
            "PHI[A-Z0-9]{3,12}",
            1..8,
        ),
        nested in any::<bool>(),
    ) {
        let value = if nested {
            serde_json::json!({"patient": {"profile": record.clone()}, "list": [record.clone()]})
        } else {
            serde_json::to_value(&record).unwrap()
        };
        let bytes = serde_json::to_vec(&value).unwrap();
        let payload = redact::redact_payload(&bytes);
        let snippet = redact::redact_error_body(&bytes, None, false, false);
        for text in [&payload, &snippet] {
            prop_assert!(!text.contains("PHI"), "{}", text);
            for key in record.keys() {
                prop_assert!(text.contains(key.as_str()), "{} lost {}", text, key);
            }
        }
    }

    #[test]
    fn required_scopes_never_panics(path in any::<String>(), method in "[A-Z]{1,8}") {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let _ = crate::required_scopes(&method, &path);
    }

    #[test]
    fn classify_response_never_panics(
        status in 400u16..600,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        retry in proptest::collection::vec(any::<u8>(), 0..40),
        auth in proptest::collection::vec(any::<u8>(), 0..80),
        truncated in any::<bool>(),
    ) {
        let headers = header_map(&[(RETRY_AFTER, retry), (WWW_AUTHENTICATE, auth)]);
        let status = StatusCode::from_u16(status).unwrap();
        let error = classify_response(status, &headers, &body, truncated, ErrorContext::new()).unwrap();
        prop_assert_eq!(error.status(), Some(status));
        let _ = error.to_string();
        let snippet = error.context().body_snippet.clone().unwrap();
        prop_assert!(snippet.chars().count() <= redact::MAX_SNIPPET_CHARS);
    }
}
