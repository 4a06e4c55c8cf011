//! `DrChronoClient` against the simulator's router, in paused time.

use drchrono_sim::{ListShape, SimConfig, Simulator};
use drchrono_tower::{BuildError, DrChronoClient, DrChronoError, with_page_size};
use futures::TryStreamExt;
use serde_json::{Value, json};

fn client(sim: &Simulator) -> DrChronoClient {
    let c = sim.credentials();
    DrChronoClient::builder()
        .credentials(c.client_id, c.client_secret)
        .refresh_token(c.refresh_token)
        .base_url("https://sim.test")
        .token_url("https://sim.test/o/token/")
        .build_with_transport(sim.router())
        .expect("valid configuration")
}

#[tokio::test(start_paused = true)]
async fn pages_follow_next_links_to_the_end() {
    let sim = Simulator::new(SimConfig::default().patients(23));
    let client = client(&sim);
    let ids: Vec<u64> = client
        .pages::<Value>("/api/patients?page_size=5")
        .map_ok(|p| p["id"].as_u64().unwrap())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, (1..=23).collect::<Vec<_>>());
    // Five pages, plus one token call.
    assert_eq!(sim.stats().accepted, 5);
}

/// DrChrono's prose and DRF name the list field `results`, its API schema `data`: `pages()`
/// reads both, through the same `next` links.
#[tokio::test(start_paused = true)]
async fn pages_read_both_list_shapes() {
    for shape in [ListShape::Results, ListShape::Data] {
        let sim = Simulator::new(SimConfig::default().patients(12).list_shape(shape));
        let client = client(&sim);
        let raw: Value = client.get_json("/api/patients?page_size=5").await.unwrap();
        let field = match shape {
            ListShape::Data => "data",
            _ => "results",
        };
        assert_eq!(raw[field].as_array().map(Vec::len), Some(5), "{raw}");
        let ids: Vec<u64> = client
            .pages::<Value>("/api/patients?page_size=5")
            .map_ok(|p| p["id"].as_u64().unwrap())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(ids, (1..=12).collect::<Vec<_>>(), "{shape:?}");
    }
}

/// A `page_size` over the endpoint's cap is asked for as the cap: 300 patients in pages of
/// 250 (two requests), whatever was asked.
#[tokio::test(start_paused = true)]
async fn a_page_size_over_the_cap_is_asked_for_as_the_cap() {
    let sim = Simulator::new(SimConfig::default().patients(300));
    let client = client(&sim);
    let path = with_page_size("/api/patients", 1000);
    assert_eq!(path, "/api/patients?page_size=250");
    let first: Value = client.get_json(&path).await.unwrap();
    assert_eq!(first["results"].as_array().map(Vec::len), Some(250));
    let before = sim.stats().accepted;
    let all: Vec<Value> = client.pages(&path).try_collect().await.unwrap();
    assert_eq!(all.len(), 300);
    assert_eq!(sim.stats().accepted - before, 2);
}

#[tokio::test(start_paused = true)]
async fn typed_json_and_typed_errors() {
    let sim = Simulator::new(SimConfig::default());
    let client = client(&sim);
    let me: Value = client.get_json("/api/users/current").await.unwrap();
    assert_eq!(me["id"], drchrono_sim::DOCTOR_ID);
    let missing = client.get("/api/patients/999999999").await.unwrap_err();
    assert!(
        matches!(missing, DrChronoError::NotFound { .. }),
        "{missing:?}"
    );
    let not_allowed = client.patch("/api/patients", &json!({})).await.unwrap_err();
    assert!(
        matches!(&not_allowed, DrChronoError::MethodNotAllowed { method, .. } if method == http::Method::PATCH),
        "{not_allowed:?}"
    );
    let invalid = client
        .post("/api/patients", &json!({"first_name": "Ada"}))
        .await
        .unwrap_err();
    match invalid {
        DrChronoError::BadRequest { field_errors, .. } => {
            assert!(field_errors.contains_key("doctor") && field_errors.contains_key("gender"));
        }
        other => panic!("{other:?}"),
    }
    // A body that is not the asked-for type is a Decode error, not a panic.
    let wrong: Result<Vec<u64>, _> = client.get_json("/api/users/current").await;
    assert!(
        matches!(wrong, Err(DrChronoError::Decode { .. })),
        "{wrong:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn absolute_urls_are_kept_and_paths_resolved() {
    let sim = Simulator::new(SimConfig::default());
    let client = client(&sim);
    let via_url = client.get("https://sim.test/api/patients/3").await.unwrap();
    let via_path = client.get("/api/patients/3").await.unwrap();
    assert_eq!(via_url.body(), via_path.body());
}

#[test]
fn configuration_errors_are_typed() {
    let no_credentials = DrChronoClient::builder()
        .refresh_token("rt".to_owned())
        .build();
    assert!(matches!(
        no_credentials,
        Err(BuildError::MissingCredentials)
    ));
    let no_tokens = DrChronoClient::builder()
        .credentials("id", "secret".to_owned())
        .build();
    assert!(matches!(no_tokens, Err(BuildError::MissingTokens)));
    for url in ["not a url", "/relative", "ftp://host/"] {
        let bad = DrChronoClient::builder()
            .credentials("id", "secret".to_owned())
            .refresh_token("rt".to_owned())
            .base_url(url)
            .build();
        assert!(
            matches!(
                bad,
                Err(BuildError::InvalidUrl {
                    setting: "base_url",
                    ..
                })
            ),
            "{url}"
        );
    }
}

#[test]
fn debug_output_never_shows_secrets() {
    let builder = DrChronoClient::builder()
        .credentials("client-id", "very-secret-value".to_owned())
        .refresh_token("refresh-token-value".to_owned())
        .base_url("https://proxy-user:proxy-secret@app.drchrono.com/?key=query-secret");
    let text = format!("{builder:?}");
    assert!(!text.contains("very-secret-value") && !text.contains("refresh-token-value"));
    assert!(
        !text.contains("proxy-secret") && !text.contains("query-secret"),
        "{text}"
    );
}

/// A URL with user information (`https://user:secret@host/`) is refused: it would be sent
/// and printed with every URL built on it. The error shows neither it nor a query.
#[test]
fn urls_with_user_information_are_refused_and_never_shown() {
    let bad = DrChronoClient::builder()
        .credentials("id", "secret".to_owned())
        .refresh_token("rt".to_owned())
        .base_url("https://user:url-secret@app.drchrono.com")
        .build();
    match bad {
        Err(
            error @ BuildError::InvalidUrl {
                setting: "base_url",
                ..
            },
        ) => {
            let text = format!("{error} {error:?}");
            assert!(!text.contains("url-secret"), "{text}");
            assert!(text.contains("https://app.drchrono.com"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A server whose `next` link leads back to a page already read (here: each page names
/// itself, by its absolute URL) ends the listing with a typed error after reading each page
/// once, instead of spending the application's budget on the same pages for ever.
#[tokio::test(start_paused = true)]
async fn pages_stop_at_a_next_link_back_to_a_page_already_read() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    let sim = Simulator::new(SimConfig::default().patients(12));
    let router = sim.router();
    let looping = tower::service_fn(move |request: http::Request<Full<Bytes>>| {
        let router = router.clone();
        async move {
            if request.uri().path() == "/api/patients" {
                let page = json!({
                    "next": "https://sim.test/api/patients?cursor=abc",
                    "results": [{"id": 1}, {"id": 2}],
                });
                return Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(page.to_string())))
                        .unwrap(),
                );
            }
            let response = router.oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            Ok(http::Response::from_parts(parts, Full::new(bytes)))
        }
    });
    let c = sim.credentials();
    let client = DrChronoClient::builder()
        .credentials(c.client_id, c.client_secret)
        .refresh_token(c.refresh_token)
        .base_url("https://sim.test")
        .token_url("https://sim.test/o/token/")
        .build_with_transport(looping)
        .unwrap();
    let mut ids = Vec::new();
    let mut pages = std::pin::pin!(client.pages::<Value>("/api/patients?page_size=2"));
    let error = loop {
        match pages.try_next().await {
            Ok(Some(item)) => ids.push(item["id"].as_u64().unwrap()),
            Ok(None) => panic!("the listing ended"),
            Err(error) => break error,
        }
    };
    // The first page, then the page it names, whose `next` is itself.
    assert_eq!(ids, [1, 2, 1, 2]);
    match error {
        DrChronoError::Decode { source, .. } => {
            let repeated = source
                .downcast_ref::<drchrono_tower::RepeatedPage>()
                .expect("a repeated page");
            assert_eq!(repeated.path, "/api/patients");
            assert!(!source.to_string().contains("cursor"), "{source}");
        }
        other => panic!("unexpected {other:?}"),
    }
}
