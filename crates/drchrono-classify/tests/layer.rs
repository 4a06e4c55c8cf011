//! The layer over in-process services: pass-through, bounded reads, transport errors.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use drchrono_classify::{ErrorClassify, ErrorClassifyLayer};
use drchrono_core::{BoxError, DrChronoError, RequestPayload};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

/// A body of `frames` frames of `frame_size` bytes that counts what was taken from it.
#[derive(Debug)]
struct CountingBody {
    frames_left: usize,
    frame_size: usize,
    polled_frames: Arc<AtomicUsize>,
    polled_bytes: Arc<AtomicUsize>,
}

#[derive(Clone, Default)]
struct Counters {
    frames: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Counters {
    fn body(&self, frames: usize, frame_size: usize) -> CountingBody {
        CountingBody {
            frames_left: frames,
            frame_size,
            polled_frames: self.frames.clone(),
            polled_bytes: self.bytes.clone(),
        }
    }

    fn frames(&self) -> usize {
        self.frames.load(Ordering::SeqCst)
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames_left == 0 {
            return Poll::Ready(None);
        }
        self.frames_left -= 1;
        self.polled_frames.fetch_add(1, Ordering::SeqCst);
        self.polled_bytes
            .fetch_add(self.frame_size, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![
            b'x';
            self.frame_size
        ])))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames_left == 0
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::get("http://127.0.0.1:1/api/patients/1?first_name=Jane")
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn success_passes_through_still_streaming() {
    let counters = Counters::default();
    let body_counters = counters.clone();
    let service = ErrorClassify::new(service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body_counters.body(10, 100);
        async move { Ok::<_, Infallible>(Response::new(body)) }
    }));
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The layer did not touch the body.
    assert_eq!(counters.frames(), 0);
    let collected = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(collected.len(), 1000);
    assert_eq!(counters.frames(), 10);
}

async fn classify_large(limit: Option<usize>, frames: usize, frame_size: usize) -> Counters {
    let counters = Counters::default();
    let body_counters = counters.clone();
    let inner = service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body_counters.body(frames, frame_size);
        async move {
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok::<_, Infallible>(response)
        }
    });
    let layer = match limit {
        Some(limit) => ErrorClassifyLayer::new().body_limit(limit),
        None => ErrorClassifyLayer::new(),
    };
    let error = layer.layer(inner).oneshot(request()).await.unwrap_err();
    assert!(
        matches!(error, DrChronoError::Server { status, .. } if status == StatusCode::BAD_GATEWAY)
    );
    let snippet = error.context().body_snippet.clone().unwrap();
    assert!(snippet.contains("cut at the read limit"), "{snippet}");
    counters
}

#[tokio::test]
async fn body_is_read_only_up_to_the_default_limit() {
    // 1 MiB in 1 KiB frames: exactly 64 frames (64 KiB) are taken, the rest is never polled.
    let counters = classify_large(None, 1024, 1024).await;
    assert_eq!(counters.frames(), 64);
    assert_eq!(counters.bytes(), 64 * 1024);
}

#[tokio::test]
async fn body_is_read_only_up_to_a_custom_limit() {
    // Frames that straddle the limit: at most one frame past the limit is taken from the body.
    let counters = classify_large(Some(10_000), 1000, 3000).await;
    assert_eq!(counters.frames(), 4);
    assert_eq!(counters.bytes(), 12_000);
    let counters = classify_large(Some(0), 1000, 3000).await;
    assert_eq!(counters.frames(), 0);
}

#[tokio::test]
async fn small_error_body_is_read_entirely() {
    let counters = Counters::default();
    let body_counters = counters.clone();
    let inner = service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body_counters.body(3, 10);
        async move {
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Infallible>(response)
        }
    });
    let error = ErrorClassify::new(inner)
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(counters.frames(), 3);
    assert_eq!(
        error.context().body_snippet.as_deref(),
        Some("<text body, 30 bytes>")
    );
}

#[tokio::test]
async fn error_context_has_request_and_redacted_payload() {
    let inner = service_fn(|_req: Request<Full<Bytes>>| async {
        let response = Response::builder()
            .status(StatusCode::CONFLICT)
            .body(Full::new(Bytes::from_static(
                br#"{"error":"Appointment overlaps with 323351400"}"#,
            )))
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let payload = Bytes::from_static(br#"{"doctor":1,"patient":2,"notes":"Jane has a rash"}"#);
    let request = Request::post("https://app.drchrono.com/api/appointments")
        .extension(RequestPayload(payload.clone()))
        .body(Full::new(payload))
        .unwrap();
    let error = ErrorClassify::new(inner)
        .oneshot(request)
        .await
        .unwrap_err();
    let DrChronoError::AppointmentConflict {
        overlapping_id,
        detail,
        context,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*overlapping_id, Some(323_351_400));
    assert_eq!(detail, "Appointment overlaps with 323351400");
    assert_eq!(context.method, Some(http::Method::POST));
    assert_eq!(context.path(), Some("/api/appointments"));
    assert_eq!(
        context.request_payload.as_deref(),
        Some(r#"{"doctor":1,"notes":"REDACT","patient":2}"#)
    );
    assert!(context.occurred_at.is_some());
    let debug = format!("{error:?}");
    assert!(!debug.contains("rash"), "{debug}");
    assert!(!error.to_string().contains("rash"));
}

#[tokio::test]
async fn inner_errors_become_transport_errors() {
    let refused = service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    });
    let error = ErrorClassify::new(refused)
        .oneshot(request())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        DrChronoError::Transport { not_sent: true, .. }
    ));
    assert!(error.is_retryable());
    assert_eq!(error.status(), None);
    assert_eq!(error.context().path(), Some("/api/patients/1"));
    let source = std::error::Error::source(&error).unwrap();
    assert!(source.to_string().contains("refused"), "{source}");

    let reset = service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionReset))
    });
    let error = ErrorClassify::new(reset)
        .oneshot(request())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        DrChronoError::Transport {
            not_sent: false,
            ..
        }
    ));

    fn always(_: &BoxError) -> bool {
        true
    }
    let reset = service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionReset))
    });
    let error = ErrorClassifyLayer::new()
        .not_sent(always)
        .layer(reset)
        .oneshot(request())
        .await
        .unwrap_err();
    assert!(error.is_not_sent());
}

/// `default_not_sent` applies only where no predicate was set: a facade's predicate
/// completes a user's options, and a predicate the user chose wins.
#[tokio::test]
async fn a_default_not_sent_predicate_yields_to_one_set_before() {
    fn always(_: &BoxError) -> bool {
        true
    }
    fn never(_: &BoxError) -> bool {
        false
    }
    let not_sent = |layer: ErrorClassifyLayer| async move {
        let reset = service_fn(|_req: Request<Full<Bytes>>| async {
            Err::<Response<Full<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionReset))
        });
        layer
            .layer(reset)
            .oneshot(request())
            .await
            .unwrap_err()
            .is_not_sent()
    };
    assert!(not_sent(ErrorClassifyLayer::new().default_not_sent(always)).await);
    assert!(
        not_sent(
            ErrorClassifyLayer::new()
                .body_limit(1024)
                .default_not_sent(always)
        )
        .await
    );
    assert!(
        !not_sent(
            ErrorClassifyLayer::new()
                .not_sent(never)
                .default_not_sent(always)
        )
        .await
    );
    // Neither: `is_connect_error`, which a reset is not.
    assert!(!not_sent(ErrorClassifyLayer::new()).await);
}

/// A service whose `poll_ready` fails.
#[derive(Clone, Debug)]
struct Broken;

impl tower::Service<Request<Full<Bytes>>> for Broken {
    type Response = Response<Full<Bytes>>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Err(io::Error::other("overloaded")))
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        std::future::ready(Err(io::Error::other("unreachable")))
    }
}

#[tokio::test]
async fn poll_ready_errors_are_not_sent() {
    let error = ErrorClassify::new(Broken)
        .oneshot(request())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        DrChronoError::Transport { not_sent: true, .. }
    ));
}

#[test]
fn layer_and_service_are_clone_and_debug() {
    let layer = ErrorClassifyLayer::new().body_limit(1);
    let mut service = layer.clone().layer(Broken);
    let debug = format!("{layer:?} {:?}", service.clone());
    assert!(debug.contains("body_limit: 1"), "{debug}");
    let _: &mut Broken = service.get_mut();
    let _: Broken = service.into_inner();
}

/// A 403's error names the endpoint's scopes, and a transport error the request's path: the
/// classifier copies what it needs of the request.
#[tokio::test]
async fn errors_carry_what_they_need_of_the_request() {
    let forbidden = service_fn(|_request: Request<Full<Bytes>>| async {
        let body = r#"{"detail":"You do not have permission to perform this action."}"#;
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::FORBIDDEN;
        Ok::<_, Infallible>(response)
    });
    let request = || {
        Request::post("https://app.drchrono.com/api/appointments")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let copied = ErrorClassify::new(forbidden)
        .oneshot(request())
        .await
        .unwrap_err();
    match &copied {
        DrChronoError::Forbidden {
            required_scopes, ..
        } => assert!(required_scopes.is_some()),
        other => panic!("{other:?}"),
    }
    assert_eq!(copied.context().method, Some(http::Method::POST));

    let failing = ErrorClassify::new(service_fn(|_request: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(io::Error::other("reset"))
    }));
    let error = failing.oneshot(request()).await.unwrap_err();
    assert_eq!(error.context().path(), Some("/api/appointments"));
    assert!(matches!(error, DrChronoError::Transport { .. }));
}

/// A body that sends `first` and then never another frame, as a server that stalls mid-body.
#[derive(Debug)]
struct StalledBody {
    first: Option<Bytes>,
}

impl Body for StalledBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Poll::Pending,
        }
    }
}

async fn classify_stalled(layer: ErrorClassifyLayer) -> (DrChronoError, std::time::Duration) {
    let inner = service_fn(|_: Request<Full<Bytes>>| async {
        let body = StalledBody {
            first: Some(Bytes::from_static(b"<html><body><h1>502 Bad")),
        };
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(body)
                .unwrap(),
        )
    });
    let started = tokio::time::Instant::now();
    let error = layer.layer(inner).oneshot(request()).await.unwrap_err();
    (error, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_stalled_error_body_is_given_up_after_the_body_timeout() {
    // The default: 30 s, then the error is classified by its status from what arrived.
    let (error, waited) = classify_stalled(ErrorClassifyLayer::new()).await;
    assert_eq!(waited, drchrono_classify::DEFAULT_BODY_TIMEOUT);
    assert_eq!(waited, std::time::Duration::from_secs(30));
    assert!(
        matches!(error, DrChronoError::Server { status, .. } if status == StatusCode::BAD_GATEWAY),
        "{error:?}"
    );

    let layer = ErrorClassifyLayer::new().body_timeout(std::time::Duration::from_secs(2));
    let (error, waited) = classify_stalled(layer).await;
    assert_eq!(waited, std::time::Duration::from_secs(2));
    assert!(error.is_retryable(), "{error:?}");
}

/// `Duration::MAX` (no bound, as a caller would write it) does not overflow the deadline: a
/// stalled body is then waited for as long as tokio's timer can (decades).
#[tokio::test(start_paused = true)]
async fn an_unbounded_body_timeout_does_not_overflow() {
    let layer = ErrorClassifyLayer::new().body_timeout(std::time::Duration::MAX);
    let (error, waited) = classify_stalled(layer).await;
    assert!(
        waited > std::time::Duration::from_secs(10 * 365 * 24 * 3600),
        "{waited:?}"
    );
    assert!(
        matches!(error, DrChronoError::Server { status, .. } if status == StatusCode::BAD_GATEWAY),
        "{error:?}"
    );
}
