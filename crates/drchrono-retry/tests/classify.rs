//! The policy over `ErrorClassifyLayer`: DrChrono's raw answers, classified, then retried.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_core::DrChronoError;
use drchrono_retry::RetryPolicy;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

type Answer = Box<dyn FnOnce() -> Response<Full<Bytes>> + Send>;

/// A raw server answering from a script (200 `{}` once it runs out), recording instants.
#[derive(Clone, Default)]
struct Raw {
    answers: Arc<Mutex<Vec<Answer>>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

impl Raw {
    fn new(mut answers: Vec<Answer>) -> Self {
        answers.reverse();
        Self {
            answers: Arc::new(Mutex::new(answers)),
            attempts: Arc::default(),
        }
    }

    fn gaps(&self) -> Vec<Duration> {
        let attempts = self.attempts.lock().unwrap();
        attempts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    async fn send(&self, method: http::Method) -> Result<Response<Full<Bytes>>, DrChronoError> {
        let this = self.clone();
        let server = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            this.attempts.lock().unwrap().push(Instant::now());
            let answer = this.answers.lock().unwrap().pop();
            let response = answer.map_or_else(|| answer_with(200, &[], "{}"), |a| a());
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let request = Request::builder()
            .method(method)
            .uri("http://127.0.0.1:1/api/patients")
            .body(Full::new(Bytes::new()))
            .unwrap();
        ServiceBuilder::new()
            .layer(RetryPolicy::builder().seed(2).build().unwrap().layer())
            .layer(ErrorClassifyLayer::new())
            .service(server)
            .oneshot(request)
            .await
    }
}

fn answer_with(
    code: u16,
    headers: &[(&'static str, String)],
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

fn answer(code: u16, headers: Vec<(&'static str, String)>, body: &'static str) -> Answer {
    Box::new(move || answer_with(code, &headers, body))
}

const THROTTLED_12: &str =
    r#"{"detail":"Request was throttled. Expected available in 12 seconds."}"#;

#[tokio::test(start_paused = true)]
async fn expected_available_in_12_seconds_without_a_header_is_waited_exactly() {
    let raw = Raw::new(vec![answer(429, vec![], THROTTLED_12)]);
    let response = raw.send(http::Method::POST).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(raw.gaps(), vec![Duration::from_secs(12)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() {
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let raw = Raw::new(vec![answer(
        429,
        vec![
            ("date", httpdate::fmt_http_date(date)),
            (
                "retry-after",
                httpdate::fmt_http_date(date + Duration::from_secs(40)),
            ),
        ],
        r#"{"detail":"Request was throttled. Expected available in 40 seconds."}"#,
    )]);
    raw.send(http::Method::GET).await.unwrap();
    assert_eq!(raw.gaps(), vec![Duration::from_secs(40)]);
}

#[tokio::test(start_paused = true)]
async fn a_hint_beyond_the_maximum_returns_the_throttled_error_at_once() {
    let raw = Raw::new(vec![answer(
        429,
        vec![("retry-after", "2400".into())],
        r#"{"detail":"Request was throttled. Expected available in 2400 seconds."}"#,
    )]);
    let start = Instant::now();
    let error = raw.send(http::Method::GET).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(error, DrChronoError::Throttled { .. }));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2400)));
    assert_eq!(
        error.available_at(),
        Some(start + Duration::from_secs(2400))
    );
}

#[tokio::test(start_paused = true)]
async fn gateway_html_5xx_are_classified_and_retried() {
    let html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    let raw = Raw::new(vec![
        answer(503, vec![], r#"{"detail":"Service unavailable"}"#),
        answer(502, vec![("content-type", "text/html".into())], html),
    ]);
    let response = raw.send(http::Method::GET).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let gaps = raw.gaps();
    assert_eq!(gaps.len(), 2);
    assert!(gaps[0] >= Duration::from_secs(25) && gaps[0] <= Duration::from_secs(30));
    assert!(gaps[1] >= Duration::from_secs(50) && gaps[1] <= Duration::from_secs(60));

    // A POST is left alone.
    let raw = Raw::new(vec![answer(500, vec![], "{}")]);
    let error = raw.send(http::Method::POST).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(raw.gaps().is_empty());
}
