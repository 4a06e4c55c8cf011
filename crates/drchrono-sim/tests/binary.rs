//! The `drchrono-sim` binary: its flags, its startup line, and serving.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use http::StatusCode;
use serde_json::Value;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> (Killed, Value) {
    let (child, line) = start_raw(args);
    (
        child,
        serde_json::from_str(&line).expect("the first line is JSON"),
    )
}

fn start_raw(args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drchrono-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a first line");
    (child, line)
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_drchrono-sim"))
        .arg("--help")
        .output()
        .expect("binary runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--addr",
        "--max-per-second",
        "--max-per-window",
        "--window-secs",
        "--max-per-hour",
        "--hour-secs",
        "--token-lifetime-secs",
        "--fault-rate",
        "--seed",
        "--allow-overlaps",
        "--token-delay-ms",
        "--latency-ms",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} in --help"));
        let documented = help.lines().skip_while(|l| *l != line).nth(1).unwrap_or("");
        assert!(
            !documented.trim().is_empty() || line.trim().len() > flag.len() + 10,
            "{flag} documented"
        );
    }
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        &["--fault-rate", "1.5"][..],
        &["--window-secs", "0"],
        &["--addr", "nowhere"],
        &["--token-delay-ms", "-1"],
        &["--latency-ms", "soon"],
        &["--bogus"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_drchrono-sim"))
            .args(args)
            .output()
            .expect("binary runs");
        assert!(!output.status.success(), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
}

#[tokio::test]
async fn startup_line_and_flags_match_the_contract() {
    let (_child, line) = start(&[
        "--addr",
        "127.0.0.1:0",
        "--max-per-second",
        "2",
        "--max-per-window",
        "290",
        "--window-secs",
        "600",
        "--max-per-hour",
        "500",
        "--hour-secs",
        "3600",
        "--token-lifetime-secs",
        "60",
        "--fault-rate",
        "0.0",
        "--seed",
        "3",
        "--allow-overlaps",
        "--token-delay-ms",
        "0",
        "--latency-ms",
        "0",
    ]);
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "event",
        "base_url",
        "token_url",
        "client_id",
        "client_secret",
        "refresh_token",
        "scope",
    ];
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys_sorted, expected);
    assert_eq!(line["event"], "listening");
    let base = line["base_url"].as_str().unwrap();
    assert!(base.starts_with("http://127.0.0.1:"));
    assert_eq!(
        line["token_url"].as_str().unwrap(),
        format!("{base}/o/token/")
    );

    // The flags took effect: a 60 s token, and the third call in a second is throttled.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let form = serde_urlencoded::to_string([
        ("grant_type", "refresh_token"),
        ("refresh_token", line["refresh_token"].as_str().unwrap()),
        ("client_id", line["client_id"].as_str().unwrap()),
        ("client_secret", line["client_secret"].as_str().unwrap()),
    ])
    .unwrap();
    let request = http::Request::post(line["token_url"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.into())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let tokens: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tokens["expires_in"], 60);
    let token = tokens["access_token"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let request = http::Request::get(format!("{base}/api/users/current"))
            .header("authorization", format!("Bearer {token}"))
            .body(Default::default())
            .unwrap();
        statuses.push(client.request(request).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses[..2], [200, 200]);
}

#[test]
fn startup_line_keys_come_in_the_documented_order() {
    let (_child, line) = start_raw(&[]);
    let order = [
        "\"event\":\"listening\"",
        "\"base_url\":",
        "\"token_url\":",
        "\"client_id\":",
        "\"client_secret\":",
        "\"refresh_token\":",
        "\"scope\":",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| line.find(k).unwrap_or_else(|| panic!("{k} in {line}")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
    assert!(line.starts_with("{\"event\":\"listening\","), "{line}");
}

#[tokio::test]
async fn timing_flags_delay_the_token_endpoint_and_the_api() {
    let (_child, line) = start(&["--token-delay-ms", "200", "--latency-ms", "100"]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let form = serde_urlencoded::to_string([
        ("grant_type", "refresh_token"),
        ("refresh_token", line["refresh_token"].as_str().unwrap()),
        ("client_id", line["client_id"].as_str().unwrap()),
        ("client_secret", line["client_secret"].as_str().unwrap()),
    ])
    .unwrap();
    let request = http::Request::post(line["token_url"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.into())
        .unwrap();
    // Lower bounds only: the real clock may run late, never early.
    let sent = std::time::Instant::now();
    let response = client.request(request).await.unwrap();
    assert!(sent.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let tokens: Value = serde_json::from_slice(&body).unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let base = line["base_url"].as_str().unwrap();
    let request = http::Request::get(format!("{base}/api/users/current"))
        .header("authorization", format!("Bearer {token}"))
        .body(Default::default())
        .unwrap();
    let sent = std::time::Instant::now();
    let response = client.request(request).await.unwrap();
    assert!(sent.elapsed() >= std::time::Duration::from_millis(100));
    assert_eq!(response.status(), StatusCode::OK);
}
