//! The simulator never panics on bad input: every case gets a DrChrono-style answer.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use support::{Http, SimConfig, spawn};

#[tokio::test]
async fn malformed_bodies_get_drf_errors() {
    let sim = spawn(SimConfig::default().max_body_bytes(1024))
        .await
        .unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let auth = format!("Bearer {token}");
    let json_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let reply = http
        .send(
            Method::POST,
            "/api/appointments",
            &json_headers,
            "{\"doctor\": ",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.detail().starts_with("JSON parse error - "),
        "{}",
        reply.detail()
    );

    let reply = http
        .send(Method::POST, "/api/appointments", &json_headers, "[1, 2]")
        .await;
    assert_eq!(
        reply.json(),
        json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
    );

    let reply = http
        .send(
            Method::POST,
            "/api/appointments",
            &json_headers,
            vec![0xff, 0xfe, 0x00],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let text = [
        ("authorization", auth.as_str()),
        ("content-type", "text/plain; charset=utf-8"),
    ];
    let reply = http
        .send(Method::POST, "/api/patients", &text, "doctor=101")
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        reply.detail(),
        "Unsupported media type \"text/plain\" in request."
    );

    let huge = vec![b'x'; 4096];
    let reply = http
        .send(Method::POST, "/api/patients", &json_headers, huge)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.detail(), "Request body too large.");

    // No body at all: every required field is reported.
    let reply = http
        .send(
            Method::POST,
            "/api/appointments",
            &json_headers,
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["doctor"], json!(["This field is required."]));

    // Wrong JSON types.
    let reply = http
        .post_json(
            "/api/appointments",
            &token,
            &json!({"doctor": [1], "patient": {"a": 1},
            "office": -3, "exam_room": true, "scheduled_time": 5, "duration": null}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["office"],
        json!(["Ensure this value is greater than or equal to 1."])
    );

    // Form data is parsed as DRF does.
    let form = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let reply = http
        .send(
            Method::POST,
            "/api/patients",
            &form,
            "doctor=101&gender=Other",
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("authorization", "Bearer")],
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("authorization", "Bearer not-a-token")],
        &[("authorization", "Bearer t\u{f6}k\u{e9}n")],
    ];
    for headers in cases {
        let reply = http
            .send(Method::GET, "/api/users/current", headers, Bytes::new())
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(
            reply.detail(),
            "Authentication credentials were not provided."
        );
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer realm=\"api\"")
        );
    }
    let reply = http
        .send(
            Method::GET,
            "/api/users/current",
            &[("authorization", "Bearer x")],
            Bytes::new(),
        )
        .await;
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("is invalid.")
    );
    assert_eq!(sim.stats().unauthorized, 6);
}

#[tokio::test]
async fn bad_token_requests_get_oauth_errors() {
    let sim = spawn(SimConfig::default().max_body_bytes(1024))
        .await
        .unwrap();
    let http = Http::new(&sim);
    let c = sim.credentials();
    // JSON is not a form: no grant type.
    let body = json!({"grant_type": "refresh_token", "refresh_token": c.refresh_token}).to_string();
    let reply = http
        .send(
            Method::POST,
            "/o/token/",
            &[("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    // Garbage form.
    let reply = http
        .send(
            Method::POST,
            "/o/token/",
            &[("content-type", "application/x-www-form-urlencoded")],
            vec![b'%', 0xff, b'=', b'&', b'&'],
        )
        .await;
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    // Missing refresh token.
    let reply = http
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_request");
    // Huge body.
    let reply = http
        .send(
            Method::POST,
            "/o/token/",
            &[("content-type", "application/x-www-form-urlencoded")],
            vec![b'a'; 10_000],
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Wrong method on the token endpoint.
    let reply = http.send(Method::GET, "/o/token/", &[], Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    // The starting refresh token survived all of it.
    assert_eq!(
        http.refresh(&sim, &c.refresh_token).await.status,
        StatusCode::OK
    );
}

/// Django's `page_not_found` with `DEBUG = False`, byte for byte.
const DJANGO_404: &str = "\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n\
    </head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this \
    server.</p>\n</body>\n</html>\n";

#[tokio::test]
async fn unknown_paths_get_djangos_html_404() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let auth = format!("Bearer {token}");
    for path in [
        "/",
        "/api",
        "/api/",
        "/api/doctors",
        "/api/patients/abc",
        "/api/patients/1/2",
        "/api/users/someone",
        "/o/authorize/",
    ] {
        // With a valid token or none: no view runs, so nothing is authenticated.
        for headers in [vec![], vec![("authorization", auth.as_str())]] {
            let reply = http.send(Method::GET, path, &headers, Bytes::new()).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8"),
                "{path}"
            );
            assert_eq!(String::from_utf8_lossy(&reply.body), DJANGO_404, "{path}");
            assert_eq!(reply.header("allow"), None, "{path}");
        }
        // Any method: the URL is resolved before the method is looked at.
        let reply = http.send(Method::PATCH, path, &[], Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "PATCH {path}");
    }
    let stats = sim.stats();
    assert_eq!((stats.unauthorized, stats.accepted), (0, 0));
}

#[tokio::test]
async fn a_missing_object_under_a_known_route_keeps_drfs_json_404() {
    let sim = spawn(SimConfig::default().patients(5)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for path in [
        "/api/patients/999999".to_owned(),
        "/api/patients/6/".to_owned(),
        format!("/api/appointments/{}", drchrono_sim::FIRST_APPOINTMENT_ID),
    ] {
        let reply = http.get(&path, &token).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.body,
            Bytes::from_static(br#"{"detail":"Not found."}"#)
        );
    }
    // It is the view's answer: authenticated first.
    let reply = http.get("/api/patients/999999", "not-a-token").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_injected_500_is_djangos_server_error_page() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    sim.simulator()
        .fail_next_api([StatusCode::INTERNAL_SERVER_ERROR]);
    let reply = http.get("/api/patients/1", &token).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        "\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Server Error (500)</title>\n\
         </head>\n<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
    );
}
