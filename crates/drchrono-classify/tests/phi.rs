//! No patient value reaches any rendering.
//!
//! A property test generates patients (names, dates of birth, addresses, free-text notes,
//! unicode), places their values where a DrChrono call carries them (the query string, the
//! JSON request payload, request and response headers, JSON error bodies of every status,
//! DRF's field errors that echo a value, a body that fails to decode, a transport error that
//! quotes one), and checks `Display`, `Debug`, the whole `source()` chain, the
//! `SupportReport` (text, JSON and `Debug`) and everything `tracing` emits at TRACE.
//!
//! Every generated value is made of tokens that cannot occur in fixed text: each starts with
//! a letter no message, hint or field name of the crate contains (`Ø`, `Ж`, `日`, …), or is a
//! date of birth before 1970 (every date the crate prints is a time of the error). A leak is
//! found whatever the rendering did to the token: printed raw, percent-encoded (a URI), or
//! escaped by `Debug` or JSON (neither escapes these letters).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drchrono_classify::ErrorClassify;
use drchrono_core::{
    BoxError, DrChronoError, ErrorContext, RedactedJsonError, RequestPayload, SupportReport,
};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::json;
use tower::{Service, ServiceExt, service_fn};

mod capture;

use capture::capture;

/// Generated cases of the property test.
const CASES: u32 = 2_000;

/// First letters of generated tokens: in no fixed text of the crate.
const MARKERS: &[char] = &[
    'Å', 'Ë', 'Ï', 'Ø', 'Ł', 'Ż', 'Š', 'Ž', 'Ж', 'Я', 'Ω', 'Ψ', '日', '本', '김', 'Þ',
];

/// A generated patient. Every value is built from [`Patient::secrets`].
#[derive(Debug, Clone)]
struct Patient {
    first: String,
    last: String,
    dob: String,
    street: String,
    address: String,
    notes: String,
    note_tokens: Vec<String>,
    token: String,
}

impl Patient {
    /// What must not appear in any rendering.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![
            self.first.clone(),
            self.last.clone(),
            self.dob.clone(),
            self.street.clone(),
            self.token.clone(),
        ];
        secrets.extend(self.note_tokens.iter().cloned());
        secrets
    }

    fn full_name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// A token: a marker letter, then 4 to 10 letters (ASCII and Latin-1).
fn token() -> impl Strategy<Value = String> {
    (proptest::sample::select(MARKERS), "[a-zA-Zà-öø-ÿ]{4,10}")
        .prop_map(|(marker, rest)| format!("{marker}{rest}"))
}

fn patient() -> impl Strategy<Value = Patient> {
    let dob =
        (1900u32..1970, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    let separators = proptest::sample::select(vec![
        " ", ", ", "; ", " \"", "\" ", " '", "' ", "\n", " — ", "/", " “", "” ", " `",
    ]);
    let notes = proptest::collection::vec((token(), separators), 1..5);
    (token(), token(), dob, token(), 1u32..99_999, notes, token()).prop_map(
        |(first, last, dob, street, number, notes, token)| {
            let note_tokens: Vec<String> = notes.iter().map(|(t, _)| t.clone()).collect();
            let notes = notes
                .iter()
                .map(|(t, sep)| format!("{t}{sep}"))
                .collect::<String>();
            Patient {
                address: format!("{number} {street} St., Apt {}", number % 97),
                first,
                last,
                dob,
                street,
                notes,
                note_tokens,
                token: format!("tok{token}"),
            }
        },
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Every secret found in a rendering, as `"<rendering>: <secret>"`.
fn leaks(secrets: &[String], renderings: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        let forms = [secret.clone(), percent_encode(secret)];
        for (name, text) in renderings {
            if forms.iter().any(|form| text.contains(form.as_str())) {
                found.push(format!("{name}: {secret}"));
            }
        }
    }
    found
}

/// The request of every call: the patient in the query string, the payload and a header.
fn request(patient: &Patient) -> Request<Full<Bytes>> {
    let query = [
        ("first_name", patient.first.as_str()),
        ("last_name", patient.last.as_str()),
        ("date_of_birth", patient.dob.as_str()),
        ("address", patient.address.as_str()),
        ("q", patient.notes.as_str()),
        ("doctor", "12"),
        ("since", "2024-06-11"),
    ]
    .iter()
    .map(|(key, value)| format!("{key}={}", percent_encode(value)))
    .collect::<Vec<_>>()
    .join("&");
    let payload = serde_json::to_vec(&json!({
        "first_name": patient.first,
        "last_name": patient.last,
        "date_of_birth": patient.dob,
        "address": patient.address,
        "notes": patient.notes,
        "doctor": 12,
        "custom_demographics": [{"value": patient.notes}],
    }))
    .unwrap();
    Request::post(format!("https://app.drchrono.com/api/patients/42?{query}"))
        .header(
            "x-patient",
            HeaderValue::from_bytes(patient.full_name().as_bytes()).unwrap(),
        )
        .header(
            AUTHORIZATION,
            HeaderValue::from_bytes(format!("Bearer {}", patient.token).as_bytes()).unwrap(),
        )
        .extension(RequestPayload(Bytes::from(payload.clone())))
        .body(Full::new(Bytes::from(payload)))
        .unwrap()
}

/// A DrChrono error answer, with the patient's values wherever a careless or a DRF server
/// may put them.
fn answer(status: u16, patient: &Patient) -> Response<Full<Bytes>> {
    let p = patient;
    let body = match status {
        400 => json!({
            "gender": [format!("\"{}\" is not a valid choice.", p.full_name())],
            "doctor": [format!("Invalid pk \"{}\" - object does not exist.", p.dob)],
            "date_of_birth": [format!(
                "“{}” value has an invalid date format. It must be in YYYY-MM-DD format.",
                p.dob
            )],
            "patient": [format!("Object with name={} does not exist.", p.last)],
            "address": {"street": [format!("\"{}\" is not a valid choice.", p.address)]},
            "notes": [format!("'{}' value must be an integer.", p.notes)],
            "non_field_errors": [format!(
                "Select a valid choice. {} is not one of the available choices.",
                p.notes
            )],
            "office": ["This field is required."],
            "first_name": ["Ensure this field has no more than 50 characters."],
        }),
        401 => json!({
            "detail": "Authentication credentials were not provided.",
            "token": p.token,
            "user": p.first,
        }),
        403 => json!({
            "detail": "You do not have permission to perform this action.",
            "patient": p.last,
        }),
        404 => json!({"detail": format!("No Patient matches \"{}\".", p.full_name())}),
        405 => json!({"detail": "Method \"POST\" not allowed.", "notes": p.notes}),
        409 => json!({
            "error": "Appointment overlaps with 323351400",
            "patient_name": p.full_name(),
            "notes": p.notes,
        }),
        429 => json!({
            "detail": "Request was throttled. Expected available in 3 seconds.",
            "first_name": p.first,
        }),
        // An OAuth error from the token endpoint, quoting the user.
        499 => json!({
            "error": "invalid_grant",
            "error_description": format!("Refresh token of \"{}\" is invalid.", p.full_name()),
        }),
        _ => json!(null),
    };
    let (status, body) = match status {
        499 => (400, body.to_string()),
        502 => (
            502,
            format!(
                "<html><body>{} {} {}</body></html>",
                p.full_name(),
                p.dob,
                p.notes
            ),
        ),
        other => (other, body.to_string()),
    };
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(
            "x-echo",
            HeaderValue::from_bytes(format!("{} {}", p.full_name(), p.dob).as_bytes()).unwrap(),
        );
    match status {
        401 => {
            let challenge = format!(
                "Bearer realm=\"api\",error=\"invalid_token\",error_description=\"token of {}\"",
                p.full_name()
            );
            builder = builder.header(
                WWW_AUTHENTICATE,
                HeaderValue::from_bytes(challenge.as_bytes()).unwrap(),
            );
        }
        429 => builder = builder.header(RETRY_AFTER, "3"),
        502 => builder = builder.header(CONTENT_TYPE, "text/html"),
        _ => {}
    }
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

/// The statuses answered (499: an OAuth error body on a 400).
const STATUSES: &[u16] = &[400, 401, 403, 404, 405, 409, 429, 499, 502];

/// A body that fails to decode, and the `serde_json::Error` (which quotes the value).
fn decode_failure(patient: &Patient, variant: bool) -> serde_json::Error {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Record {
        id: u64,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    enum Gender {
        Female,
        Male,
    }
    if variant {
        let body = json!([patient.full_name()]).to_string();
        serde_json::from_str::<Vec<Gender>>(&body).unwrap_err()
    } else {
        let body = json!({"id": patient.notes}).to_string();
        serde_json::from_str::<Record>(&body).unwrap_err()
    }
}

/// The error of one call of `service` with the patient's request.
fn classify_with<S>(
    runtime: &tokio::runtime::Runtime,
    patient: &Patient,
    service: ErrorClassify<S>,
) -> DrChronoError
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>>,
    S::Error: Into<BoxError>,
{
    runtime.block_on(async { service.oneshot(request(patient)).await.unwrap_err() })
}

/// Every error of one case: one per status, a transport failure that quotes a value, and a
/// `Decode` built as `drchrono-tower`'s client builds it.
fn errors(
    runtime: &tokio::runtime::Runtime,
    patient: &Patient,
    variant: bool,
) -> Vec<DrChronoError> {
    let mut out = Vec::new();
    for &status in STATUSES {
        let answer = answer(status, patient);
        let answer = Arc::new(Mutex::new(Some(answer)));
        out.push(classify_with(
            runtime,
            patient,
            ErrorClassify::new(service_fn(move |_request: Request<Full<Bytes>>| {
                let answer = answer.lock().unwrap().take().unwrap();
                async move { Ok::<_, Infallible>(answer) }
            })),
        ));
    }
    // A transport whose error quotes the value it failed on.
    let quoting = io::Error::other(decode_failure(patient, variant));
    let quoting = Arc::new(Mutex::new(Some(quoting)));
    out.push(classify_with(
        runtime,
        patient,
        ErrorClassify::new(service_fn(move |_request: Request<Full<Bytes>>| {
            let error = quoting.lock().unwrap().take().unwrap();
            async move { Err::<Response<Full<Bytes>>, _>(error) }
        })),
    ));
    out.push(DrChronoError::Decode {
        source: Box::new(decode_failure(patient, variant)),
        context: Box::new(ErrorContext::from_request(&request(patient))),
    });
    out
}

/// Every rendering of `error`, named.
fn renderings(error: &DrChronoError) -> Vec<(String, String)> {
    let kind = error.kind_name();
    let report = SupportReport::from(error)
        .application("Acme Scheduler")
        .api_user("dr_smith (user_id 42)");
    let mut out = vec![
        (format!("{kind} Display"), error.to_string()),
        (format!("{kind} Debug"), format!("{error:?}")),
        (format!("{kind} Debug pretty"), format!("{error:#?}")),
        (
            format!("{kind} context Debug"),
            format!("{:?}", error.context()),
        ),
        (format!("{kind} report"), report.to_string()),
        (
            format!("{kind} report JSON"),
            serde_json::to_string(&report).unwrap(),
        ),
        (format!("{kind} report Debug"), format!("{report:?}")),
    ];
    if let DrChronoError::BadRequest { field_errors, .. } = error {
        out.push((
            format!("{kind} field errors Debug"),
            format!("{field_errors:?}"),
        ));
    }
    let mut source = error.source();
    let mut depth = 0;
    while let Some(current) = source {
        out.push((
            format!("{kind} source {depth} Display"),
            current.to_string(),
        ));
        out.push((
            format!("{kind} source {depth} Debug"),
            format!("{current:?}"),
        ));
        source = current.source();
        depth += 1;
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn no_generated_patient_value_reaches_any_rendering() {
    let runtime = runtime();
    let mut runner = TestRunner::new(RunnerConfig::with_cases(CASES));
    let strategy = (patient(), any::<bool>());
    let (buffer, _guard) = capture();
    runner
        .run(&strategy, |(patient, variant)| {
            let errors = errors(&runtime, &patient, variant);
            let logged = buffer.take();
            let mut all = vec![("tracing at TRACE".to_owned(), logged.clone())];
            for error in &errors {
                all.extend(renderings(error));
            }
            let found = leaks(&patient.secrets(), &all);
            prop_assert!(found.is_empty(), "leaked {:?}\n{:#?}", found, all);

            // Not vacuous: the renderings say what happened and where.
            prop_assert_eq!(logged.lines().count(), STATUSES.len() + 1, "{}", logged);
            prop_assert!(logged.contains("path=\"/api/patients/42\""), "{}", logged);
            let bad = &errors[0];
            prop_assert_eq!(bad.kind_name(), "bad_request");
            let report = SupportReport::from(bad).to_string();
            for kept in [
                "gender: \"REDACT\" is not a valid choice.",
                "doctor: Invalid pk \"REDACT\" - object does not exist.",
                "date_of_birth: “REDACT” value has an invalid date format.",
                "patient: Object with name=REDACT does not exist.",
                "address.street: \"REDACT\" is not a valid choice.",
                "notes: 'REDACT' value must be an integer.",
                "non_field_errors: Select a valid choice. REDACT is not one of the available",
                "office: This field is required.",
                "first_name: Ensure this field has no more than 50 characters.",
                "POST https://app.drchrono.com/api/patients/42?first_name=REDACT&",
                "&doctor=12&since=2024-06-11",
            ] {
                prop_assert!(report.contains(kept), "{} missing:\n{}", kept, report);
            }
            for error in &errors {
                prop_assert!(
                    format!("{error:?}").contains("path: Some(\"/api/patients/42\")"),
                    "{:?}",
                    error
                );
            }
            let decode = errors.last().unwrap();
            let redacted = decode
                .source()
                .and_then(|s| s.downcast_ref::<RedactedJsonError>());
            prop_assert!(redacted.is_some_and(|r| r.line() == 1 && r.column() > 0));
            Ok(())
        })
        .unwrap();
}

/// The checker finds what a careless rendering prints: a `Debug` that shows the URI, the
/// raw field errors, or a `serde_json::Error`'s message.
#[test]
fn the_checker_catches_a_debug_that_prints_the_uri() {
    let (_buffer, _guard) = capture();
    let runtime = runtime();
    let mut runner = TestRunner::new(RunnerConfig::with_cases(256));
    let strategy = (patient(), any::<bool>());
    runner
        .run(&strategy, |(patient, variant)| {
            let errors = errors(&runtime, &patient, variant);
            let secrets = patient.secrets();
            for error in &errors {
                // As a derived `Debug` of the context would.
                let leaky = format!("{error:?} uri: {:?}", error.context().uri);
                let found = leaks(&secrets, &[("leaky Debug".to_owned(), leaky)]);
                // The URI holds every name, the date of birth and the note's tokens.
                for secret in [&patient.first, &patient.last, &patient.dob] {
                    prop_assert!(
                        found.iter().any(|f| f.ends_with(secret.as_str())),
                        "{} not caught in {:?}",
                        secret,
                        error.context().uri
                    );
                }
                // And the same rendering without the URI is clean.
                let clean = leaks(&secrets, &[("Debug".to_owned(), format!("{error:?}"))]);
                prop_assert!(clean.is_empty(), "{:?}", clean);
            }
            let DrChronoError::BadRequest { field_errors, .. } = &errors[0] else {
                panic!("{:?}", errors[0]);
            };
            let raw = format!("{:?}", field_errors.clone().into_inner());
            prop_assert!(!leaks(&secrets, &[("raw field errors".to_owned(), raw)]).is_empty());
            let serde = decode_failure(&patient, variant).to_string();
            prop_assert!(!leaks(&secrets, &[("serde message".to_owned(), serde)]).is_empty());
            Ok(())
        })
        .unwrap();
}

/// A 404 on a query string that names a patient: `Debug` and the `source()` chain of the
/// error print the path only.
#[tokio::test]
async fn debug_of_a_404_on_a_phi_query_string_prints_no_query() {
    let (buffer, _guard) = capture();
    let not_found = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(404)
                .body(Full::new(Bytes::from_static(br#"{"detail":"Not found."}"#)))
                .unwrap(),
        )
    });
    let request = Request::get(
        "https://app.drchrono.com/api/patients?first_name=Jane&date_of_birth=1970-01-01",
    )
    .body(Full::default())
    .unwrap();
    let error = ErrorClassify::new(not_found)
        .oneshot(request)
        .await
        .unwrap_err();
    let debug = format!("{error:?} {error:#?}");
    for phi in ["Jane", "1970-01-01", "first_name", "?"] {
        assert!(!debug.contains(phi), "{phi} in {debug}");
    }
    assert!(debug.contains("path: Some(\"/api/patients\")"), "{debug}");
    assert!(error.source().is_none());
    // The data is still there for the caller, and the report keeps the redacted query.
    assert_eq!(
        error.context().uri.as_ref().and_then(http::Uri::query),
        Some("first_name=Jane&date_of_birth=1970-01-01")
    );
    let report = SupportReport::from(&error).to_string();
    assert!(
        report.contains("/api/patients?first_name=REDACT&date_of_birth=REDACT"),
        "{report}"
    );
    let logged = buffer.text();
    assert!(logged.contains("path=\"/api/patients\""), "{logged}");
    assert!(
        !logged.contains("Jane") && !logged.contains('?'),
        "{logged}"
    );
}

/// A `Decode` error on a body that names a patient: its `source()` keeps serde's category,
/// line and column, not the value serde quoted.
#[test]
fn the_source_of_a_decode_error_on_a_phi_body_quotes_nothing() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Patient {
        id: u64,
    }
    let body = br#"{"id": "Jane Doe, DOB 1970-01-01"}"#;
    let serde_error = serde_json::from_slice::<Patient>(body).unwrap_err();
    // As `drchrono-tower`'s `DrChronoClient::json` builds it.
    let error = DrChronoError::Decode {
        source: Box::new(serde_error),
        context: Box::new(ErrorContext::new()),
    };
    // What `anyhow`'s `{:#}` and `{:?}`, and `eyre`'s reports print: the chain.
    let mut chain = vec![error.to_string(), format!("{error:?}")];
    let mut source = error.source();
    while let Some(current) = source {
        chain.push(current.to_string());
        chain.push(format!("{current:?}"));
        source = current.source();
    }
    let chain = chain.join("\n");
    for phi in ["Jane", "1970-01-01", "DOB"] {
        assert!(!chain.contains(phi), "{phi} in {chain}");
    }
    let redacted = error
        .source()
        .and_then(|source| source.downcast_ref::<RedactedJsonError>())
        .unwrap();
    assert_eq!(redacted.category(), serde_json::error::Category::Data);
    assert_eq!((redacted.line(), redacted.column()), (1, 33));
    assert!(chain.contains("JSON data error"), "{chain}");
    assert!(chain.contains("at line 1 column 33"), "{chain}");
}

/// DRF's choice error echoes the submitted value: neither the report (text and JSON), nor
/// `Debug`, nor `Display` shows it.
#[test]
fn a_choice_error_echoing_a_value_is_redacted_everywhere() {
    let body = br#"{"gender": ["\"Female - pregnant\" is not a valid choice."]}"#;
    let error = drchrono_core::classify_response(
        StatusCode::BAD_REQUEST,
        &http::HeaderMap::new(),
        body,
        false,
        ErrorContext::new(),
    )
    .unwrap();
    let report = SupportReport::from(&error);
    let texts = [
        error.to_string(),
        format!("{error:?}"),
        report.to_string(),
        serde_json::to_string(&report).unwrap(),
    ];
    for text in &texts {
        assert!(
            !text.contains("Female") && !text.contains("pregnant"),
            "{text}"
        );
    }
    assert!(texts[1].contains(r#"{"gender": ["\"REDACT\" is not a valid choice."]}"#));
    assert!(texts[2].contains("gender: \"REDACT\" is not a valid choice."));
    assert!(texts[3].contains(r#""gender":["\"REDACT\" is not a valid choice."]"#));
    // The caller still has DRF's message.
    let DrChronoError::BadRequest { field_errors, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        field_errors["gender"],
        vec!["\"Female - pregnant\" is not a valid choice."]
    );
}
