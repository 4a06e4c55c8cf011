//! `DrChronoService` as a plain tower service: one clock reading per `call`.

use std::convert::Infallible;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use drchrono_tower::DrChronoLayer;
use drchrono_tower::classify::{BoxError, clock};
use drchrono_tower::oauth::{ClientCredentials, TokenClient, TokenManager, TokenSet};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt, service_fn};

type Req = Request<Full<Bytes>>;

/// A stack around `transport` whose token never needs the (failing) token endpoint.
fn layer() -> DrChronoLayer {
    let token_endpoint = service_fn(|_request: Req| {
        ready(Err::<Response<Full<Bytes>>, BoxError>(
            "no token endpoint in this test".into(),
        ))
    });
    let client = TokenClient::new(token_endpoint, ClientCredentials::new("id", "secret"));
    let tokens = TokenManager::builder(client)
        .initial_tokens(TokenSet::new(
            "access",
            "refresh",
            SystemTime::now() + Duration::from_secs(3600),
        ))
        .build();
    DrChronoLayer::new(tokens)
}

/// A transport that reads the shared clock twice, 2 ms of real time apart, inside `call`.
fn recording_transport(
    seen: Arc<Mutex<Vec<(tokio::time::Instant, tokio::time::Instant)>>>,
) -> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone {
    service_fn(move |_request: Req| {
        let first = clock::now();
        std::thread::sleep(Duration::from_millis(2));
        seen.lock().unwrap().push((first, clock::now()));
        ready(Ok(Response::new(Full::new(Bytes::new()))))
    })
}

fn request() -> Req {
    Request::get("https://app.drchrono.com/api/patients")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn one_clock_reading_serves_every_layer_of_a_call() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = layer().layer(recording_transport(seen.clone()));
    // The first call loads the token asynchronously: the transport is called later, from
    // the response future. The next ones take the synchronous path through every layer.
    service.clone().oneshot(request()).await.unwrap();
    let before = tokio::time::Instant::now();
    service.clone().oneshot(request()).await.unwrap();
    service.oneshot(request()).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for &(first, second) in &seen[1..] {
        // Read once, when the call began: the transport's own 2 ms do not show.
        assert_eq!(first, second);
        assert!(first >= before);
    }
    // Each call reads the clock anew.
    assert!(seen[2].0 >= seen[1].0 + Duration::from_millis(2));
}

#[tokio::test]
async fn the_stack_alone_reads_the_clock_each_time() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stack = layer()
        .layer(recording_transport(seen.clone()))
        .into_inner();
    stack.clone().oneshot(request()).await.unwrap();
    stack.oneshot(request()).await.unwrap();
    let (first, second) = seen.lock().unwrap()[1];
    assert!(second >= first + Duration::from_millis(2));
}
