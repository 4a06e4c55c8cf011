use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use drchrono_core::ErrorContext;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::*;

fn credentials() -> ClientCredentials {
    ClientCredentials::new("the-client", "CLIENT-SECRET-VALUE")
}

fn ok_body() -> Full<Bytes> {
    Full::new(Bytes::from_static(
        br#"{"access_token":"AT","token_type":"Bearer","expires_in":60,"refresh_token":"RT2"}"#,
    ))
}

#[tokio::test]
async fn sends_the_refresh_grant_as_a_form() {
    type Seen = Vec<(Method, Uri, HeaderMap, Bytes)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let log = Arc::clone(&seen);
    let transport = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock()
                .unwrap()
                .push((parts.method, parts.uri, parts.headers, body));
            Ok::<_, Infallible>(Response::new(ok_body()))
        }
    });
    let client = TokenClient::new(transport, credentials());
    assert_eq!(client.token_url, Uri::from_static(DRCHRONO_TOKEN_URL));
    let grant = client.refresh(&SecretString::from("R T&1")).await.unwrap();
    assert_eq!(grant.access_token.expose_secret(), "AT");
    assert_eq!(grant.expires_in, Some(Duration::from_secs(60)));

    let seen = seen.lock().unwrap();
    let (method, uri, headers, body) = &seen[0];
    assert_eq!(method, Method::POST);
    assert_eq!(uri.to_string(), DRCHRONO_TOKEN_URL);
    assert_eq!(headers[CONTENT_TYPE], "application/x-www-form-urlencoded");
    assert_eq!(headers[ACCEPT], "application/json");
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "R T&1");
    assert_eq!(form["client_id"], "the-client");
    assert_eq!(form["client_secret"], "CLIENT-SECRET-VALUE");
    assert_eq!(form.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_then_typed() {
    let transport = tower::service_fn(|_request: Request<Full<Bytes>>| async {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        Ok::<_, Infallible>(Response::new(ok_body()))
    });
    let client = TokenClient::new(transport, credentials())
        .attempt_timeout(Duration::from_secs(5))
        .backoff(RefreshBackoff::new().max_retries(1));
    let start = Instant::now();
    match client.refresh(&SecretString::from("RT")).await {
        Err(DrChronoError::Transport {
            not_sent: false,
            source,
            ..
        }) => assert!(source.is::<tokio::time::error::Elapsed>()),
        other => panic!("unexpected {other:?}"),
    }
    // Two 5 s attempts and a 1 s backoff.
    assert_eq!(start.elapsed(), Duration::from_secs(11));
}

#[tokio::test]
async fn oversized_bodies_are_malformed() {
    let transport = tower::service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b' '; 100]))))
    });
    let client = TokenClient::new(transport, credentials()).body_limit(99);
    match client.refresh(&SecretString::from("RT")).await {
        Err(DrChronoError::Transport { source, .. }) => assert_eq!(
            source.downcast_ref::<MalformedTokenResponse>(),
            Some(&MalformedTokenResponse::TooLarge { limit: 99 })
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// A 2xx answer with a rotated refresh token but an access token that cannot be used is
/// tried once (the refresh token sent is dead); `exchange` keeps the rotated token, the
/// public `refresh` returns the typed error as before.
#[tokio::test(start_paused = true)]
async fn a_rotated_answer_without_a_usable_access_token_is_not_retried() {
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let transport = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        *counter.lock().unwrap() += 1;
        async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                br#"{"access_token":"","token_type":"Bearer","refresh_token":"RT2"}"#,
            ))))
        }
    });
    let client = TokenClient::new(transport, credentials());
    match client.exchange(&SecretString::from("RT")).await {
        Refreshed::Rotated {
            rotated,
            error: DrChronoError::Transport { source, .. },
        } => {
            assert_eq!(rotated.refresh_token.expose_secret(), "RT2");
            assert_eq!(
                source.downcast_ref::<MalformedTokenResponse>(),
                Some(&MalformedTokenResponse::InvalidAccessToken)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    match client.refresh(&SecretString::from("RT")).await {
        Err(DrChronoError::Transport { source, .. }) => assert_eq!(
            source.downcast_ref::<MalformedTokenResponse>(),
            Some(&MalformedTokenResponse::InvalidAccessToken)
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(*calls.lock().unwrap(), 2, "one call each, never retried");
}

#[tokio::test(start_paused = true)]
async fn a_classifying_stack_keeps_its_error_types() {
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    // What an `ErrorClassifyLayer` stack returns: 502, then invalid_grant.
    let transport = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let counter = Arc::clone(&counter);
        async move {
            let mut calls = counter.lock().unwrap();
            *calls += 1;
            let error = if *calls == 1 {
                DrChronoError::Server {
                    status: StatusCode::BAD_GATEWAY,
                    context: Box::new(ErrorContext::new()),
                }
            } else {
                DrChronoError::ReauthorizationRequired {
                    description: None,
                    context: Box::new(ErrorContext::new()),
                }
            };
            Err::<Response<Full<Bytes>>, _>(error)
        }
    });
    let client = TokenClient::new(transport, credentials());
    assert!(matches!(
        client.refresh(&SecretString::from("RT")).await,
        Err(DrChronoError::ReauthorizationRequired { .. })
    ));
    assert_eq!(
        *calls.lock().unwrap(),
        2,
        "the 502 was retried, invalid_grant was not"
    );
}

#[test]
fn debug_shows_no_secret() {
    let transport = tower::service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(ok_body()))
    });
    let client = TokenClient::new(transport, credentials());
    let shown = format!("{client:?} {:?}", client.credentials);
    assert!(!shown.contains("CLIENT-SECRET-VALUE"), "{shown}");
    assert!(shown.contains("the-client"));
}
