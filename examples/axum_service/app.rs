//! The axum service: its routes, and handlers that share one [`DrChronoClient`].

use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use drchrono_tower::DrChronoClient;
use drchrono_tower::retry::RetryOverride;
use http_body_util::Full;
use serde_json::{Value, json};

use super::errors::{error_response, unavailable};

/// What every handler shares: one client (so one rate-limit budget, one token family, one
/// retry budget for every connection), and how long a handler may wait for DrChrono.
#[derive(Debug, Clone)]
pub struct AppState {
    client: DrChronoClient,
    max_wait: Duration,
}

impl AppState {
    /// Handlers calling DrChrono through `client`, each answering 503 rather than waiting
    /// more than `max_wait` (limiter permits, 429 waits and retries included).
    pub fn new(client: DrChronoClient, max_wait: Duration) -> Self {
        Self { client, max_wait }
    }

    /// `GET path` through the whole stack, within `max_wait`; the error answer otherwise.
    ///
    /// The request carries a [`RetryOverride`] so that a 429 whose wait exceeds `max_wait`
    /// fails at once (and becomes a 503 with `Retry-After`) instead of holding the caller.
    async fn fetch(&self, path: &str) -> Result<http::Response<Bytes>, Response> {
        let request = Request::get(path)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .extension(RetryOverride::new().max_throttle_wait(self.max_wait))
            .body(Full::new(Bytes::new()))
            .map_err(|_| unavailable("invalid_request", "the request could not be built", None))?;
        match tokio::time::timeout(self.max_wait, self.client.send(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(error_response(&error)),
            Err(_elapsed) => Err(self.timed_out().await),
        }
    }

    /// 503 after `max_wait`, with `Retry-After` from the limiter's next free slot.
    async fn timed_out(&self) -> Response {
        // Without the limiter's state (a shared backend down), no hint is better than a guess.
        let wait = self
            .client
            .layer()
            .rate_limiter()
            .status()
            .await
            .ok()
            .map(|status| {
                let until = status
                    .paused_until
                    .map_or(status.next_available, |p| p.max(status.next_available));
                until.duration_since(status.at).unwrap_or(Duration::ZERO)
            });
        unavailable("timeout", "DrChrono did not answer in time", wait)
    }
}

/// The service's routes:
///
/// - `GET /me`: the DrChrono API user (`/api/users/current`): id, username, doctor, practice.
/// - `GET /patients/{id}`: DrChrono's `/api/patients/{id}`, passed through as JSON.
/// - `GET /status`: the shared limiter's remaining budget and the retry statistics.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/me", get(me))
        .route("/patients/{id}", get(patient))
        .route("/status", get(status))
        .with_state(state)
}

async fn me(State(state): State<AppState>) -> Response {
    let response = match state.fetch("/api/users/current").await {
        Ok(response) => response,
        Err(answer) => return answer,
    };
    match DrChronoClient::json::<Value>(&response) {
        Ok(user) => Json(json!({
            "id": user["id"],
            "username": user["username"],
            "doctor": user["doctor"],
            "practice_group": user["practice_group"],
        }))
        .into_response(),
        Err(error) => error_response(&error),
    }
}

async fn patient(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.fetch(&format!("/api/patients/{id}")).await {
        Ok(response) => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            response.into_body(),
        )
            .into_response(),
        Err(answer) => answer,
    }
}

async fn status(State(state): State<AppState>) -> Response {
    let Ok(limiter) = state.client.layer().rate_limiter().status().await else {
        return unavailable("backend", "the rate limiter's state is unavailable", None);
    };
    let retries = state.client.layer().retry_policy().stats();
    let seconds_from_now = |t: SystemTime| {
        t.duration_since(limiter.at)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    };
    let rules: Vec<Value> = limiter
        .rules
        .iter()
        .map(|rule| {
            json!({
                "max": rule.rule.max(),
                "period_secs": rule.rule.period().as_secs_f64(),
                "remaining": rule.remaining,
            })
        })
        .collect();
    Json(json!({
        "rules": rules,
        "next_available_in_secs": seconds_from_now(limiter.next_available),
        "paused_for_secs": limiter.paused_until.map(seconds_from_now),
        "retry": {
            "requests": retries.requests,
            "retries": retries.retries,
            "server_error_retries": retries.server_error_retries,
            "throttled_retries": retries.throttled_retries,
            "gave_up": retries.gave_up,
        },
    }))
    .into_response()
}
