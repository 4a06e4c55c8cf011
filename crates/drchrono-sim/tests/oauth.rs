//! Token endpoint behaviour: rotation, revocation, expiry, re-authorisation, errors.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{Http, SimConfig, spawn};

#[tokio::test]
async fn refresh_rotates_both_tokens() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let start = sim.credentials().refresh_token;
    let reply = http.refresh(&sim, &start).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 172_800);
    assert_eq!(body["scope"], sim.credentials().scope);
    let access = body["access_token"].as_str().unwrap();
    let rotated = body["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, start);
    assert_eq!(
        http.get("/api/users/current", access).await.status,
        StatusCode::OK
    );

    // The rotated refresh token works once more; the original is gone.
    assert_eq!(http.refresh(&sim, rotated).await.status, StatusCode::OK);
    assert_eq!(sim.stats().token_refreshes, 2);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_is_invalid_grant() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let start = sim.credentials().refresh_token;
    assert_eq!(http.refresh(&sim, &start).await.status, StatusCode::OK);
    let reply = http.refresh(&sim, &start).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), serde_json::json!({"error": "invalid_grant"}));
    assert_eq!(
        http.refresh(&sim, "never-issued").await.json()["error"],
        "invalid_grant"
    );
    let stats = sim.stats();
    assert_eq!((stats.token_refreshes, stats.invalid_grant), (1, 2));
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let c = sim.credentials();
    let reply = http
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &c.refresh_token),
                ("client_id", &c.client_id),
                ("client_secret", "wrong"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), serde_json::json!({"error": "invalid_client"}));
    assert_eq!(sim.stats().invalid_client, 1);
    // The refresh token was not spent by the failed attempt.
    assert_eq!(
        http.refresh(&sim, &c.refresh_token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_grant_types_are_unsupported() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let c = sim.credentials();
    for grant in ["authorization_code", "password", "client_credentials", ""] {
        let reply = http
            .post_form(
                "/o/token/",
                &[
                    ("grant_type", grant),
                    ("client_id", &c.client_id),
                    ("client_secret", &c.client_secret),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{grant}");
        assert_eq!(reply.json()["error"], "unsupported_grant_type");
    }
}

#[tokio::test]
async fn refreshing_revokes_the_prior_access_token() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let first = http
        .refresh(&sim, &sim.credentials().refresh_token)
        .await
        .json();
    let old_access = first["access_token"].as_str().unwrap();
    let second = http
        .refresh(&sim, first["refresh_token"].as_str().unwrap())
        .await
        .json();
    let reply = http.get("/api/users/current", old_access).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.detail(),
        "Authentication credentials were not provided."
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            "Bearer realm=\"api\",error=\"invalid_token\",error_description=\"The access token is invalid.\""
        )
    );
    let new_access = second["access_token"].as_str().unwrap();
    assert_eq!(
        http.get("/api/users/current", new_access).await.status,
        StatusCode::OK
    );
    assert_eq!(sim.stats().unauthorized, 1);
}

#[tokio::test(start_paused = true)]
async fn access_tokens_expire_after_their_lifetime() {
    let sim = spawn(SimConfig::default().token_lifetime(Duration::from_secs(30)))
        .await
        .unwrap();
    let http = Http::new(&sim);
    let reply = http.refresh(&sim, &sim.credentials().refresh_token).await;
    assert_eq!(reply.json()["expires_in"], 30);
    let access = reply.json()["access_token"].as_str().unwrap().to_owned();
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert_eq!(
        http.get("/api/users/current", &access).await.status,
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let reply = http.get("/api/users/current", &access).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            "Bearer realm=\"api\",error=\"invalid_token\",error_description=\"The access token has expired.\""
        )
    );
}

#[tokio::test]
async fn reauthorize_revokes_every_earlier_token() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let c = sim.credentials();
    let first = http.refresh(&sim, &c.refresh_token).await.json();
    let reply = http
        .post_form(
            "/sim/reauthorize",
            &[
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let fresh = reply.json();
    assert_eq!(fresh["token_type"], "Bearer");
    let old_access = first["access_token"].as_str().unwrap();
    let old_refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(
        http.get("/api/users/current", old_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.refresh(&sim, old_refresh).await.json()["error"],
        "invalid_grant"
    );
    let access = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        http.get("/api/users/current", access).await.status,
        StatusCode::OK
    );
    let refresh = fresh["refresh_token"].as_str().unwrap();
    assert_eq!(http.refresh(&sim, refresh).await.status, StatusCode::OK);

    let wrong = http
        .post_form(
            "/sim/reauthorize",
            &[("client_id", &c.client_id), ("client_secret", "x")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
}

#[tokio::test]
async fn token_endpoint_faults_can_be_injected() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    sim.simulator()
        .fail_next_token([StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY]);
    let token = sim.credentials().refresh_token;
    assert_eq!(
        http.refresh(&sim, &token).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        http.refresh(&sim, &token).await.status,
        StatusCode::BAD_GATEWAY
    );
    // The faults did not spend the refresh token.
    assert_eq!(http.refresh(&sim, &token).await.status, StatusCode::OK);
    assert_eq!(sim.stats().faults, 2);
}

#[tokio::test]
async fn token_families_are_per_user_and_throttling_per_application() {
    let sim = spawn(SimConfig::default().max_per_second(3)).await.unwrap();
    let http = Http::new(&sim);
    let doctor = http.access_token(&sim).await;
    let staff = sim
        .simulator()
        .authorize_user("frontdesk", Some("user:read"));
    // Another user's grant leaves the doctor's tokens alone.
    assert_eq!(
        http.get("/api/users/current", &doctor).await.status,
        StatusCode::OK
    );
    let me = http
        .get("/api/users/current", &staff.access_token)
        .await
        .json();
    assert_eq!(me["username"], "frontdesk");
    assert_eq!(me["is_staff"], true);
    assert_ne!(me["id"], drchrono_sim::DOCTOR_ID);
    // One application: the staff member's calls spend the doctor's budget too.
    assert_eq!(
        http.get("/api/users/current", &staff.access_token)
            .await
            .status,
        StatusCode::OK
    );
    let reply = http.get("/api/users/current", &doctor).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // Re-authorising the staff member over HTTP revokes only that user's tokens.
    let c = sim.credentials();
    let again = http
        .post_form(
            "/sim/reauthorize",
            &[
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
                ("username", "frontdesk"),
                ("scope", "user:read"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["scope"], "user:read");
    assert_eq!(
        http.refresh(&sim, &staff.refresh_token).await.json()["error"],
        "invalid_grant"
    );
    let doctor_me = http.get("/api/users/current", &doctor).await;
    assert_ne!(doctor_me.status, StatusCode::UNAUTHORIZED);
}
