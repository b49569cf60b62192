//! Connectors: how the hub hands a channel quantity to one external system. A connector is small on
//! purpose: it takes one [`Push`] (a sku, the quantity, the compare-and-set basis and an idempotency
//! key) and answers a typed [`PushOutcome`]. Everything else a channel needs (the outbox, coalescing,
//! retries with backoff, rate limits, dead letters, override policy) lives in the hub's dispatcher,
//! so a new connector is one module here and touches neither the core nor the store.
//!
//! # Layout
//! Every connector is a folder with a `client` (I/O: HTTP, files) and a pure `transform` (wire type
//! <-> domain value), so that the wire shapes are unit-tested without a network:
//! - [`webhook`]: signed JSON POST (contract section 12).
//! - [`shopify`]: Admin GraphQL `inventorySetQuantities` with compare-and-set and `@idempotent`.
//! - [`file`]: a CSV snapshot written on a schedule for batch consumers (not a per-sku push).
//! - [`http`]: the one HTTP client setup (TLS provider, timeouts) and `Retry-After`.
//! - [`standin`]: local stand-in channels (webhook receiver, Shopify) with fault injection.
//!
//! Ways in, pure transforms whose routes live in the server: [`epcis`] (GS1 EPCIS 2.0 capture to
//! canonical events) and [`shopify::webhook`] (the `inventory_levels/update` webhook).

pub mod epcis;
pub mod file;
pub mod http;
pub mod shopify;
pub mod standin;
pub mod webhook;

use driftless_config::{ChannelConfig, Settings};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, so connectors can sit behind `Arc<dyn Connector>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One quantity to hand to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub channel: String,
    pub sku: String,
    /// The channel quantity the hub computed.
    pub quantity: i64,
    /// What the hub believes the channel shows now (the last acknowledged value, or the value a
    /// compare failure reported); `None` on the first push of a sku.
    pub compare: Option<i64>,
    /// Stable for one `(channel, sku, hub version, quantity, compare)`: a retry of the same push
    /// reuses it, so a channel that already applied it answers as before instead of applying twice.
    pub idempotency_key: String,
}

/// Why a push did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `false` when retrying the same push cannot help (a missing id mapping, a request the
    /// channel says is invalid): the dispatcher dead-letters it at once instead of spending the
    /// attempt budget.
    pub retryable: bool,
    /// `true` when the channel may have applied the push anyway (a timeout, a dropped connection, a
    /// 5xx): the dispatcher then repeats this exact push, same key, before sending anything newer.
    pub in_doubt: bool,
    pub message: String,
}

impl Failure {
    /// Retryable, and possibly applied.
    pub fn retry(message: impl Into<String>) -> Failure {
        Failure {
            retryable: true,
            in_doubt: true,
            message: message.into(),
        }
    }

    /// Retryable, and certainly not applied (the connection was never made).
    pub fn not_sent(message: impl Into<String>) -> Failure {
        Failure {
            retryable: true,
            in_doubt: false,
            message: message.into(),
        }
    }

    /// Retryable, and certainly not applied: the channel answered and refused it (a 4xx). The
    /// refusal may pass (a key rotated, a receiver redeployed), so it is retried with backoff
    /// until `max_attempts`.
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            retryable: true,
            in_doubt: false,
            message: message.into(),
        }
    }

    /// Dead-lettered at once: the request itself is wrong, and repeating it cannot help.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            retryable: false,
            in_doubt: false,
            message: message.into(),
        }
    }
}

/// What the channel answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The channel now shows `quantity`.
    Acked,
    /// The channel's value was not `compare`: someone changed it behind the hub. `current` is the
    /// value the channel reported (or that a read-back found), `actor` who changed it when told.
    CompareFailed {
        current: Option<i64>,
        actor: Option<String>,
    },
    /// The channel asked to be left alone for a while (HTTP 429, 503 with `Retry-After`, GraphQL
    /// throttling): wait this long, or with backoff when it is zero (no wait stated, or `0`).
    /// Throttling spends no attempt; the dispatcher's time budget bounds it.
    RetryAfter(Duration),
    Failed(Failure),
}

/// A channel that takes one sku at a time.
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    /// `webhook`, `shopify`, ...
    fn kind(&self) -> &'static str;

    /// Hands one quantity over. Never panics; every transport problem is a [`PushOutcome`].
    fn push<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, PushOutcome>;

    /// Hands several quantities over (distinct skus, at most the channel's `batch_size`) and
    /// answers one outcome per push, in order. Each outcome means exactly what it would mean for
    /// that push sent alone, so the dispatcher treats them one by one.
    ///
    /// The default pushes one after another, so a connector without a batch request needs no
    /// change. It stops at the first `RetryAfter`: the channel asked to be left alone, and the
    /// pushes not sent yet are certainly not applied, so they get the same answer.
    fn push_batch<'a>(&'a self, pushes: &'a [Push]) -> BoxFuture<'a, Vec<PushOutcome>> {
        Box::pin(one_by_one(self, pushes))
    }
}

/// The default [`Connector::push_batch`]: one push after another, stopping at the first
/// `RetryAfter`.
pub async fn one_by_one<C: Connector + ?Sized>(c: &C, pushes: &[Push]) -> Vec<PushOutcome> {
    let mut out = Vec::with_capacity(pushes.len());
    for p in pushes {
        let o = c.push(p).await;
        let stop = matches!(o, PushOutcome::RetryAfter(_));
        out.push(o.clone());
        if stop {
            out.resize(pushes.len(), o);
            break;
        }
    }
    out
}

/// How a configured channel is reached.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Per-sku pushes.
    Push(Arc<dyn Connector>),
    /// Whole-channel snapshots on a schedule.
    Snapshot(file::FileSink),
    /// `connector = "none"`: quantities are computed and shown, nothing is sent.
    None,
}

/// A channel's connector could not be set up from configuration.
#[derive(Debug, thiserror::Error)]
#[error("channel `{channel}`: {message}")]
pub struct BuildError {
    pub channel: String,
    pub message: String,
}

/// Transport knobs shared by the HTTP connectors.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole-request timeout: a channel that hangs must not hold a push slot for ever.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per channel host.
    pub max_idle: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_idle: 64,
        }
    }
}

/// Builds the endpoint of one configured channel. `env` reads secrets (the environment in the
/// binary, a map in tests), so that secrets are never part of the configuration file.
pub fn build(
    channel: &ChannelConfig,
    settings: &Settings,
    opts: &ClientOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoint, BuildError> {
    let id = channel.spec.id.to_string();
    let err = |message: String| BuildError {
        channel: id.clone(),
        message,
    };
    match channel.connector.as_str() {
        "none" => Ok(Endpoint::None),
        "webhook" => {
            let c =
                webhook::client::WebhookConnector::from_config(channel, opts, env).map_err(err)?;
            Ok(Endpoint::Push(Arc::new(c)))
        }
        "shopify" => {
            let c = shopify::client::ShopifyConnector::from_config(channel, settings, opts, env)
                .map_err(err)?;
            Ok(Endpoint::Push(Arc::new(c)))
        }
        "file" => Ok(Endpoint::Snapshot(
            file::FileSink::from_config(channel).map_err(err)?,
        )),
        other => Err(err(format!("unknown connector `{other}`"))),
    }
}

/// The idempotency key of one push: a digest of what makes the push unique, so that it is the same
/// after a restart (it is never stored, only recomputed) and safe in any header whatever the sku
/// contains.
pub fn idempotency_key(
    channel: &str,
    sku: &str,
    version: i64,
    quantity: i64,
    compare: Option<i64>,
) -> String {
    let mut h = Sha256::new();
    for part in [channel, sku] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(version.to_be_bytes());
    h.update(quantity.to_be_bytes());
    match compare {
        Some(c) => {
            h.update([1]);
            h.update(c.to_be_bytes());
        }
        None => h.update([0]),
    }
    let d = h.finalize();
    format!("dl-{}", hex::encode(&d[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_separates_fields() {
        let a = idempotency_key("shop", "TEE-1", 7, 10, None);
        assert_eq!(a, idempotency_key("shop", "TEE-1", 7, 10, None));
        assert_ne!(a, idempotency_key("shop", "TEE-1", 8, 10, None));
        assert_ne!(a, idempotency_key("shop", "TEE-1", 7, 10, Some(0)));
        assert_ne!(a, idempotency_key("sho", "pTEE-1", 7, 10, None));
        assert!(a.starts_with("dl-") && a.len() == 35);
    }
}
