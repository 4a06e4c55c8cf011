//! Paginated lists: the list field's name ([`drchrono_sim::ListShape`]), page sizes and caps
//! as DrChrono documents them, absolute `next` links.

mod support;

use drchrono_sim::ListShape;
use serde_json::Value;
use support::{Http, SimConfig, spawn};

/// `patients` patients, and no throttling in the way of many pages.
fn unthrottled(patients: u64) -> SimConfig {
    SimConfig::default()
        .patients(patients)
        .max_per_second(10_000)
        .max_per_window(10_000)
        .max_per_hour(10_000)
}

/// The keys of a page, sorted.
fn keys(page: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = page
        .as_object()
        .expect("a page is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Every id of every page from `path` on, following `next`; the pages' lengths beside.
async fn walk(http: &Http, token: &str, path: &str, field: &str) -> (Vec<u64>, Vec<usize>) {
    let (mut ids, mut lengths) = (Vec::new(), Vec::new());
    let mut next = Some(path.to_owned());
    while let Some(path) = next.take() {
        let page = http.get(&path, token).await.json();
        let items = page[field].as_array().expect("a list of items");
        lengths.push(items.len());
        ids.extend(items.iter().map(|p| p["id"].as_u64().unwrap()));
        next = page["next"].as_str().map(|link| {
            link.strip_prefix(&http.base)
                .expect("absolute link to the simulator")
                .to_owned()
        });
    }
    (ids, lengths)
}

#[tokio::test]
async fn results_by_default() {
    let sim = spawn(SimConfig::default().patients(5)).await.unwrap();
    assert_eq!(
        sim.simulator().config().get_list_shape(),
        ListShape::Results
    );
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let page = http.get("/api/patients?page_size=2", &token).await.json();
    assert_eq!(keys(&page), ["next", "previous", "results"]);
    let (ids, _) = walk(&http, &token, "/api/patients?page_size=2", "results").await;
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn data_names_the_list_as_drchronos_schema_does() {
    let config = SimConfig::default().patients(5).list_shape(ListShape::Data);
    let sim = spawn(config).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let first = http.get("/api/patients?page_size=2", &token).await.json();
    assert_eq!(keys(&first), ["data", "next", "previous"]);
    assert_eq!(first["previous"], Value::Null);
    let last = http
        .get("/api/patients?page_size=2&cursor=4", &token)
        .await
        .json();
    assert_eq!(keys(&last), ["data", "next", "previous"]);
    assert_eq!(last["next"], Value::Null);
    assert!(last["previous"].is_string());
    // Same links, same items: only the field's name differs.
    let (ids, lengths) = walk(&http, &token, "/api/patients?page_size=2", "data").await;
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(lengths, [2, 2, 1]);
}

/// The length of the first page of `path`, and its `next` link's query.
async fn first_page(http: &Http, token: &str, path: &str) -> (usize, String) {
    let page = http.get(path, token).await.json();
    let length = page["results"].as_array().expect("a list").len();
    let query = page["next"]
        .as_str()
        .and_then(|link| link.split_once('?'))
        .map(|(_, query)| query.to_owned())
        .unwrap_or_default();
    (length, query)
}

#[tokio::test]
async fn pages_hold_250_by_default_and_page_size_is_cut_off_there() {
    let sim = spawn(unthrottled(600)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let (ids, lengths) = walk(&http, &token, "/api/patients", "results").await;
    assert_eq!(ids, (1..=600).collect::<Vec<_>>());
    assert_eq!(lengths, [250, 250, 100]);
    for (query, size) in [
        ("", 250),
        ("?page_size=7", 7),
        ("?page_size=250", 250),
        ("?page_size=251", 250),
        ("?page_size=1000", 250),
        ("?page_size=%2B30", 30),
        ("?page_size=99999999999999999999999", 250),
        // Not a positive integer: DRF falls back to the default.
        ("?page_size=0", 250),
        ("?page_size=-5", 250),
        ("?page_size=2.5", 250),
        ("?page_size=abc", 250),
        ("?page_size=", 250),
    ] {
        let (length, next) = first_page(&http, &token, &format!("/api/patients{query}")).await;
        assert_eq!(length, size, "{query}");
        // The link carries the size served, not the size asked for.
        assert_eq!(next, format!("cursor={size}&page_size={size}"), "{query}");
    }
}

#[tokio::test]
async fn verbose_pages_hold_50_and_the_links_stay_verbose() {
    let sim = spawn(unthrottled(120)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let (ids, lengths) = walk(&http, &token, "/api/patients?verbose=true", "results").await;
    assert_eq!(ids, (1..=120).collect::<Vec<_>>());
    assert_eq!(lengths, [50, 50, 20]);
    for (query, size, verbose) in [
        ("?verbose=true", 50, true),
        ("?verbose=True", 50, true),
        ("?verbose=true&page_size=100", 50, true),
        ("?verbose=true&page_size=10", 10, true),
        ("?verbose=false&page_size=100", 100, false),
        ("?verbose=false", 120, false),
    ] {
        let (length, next) = first_page(&http, &token, &format!("/api/patients{query}")).await;
        assert_eq!(length, size, "{query}");
        let expected = match (size < 120, verbose) {
            (false, _) => String::new(),
            (true, true) => format!("cursor={size}&page_size={size}&verbose=true"),
            (true, false) => format!("cursor={size}&page_size={size}"),
        };
        assert_eq!(next, expected, "{query}");
    }
    // `previous` keeps it too.
    let page = http
        .get("/api/patients?verbose=true&cursor=100", &token)
        .await
        .json();
    let previous = page["previous"].as_str().unwrap();
    assert_eq!(
        previous,
        format!(
            "{}/api/patients?cursor=50&page_size=50&verbose=true",
            http.base
        )
    );
}
