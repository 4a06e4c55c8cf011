//! All `tracing` output at TRACE, while PHI-laden errors are classified, holds no patient value.

use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use drchrono_classify::ErrorClassify;
use drchrono_core::RequestPayload;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceExt, service_fn};

mod capture;

use capture::capture;

/// Patient values that must never reach a log.
const PHI: &[&str] = &[
    "Henrietta",
    "Lacks",
    "1951-08-01",
    "Cervical biopsy",
    "555-0199",
    "secret-access-token",
];

/// An echo of the patient record, as a careless server might send back.
const ECHO: &str = r#"{"first_name":"Henrietta","last_name":"Lacks","date_of_birth":"1951-08-01","notes":"Cervical biopsy","cell_phone":"555-0199"}"#;

fn respond(status: u16) -> Response<Full<Bytes>> {
    let body = match status {
        400 => r#"{"first_name":["Henrietta is too long."],"date_of_birth":"1951-08-01"}"#.to_owned(),
        401 => r#"{"detail":"Authentication credentials were not provided.","token":"secret-access-token"}"#
            .to_owned(),
        409 => r#"{"error":"Appointment overlaps with 323351400","patient_name":"Henrietta Lacks"}"#
            .to_owned(),
        429 => r#"{"detail":"Request was throttled. Expected available in 3 seconds."}"#.to_owned(),
        502 => "<html><body>Henrietta Lacks 1951-08-01</body></html>".to_owned(),
        _ => ECHO.to_owned(),
    };
    let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if status == 401 {
        builder = builder.header(
            WWW_AUTHENTICATE,
            r#"Bearer realm="api",error="invalid_token",error_description="The access token has expired.""#,
        );
    }
    if status == 429 {
        builder = builder.header(RETRY_AFTER, "3");
    }
    if status == 502 {
        builder = builder.header(CONTENT_TYPE, "text/html");
    }
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn tracing_output_has_no_patient_values() {
    let (buffer, _guard) = capture();

    let statuses = [400u16, 401, 403, 404, 405, 409, 429, 500, 502, 503, 504];
    for status in statuses {
        let service =
            ErrorClassify::new(service_fn(move |_req: Request<Full<Bytes>>| async move {
                Ok::<_, Infallible>(respond(status))
            }));
        let request = Request::post(
            "https://app.drchrono.com/api/patients/5?first_name=Henrietta&dob=1951-08-01",
        )
        .header("authorization", "Bearer secret-access-token")
        .extension(RequestPayload(Bytes::from_static(ECHO.as_bytes())))
        .body(Full::new(Bytes::from_static(ECHO.as_bytes())))
        .unwrap();
        let error = service.oneshot(request).await.unwrap_err();
        assert_eq!(error.status().map(|s| s.as_u16()), Some(status));
        // The error itself prints no patient value either.
        let display = error.to_string();
        for phi in PHI {
            assert!(!display.contains(phi), "{phi} in Display: {display}");
        }
    }
    // A transport error whose message carries patient data is not logged verbatim either.
    let failing = ErrorClassify::new(service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(io::Error::other("Henrietta Lacks: connection reset"))
    }));
    let request = Request::get("https://app.drchrono.com/api/patients?last_name=Lacks")
        .body(Full::default())
        .unwrap();
    failing.oneshot(request).await.unwrap_err();

    let output = buffer.text();
    for phi in PHI {
        assert!(!output.contains(phi), "{phi} logged:\n{output}");
    }
    assert!(
        !output.contains('?'),
        "a query string was logged:\n{output}"
    );
    // Exactly one event per error, each with its status, method, path and kind.
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), statuses.len() + 1, "{output}");
    for (line, status) in lines.iter().zip(statuses) {
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(line.contains("method=\"POST\""), "{line}");
        assert!(line.contains("path=\"/api/patients/5\""), "{line}");
        assert!(line.contains("kind="), "{line}");
    }
    assert!(lines[0].contains("DEBUG"), "{}", lines[0]);
    assert!(lines[7].contains("WARN"), "{}", lines[7]);
    let last = lines.last().unwrap();
    assert!(
        last.contains("kind=\"transport\"") && last.contains("not_sent=false"),
        "{last}"
    );
}

/// Each classified error is logged once, with method and path and no patient value.
#[tokio::test(flavor = "current_thread")]
async fn each_error_is_logged_once_with_its_method_and_path() {
    use tower::Service;

    let (buffer, _guard) = capture();
    let request = || {
        Request::post("https://app.drchrono.com/api/appointments?patient=Henrietta")
            .extension(RequestPayload(Bytes::from_static(ECHO.as_bytes())))
            .body(Full::new(Bytes::from_static(ECHO.as_bytes())))
            .unwrap()
    };
    let mut service = ErrorClassify::new(service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(respond(409))
    }));
    let error = service.call(request()).await.unwrap_err();
    assert_eq!(error.context().path(), Some("/api/appointments"));
    assert_eq!(error.context().method, Some(http::Method::POST));
    assert!(error.context().occurred_at.is_some());
    let payload = error.context().request_payload.as_deref().unwrap();
    assert!(
        payload.contains("REDACT") && !payload.contains("Henrietta"),
        "{payload}"
    );
    let other = service.call(request()).await.unwrap_err();
    assert_eq!(other.context().path(), Some("/api/appointments"));

    let output = buffer.text();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 2, "{output}");
    for line in &lines {
        assert!(line.contains("status=409"), "{line}");
        assert!(line.contains("method=\"POST\""), "{line}");
        assert!(line.contains("path=\"/api/appointments\""), "{line}");
    }
    for phi in PHI {
        assert!(!output.contains(phi), "{phi} logged:\n{output}");
    }
}
