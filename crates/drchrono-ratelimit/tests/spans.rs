//! The layer's `rate_limit.wait` span, as a `tracing` subscriber (an OpenTelemetry exporter)
//! sees it: one per request that waits for its permit, none for a request admitted at once.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drchrono_ratelimit::{DrChronoRateLimitLayer, Priority, RateLimitConfig};
use http::{Request, Response, StatusCode};
use support::{limiter_with, start};
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What the capture knows of one span.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

/// Every span, by id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, Captured>>>);

impl Spans {
    fn named(&self, name: &str) -> Vec<Captured> {
        let spans = self.0.lock().unwrap();
        spans.values().filter(|s| s.name == name).cloned().collect()
    }

    fn open(&self, name: &str) -> usize {
        self.named(name).iter().filter(|s| !s.closed).count()
    }
}

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
                .map(|p| p.metadata().name()),
            ..Captured::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            span.closed = true;
        }
    }
}

fn capture() -> (Spans, DefaultGuard) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    (spans, tracing::subscriber::set_default(subscriber))
}

const WAIT: &str = "rate_limit.wait";

/// An inner service that answers with the number of `rate_limit.wait` spans open when it
/// was called.
fn counting_open_waits(
    spans: &Spans,
) -> impl Service<Request<()>, Response = Response<usize>, Error = Infallible, Future: Send>
+ Clone
+ use<> {
    let spans = spans.clone();
    service_fn(move |_request: Request<()>| ready(Ok(Response::new(spans.open(WAIT)))))
}

#[tokio::test(start_paused = true)]
async fn only_a_request_that_waits_has_a_span_naming_the_rule_that_held_it() {
    let (spans, _guard) = capture();
    let limiter = limiter_with(
        RateLimitConfig::builder()
            .max_per_second(1)
            .safety_margin(Duration::ZERO),
    );
    let mut service =
        DrChronoRateLimitLayer::new(limiter.clone()).layer(counting_open_waits(&spans));
    // `call` runs in the caller's span, the response future is polled in another: the
    // wait is the caller's child.
    let caller = tracing::info_span!("caller");
    let poller = tracing::info_span!("poller");

    // Admitted at once: no span.
    let first = caller.in_scope(|| service.call(Request::new(())));
    let response = first.instrument(poller.clone()).await.unwrap();
    assert_eq!(*response.body(), 0);
    assert!(spans.named(WAIT).is_empty(), "{:#?}", spans.named(WAIT));

    // Waits a second for the rolling second.
    service.ready().await.unwrap();
    let second = caller.in_scope(|| service.call(Request::new(())));
    let response = second.instrument(poller).await.unwrap();
    // The span had closed when the inner service was called.
    assert_eq!(*response.body(), 0);
    assert_eq!(limiter.clock().now(), start() + Duration::from_secs(1));
    let waits = spans.named(WAIT);
    assert_eq!(waits.len(), 1, "{waits:#?}");
    let wait = &waits[0];
    assert_eq!(wait.parent, Some("caller"));
    assert!(wait.closed);
    assert_eq!(wait.fields["drchrono.rate_limit.rule"], "sliding_1s");
    assert_eq!(
        wait.fields["drchrono.rate_limit.rule"],
        limiter.config().rules()[0].name().to_string()
    );
    assert_eq!(wait.fields["drchrono.rate_limit.priority"], "interactive");
}

#[tokio::test(start_paused = true)]
async fn a_wait_for_a_servers_pause_names_no_rule() {
    let (spans, _guard) = capture();
    let limiter = limiter_with(RateLimitConfig::builder().safety_margin(Duration::ZERO));
    let throttled = Arc::new(Mutex::new(true));
    let inner = service_fn(move |_request: Request<()>| {
        let status = if std::mem::take(&mut *throttled.lock().unwrap()) {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        let response = Response::builder()
            .status(status)
            .header("retry-after", "7")
            .body(())
            .unwrap();
        ready(Ok::<_, Infallible>(response))
    });
    let service = DrChronoRateLimitLayer::new(limiter.clone()).layer(inner);
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    let mut request = Request::new(());
    request.extensions_mut().insert(Priority::Background);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(limiter.clock().now(), start() + Duration::from_secs(7));
    let waits = spans.named(WAIT);
    assert_eq!(waits.len(), 1, "{waits:#?}");
    assert!(
        !waits[0].fields.contains_key("drchrono.rate_limit.rule"),
        "{waits:#?}"
    );
    assert_eq!(
        waits[0].fields["drchrono.rate_limit.priority"],
        "background"
    );
}
