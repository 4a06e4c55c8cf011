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

/// A grant whose body carries `expires_in`, with the rotated pair.
fn grant_with_expires_in(expires_in: &str) -> TokenGrant {
    let body = format!(
        r#"{{"access_token":"NEW-AT","token_type":"Bearer","expires_in":{expires_in},
            "refresh_token":"NEW-RT","scope":"patients:read"}}"#
    );
    parse_grant(body.as_bytes()).unwrap_or_else(|reason| panic!("{expires_in}: {reason}"))
}

fn assert_tokens_kept(grant: &TokenGrant, shape: &str) {
    assert_eq!(grant.access_token.expose_secret(), "NEW-AT", "{shape}");
    assert_eq!(
        grant
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret),
        Some("NEW-RT"),
        "{shape}"
    );
}

#[test]
fn an_odd_expires_in_never_loses_the_rotated_pair() {
    let cases: &[(&str, Option<u64>)] = &[
        // Read.
        ("7200", Some(7_200)),
        ("0", Some(0)),
        (r#""7200""#, Some(7_200)),
        (r#"" 7200 ""#, Some(7_200)),
        (r#""007200""#, Some(7_200)),
        ("7200.0", Some(7_200)),
        // Rounded down: refreshed at most a second early, never sent after the expiry.
        ("7200.9", Some(7_200)),
        ("0.5", Some(0)),
        ("-0.0", Some(0)),
        ("7.2e3", Some(7_200)),
        // Saturated (the refresh caps the lifetime at a year).
        ("18446744073709551615", Some(u64::MAX)),
        ("18446744073709551616", Some(u64::MAX)),
        ("1e300", Some(u64::MAX)),
        (r#""99999999999999999999999999""#, Some(u64::MAX)),
        // Taken as absent.
        ("null", None),
        ("-1", None),
        ("-9223372036854775808", None),
        ("-7200.5", None),
        ("-1e300", None),
        (r#""""#, None),
        (r#""  ""#, None),
        (r#""-7200""#, None),
        (r#""+7200""#, None),
        (r#""7200.0""#, None),
        (r#""7200s""#, None),
        (r#""2h""#, None),
        (r#""0x1C20""#, None),
        ("true", None),
        ("[7200]", None),
        (r#"{"seconds":7200}"#, None),
    ];
    for &(shape, secs) in cases {
        let grant = grant_with_expires_in(shape);
        assert_tokens_kept(&grant, shape);
        assert_eq!(grant.expires_in, secs.map(Duration::from_secs), "{shape}");
        assert_eq!(grant.scope.as_deref(), Some("patients:read"), "{shape}");
    }
}

#[test]
fn odd_token_type_and_scope_are_taken_as_absent() {
    for shape in ["1", "true", "[]", r#"{"type":"Bearer"}"#, r#"["Bearer"]"#] {
        let body = format!(
            r#"{{"access_token":"NEW-AT","refresh_token":"NEW-RT","expires_in":"7200",
                "token_type":{shape},"scope":{shape}}}"#
        );
        let grant = parse_grant(body.as_bytes()).unwrap();
        assert_tokens_kept(&grant, shape);
        assert_eq!(grant.scope, None, "{shape}");
        assert_eq!(grant.expires_in, Some(Duration::from_secs(7_200)));
    }
    // A `token_type` *string* other than Bearer is still refused.
    assert_eq!(
        parse_grant(br#"{"access_token":"a","token_type":"mac","expires_in":"1"}"#)
            .unwrap_err()
            .reason(),
        &MalformedTokenResponse::UnsupportedTokenType("mac".into())
    );
}

/// Property-style: every combination of odd optional fields (a grid of shapes, crossed)
/// parses, keeps both tokens, and reads `expires_in` as the lenient rules say.
#[test]
fn every_combination_of_odd_optional_fields_keeps_the_tokens() {
    let expires_in = [
        None,
        Some("null"),
        Some("3600"),
        Some("\"3600\""),
        Some("3600.75"),
        Some("-3600"),
        Some("\"later\""),
        Some("false"),
        Some("[]"),
        Some("{}"),
        Some("1.7976931348623157e308"),
        Some("-1.7976931348623157e308"),
    ];
    let token_type = [
        None,
        Some("null"),
        Some("\"bearer\""),
        Some("7"),
        Some("{}"),
    ];
    let scope = [
        None,
        Some("null"),
        Some("\"a b\""),
        Some("[\"a\"]"),
        Some("0.5"),
    ];
    let mut checked = 0;
    for e in expires_in {
        for t in token_type {
            for s in scope {
                let mut fields = vec![
                    r#""access_token":"NEW-AT""#.to_owned(),
                    r#""refresh_token":"NEW-RT""#.to_owned(),
                ];
                for (name, value) in [("expires_in", e), ("token_type", t), ("scope", s)] {
                    if let Some(value) = value {
                        fields.push(format!(r#""{name}":{value}"#));
                    }
                }
                // The fields' order varies too.
                let turn = checked % fields.len();
                fields.rotate_left(turn);
                let body = format!("{{{}}}", fields.join(","));
                let grant = parse_grant(body.as_bytes()).unwrap_or_else(|r| panic!("{body}: {r}"));
                assert_tokens_kept(&grant, &body);
                let secs = match e {
                    Some("3600" | "\"3600\"" | "3600.75") => Some(3_600),
                    Some("1.7976931348623157e308") => Some(u64::MAX),
                    _ => None,
                };
                assert_eq!(grant.expires_in, secs.map(Duration::from_secs), "{body}");
                let scope = (s == Some("\"a b\"")).then_some("a b");
                assert_eq!(grant.scope.as_deref(), scope, "{body}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12 * 5 * 5);
}

/// What the `warn` event of [`parse_grant`] would say (the event itself is checked in
/// `tests/fake_failures.rs`: `tracing`'s callsite cache is global, and the unit tests of this
/// crate run in parallel without a subscriber).
fn odd_fields(body: &[u8]) -> Option<String> {
    read_grant(body).unwrap().1.summary()
}

#[test]
fn odd_fields_are_named_with_their_type_never_their_value() {
    let summary = odd_fields(
        br#"{"access_token":"AT-SECRET-1","refresh_token":"RT-SECRET-2","expires_in":"7200",
            "token_type":5,"scope":["SCOPE-VALUE"]}"#,
    )
    .unwrap();
    assert_eq!(
        summary,
        "token_type: integer, ignored; scope: array, ignored; \
         expires_in: string, read as whole seconds"
    );
    let shapes = [
        (r#""soon""#, "expires_in: string, ignored"),
        ("7200.5", "expires_in: float, read as whole seconds"),
        ("-7200", "expires_in: negative integer, ignored"),
        ("-0.5", "expires_in: float, ignored"),
        ("false", "expires_in: bool, ignored"),
        ("{}", "expires_in: object, ignored"),
    ];
    for (shape, said) in shapes {
        let body = format!(r#"{{"access_token":"AT","expires_in":{shape}}}"#);
        assert_eq!(odd_fields(body.as_bytes()).as_deref(), Some(said));
    }
    // A well-formed grant, `null`s and absent fields included, has nothing to report.
    for body in [
        &br#"{"access_token":"AT","token_type":"Bearer","expires_in":60,"scope":"s"}"#[..],
        br#"{"access_token":"AT","token_type":null,"expires_in":null,"scope":null}"#,
        br#"{"access_token":"AT"}"#,
    ] {
        assert_eq!(odd_fields(body), None);
    }
}

#[test]
fn malformed_grants_are_typed() {
    let cases: [(&str, MalformedTokenResponse); 8] = [
        ("<html>", MalformedTokenResponse::NotJson),
        // Fields by position are no grant.
        (
            r#"["a","Bearer",7200,"r"]"#,
            MalformedTokenResponse::NotJson,
        ),
        (r#"  ["a"]"#, MalformedTokenResponse::NotJson),
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

/// A 2xx body whose access token cannot be used but that carries a rotated refresh token:
/// the server has spent the old refresh token, so the new one is kept, with the reason a
/// strict reading gives.
#[test]
fn an_unusable_access_token_keeps_the_rotated_refresh_token() {
    let mac = || MalformedTokenResponse::UnsupportedTokenType("mac".into());
    let cases: Vec<(&str, MalformedTokenResponse)> = vec![
        // A `token_type` string other than Bearer (whatever the access token).
        (r#""access_token":"NEW-AT","token_type":"mac""#, mac()),
        (r#""access_token":"","token_type":"mac""#, mac()),
        (
            r#""access_token":"NEW-AT","token_type":"""#,
            MalformedTokenResponse::UnsupportedTokenType(String::new()),
        ),
        (
            r#""access_token":"NEW-AT","token_type":"Bearer token, and a very long one too""#,
            MalformedTokenResponse::UnsupportedTokenType("Bearer token, and a very long on".into()),
        ),
        // An empty or not header-safe access token.
        (
            r#""access_token":"","token_type":"Bearer""#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#""access_token":"","token_type":5"#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#""access_token":"NEW AT""#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#""access_token":"NEW-AT\n","token_type":"bearer""#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#""access_token":"NEW-ÄT""#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        // No access token string at all.
        (r#""token_type":"Bearer""#, MalformedTokenResponse::NotJson),
        (
            r#""access_token":null,"token_type":"mac""#,
            MalformedTokenResponse::NotJson,
        ),
        (r#""access_token":7"#, MalformedTokenResponse::NotJson),
        (
            r#""access_token":["NEW-AT"]"#,
            MalformedTokenResponse::NotJson,
        ),
        (
            r#""access_token":{"token":"NEW-AT"}"#,
            MalformedTokenResponse::NotJson,
        ),
    ];
    for (fields, reason) in cases {
        let body = format!(
            r#"{{{fields},"expires_in":"7200","refresh_token":"NEW-RT","scope":"patients:read"}}"#
        );
        let rotated = match parse_grant(body.as_bytes()) {
            Err(Refused::Rotated(rotated)) => rotated,
            other => panic!("{body}: unexpected {other:?}"),
        };
        assert_eq!(rotated.reason, reason, "{body}");
        assert_eq!(rotated.refresh_token.expose_secret(), "NEW-RT", "{body}");
        assert_eq!(rotated.scope.as_deref(), Some("patients:read"), "{body}");
        let debug = format!("{:?}", Refused::Rotated(rotated));
        assert!(debug.contains("[REDACTED]"), "{debug}");
        assert!(!debug.contains("NEW-RT"), "{debug}");
        assert!(!debug.contains("NEW-AT"), "{debug}");

        // The attempt is never retried, and fails with the reason as a typed source.
        match classify(200, &body) {
            Attempt::Rotated {
                rotated,
                error:
                    DrChronoError::Transport {
                        not_sent: false,
                        source,
                        context,
                    },
            } => {
                assert_eq!(rotated.refresh_token.expose_secret(), "NEW-RT", "{body}");
                assert_eq!(
                    source.downcast_ref::<MalformedTokenResponse>(),
                    Some(&reason),
                    "{body}"
                );
                assert_eq!(context.status, Some(StatusCode::OK));
            }
            other => panic!("{body}: unexpected {other:?}"),
        }
    }
}

/// Without a usable rotated refresh token nothing can be kept: an absent one (the server
/// kept the old one, as RFC 6749 allows), an empty one, one that is not a string, or a body
/// that is not a JSON object.
#[test]
fn without_a_usable_refresh_token_nothing_is_kept() {
    let cases: [(&str, MalformedTokenResponse); 9] = [
        (
            r#"{"access_token":"","token_type":"Bearer"}"#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#"{"access_token":"AT","token_type":"mac"}"#,
            MalformedTokenResponse::UnsupportedTokenType("mac".into()),
        ),
        (
            r#"{"access_token":"","refresh_token":null}"#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#"{"access_token":"","refresh_token":""}"#,
            MalformedTokenResponse::InvalidAccessToken,
        ),
        (
            r#"{"access_token":"AT","token_type":"mac","refresh_token":""}"#,
            MalformedTokenResponse::UnsupportedTokenType("mac".into()),
        ),
        (
            r#"{"access_token":"AT","refresh_token":""}"#,
            MalformedTokenResponse::EmptyRefreshToken,
        ),
        (
            r#"{"access_token":"","refresh_token":7}"#,
            MalformedTokenResponse::NotJson,
        ),
        (
            r#"{"refresh_token":["NEW-RT"]}"#,
            MalformedTokenResponse::NotJson,
        ),
        ("<html>NEW-RT</html>", MalformedTokenResponse::NotJson),
    ];
    for (body, reason) in cases {
        match parse_grant(body.as_bytes()) {
            Err(Refused::Malformed(refused)) => assert_eq!(refused, reason, "{body}"),
            other => panic!("{body}: unexpected {other:?}"),
        }
        assert!(
            matches!(classify(200, body), Attempt::Fail(_)),
            "{body}: never retried"
        );
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
