//! A [`tower::retry::Policy`] that follows DrChrono's retry guidance, safely: 5xx retried
//! 2-3 times from 25-30 s with exponential backoff and jitter, 429s waited out, and no
//! duplicate appointments.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use drchrono_retry::RetryPolicy;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A server that answers 503, then 502, then 200.
//! let calls = Arc::new(AtomicUsize::new(0));
//! let server = {
//!     let calls = calls.clone();
//!     tower::service_fn(move |_req: Request<Full<Bytes>>| {
//!         let status = match calls.fetch_add(1, Ordering::SeqCst) {
//!             0 => StatusCode::SERVICE_UNAVAILABLE,
//!             1 => StatusCode::BAD_GATEWAY,
//!             _ => StatusCode::OK,
//!         };
//!         let mut response = Response::new(Full::new(Bytes::new()));
//!         *response.status_mut() = status;
//!         async move { Ok::<_, std::convert::Infallible>(response) }
//!     })
//! };
//!
//! let policy = RetryPolicy::builder().seed(1).build()?;
//! let client = ServiceBuilder::new().layer(policy.clone().layer()).service(server);
//!
//! let start = tokio::time::Instant::now();
//! let request = Request::get("https://app.drchrono.com/api/users/current")
//!     .body(Full::new(Bytes::new()))?;
//! let response = client.oneshot(request).await?;
//!
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! // Waited 25-30 s, then 50-60 s (virtual time: this example takes no real time).
//! let waited = start.elapsed();
//! assert!(waited >= Duration::from_secs(75) && waited <= Duration::from_secs(90));
//! assert_eq!(policy.stats().server_error_retries, 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Where it goes
//!
//! Outermost: `Retry<RetryPolicy>` → rate limiter → OAuth refresh → `ErrorClassifyLayer` →
//! transport. Every attempt then waits for a rate-limit permit and carries the current
//! token. The policy reads [`drchrono_core::DrChronoError`]s in the service's error
//! type, whatever it is, through [`drchrono_core::LayerError`] (implemented for
//! `DrChronoError`, `BoxError` and `Infallible`; a `BoxError` holding something else is
//! unclassified); without the classifier it reads the raw response's status and
//! `Retry-After`.
//!
//! # The rules
//!
//! | outcome | methods retried | wait |
//! |---|---|---|
//! | 500, 502, 503, 504 (`DrChronoError::Server` or a raw response) | GET, HEAD, OPTIONS, TRACE, PUT, DELETE; POST/PATCH only when opted in | [`Backoff`]: retry *n* waits uniformly in `[25·2^(n-1), 30·2^(n-1)]` s, capped |
//! | transport error, `not_sent: false` | as for 5xx | as for 5xx |
//! | transport error, `not_sent: true` (connect error: provably never left) | any | as for 5xx |
//! | 429 (`DrChronoError::Throttled` or a raw response) | any (the server refused before doing anything) | until the instant the server named, `sleep_until(available_at)`; outside the retry budget |
//! | 401 with `replay_with_current_token: true` | any | none: one immediate replay per request |
//! | anything else (400, 403, 404, 405, 409, other 4xx, 501, …) | never | — |
//!
//! Opt in for `POST`/`PATCH` globally with
//! [`RetryPolicyBuilder::retry_non_idempotent`], or per request by inserting
//! [`Idempotent`] or a [`RetryOverride`] into the request's extensions. DrChrono has no
//! idempotency keys: a `POST /api/appointments` that got a 500 may have created the
//! appointment, and retrying it creates a duplicate (or a 409 overlap).
//!
//! **429 and the rate limiter.** The classifier stamps a 429 with `available_at`, the
//! instant the throttle clears on tokio's clock; the rate limiter holds every caller of the
//! application until that same instant. The policy sleeps *until* it rather than *for*
//! `Retry-After`, so the retry's sleep and the limiter's cool-down overlap instead of adding
//! up. A hint longer than [`RetryPolicyBuilder::max_throttle_wait`] fails at once with the
//! `Throttled` error, which carries the instant it clears.
//!
//! **Bodies.** Requests are `http::Request<B>` with `B: `[`ReplayBody`]; the copy for a
//! retry keeps method, URI, version, headers and extensions. A body that cannot be copied
//! (a stream, `BoxBody`) is sent once and never retried.
//!
//! # Defaults, next to DrChrono's advice
//!
//! | DrChrono says | default | setting |
//! |---|---|---|
//! | "retry 2 or 3 more times" | 3 retries after 5xx / transport errors | [`RetryPolicyBuilder::max_retries`] |
//! | "a 25-30 second retry logic" | first delay uniform in [25 s, 30 s] | [`RetryPolicyBuilder::first_delay`] |
//! | "exponential backoff period" | ×2 per retry: [50, 60] s, [100, 120] s | [`RetryPolicyBuilder::multiplier`] |
//! | (no cap given) | no single delay above 120 s | [`RetryPolicyBuilder::max_delay`] |
//! | "incorporating jitter randomization" | uniform jitter at ms resolution; `StdRng`, seedable | [`RetryPolicyBuilder::seed`] |
//! | 429 "Expected available in X seconds." | wait exactly that (from `Retry-After`, delta or HTTP-date, else the body) | — |
//! | 10/s and 290/10 min rules | waits up to 15 min honoured | [`RetryPolicyBuilder::max_throttle_wait`] |
//! | 500/hour, "reset at the top of the hour" | a wait up to 60 min away exceeds 15 min: fails at once with the instant it clears; raise the maximum above 60 min for batch jobs | [`RetryPolicyBuilder::max_throttle_wait`] |
//! | (429 without a hint) | 60 s | [`RetryPolicyBuilder::default_throttle_wait`] |
//! | (repeated 429s) | 5 retries | [`RetryPolicyBuilder::max_throttled_retries`] |
//! | 401 after a refresh "while using the prior access token" | one immediate replay with the current token | [`RetryPolicyBuilder::replay_unauthorized`] |
//! | "report this instance" (persistent 5xx) | a `warn` event when the policy gives up; [`RetryStats::gave_up`] | — |
//! | (retry storms) | 5xx and transport retries: 20 % of first attempts + 10 per 10 min (429 waits and the 401 replay are not counted) | [`RetryPolicyBuilder::budget`], [`RetryBudget`] |
//! | (a request stuck in retries) | 30 min from the first attempt, not counting waits for the rate limiter's permit | [`RetryPolicyBuilder::deadline`] |
//! | POST/PATCH "example of the request payload" | not retried after a 5xx unless opted in | [`RetryPolicyBuilder::retry_non_idempotent`] |
//!
//! # Why a budget, and not only max retries?
//!
//! (After tower's `retry::budget` documentation.) A maximum number of retries is a guess:
//! high enough to ride out a blip, low enough not to pile load on a server that is really
//! failing — and it fails at the second goal. When DrChrono has an outage, every client
//! that retries 3 times sends 4 requests for each one it meant to send; with layers of
//! clients each retrying, the multiplication compounds into a self-inflicted denial of
//! service: a retry storm. Against DrChrono it also spends the application's 500 requests
//! an hour on requests that will fail. A budget bounds retries to a *share of recent
//! traffic* (by default 20 % of first attempts, plus a small reserve so a lone request
//! after a quiet spell still gets its retries): when most requests fail, most fail fast,
//! and total traffic stays within 1.2× the intended traffic plus the reserve. Max retries
//! still bounds each request; the budget bounds all of them together.
//!
//! # Why are 429s outside the budget?
//!
//! The budget stops clients from piling retries onto a server that is failing, at moments
//! the clients pick. A 429 retry is the opposite case: the server is healthy, refused the
//! request before doing any work, and named the instant it will serve again
//! (`Retry-After`, or the body's `Expected available in N seconds.`). In the recommended
//! stack the rate limiter below holds *every* caller of the application until that instant,
//! then releases them at DrChrono's pace, so 429 retries cannot storm: the shared pause
//! already does what the budget is for. Counting them did harm instead: a cool-down caused
//! by another client of the same application (another process, another practice) spent
//! the tokens that 5xx retries need, and requests failed that the server would have
//! served. In a 90-request run against a strict simulator (10 % faults, 2 % injected
//! cool-downs) the policy met 18 429s and 11 faults, made 26 retries and lost 3 requests.
//!
//! So a retry after a 429 — until the instant the server named, or after the 60 s default
//! when it named none — neither withdraws from the budget nor deposits in it. It stays
//! bounded per request by [`RetryPolicyBuilder::max_throttled_retries`] (5),
//! [`RetryPolicyBuilder::max_throttle_wait`] (15 min) and the deadline (30 min). Retries
//! after 5xx and transport errors withdraw as before.
//!
//! Deposits stay one per request, at its first attempt, whatever that attempt meets (as
//! tower's budgets deposit once per request). A 429 retry is not new traffic: if it
//! deposited, a throttled burst would raise the allowance for 5xx retries exactly when the
//! application is at DrChrono's limits. The 401 replay is outside the budget for the same
//! reason as a 429: the server refused it before doing any work.
//!
//! # Per-request state
//!
//! tower's `Retry` clones the policy for every request and calls `retry` on that clone;
//! the attempt counts, the 401 replay and the first attempt's instant (for the deadline)
//! live there. Configuration, RNG, budget and [`RetryStats`] are shared through one `Arc`.
//! A retry loop of your own (as `drchrono-tower`'s service runs) keeps that state as a
//! [`RequestRetries`] beside one shared policy instead:
//! [`RetryPolicy::clone_request_for`] and [`RetryPolicy::retry_for`] are the `Policy`
//! calls on it.
//!
//! # Logging
//!
//! Each retry emits a `tracing` `info` event with `method`, `path` (no query string),
//! `attempt` (the number of the attempt about to be sent), `reason` (a status or an error
//! kind) and `delay_ms`; giving up emits a `warn` event (a `debug` one for a
//! non-idempotent request). Bodies, queries and tokens are never logged.

mod backoff;
mod body;
mod budget;
mod builder;
mod error;
mod extensions;
mod future;
mod policy;
mod replay;
mod stats;
mod trigger;

pub use backoff::Backoff;
pub use body::ReplayBody;
pub use budget::RetryBudget;
pub use builder::RetryPolicyBuilder;
pub use error::ConfigError;
pub use extensions::{Idempotent, RetryOverride};
pub use future::RetryFuture;
pub use policy::{RequestRetries, RetryPolicy};
pub use replay::Replay;
pub use stats::RetryStats;
