//! The quickstart: a realistic sync against an embedded DrChrono simulator, through the
//! full drchrono-tower stack, showing every behaviour DrChrono's error guidance asks for.
//!
//! ```sh
//! cargo run --release --example quickstart
//! ```
//!
//! It starts `drchrono-sim` on 127.0.0.1 (DrChrono's three throttling rules, 8-second access
//! tokens so that a refresh happens during the run, and a token endpoint that takes 0.8 s to
//! answer, as django-oauth-toolkit's does), builds one `DrChronoClient` from only a
//! refresh token, and then:
//!
//! 1. pages through the practice's patients (`next` links);
//! 2. fetches 30 patients at once: the limiter releases them at 9 per rolling second;
//! 3. creates appointments, one of which overlaps: a typed 409 with the overlapping id;
//! 4. lets a staff user without `calendar:write` try: a typed 403 with the scopes needed;
//! 5. meets a burst of 503/502: retried with backoff (DrChrono's 25–30 s base, scaled down
//!    100× here so the demo is quick); a POST meeting a 500 is *not* retried, and a
//!    PHI-free support report for DrChrono is printed;
//! 6. meets a 429 caused by another client of the same application: every caller pauses
//!    for the server's `Retry-After`, then succeeds;
//! 7. crosses the access token's refresh point with 16 requests in flight: exactly one
//!    token call, no failed request.
//!
//! It ends with a table of what happened and exits 0 when every behaviour was seen.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use drchrono_sim::SimConfig;
use drchrono_tower::oauth::TokenSet;
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{DrChronoClient, DrChronoError, SupportReport};
use futures::TryStreamExt;
use futures::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

const TOKEN_LIFETIME: Duration = Duration::from_secs(8);
/// How long the simulator's token endpoint takes to grant (django-oauth-toolkit hashes
/// client secrets): requests wait for the grant *before* the limiter charges them.
const TOKEN_DELAY: Duration = Duration::from_millis(800);
const STEPS: u64 = 7;

/// One line of the final table.
struct Row {
    behaviour: &'static str,
    outcome: String,
    ok: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("quickstart: some behaviour was not as expected (see the table)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("quickstart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn appointment(exam_room: u64, time: &str, patient: u64) -> Value {
    json!({
        "doctor": drchrono_sim::DOCTOR_ID,
        "patient": patient,
        "office": 1,
        "exam_room": exam_room,
        "scheduled_time": time,
        "duration": 30,
        "notes": "Follow-up for Ada Lovelace, born 1815-12-10",
    })
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let sim = drchrono_sim::spawn(
        SimConfig::default()
            .token_lifetime(TOKEN_LIFETIME)
            .token_delay(TOKEN_DELAY)
            .patients(120),
    )
    .await?;
    let credentials = sim.credentials();
    println!(
        "drchrono-sim listening on {} (9/s, 290/600 s, 500 per clock hour; {} s tokens, \
         granted in {} ms)\n",
        sim.base_url(),
        TOKEN_LIFETIME.as_secs(),
        TOKEN_DELAY.as_millis()
    );

    // DrChrono's retry schedule (3 retries, 25–30 s, doubling, jitter), scaled down 100×.
    let retry = RetryPolicy::builder()
        .first_delay(Duration::from_millis(250), Duration::from_millis(300))
        .max_delay(Duration::from_secs(2))
        .build()?;
    let client = DrChronoClient::builder()
        .credentials(
            credentials.client_id.clone(),
            credentials.client_secret.clone(),
        )
        .refresh_token(credentials.refresh_token.clone())
        .base_url(sim.base_url())
        .token_url(sim.token_url())
        .retry(retry.clone())
        .build()?;

    let bar = ProgressBar::new(STEPS);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:28}] {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut rows = Vec::new();
    let mut explained: Vec<String> = Vec::new();

    // 1. Paging.
    bar.set_message("paging through patients");
    let patients: Vec<Value> = client
        .pages("/api/patients?page_size=25")
        .try_collect()
        .await?;
    rows.push(Row {
        behaviour: "token refresh from a refresh token",
        outcome: format!(
            "first request refreshed once (sim token calls: {})",
            sim.stats().token_refreshes
        ),
        ok: sim.stats().token_refreshes == 1,
    });
    rows.push(Row {
        behaviour: "paging through `next` links",
        outcome: format!("{} patients in 5 pages", patients.len()),
        ok: patients.len() == 120,
    });
    bar.inc(1);

    // 2. Pacing: 30 at once, released at 9 per rolling second.
    bar.set_message("fetching 30 patients at once");
    let t = Instant::now();
    let fetched = fetch_patients(&client, 1..=30).await;
    let paced = t.elapsed();
    let all_ok = fetched.iter().all(Result::is_ok);
    let stats = sim.stats();
    rows.push(Row {
        behaviour: "exact rate limit (9 per rolling second)",
        outcome: format!(
            "30 requests in {:.1} s, server peak {} in a second, {} throttled",
            paced.as_secs_f64(),
            stats.peak_second,
            stats.throttled.total()
        ),
        ok: all_ok && stats.peak_second <= 9 && stats.throttled.second == 0,
    });
    bar.inc(1);

    // 3. Appointments and the 409.
    bar.set_message("creating appointments");
    let mut first_id = None;
    for room in 1..=3 {
        let created: Value = client
            .post_json(
                "/api/appointments",
                &appointment(room, "2026-01-05T10:00:00", 7),
            )
            .await?;
        first_id = first_id.or(created["id"].as_u64());
    }
    let conflict = client
        .post(
            "/api/appointments",
            &appointment(1, "2026-01-05T10:15:00", 8),
        )
        .await;
    let (outcome, ok) = match &conflict {
        Err(e @ DrChronoError::AppointmentConflict { overlapping_id, .. }) => {
            explained.push(e.to_string());
            let id = overlapping_id.map_or("none".to_owned(), |id| id.to_string());
            (
                format!("AppointmentConflict {{ overlapping_id: {id} }}"),
                *overlapping_id == first_id,
            )
        }
        other => (format!("unexpected: {other:?}"), false),
    };
    rows.push(Row {
        behaviour: "409 appointment overlap, typed",
        outcome,
        ok,
    });
    bar.inc(1);

    // 4. A staff user without calendar:write (same application, same rate limiter).
    bar.set_message("a staff user without calendar:write");
    let staff = sim
        .simulator()
        .authorize_user("frontdesk", Some("user:read patients:read calendar:read"));
    let staff_client = DrChronoClient::builder()
        .credentials(
            credentials.client_id.clone(),
            credentials.client_secret.clone(),
        )
        .tokens(TokenSet::new(
            staff.access_token,
            staff.refresh_token,
            SystemTime::now() + Duration::from_secs(staff.expires_in),
        ))
        .base_url(sim.base_url())
        .token_url(sim.token_url())
        .rate_limiter(client.layer().rate_limiter().clone())
        .retry(retry.clone())
        .build()?;
    let forbidden = staff_client
        .post(
            "/api/appointments",
            &appointment(4, "2026-01-05T11:00:00", 9),
        )
        .await;
    let (outcome, ok) = match &forbidden {
        Err(
            e @ DrChronoError::Forbidden {
                required_scopes, ..
            },
        ) => {
            explained.push(e.to_string());
            (
                format!(
                    "Forbidden, the endpoint needs `{}`",
                    required_scopes.unwrap_or_default().join(" ")
                ),
                required_scopes.is_some_and(|s| s.contains(&"calendar:write")),
            )
        }
        other => (format!("unexpected: {other:?}"), false),
    };
    rows.push(Row {
        behaviour: "403 scope error, explained",
        outcome,
        ok,
    });
    bar.inc(1);

    // 5. 5xx: a GET is retried; a POST is not (a 500 may hide a created appointment).
    bar.set_message("a burst of 5xx");
    let before = client.layer().retry_policy().stats();
    sim.simulator().fail_next_api([
        http::StatusCode::SERVICE_UNAVAILABLE,
        http::StatusCode::BAD_GATEWAY,
    ]);
    let recovered = client.get_json::<Value>("/api/patients/42").await;
    let after = client.layer().retry_policy().stats();
    rows.push(Row {
        behaviour: "5xx retried with backoff and jitter",
        outcome: format!(
            "GET met 503 + 502, succeeded after {} retries",
            after.server_error_retries - before.server_error_retries
        ),
        ok: recovered.is_ok() && after.server_error_retries - before.server_error_retries == 2,
    });
    sim.simulator()
        .fail_next_api([http::StatusCode::INTERNAL_SERVER_ERROR]);
    let post = client
        .post(
            "/api/appointments",
            &appointment(5, "2026-01-05T12:00:00", 10),
        )
        .await;
    let (outcome, ok) = match &post {
        Err(e @ DrChronoError::Server { status, .. }) => {
            let report = SupportReport::from(e)
                .application("drchrono-tower quickstart")
                .api_user("simdoctor")
                .first_occurrence(SystemTime::now());
            let text = report.to_string();
            let leaked = ["Ada", "Lovelace", "1815-12-10"]
                .iter()
                .any(|v| text.contains(v));
            bar.suspend(|| {
                println!("--- support report for api@drchrono.com (patient data redacted) ---");
                println!("{text}");
                println!("--------------------------------------------------------------------\n");
            });
            (
                format!("POST met {status}: not retried; report redacted"),
                !leaked,
            )
        }
        other => (format!("unexpected: {other:?}"), false),
    };
    rows.push(Row {
        behaviour: "POST not retried after a 5xx",
        outcome,
        ok,
    });
    bar.inc(1);

    // 6. Another client of the same application spends the second's budget behind our back.
    bar.set_message("another client bursts; the server answers 429");
    let intern = sim.simulator().authorize_user("intern", Some("user:read"));
    let raw = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for _ in 0..12 {
        let request = http::Request::get(format!("{}/api/users/current", sim.base_url()))
            .header("authorization", format!("Bearer {}", intern.access_token))
            .body(Full::new(Bytes::new()))?;
        let response = raw.request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    let before = client.layer().retry_policy().stats();
    let t = Instant::now();
    let honoured = fetch_patients(&client, 43..=46).await;
    let after = client.layer().retry_policy().stats();
    let throttled = after.throttled_retries - before.throttled_retries;
    rows.push(Row {
        behaviour: "429 from another client honoured",
        outcome: format!(
            "{throttled} request(s) met 429, all 4 succeeded after {:.1} s",
            t.elapsed().as_secs_f64()
        ),
        ok: throttled >= 1 && honoured.iter().all(Result::is_ok),
    });
    bar.inc(1);

    // 7. Cross the refresh point with 16 requests in flight.
    bar.set_message("waiting for the token's refresh point");
    let refreshes_before = sim.stats().token_refreshes;
    tokio::time::sleep(TOKEN_LIFETIME.saturating_sub(Duration::from_millis(600))).await;
    let crossing = fetch_patients(&client, 50..66).await;
    let refreshes = sim.stats().token_refreshes - refreshes_before;
    rows.push(Row {
        behaviour: "proactive, single-flight token refresh",
        outcome: format!(
            "16 requests across the refresh point: {refreshes} token call, {} failed",
            crossing.iter().filter(|r| r.is_err()).count()
        ),
        ok: refreshes == 1 && crossing.iter().all(Result::is_ok),
    });
    bar.inc(1);
    bar.finish_and_clear();

    let stats = sim.stats();
    let retry_stats = client.layer().retry_policy().stats();
    println!("The errors as the caller sees them (typed, with DrChrono's remedy):");
    for text in &explained {
        println!("  - {text}");
    }
    println!();
    println!("{:<42} {:<3} what happened", "behaviour", "ok");
    println!("{}", "-".repeat(126));
    for row in &rows {
        let mark = if row.ok { "yes" } else { "NO" };
        println!(
            "{:<42} {mark:<3} {}",
            row.behaviour,
            first_line(&row.outcome)
        );
    }
    println!("{}", "-".repeat(126));
    println!(
        "server: {} requests, {} accepted, {} throttled, {} faults, {} token calls, peaks {}/s {}/window {}/hour",
        stats.requests,
        stats.accepted,
        stats.throttled.total(),
        stats.faults,
        stats.token_refreshes,
        stats.peak_second,
        stats.peak_window,
        stats.peak_hour
    );
    println!(
        "client: {} retries ({} after 5xx, {} after 429), finished in {:.1} s",
        retry_stats.retries,
        retry_stats.server_error_retries,
        retry_stats.throttled_retries,
        started.elapsed().as_secs_f64()
    );
    sim.shutdown().await?;
    Ok(rows.iter().all(|r| r.ok))
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 80 {
        let cut: String = line.chars().take(79).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// Fetches the patients with these ids at once, each a request through the whole stack.
async fn fetch_patients(
    client: &DrChronoClient,
    ids: impl Iterator<Item = u64>,
) -> Vec<Result<Value, DrChronoError>> {
    join_all(ids.map(|id| {
        let client = client.clone();
        async move { client.get_json(&format!("/api/patients/{id}")).await }
    }))
    .await
}
