//! One `tracing` event per retry, with attempt, reason and delay, and no query string.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use drchrono_retry::RetryPolicy;
use http::Method;
use support::*;
use tower::{ServiceBuilder, ServiceExt};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every event at `level` and above into a buffer until the guard drops.
fn capture(level: tracing::Level) -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn each_retry_is_an_event_without_query_or_body() {
    let (buffer, _guard) = capture(tracing::Level::DEBUG);

    let script = Script::new(vec![server_error(503), throttled(Some(secs(4)))]);
    let mut req = request(Method::GET); // …/api/patients/1?since=2024-01-01, body "{}"
    *req.body_mut() =
        http_body_util::Full::new(bytes::Bytes::from_static(b"{\"first_name\":\"Jane\"}"));
    ServiceBuilder::new()
        .layer(RetryPolicy::builder().seed(1).build().unwrap().layer())
        .service(script.service())
        .oneshot(req)
        .await
        .unwrap();

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let events: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("retrying DrChrono request"))
        .collect();
    assert_eq!(events.len(), 2, "{logs}");
    let first_delay = script.gaps()[0].as_millis();
    assert!(events[0].contains("attempt=2"), "{}", events[0]);
    assert!(
        events[0].contains("reason=503 Service Unavailable"),
        "{}",
        events[0]
    );
    assert!(
        events[0].contains(&format!("delay_ms={first_delay}")),
        "{}",
        events[0]
    );
    assert!(
        events[0].contains("path=\"/api/patients/1\"")
            || events[0].contains("path=/api/patients/1")
    );
    assert!(events[1].contains("attempt=3"), "{}", events[1]);
    assert!(
        events[1].contains("reason=429 Too Many Requests"),
        "{}",
        events[1]
    );
    assert!(events[1].contains("delay_ms=4000"), "{}", events[1]);
    assert!(!logs.contains("since="), "{logs}");
    assert!(!logs.contains("Jane"), "{logs}");
}

#[tokio::test(start_paused = true)]
async fn giving_up_is_a_warning() {
    let (buffer, _guard) = capture(tracing::Level::INFO);

    let script = Script::new((0..4).map(|_| server_error(500)).collect());
    ServiceBuilder::new()
        .layer(RetryPolicy::new().layer())
        .service(script.service())
        .oneshot(request(Method::GET))
        .await
        .unwrap_err();
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let warning = logs
        .lines()
        .find(|l| l.contains("giving up"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("attempts=4"), "{warning}");
    assert!(warning.contains("out of retries"), "{warning}");
}

#[tokio::test(start_paused = true)]
async fn only_a_persistent_5xx_is_to_be_reported_to_drchrono() {
    let (buffer, _guard) = capture(tracing::Level::INFO);
    let give_up = |script: Script| async move {
        ServiceBuilder::new()
            .layer(RetryPolicy::new().layer())
            .service(script.service())
            .oneshot(request(Method::GET))
            .await
            .unwrap_err();
    };

    give_up(Script::new((0..4).map(|_| server_error(503)).collect())).await;
    // A wait beyond the longest the policy accepts: given up at once, not DrChrono's fault.
    give_up(Script::new(vec![throttled(Some(secs(2400)))])).await;

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("giving up")).collect();
    assert_eq!(warnings.len(), 2, "{logs}");
    assert!(warnings[0].contains("reason=503"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("report persistent 5xx"),
        "{}",
        warnings[0]
    );
    assert!(warnings[1].contains("reason=429"), "{}", warnings[1]);
    assert!(!warnings[1].contains("report"), "{}", warnings[1]);
}
