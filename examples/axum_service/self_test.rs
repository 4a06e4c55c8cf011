//! The `--self-test`: requests to the running service, each checked against what DrChrono's
//! guidance says the stack must do. Needs the embedded simulator (it injects faults).

use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use drchrono_sim::RunningSimulator;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::RunningDemo;
use crate::Error;
use crate::checks::Report;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `kind` of an error answer whose body is exactly `{"error", "kind"}`: proof that
    /// nothing of DrChrono's body (or a token) was passed on.
    fn generic_error_kind(&self) -> Option<String> {
        let body = self.json();
        let object = body.as_object()?;
        let only_generic = object.keys().all(|k| k == "error" || k == "kind");
        only_generic.then(|| object.get("kind")?.as_str().map(str::to_owned))?
    }
}

struct Caller {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Caller {
    async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Answer, Error> {
        let mut request = Request::get(url);
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self
            .http
            .request(request.body(Full::new(Bytes::new()))?)
            .await?;
        let (parts, body) = response.into_parts();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        })
    }
}

/// Runs every check against `demo` and reports; never stops at the first failure.
///
/// # Errors
/// When the service runs without the embedded simulator, or a request cannot be sent.
pub async fn self_test(demo: &RunningDemo) -> Result<Report, Error> {
    let sim = demo
        .simulator()
        .ok_or("the self-test needs the embedded simulator (--demo true)")?;
    let caller = Caller {
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    let url = |path: &str| format!("{}{path}", demo.url());
    let retry_stats = || demo.client().layer().retry_policy().stats();
    let mut report = Report::default();

    let me = caller.get(&url("/me"), None).await?;
    let refreshes = sim.stats().token_refreshes;
    report.record(
        "me",
        me.status == StatusCode::OK && me.json()["id"].is_u64() && refreshes == 1,
        format!("{} (token refreshes: {refreshes})", me.status),
    );

    let patient = caller.get(&url("/patients/1"), None).await?;
    report.record(
        "patient",
        patient.status == StatusCode::OK && patient.json()["id"] == 1,
        format!("{}", patient.status),
    );

    let missing = caller.get(&url("/patients/999999999"), None).await?;
    let kind = missing.generic_error_kind();
    report.record(
        "patient_not_found",
        missing.status == StatusCode::NOT_FOUND && kind.as_deref() == Some("not_found"),
        format!("{} kind={kind:?}", missing.status),
    );

    burst(&caller, &url, sim, &mut report).await?;

    let before = retry_stats();
    sim.simulator()
        .fail_next_api([StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY]);
    let recovered = caller.get(&url("/patients/2"), None).await?;
    let retried = retry_stats().server_error_retries - before.server_error_retries;
    report.record(
        "5xx_retried",
        recovered.status == StatusCode::OK && retried == 2,
        format!("{} after {retried} retries", recovered.status),
    );

    sim.simulator()
        .fail_next_api([StatusCode::INTERNAL_SERVER_ERROR; 4]);
    let failed = caller.get(&url("/patients/3"), None).await?;
    let kind = failed.generic_error_kind();
    report.record(
        "5xx_exhausted_is_502",
        failed.status == StatusCode::BAD_GATEWAY && kind.as_deref() == Some("server"),
        format!("{} kind={kind:?}", failed.status),
    );

    throttled_by_other_user(&caller, &url, demo, sim, &mut report).await?;

    // A 429 without any hint: the policy's default wait (60 s) is longer than a handler may
    // wait, so the handler sheds the request at once.
    sim.simulator()
        .fail_next_api([StatusCode::TOO_MANY_REQUESTS]);
    let shed = caller.get(&url("/me"), None).await?;
    let retry_after = shed
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kind = shed.generic_error_kind();
    report.record(
        "429_is_503_retry_after",
        shed.status == StatusCode::SERVICE_UNAVAILABLE
            && retry_after.as_deref() == Some("60")
            && kind.as_deref() == Some("throttled"),
        format!("{} Retry-After={retry_after:?} kind={kind:?}", shed.status),
    );

    let status = caller.get(&url("/status"), None).await?;
    let rules = status.json()["rules"].as_array().map_or(0, Vec::len);
    report.record(
        "status",
        status.status == StatusCode::OK && rules == 3,
        format!("{} with {rules} rules", status.status),
    );
    Ok(report)
}

/// 20 concurrent requests, each on its own handler: every one succeeds, and the server
/// never sees more than 9 in a second (one budget shared by all connections).
async fn burst(
    caller: &Caller,
    url: &impl Fn(&str) -> String,
    sim: &RunningSimulator,
    report: &mut Report,
) -> Result<(), Error> {
    let started = Instant::now();
    let calls = (10..30).map(|id| {
        let target = url(&format!("/patients/{id}"));
        async move { caller.get(&target, None).await }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok(a) if a.status == StatusCode::OK))
        .count();
    let stats = sim.stats();
    let throttled = stats.throttled.total();
    report.record(
        "burst_shares_one_budget",
        ok == 20 && throttled == 0 && stats.peak_second <= 9,
        format!(
            "{ok}/20 ok in {:.2} s, server peak {}/s, {throttled} throttled",
            started.elapsed().as_secs_f64(),
            stats.peak_second
        ),
    );
    Ok(())
}

/// Another user of the same application (same budget, own token) fills the server's
/// per-second budget; the service's next request gets a real 429 (`Retry-After: 1`), waits
/// it out and succeeds.
async fn throttled_by_other_user(
    caller: &Caller,
    url: &impl Fn(&str) -> String,
    demo: &RunningDemo,
    sim: &RunningSimulator,
    report: &mut Report,
) -> Result<(), Error> {
    // Let this service's own requests of the last second age out of the server's window.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let other = sim.simulator().authorize_user("frontdesk", None);
    let direct = format!("{}/api/users/current", sim.base_url());
    let mut refused = false;
    for _ in 0..30 {
        let answer = caller.get(&direct, Some(&other.access_token)).await?;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    let before = demo.client().layer().retry_policy().stats();
    let started = Instant::now();
    let me = caller.get(&url("/me"), None).await?;
    let waited = started.elapsed();
    let after = demo.client().layer().retry_policy().stats();
    let retried = after.throttled_retries - before.throttled_retries;
    report.record(
        "429_waited_out",
        refused && me.status == StatusCode::OK && retried >= 1,
        format!(
            "{} after {retried} throttled retries, {:.2} s",
            me.status,
            waited.as_secs_f64()
        ),
    );
    Ok(())
}
