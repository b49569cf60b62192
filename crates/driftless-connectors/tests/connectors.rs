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
async fn webhook_wrong_key_is_refused_for_good() {
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
    match c.push(&push("A", 1, None, 1)).await {
        PushOutcome::Failed(f) => assert!(!f.retryable && f.message.contains("401")),
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
async fn shopify_wrong_token_is_permanent() {
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
        PushOutcome::Failed(f) => assert!(!f.retryable && f.message.contains("401")),
        other => panic!("{other:?}"),
    }
}
