//! The configuration file as written. Every struct denies unknown fields so that a misspelt key is
//! reported with its position instead of being ignored; values that need checking keep their span.

use driftless_core::State;
use serde::Deserialize;
use toml::Spanned;

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub ledger: Option<RawLedger>,
    #[serde(default)]
    pub systems: Vec<RawSystem>,
    pub authority: Option<S<RawAuthority>>,
    #[serde(default)]
    pub units: Vec<RawUnit>,
    #[serde(default)]
    pub channels: Vec<RawChannel>,
    #[serde(default)]
    pub items: Vec<RawItem>,
    #[serde(default)]
    pub locations: Vec<RawLocation>,
    #[serde(default)]
    pub hops: Vec<RawHop>,
    pub audit: Option<crate::audit::RawAudit>,
    pub epcis: Option<crate::epcis::RawEpcis>,
    pub checkpoints: Option<crate::checkpoints::RawCheckpoints>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<S<String>>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub auth: Option<S<String>>,
    pub read_token_sha256: Option<Vec<S<String>>>,
    pub operator_token_sha256: Option<Vec<S<String>>>,
    pub max_body_bytes: Option<S<i64>>,
    pub max_batch: Option<S<i64>>,
    pub max_pending: Option<S<i64>>,
    pub header_read_timeout: Option<S<String>>,
    pub body_read_timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Accept only skus declared under `[[items]]`.
    #[serde(default)]
    pub strict_skus: bool,
    /// How far ahead of the hub's clock an `occurred_at` may be (`"5m"`).
    pub max_future_skew: Option<S<String>>,
    /// The embedded ledger's bound on the events a crash leaves to replay.
    pub max_replay_events: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub id: S<String>,
    pub role: S<String>,
    pub token_sha256: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuthority {
    pub on_hand: Option<Vec<S<String>>>,
    pub committed: Option<Vec<S<String>>>,
    pub reserved: Option<Vec<S<String>>>,
    pub incoming: Option<Vec<S<String>>>,
    pub unavailable: Option<Vec<S<String>>>,
    pub policy: Option<RawPolicy>,
}

impl RawAuthority {
    pub fn writers(&self) -> Vec<(State, &Vec<S<String>>)> {
        [
            (State::OnHand, &self.on_hand),
            (State::Committed, &self.committed),
            (State::Reserved, &self.reserved),
            (State::Incoming, &self.incoming),
            (State::Unavailable, &self.unavailable),
        ]
        .into_iter()
        .filter_map(|(s, v)| v.as_ref().map(|v| (s, v)))
        .collect()
    }

    pub fn policies(&self) -> Vec<(State, &S<String>)> {
        let Some(p) = &self.policy else { return vec![] };
        [
            (State::OnHand, &p.on_hand),
            (State::Committed, &p.committed),
            (State::Reserved, &p.reserved),
            (State::Incoming, &p.incoming),
            (State::Unavailable, &p.unavailable),
        ]
        .into_iter()
        .filter_map(|(s, v)| v.as_ref().map(|v| (s, v)))
        .collect()
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub on_hand: Option<S<String>>,
    pub committed: Option<S<String>>,
    pub reserved: Option<S<String>>,
    pub incoming: Option<S<String>>,
    pub unavailable: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnit {
    pub sku: S<String>,
    pub unit: S<String>,
    pub factor: S<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    pub id: S<String>,
    #[serde(default)]
    pub locations: Vec<S<String>>,
    pub safety_stock: Option<S<i64>>,
    pub allocation: Option<S<f64>>,
    pub pack: Option<S<i64>>,
    pub on_override: Option<S<String>>,
    pub connector: Option<S<String>>,
    pub url: Option<String>,
    pub secret_env: Option<String>,
    pub path: Option<String>,
    pub schedule: Option<String>,
    pub shop_domain: Option<String>,
    pub api_version: Option<String>,
    pub token_env: Option<String>,
    pub max_attempts: Option<S<i64>>,
    pub concurrency: Option<S<i64>>,
    pub rate_limit: Option<S<i64>>,
    pub batch_size: Option<S<i64>>,
    #[serde(default)]
    pub rules: Vec<RawChannelRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannelRule {
    pub sku: S<String>,
    pub safety_stock: Option<S<i64>>,
    pub allocation: Option<S<f64>>,
    pub pack: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawItem {
    pub sku: S<String>,
    pub gtin: Option<String>,
    pub shopify_inventory_item_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
    pub id: S<String>,
    pub sgln: Option<String>,
    pub shopify_location_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHop {
    pub from: S<String>,
    pub to: S<String>,
    pub trigger: S<String>,
    pub schedule: Option<S<String>>,
    pub latency_sla: S<String>,
    pub direction: Option<S<String>>,
    pub transform: Option<String>,
}

/// A suggestion for the commonest parse errors.
pub fn fix_for(message: &str) -> Option<String> {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        let field = rest.split('`').next().unwrap_or("");
        let expected = message.split("expected ").nth(1).unwrap_or("").trim();
        return Some(format!(
            "remove `{field}` or use one of the known keys: {}",
            if expected.is_empty() {
                "see driftless.example.toml"
            } else {
                expected
            }
        ));
    }
    if message.contains("invalid type") {
        return Some("check the value's type: quoted strings, bare numbers, [lists]".into());
    }
    None
}
