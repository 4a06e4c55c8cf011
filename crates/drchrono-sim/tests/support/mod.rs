//! A minimal HTTP client for talking to the simulator over a real socket.

#![allow(dead_code, unreachable_pub, unused_imports)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use drchrono_sim::{RunningSimulator, SimConfig, spawn};

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
}

impl Http {
    pub fn new(sim: &RunningSimulator) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.base_url(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).expect("valid request");
        let response = self
            .client
            .request(request)
            .await
            .expect("simulator answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(Method::GET, path, &[("authorization", &auth)], Bytes::new())
            .await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(
            Method::POST,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(fields).expect("encodable form");
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }

    /// The refresh grant with the given refresh token and the simulator's client.
    pub async fn refresh(&self, sim: &RunningSimulator, refresh_token: &str) -> Reply {
        let c = sim.credentials();
        self.post_form(
            "/o/token/",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ],
        )
        .await
    }

    /// A fresh access token from the starting refresh token.
    pub async fn access_token(&self, sim: &RunningSimulator) -> String {
        let reply = self.refresh(sim, &sim.credentials().refresh_token).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.json()["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }
}

/// The simulator's router driven as a tower `Service`, with no socket: for paused-time
/// tests, where only tokio's clock moves.
#[derive(Clone)]
pub struct Direct {
    router: axum::Router,
    pub credentials: drchrono_sim::Credentials,
}

impl Direct {
    pub fn new(sim: &drchrono_sim::Simulator) -> Self {
        Self {
            router: sim.router(),
            credentials: sim.credentials(),
        }
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        use tower::ServiceExt;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .expect("valid request");
        self.send(request).await
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(fields).expect("encodable form");
        let request = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request");
        self.send(request).await
    }

    /// The refresh grant with the given refresh token and the simulator's client.
    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        let c = &self.credentials;
        self.post_form(
            "/o/token/",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ],
        )
        .await
    }
}
