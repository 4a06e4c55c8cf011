use http::HeaderValue;
use http::header::RETRY_AFTER;

use super::*;

fn classify(status: u16, body: &str) -> Attempt {
    classify_response(
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
        ErrorContext::new(),
    )
}

#[test]
fn a_grant_is_parsed() {
    let body = r#"{"access_token":"AT","token_type":"Bearer","expires_in":172800,
        "refresh_token":"RT","scope":"patients:read"}"#;
    match classify(200, body) {
        Attempt::Granted(grant) => {
            assert_eq!(grant.access_token.expose_secret(), "AT");
            assert_eq!(grant.refresh_token.unwrap().expose_secret(), "RT");
            assert_eq!(grant.expires_in, Some(Duration::from_secs(172_800)));
            assert_eq!(grant.scope.as_deref(), Some("patients:read"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn optional_fields_may_be_missing() {
    let grant = parse_grant(br#"{"access_token":"AT"}"#).unwrap();
    assert!(grant.refresh_token.is_none());
    assert!(grant.expires_in.is_none());
    let debug = format!("{grant:?}");
    assert!(!debug.contains("AT\""), "{debug}");
}

#[test]
fn malformed_grants_are_typed() {
    let cases: [(&str, MalformedTokenResponse); 6] = [
        ("<html>", MalformedTokenResponse::NotJson),
        (
            r#"{"token_type":"Bearer"}"#,
            MalformedTokenResponse::NotJson,
        ),
        (
            r#"{"access_token":""}"#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#"{"access_token":"a b"}"#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#"{"access_token":"a","refresh_token":""}"#,
            MalformedTokenResponse::EmptyRefreshToken,
        ),
        (
            r#"{"access_token":"a","token_type":"mac"}"#,
            MalformedTokenResponse::UnsupportedTokenType("mac".into()),
        ),
    ];
    for (body, reason) in cases {
        match classify(200, body) {
            Attempt::Fail(DrChronoError::Transport {
                not_sent: false,
                source,
                ..
            }) => assert_eq!(
                source.downcast_ref::<MalformedTokenResponse>(),
                Some(&reason),
                "{body}"
            ),
            other => panic!("{body}: unexpected {other:?}"),
        }
    }
}

#[test]
fn invalid_grant_is_decided_by_the_error_code_not_the_status() {
    for status in [400, 401] {
        let body = r#"{"error":"invalid_grant","error_description":"revoked"}"#;
        match classify(status, body) {
            Attempt::Fail(DrChronoError::ReauthorizationRequired {
                description,
                context,
            }) => {
                assert_eq!(description.as_deref(), Some("revoked"));
                assert_eq!(context.status.map(|s| s.as_u16()), Some(status));
            }
            other => panic!("{status}: unexpected {other:?}"),
        }
        assert!(matches!(
            classify(status, r#"{"error":"invalid_client"}"#),
            Attempt::Fail(DrChronoError::InvalidClient { .. })
        ));
    }
    assert!(matches!(
        classify(400, r#"{"error":"unsupported_grant_type"}"#),
        Attempt::Fail(DrChronoError::OAuth { ref error, .. }) if error == "unsupported_grant_type"
    ));
    assert!(matches!(
        classify(401, "no json"),
        Attempt::Fail(DrChronoError::UnexpectedStatus { .. })
    ));
}

#[test]
fn server_errors_throttling_and_timeouts_are_transient() {
    for status in [500, 502, 503, 504] {
        assert!(matches!(
            classify(status, "<html>bad gateway</html>"),
            Attempt::Retry {
                error: DrChronoError::Server { .. },
                retry_after: None
            }
        ));
    }
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    let attempt = classify_response(
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        b"{}",
        ErrorContext::new(),
    );
    assert!(matches!(
        attempt,
        Attempt::Retry { error: DrChronoError::Throttled { .. }, retry_after: Some(wait) }
            if wait == Duration::from_secs(7)
    ));
    assert!(matches!(classify(408, ""), Attempt::Retry { .. }));
}

#[test]
fn transport_errors_keep_a_drchrono_classification() {
    let plain: BoxError = "connection reset".into();
    assert!(matches!(
        classify_error(plain, ErrorContext::new()),
        Attempt::Retry {
            error: DrChronoError::Transport { .. },
            ..
        }
    ));
    let classified: BoxError = Box::new(DrChronoError::ReauthorizationRequired {
        description: None,
        context: Box::new(ErrorContext::new()),
    });
    assert!(matches!(
        classify_error(classified, ErrorContext::new()),
        Attempt::Fail(DrChronoError::ReauthorizationRequired { .. })
    ));
    let server: BoxError = Box::new(DrChronoError::Server {
        status: StatusCode::BAD_GATEWAY,
        context: Box::new(ErrorContext::new()),
    });
    assert!(matches!(
        classify_error(server, ErrorContext::new()),
        Attempt::Retry {
            error: DrChronoError::Server { .. },
            ..
        }
    ));
}
