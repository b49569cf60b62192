//! Helpers shared by the store's integration tests.

use chrono::Utc;
use driftless_store::outbox::{AckedPush, PushRecord, PushSample};

/// A channel `shop`'s acknowledgement of `version` of a sku's row, pushed as `quantity`.
pub fn acked(sku: &str, version: i64, quantity: i64) -> PushRecord {
    PushRecord::Acked(AckedPush {
        sku: driftless_core::Sku::parse(sku).unwrap(),
        version,
        quantity,
        at: Utc::now(),
        sample: PushSample {
            channel: "shop".into(),
            source: None,
            occurred_nanos: None,
            received_nanos: None,
            changed_nanos: 0,
            acked_nanos: 0,
        },
    })
}
