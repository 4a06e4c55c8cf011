//! Issue 13, the facade's part: the access token stays on the API origin, redirects are
//! followed only there, plain `http` needs an explicit opt-in, and nothing hangs — every
//! attempt is bounded, a stalled or broken success body is retried like a 5xx, and a huge
//! one is refused, typed. Under paused time, over the simulator's router (behind a wire that
//! records every request and can misbehave the way hostile proxies and dead servers do).

mod support;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use drchrono_core::BoxError;
use drchrono_sim::{SimConfig, Simulator};
use drchrono_tower::ratelimit::RateLimitConfig;
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{
    BodyTooLarge, BuildError, DrChronoClient, DrChronoClientBuilder, DrChronoError, TimedOut,
    TimeoutPhase,
};
use futures::{StreamExt, TryStreamExt};
use http::header::{AUTHORIZATION, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use support::{
    MONDAY_10_37_UTC, appointment, client_builder, limiter, seeded_policy, simulator, utc,
};

type Body = UnsyncBoxBody<Bytes, BoxError>;
type Transport = BoxCloneSyncService<Request<Full<Bytes>>, Response<Body>, BoxError>;
type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// Longer than any bound the client documents: a call still pending then has hung.
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 24 * 3600);

/// One request as it left the client.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// `scheme://authority` the request was addressed to.
    origin: String,
    path: String,
    authorized: bool,
}

#[derive(Debug, Clone, Default)]
struct Wire(Arc<Mutex<Vec<Seen>>>);

impl Wire {
    fn seen(&self) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn api(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with("/api/"))
            .collect()
    }
}

fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A transport that records every request, answers it by `rule` when the rule wants to, and
/// otherwise hands it to the simulator's router.
fn wire(
    sim: &Simulator,
    rule: impl Fn(&Request<Full<Bytes>>) -> Option<Answer> + Send + Sync + 'static,
) -> (Transport, Wire) {
    let log = Wire::default();
    let router = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(|response: Response<_>| response.map(boxed))
            .map_err(|never: Infallible| -> BoxError { match never {} })
            .service(sim.router()),
    );
    let rule = Arc::new(rule);
    let recorded = log.clone();
    let transport = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let uri = request.uri();
        recorded
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Seen {
                method: request.method().clone(),
                origin: format!(
                    "{}://{}",
                    uri.scheme_str().unwrap_or(""),
                    uri.authority().map_or("", |a| a.as_str())
                ),
                path: uri.path().to_owned(),
                authorized: request.headers().contains_key(AUTHORIZATION),
            });
        match rule(&request) {
            Some(answer) => answer,
            None => {
                let router = router.clone();
                Box::pin(router.oneshot(request)) as Answer
            }
        }
    });
    (BoxCloneSyncService::new(transport), log)
}

fn builder(sim: &Simulator) -> DrChronoClientBuilder {
    client_builder(
        sim,
        limiter(RateLimitConfig::default(), utc(MONDAY_10_37_UTC)),
    )
}

fn sim(patients: u64) -> Simulator {
    simulator(
        SimConfig::default().patients(patients),
        utc(MONDAY_10_37_UTC),
    )
}

fn answer(response: Response<Body>) -> Option<Answer> {
    Some(Box::pin(async move { Ok(response) }))
}

fn redirect(status: u16, location: &str) -> Option<Answer> {
    answer(
        Response::builder()
            .status(status)
            .header(LOCATION, location)
            .body(boxed(Full::new(Bytes::new())))
            .unwrap(),
    )
}

/// The first error of type `E` in the transport error's chain (hyper-util wraps a connect
/// timeout in its own error).
fn in_chain<E: StdError + 'static>(source: &BoxError) -> Option<&E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(&**source);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The refused origin of a [`DrChronoError::ForeignOrigin`]: typed, not retryable, and
/// printing no path or query.
fn refused_origin(error: &DrChronoError) -> Option<&str> {
    match error {
        DrChronoError::ForeignOrigin { origin, .. } => {
            assert!(!error.is_retryable() && !error.is_not_sent(), "{error:?}");
            assert!(!error.to_string().contains("/api/"), "{error}");
            Some(origin)
        }
        _ => None,
    }
}

fn timed_out(error: &DrChronoError) -> Option<(bool, TimedOut)> {
    match error {
        DrChronoError::Transport {
            not_sent, source, ..
        } => in_chain::<TimedOut>(source).map(|t| (*not_sent, *t)),
        _ => None,
    }
}

async fn bounded<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(SEVEN_DAYS, call)
        .await
        .expect("the call hung for 7 simulated days")
}

// ---------------------------------------------------------------------------------------
// Origin pinning
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_next_link_to_another_host_is_refused_and_nothing_is_sent_there() {
    let sim = sim(12);
    // A hostile proxy rewrites the first page's `next` link to its own host.
    let router = sim.router();
    let (transport, wire) = wire(&sim, move |request| {
        let first_page = request.uri().path() == "/api/patients"
            && !request.uri().query().unwrap_or("").contains("cursor");
        if !first_page {
            return None;
        }
        let forwarded = Request::get(request.uri().clone())
            .header(AUTHORIZATION, request.headers()[AUTHORIZATION].clone())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let router = router.clone();
        Some(Box::pin(async move {
            let response = router.oneshot(forwarded).await?;
            let (parts, body) = response.into_parts();
            let mut page: Value = serde_json::from_slice(&body.collect().await?.to_bytes())?;
            page["next"] = json!("http://evil.example/api/patients?cursor=5&page_size=5");
            let body = Full::new(Bytes::from(serde_json::to_vec(&page)?));
            Ok(Response::from_parts(parts, boxed(body)))
        }))
    });
    let client = builder(&sim).build_with_transport(transport).unwrap();

    let mut pages = Box::pin(client.pages::<Value>("/api/patients?page_size=5"));
    let mut ids = Vec::new();
    let error = loop {
        match bounded(pages.next()).await {
            Some(Ok(patient)) => ids.push(patient["id"].as_u64().unwrap()),
            Some(Err(error)) => break error,
            None => panic!("the stream ended without refusing the foreign link"),
        }
    };
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let refused = refused_origin(&error).unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(refused, "http://evil.example");
    assert!(bounded(pages.next()).await.is_none(), "the stream ends");

    let seen = wire.seen();
    assert!(
        seen.iter().all(|s| s.origin == "https://drchrono.sim"),
        "a request left the API origin: {seen:?}"
    );
    assert_eq!(wire.api().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_absolute_url_on_another_origin_is_refused_before_anything_is_sent() {
    let sim = sim(3);
    let (transport, wire) = wire(&sim, |_| None);
    let client = builder(&sim).build_with_transport(transport).unwrap();

    for url in [
        "https://evil.example/api/patients/1?first_name=Jane",
        "http://evil.example/api/patients/1",
        "https://drchrono.sim:8443/api/patients/1",
        "https://drchrono.sim.evil.example/api/patients/1",
    ] {
        let error = bounded(client.get(url)).await.unwrap_err();
        assert!(refused_origin(&error).is_some(), "{url}: {error:?}");
        assert!(!error.to_string().contains("Jane"), "{error}");
    }
    let posted = bounded(client.post(
        "https://evil.example/api/patients",
        &json!({"first_name": "Jane"}),
    ))
    .await
    .unwrap_err();
    assert!(refused_origin(&posted).is_some(), "{posted:?}");
    let request = Request::delete("https://evil.example/api/patients/1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let sent = bounded(client.send(request)).await.unwrap_err();
    assert!(refused_origin(&sent).is_some(), "{sent:?}");

    // Nothing left: not even the token refresh that the first request would have needed.
    assert!(wire.seen().is_empty(), "{:?}", wire.seen());
    assert_eq!(sim.stats().requests, 0);

    // The API origin itself still works, by path or by absolute URL.
    let patient: Value = bounded(client.get_json("https://drchrono.sim/api/patients/3"))
        .await
        .unwrap();
    assert_eq!(patient["id"], 3);
}

#[tokio::test(start_paused = true)]
async fn an_http_next_link_on_the_api_host_is_followed_over_https() {
    // The simulator writes `next` links as `http://<host>/…`, as Django REST Framework does
    // behind a TLS-terminating proxy.
    let sim = sim(23);
    let (transport, wire) = wire(&sim, |_| None);
    let client = builder(&sim).build_with_transport(transport).unwrap();

    let ids: Vec<u64> = bounded(
        client
            .pages::<Value>("/api/patients?page_size=5")
            .map_ok(|p| p["id"].as_u64().unwrap())
            .try_collect(),
    )
    .await
    .unwrap();
    assert_eq!(ids, (1..=23).collect::<Vec<_>>());

    let api = wire.api();
    assert_eq!(api.len(), 5);
    assert!(
        api.iter()
            .all(|s| s.origin == "https://drchrono.sim" && s.authorized),
        "a page went out over plain http: {api:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn same_origin_redirects_are_followed_and_cross_origin_ones_returned() {
    let sim = sim(10);
    let (transport, wire) = wire(&sim, |request| {
        match (request.method().as_str(), request.uri().path()) {
            ("GET", "/api/old/patients/3") => redirect(302, "/api/patients/3"),
            ("GET", "/api/moved/patients/3") => redirect(301, "http://drchrono.sim/api/patients/3"),
            ("GET", "/api/elsewhere") => redirect(302, "https://evil.example/api/patients/3"),
            ("GET", "/api/loop") => redirect(302, "/api/loop"),
            ("POST", "/api/legacy/appointments") => redirect(307, "/api/appointments"),
            ("POST", "/api/see-other") => redirect(303, "/api/patients/4"),
            _ => None,
        }
    });
    let client = builder(&sim).build_with_transport(transport).unwrap();

    // 302 and 301 on the API origin: followed, with the token, over https.
    let patient: Value = bounded(client.get_json("/api/old/patients/3"))
        .await
        .unwrap();
    assert_eq!(patient["id"], 3);
    let patient: Value = bounded(client.get_json("/api/moved/patients/3"))
        .await
        .unwrap();
    assert_eq!(patient["id"], 3);

    // 307: the POST is replayed with its body (the simulator creates the appointment).
    let created = bounded(client.post(
        "/api/legacy/appointments",
        &appointment(1, "2026-01-05T10:00:00"),
    ))
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // 303: a GET of the new location.
    let see_other = bounded(client.post("/api/see-other", &json!({})))
        .await
        .unwrap();
    assert_eq!(see_other.status(), StatusCode::OK);
    let patient: Value = DrChronoClient::json(&see_other).unwrap();
    assert_eq!(patient["id"], 4);

    // Another origin: the 302 comes back as it is; nothing is sent there.
    let elsewhere = bounded(client.get("/api/elsewhere")).await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::FOUND);
    assert_eq!(
        elsewhere.headers()[LOCATION],
        "https://evil.example/api/patients/3"
    );

    // A loop: 5 redirects followed, then the 302 is returned.
    let looped = bounded(client.get("/api/loop")).await.unwrap();
    assert_eq!(looped.status(), StatusCode::FOUND);

    let api = wire.api();
    let route: Vec<(String, &str)> = api
        .iter()
        .map(|s| (s.method.to_string(), s.path.as_str()))
        .collect();
    let mut expected: Vec<(String, &str)> = vec![
        ("GET".into(), "/api/old/patients/3"),
        ("GET".into(), "/api/patients/3"),
        ("GET".into(), "/api/moved/patients/3"),
        ("GET".into(), "/api/patients/3"),
        ("POST".into(), "/api/legacy/appointments"),
        ("POST".into(), "/api/appointments"),
        ("POST".into(), "/api/see-other"),
        ("GET".into(), "/api/patients/4"),
        ("GET".into(), "/api/elsewhere"),
    ];
    expected.extend(std::iter::repeat_n(("GET".into(), "/api/loop"), 6));
    assert_eq!(route, expected);
    assert!(
        api.iter()
            .all(|s| s.origin == "https://drchrono.sim" && s.authorized),
        "{api:?}"
    );
}

#[test]
fn the_builder_refuses_plain_http_to_a_host_that_is_not_loopback() {
    let base = || {
        DrChronoClient::builder()
            .credentials("id", "secret".to_owned())
            .refresh_token("rt".to_owned())
    };
    let insecure = base().base_url("http://app.drchrono.com").build();
    assert!(
        matches!(
            insecure,
            Err(BuildError::InsecureUrl {
                setting: "base_url",
                ..
            })
        ),
        "{insecure:?}"
    );
    let insecure = base().token_url("http://drchrono.com/o/token/").build();
    assert!(
        matches!(
            insecure,
            Err(BuildError::InsecureUrl {
                setting: "token_url",
                ..
            })
        ),
        "{insecure:?}"
    );
    // Loopback (a local drchrono-sim) is fine, and so is an explicit opt-in.
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:3000",
        "http://[::1]:9000",
    ] {
        let local = base()
            .base_url(url)
            .token_url(format!("{url}/o/token/"))
            .build();
        assert!(local.is_ok(), "{url}: {local:?}");
    }
    let opted_in = base()
        .base_url("http://drchrono.test")
        .token_url("http://drchrono.test/o/token/")
        .allow_insecure_http(true)
        .build();
    assert!(opted_in.is_ok(), "{opted_in:?}");
}

// ---------------------------------------------------------------------------------------
// Nothing hangs
// ---------------------------------------------------------------------------------------

/// A server that accepts API requests and never answers (the token endpoint works).
fn silent_api(request: &Request<Full<Bytes>>) -> Option<Answer> {
    request
        .uri()
        .path()
        .starts_with("/api/")
        .then(|| Box::pin(std::future::pending()) as Answer)
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_fails_typed_within_the_documented_time() {
    let sim = sim(3);
    let (transport, wire) = wire(&sim, silent_api);
    let policy = seeded_policy();
    let client = builder(&sim)
        .retry(policy.clone())
        .build_with_transport(transport)
        .unwrap();

    // A GET: 4 attempts of 60 s each, 3 backoffs of 25–30, 50–60 and 100–120 s.
    let start = Instant::now();
    let error = bounded(client.get("/api/patients/1")).await.unwrap_err();
    let elapsed = start.elapsed();
    let (not_sent, timeout) = timed_out(&error).unwrap_or_else(|| panic!("{error:?}"));
    assert!(
        !not_sent,
        "a request that may have arrived is not `not_sent`"
    );
    assert_eq!(timeout.phase(), TimeoutPhase::ResponseHead);
    assert_eq!(timeout.after(), Duration::from_secs(60));
    assert!(
        elapsed >= Duration::from_secs(4 * 60 + 25 + 50 + 100)
            && elapsed <= Duration::from_secs(450),
        "{elapsed:?}"
    );
    assert_eq!(wire.api().len(), 4, "each retry had its own 60 s");
    assert_eq!(policy.stats().transport_retries, 3);

    // A POST may have arrived: not retried, fails after one timeout.
    let start = Instant::now();
    let error = bounded(client.post("/api/patients", &json!({"first_name": "Jane"})))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert!(
        matches!(timed_out(&error), Some((false, t)) if t.phase() == TimeoutPhase::ResponseHead)
    );
    assert_eq!(policy.stats().transport_retries, 3);
}

#[tokio::test(start_paused = true)]
async fn the_response_timeout_is_configurable() {
    let sim = sim(3);
    let (transport, _wire) = wire(&sim, silent_api);
    let client = builder(&sim)
        .retry(RetryPolicy::builder().max_retries(0).build().unwrap())
        .response_head_timeout(Duration::from_secs(5))
        .build_with_transport(transport)
        .unwrap();
    let start = Instant::now();
    let error = bounded(client.get("/api/patients/1")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(timed_out(&error).is_some(), "{error:?}");
}

/// The first API answer's body misbehaves as `body` says; every later request is the
/// simulator's.
fn first_body_misbehaves(sim: &Simulator, body: fn() -> Body) -> (Transport, Wire, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let (transport, wire) = wire(sim, move |request| {
        if !request.uri().path().starts_with("/api/") || counted.fetch_add(1, Ordering::SeqCst) > 0
        {
            return None;
        }
        answer(
            Response::builder()
                .status(StatusCode::OK)
                .body(body())
                .unwrap(),
        )
    });
    (transport, wire, calls)
}

fn stalled_body() -> Body {
    boxed(StreamBody::new(futures::stream::pending::<
        Result<Frame<Bytes>, BoxError>,
    >()))
}

fn broken_body() -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{\"id\": 1, \"first_na"))),
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
    ];
    boxed(StreamBody::new(futures::stream::iter(frames)))
}

#[tokio::test(start_paused = true)]
async fn a_stalled_success_body_times_out_and_a_get_is_retried_like_a_5xx() {
    let sim = sim(3);
    let (transport, wire, _) = first_body_misbehaves(&sim, stalled_body);
    let policy = seeded_policy();
    let client = builder(&sim)
        .retry(policy.clone())
        .build_with_transport(transport)
        .unwrap();

    let start = Instant::now();
    let patient: Value = bounded(client.get_json("/api/patients/1")).await.unwrap();
    assert_eq!(patient["id"], 1);
    let elapsed = start.elapsed();
    // 60 s for the body, then DrChrono's first backoff, 25–30 s.
    assert!(
        elapsed >= Duration::from_secs(85) && elapsed <= Duration::from_secs(90),
        "{elapsed:?}"
    );
    assert_eq!(policy.stats().transport_retries, 1);
    assert_eq!(wire.api().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_success_body_is_a_typed_timeout() {
    let sim = sim(3);
    let (transport, _, _) = first_body_misbehaves(&sim, stalled_body);
    let client = builder(&sim)
        .retry(RetryPolicy::builder().max_retries(0).build().unwrap())
        .body_read_timeout(Duration::from_secs(20))
        .build_with_transport(transport)
        .unwrap();
    let start = Instant::now();
    let error = bounded(client.get("/api/patients/1")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    let (not_sent, timeout) = timed_out(&error).unwrap_or_else(|| panic!("{error:?}"));
    assert!(!not_sent);
    assert_eq!(timeout.phase(), TimeoutPhase::Body);
}

#[tokio::test(start_paused = true)]
async fn a_success_body_that_breaks_off_is_retried_for_a_get_and_not_for_a_post() {
    let sim = sim(3);
    let (transport, _, _) = first_body_misbehaves(&sim, broken_body);
    let policy = seeded_policy();
    let client = builder(&sim)
        .retry(policy.clone())
        .build_with_transport(transport)
        .unwrap();
    let patient: Value = bounded(client.get_json("/api/patients/1")).await.unwrap();
    assert_eq!(patient["id"], 1);
    assert_eq!(policy.stats().transport_retries, 1);

    let sim = sim_with_one_patient_created_by_a_broken_post().await;
    assert_eq!(sim, 1, "the POST that broke off was not sent again");
}

/// A POST whose answer's body breaks off after the server created the patient: the error
/// says it may have been sent, and the policy does not send it again.
async fn sim_with_one_patient_created_by_a_broken_post() -> usize {
    let sim = sim(0);
    let created = Arc::new(AtomicU32::new(0));
    let router = sim.router();
    let counted = created.clone();
    let (transport, _wire) = wire(&sim, move |request| {
        if request.method() != Method::POST || request.uri().path() != "/api/patients" {
            return None;
        }
        let forwarded = Request::post(request.uri().clone())
            .header(AUTHORIZATION, request.headers()[AUTHORIZATION].clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(request.body().clone())
            .unwrap();
        let router = router.clone();
        let counted = counted.clone();
        Some(Box::pin(async move {
            let response = router.oneshot(forwarded).await?;
            if response.status() == StatusCode::CREATED {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response.map(|_| broken_body()))
        }))
    });
    let policy = seeded_policy();
    let client = builder(&sim)
        .retry(policy.clone())
        .build_with_transport(transport)
        .unwrap();
    let patient = json!({
        "first_name": "Jane", "last_name": "Doe", "gender": "Female",
        "doctor": drchrono_sim::DOCTOR_ID, "date_of_birth": "1970-01-01",
    });
    let error = bounded(client.post("/api/patients", &patient))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DrChronoError::Transport {
                not_sent: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(policy.stats().transport_retries, 0);
    created.load(Ordering::SeqCst) as usize
}

#[tokio::test(start_paused = true)]
async fn a_success_body_over_the_limit_is_a_typed_error_and_not_retried() {
    let sim = sim(100);
    let (transport, wire) = wire(&sim, |_| None);
    let policy = seeded_policy();
    let client = builder(&sim)
        .retry(policy.clone())
        .max_body_size(1024)
        .build_with_transport(transport)
        .unwrap();
    let error = bounded(client.get("/api/patients?page_size=100"))
        .await
        .unwrap_err();
    let DrChronoError::Decode { source, .. } = &error else {
        panic!("{error:?}");
    };
    let too_large = source
        .downcast_ref::<BodyTooLarge>()
        .unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(too_large.limit(), 1024);
    assert_eq!(error.status(), Some(StatusCode::OK));
    assert_eq!(policy.stats().retries, 0);
    assert_eq!(wire.api().len(), 1);

    // A small page still fits.
    let page: Value = bounded(client.get_json("/api/patients?page_size=1"))
        .await
        .unwrap();
    assert_eq!(page["results"][0]["id"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_default_limit_is_32_mib() {
    let sim = sim(1);
    let chunk = Bytes::from(vec![b' '; 1024 * 1024]);
    let (transport, _) = wire(&sim, move |request| {
        // 33 chunks of 1 MiB, no declared length.
        let size = match request.uri().path() {
            "/api/huge" => 33,
            "/api/large" => 32,
            _ => return None,
        };
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            (0..size).map(|_| Ok(Frame::data(chunk.clone()))).collect();
        answer(Response::new(boxed(StreamBody::new(
            futures::stream::iter(frames),
        ))))
    });
    let client = builder(&sim).build_with_transport(transport).unwrap();
    let error = bounded(client.get("/api/huge")).await.unwrap_err();
    assert!(
        matches!(&error, DrChronoError::Decode { source, .. }
            if source.downcast_ref::<BodyTooLarge>().map(BodyTooLarge::limit) == Some(32 * 1024 * 1024)),
        "{error:?}"
    );
    let large = bounded(client.get("/api/large")).await.unwrap();
    assert_eq!(large.body().len(), 32 * 1024 * 1024);
}
