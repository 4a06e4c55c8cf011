//! The span tree of one request, as an OpenTelemetry exporter would see it: one request
//! span, a child per attempt with its resend count, the limiter's wait naming the rule that
//! held it, the token refresh, and no query value anywhere.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use drchrono_tower::DrChronoLayer;
use drchrono_tower::oauth::{ClientCredentials, TokenClient, TokenManager, TokenSet};
use drchrono_tower::ratelimit::{RateLimitConfig, RateLimiter};
use drchrono_tower::retry::RetryPolicy;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What the capture knows of one span.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut span = Captured {
            name: attrs.metadata().name(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.id().into_u64()),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}

fn capture() -> (Spans, DefaultGuard) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    (spans, tracing::subscriber::set_default(subscriber))
}

type Req = Request<Full<Bytes>>;

fn answer(
    status: StatusCode,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// A 503, then a 429 asking for one second, then the list.
fn transport()
-> impl tower::Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future = Answer>
+ Clone {
    let calls = Arc::new(Mutex::new(0));
    service_fn(move |_request: Req| {
        let mut calls = calls.lock().unwrap();
        *calls += 1;
        ready(Ok(match *calls {
            1 => answer(StatusCode::SERVICE_UNAVAILABLE, &[], ""),
            2 => answer(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", "1"), ("content-type", "application/json")],
                r#"{"detail": "Request was throttled. Expected available in 1 second."}"#,
            ),
            _ => answer(
                StatusCode::OK,
                &[("content-type", "application/json")],
                r#"{"results": []}"#,
            ),
        }))
    })
}

/// A token endpoint that grants a two-hour pair.
fn token_manager() -> TokenManager {
    let grant = service_fn(|_request: Req| {
        ready(Ok::<_, Infallible>(answer(
            StatusCode::OK,
            &[("content-type", "application/json")],
            r#"{"access_token": "new-access", "refresh_token": "new-refresh", "expires_in": 7200, "token_type": "Bearer", "scope": "patients:read"}"#,
        )))
    });
    let client = TokenClient::new(grant, ClientCredentials::new("id", "secret"));
    // Of unknown lifetime, so due for refresh 5 minutes before it expires: 10 s from now,
    // when the first retry leaves (20 s), not before the first attempt.
    TokenManager::builder(client)
        .initial_tokens(TokenSet::new(
            "access",
            "refresh",
            SystemTime::now() + Duration::from_secs(5 * 60 + 10),
        ))
        .build()
}

#[tokio::test(start_paused = true)]
async fn one_request_span_three_attempts_a_wait_and_a_refresh() {
    let (spans, _guard) = capture();
    let limits = RateLimitConfig::builder()
        .max_per_second(1)
        .build()
        .unwrap();
    let retry = RetryPolicy::builder()
        .first_delay(Duration::from_secs(20), Duration::from_secs(20))
        .seed(7)
        .build()
        .unwrap();
    let service = DrChronoLayer::new(token_manager())
        .rate_limit(RateLimiter::new(limits))
        .retry(retry)
        .layer(transport());
    let request =
        Request::get("https://app.drchrono.com/api/patients?first_name=Henrietta&since=2024-06-11")
            .body(Full::new(Bytes::new()))
            .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let spans = spans.0.lock().unwrap().clone();
    let named = |name: &str| -> Vec<(u64, Captured)> {
        spans
            .iter()
            .filter(|(_, span)| span.name == name)
            .map(|(id, span)| (*id, span.clone()))
            .collect()
    };
    let requests = named("http.client.request");
    assert_eq!(requests.len(), 1, "{spans:#?}");
    let (request_id, request) = &requests[0];
    assert_eq!(request.fields["http.request.method"], "GET");
    assert_eq!(request.fields["server.address"], "app.drchrono.com");
    assert_eq!(request.fields["server.port"], "443");
    assert_eq!(request.fields["url.path"], "/api/patients");
    assert_eq!(
        request.fields["url.full"],
        "https://app.drchrono.com/api/patients?first_name=REDACT&since=2024-06-11"
    );
    assert_eq!(request.fields["http.response.status_code"], "200");
    assert!(!request.fields.contains_key("error.type"), "{request:?}");

    let mut attempts: Vec<String> = named("http.client.attempt")
        .iter()
        .map(|(_, span)| {
            assert_eq!(span.parent, Some(*request_id), "{span:?}");
            span.fields["http.request.resend_count"].clone()
        })
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["0", "1", "2"]);

    let waits = named("rate_limit.wait");
    assert!(!waits.is_empty(), "{spans:#?}");
    let rules: Vec<&String> = waits
        .iter()
        .filter_map(|(_, span)| span.fields.get("drchrono.rate_limit.rule"))
        .collect();
    assert!(!rules.is_empty(), "no wait named its rule: {waits:#?}");
    for (_, wait) in &waits {
        let parent = wait.parent.and_then(|p| spans.get(&p)).map(|p| p.name);
        assert_eq!(parent, Some("http.client.attempt"), "{wait:?}");
    }

    let refreshes = named("oauth.refresh");
    assert_eq!(refreshes.len(), 1, "{spans:#?}");
    let mut ancestor = refreshes[0].1.parent;
    while let Some(id) = ancestor
        && id != *request_id
    {
        ancestor = spans.get(&id).and_then(|span| span.parent);
    }
    assert_eq!(
        ancestor,
        Some(*request_id),
        "the refresh is outside the request's tree"
    );

    for span in spans.values() {
        for value in span.fields.values() {
            assert!(!value.contains("Henrietta"), "{span:?}");
            assert!(
                !value.contains("access") && !value.contains("refresh"),
                "{span:?}"
            );
        }
    }
}
