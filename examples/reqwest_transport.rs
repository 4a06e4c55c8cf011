//! `DrChronoClient` on the application's own `reqwest::Client`: the library side of the
//! `reqwest_client` example.
//!
//! ```text
//! DrChronoClient                     origin pinning, redirects, per-attempt bounds, JSON
//!  └ Retry → RateLimit → OAuth → Classify
//!     └ ReqwestTransport             the application's reqwest::Client: its TLS, proxy,
//!                                    pool, DNS and connect timeout; the token endpoint too
//! ```
//!
//! [`run`] builds that client against an embedded simulator (plain HTTP on loopback) and
//! reports one [`Check`](crate::checks::Check) per behaviour.

use std::time::{Duration, Instant, SystemTime};

use drchrono_sim::{DOCTOR_ID, SimConfig};
use drchrono_tower::oauth::TokenSet;
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{DrChronoClient, DrChronoError};
use http::StatusCode;
use serde_json::{Value, json};

use crate::Error;
use crate::checks::Report;

/// The simulator's access tokens live this long, so that one is refreshed before expiry
/// during the run (DrChrono's last 48 hours).
const TOKEN_LIFETIME: Duration = Duration::from_secs(2);

/// The reqwest client an application would build for itself. Redirects are left to
/// `DrChronoClient`, which follows them on the API origin only and through the limiter.
fn application_http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent("my-clinic-sync/1.0")
        .build()
}

/// What an outcome was, for printing: the error's kind and message (never a body or a
/// token).
fn describe<T>(outcome: &Result<T, DrChronoError>) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("{}: {error}", error.kind_name()),
    }
}

/// Runs the stack on a `reqwest::Client` against an embedded simulator, and reports.
///
/// # Errors
/// When the simulator cannot start or a configuration is refused; a misbehaving stack is a
/// failed check in the report, not an error.
pub async fn run() -> Result<Report, Error> {
    let started = Instant::now();
    let sim = drchrono_sim::spawn(SimConfig::default().token_lifetime(TOKEN_LIFETIME)).await?;
    let credentials = sim.credentials();
    // DrChrono's schedule (25-30 s, doubling) scaled down 250x so the demo is quick.
    let policy = RetryPolicy::builder()
        .first_delay(Duration::from_millis(100), Duration::from_millis(120))
        .seed(7)
        .build()?;
    let client = DrChronoClient::builder()
        .credentials(credentials.client_id, credentials.client_secret)
        .refresh_token(credentials.refresh_token)
        .base_url(sim.base_url())
        .token_url(sim.token_url())
        .retry(policy.clone())
        .build_with_reqwest(application_http_client()?)?;
    let mut report = Report::default();

    // 1. The first call refreshes the refresh-only token set, through reqwest.
    let me = client.get_json::<Value>("/api/users/current").await;
    let refreshes = sim.stats().token_refreshes;
    report.record(
        "first_call_refreshes",
        me.as_ref().is_ok_and(|me| me["id"] == DOCTOR_ID) && refreshes == 1,
        format!(
            "GET /api/users/current {} (token calls: {refreshes})",
            describe(&me)
        ),
    );

    // 2. A JSON body crosses whole; the overlap comes back typed.
    let appointment = json!({
        "doctor": DOCTOR_ID, "patient": 7, "office": 1, "exam_room": 1,
        "scheduled_time": "2026-01-05T10:00:00", "duration": 30,
    });
    let created = client
        .post_json::<Value>("/api/appointments", &appointment)
        .await;
    let created_id = created.as_ref().ok().and_then(|v| v["id"].as_u64());
    let overlap = client.post("/api/appointments", &appointment).await;
    report.record(
        "409_overlapping_id",
        created_id.is_some()
            && matches!(&overlap, Err(DrChronoError::AppointmentConflict { overlapping_id, .. })
                if *overlapping_id == created_id),
        describe(&overlap),
    );

    // 3. A 503 is retried after the backoff; the GET succeeds.
    let before = policy.stats().server_error_retries;
    sim.simulator()
        .fail_next_api([StatusCode::SERVICE_UNAVAILABLE]);
    let t = Instant::now();
    let recovered = client.get_json::<Value>("/api/patients/42").await;
    let retries = policy.stats().server_error_retries - before;
    report.record(
        "503_retried",
        recovered.is_ok() && retries == 1,
        format!(
            "GET met 503, {} after {retries} retry in {} ms",
            describe(&recovered),
            t.elapsed().as_millis()
        ),
    );

    // 4. Past the access token's lifetime: refreshed before the request is sent (no 401),
    //    through reqwest again.
    tokio::time::sleep(TOKEN_LIFETIME).await;
    let again = client.get_json::<Value>("/api/users/current").await;
    let stats = sim.stats();
    report.record(
        "token_refreshed_again",
        again.is_ok() && stats.token_refreshes == 2 && stats.unauthorized == 0,
        format!(
            "after the {} s token lifetime: GET {} (token calls: {}, 401s: {})",
            TOKEN_LIFETIME.as_secs(),
            describe(&again),
            stats.token_refreshes,
            stats.unauthorized
        ),
    );

    // 5. A refused connection: reqwest's connect error is typed as not sent, so even a
    //    POST may be (and was) retried.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        listener.local_addr()?
    };
    let quick = RetryPolicy::builder()
        .first_delay(Duration::from_millis(10), Duration::from_millis(12))
        .build()?;
    let unreachable = DrChronoClient::builder()
        .credentials("id", "secret".to_owned())
        .tokens(TokenSet::new(
            "access".to_owned(),
            "refresh".to_owned(),
            SystemTime::now() + Duration::from_secs(3600),
        ))
        .base_url(format!("http://{closed}"))
        .retry(quick.clone())
        .build_with_reqwest(application_http_client()?)?;
    let refused = unreachable.post("/api/appointments", &appointment).await;
    report.record(
        "connect_error_not_sent",
        matches!(
            refused,
            Err(DrChronoError::Transport { not_sent: true, .. })
        ) && quick.stats().transport_retries == 3,
        format!(
            "POST to a closed port: {} (retried {} times)",
            refused.as_ref().err().map_or("ok".to_owned(), |e| format!(
                "{}, not_sent: {}",
                e.kind_name(),
                e.is_not_sent()
            )),
            quick.stats().transport_retries
        ),
    );

    let stats = sim.stats();
    report.record(
        "accounted",
        stats.throttled.total() == 0,
        format!(
            "server: {} requests, {} token calls, {} faults; finished in {:.1} s",
            stats.requests,
            stats.token_refreshes,
            stats.faults,
            started.elapsed().as_secs_f64()
        ),
    );
    sim.shutdown().await?;
    Ok(report)
}
