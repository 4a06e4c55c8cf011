use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, DATE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::*;

fn context(method: Method, uri: &str) -> ErrorContext {
    let mut context = ErrorContext::new();
    context.method = Some(method);
    context.uri = Some(uri.parse::<Uri>().unwrap());
    context
}

fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> DrChronoError {
    classify_response(
        StatusCode::from_u16(status).unwrap(),
        headers,
        body,
        false,
        context(Method::POST, "/api/appointments?x=1"),
    )
    .unwrap()
}

fn none() -> HeaderMap {
    HeaderMap::new()
}

#[test]
fn success_is_not_an_error() {
    for status in [200, 201, 204, 301, 399] {
        let status = StatusCode::from_u16(status).unwrap();
        assert!(classify_response(status, &none(), b"", false, ErrorContext::new()).is_none());
    }
}

#[test]
fn oauth_errors_by_code_not_status() {
    for status in [400, 401] {
        let error = classify(status, &none(), br#"{"error":"invalid_grant"}"#);
        assert!(matches!(
            error,
            DrChronoError::ReauthorizationRequired {
                description: None,
                ..
            }
        ));
        assert_eq!(error.status(), Some(StatusCode::from_u16(status).unwrap()));
        let error = classify(
            status,
            &none(),
            br#"{"error":"invalid_client","error_description":"Bad client."}"#,
        );
        assert!(matches!(
            &error,
            DrChronoError::InvalidClient { description: Some(d), .. } if d == "Bad client."
        ));
        let error = classify(status, &none(), br#"{"error":"unsupported_grant_type"}"#);
        assert!(
            matches!(&error, DrChronoError::OAuth { error, .. } if error == "unsupported_grant_type")
        );
    }
    // An `error` code on another status is not OAuth.
    assert!(matches!(
        classify(403, &none(), br#"{"error":"invalid_grant"}"#),
        DrChronoError::Forbidden { .. }
    ));
}

#[test]
fn bad_request_with_field_errors() {
    let error = classify(
        400,
        &none(),
        br#"{"doctor":["This field is required."],"first_name":"Jane"}"#,
    );
    let DrChronoError::BadRequest {
        field_errors,
        detail,
        context,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(field_errors["doctor"], vec!["This field is required."]);
    assert_eq!(detail, &None);
    let snippet = context.body_snippet.as_deref().unwrap();
    assert!(snippet.contains("This field is required."), "{snippet}");
    assert!(!snippet.contains("Jane"), "{snippet}");
    assert!(!error.is_retryable());
}

#[test]
fn unauthorized_kinds() {
    let not_provided = br#"{"detail":"Authentication credentials were not provided."}"#;
    let mut headers = HeaderMap::new();
    headers.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="api",error="invalid_token",error_description="The access token has expired.""#,
        ),
    );
    let kind = |headers: &HeaderMap, body: &[u8]| match classify(401, headers, body) {
        DrChronoError::Unauthorized {
            kind,
            replay_with_current_token: false,
            persisted_after_refresh: false,
            ..
        } => kind,
        other => panic!("{other:?}"),
    };
    assert_eq!(kind(&headers, not_provided), UnauthorizedKind::TokenExpired);
    headers.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="api",error="invalid_token",error_description="The access token is invalid.""#,
        ),
    );
    assert_eq!(kind(&headers, not_provided), UnauthorizedKind::TokenInvalid);
    headers.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="api""#),
    );
    assert_eq!(
        kind(&headers, not_provided),
        UnauthorizedKind::CredentialsNotProvided
    );
    assert_eq!(
        kind(&none(), br#"{"detail":"Something else."}"#),
        UnauthorizedKind::Other(Some("Something else.".into()))
    );
    assert_eq!(
        kind(&none(), b"<html></html>"),
        UnauthorizedKind::Other(None)
    );
}

#[test]
fn forbidden_fills_scopes() {
    let error = classify(
        403,
        &none(),
        br#"{"detail":"You do not have permission to perform this action."}"#,
    );
    let DrChronoError::Forbidden {
        detail,
        required_scopes,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(detail, "You do not have permission to perform this action.");
    assert_eq!(
        *required_scopes,
        Some(
            &[
                "calendar:read",
                "calendar:write",
                "clinical:read",
                "clinical:write"
            ][..]
        )
    );
    let text = error.to_string();
    assert!(text.contains("Staff Permissions"), "{text}");
    assert!(text.contains("calendar:write"), "{text}");
}

#[test]
fn not_found_and_method_not_allowed() {
    assert!(matches!(
        classify(404, &none(), br#"{"detail":"Not found."}"#),
        DrChronoError::NotFound { detail: Some(d), .. } if d == "Not found."
    ));
    let error = classify(
        405,
        &none(),
        br#"{"detail":"Method \"PATCH\" not allowed."}"#,
    );
    assert!(matches!(
        &error,
        DrChronoError::MethodNotAllowed { method, detail, .. }
            if method == Method::POST && detail == "Method \"PATCH\" not allowed."
    ));
    // Without a request method, the detail names it.
    let error = classify_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &none(),
        br#"{"detail":"Method \"PATCH\" not allowed."}"#,
        false,
        ErrorContext::new(),
    );
    assert!(
        matches!(error, Some(DrChronoError::MethodNotAllowed { method, .. }) if method == Method::PATCH)
    );
    let error = classify_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &none(),
        b"",
        false,
        ErrorContext::new(),
    );
    assert!(
        matches!(error, Some(DrChronoError::MethodNotAllowed { method, .. }) if method.as_str() == "UNKNOWN")
    );
}

#[test]
fn conflict_parses_the_overlapping_id() {
    let error = classify(
        409,
        &none(),
        br#"{"error":"Appointment overlaps with 323351400"}"#,
    );
    assert!(matches!(
        &error,
        DrChronoError::AppointmentConflict {
            overlapping_id: Some(323_351_400),
            ..
        }
    ));
    assert!(error.to_string().contains("Allow Exam Room Overlaps"));
}

#[tokio::test(start_paused = true)]
async fn throttled_from_header_then_body() {
    let body = br#"{"detail":"Request was throttled. Expected available in 7 seconds."}"#;
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
    let start = tokio::time::Instant::now();
    let error = classify(429, &headers, body);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(error.available_at(), Some(start + Duration::from_secs(3)));
    assert!(error.is_retryable());

    let error = classify(429, &none(), body);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    let error = classify(
        429,
        &none(),
        br#"{"detail":"Request was throttled. Expected available in 1 second."}"#,
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    let error = classify(429, &none(), b"");
    assert_eq!((error.retry_after(), error.available_at()), (None, None));

    // HTTP-date relative to the response's Date header.
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:09 GMT"),
    );
    headers.insert(
        DATE,
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    assert_eq!(
        classify(429, &headers, body).retry_after(),
        Some(Duration::from_secs(9))
    );

    // Without a Date header, relative to the context's occurrence time.
    headers.remove(DATE);
    let mut at = context(Method::GET, "/api/patients");
    at.occurred_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_485));
    let error = classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, body, false, at);
    assert_eq!(error.unwrap().retry_after(), Some(Duration::from_secs(4)));

    // An absurd wait saturates at a bound the clock can add: the error still says until when.
    for absurd in ["99999999999999999999999999", "99999999999"] {
        headers.insert(RETRY_AFTER, HeaderValue::from_static(absurd));
        let before = tokio::time::Instant::now();
        let error = classify(429, &headers, body);
        assert_eq!(
            error.retry_after(),
            Some(parse::MAX_RETRY_AFTER),
            "{absurd}"
        );
        let at = error.available_at().expect("an instant");
        assert!(at >= before + parse::MAX_RETRY_AFTER, "{absurd}");
    }
}

#[test]
fn server_and_unexpected() {
    for status in [500, 502, 503, 504, 599] {
        let error = classify(status, &none(), b"<html>Bad Gateway</html>");
        assert!(matches!(error, DrChronoError::Server { .. }), "{status}");
        assert!(error.is_retryable());
        assert_eq!(error.status().map(|s| s.as_u16()), Some(status));
    }
    let error = classify(418, &none(), b"");
    assert!(matches!(error, DrChronoError::UnexpectedStatus { .. }));
    assert!(!error.is_retryable());
}

#[test]
fn odd_bodies_classify_by_status_with_a_snippet() {
    let mut html = HeaderMap::new();
    html.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    let cases: [(&HeaderMap, &[u8], bool, &str); 4] = [
        (
            &html,
            b"<html><body>Jane Doe, 1970-01-01</body></html>",
            false,
            "<html body, 46 bytes>",
        ),
        (&none(), b"", false, "<empty body>"),
        (
            &none(),
            &[0xff, 0xfe, b'J', b'a'],
            false,
            "<non-UTF-8 body, 4 bytes>",
        ),
        (
            &none(),
            br#"{"detail":"Not found.","first_name":"Ja"#,
            true,
            "<truncated JSON body, 39 bytes, cut at the read limit>",
        ),
    ];
    for status in [400u16, 401, 403, 404, 405, 409, 429, 500, 502, 503, 504] {
        for (headers, body, truncated, snippet) in cases {
            let error = classify_response(
                StatusCode::from_u16(status).unwrap(),
                headers,
                body,
                truncated,
                context(Method::GET, "/api/patients/1"),
            )
            .unwrap();
            assert_eq!(error.status().map(|s| s.as_u16()), Some(status));
            assert_eq!(error.context().body_snippet.as_deref(), Some(snippet));
            let expected = match status {
                400 => "bad_request",
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                405 => "method_not_allowed",
                409 => "appointment_conflict",
                429 => "throttled",
                _ => "server",
            };
            assert_eq!(error.kind_name(), expected);
        }
    }
}
