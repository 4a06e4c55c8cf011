//! Scenarios of the composed stack ([`DrChronoClient`]: retry, rate limit, OAuth refresh,
//! error classification) against the simulator's router, under paused time: what DrChrono's
//! guidance says the client must survive, each end to end.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use drchrono_sim::{FIRST_APPOINTMENT_ID, SimConfig};
use drchrono_tower::DrChronoError;
use drchrono_tower::oauth::{AuthStatus, ReauthorizationReason, TokenSet};
use drchrono_tower::ratelimit::RateLimitConfig;
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use support::{
    Exchange, MONDAY_10_37_UTC, appointment, client_builder, default_client, limiter, raw_get,
    record, seeded_policy, simulator, steady_traffic, token_set, utc,
};

#[tokio::test(start_paused = true)]
async fn a_429_caused_by_another_user_of_the_application_is_honoured() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(SimConfig::default(), start);
    let (client, wire) = default_client(&sim, start);
    let t0 = Instant::now();

    // Another staff member's program, with its own token family, spends the application's
    // whole 10-minute budget in 33 s, 9 requests a second, unknown to our limiter.
    let other = sim.authorize_user("frontdesk", None).access_token;
    let mut spent = 0;
    while spent < 290 {
        for _ in 0..9.min(290 - spent) {
            assert_eq!(
                raw_get(&sim, "/api/patients/1", &other).await,
                StatusCode::OK
            );
            spent += 1;
        }
        sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(sim.stats().accepted, 290);

    // Our 20 concurrent requests: the first to reach the server gets a 429 for the window.
    let mut tasks = JoinSet::new();
    for id in 1..=20 {
        let client = client.clone();
        tasks.spawn(async move { (id, client.get(&format!("/api/patients/{id}")).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.unwrap();
        let response = result.unwrap_or_else(|e| panic!("patient {id}: {e:?}"));
        assert_eq!(response.status(), StatusCode::OK);
    }

    let api: Vec<Exchange> = wire.api();
    let refused: Vec<&Exchange> = api
        .iter()
        .filter(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let first = *refused
        .first()
        .expect("the other user's traffic caused a 429");
    let wait = Duration::from_secs(first.retry_after.expect("a 429 says how long to wait"));
    // The window reopens when the other user's first requests, at t0, leave it.
    assert_eq!(first.sent_at + wait, t0 + Duration::from_secs(600));
    let available = first.sent_at + wait;
    // The limiter releases up to 9 requests in the same instant, before any answer: those
    // were on their way when the first 429 came back, and may be refused too. Nothing later
    // went before the advertised instant, and nothing later was refused.
    assert!(refused.len() <= 9, "{} refused", refused.len());
    for e in &api {
        if e.sent_at == first.sent_at {
            continue;
        }
        assert!(
            e.sent_at >= available,
            "{} sent {:?} before the server's {wait:?} were up",
            e.path,
            available - e.sent_at
        );
        assert_ne!(
            e.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}: a second 429",
            e.path
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.throttled.window, refused.len() as u64, "{stats:?}");
    assert_eq!((stats.throttled.second, stats.throttled.hour), (0, 0));
    assert_eq!(
        client.layer().retry_policy().stats().throttled_retries,
        refused.len() as u64
    );
    assert_eq!(api.len(), 20 + refused.len());
}

#[tokio::test(start_paused = true)]
async fn crossing_the_token_expiry_refreshes_once_before_it() {
    let start = utc(MONDAY_10_37_UTC);
    // One-hour tokens, so the test crosses an expiry; the client holds a fresh pair.
    let sim = simulator(
        SimConfig::default().token_lifetime(Duration::from_secs(3600)),
        start,
    );
    let (transport, wire) = record(sim.router());
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .tokens(token_set(&sim.reauthorize(None)))
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();

    // 4 workers, one request a minute each, for 100 minutes.
    steady_traffic(&client, 4, 100, Duration::from_secs(60)).await;

    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 1, "{stats:?}");
    assert_eq!(stats.unauthorized, 0, "refreshed before expiry: {stats:?}");
    assert_eq!(stats.requests, 400);
    // The refresh came min(5 min, 10 %) before the expiry, at 55 minutes.
    let refresh = wire
        .exchanges()
        .into_iter()
        .find(|e| e.path == "/o/token/")
        .expect("one refresh");
    let at = refresh.sent_at - wire.api()[0].sent_at;
    assert!(
        (Duration::from_secs(54 * 60)..=Duration::from_secs(55 * 60)).contains(&at),
        "refreshed at {at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_the_server_expires_early_is_refreshed_once_and_replayed() {
    let start = utc(MONDAY_10_37_UTC);
    // The server expires tokens after 30 minutes, but the client was told 48 hours.
    let sim = simulator(
        SimConfig::default().token_lifetime(Duration::from_secs(1800)),
        start,
    );
    let granted = sim.reauthorize(None);
    let now = SystemTime::now();
    let believed = TokenSet::new(
        granted.access_token,
        granted.refresh_token,
        now + Duration::from_secs(48 * 3600),
    )
    .with_issued_at(now);
    let (transport, _wire) = record(sim.router());
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .tokens(believed)
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();

    // 4 workers in step, one request a minute each, for 45 minutes: at 30 minutes all four
    // carry the expired token at once.
    steady_traffic(&client, 4, 45, Duration::from_secs(60)).await;

    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 1, "single flight: {stats:?}");
    assert!((1..=4).contains(&stats.unauthorized), "{stats:?}");
    let retries = client.layer().retry_policy().stats();
    assert_eq!(
        retries.unauthorized_replays, stats.unauthorized,
        "{retries:?}"
    );
    assert_eq!(stats.requests, 180 + stats.unauthorized);
    assert_eq!(retries.gave_up, 0);
}

#[tokio::test(start_paused = true)]
async fn a_5xx_burst_is_retried_per_the_policy() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(SimConfig::default(), start);
    let (client, wire) = default_client(&sim, start);
    client.get("/api/users/current").await.unwrap();
    wire.clear();

    // Three faults: the GET succeeds on the fourth attempt, after 25-30 s, 50-60 s and
    // 100-120 s of backoff.
    sim.fail_next_api([
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::BAD_GATEWAY,
        StatusCode::INTERNAL_SERVER_ERROR,
    ]);
    let response = client.get("/api/patients/5").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let attempts = wire.api();
    let statuses: Vec<u16> = attempts.iter().map(|e| e.status.as_u16()).collect();
    assert_eq!(statuses, [503, 502, 500, 200]);
    let bounds = [(25, 30), (50, 60), (100, 120)];
    for (pair, (low, high)) in attempts.windows(2).zip(bounds) {
        let gap = pair[1].sent_at - pair[0].sent_at;
        assert!(
            (Duration::from_secs(low)..=Duration::from_secs(high)).contains(&gap),
            "backoff {gap:?} outside [{low} s, {high} s]"
        );
    }

    // Four faults: out of retries after 4 attempts, a typed 5xx.
    wire.clear();
    sim.fail_next_api([StatusCode::INTERNAL_SERVER_ERROR; 4]);
    match client.get("/api/patients/5").await {
        Err(DrChronoError::Server { status, .. }) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        other => panic!("expected a 5xx, got {other:?}"),
    }
    assert_eq!(wire.api().len(), 4);

    // A POST is not retried by default: a 500 may hide a created appointment.
    wire.clear();
    sim.fail_next_api([StatusCode::BAD_GATEWAY]);
    let body = appointment(1, "2026-01-05T14:00:00");
    match client.post("/api/appointments", &body).await {
        Err(DrChronoError::Server { status, .. }) => assert_eq!(status, StatusCode::BAD_GATEWAY),
        other => panic!("expected a 502, got {other:?}"),
    }
    let sent = wire.api();
    assert_eq!(sent.len(), 1, "the POST was sent once");
    assert_eq!(sent[0].method, Method::POST);
    // The fault queue is empty: the same POST now creates the appointment.
    let created = client.post("/api/appointments", &body).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(sim.stats().throttled.second, 0);
}

#[tokio::test(start_paused = true)]
async fn an_overlapping_appointment_names_the_one_it_overlaps() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(SimConfig::default(), start);
    let (client, wire) = default_client(&sim, start);

    let first: Value = client
        .post_json("/api/appointments", &appointment(1, "2026-01-06T10:00:00"))
        .await
        .unwrap();
    let first_id = first["id"].as_u64().unwrap();
    assert_eq!(first_id, FIRST_APPOINTMENT_ID);
    // Another room at the same time is no conflict, and takes the next id.
    let second: Value = client
        .post_json("/api/appointments", &appointment(2, "2026-01-06T10:00:00"))
        .await
        .unwrap();
    assert_eq!(second["id"].as_u64().unwrap(), first_id + 1);

    wire.clear();
    match client
        .post("/api/appointments", &appointment(1, "2026-01-06T10:15:00"))
        .await
    {
        Err(DrChronoError::AppointmentConflict {
            overlapping_id,
            detail,
            ..
        }) => {
            assert_eq!(overlapping_id, Some(first_id));
            assert_eq!(detail, format!("Appointment overlaps with {first_id}"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(wire.api().len(), 1, "a 409 is not retried");
}

#[tokio::test(start_paused = true)]
async fn a_missing_scope_is_forbidden_with_the_endpoints_scopes() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(SimConfig::default(), start);
    // The user granted read access only.
    let granted = sim.reauthorize(Some("user:read patients:read calendar:read"));
    let (transport, wire) = record(sim.router());
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .tokens(token_set(&granted))
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();

    let patient = client.get("/api/patients/1").await.unwrap();
    assert_eq!(patient.status(), StatusCode::OK);
    match client
        .post("/api/appointments", &appointment(1, "2026-01-06T10:00:00"))
        .await
    {
        Err(DrChronoError::Forbidden {
            detail,
            required_scopes,
            ..
        }) => {
            assert_eq!(detail, "You do not have permission to perform this action.");
            assert_eq!(
                required_scopes,
                Some(
                    &[
                        "calendar:read",
                        "calendar:write",
                        "clinical:read",
                        "clinical:write"
                    ][..]
                )
            );
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.forbidden, stats.token_refreshes),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(wire.api().len(), 2, "a 403 is not retried");
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_after_reauthorisation_stops_for_good() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(SimConfig::default(), start);
    let hook_calls = Arc::new(AtomicU32::new(0));
    let (transport, wire) = record(sim.router());
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .retry(seeded_policy())
        .on_reauthorization({
            let hook_calls = hook_calls.clone();
            move |event| {
                assert_eq!(event.reason, ReauthorizationReason::InvalidGrant);
                hook_calls.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build_with_transport(transport)
        .unwrap();
    client.get("/api/users/current").await.unwrap();

    // The user goes through DrChrono's OAuth flow again elsewhere: every token the client
    // holds is revoked. The next request gets a 401, the refresh `invalid_grant`.
    sim.reauthorize(None);
    let before = sim.stats();
    match client.get("/api/patients/1").await {
        Err(DrChronoError::ReauthorizationRequired { .. }) => {}
        other => panic!("expected ReauthorizationRequired, got {other:?}"),
    }
    let after = sim.stats();
    assert_eq!(after.unauthorized - before.unauthorized, 1, "{after:?}");
    assert_eq!(after.invalid_grant, 1, "one refresh attempt: {after:?}");
    assert_eq!(after.token_refreshes, 1, "{after:?}");
    assert!(matches!(
        *client.layer().token_manager().status().borrow(),
        AuthStatus::ReauthorizationRequired {
            reason: ReauthorizationReason::InvalidGrant,
            ..
        }
    ));

    // It stops: later requests fail at once, sending nothing, and the hook fired once.
    let exchanges = wire.exchanges().len();
    for id in 2..5 {
        match client.get(&format!("/api/patients/{id}")).await {
            Err(DrChronoError::ReauthorizationRequired { .. }) => {}
            other => panic!("expected ReauthorizationRequired, got {other:?}"),
        }
    }
    assert_eq!(wire.exchanges().len(), exchanges, "nothing more was sent");
    assert_eq!(sim.stats(), after);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_burst_at_the_top_of_the_hour_stays_within_the_servers_hour() {
    // A job that starts at 11:00:00.000 sharp, with an hourly maximum of 20 (small, so the
    // hour is what binds), and the default 100 ms safety margin: whatever the margin does at
    // the boundary, DrChrono's hour 11:00-12:00 must not see more than 20 requests. (Any
    // release in [top of the hour, top + margin) while the previous hour still had budget is
    // the same case: a job starting then, or light traffic before the top of the hour.)
    let start = utc(MONDAY_10_37_UTC + 23 * 60);
    let sim = simulator(SimConfig::default().max_per_hour(20), start);
    let limits = RateLimitConfig::builder().max_per_hour(20).build().unwrap();
    let client = client_builder(&sim, limiter(limits, start))
        .retry(seeded_policy())
        .build_with_transport(sim.router())
        .unwrap();

    let mut tasks = JoinSet::new();
    for id in 1..=30 {
        let client = client.clone();
        tasks.spawn(async move { client.get(&format!("/api/patients/{id}")).await });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.unwrap().map(|r| r.status()));
    }
    let stats = sim.stats();
    assert_eq!(
        (
            stats.throttled.second,
            stats.throttled.window,
            stats.throttled.hour
        ),
        (0, 0, 0),
        "{stats:?}; outcomes {outcomes:?}"
    );
    assert!(stats.peak_hour <= 20, "{stats:?}");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}
