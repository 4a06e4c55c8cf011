use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use super::*;
use crate::{ErrorContext, RequestPayload};

fn failed_appointment() -> DrChronoError {
    let payload = Bytes::from_static(
        br#"{"doctor": 11, "patient": 22, "office": 3, "exam_room": 1,
             "scheduled_time": "2026-01-05T10:30:00", "duration": 30,
             "first_name": "Henrietta", "date_of_birth": "1951-08-01",
             "notes": "Cervical biopsy follow-up"}"#,
    );
    let request =
        http::Request::post("https://app.drchrono.com/api/appointments?first_name=Henrietta")
            .extension(RequestPayload(payload))
            .body(())
            .unwrap();
    let mut context = ErrorContext::from_request(&request);
    context.status = Some(StatusCode::SERVICE_UNAVAILABLE);
    context.occurred_at = Some(UNIX_EPOCH + Duration::from_secs(1_767_609_420));
    DrChronoError::Server {
        status: StatusCode::SERVICE_UNAVAILABLE,
        context: Box::new(context),
    }
}

#[test]
fn report_has_every_item_and_no_phi() {
    let error = failed_appointment();
    let report = SupportReport::from(&error)
        .application("Acme Scheduler")
        .api_user("dr_smith (user_id 42)")
        .first_occurrence(UNIX_EPOCH + Duration::from_secs(1_767_600_000))
        .use_case("Books follow-up visits")
        .schedule("Every 15 minutes during office hours");
    let email = report.to_string();
    let json = serde_json::to_string(&report).unwrap();
    for text in [&email, &json] {
        for phi in ["Henrietta", "1951-08-01", "Cervical", "biopsy", "10:30:00"] {
            assert!(!text.contains(phi), "{phi} leaked: {text}");
        }
        for item in [
            "Acme Scheduler",
            "https://app.drchrono.com/api/appointments?first_name=REDACT",
            "first_name",
            "date_of_birth",
            "dr_smith (user_id 42)",
            "2026-01-05T08:00:00.000+00:00",
            "2026-01-05T10:37:00.000+00:00",
            "Books follow-up visits",
            "Every 15 minutes",
            CRATE_VERSION,
        ] {
            assert!(text.contains(item), "{item} missing: {text}");
        }
    }
    assert!(email.starts_with(
        "To: api@drchrono.com\nSubject: DrChrono API error 503 Service Unavailable on POST"
    ));
    assert!(email.contains("503 Service Unavailable"));
    assert!(email.contains("Time zone: UTC"));
    assert!(email.contains("Code environment: Rust (drchrono-tower"));
    assert!(email.contains(r#""doctor":11"#), "{email}");
    assert!(email.contains(r#""first_name":"REDACT""#), "{email}");
    assert!(email.contains(r#""notes":"REDACT""#), "{email}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["status"], 503);
    assert_eq!(value["method"], "POST");
    assert_eq!(value["time_zone"], "UTC");
    assert_eq!(
        value["environment"]["minimum_rust_version"],
        RUST_VERSION.unwrap()
    );
}

#[test]
fn unauthorized_reports_ask_about_tokens() {
    let error = DrChronoError::Unauthorized {
        kind: crate::UnauthorizedKind::TokenInvalid,
        replay_with_current_token: false,
        persisted_after_refresh: false,
        context: Box::default(),
    };
    let email = SupportReport::from(&error)
        .token_handling("Refreshed by one job; cached in Redis")
        .to_string();
    assert!(email.contains("How access tokens are generated and cached: Refreshed by one job"));
    assert!(email.contains("DrChrono's message: The access token is invalid."));
    assert!(email.contains("Complete API endpoint URL: (not provided)"));
}

#[test]
fn transport_report() {
    let mut context = ErrorContext::new();
    context.method = Some(Method::GET);
    context.uri = Some("/api/patients/1".parse().unwrap());
    let error = DrChronoError::Transport {
        not_sent: true,
        source: "connection refused".into(),
        context: Box::new(context),
    };
    let email = SupportReport::from(&error).to_string();
    assert!(email.contains("no response (transport error)"));
    assert!(email.contains("GET /api/patients/1"));
    assert!(!email.contains("How access tokens"));
}

#[test]
fn rfc3339_edges() {
    assert_eq!(
        rfc3339(UNIX_EPOCH).as_deref(),
        Some("1970-01-01T00:00:00.000+00:00")
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_millis(1250)).as_deref(),
        Some("1969-12-31T23:59:58.750+00:00")
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
        None
    );
}

/// DRF's choice error echoes the submitted value: the report keeps the field names and
/// DRF's words, not the value (text and JSON).
#[test]
fn field_errors_keep_names_and_words_but_no_quoted_value() {
    let body = br#"{"gender": ["\"Female - pregnant\" is not a valid choice."],
        "doctor": ["Invalid pk \"Henrietta\" - object does not exist."],
        "date_of_birth": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."],
        "detail": "Patient \"Henrietta Lacks\" is invalid."}"#;
    let error = crate::classify_response(
        StatusCode::BAD_REQUEST,
        &http::HeaderMap::new(),
        body,
        false,
        ErrorContext::new(),
    )
    .unwrap();
    let report = SupportReport::from(&error);
    let email = report.to_string();
    let json = serde_json::to_string(&report).unwrap();
    for text in [&email, &json, &format!("{report:?}"), &error.to_string()] {
        for phi in ["Female", "pregnant", "Henrietta", "Lacks"] {
            assert!(!text.contains(phi), "{phi} leaked: {text}");
        }
    }
    assert!(
        email.contains(
            "   - Field errors (quoted values redacted):\n     date_of_birth: Date has wrong \
             format. Use one of these formats instead: YYYY-MM-DD.\n     doctor: Invalid pk \
             \"REDACT\" - object does not exist.\n     gender: \"REDACT\" is not a valid \
             choice.\n"
        ),
        "{email}"
    );
    assert!(
        email.contains("DrChrono's message: Patient \"REDACT\" is invalid."),
        "{email}"
    );
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["field_errors"]["gender"][0],
        "\"REDACT\" is not a valid choice."
    );
    assert_eq!(value["drchrono_message"], "Patient \"REDACT\" is invalid.");
    // Without field errors there is no such item.
    assert!(!failed_appointment_report().contains("Field errors"));
}

fn failed_appointment_report() -> String {
    SupportReport::from(&failed_appointment()).to_string()
}

#[test]
fn a_report_names_the_host_and_port_but_no_user_information() {
    for (uri, shown) in [
        (
            "https://svc:s3cret@app.drchrono.com/api/patients",
            "https://app.drchrono.com/api/patients",
        ),
        (
            "http://svc:s3cret@127.0.0.1:8080/api/patients?first_name=Ada",
            "http://127.0.0.1:8080/api/patients?first_name=REDACT",
        ),
    ] {
        let request = http::Request::get(uri).body(()).unwrap();
        let mut context = ErrorContext::from_request(&request);
        context.status = Some(StatusCode::INTERNAL_SERVER_ERROR);
        let error = DrChronoError::Server {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            context: Box::new(context),
        };
        let report = SupportReport::from(&error);
        let email = report.to_string();
        let json = serde_json::to_string(&report).unwrap();
        for text in [&email, &json] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(!text.contains("svc"), "{text}");
            assert!(text.contains(shown), "{shown} missing: {text}");
        }
    }
}
