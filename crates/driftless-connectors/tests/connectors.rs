//! Each connector against its stand-in over real HTTP on 127.0.0.1: what the channel answered is
//! what the connector reports, and the stand-in accepted the request's signature and shape.

use driftless_connectors::shopify::ShopifyConnector;
use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_connectors::webhook::WebhookConnector;
use driftless_connectors::{ClientOptions, Connector, Push, PushOutcome, idempotency_key};
use std::collections::HashMap;
use std::time::Duration;

fn push(sku: &str, quantity: i64, compare: Option<i64>, version: i64) -> Push {
    Push {
        channel: "shop".into(),
        sku: sku.into(),
        quantity,
        compare,
        idempotency_key: idempotency_key("shop", sku, version, quantity, compare),
    }
}

#[tokio::test]
async fn webhook_set_compare_and_replay() {
    let ch = StandIn::start(
        Mode::Webhook {
            secret: b"k".to_vec(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let c =
        WebhookConnector::new(ch.url("/push"), b"k".to_vec(), &ClientOptions::default()).unwrap();
    let first = push("A", 5, None, 1);
    assert_eq!(c.push(&first).await, PushOutcome::Acked);
    assert_eq!(ch.get("A"), Some(5));
    // The same push again (a retry after a lost answer) is answered from the key, not re-applied.
    assert_eq!(c.push(&first).await, PushOutcome::Acked);
    assert_eq!(ch.lock().applied.len(), 1);
    // Someone changed it: a compare against 5 fails and says what the channel shows.
    ch.set("A", 2);
    assert_eq!(
        c.push(&push("A", 9, Some(5), 2)).await,
        PushOutcome::CompareFailed {
            current: Some(2),
            actor: None
        }
    );
    assert_eq!(c.push(&push("A", 9, Some(2), 2)).await, PushOutcome::Acked);
    assert_eq!(ch.get("A"), Some(9));
    assert_eq!(ch.lock().bad_signatures, 0);
}

#[tokio::test]
async fn webhook_wrong_key_is_refused_not_applied_and_retried_with_backoff() {
    let ch = StandIn::start(
        Mode::Webhook {
            secret: b"right".to_vec(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let c = WebhookConnector::new(
        ch.url("/push"),
        b"wrong".to_vec(),
        &ClientOptions::default(),
    )
    .unwrap();
    // A 4xx: refused, so certainly not applied; the contract retries it with backoff (the key
    // may be rotated on the other side) until max_attempts.
    match c.push(&push("A", 1, None, 1)).await {
        PushOutcome::Failed(f) => {
            assert!(f.retryable && !f.in_doubt && f.message.contains("401"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ch.lock().bad_signatures, 1);
}

#[tokio::test]
async fn webhook_transport_failures_are_retryable_and_in_doubt() {
    let ch = StandIn::start(
        Mode::Webhook {
            secret: b"k".to_vec(),
        },
        Faults {
            rate: 1.0,
            seed: 3,
            stall: Duration::from_millis(500),
        },
    )
    .await
    .unwrap();
    let opts = ClientOptions {
        timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let c = WebhookConnector::new(ch.url("/push"), b"k".to_vec(), &opts).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..30 {
        match c.push(&push(&format!("S{i}"), 1, None, 1)).await {
            PushOutcome::RetryAfter(d) => {
                assert_eq!(d, Duration::ZERO);
                kinds.insert("retry-after");
            }
            PushOutcome::Failed(f) => {
                assert!(f.retryable, "{f:?}");
                kinds.insert(if f.message.contains("HTTP 500") {
                    "500"
                } else {
                    "transport"
                });
            }
            other => panic!("every call was faulted: {other:?}"),
        }
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    // Nothing listening: certainly not applied.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/push", dead.local_addr().unwrap());
    drop(dead);
    let c = WebhookConnector::new(url, b"k".to_vec(), &opts).unwrap();
    match c.push(&push("A", 1, None, 1)).await {
        PushOutcome::Failed(f) => assert!(f.retryable && !f.in_doubt, "{f:?}"),
        other => panic!("{other:?}"),
    }
}

fn webhook_standin(faults: Faults) -> impl std::future::Future<Output = std::io::Result<StandIn>> {
    StandIn::start(
        Mode::Webhook {
            secret: b"k".to_vec(),
        },
        faults,
    )
}

#[tokio::test]
async fn webhook_batch_is_answered_per_item() {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let c = WebhookConnector::new(ch.url("/push"), b"k".to_vec(), &ClientOptions::default())
        .unwrap()
        .with_batches(true);
    let first = [
        push("A", 5, None, 1),
        push("B", 6, None, 1),
        push("C", 7, None, 1),
    ];
    assert_eq!(c.push_batch(&first).await, vec![PushOutcome::Acked; 3]);
    assert_eq!(
        (ch.get("A"), ch.get("B"), ch.get("C")),
        (Some(5), Some(6), Some(7))
    );
    // Someone changed B: its compare fails, and only its; A and C go through in the same request.
    ch.set("B", 2);
    let second = [
        push("A", 8, Some(5), 2),
        push("B", 9, Some(6), 2),
        push("C", 10, Some(7), 2),
    ];
    let o = c.push_batch(&second).await;
    assert_eq!(o[0], PushOutcome::Acked);
    assert_eq!(
        o[1],
        PushOutcome::CompareFailed {
            current: Some(2),
            actor: None
        }
    );
    assert_eq!(o[2], PushOutcome::Acked);
    assert_eq!(
        (ch.get("A"), ch.get("B"), ch.get("C")),
        (Some(8), Some(2), Some(10))
    );
    // The same items again, regrouped with a new one (what a retry after a lost answer does):
    // each is answered from its own key, nothing is applied twice.
    let applied = ch.lock().applied.len();
    let again = [second[2].clone(), push("D", 1, None, 1), second[1].clone()];
    let o = c.push_batch(&again).await;
    assert_eq!(o[0], PushOutcome::Acked);
    assert_eq!(o[1], PushOutcome::Acked);
    assert!(matches!(
        o[2],
        PushOutcome::CompareFailed {
            current: Some(2),
            ..
        }
    ));
    assert_eq!(ch.lock().applied.len(), applied + 1, "only D is new");
    // A single push through a batching connector travels in the batch shape.
    assert_eq!(c.push(&push("E", 3, None, 1)).await, PushOutcome::Acked);
    let l = ch.lock();
    assert_eq!((l.batches, l.largest_batch), (4, 3));
    assert_eq!((l.bad_signatures, l.batch_duplicate_skus), (0, 0));
}

#[tokio::test]
async fn webhook_batch_signature_is_checked_by_the_receiver() {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let items = [push("A", 5, None, 1), push("B", 6, None, 1)];
    let body = driftless_connectors::webhook::transform::batch_body(&items);
    let key = driftless_connectors::webhook::transform::batch_key(&items);
    driftless_connectors::http::install_provider();
    let http = reqwest::Client::new();
    let send = |body: Vec<u8>, sig: String, key: String| {
        http.post(ch.url("/push"))
            .header("Idempotency-Key", key)
            .header("X-Driftless-Signature", sig)
            .body(body)
            .send()
    };
    let sign = |b: &[u8]| driftless_connectors::webhook::transform::signature(b"k", b);
    // One quantity changed after signing: refused, nothing applied.
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"quantity\":6", "\"quantity\":60");
    let r = send(tampered.into_bytes(), sign(&body), key.clone())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Signed with another key: refused.
    let other = driftless_connectors::webhook::transform::signature(b"other", &body);
    let r = send(body.clone(), other, key.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let bad = ch.lock().bad_signatures;
    assert_eq!((bad, ch.get("B")), (2, None));
    // A batch key that is not derived from the items: refused as a bad request.
    let r = send(body.clone(), sign(&body), "dlb-0".into())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Right: one result per item.
    let r = send(body.clone(), sign(&body), key).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(ch.get("B"), Some(6));
    // And through the connector with a wrong key: refused for good, every item.
    let c = WebhookConnector::new(
        ch.url("/push"),
        b"wrong".to_vec(),
        &ClientOptions::default(),
    )
    .unwrap()
    .with_batches(true);
    for o in c
        .push_batch(&[push("C", 1, None, 1), push("D", 1, None, 1)])
        .await
    {
        assert!(
            matches!(o, PushOutcome::Failed(f) if f.retryable && !f.in_doubt && f.message.contains("401"))
        );
    }
}

#[tokio::test]
async fn webhook_batch_faults_hit_the_whole_request() {
    let ch = webhook_standin(Faults {
        rate: 1.0,
        seed: 3,
        stall: Duration::from_millis(500),
    })
    .await
    .unwrap();
    let opts = ClientOptions {
        timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let c = WebhookConnector::new(ch.url("/push"), b"k".to_vec(), &opts)
        .unwrap()
        .with_batches(true);
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..40 {
        let items: Vec<Push> = (0..8)
            .map(|j| push(&format!("S{i}-{j}"), 1, None, 1))
            .collect();
        let o = c.push_batch(&items).await;
        assert_eq!(o.len(), 8);
        let per_item = o.iter().any(|x| *x != o[0]);
        if per_item {
            // Some items refused (500/429, not applied), the others applied.
            kinds.insert("per-item");
            for (p, x) in items.iter().zip(&o) {
                let applied = ch.get(&p.sku).is_some();
                assert_eq!(applied, *x == PushOutcome::Acked, "{p:?} {x:?}");
            }
            continue;
        }
        match &o[0] {
            PushOutcome::RetryAfter(d) => {
                assert_eq!(*d, Duration::ZERO);
                kinds.insert("retry-after");
            }
            PushOutcome::Failed(f) => {
                assert!(f.retryable && f.in_doubt, "{f:?}");
                kinds.insert(if f.message.contains("HTTP 500") {
                    "500"
                } else {
                    "transport"
                });
            }
            other => panic!("every call was faulted: {other:?}"),
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(ch.lock().item_faults > 0);
}

#[tokio::test]
async fn the_default_batch_pushes_one_by_one_and_stops_when_asked_to_wait() {
    // Shopify has no batch request: the trait's default sends one mutation per push.
    let ch = StandIn::start(
        Mode::Shopify {
            token: "shpat".into(),
            api_version: "2026-04".into(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let items: HashMap<String, String> = (0..3)
        .map(|i| {
            (
                format!("S{i}"),
                format!("gid://shopify/InventoryItem/{}", i + 1),
            )
        })
        .collect();
    let c = ShopifyConnector::new(
        &ch.url(""),
        "2026-04",
        "shpat".into(),
        items,
        "gid://shopify/Location/9".into(),
        &ClientOptions::default(),
    )
    .unwrap();
    let pushes: Vec<Push> = (0..3)
        .map(|i| push(&format!("S{i}"), i + 1, None, 1))
        .collect();
    assert_eq!(c.push_batch(&pushes).await, vec![PushOutcome::Acked; 3]);
    assert_eq!(ch.lock().requests, 3);
    assert_eq!(ch.get("gid://shopify/InventoryItem/3"), Some(3));

    // A connector that asks to wait at the second push: the third is not sent, and waits too.
    #[derive(Debug, Default)]
    struct Busy(std::sync::Mutex<Vec<String>>);
    impl Connector for Busy {
        fn kind(&self) -> &'static str {
            "busy"
        }
        fn push<'a>(&'a self, p: &'a Push) -> driftless_connectors::BoxFuture<'a, PushOutcome> {
            Box::pin(async move {
                let mut seen = self.0.lock().unwrap();
                seen.push(p.sku.clone());
                if seen.len() == 2 {
                    PushOutcome::RetryAfter(Duration::from_secs(3))
                } else {
                    PushOutcome::Acked
                }
            })
        }
    }
    let b = Busy::default();
    let o = b.push_batch(&pushes).await;
    let wait = PushOutcome::RetryAfter(Duration::from_secs(3));
    assert_eq!(o, vec![PushOutcome::Acked, wait.clone(), wait]);
    assert_eq!(
        *b.0.lock().unwrap(),
        vec!["S0".to_string(), "S1".to_string()]
    );
}

#[tokio::test]
async fn shopify_gids_stale_compare_and_throttle() {
    let ch = StandIn::start(
        Mode::Shopify {
            token: "shpat".into(),
            api_version: "2026-04".into(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let mut items = HashMap::new();
    // Above 2^53: a float would turn ...993 into ...992.
    for i in 0..30u64 {
        items.insert(
            format!("S{i}"),
            format!(
                "gid://shopify/InventoryItem/{}",
                9_007_199_254_740_993u64 + i
            ),
        );
    }
    let c = ShopifyConnector::new(
        &ch.url(""),
        "2026-04",
        "shpat".into(),
        items,
        "gid://shopify/Location/9007199254740999".into(),
        &ClientOptions::default(),
    )
    .unwrap();
    // More calls than the stand-in's bucket holds (100 points, 10 per call): the connector paces
    // itself from throttleStatus, or is told THROTTLED and answers RetryAfter.
    let mut throttled = 0;
    for i in 0..30 {
        loop {
            match c.push(&push(&format!("S{i}"), i, None, 1)).await {
                PushOutcome::Acked => break,
                PushOutcome::RetryAfter(d) => {
                    throttled += 1;
                    tokio::time::sleep(d).await;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(throttled < 30);
    assert_eq!(
        ch.get("gid://shopify/InventoryItem/9007199254740993"),
        Some(0)
    );
    assert_eq!(
        ch.get("gid://shopify/InventoryItem/9007199254741022"),
        Some(29)
    );
    // Stale compare: CHANGE_FROM_QUANTITY_STALE, then the connector reads the current value.
    ch.set("gid://shopify/InventoryItem/9007199254740994", 40);
    assert_eq!(
        c.push(&push("S1", 7, Some(1), 2)).await,
        PushOutcome::CompareFailed {
            current: Some(40),
            actor: None
        }
    );
    // A sku without an inventory item id cannot be pushed, and retrying will not help.
    match c.push(&push("UNMAPPED", 1, None, 1)).await {
        PushOutcome::Failed(f) => assert!(!f.retryable),
        other => panic!("{other:?}"),
    }
    let l = ch.lock();
    assert!(l.shape_errors.is_empty(), "{:?}", l.shape_errors);
    assert_eq!(l.key_reuse_mismatch, 0);
}

#[tokio::test]
async fn shopify_wrong_token_is_refused_and_retried_with_backoff() {
    let ch = StandIn::start(
        Mode::Shopify {
            token: "right".into(),
            api_version: "2026-01".into(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let c = ShopifyConnector::new(
        &ch.url(""),
        "2026-01",
        "wrong".into(),
        HashMap::from([("A".to_string(), "gid://shopify/InventoryItem/1".to_string())]),
        "gid://shopify/Location/2".into(),
        &ClientOptions::default(),
    )
    .unwrap();
    match c.push(&push("A", 1, None, 1)).await {
        PushOutcome::Failed(f) => {
            assert!(f.retryable && !f.in_doubt && f.message.contains("401"))
        }
        other => panic!("{other:?}"),
    }
}

async fn shopify(version: &str) -> (StandIn, ShopifyConnector) {
    let ch = StandIn::start(
        Mode::Shopify {
            token: "shpat".into(),
            api_version: version.into(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let c = ShopifyConnector::new(
        &ch.url(""),
        version,
        "shpat".into(),
        HashMap::from([
            (
                "A".to_string(),
                "gid://shopify/InventoryItem/9007199254740993".to_string(),
            ),
            (
                "B".to_string(),
                "gid://shopify/InventoryItem/9007199254740994".to_string(),
            ),
        ]),
        "gid://shopify/Location/9007199254740999".into(),
        &ClientOptions::default(),
    )
    .unwrap();
    (ch, c)
}

const ITEM_A: &str = "gid://shopify/InventoryItem/9007199254740993";

#[tokio::test]
async fn shopify_uses_change_from_quantity_on_every_supported_version() {
    for version in ["2026-01", "2026-04", "2026-07"] {
        let (ch, c) = shopify(version).await;
        assert_eq!(c.push(&push("A", 5, None, 1)).await, PushOutcome::Acked);
        assert_eq!(c.push(&push("A", 6, Some(5), 2)).await, PushOutcome::Acked);
        ch.set(ITEM_A, 40);
        assert_eq!(
            c.push(&push("A", 7, Some(6), 3)).await,
            PushOutcome::CompareFailed {
                current: Some(40),
                actor: None
            },
            "{version}"
        );
        let l = ch.lock();
        assert!(l.shape_errors.is_empty(), "{version}: {:?}", l.shape_errors);
        for b in &l.graphql {
            let text = b.to_string();
            assert!(!text.contains("compareQuantity"), "{version}: {text}");
        }
    }
}

#[tokio::test]
async fn shopify_stand_in_answers_as_shopify_does_by_version() {
    // The 2026-01 spelling: taken on 2026-01 (with its own stale code), refused from 2026-04
    // with a top-level INVALID_VARIABLE and HTTP 200, as Shopify answers.
    let old = |compare: Option<i64>, key: &str| {
        let mut q = serde_json::json!({"inventoryItemId": ITEM_A,
            "locationId": "gid://shopify/Location/9007199254740999", "quantity": 3});
        let mut input = serde_json::json!({"name": "available", "reason": "correction"});
        match compare {
            Some(c) => q["compareQuantity"] = c.into(),
            None => input["ignoreCompareQuantity"] = true.into(),
        }
        input["quantities"] = serde_json::json!([q]);
        serde_json::json!({"query": driftless_connectors::shopify::transform::SET_MUTATION,
            "variables": {"input": input, "idempotencyKey": key}})
    };
    driftless_connectors::http::install_provider();
    let http = reqwest::Client::new();
    let send = |url: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let r = http
                .post(url)
                .header("X-Shopify-Access-Token", "shpat")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let (ch, _) = shopify("2026-01").await;
    let url = ch.url("/admin/api/2026-01/graphql.json");
    let a = send(url.clone(), old(None, "k1")).await;
    assert_eq!(
        a["data"]["inventorySetQuantities"]["userErrors"],
        serde_json::json!([])
    );
    let a = send(url, old(Some(99), "k2")).await;
    assert_eq!(
        a["data"]["inventorySetQuantities"]["userErrors"][0]["code"],
        "COMPARE_QUANTITY_STALE"
    );
    for version in ["2026-04", "2026-07"] {
        let (ch, _) = shopify(version).await;
        let url = ch.url(&format!("/admin/api/{version}/graphql.json"));
        for body in [old(None, "k3"), old(Some(3), "k4")] {
            let a = send(url.clone(), body).await;
            assert_eq!(
                a["errors"][0]["extensions"]["code"], "INVALID_VARIABLE",
                "{a}"
            );
        }
        assert_eq!(ch.get(ITEM_A), None);
    }
}

#[tokio::test]
async fn shopify_request_errors_dead_letter_with_shopifys_message() {
    let (ch, c) = shopify("2026-04").await;
    // A missing write_inventory scope: HTTP 200, top-level ACCESS_DENIED.
    ch.lock().missing_write_scope = true;
    match c.push(&push("A", 5, None, 1)).await {
        PushOutcome::Failed(f) => assert!(
            !f.retryable
                && f.message.contains("ACCESS_DENIED")
                && f.message.contains("write_inventory"),
            "{f:?}"
        ),
        other => panic!("{other:?}"),
    }
    ch.lock().missing_write_scope = false;
    // Past Shopify's cap (and GraphQL's 32-bit Int): never sent.
    let before = ch.lock().requests;
    for q in [1_000_000_001, 5_000_000_000] {
        match c.push(&push("A", q, None, 1)).await {
            PushOutcome::Failed(f) => {
                assert!(!f.retryable && f.message.contains("1,000,000,000"), "{f:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ch.lock().requests, before, "nothing sent");
    assert_eq!(
        c.push(&push("A", 1_000_000_000, None, 1)).await,
        PushOutcome::Acked
    );
}

#[tokio::test]
async fn shopify_previous_attempt_failed_is_sent_again_with_a_fresh_key() {
    let (ch, c) = shopify("2026-04").await;
    let p = push("B", 8, None, 1);
    ch.lock().failed_keys.insert(p.idempotency_key.clone());
    assert_eq!(c.push(&p).await, PushOutcome::Acked);
    assert_eq!(
        ch.get("gid://shopify/InventoryItem/9007199254740994"),
        Some(8)
    );
    let fresh = ch.lock().applied[0].key.clone();
    assert_ne!(fresh, p.idempotency_key);
    // A repeat (say the answer was lost) finds the same fresh key: answered, not applied again.
    assert_eq!(c.push(&p).await, PushOutcome::Acked);
    let l = ch.lock();
    assert_eq!(l.applied.len(), 1);
    assert_eq!(l.key_reuse_mismatch, 0);
}

/// `../shared/fixtures/<name>` beside the clone (or beside a folder holding it, as for a git
/// worktree under `wt/`): real third-party files, never copied into the repository.
fn shared_fixture(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let found = root
        .ancestors()
        .skip(1)
        .take(3)
        .map(|a| a.join("shared/fixtures").join(name))
        .find(|p| p.is_dir());
    found.unwrap_or_else(|| {
        panic!(
            "fixtures `shared/fixtures/{name}` not found beside the repository ({}): the \
             Shopify schema check needs them",
            root.display()
        )
    })
}

/// `python3` with graphql-core, installed with pip when missing.
fn python_with_graphql_core() -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has = || {
        std::process::Command::new(&python)
            .args(["-c", "import graphql"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has() {
        for extra in [&[][..], &["--user"][..], &["--break-system-packages"][..]] {
            let _ = std::process::Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "graphql-core>=3.2,<4"])
                .args(extra)
                .status();
            if has() {
                break;
            }
        }
    }
    assert!(
        has(),
        "`{python} -c 'import graphql'` fails and `pip install graphql-core` did not help"
    );
    python
}

#[tokio::test]
async fn shopify_requests_are_valid_against_shopifys_published_schemas() {
    let schemas = shared_fixture("shopify-admin-schemas");
    // Every kind of request the connector sends, as it sent them, configured for each version: a
    // first push (no compare), a compared push, the read-back after a stale compare, a fresh key
    // after a failed attempt. Each must be valid on every version: one set up for 2026-01 must
    // not break the day Shopify retires 2026-01.
    let mut sent = Vec::new();
    for version in ["2026-01", "2026-04", "2026-07"] {
        let (ch, c) = shopify(version).await;
        assert_eq!(c.push(&push("A", 5, None, 1)).await, PushOutcome::Acked);
        ch.set(ITEM_A, 9);
        assert!(matches!(
            c.push(&push("A", 6, Some(5), 2)).await,
            PushOutcome::CompareFailed {
                current: Some(9),
                ..
            }
        ));
        let p = push("B", 1_000_000_000, Some(-3), 1);
        ch.lock().failed_keys.insert(p.idempotency_key.clone());
        assert!(matches!(
            c.push(&p).await,
            PushOutcome::CompareFailed { .. }
        ));
        let l = ch.lock();
        assert!(l.graphql.len() >= 6, "{version}: {:?}", l.graphql);
        sent.extend(l.graphql.iter().map(|b| (version, b.clone())));
    }
    let all = serde_json::json!({"2026-01": true, "2026-04": true, "2026-07": true});
    let mut cases: Vec<serde_json::Value> = sent
        .iter()
        .enumerate()
        .map(|(i, (v, b))| {
            serde_json::json!({"name": format!("sent #{i} (configured {v})"), "body": b, "valid": all})
        })
        .collect();
    // Controls: the checker refuses what Shopify refuses, so a pass above means something.
    let mutation = driftless_connectors::shopify::transform::SET_MUTATION;
    let q = |extra: serde_json::Value| {
        let mut q = serde_json::json!({"inventoryItemId": ITEM_A,
            "locationId": "gid://shopify/Location/1", "quantity": 3});
        q.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        q
    };
    let control = |name: &str, input: serde_json::Value, valid: serde_json::Value| {
        serde_json::json!({"name": name, "body": {"query": mutation,
            "variables": {"input": input, "idempotencyKey": "k"}}, "valid": valid})
    };
    cases.push(control(
        "control: the 2026-01 compareQuantity",
        serde_json::json!({"name": "available", "reason": "correction",
            "quantities": [q(serde_json::json!({"compareQuantity": 2}))]}),
        serde_json::json!({"2026-01": true, "2026-04": false, "2026-07": false}),
    ));
    cases.push(control(
        "control: the 2026-01 ignoreCompareQuantity",
        serde_json::json!({"name": "available", "reason": "correction", "ignoreCompareQuantity": true,
            "quantities": [q(serde_json::json!({}))]}),
        serde_json::json!({"2026-01": true, "2026-04": false, "2026-07": false}),
    ));
    cases.push(control(
        "control: a quantity past 32 bits",
        serde_json::json!({"name": "available", "reason": "correction",
            "quantities": [q(serde_json::json!({"quantity": 3_000_000_000u64, "changeFromQuantity": null}))]}),
        serde_json::json!({"2026-01": false, "2026-04": false, "2026-07": false}),
    ));
    cases.push(serde_json::json!({"name": "control: no idempotency key variable",
        "body": {"query": mutation, "variables": {"input": {"name": "available", "reason": "correction",
            "quantities": [q(serde_json::json!({"changeFromQuantity": null}))]}}},
        "valid": {"2026-01": false, "2026-04": false, "2026-07": false}}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let python = python_with_graphql_core();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shopify_schema.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(&schemas)
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    // Every case was checked against every version.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok")).count(),
        cases.len() * 3,
        "{text}"
    );
}
