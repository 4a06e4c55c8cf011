use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{DATE, RETRY_AFTER};

use super::*;

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

#[test]
fn retry_after_delta_seconds() {
    let now = SystemTime::UNIX_EPOCH;
    assert_eq!(retry_after_value("3", now), secs(3));
    assert_eq!(retry_after_value(" 0 ", now), secs(0));
    // A huge wait saturates at a bound every clock can add, never at zero.
    assert_eq!(
        retry_after_value("99999999999999999999999", now),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(retry_after_value("99999999999", now), Some(MAX_RETRY_AFTER));
    assert_eq!(
        retry_after_value("99999999999", SystemTime::now()),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(retry_after_value("31536000", now), Some(MAX_RETRY_AFTER));
    assert_eq!(retry_after_value("31535999", now), secs(31_535_999));
    // A date in year 9999, from today or from the epoch.
    for reference in [now, SystemTime::now()] {
        assert_eq!(
            retry_after_value("Fri, 31 Dec 9999 23:59:59 GMT", reference),
            Some(MAX_RETRY_AFTER)
        );
    }
    assert_eq!(retry_after_value("-1", now), None);
    assert_eq!(retry_after_value("1.5", now), None);
    assert_eq!(retry_after_value("", now), None);
}

#[test]
fn retry_after_http_date() {
    let reference = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
    // Wed, 21 Oct 2015 07:28:00 GMT is 1_445_412_480.
    assert_eq!(
        retry_after_value("Wed, 21 Oct 2015 07:28:30 GMT", reference),
        secs(30)
    );
    assert_eq!(
        retry_after_value("Wednesday, 21-Oct-15 07:28:30 GMT", reference),
        secs(30)
    );
    assert_eq!(
        retry_after_value("Wed Oct 21 07:28:30 2015", reference),
        secs(30)
    );
    // In the past: no wait.
    assert_eq!(
        retry_after_value("Wed, 21 Oct 2015 07:27:00 GMT", reference),
        secs(0)
    );
    assert_eq!(retry_after_value("tomorrow", reference), None);
}

#[test]
fn retry_after_header_uses_the_response_date() {
    let mut headers = HeaderMap::new();
    headers.insert(
        RETRY_AFTER,
        "Wed, 21 Oct 2015 07:28:10 GMT".parse().unwrap(),
    );
    headers.insert(DATE, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
    // The local clock is an hour off: the Date header wins.
    let skewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 + 3600);
    assert_eq!(retry_after(&headers, skewed), secs(10));
    // Without a Date header, the local clock is the reference.
    headers.remove(DATE);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_485);
    assert_eq!(retry_after(&headers, now), secs(5));
    // An invalid Date header falls back to `now`.
    headers.insert(DATE, "yesterday".parse().unwrap());
    assert_eq!(retry_after(&headers, now), secs(5));
    headers.insert(RETRY_AFTER, "7".parse().unwrap());
    assert_eq!(retry_after(&headers, now), secs(7));
    assert_eq!(retry_after(&HeaderMap::new(), now), None);
}

#[test]
fn throttle_wait_drf_wording() {
    assert_eq!(
        throttle_wait("Request was throttled. Expected available in 59 seconds."),
        secs(59)
    );
    assert_eq!(
        throttle_wait("Request was throttled. Expected available in 1 second."),
        secs(1)
    );
    assert_eq!(
        throttle_wait("Expected available in 0.25 seconds."),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        throttle_wait("Expected available in 99999999999999999999999 seconds."),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(throttle_wait("Request was throttled."), None);
    assert_eq!(throttle_wait("Expected available in X seconds."), None);
    assert_eq!(throttle_wait("Expected available in 5 minutes."), None);
    assert_eq!(throttle_wait("available in 3é seconds"), None);
}

#[test]
fn overlapping_id() {
    assert_eq!(
        overlapping_appointment_id("Appointment overlaps with 323351400"),
        Some(323_351_400)
    );
    assert_eq!(
        overlapping_appointment_id("appointment overlaps with #12."),
        Some(12)
    );
    assert_eq!(
        overlapping_appointment_id("Appointment overlaps with"),
        None
    );
    assert_eq!(
        overlapping_appointment_id("Appointment overlaps with 99999999999999999999999"),
        None
    );
    assert_eq!(overlapping_appointment_id("Conflict"), None);
}

#[test]
fn field_errors_shapes() {
    let errors =
        field_errors(br#"{"doctor": ["This field is required."], "patient": "Invalid pk."}"#)
            .unwrap();
    assert_eq!(errors["doctor"], vec!["This field is required."]);
    assert_eq!(errors["patient"], vec!["Invalid pk."]);

    let nested = field_errors(
        br#"{"address": {"zip": ["Bad zip."]}, "items": [{}, {"name": ["Required."]}], "detail": "x"}"#,
    )
    .unwrap();
    assert_eq!(nested["address.zip"], vec!["Bad zip."]);
    assert_eq!(nested["items[1].name"], vec!["Required."]);
    assert!(!nested.contains_key("detail"));

    let list = field_errors(br#"["Something is wrong."]"#).unwrap();
    assert_eq!(list["non_field_errors"], vec!["Something is wrong."]);

    assert_eq!(field_errors(br#"{"detail": "Not found."}"#), None);
    assert_eq!(field_errors(b"<html>"), None);
    assert_eq!(field_errors(b"42"), None);
}

#[test]
fn oauth_errors() {
    let body = oauth_error(br#"{"error": "invalid_grant", "error_description": "Bad."}"#).unwrap();
    assert_eq!(body.error, "invalid_grant");
    assert_eq!(body.description.as_deref(), Some("Bad."));
    assert_eq!(
        oauth_error(br#"{"error": "invalid_client"}"#)
            .unwrap()
            .description,
        None
    );
    assert_eq!(
        oauth_error(br#"{"error": "Appointment overlaps with 1"}"#),
        None
    );
    assert_eq!(oauth_error(br#"{"error": ""}"#), None);
    assert_eq!(oauth_error(br#"{"error": 5}"#), None);
    assert_eq!(oauth_error(b"not json"), None);
}

#[test]
fn bearer_challenges() {
    let challenge = bearer_challenge(
        r#"Bearer realm="api",error="invalid_token",error_description="The access token has expired.""#,
    )
    .unwrap();
    assert_eq!(challenge.realm.as_deref(), Some("api"));
    assert_eq!(challenge.error.as_deref(), Some("invalid_token"));
    assert_eq!(
        challenge.description.as_deref(),
        Some("The access token has expired.")
    );

    let mixed = bearer_challenge(
        r#"Basic realm="x, y", bearer error=invalid_token, scope="a \"b\"", error_description = "d""#,
    )
    .unwrap();
    assert_eq!(mixed.realm, None);
    assert_eq!(mixed.error.as_deref(), Some("invalid_token"));
    assert_eq!(mixed.scope.as_deref(), Some("a \"b\""));
    assert_eq!(mixed.description.as_deref(), Some("d"));

    assert_eq!(
        bearer_challenge("Bearer").unwrap(),
        BearerChallenge::default()
    );
    assert_eq!(bearer_challenge(r#"Basic realm="api""#), None);
    assert_eq!(bearer_challenge(""), None);
    assert_eq!(
        bearer_challenge(r#"Bearer error="unterminated"#)
            .unwrap()
            .error
            .as_deref(),
        Some("unterminated")
    );
    assert!(bearer_challenge("===,,, ==").is_none());
}
