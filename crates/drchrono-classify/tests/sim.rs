//! Every status in DrChrono's article, classified from real HTTP responses of `drchrono-sim`
//! over loopback.

use std::time::Duration;

use bytes::Bytes;
use drchrono_classify::ErrorClassify;
use drchrono_core::{DrChronoError, RequestPayload, SupportReport, UnauthorizedKind};
use drchrono_sim::{RunningSimulator, SimConfig};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

type Classified = ErrorClassify<Client<HttpConnector, Full<Bytes>>>;

fn client() -> Classified {
    ErrorClassify::new(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>())
}

/// A patient's data that must never leave the process unredacted.
const PHI_PAYLOAD: &str = r#"{"doctor": 101, "patient": 1, "office": 1, "exam_room": 2,
    "scheduled_time": "2026-01-05T10:30:00", "duration": 30,
    "first_name": "Henrietta", "last_name": "Lacks", "date_of_birth": "1951-08-01",
    "notes": "Cervical biopsy follow-up"}"#;
const PHI: &[&str] = &["Henrietta", "Lacks", "1951-08-01", "Cervical", "biopsy"];

struct Call<'a> {
    method: Method,
    url: String,
    token: Option<&'a str>,
    json: Option<&'a str>,
    form: Option<String>,
}

impl<'a> Call<'a> {
    fn new(method: Method, url: String) -> Self {
        Self {
            method,
            url,
            token: None,
            json: None,
            form: None,
        }
    }

    fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    fn json(mut self, json: &'a str) -> Self {
        self.json = Some(json);
        self
    }

    fn form(mut self, form: String) -> Self {
        self.form = Some(form);
        self
    }

    async fn send(self, client: &Classified) -> Result<StatusCode, DrChronoError> {
        let mut builder = Request::builder().method(self.method).uri(&self.url);
        if let Some(token) = self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match (self.json, self.form) {
            (Some(json), _) => {
                builder = builder
                    .header(CONTENT_TYPE, "application/json")
                    .extension(RequestPayload(Bytes::from(json.to_owned())));
                Bytes::from(json.to_owned())
            }
            (None, Some(form)) => {
                builder = builder
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .extension(RequestPayload(Bytes::from(form.clone())));
                Bytes::from(form)
            }
            (None, None) => Bytes::new(),
        };
        let request = builder.body(Full::new(body)).unwrap();
        client
            .clone()
            .oneshot(request)
            .await
            .map(|response| response.status())
    }
}

async fn sim(config: SimConfig) -> (RunningSimulator, String) {
    let sim = drchrono_sim::spawn(config.patients(100)).await.unwrap();
    let token = sim.simulator().reauthorize(None).access_token;
    (sim, token)
}

fn api(sim: &RunningSimulator, path: &str) -> String {
    format!("{}{path}", sim.base_url())
}

#[tokio::test]
async fn success_passes_through() {
    let (sim, token) = sim(SimConfig::default()).await;
    let response = Call::new(Method::GET, api(&sim, "/api/users/current"))
        .token(&token)
        .send(&client())
        .await
        .unwrap();
    assert_eq!(response, StatusCode::OK);
}

#[tokio::test]
async fn bad_request_400_with_field_errors() {
    let (sim, token) = sim(SimConfig::default()).await;
    let error = Call::new(Method::POST, api(&sim, "/api/appointments"))
        .token(&token)
        .json(r#"{"doctor": 101, "first_name": "Henrietta"}"#)
        .send(&client())
        .await
        .unwrap_err();
    let DrChronoError::BadRequest { field_errors, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(field_errors["patient"], vec!["This field is required."]);
    assert_eq!(
        field_errors["scheduled_time"],
        vec!["This field is required."]
    );
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    let payload = error.context().request_payload.as_deref().unwrap();
    assert_eq!(payload, r#"{"doctor":101,"first_name":"REDACT"}"#);
}

#[tokio::test]
async fn oauth_errors_400_and_401_from_the_token_endpoint() {
    let (sim, _) = sim(SimConfig::default()).await;
    let credentials = sim.credentials();
    let client = client();
    let form = |grant: &str, refresh: &str, secret: &str| {
        format!(
            "grant_type={grant}&refresh_token={refresh}&client_id={}&client_secret={secret}",
            credentials.client_id
        )
    };
    let error = Call::new(Method::POST, sim.token_url())
        .form(form("refresh_token", "revoked", &credentials.client_secret))
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DrChronoError::ReauthorizationRequired { .. }),
        "{error:?}"
    );
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    // The secret never lands in the context.
    let payload = error.context().request_payload.as_deref().unwrap();
    assert!(!payload.contains(&credentials.client_secret), "{payload}");
    assert!(payload.contains("client_secret=REDACT"), "{payload}");

    let error = Call::new(Method::POST, sim.token_url())
        .form(form("refresh_token", &credentials.refresh_token, "wrong"))
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DrChronoError::InvalidClient { .. }),
        "{error:?}"
    );

    let error = Call::new(Method::POST, sim.token_url())
        .form(form(
            "password",
            &credentials.refresh_token,
            &credentials.client_secret,
        ))
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DrChronoError::OAuth { error, .. } if error == "unsupported_grant_type"),
        "{error:?}"
    );
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
}

#[tokio::test]
async fn unauthorized_401_kinds() {
    let (sim, token) = sim(SimConfig::default()).await;
    let client = client();
    let url = api(&sim, "/api/users/current");
    let kind = |error: DrChronoError| match error {
        DrChronoError::Unauthorized {
            kind,
            replay_with_current_token: false,
            persisted_after_refresh: false,
            ..
        } => kind,
        other => panic!("{other:?}"),
    };
    let missing = Call::new(Method::GET, url.clone())
        .send(&client)
        .await
        .unwrap_err();
    assert_eq!(kind(missing), UnauthorizedKind::CredentialsNotProvided);
    let invalid = Call::new(Method::GET, url.clone())
        .token("not-a-token")
        .send(&client)
        .await
        .unwrap_err();
    assert_eq!(kind(invalid), UnauthorizedKind::TokenInvalid);
    // Re-authorising revokes the earlier token.
    sim.simulator().reauthorize(None);
    let revoked = Call::new(Method::GET, url)
        .token(&token)
        .send(&client)
        .await
        .unwrap_err();
    assert_eq!(kind(revoked), UnauthorizedKind::TokenInvalid);

    // Tokens that expire at once.
    let (expiring, token) = self::sim(SimConfig::default().token_lifetime(Duration::ZERO)).await;
    let expired = Call::new(Method::GET, api(&expiring, "/api/users/current"))
        .token(&token)
        .send(&client)
        .await
        .unwrap_err();
    assert_eq!(kind(expired), UnauthorizedKind::TokenExpired);
}

#[tokio::test]
async fn forbidden_403_names_the_scopes() {
    let (sim, _) = sim(SimConfig::default()).await;
    let token = sim
        .simulator()
        .reauthorize(Some("patients:read"))
        .access_token;
    let error = Call::new(Method::POST, api(&sim, "/api/appointments"))
        .token(&token)
        .json(PHI_PAYLOAD)
        .send(&client())
        .await
        .unwrap_err();
    let DrChronoError::Forbidden {
        detail,
        required_scopes,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(detail, "You do not have permission to perform this action.");
    assert_eq!(
        required_scopes.unwrap(),
        [
            "calendar:read",
            "calendar:write",
            "clinical:read",
            "clinical:write"
        ]
    );
    assert!(error.to_string().contains("Staff Permissions"));
}

#[tokio::test]
async fn not_found_404_and_method_not_allowed_405() {
    let (sim, token) = sim(SimConfig::default()).await;
    let client = client();
    let error = Call::new(Method::GET, api(&sim, "/api/patients/999999"))
        .token(&token)
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DrChronoError::NotFound { detail: Some(d), .. } if d == "Not found."),
        "{error:?}"
    );
    let error = Call::new(Method::PATCH, api(&sim, "/api/patients?since=2024-06-11"))
        .token(&token)
        .json("{}")
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            DrChronoError::MethodNotAllowed { method, detail, .. }
                if method == Method::PATCH && detail == "Method \"PATCH\" not allowed."
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn conflict_409_and_a_phi_free_report() {
    let (sim, token) = sim(SimConfig::default()).await;
    let client = client();
    let created = Call::new(Method::POST, api(&sim, "/api/appointments"))
        .token(&token)
        .json(PHI_PAYLOAD)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(created, StatusCode::CREATED);
    let error = Call::new(Method::POST, api(&sim, "/api/appointments"))
        .token(&token)
        .json(PHI_PAYLOAD)
        .send(&client)
        .await
        .unwrap_err();
    let DrChronoError::AppointmentConflict { overlapping_id, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(*overlapping_id, Some(drchrono_sim::FIRST_APPOINTMENT_ID));
    assert!(error.to_string().contains("Allow Exam Room Overlaps"));

    let report = SupportReport::from(&error)
        .application("Acme Scheduler")
        .api_user("dr_smith");
    let email = report.to_string();
    let json = serde_json::to_string(&report).unwrap();
    for text in [&email, &json, &format!("{error:?}"), &error.to_string()] {
        for phi in PHI {
            assert!(!text.contains(phi), "{phi} leaked: {text}");
        }
    }
    assert!(email.contains(&format!("POST {}/api/appointments", sim.base_url())));
    assert!(email.contains(r#""first_name":"REDACT""#), "{email}");
    assert!(email.contains("409 Conflict"));
    assert!(email.contains("Appointment overlaps with 323351400"));
}

#[tokio::test]
async fn throttled_429_waits_from_retry_after() {
    let (sim, token) = sim(SimConfig::default().max_per_second(1)).await;
    let client = client();
    let url = api(&sim, "/api/users/current");
    Call::new(Method::GET, url.clone())
        .token(&token)
        .send(&client)
        .await
        .unwrap();
    let before = tokio::time::Instant::now();
    let error = Call::new(Method::GET, url)
        .token(&token)
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DrChronoError::Throttled { .. }),
        "{error:?}"
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    let available_at = error.available_at().unwrap();
    assert!(available_at >= before + Duration::from_secs(1));
    assert!(available_at <= tokio::time::Instant::now() + Duration::from_secs(1));
    assert!(error.is_retryable());
}

#[tokio::test]
async fn server_errors_5xx_with_html_and_json_bodies() {
    let (sim, token) = sim(SimConfig::default()).await;
    let client = client();
    let statuses = [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ];
    sim.simulator().fail_next_api(statuses);
    for expected in statuses {
        let error = Call::new(Method::POST, api(&sim, "/api/appointments"))
            .token(&token)
            .json(PHI_PAYLOAD)
            .send(&client)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DrChronoError::Server { status, .. } if *status == expected),
            "{error:?}"
        );
        assert!(error.is_retryable());
        let snippet = error.context().body_snippet.as_deref().unwrap();
        if expected == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                snippet.contains("Service temporarily unavailable"),
                "{snippet}"
            );
        } else {
            assert!(snippet.starts_with("<html body, "), "{snippet}");
        }
        let email = SupportReport::from(&error).to_string();
        for phi in PHI {
            assert!(!email.contains(phi), "{phi} leaked: {email}");
        }
        assert!(email.contains(&expected.to_string()));
    }
}

#[tokio::test]
async fn connection_refused_is_not_sent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = Call::new(Method::POST, format!("http://{addr}/api/appointments"))
        .json(PHI_PAYLOAD)
        .send(&client())
        .await
        .unwrap_err();
    assert!(
        matches!(error, DrChronoError::Transport { not_sent: true, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}
