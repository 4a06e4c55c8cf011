//! `Allow` on every 405 (RFC 9110 §15.5.6), in Django REST Framework's format, and the
//! `HEAD` and `OPTIONS` answers that make it true.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use support::{Http, SimConfig, spawn};

/// No throttling in the way of a sweep over every route and method.
fn unthrottled() -> SimConfig {
    SimConfig::default()
        .max_per_second(10_000)
        .max_per_window(10_000)
        .max_per_hour(10_000)
}

/// Every route the simulator serves, with the methods it answers, as DRF lists them.
fn routes() -> Vec<(String, &'static str)> {
    vec![
        ("/api/users/current".into(), "GET, HEAD, OPTIONS"),
        ("/api/patients".into(), "GET, POST, HEAD, OPTIONS"),
        ("/api/patients/1".into(), "GET, HEAD, OPTIONS"),
        ("/api/appointments".into(), "POST, OPTIONS"),
        (
            format!("/api/appointments/{}", drchrono_sim::FIRST_APPOINTMENT_ID),
            "GET, HEAD, OPTIONS",
        ),
        ("/o/token/".into(), "POST, OPTIONS"),
        ("/sim/reauthorize".into(), "POST, OPTIONS"),
        ("/sim/stats".into(), "GET, HEAD, OPTIONS"),
    ]
}

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

#[tokio::test]
async fn every_405_lists_the_routes_methods_and_only_those_answer_otherwise() {
    let sim = spawn(unthrottled()).await.unwrap();
    let http = Http::new(&sim);
    let auth = format!("Bearer {}", http.access_token(&sim).await);
    for (path, allow) in routes() {
        let allowed: Vec<&str> = allow.split(", ").collect();
        for method in METHODS {
            let reply = http
                .send(
                    method.clone(),
                    &path,
                    &[("authorization", &auth)],
                    Bytes::new(),
                )
                .await;
            let listed = allowed.contains(&method.as_str());
            assert_eq!(
                reply.status == StatusCode::METHOD_NOT_ALLOWED,
                !listed,
                "{method} {path}: {} (Allow: {allow})",
                reply.status
            );
            if reply.status != StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
            if method == Method::HEAD {
                // The answer to HEAD has no body, whoever writes it.
                assert!(reply.body.is_empty(), "{method} {path}: {:?}", reply.body);
            } else if path.starts_with("/api/") {
                // DRF's answer, as DrChrono's article shows it.
                assert_eq!(
                    reply.json(),
                    json!({"detail": format!("Method \"{method}\" not allowed.")}),
                    "{method} {path}"
                );
            } else {
                // Django's `HttpResponseNotAllowed`: no body.
                assert!(reply.body.is_empty(), "{method} {path}: {:?}", reply.body);
                assert_eq!(
                    reply.header("content-type"),
                    Some("text/html; charset=utf-8")
                );
            }
        }
    }
}

#[tokio::test]
async fn every_drf_answer_carries_allow_but_faults_and_unknown_paths_do_not() {
    // A day-long window of 5: the sixth accepted request is throttled, however slow the run.
    let config = SimConfig::default()
        .patients(3)
        .max_per_window(5)
        .window(std::time::Duration::from_secs(86_400));
    let sim = spawn(config).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let allow = |reply: &support::Reply| reply.header("allow").map(str::to_owned);
    let list = Some("GET, POST, HEAD, OPTIONS".to_owned());
    let one = Some("GET, HEAD, OPTIONS".to_owned());

    let ok = http.get("/api/patients", &token).await;
    assert_eq!((ok.status, allow(&ok)), (StatusCode::OK, list.clone()));
    let missing = http.get("/api/patients/4", &token).await;
    assert_eq!(
        (missing.status, allow(&missing)),
        (StatusCode::NOT_FOUND, one.clone())
    );
    let unauthenticated = http.get("/api/patients/1", "not-a-token").await;
    assert_eq!(
        (unauthenticated.status, allow(&unauthenticated)),
        (StatusCode::UNAUTHORIZED, one.clone())
    );
    let created = http
        .post_json("/api/patients", &token, &json!({"first_name": "Ada"}))
        .await;
    assert_eq!(
        (created.status, allow(&created)),
        (StatusCode::BAD_REQUEST, list)
    );
    // An injected fault comes from outside DRF; an unknown path never reaches a view.
    sim.simulator()
        .fail_next_api([StatusCode::INTERNAL_SERVER_ERROR]);
    let fault = http.get("/api/patients/1", &token).await;
    assert_eq!(
        (fault.status, allow(&fault)),
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    );
    let unknown = http.get("/api/doctors", &token).await;
    assert_eq!(
        (unknown.status, allow(&unknown)),
        (StatusCode::NOT_FOUND, None)
    );
    // Past the window: DRF's 429 carries it too.
    let mut throttled = None;
    for _ in 0..10 {
        let reply = http.get("/api/users/current", &token).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(reply);
            break;
        }
    }
    let throttled = throttled.expect("the window fills");
    assert_eq!(allow(&throttled), one);
}

#[tokio::test]
async fn head_runs_get_without_a_body_and_options_answers_drfs_metadata() {
    let sim = spawn(SimConfig::default().patients(3)).await.unwrap();
    let http = Http::new(&sim);
    let auth = format!("Bearer {}", http.access_token(&sim).await);
    let headers = [("authorization", auth.as_str())];

    let head = http
        .send(Method::HEAD, "/api/patients/1", &headers, Bytes::new())
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert!(head.body.is_empty());
    let get = http
        .send(Method::GET, "/api/patients/1", &headers, Bytes::new())
        .await;
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    // A view without GET has no HEAD either.
    let head = http
        .send(Method::HEAD, "/api/appointments", &headers, Bytes::new())
        .await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(head.header("allow"), Some("POST, OPTIONS"));

    let options = http
        .send(Method::OPTIONS, "/api/patients", &headers, Bytes::new())
        .await;
    assert_eq!(options.status, StatusCode::OK);
    assert_eq!(options.header("allow"), Some("GET, POST, HEAD, OPTIONS"));
    assert_eq!(
        options.json(),
        json!({
            "name": "Patient List",
            "description": "",
            "renders": ["application/json"],
            "parses": ["application/json", "application/x-www-form-urlencoded"],
        })
    );
    // OPTIONS is a request like any other to DRF: authenticated, then counted.
    let anonymous = http
        .send(Method::OPTIONS, "/api/patients", &[], Bytes::new())
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Django's `View.options` on the token endpoint: 200, `Allow`, no body.
    let token_options = http
        .send(Method::OPTIONS, "/o/token/", &[], Bytes::new())
        .await;
    assert_eq!(token_options.status, StatusCode::OK);
    assert_eq!(token_options.header("allow"), Some("POST, OPTIONS"));
    assert_eq!(token_options.header("content-length"), Some("0"));
    assert!(token_options.body.is_empty());
}
