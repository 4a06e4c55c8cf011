//! `token_delay` and `latency` under paused time, with the router as the transport: a grant
//! takes effect when it is answered; an `/api/*` request is counted when it arrives.

mod support;

use std::time::Duration;

use drchrono_sim::Simulator;
use http::StatusCode;
use support::{Direct, Reply, SimConfig};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

const DELAY: Duration = Duration::from_secs(3);

/// Sends `POST /o/token/` with `refresh_token` in a task of its own; the task returns the
/// reply and the instant it arrived.
fn spawn_refresh(direct: &Direct, refresh_token: &str) -> JoinHandle<(Reply, Instant)> {
    let direct = direct.clone();
    let refresh_token = refresh_token.to_owned();
    tokio::spawn(async move {
        let reply = direct.refresh(&refresh_token).await;
        (reply, Instant::now())
    })
}

fn token(reply: &Reply, name: &str) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()[name].as_str().expect(name).to_owned()
}

async fn stats(direct: &Direct) -> serde_json::Value {
    let reply = direct.get("/sim/stats", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

#[tokio::test(start_paused = true)]
async fn a_delayed_refresh_rotates_when_it_answers() {
    let sim = Simulator::new(SimConfig::default().token_delay(DELAY));
    let direct = Direct::new(&sim);
    let old = sim.reauthorize(None);
    let start = Instant::now();
    let refresh = spawn_refresh(&direct, &old.refresh_token);
    for at_ms in [1, 1_000, 2_999] {
        sleep_until(start + Duration::from_millis(at_ms)).await;
        assert!(!refresh.is_finished(), "answered before {at_ms} ms");
        assert_eq!(
            direct
                .get("/api/users/current", &old.access_token)
                .await
                .status,
            StatusCode::OK,
            "the old access token at {at_ms} ms"
        );
        assert_eq!(sim.stats().token_refreshes, 0);
    }
    let (reply, answered) = refresh.await.unwrap();
    assert_eq!(answered - start, DELAY);
    let access = token(&reply, "access_token");
    // Right after the answer: the old access token is revoked, the new one works.
    let stale = direct.get("/api/users/current", &old.access_token).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        direct.get("/api/users/current", &access).await.status,
        StatusCode::OK
    );
    assert_eq!(Instant::now(), answered, "the checks took no virtual time");
    assert_eq!(sim.stats().token_refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn overlapping_refreshes_with_one_token_rotate_once() {
    let sim = Simulator::new(SimConfig::default().token_delay(DELAY));
    let direct = Direct::new(&sim);
    let old = sim.reauthorize(None);
    let start = Instant::now();
    let first = spawn_refresh(&direct, &old.refresh_token);
    let second = spawn_refresh(&direct, &old.refresh_token);
    let (a, a_at) = first.await.unwrap();
    let (b, b_at) = second.await.unwrap();
    assert_eq!((a_at - start, b_at - start), (DELAY, DELAY));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
    let refused = if a.status == StatusCode::OK { &b } else { &a };
    assert_eq!(
        refused.json(),
        serde_json::json!({"error": "invalid_grant"})
    );
    let stats = stats(&direct).await;
    assert_eq!(stats["token_refreshes"], 1);
    assert_eq!(stats["invalid_grant"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_first_refresh_to_finish_rotates_the_later_one_is_invalid_grant() {
    let sim = Simulator::new(SimConfig::default().token_delay(DELAY));
    let direct = Direct::new(&sim);
    let old = sim.reauthorize(None);
    let start = Instant::now();
    let first = spawn_refresh(&direct, &old.refresh_token);
    sleep_until(start + Duration::from_secs(1)).await;
    // Sent during the first one's delay: the refresh token is still the current one, so
    // this one waits too, and is refused only when it answers.
    let second = spawn_refresh(&direct, &old.refresh_token);
    let (a, a_at) = first.await.unwrap();
    assert_eq!(a_at - start, DELAY);
    let rotated = token(&a, "refresh_token");
    assert!(!second.is_finished());
    let (b, b_at) = second.await.unwrap();
    assert_eq!(b_at - start, Duration::from_secs(4));
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.json()["error"], "invalid_grant");
    // The rotated refresh token is the current one.
    let (c, c_at) = spawn_refresh(&direct, &rotated).await.unwrap();
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c_at - b_at, DELAY);
    let stats = sim.stats();
    assert_eq!((stats.token_refreshes, stats.invalid_grant), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn reauthorize_over_http_waits_the_token_delay_too() {
    let sim = Simulator::new(SimConfig::default().token_delay(DELAY));
    let direct = Direct::new(&sim);
    let old = sim.reauthorize(None);
    let start = Instant::now();
    let task = tokio::spawn({
        let direct = direct.clone();
        async move {
            let c = &direct.credentials;
            let fields = [
                ("client_id", c.client_id.as_str()),
                ("client_secret", c.client_secret.as_str()),
            ];
            let reply = direct.post_form("/sim/reauthorize", &fields).await;
            (reply, Instant::now())
        }
    });
    sleep_until(start + DELAY - Duration::from_millis(1)).await;
    assert!(!task.is_finished());
    assert_eq!(
        direct
            .get("/api/users/current", &old.access_token)
            .await
            .status,
        StatusCode::OK
    );
    let (reply, answered) = task.await.unwrap();
    assert_eq!(answered - start, DELAY);
    let access = token(&reply, "access_token");
    assert_eq!(
        direct
            .get("/api/users/current", &old.access_token)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        direct.get("/api/users/current", &access).await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn api_answers_come_late_but_requests_count_on_arrival() {
    let latency = Duration::from_millis(500);
    let sim = Simulator::new(SimConfig::default().max_per_second(9).latency(latency));
    let direct = Direct::new(&sim);
    let access = sim.reauthorize(None).access_token;
    let start = Instant::now();
    let calls: Vec<JoinHandle<(Reply, Instant)>> = (0..10)
        .map(|_| {
            let direct = direct.clone();
            let access = access.clone();
            tokio::spawn(async move {
                let reply = direct.get("/api/users/current", &access).await;
                (reply, Instant::now())
            })
        })
        .collect();
    // Every request has arrived and been counted; no answer has left yet.
    sleep_until(start + Duration::from_millis(1)).await;
    let counted = sim.stats();
    assert_eq!(
        (counted.requests, counted.accepted, counted.throttled.second),
        (10, 9, 1)
    );
    sleep_until(start + latency - Duration::from_millis(1)).await;
    assert!(calls.iter().all(|call| !call.is_finished()));
    let mut statuses = Vec::new();
    for call in calls {
        let (reply, answered) = call.await.unwrap();
        assert_eq!(answered - start, latency);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.header("retry-after"), Some("1"));
        }
        statuses.push(reply.status);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, throttled), (9, 1));
    // The token endpoint and /sim/* are not delayed by the API latency.
    let before = Instant::now();
    let stats = stats(&direct).await;
    assert_eq!(stats["accepted"], 9);
    assert_eq!(Instant::now(), before);
}

#[tokio::test(start_paused = true)]
async fn every_api_answer_waits_the_latency() {
    let latency = Duration::from_millis(250);
    let sim = Simulator::new(SimConfig::default().latency(latency));
    let direct = Direct::new(&sim);
    for (path, token, status) in [
        (
            "/api/users/current",
            "not-a-token",
            StatusCode::UNAUTHORIZED,
        ),
        ("/api/nothing-here", "", StatusCode::NOT_FOUND),
    ] {
        let start = Instant::now();
        let reply = direct.get(path, token).await;
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(Instant::now() - start, latency, "{path}");
    }
    let start = Instant::now();
    let reply = direct.refresh(&direct.credentials.refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(Instant::now(), start, "no token delay by default");
    assert_eq!(sim.stats().requests, 2);
}

#[tokio::test(start_paused = true)]
async fn zero_delays_answer_at_once() {
    let sim = Simulator::new(SimConfig::default());
    assert_eq!(sim.config().get_token_delay(), Duration::ZERO);
    assert_eq!(sim.config().get_latency(), Duration::ZERO);
    let direct = Direct::new(&sim);
    let start = Instant::now();
    let reply = direct.refresh(&direct.credentials.refresh_token).await;
    let access = token(&reply, "access_token");
    assert_eq!(
        direct.get("/api/users/current", &access).await.status,
        StatusCode::OK
    );
    assert_eq!(Instant::now(), start);
}
