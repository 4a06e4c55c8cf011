//! The HTTP surface: DrChrono's token endpoint, the `/api/*` resources, and `/sim/*`.
//!
//! Every `/api/*` request goes through the order Django REST Framework uses: the URL is
//! resolved (Django's HTML 404 page when nothing matches), then authentication (401), permissions (403) and
//! throttling (429); only then does the view run (405 for a wrong method, 404 for a missing
//! object, 400/409 from validation). Every answer of a DRF view carries `Allow` with the
//! methods of its route, as DRF's `APIView` sets it; `HEAD` runs the `GET` handler (axum
//! drops the body) and `OPTIONS` answers DRF's metadata. The token endpoint and `/sim/*` are
//! plain Django views: 405 and `OPTIONS` with `Allow`, as Django's `View` answers them.
//!
//! Timing ([`SimConfig::token_delay`], [`SimConfig::latency`]): the token endpoints wait
//! *before* taking the state lock, so a grant takes effect when it is answered; `/api/*`
//! does all its work under the lock when the request arrives and waits *after*, so a
//! request is counted at its arrival.
//!
//! [`Simulator::router`] is defined here, beside the handlers it mounts: this module
//! depends on `simulator` (the state), never the other way round.
//!
//! [`SimConfig::token_delay`]: crate::SimConfig::token_delay
//! [`SimConfig::latency`]: crate::SimConfig::latency

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use rand::RngExt;
use serde_json::{Map, Value, json};

use crate::data::{Created, FieldErrors, Practice};
use crate::django;
use crate::pages::{self, PageRequest};
use crate::simulator::Simulator;
use crate::throttle::Rule;
use crate::tokens::{DEFAULT_USER, RefreshError, Rejection};

impl Simulator {
    /// The router serving the simulated API. It is a tower `Service`, usable as the
    /// transport itself in tests that need no socket.
    pub fn router(&self) -> Router {
        router(self.clone())
    }
}

fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/o/token/", django_view(post(token), "POST, OPTIONS"))
        .route(
            "/sim/reauthorize",
            django_view(post(reauthorize), "POST, OPTIONS"),
        )
        .route("/sim/stats", django_view(get(stats), "GET, HEAD, OPTIONS"))
        .fallback(api)
        .with_state(sim)
}

/// A plain Django view around `handlers`: `OPTIONS` is 200 and any method without a handler
/// 405, both with `allow` (the handlers' methods, `HEAD` beside `GET`, and `OPTIONS`, in
/// Django's order) in `Allow`. Neither waits [`SimConfig::token_delay`]: they hash no secret.
///
/// [`SimConfig::token_delay`]: crate::SimConfig::token_delay
fn django_view(handlers: MethodRouter<Simulator>, allow: &'static str) -> MethodRouter<Simulator> {
    handlers
        .options(move || async move { django::options(allow) })
        .fallback(move || async move { django::method_not_allowed(allow) })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn detail(status: StatusCode, text: &str) -> Response {
    json_response(status, &json!({ "detail": text }))
}

/// DRF's 404 for a missing object under a known route (`Http404` in `get_object`). A URL
/// no route matches gets Django's HTML page instead ([`django::not_found`]).
fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not found.")
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    let mut response = json_response(status, &json!({ "error": code }));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What a 5xx looks like: Django's page for 500, DRF's JSON for 503, the gateway's HTML for
/// 502 and 504.
fn fault(status: StatusCode) -> Response {
    let html = |body: String| {
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        response
    };
    match status.as_u16() {
        502 => html(
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 \
             Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
                .to_owned(),
        ),
        504 => html(
            "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center>\
             <h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n\
             </html>\r\n"
                .to_owned(),
        ),
        503 => detail(status, "Service temporarily unavailable, try again later."),
        500 => html(django::error_page("Server Error (500)", "")),
        _ => detail(status, "A server error occurred."),
    }
}

/// Waits `delay` on tokio's clock; a zero delay returns at once, with no timer.
async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

async fn read_body(sim: &Simulator, body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, sim.inner.config.max_body_bytes)
        .await
        .map_err(|_| detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large."))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers).starts_with("application/x-www-form-urlencoded")
}

/// Form fields; a body that is not a form reads as no fields, as Django's `request.POST`.
fn form(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    if !is_form(headers) {
        return Vec::new();
    }
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// DRF's parsers: JSON or form data into an object; other media types are refused.
#[expect(
    clippy::result_large_err,
    reason = "the error is the answer the handler returns at once"
)]
fn parse_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Response> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    let media = content_type(headers);
    if media.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => {
                let kind = match other {
                    Value::Array(_) => "list",
                    Value::String(_) => "str",
                    Value::Number(n) if n.is_f64() => "float",
                    Value::Number(_) => "int",
                    Value::Bool(_) => "bool",
                    _ => "NoneType",
                };
                let message = format!("Invalid data. Expected a dictionary, but got {kind}.");
                Err(json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "non_field_errors": [message] }),
                ))
            }
            Err(e) => Err(detail(
                StatusCode::BAD_REQUEST,
                &format!("JSON parse error - {e}"),
            )),
        }
    } else if is_form(headers) {
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| detail(StatusCode::BAD_REQUEST, "Malformed form data."))?;
        Ok(fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    } else {
        let media = media.split(';').next().unwrap_or("").trim();
        Err(detail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Unsupported media type \"{media}\" in request."),
        ))
    }
}

/// Reads a request body whole and parses it as DRF would.
async fn read_object(
    sim: &Simulator,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, Response> {
    let body = read_body(sim, body).await?;
    parse_object(headers, &body)
}

async fn token(State(sim): State<Simulator>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = read_body(&sim, body).await;
    // The grant is decided after the delay, under the lock: until then the old tokens stand.
    wait(sim.inner.config.token_delay).await;
    let body = match body {
        Ok(body) => body,
        Err(response) => return response,
    };
    let inner = &sim.inner;
    let now = inner.clock.now();
    let mut state = inner.state();
    let state = &mut *state;
    if let Some(status) = state.forced_token.pop_front() {
        state.stats.faults += 1;
        return fault(status);
    }
    let fields = form(&parts.headers, &body);
    if field(&fields, "grant_type") != Some("refresh_token") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let credentials = &inner.credentials;
    if field(&fields, "client_id") != Some(credentials.client_id.as_str())
        || field(&fields, "client_secret") != Some(credentials.client_secret.as_str())
    {
        state.stats.invalid_client += 1;
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let Some(refresh_token) = field(&fields, "refresh_token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    match state
        .tokens
        .refresh(&mut state.token_rng, now, refresh_token)
    {
        Ok(tokens) => {
            state.stats.token_refreshes += 1;
            let mut response = json_response(StatusCode::OK, &json!(tokens));
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(RefreshError::InvalidGrant) => {
            state.stats.invalid_grant += 1;
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant")
        }
    }
}

async fn reauthorize(State(sim): State<Simulator>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = read_body(&sim, body).await;
    // As the token endpoint: the grant, which revokes the earlier tokens, ends the delay.
    wait(sim.inner.config.token_delay).await;
    let body = match body {
        Ok(body) => body,
        Err(response) => return response,
    };
    let fields = form(&parts.headers, &body);
    let credentials = &sim.inner.credentials;
    if field(&fields, "client_id") != Some(credentials.client_id.as_str())
        || field(&fields, "client_secret") != Some(credentials.client_secret.as_str())
    {
        sim.inner.state().stats.invalid_client += 1;
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let scope = field(&fields, "scope").filter(|s| !s.trim().is_empty());
    let user = field(&fields, "username")
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(DEFAULT_USER);
    json_response(StatusCode::OK, &json!(sim.authorize_user(user, scope)))
}

async fn stats(State(sim): State<Simulator>) -> Response {
    json_response(StatusCode::OK, &json!(sim.stats()))
}

/// The resources the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CurrentUser,
    Patients,
    Patient(u64),
    Appointments,
    Appointment(u64),
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/api/")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = rest.split('/');
        let route = match (segments.next()?, segments.next()) {
            ("users", Some("current")) => Self::CurrentUser,
            ("patients", None) => Self::Patients,
            ("patients", Some(id)) => Self::Patient(id.parse().ok()?),
            ("appointments", None) => Self::Appointments,
            ("appointments", Some(id)) => Self::Appointment(id.parse().ok()?),
            _ => return None,
        };
        segments.next().is_none().then_some(route)
    }

    /// The methods the view has, as DRF lists them in `Allow`: `http_method_names` order
    /// (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS), `HEAD` wherever `GET` is (Django's
    /// `View.setup`), `OPTIONS` always (`APIView.options`).
    fn allow(self) -> &'static str {
        match self {
            Self::Patients => "GET, POST, HEAD, OPTIONS",
            Self::Appointments => "POST, OPTIONS",
            Self::CurrentUser | Self::Patient(_) | Self::Appointment(_) => "GET, HEAD, OPTIONS",
        }
    }

    /// The view's name in DRF's `OPTIONS` metadata (`get_view_name`: a viewset's name and
    /// its suffix).
    fn name(self) -> &'static str {
        match self {
            Self::CurrentUser => "Current User",
            Self::Patients => "Patient List",
            Self::Patient(_) => "Patient Instance",
            Self::Appointments => "Appointment List",
            Self::Appointment(_) => "Appointment Instance",
        }
    }

    /// The scopes DrChrono's documentation lists for the endpoint and method.
    fn required_scopes(self, method: &Method) -> &'static [&'static str] {
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        match (self, read) {
            (Self::CurrentUser, _) => &["user:read"],
            (Self::Patients | Self::Patient(_), true) => &["patients:read"],
            (Self::Patients | Self::Patient(_), false) => &["patients:read", "patients:write"],
            (Self::Appointments | Self::Appointment(_), true) => &["calendar:read"],
            (Self::Appointments | Self::Appointment(_), false) => &[
                "calendar:read",
                "calendar:write",
                "clinical:read",
                "clinical:write",
            ],
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(rejection: Rejection) -> Response {
    let challenge = match rejection {
        Rejection::Missing => "Bearer realm=\"api\"",
        Rejection::Invalid => {
            "Bearer realm=\"api\",error=\"invalid_token\",error_description=\"The access token is invalid.\""
        }
        Rejection::Expired => {
            "Bearer realm=\"api\",error=\"invalid_token\",error_description=\"The access token has expired.\""
        }
    };
    let mut response = detail(
        StatusCode::UNAUTHORIZED,
        "Authentication credentials were not provided.",
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn throttled(wait_secs: u64) -> Response {
    let unit = if wait_secs == 1 { "second" } else { "seconds" };
    let mut response = detail(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Request was throttled. Expected available in {wait_secs} {unit}."),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(wait_secs));
    response
}

/// Why [`admit`] let no view run.
enum Denied {
    /// DRF's answer (401, 403, 429): the view's `Allow` goes on it.
    Drf(Response),
    /// An injected fault, answered from outside DRF.
    Fault(StatusCode),
}

/// Authentication, permissions, throttling and fault injection, under one lock, in DRF's
/// order. `Ok(user)` lets the view run for the token's user.
#[expect(
    clippy::result_large_err,
    reason = "the error is the answer the handler returns at once"
)]
fn admit(
    sim: &Simulator,
    route: Route,
    method: &Method,
    headers: &HeaderMap,
) -> Result<String, Denied> {
    let inner = &sim.inner;
    let now = inner.clock.now();
    let mut state = inner.state();
    let state = &mut *state;
    let (scopes, user) = match state.tokens.authenticate(bearer(headers), now) {
        Ok(token) => (&token.scope, token.user.clone()),
        Err(rejection) => {
            state.stats.unauthorized += 1;
            return Err(Denied::Drf(unauthorized(rejection)));
        }
    };
    let required = route.required_scopes(method);
    if !required
        .iter()
        .all(|need| scopes.iter().any(|have| have == need))
    {
        state.stats.forbidden += 1;
        return Err(Denied::Drf(detail(
            StatusCode::FORBIDDEN,
            "You do not have permission to perform this action.",
        )));
    }
    let decision = state.throttles.decide(&inner.clock, now);
    if let Some(wait) = decision.wait_secs() {
        for &(rule, _) in &decision.refused {
            match rule {
                Rule::Second => state.stats.throttled.second += 1,
                Rule::Window => state.stats.throttled.window += 1,
                Rule::Hour => state.stats.throttled.hour += 1,
            }
        }
        return Err(Denied::Drf(throttled(wait)));
    }
    state.stats.accepted += 1;
    state.peaks.record(&inner.clock, now);
    // Drawn for every accepted request, so a seed gives the same faults in the same order.
    let roll: f64 = state.fault_rng.random();
    let pick: usize = state.fault_rng.random_range(0..4);
    let forced = state.forced_api.pop_front();
    let random = (roll < inner.config.fault_rate.clamp(0.0, 1.0)).then(|| {
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ][pick]
    });
    if let Some(status) = forced.or(random) {
        state.stats.faults += 1;
        return Err(Denied::Fault(status));
    }
    Ok(user)
}

/// DRF's 405; [`answer_api`] adds the route's `Allow`.
fn method_not_allowed(method: &Method) -> Response {
    detail(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method \"{method}\" not allowed."),
    )
}

/// `OPTIONS` on a DRF view: `SimpleMetadata` (the simulator's views render JSON and parse
/// JSON and form data); [`answer_api`] adds the route's `Allow`.
fn options(route: Route) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "name": route.name(),
            "description": "",
            "renders": ["application/json"],
            "parses": ["application/json", "application/x-www-form-urlencoded"],
        }),
    )
}

fn field_errors(errors: FieldErrors) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!(errors))
}

/// Every path the named routes do not match: `/api/*` answers come [`SimConfig::latency`]
/// after the request was counted; other paths get Django's HTML 404 at once.
///
/// [`SimConfig::latency`]: crate::SimConfig::latency
async fn api(State(sim): State<Simulator>, request: Request) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return django::not_found();
    }
    let response = answer_api(&sim, request).await;
    wait(sim.inner.config.latency).await;
    response
}

/// An `/api/*` request, from counting to its answer.
async fn answer_api(sim: &Simulator, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    sim.inner.state().stats.requests += 1;
    // No URL pattern matches: Django answers before any DRF view runs.
    let Some(route) = Route::parse(parts.uri.path()) else {
        return django::not_found();
    };
    let mut response = match admit(sim, route, &parts.method, &parts.headers) {
        Ok(user) => view(sim, route, &parts, body, &user).await,
        Err(Denied::Drf(response)) => response,
        Err(Denied::Fault(status)) => return fault(status),
    };
    // DRF's `APIView.default_response_headers`, on every answer of the view.
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(route.allow()));
    response
}

/// The view of `route`, for an admitted request of `user`. `HEAD` runs the `GET` handler
/// (Django's `View.setup`; axum sends no body).
async fn view(
    sim: &Simulator,
    route: Route,
    parts: &axum::http::request::Parts,
    body: Body,
    user: &str,
) -> Response {
    let method = &parts.method;
    let handler = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    match (route, handler) {
        (_, Method::OPTIONS) => options(route),
        (Route::CurrentUser, Method::GET) => {
            json_response(StatusCode::OK, &Practice::current_user(user))
        }
        (Route::Patients, Method::GET) => list_patients(sim, parts),
        (Route::Patients, Method::POST) => {
            let object = match read_object(sim, &parts.headers, body).await {
                Ok(object) => object,
                Err(response) => return response,
            };
            match sim.inner.state().practice.create_patient(&object) {
                Ok(patient) => json_response(StatusCode::CREATED, &patient),
                Err(errors) => field_errors(errors),
            }
        }
        (Route::Patient(id), Method::GET) => match sim.inner.state().practice.patient(id) {
            Some(patient) => json_response(StatusCode::OK, &patient),
            None => not_found(),
        },
        (Route::Appointments, Method::POST) => {
            let object = match read_object(sim, &parts.headers, body).await {
                Ok(object) => object,
                Err(response) => return response,
            };
            match sim.inner.state().practice.create_appointment(&object) {
                Created::Ok(appointment) => json_response(StatusCode::CREATED, &appointment),
                Created::Invalid(errors) => field_errors(errors),
                Created::Overlaps(id) => json_response(
                    StatusCode::CONFLICT,
                    &json!({ "error": format!("Appointment overlaps with {id}") }),
                ),
            }
        }
        (Route::Appointment(id), Method::GET) => match sim.inner.state().practice.appointment(id) {
            Some(appointment) => json_response(StatusCode::OK, &appointment),
            None => not_found(),
        },
        _ => method_not_allowed(method),
    }
}

/// `GET /api/patients?page_size=N&cursor=K[&verbose=true]`: DrChrono-style pages of
/// [`PageRequest`]'s size with absolute `next` and `previous` links, the list under
/// [`SimConfig::list_shape`]'s name.
///
/// [`SimConfig::list_shape`]: crate::SimConfig::list_shape
fn list_patients(sim: &Simulator, parts: &axum::http::request::Parts) -> Response {
    let request = PageRequest::parse(parts.uri.query());
    let (page_size, cursor) = (request.page_size, request.cursor);
    let state = sim.inner.state();
    let total = state.practice.patient_count();
    let end = cursor.saturating_add(page_size).min(total);
    let results: Vec<Value> = (cursor.saturating_add(1)..=end)
        .filter_map(|id| state.practice.patient(id))
        .collect();
    drop(state);
    // The absolute form's authority when the request has one (a proxy, or the router used
    // as a transport), else the Host header.
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("localhost");
    let link = |at: u64| request.link(host, "/api/patients", at);
    let next = (end < total).then(|| link(end));
    let previous = (cursor > 0).then(|| link(cursor.saturating_sub(page_size)));
    json_response(
        StatusCode::OK,
        &pages::page(sim.inner.config.list_shape, next, previous, results),
    )
}
