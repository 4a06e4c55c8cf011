//! Paginated lists: the list field's name ([`drchrono_sim::ListShape`]), page sizes and caps
//! as DrChrono documents them, absolute `next` links.

mod support;

use drchrono_sim::ListShape;
use serde_json::Value;
use support::{Http, SimConfig, spawn};

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
