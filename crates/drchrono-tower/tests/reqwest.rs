//! `DrChronoClient` on a `reqwest::Client` (feature `reqwest`), against `drchrono-sim` over
//! real loopback HTTP. Real time: the retry policy's delays are configured in milliseconds.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use drchrono_sim::{DOCTOR_ID, RunningSimulator, SimConfig};
use drchrono_tower::core::{BoxError, ConnectError};
use drchrono_tower::oauth::TokenSet;
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{DrChronoClient, DrChronoClientBuilder, DrChronoError};
use http::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The application's own reqwest client: its settings, redirects left to `DrChronoClient`.
fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent("drchrono-tower reqwest test")
        .build()
        .unwrap()
}

/// DrChrono's schedule (25-30 s, doubling) scaled down 2,500 times.
fn quick_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .first_delay(Duration::from_millis(10), Duration::from_millis(12))
        .seed(15)
        .build()
        .unwrap()
}

fn builder(sim: &RunningSimulator) -> DrChronoClientBuilder {
    let c = sim.credentials();
    DrChronoClient::builder()
        .credentials(c.client_id, c.client_secret)
        .refresh_token(c.refresh_token)
        .base_url(sim.base_url())
        .token_url(sim.token_url())
}

/// An `http://` URL on loopback where nothing listens.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// The first error of type `E` in `error`'s `source()` chain.
fn find<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

fn appointment(exam_room: u64) -> Value {
    json!({
        "doctor": DOCTOR_ID, "patient": 7, "office": 1, "exam_room": exam_room,
        "scheduled_time": "2026-01-05T10:00:00", "duration": 30,
    })
}

#[tokio::test]
async fn refresh_typed_409_and_retried_503_through_reqwest() {
    let sim = drchrono_sim::spawn(SimConfig::default()).await.unwrap();
    let policy = quick_retries();
    let client = builder(&sim)
        .retry(policy.clone())
        .build_with_reqwest(reqwest_client())
        .unwrap();

    // The first call refreshes the refresh-only token set at the token endpoint.
    let me: Value = client.get_json("/api/users/current").await.unwrap();
    assert_eq!(me["id"], DOCTOR_ID);
    assert_eq!(sim.stats().token_refreshes, 1);

    // A JSON body crosses whole; the overlap comes back typed, with the appointment's id.
    let created: Value = client
        .post_json("/api/appointments", &appointment(1))
        .await
        .unwrap();
    let conflict = client
        .post("/api/appointments", &appointment(1))
        .await
        .unwrap_err();
    match &conflict {
        DrChronoError::AppointmentConflict { overlapping_id, .. } => {
            assert_eq!(*overlapping_id, created["id"].as_u64(), "{conflict:?}");
        }
        other => panic!("expected AppointmentConflict, got {other:?}"),
    }

    // A 503 is retried after the (short) backoff and the GET succeeds.
    sim.simulator()
        .fail_next_api([StatusCode::SERVICE_UNAVAILABLE]);
    let patient: Value = client.get_json("/api/patients/42").await.unwrap();
    assert_eq!(patient["id"], 42);
    assert_eq!(policy.stats().server_error_retries, 1);
    let stats = sim.stats();
    assert_eq!(stats.faults, 1);
    assert_eq!(stats.token_refreshes, 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_not_sent_and_retried_even_for_a_post() {
    let expires = SystemTime::now() + Duration::from_secs(48 * 3600);
    let policy = quick_retries();
    let client = DrChronoClient::builder()
        .credentials("id", "secret".to_owned())
        .tokens(TokenSet::new(
            "access".to_owned(),
            "refresh".to_owned(),
            expires,
        ))
        .base_url(closed_port().await)
        .retry(policy.clone())
        .build_with_reqwest(reqwest_client())
        .unwrap();
    let error = client
        .post("/api/appointments", &appointment(1))
        .await
        .unwrap_err();
    let DrChronoError::Transport {
        not_sent: true,
        source,
        ..
    } = &error
    else {
        panic!("expected Transport {{ not_sent: true }}, got {error:?}");
    };
    let source: &(dyn StdError + 'static) = &**source;
    let connect = find::<ConnectError>(source).expect("a ConnectError in the chain");
    let reqwest = find::<reqwest::Error>(connect as &(dyn StdError + 'static))
        .expect("reqwest's error inside");
    assert!(reqwest.is_connect(), "{reqwest:?}");
    // Provably not sent, so even a POST was retried, 3 times.
    assert_eq!(policy.stats().transport_retries, 3);
}

/// Paused time: the token client's own backoff between its attempts (1 s, then 2 s) passes
/// at once; a refused loopback connection needs no clock.
#[tokio::test(start_paused = true)]
async fn the_token_endpoint_is_called_through_reqwest() {
    let client = DrChronoClient::builder()
        .credentials("id", "secret".to_owned())
        .refresh_token("refresh".to_owned())
        .base_url(closed_port().await)
        .token_url(format!("{}/o/token/", closed_port().await))
        .retry(RetryPolicy::builder().max_retries(0).build().unwrap())
        .build_with_reqwest(reqwest_client())
        .unwrap();
    let error = client.get("/api/users/current").await.unwrap_err();
    // The API request waited for a token that never came: it was not sent.
    assert!(error.is_not_sent(), "{error:?}");
    let boxed: BoxError = Box::new(error);
    let reqwest = find::<reqwest::Error>(&*boxed)
        .unwrap_or_else(|| panic!("reqwest's error in the chain: {boxed:?}"));
    assert!(reqwest.is_connect(), "{reqwest:?}");
    assert_eq!(
        reqwest.url().map(reqwest::Url::path),
        Some("/o/token/"),
        "the token endpoint's call failed in reqwest"
    );
}
