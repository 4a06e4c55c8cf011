//! A scripted DrChrono stand-in for paused-time tests: each attempt takes the next step of a
//! script and records the instant it arrived.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drchrono_core::{DrChronoError, ErrorContext, UnauthorizedKind};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

pub type Outcome = Result<Response<Full<Bytes>>, DrChronoError>;
pub type Step = Box<dyn FnOnce() -> Outcome + Send>;

/// A service answering from a script, recording every attempt.
#[derive(Clone)]
pub struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    start: Instant,
}

impl Script {
    pub fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.into())),
            attempts: Arc::default(),
            start: Instant::now(),
        }
    }

    /// The service: takes the next step (200 once the script is exhausted).
    pub fn service(
        &self,
    ) -> impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = DrChronoError,
        Future = std::future::Ready<Outcome>,
    > + Clone
    + use<> {
        let this = self.clone();
        tower::service_fn(move |_req: Request<Full<Bytes>>| {
            this.attempts.lock().unwrap().push(Instant::now());
            let step = this.steps.lock().unwrap().pop_front();
            std::future::ready(step.map_or_else(|| Ok(status(200)), |step| step()))
        })
    }

    /// Number of attempts so far.
    pub fn attempts(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }

    /// Each attempt's offset from the script's creation.
    pub fn offsets(&self) -> Vec<Duration> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - self.start)
            .collect()
    }

    /// The gaps between consecutive attempts.
    pub fn gaps(&self) -> Vec<Duration> {
        let offsets = self.offsets();
        offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// A raw response with `code`.
pub fn status(code: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
}

pub fn raw(code: u16) -> Step {
    Box::new(move || Ok(status(code)))
}

pub fn raw_with(code: u16, header: &'static str, value: String) -> Step {
    Box::new(move || {
        let mut response = status(code);
        response
            .headers_mut()
            .insert(header, value.parse().unwrap());
        Ok(response)
    })
}

pub fn server_error(code: u16) -> Step {
    Box::new(move || {
        Err(DrChronoError::Server {
            status: StatusCode::from_u16(code).unwrap(),
            context: Box::new(ErrorContext::default()),
        })
    })
}

/// A 429 as the classifier reports it: `available_at` is now + `wait`.
pub fn throttled(wait: Option<Duration>) -> Step {
    Box::new(move || {
        Err(DrChronoError::Throttled {
            retry_after: wait,
            available_at: wait.map(|w| Instant::now() + w),
            context: Box::new(ErrorContext::default()),
        })
    })
}

/// A 429 whose wait ends at a fixed instant (as when the limiter shares it).
pub fn throttled_until(at: Instant) -> Step {
    Box::new(move || {
        Err(DrChronoError::Throttled {
            retry_after: Some(at - Instant::now()),
            available_at: Some(at),
            context: Box::new(ErrorContext::default()),
        })
    })
}

pub fn transport(not_sent: bool) -> Step {
    Box::new(move || {
        Err(DrChronoError::Transport {
            not_sent,
            source: "connection failed".into(),
            context: Box::new(ErrorContext::default()),
        })
    })
}

pub fn unauthorized(replay: bool) -> Step {
    Box::new(move || {
        Err(DrChronoError::Unauthorized {
            kind: UnauthorizedKind::TokenInvalid,
            replay_with_current_token: replay,
            persisted_after_refresh: false,
            context: Box::new(ErrorContext::default()),
        })
    })
}

pub fn not_found() -> Step {
    Box::new(|| {
        Err(DrChronoError::NotFound {
            detail: Some("Not found.".into()),
            context: Box::new(ErrorContext::default()),
        })
    })
}

pub fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("https://app.drchrono.com/api/patients/1?since=2024-01-01")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Asserts `d` lies within `[lo, hi]`.
pub fn assert_within(d: Duration, (lo, hi): (Duration, Duration)) {
    assert!(d >= lo && d <= hi, "{d:?} not within [{lo:?}, {hi:?}]");
}

/// The infallible variant of a 200, for services whose error type is `Infallible`.
pub fn ok_infallible() -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(status(200))
}
