//! No token and no client secret in any `tracing` output (at TRACE) or `Debug` output,
//! through refreshes, retries, store failures, re-authorisation and 401 triage.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use drchrono_classify::ErrorClassifyLayer;
use drchrono_oauth::{
    ClientCredentials, OAuthRefreshLayer, TokenClient, TokenManager, TokenSet, TokenStore,
};
use drchrono_sim::{SimConfig, Simulator};
use http::StatusCode;
use secrecy::ExposeSecret;
use support::{Captured, FlakyStore, ReplayOnce, get};
use tower::retry::Retry;
use tower::{ServiceBuilder, ServiceExt};

/// Every secret the scenario handled, read back from the store after each step.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    async fn collect(&mut self, store: &FlakyStore) {
        if let Some(tokens) = store.load().await.unwrap() {
            self.add(tokens.access_token.expose_secret());
            self.add(tokens.refresh_token.expose_secret());
        }
    }

    fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|known| known == secret) {
            self.0.push(secret.to_owned());
        }
    }

    fn assert_absent(&self, text: &str, what: &str) {
        assert!(
            self.0.len() >= 6,
            "the scenario saw too few secrets: {}",
            self.0.len()
        );
        for secret in &self.0 {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into {what}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_secret_in_tracing_or_debug_output() {
    let captured = Captured::default();
    let _guard = captured.install();

    let sim = Simulator::new(SimConfig::default().token_lifetime(Duration::from_secs(600)));
    let credentials = sim.credentials();
    let mut secrets = Secrets::default();
    secrets.add(&credentials.client_secret);
    secrets.add(&credentials.refresh_token);

    let credentials_value = ClientCredentials::new(
        credentials.client_id.clone(),
        credentials.client_secret.clone(),
    );
    let client = TokenClient::new(sim.router(), credentials_value.clone())
        .token_url("http://sim.test/o/token/".parse().unwrap());
    let store = Arc::new(FlakyStore::default());
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let manager = TokenManager::builder(client.clone())
        .shared_store(store.clone())
        .initial_tokens(TokenSet::from_refresh_token(
            credentials.refresh_token.clone(),
        ))
        .on_reauthorization(move |event| sink.lock().unwrap().push(format!("{event:?}")))
        .build();
    let layer = OAuthRefreshLayer::new(manager.clone());
    let api = Retry::new(
        ReplayOnce::default(),
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(ErrorClassifyLayer::new())
            .service(sim.router()),
    );
    let url = "http://sim.test/api/users/current";
    let mut debug = Vec::new();

    // A refresh after two 503s.
    sim.fail_next_token([StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY]);
    let response = api.clone().oneshot(get(url)).await.unwrap();
    debug.push(format!("{response:?}"));
    secrets.collect(&store).await;

    // A proactive refresh whose save fails, then succeeds.
    tokio::time::advance(Duration::from_secs(590)).await;
    store.fail_saves.store(true, Ordering::SeqCst);
    debug.push(format!("{:?}", api.clone().oneshot(get(url)).await));
    debug.push(format!("{manager:?}"));
    store.fail_saves.store(false, Ordering::SeqCst);
    api.clone().oneshot(get(url)).await.unwrap();
    secrets.collect(&store).await;

    // A forced refresh while a request holds the old token: 401 triage and replay.
    debug.push(format!("{:?}", manager.bearer().await));
    manager.refresh_now().await.unwrap();
    secrets.collect(&store).await;
    api.clone().oneshot(get(url)).await.unwrap();

    // Re-authorisation: invalid_grant, the hook, typed errors; then set_tokens.
    let fresh = sim.reauthorize(None);
    secrets.add(&fresh.access_token);
    secrets.add(&fresh.refresh_token);
    for _ in 0..3 {
        debug.push(format!("{:?}", api.clone().oneshot(get(url)).await));
    }
    debug.push(format!("{:?}", *manager.status().borrow()));
    let expires = SystemTime::now() + Duration::from_secs(fresh.expires_in);
    let pair = TokenSet::new(fresh.access_token, fresh.refresh_token, expires);
    debug.push(format!("{pair:?} {pair:#?}"));
    manager.set_tokens(pair).await.unwrap();
    api.clone().oneshot(get(url)).await.unwrap();
    manager.refresh_now().await.unwrap();
    secrets.collect(&store).await;

    // An access token the server does not know: 401 on the current generation, one
    // refresh, the mark, and the replay.
    let current = store.load().await.unwrap().unwrap();
    let unknown = TokenSet::new(
        "unknown-access-token",
        current.refresh_token.expose_secret().to_owned(),
        SystemTime::now() + Duration::from_secs(600),
    );
    manager.set_tokens(unknown).await.unwrap();
    let before = sim.stats().token_refreshes;
    api.clone().oneshot(get(url)).await.unwrap();
    assert_eq!(sim.stats().token_refreshes, before + 1);
    secrets.collect(&store).await;

    debug.extend([
        format!("{manager:#?}"),
        format!("{layer:?}"),
        format!("{client:?}"),
        format!("{credentials_value:?}"),
        format!("{store:?}"),
        format!("{:?}", store.load().await.unwrap()),
        format!("{:?}", manager.bearer().await),
        format!("{:?}", api.clone().oneshot(get(url))),
        format!("{:?}", events.lock().unwrap()),
    ]);

    let logs = captured.text();
    assert!(logs.contains("token refresh started"), "{logs}");
    assert!(logs.contains("token refresh succeeded"));
    assert!(logs.contains("token endpoint failed transiently"));
    assert!(logs.contains("could not persist the new token pair"));
    assert!(logs.contains("re-authorisation required"));
    assert_eq!(events.lock().unwrap().len(), 1);
    secrets.assert_absent(&logs, "tracing output");
    secrets.assert_absent(&debug.join("\n"), "Debug output");
}
