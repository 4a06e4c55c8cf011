//! `DrChronoApp`: several practices of one application against the simulator's router, in
//! paused time. The simulator keeps one token family per user and answers
//! `/api/users/current` with the token's user, so every answer says whose token was sent.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use drchrono_sim::{SimConfig, Simulator, TokenResponse};
use drchrono_tower::oauth::{
    AuthStatus, MemoryTokenStore, ReauthorizationReason, TokenSet, TokenStore,
};
use drchrono_tower::ratelimit::{RuleKind, Tenant};
use drchrono_tower::{BuildError, DrChronoApp, DrChronoAppBuilder, DrChronoClient, DrChronoError};
use http::Request;
use http::header::AUTHORIZATION;
use http_body_util::Full;
use serde_json::Value;
use tower::ServiceExt;

const BASE: &str = "https://sim.test";
const TOKEN_URL: &str = "https://sim.test/o/token/";

/// One `/api/*` request as it reached the server: the tenant it carried and its token.
#[derive(Debug, Clone)]
struct Sent {
    tenant: Option<Tenant>,
    authorization: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<Sent>>>);

impl Log {
    fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }

    /// Every API request carried a tenant, and every token was sent under one tenant only.
    /// Returns how many distinct tokens each tenant sent.
    fn tokens_per_tenant(&self) -> HashMap<String, usize> {
        let mut tenants_of: HashMap<String, HashSet<String>> = HashMap::new();
        let mut tokens_of: HashMap<String, HashSet<String>> = HashMap::new();
        for sent in self.sent() {
            let tenant = sent.tenant.expect("every API request carries its tenant");
            let token = sent
                .authorization
                .expect("every API request carries a token");
            tenants_of
                .entry(token.clone())
                .or_default()
                .insert(tenant.to_string());
            tokens_of
                .entry(tenant.to_string())
                .or_default()
                .insert(token);
        }
        for tenants in tenants_of.values() {
            assert_eq!(tenants.len(), 1, "a token was sent by {tenants:?}");
        }
        tokens_of.into_iter().map(|(t, s)| (t, s.len())).collect()
    }
}

/// An application over the simulator's router, configured by `configure`, that records
/// every `/api/*` request in `log`.
fn app(
    sim: &Simulator,
    log: &Log,
    configure: impl FnOnce(DrChronoAppBuilder) -> DrChronoAppBuilder,
) -> DrChronoApp {
    let c = sim.credentials();
    let log = log.clone();
    let transport = sim
        .router()
        .map_request(move |request: Request<Full<Bytes>>| {
            if request.uri().path().starts_with("/api/") {
                log.0.lock().unwrap().push(Sent {
                    tenant: Tenant::of(&request).cloned(),
                    authorization: request
                        .headers()
                        .get(AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_owned()),
                });
            }
            request
        });
    let builder = DrChronoApp::builder()
        .credentials(c.client_id, c.client_secret)
        .base_url(BASE)
        .token_url(TOKEN_URL);
    configure(builder)
        .build_with_transport(transport)
        .expect("valid configuration")
}

async fn whoami(client: &DrChronoClient) -> String {
    let me: Value = client.get_json("/api/users/current").await.unwrap();
    me["username"].as_str().unwrap().to_owned()
}

fn pair(grant: TokenResponse) -> TokenSet {
    let now = SystemTime::now();
    TokenSet::new(
        grant.access_token,
        grant.refresh_token,
        now + Duration::from_secs(grant.expires_in),
    )
    .with_issued_at(now)
}

/// The acceptance test of issue 16: two practices of one application each send only their
/// own user's token, refresh only their own family, and one practice's re-authorisation
/// leaves the other's tokens alone.
#[tokio::test(start_paused = true)]
async fn two_practices_keep_their_own_tokens_and_reauthorise_alone() {
    // 600 s tokens: each is refreshed 60 s before it expires.
    let sim = Simulator::new(SimConfig::default().token_lifetime(Duration::from_secs(600)));
    let alice_grant = sim.authorize_user("alice", None);
    let bob_grant = sim.authorize_user("bob", None);
    let log = Log::default();
    let app_events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&app_events);
    let app = app(&sim, &log, |app| {
        app.on_reauthorization(move |user, event| {
            sink.lock().unwrap().push((user.to_string(), event.reason));
        })
    });
    let (alice_hooks, bob_hooks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, b) = (Arc::clone(&alice_hooks), Arc::clone(&bob_hooks));
    let alice = app
        .user("alice")
        .refresh_token(alice_grant.refresh_token)
        .on_reauthorization(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let bob = app
        .user("bob")
        .refresh_token(bob_grant.refresh_token)
        .on_reauthorization(move |_| {
            b.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    assert_eq!(alice.tenant().map(Tenant::as_str), Some("alice"));
    assert_eq!(bob.tenant().map(Tenant::as_str), Some("bob"));

    // Three token lifetimes: the first request of each refreshes the user's own family.
    for round in 1..=3 {
        if round > 1 {
            tokio::time::advance(Duration::from_secs(550)).await;
        }
        for _ in 0..3 {
            assert_eq!(whoami(&alice).await, "alice");
            assert_eq!(whoami(&bob).await, "bob");
        }
        assert_eq!(sim.token_refreshes_of("alice"), round);
        assert_eq!(sim.token_refreshes_of("bob"), round);
    }
    let stats = sim.stats();
    assert_eq!(
        (
            stats.token_refreshes,
            stats.unauthorized,
            stats.invalid_grant
        ),
        (6, 0, 0)
    );
    assert_eq!(
        log.tokens_per_tenant(),
        HashMap::from([("alice".to_owned(), 3), ("bob".to_owned(), 3)])
    );

    // Alice authorises the application again: her earlier tokens are revoked, Bob's are not.
    let fresh = sim.authorize_user("alice", None);
    let bob_generation = bob.layer().token_manager().generation();
    let refused = alice.get("/api/users/current").await.unwrap_err();
    assert!(
        matches!(refused, DrChronoError::ReauthorizationRequired { .. }),
        "{refused:?}"
    );
    assert_eq!(
        *app_events.lock().unwrap(),
        [("alice".to_owned(), ReauthorizationReason::InvalidGrant)]
    );
    assert_eq!(alice_hooks.load(Ordering::SeqCst), 1);
    assert!(matches!(
        *alice.layer().token_manager().status().borrow(),
        AuthStatus::ReauthorizationRequired { .. }
    ));

    // Bob goes on as before: no refresh, no error, no hook.
    for _ in 0..3 {
        assert_eq!(whoami(&bob).await, "bob");
    }
    assert_eq!(sim.token_refreshes_of("bob"), 3);
    assert_eq!(bob.layer().token_manager().generation(), bob_generation);
    assert_eq!(bob_hooks.load(Ordering::SeqCst), 0);
    assert_eq!(
        sim.stats().unauthorized,
        1,
        "only Alice's revoked token was refused"
    );

    // Alice's new pair goes to her client, which works again; Bob's is untouched.
    alice
        .layer()
        .token_manager()
        .set_tokens(pair(fresh))
        .await
        .unwrap();
    assert_eq!(whoami(&alice).await, "alice");
    assert_eq!(sim.token_refreshes_of("alice"), 3);

    // Both families go on rotating, each on its own.
    tokio::time::advance(Duration::from_secs(550)).await;
    assert_eq!(whoami(&alice).await, "alice");
    assert_eq!(whoami(&bob).await, "bob");
    assert_eq!(sim.token_refreshes_of("alice"), 4);
    assert_eq!(sim.token_refreshes_of("bob"), 4);
    assert_eq!(bob_hooks.load(Ordering::SeqCst), 0);
    assert_eq!(app_events.lock().unwrap().len(), 1);
    // Alice: three tokens, the revoked one, the re-authorised one, its rotation.
    assert_eq!(
        log.tokens_per_tenant(),
        HashMap::from([("alice".to_owned(), 5), ("bob".to_owned(), 4)])
    );
}

/// The tenant is set outside the retry layer: a retried attempt carries it too.
#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_tenant() {
    let sim = Simulator::new(SimConfig::default());
    let grant = sim.authorize_user("alice", None);
    let log = Log::default();
    let app = app(&sim, &log, |app| app);
    let alice = app
        .user("alice")
        .refresh_token(grant.refresh_token)
        .build()
        .unwrap();
    sim.fail_next_api([http::StatusCode::SERVICE_UNAVAILABLE]);
    assert_eq!(whoami(&alice).await, "alice");
    let sent = log.sent();
    assert_eq!(sent.len(), 2, "one 503, one retry");
    for attempt in &sent {
        assert_eq!(attempt.tenant.as_ref().map(Tenant::as_str), Some("alice"));
    }

    // A client built alone names no tenant unless asked to.
    let c = sim.credentials();
    let plain = |tenant: Option<&str>, log: &Log| {
        let mut builder = DrChronoClient::builder()
            .credentials(c.client_id.clone(), c.client_secret.clone())
            .refresh_token(sim.reauthorize(None).refresh_token)
            .base_url(BASE)
            .token_url(TOKEN_URL);
        if let Some(tenant) = tenant {
            builder = builder.tenant(tenant);
        }
        let log = log.clone();
        let transport = sim
            .router()
            .map_request(move |request: Request<Full<Bytes>>| {
                if request.uri().path().starts_with("/api/") {
                    let tenant = Tenant::of(&request).cloned();
                    log.0.lock().unwrap().push(Sent {
                        tenant,
                        authorization: None,
                    });
                }
                request
            });
        builder.build_with_transport(transport).unwrap()
    };
    let (unnamed, named) = (Log::default(), Log::default());
    let client = plain(None, &unnamed);
    assert_eq!(client.tenant(), None);
    client.get("/api/users/current").await.unwrap();
    assert_eq!(unnamed.sent()[0].tenant, None);
    let client = plain(Some("practice-17"), &named);
    assert_eq!(client.tenant().map(Tenant::as_str), Some("practice-17"));
    client.get("/api/users/current").await.unwrap();
    assert_eq!(named.sent()[0].tenant, Some(Tenant::new("practice-17")));
}

/// Many concurrent requests of two practices: all succeed, each with its own user, and all
/// of them were charged to the application's one budget.
#[tokio::test(start_paused = true)]
async fn concurrent_requests_of_two_practices_share_one_budget() {
    let sim = Simulator::new(SimConfig::default());
    let log = Log::default();
    let app = app(&sim, &log, |app| app);
    let clients = ["alice", "bob"].map(|user| {
        let grant = sim.authorize_user(user, None);
        app.user(user)
            .refresh_token(grant.refresh_token)
            .build()
            .unwrap()
    });
    let mut tasks = Vec::new();
    for client in &clients {
        for _ in 0..20 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let user = client.tenant().unwrap().to_string();
                (user, whoami(&client).await)
            }));
        }
    }
    for task in tasks {
        let (user, answered) = task.await.unwrap();
        assert_eq!(user, answered);
    }
    let stats = sim.stats();
    assert_eq!(stats.accepted, 40);
    assert_eq!(stats.throttled.total(), 0, "{stats:?}");
    assert!(stats.peak_second <= 9, "{stats:?}");
    assert_eq!(
        (
            sim.token_refreshes_of("alice"),
            sim.token_refreshes_of("bob")
        ),
        (1, 1),
        "one refresh per family, however many requests waited for it"
    );
    // The application's limiter counted both practices' requests: 40 of the 10-minute 290.
    let status = app.limiter().status().await.unwrap();
    let window = status
        .rules
        .iter()
        .find(|r| r.rule.kind() == RuleKind::Sliding && r.rule.period() == Duration::from_secs(600))
        .unwrap();
    assert_eq!(window.remaining, 290 - 40);
    // And per tenant: each practice's part of it.
    let mut served: Vec<_> = app
        .limiter()
        .tenants()
        .into_iter()
        .map(|t| (t.tenant.map(|t| t.to_string()), t.served))
        .collect();
    served.sort();
    assert_eq!(
        served,
        [(Some("alice".to_owned()), 20), (Some("bob".to_owned()), 20)]
    );
    assert_eq!(
        log.tokens_per_tenant(),
        HashMap::from([("alice".to_owned(), 1), ("bob".to_owned(), 1)])
    );
}

/// `token_stores` gives each user a store of its own; a later application (a restart) finds
/// each user's rotated pair there.
#[tokio::test(start_paused = true)]
async fn each_user_keeps_tokens_in_its_own_store() {
    let sim = Simulator::new(SimConfig::default().token_lifetime(Duration::from_secs(600)));
    let stores: Arc<Mutex<HashMap<Tenant, Arc<MemoryTokenStore>>>> = Arc::default();
    let per_user = {
        let stores = Arc::clone(&stores);
        move |user: &Tenant| -> Arc<dyn TokenStore> {
            stores
                .lock()
                .unwrap()
                .entry(user.clone())
                .or_default()
                .clone()
        }
    };
    let log = Log::default();
    let first = app(&sim, &log, |app| app.token_stores(per_user.clone()));
    let alice = first
        .user("alice")
        .refresh_token(sim.authorize_user("alice", None).refresh_token)
        .build()
        .unwrap();
    let bob = first
        .user("bob")
        .refresh_token(sim.authorize_user("bob", None).refresh_token)
        .build()
        .unwrap();
    assert_eq!(whoami(&alice).await, "alice");
    assert_eq!(whoami(&bob).await, "bob");
    tokio::time::advance(Duration::from_secs(550)).await;
    assert_eq!(whoami(&alice).await, "alice"); // Alice's second refresh; Bob sends nothing
    let generation = |user: &str| {
        let store = stores.lock().unwrap()[&Tenant::new(user)].clone();
        async move { store.load().await.unwrap().map(|t| t.generation) }
    };
    // The configured refresh token is generation 1; each refresh installs the next.
    assert_eq!(generation("alice").await, Some(3));
    assert_eq!(generation("bob").await, Some(2));

    // After a restart: the stores alone are enough, and hold each user's current pair.
    drop((alice, bob, first));
    let second = app(&sim, &log, |app| app.token_stores(per_user));
    let alice = second.user("alice").build().unwrap();
    let bob = second.user("bob").build().unwrap();
    assert_eq!(whoami(&alice).await, "alice");
    assert_eq!(whoami(&bob).await, "bob");
    assert_eq!(sim.token_refreshes_of("alice"), 2);
    assert_eq!(sim.token_refreshes_of("bob"), 1);
    assert_eq!(sim.stats().invalid_grant, 0);
    log.tokens_per_tenant();
}

#[test]
fn configuration_errors_are_typed() {
    let missing = DrChronoApp::builder().build();
    assert!(
        matches!(missing, Err(BuildError::MissingCredentials)),
        "{missing:?}"
    );
    let insecure = DrChronoApp::builder()
        .credentials("id", "secret".to_owned())
        .token_url("http://tokens.example/o/token/")
        .build();
    assert!(
        matches!(
            insecure,
            Err(BuildError::InsecureUrl {
                setting: "token_url",
                ..
            })
        ),
        "{insecure:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_user_without_tokens_or_store_is_refused() {
    let sim = Simulator::new(SimConfig::default());
    let app = app(&sim, &Log::default(), |app| app);
    let no_tokens = app.user("carol").build();
    assert!(
        matches!(no_tokens, Err(BuildError::MissingTokens)),
        "{no_tokens:?}"
    );
    // Debug output names the user and the configuration, never a secret.
    let c = sim.credentials();
    let text = format!(
        "{app:?} {:?}",
        app.user("carol").refresh_token("rt-value".to_owned())
    );
    assert!(text.contains("carol"));
    assert!(
        !text.contains(&c.client_secret) && !text.contains("rt-value"),
        "{text}"
    );
}
