//! Error bodies are read only up to the limit, however they arrive. (The parsers' and the
//! redaction's property tests are `drchrono-core`'s.)

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::Empty;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tower::{Layer, ServiceExt, service_fn};

/// A body of `frames` frames of `size` bytes that counts the bytes taken from it.
#[derive(Debug)]
struct CountingBody {
    frames: usize,
    size: usize,
    taken: Arc<AtomicUsize>,
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames == 0 {
            return Poll::Ready(None);
        }
        self.frames -= 1;
        self.taken.fetch_add(self.size, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'{'; self.size])))))
    }
}

#[test]
fn error_bodies_are_read_only_up_to_the_limit() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(RunnerConfig::with_cases(2_000));
    let strategy = (0usize..200, 1usize..2_000, 0usize..100_000, 400u16..600);
    runner
        .run(&strategy, |(frames, size, limit, status)| {
            let taken = Arc::new(AtomicUsize::new(0));
            let counter = taken.clone();
            let inner = service_fn(move |_req: Request<Empty<Bytes>>| {
                let body = CountingBody {
                    frames,
                    size,
                    taken: counter.clone(),
                };
                async move {
                    let mut response = Response::new(body);
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            let service = ErrorClassifyLayer::new().body_limit(limit).layer(inner);
            let request = Request::get("http://127.0.0.1/api/patients")
                .body(Empty::new())
                .unwrap();
            let error = runtime.block_on(service.oneshot(request)).unwrap_err();
            let taken = taken.load(Ordering::SeqCst);
            let total = frames * size;
            // Everything up to the limit is read, and at most the frame that crosses it.
            prop_assert!(
                taken >= total.min(limit),
                "taken {} of {} (limit {})",
                taken,
                total,
                limit
            );
            prop_assert!(
                taken < limit + size || taken == total.min(limit),
                "taken {} limit {}",
                taken,
                limit
            );
            let snippet = error.context().body_snippet.clone().unwrap();
            // A body longer than the limit is marked cut; one that ends exactly at the limit
            // may be too (the rest is never read to find out); a shorter one never is.
            let cut = snippet.contains("cut at the read limit");
            prop_assert!(cut || total <= limit, "{}", snippet);
            prop_assert!(!cut || total >= limit, "{}", snippet);
            Ok(())
        })
        .unwrap();
}

/// A URI in each of its forms: absolute (`https`, `http` or another scheme, with or without
/// a port, a path, a query), origin
/// (a path alone), authority (`host:port`, as CONNECT sends), and `*`.
fn uris() -> impl Strategy<Value = http::Uri> {
    let host = "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5}){0,2}";
    let path = "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,12}){0,4}";
    // Up to 80: URIs on both sides of the 94 bytes the future keeps in place.
    let query = proptest::option::of("[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,80}");
    let absolute = (
        prop_oneof![
            Just("https".to_owned()),
            Just("http".to_owned()),
            "[a-z][a-z0-9+.-]{0,8}"
        ],
        host,
        proptest::option::of(1u16..),
        path,
        query.clone(),
    )
        .prop_map(|(scheme, host, port, path, query)| {
            let port = port.map(|port| format!(":{port}")).unwrap_or_default();
            let query = query.map(|query| format!("?{query}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        });
    let origin = (path, query).prop_map(|(path, query)| {
        let query = query.map(|query| format!("?{query}")).unwrap_or_default();
        format!("/{}{query}", path.trim_start_matches('/'))
    });
    let authority = (host, 1u16..).prop_map(|(host, port)| format!("{host}:{port}"));
    prop_oneof![absolute, origin, authority, Just("*".to_owned())]
        .prop_map(|text| text.parse().expect("a valid URI"))
}

#[test]
fn an_errors_context_names_the_uri_as_it_was_sent() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(RunnerConfig::with_cases(1_000));
    runner
        .run(&uris(), |uri| {
            let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
                let mut response = Response::new(Empty::<Bytes>::new());
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                Ok::<_, Infallible>(response)
            });
            let service = ErrorClassifyLayer::new().layer(inner);
            let mut request = Request::new(Empty::new());
            *request.uri_mut() = uri.clone();
            *request.method_mut() = http::Method::PATCH;
            let error = runtime
                .block_on(service.oneshot(request))
                .expect_err("a 502 is an error");
            prop_assert_eq!(error.context().uri.as_ref(), Some(&uri));
            prop_assert_eq!(error.context().method.as_ref(), Some(&http::Method::PATCH));
            Ok(())
        })
        .unwrap();
}
