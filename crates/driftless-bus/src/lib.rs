//! The optional NATS JetStream event bus between the hub's API and its appliers (`docs/nats.md`).
//!
//! With the bus on, `POST /v1/events` validates a request and publishes its events to one
//! JetStream stream, one message per partition a request's events fall in (up to 250 events a
//! message) on `<prefix>.events.<partition>` (the partition is a hash of the sku, so events of one
//! sku share a consumer), each with `Nats-Msg-Id` derived from its events' `(source, id)`:
//! JetStream drops an identical redelivery inside its duplicate window, a first filter only,
//! since the ledger's own idempotency stays the authority. Appliers (every hub
//! process runs them) consume with one durable pull consumer per partition, apply through
//! [`Store::apply`], acknowledge only after the store committed, and publish each event's outcome
//! on `<prefix>.outcomes.<source>` and each changed channel quantity on
//! `<prefix>.channels.<channel>.<sku>`. The API waits a bounded time for the outcomes; whatever
//! has not arrived is answered `accepted` (durable in JetStream, applied later).
//!
//! # Layout
//! - this module: options, subjects, the connection and stream setup, [`BusError`].
//! - [`codec`]: the messages.
//! - [`publish`]: the API side ([`Bus::submit`]) and the record of accepted ids.
//! - [`apply`]: the appliers.

pub mod apply;
pub mod codec;
pub mod publish;

use async_nats::jetstream;
use driftless_core::{ChannelSpec, Rules};
use driftless_store::{Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use publish::Delivery;

/// Publishes of one request sent before their acknowledgements are awaited.
const PUBLISH_CHUNK: usize = 200;
/// Unacknowledged publishes of one process (see `publish_chunk` for why this bound cannot
/// deadlock: 256 event requests x `PUBLISH_CHUNK` stay below it).
const MAX_ACK_INFLIGHT: usize = 65_536;

/// The one error type of this boundary.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("setting up the JetStream stream or its consumers failed: {0}")]
    Setup(String),
    /// Publishing failed or was not confirmed in time (NATS down, stream full). Some events of the
    /// request may be durable: the sender retries with the same ids, which is safe.
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
    /// Too many events are waiting for their outcome in this process.
    #[error("too many events are waiting for their outcome; retry later")]
    Overloaded,
    #[error("the event bus is stopping")]
    Closed,
    #[error("a bus message could not be read: {0}")]
    Decode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the bus is named and bounded. Defaults suit one deployment; tests set `prefix` so that
/// they never share a stream.
#[derive(Debug, Clone)]
pub struct BusOptions {
    pub url: String,
    /// First token of every subject, and (upper-cased) of the stream's name.
    pub prefix: String,
    /// Event subjects `<prefix>.events.0 ..= partitions-1`, one durable consumer each. Fixed for
    /// the life of a stream: changing it moves skus between consumers (harmless for the fold,
    /// which does not depend on order, but the old consumers must be drained first).
    pub partitions: u16,
    /// How long `POST /v1/events` waits for outcomes before answering `accepted`.
    pub outcome_wait: Duration,
    /// JetStream's publish acknowledgement timeout (and every other JetStream API call's).
    pub publish_timeout: Duration,
    /// Events waiting for their outcome in this process, all requests together; beyond it the
    /// API answers 503.
    pub max_waiting: usize,
    /// Ids remembered as `accepted` for `GET /v1/events/{source}/{id}` (oldest forgotten first).
    pub max_accepted: usize,
    /// How long an id stays `accepted` when no outcome for it is seen.
    pub accepted_ttl: Duration,
    /// The stream's size bound: past it publishing fails and the API answers 503 (discard new).
    pub stream_max_bytes: i64,
    /// Largest message the stream takes (an event is well under 4 KiB).
    pub max_message_bytes: i32,
    /// JetStream's duplicate window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Events a committer takes into one `Store::apply` (whole messages of any partitions: a
    /// group stops at the first message that reaches it).
    pub apply_batch: usize,
    /// Groups this process applies at once, all partitions together (the ledger's concurrency
    /// from the bus: more only splits the same events into more, smaller transactions).
    pub max_applying: usize,
    /// How long a message may stay unacknowledged before JetStream redelivers it.
    pub ack_wait: Duration,
    /// Unacknowledged messages per consumer (JetStream stops delivering beyond it).
    pub max_ack_pending: i64,
}

impl BusOptions {
    pub fn new(url: impl Into<String>) -> BusOptions {
        BusOptions {
            url: url.into(),
            prefix: "driftless".into(),
            partitions: 16,
            outcome_wait: Duration::from_secs(2),
            publish_timeout: Duration::from_secs(5),
            max_waiting: 100_000,
            max_accepted: 100_000,
            accepted_ttl: Duration::from_secs(3600),
            stream_max_bytes: 1 << 30,
            max_message_bytes: 64 * 1024,
            duplicate_window: Duration::from_secs(120),
            apply_batch: 2_000,
            max_applying: 4,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 8192,
        }
    }

    /// The stream's name: the prefix upper-cased, anything but letters, digits, `_` and `-`
    /// replaced (stream names may not contain `.`, `*`, `>` or spaces).
    pub fn stream_name(&self) -> String {
        let p: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{p}_EVENTS")
    }

    pub fn event_subject(&self, partition: u16) -> String {
        format!("{}.events.{partition}", self.prefix)
    }

    pub fn outcome_subject(&self, source: &str) -> String {
        format!("{}.outcomes.{}", self.prefix, token(source))
    }

    pub fn accepted_subject(&self) -> String {
        format!("{}.accepted", self.prefix)
    }

    pub fn channel_subject(&self, channel: &str, sku: &str) -> String {
        format!("{}.channels.{}.{}", self.prefix, token(channel), token(sku))
    }

    /// The partition of a sku: FNV-1a, a hash fixed by its definition (not the standard
    /// library's, which may change between releases), so every process and version agrees.
    pub fn partition(&self, sku: &str) -> u16 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in sku.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.partitions.max(1))) as u16
    }

    fn check(&self) -> Result<(), BusError> {
        let bad = |m: &str| Err(BusError::Setup(m.to_owned()));
        if self.prefix.is_empty()
            || self
                .prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t']))
        {
            return bad(
                "the subject prefix must be dot-separated tokens without spaces, `*` or `>`",
            );
        }
        if self.partitions == 0
            || self.apply_batch == 0
            || self.max_waiting == 0
            || self.max_applying == 0
        {
            return bad("partitions, apply_batch, max_applying and max_waiting must be at least 1");
        }
        Ok(())
    }
}

/// `Nats-Msg-Id` of an event: both parts of its identity, each as a subject token (`.` cannot
/// occur in a token, so the pair reads back one way only).
pub fn message_id(source: &str, id: &str) -> String {
    format!("{}.{}", token(source), token(id))
}

/// `Nats-Msg-Id` of an event message: one event's own [`message_id`]; for several, a digest of
/// their identities in order, so the same request sent again (a client's retry, to any hub)
/// packs into messages with the same ids and JetStream drops them within its window. A first
/// filter only: a message JetStream calls a duplicate has its events decided by the ledger
/// directly, never dropped, so a retry packed differently or a colliding digest costs a
/// little work and nothing else.
pub fn events_message_id<'a>(mut keys: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::Digest;
    let Some(first) = keys.next() else {
        return String::new();
    };
    let Some(second) = keys.next() else {
        return message_id(first.0, first.1);
    };
    let mut h = sha2::Sha256::new();
    for (source, id) in [first, second].into_iter().chain(keys) {
        h.update(token(source).as_bytes());
        h.update(b".");
        h.update(token(id).as_bytes());
        h.update(b"\n");
    }
    format!("batch.{}", hex::encode(&h.finalize()[..16]))
}

/// A string as one subject token: letters, digits, `_` and `-` kept, every other byte as `%XX`.
/// Identifiers may contain `.`, `*`, `>` and spaces, which subjects give meaning to.
pub fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to NATS with the stream set up, the API side and the appliers.
pub struct Bus {
    opts: BusOptions,
    client: async_nats::Client,
    js: jetstream::Context,
    store: Arc<dyn Store>,
    rules: Rules,
    channels: Arc<Vec<ChannelSpec>>,
    waiting: Arc<Mutex<publish::Waiting>>,
    accepted: Arc<Mutex<publish::AcceptedIds>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.opts.url)
            .field("stream", &self.opts.stream_name())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects, creates the stream if it is missing and starts listening for outcomes. The
    /// appliers start with [`Bus::start_appliers`]. A NATS that cannot be reached at start is an
    /// error (a wrong URL should not look like an outage); after that the client reconnects by
    /// itself.
    pub async fn connect(
        opts: BusOptions,
        store: Arc<dyn Store>,
        rules: Rules,
        channels: Arc<Vec<ChannelSpec>>,
    ) -> Result<Arc<Bus>, BusError> {
        opts.check()?;
        let client = async_nats::ConnectOptions::new()
            .name("driftless")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(opts.publish_timeout))
            .connect(opts.url.as_str())
            .await
            .map_err(|e| BusError::Connect {
                url: opts.url.clone(),
                cause: e.to_string(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(opts.publish_timeout)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .build(client.clone());
        setup_stream(&js, &opts).await?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let bus = Arc::new(Bus {
            waiting: Arc::new(Mutex::new(publish::Waiting::default())),
            accepted: Arc::new(Mutex::new(publish::AcceptedIds::new(
                opts.max_accepted,
                opts.accepted_ttl,
            ))),
            opts,
            client,
            js,
            store,
            rules,
            channels,
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let listener = publish::listen(&bus).await?;
        bus.push_task(listener);
        Ok(bus)
    }

    pub fn options(&self) -> &BusOptions {
        &self.opts
    }

    /// Whether the client is connected to NATS right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn push_task(&self, t: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(t);
        }
    }

    /// Stops the appliers after the batch each is applying, then the outcome listener; returns
    /// once they have stopped. Unacknowledged messages go back to JetStream for another process
    /// (or this one restarted). Call before the store closes.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        // One deadline for all: an applier finishing a group waits for the ledger, which answers
        // or fails within its own bounds; past this the task is aborted and its messages, never
        // acknowledged, come back from JetStream. The listener ends at the stop signal too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                tracing::warn!("a bus task did not stop within 10 s; aborted");
                t.abort();
            }
        }
        let _ = self.client.flush().await;
    }
}

/// One stream for every partition, work-queue retention (a message is removed once its
/// partition's consumer acknowledged it), file storage, bounded in bytes with `discard new` so a
/// full stream refuses publishes (the API answers 503) rather than dropping accepted events.
/// Also called by each applier before it pulls, so a stream lost with a NATS server's storage is
/// created again rather than wedging the appliers.
pub(crate) async fn setup_stream(
    js: &jetstream::Context,
    o: &BusOptions,
) -> Result<jetstream::stream::Stream, BusError> {
    use jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
    let config = Config {
        name: o.stream_name(),
        subjects: vec![format!("{}.events.*", o.prefix)],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        discard: DiscardPolicy::New,
        max_bytes: o.stream_max_bytes,
        max_message_size: o.max_message_bytes,
        duplicate_window: o.duplicate_window,
        num_replicas: 1,
        description: Some("driftless: events between the API and the appliers".into()),
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| BusError::Setup(format!("stream {}: {e}", o.stream_name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_subjects_unambiguous() {
        assert_eq!(token("TEE-BLK_M1"), "TEE-BLK_M1");
        assert_eq!(token("a.b*c> d%"), "a%2Eb%2Ac%3E%20d%25");
        assert_eq!(token("é"), "%C3%A9");
        assert_ne!(message_id("a.b", "c"), message_id("a", "b.c"));
        assert_eq!(
            events_message_id([("wms", "e1")].into_iter()),
            message_id("wms", "e1")
        );
        let two = events_message_id([("wms", "e1"), ("wms", "e2")].into_iter());
        assert!(two.starts_with("batch.") && two.len() == 38, "{two}");
        assert_eq!(
            two,
            events_message_id([("wms", "e1"), ("wms", "e2")].into_iter())
        );
        assert_ne!(
            two,
            events_message_id([("wms", "e2"), ("wms", "e1")].into_iter())
        );
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        let o = BusOptions::new("nats://x");
        // Fixed by FNV-1a's definition: the same in every process and version.
        assert_eq!(o.partition("TEE-BLK-M"), o.partition("TEE-BLK-M"));
        let seen: std::collections::BTreeSet<u16> = (0..1000)
            .map(|i| o.partition(&format!("SKU-{i}")))
            .collect();
        assert_eq!(seen.len(), 16);
        assert!(seen.iter().all(|p| *p < 16));
    }

    #[test]
    fn names_and_bad_prefixes() {
        let mut o = BusOptions::new("nats://x");
        assert_eq!(o.stream_name(), "DRIFTLESS_EVENTS");
        assert_eq!(
            o.channel_subject("shop", "A.B"),
            "driftless.channels.shop.A%2EB"
        );
        o.prefix = "dl.test-1".into();
        assert_eq!(o.stream_name(), "DL_TEST-1_EVENTS");
        assert!(o.check().is_ok());
        for bad in ["", "a..b", "a.*", "a b", "a.>"] {
            o.prefix = bad.into();
            assert!(o.check().is_err(), "{bad}");
        }
    }
}
