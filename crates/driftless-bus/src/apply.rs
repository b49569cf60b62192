//! The appliers: in every hub process one puller per partition, pulling from the partition's
//! durable consumer (JetStream spreads a consumer's messages over every process pulling from it)
//! into one bounded queue, and `max_applying` committers, each taking what is queued from every
//! partition as a group (whole messages, up to `apply_batch` events), applying its events through
//! [`Store::apply`] in one call, and only then publishing the outcomes and acknowledging. A crash
//! anywhere before the acknowledgement means JetStream redelivers; the ledger answers the
//! redelivery `duplicate` and applies nothing twice. Groups of one partition may be applied at
//! once by two committers, as by two processes: the fold does not depend on order.
//!
//! [`Store::apply`]: driftless_store::Store::apply

use crate::codec::{self, ChannelUpdate};
use crate::{Bus, BusError};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use chrono::{DateTime, Utc};
use driftless_core::{Event, Outcome, Rules, Sku};
use driftless_store::outbox::{MAX_SCAN, Scan, ScanFrom};
use driftless_store::{Incoming, Receipt, StoreError};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long an applier waits before pulling again after NATS or the store failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Bytes one pull request asks for at most (a few groups' worth of events).
const PULL_BYTES: usize = 4 << 20;
/// Pulled messages waiting for a committer, all partitions together (up to 250 events each).
const QUEUED: usize = 256;

/// The messages of one `Store::apply`, read: their events in order, each with the instant the
/// API received it and whether its message was delivered before.
#[derive(Default)]
struct Group {
    messages: Vec<Message>,
    events: Vec<(Event, DateTime<Utc>, bool)>,
    /// Never valid (another version wrote them, or they were not ours): redelivering them forever
    /// would wedge the partition, so they are terminated. Their senders were answered `accepted`
    /// at most; the log names them.
    unreadable: Vec<Message>,
}

/// A pulled message, decoded by its puller (so that the committers, which take messages from
/// one queue under its lock, only group them).
struct Pulled {
    message: Message,
    events: Result<(DateTime<Utc>, Vec<Event>), BusError>,
}

impl Pulled {
    fn decode(message: Message) -> Pulled {
        let events = codec::decode_events(&message.payload);
        Pulled { message, events }
    }
}

impl Group {
    fn add(&mut self, p: Pulled) {
        let m = p.message;
        match p.events {
            Ok((received_at, events)) => {
                let redelivered = m.info().map(|i| i.delivered > 1).unwrap_or(false);
                self.events
                    .extend(events.into_iter().map(|e| (e, received_at, redelivered)));
                self.messages.push(m);
            }
            Err(e) => {
                tracing::error!(subject = %m.subject, error = %e, "a bus message could not be read; dropped");
                self.unreadable.push(m);
            }
        }
    }
}

/// An event prepared against the configuration as the API would have at `received_at`.
pub(crate) fn incoming(rules: &Rules, e: Event, received_at: DateTime<Utc>) -> Incoming {
    match rules.prepare_at(e, received_at) {
        Ok(p) => Incoming::Event(Box::new(p)),
        Err(refused) => {
            let (event, r) = *refused;
            Incoming::Rejected {
                event: Box::new(event),
                reason: r.0,
            }
        }
    }
}

impl Bus {
    /// Starts one puller per partition and `max_applying` committers, which take the pulled
    /// messages of every partition from one queue. Each stops at [`Bus::stop`], a committer after
    /// the group it is applying.
    pub fn start_appliers(self: &Arc<Bus>) {
        let (tx, rx) = mpsc::channel(QUEUED);
        for p in 0..self.opts.partitions {
            let (bus, tx) = (self.clone(), tx.clone());
            self.push_task(tokio::spawn(async move { bus.run_puller(p, tx).await }));
        }
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..self.opts.max_applying {
            let (bus, rx) = (self.clone(), rx.clone());
            self.push_task(tokio::spawn(async move { bus.run_committer(rx).await }));
        }
    }

    fn consumer_config(&self, partition: u16) -> pull::Config {
        pull::Config {
            durable_name: Some(format!("applier-{partition}")),
            description: Some(format!("driftless applier of partition {partition}")),
            filter_subject: self.opts.event_subject(partition),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: self.opts.ack_wait,
            max_ack_pending: self.opts.max_ack_pending,
            // Never give up on a message: dropping one would lose an acknowledged event.
            max_deliver: -1,
            ..Default::default()
        }
    }

    /// Pulls partition `partition`'s messages into the queue the committers take groups from,
    /// until [`Bus::stop`]; the queue's bound holds the pull back when the ledger is behind.
    async fn run_puller(self: Arc<Bus>, partition: u16, queue: mpsc::Sender<Pulled>) {
        let mut stop = self.stop.subscribe();
        while !*stop.borrow() {
            let messages = async {
                let stream = crate::setup_stream(&self.js, &self.opts)
                    .await
                    .map_err(|e| e.to_string())?;
                let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
                    .get_or_create_consumer(
                        &format!("applier-{partition}"),
                        self.consumer_config(partition),
                    )
                    .await
                    .map_err(|e| format!("consumer applier-{partition}: {e}"))?;
                consumer
                    .stream()
                    .max_messages_per_batch(self.opts.apply_batch)
                    // A message holds up to 250 events: bound what waits in this process too.
                    .max_bytes_per_batch(PULL_BYTES)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                    .map_err(|e| format!("pulling applier-{partition}: {e}"))
            }
            .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "applier cannot pull; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let message = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                        // Missed heartbeats (a reconnect): the pull stream re-issues its own
                        // requests. Anything else (the consumer deleted by an operator, the
                        // stream gone) is met by setting the consumer up again.
                        tracing::debug!(partition, error = %e, "applier pull");
                        if matches!(e.kind(), K::MissingHeartbeat) {
                            continue;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_PAUSE) => break,
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                    None => break,
                };
                let pulled = Pulled::decode(message);
                tokio::select! {
                    sent = queue.send(pulled) => if sent.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// One of `max_applying` committers: takes the first queued message, then whatever else is
    /// queued from every partition, up to `apply_batch` events, as one group: one store call,
    /// one commit. Under load the queue fills while the committers are at the ledger, so the
    /// groups grow instead of every partition committing a few events at a time.
    async fn run_committer(self: Arc<Bus>, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Pulled>>>) {
        let mut stop = self.stop.subscribe();
        loop {
            let group = {
                let mut queue = tokio::select! {
                    q = queue.lock() => q,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let first = tokio::select! {
                    m = queue.recv() => m,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let Some(first) = first else { return };
                let mut group = Group::default();
                group.add(first);
                while group.events.len() < self.opts.apply_batch {
                    match queue.try_recv() {
                        Ok(m) => group.add(m),
                        Err(_) => break,
                    }
                }
                group
            };
            if let Err(e) = self.apply_group(group).await {
                tracing::warn!(error = %e, "applying a group failed; JetStream redelivers it");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE) => {},
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// Applies a group, publishes the outcomes and channel quantities, then acknowledges its
    /// messages (and terminates those that could not be read). On a store failure every message
    /// is handed back (`nak` with a delay) and nothing is acknowledged.
    async fn apply_group(&self, group: Group) -> Result<(), BusError> {
        for m in &group.unreadable {
            let _ = m.ack_with(AckKind::Term).await;
        }
        if group.events.is_empty() {
            return Ok(());
        }
        let batch: Vec<Incoming> = group
            .events
            .iter()
            .map(|(e, at, _)| incoming(&self.rules, e.clone(), *at))
            .collect();
        let applied = self.store.apply(Utc::now(), batch).await;
        let receipts = match applied {
            Ok(r) => r,
            Err(e) => {
                for m in &group.messages {
                    let _ = m.ack_with(AckKind::Nak(Some(RETRY_PAUSE))).await;
                }
                return Err(e.into());
            }
        };
        let receipts = self.own_outcomes(&group, receipts).await?;
        let decided: Vec<(&Event, &Receipt)> = group
            .events
            .iter()
            .map(|(e, _, _)| e)
            .zip(&receipts)
            .collect();
        self.publish_outcomes(&decided).await;
        self.publish_channels(&decided).await;
        for m in &group.messages {
            // A lost acknowledgement means one redelivery, answered `duplicate` by the ledger.
            if let Err(e) = m.ack().await {
                tracing::debug!(error = %e, "acknowledgement not sent; the message comes back");
            }
        }
        Ok(())
    }

    /// An event in a message delivered again after its first delivery was applied (the process
    /// died, or its acknowledgement was lost) is `duplicate` to the ledger. The sender is owed the
    /// first delivery's outcome, which the ledger stored: that is what is published for it.
    async fn own_outcomes(
        &self,
        group: &Group,
        mut receipts: Vec<Receipt>,
    ) -> Result<Vec<Receipt>, StoreError> {
        for ((e, _, redelivered), r) in group.events.iter().zip(receipts.iter_mut()) {
            if r.outcome == Outcome::Duplicate
                && *redelivered
                && let Some(h) = self.store.event(&e.source, &e.id).await?
            {
                *r = Receipt {
                    outcome: h.outcome,
                    detail: h.detail,
                };
            }
        }
        Ok(receipts)
    }

    /// Publishes every channel's quantity of each sku the group changed. Core NATS: a consumer
    /// that must not miss one captures `<prefix>.channels.>` in a stream of its own.
    pub(crate) async fn publish_channels(&self, decided: &[(&Event, &Receipt)]) {
        if self.channels.is_empty() {
            return;
        }
        // The skus whose channel quantities may have moved: those of the outcomes that mark the
        // outbox. A receipt does not say whether its event was effective; an ineffective one only
        // publishes its sku's unchanged quantity again, which a consumer keeping the highest
        // version ignores.
        let mut skus: Vec<Sku> = decided
            .iter()
            .filter(|(_, r)| r.outcome.marks_outbox(true))
            .map(|(e, _)| e.sku.clone())
            .collect();
        skus.sort();
        skus.dedup();
        if skus.is_empty() {
            return;
        }
        // One read of the outbox rows per channel for the whole group: their version and ATP
        // were written together by the marking transaction, under the row's lock, so a version
        // grows in commit order across every hub process and always comes with its own quantity.
        // A scan takes at most `MAX_SCAN` skus, and a group of whole messages can touch more.
        let skus = &skus;
        let reads = self.channels.iter().flat_map(|c| {
            skus.chunks(MAX_SCAN).map(move |chunk| {
                let scan = Scan {
                    channel: c.id.to_string(),
                    locations: c.locations.clone(),
                    from: ScanFrom::Skus(chunk.to_vec()),
                    limit: chunk.len(),
                };
                async move { self.store.outbox_scan(&scan).await.map(|rows| (c, rows)) }
            })
        });
        let rows = match futures::future::try_join_all(reads).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "channel quantities not published");
                return;
            }
        };
        for (c, rows) in rows {
            for row in rows {
                let u = ChannelUpdate {
                    channel: c.id.to_string(),
                    sku: row.sku.to_string(),
                    quantity: c.quantity(&row.sku, row.atp),
                    version: Some(row.version),
                };
                let payload = serde_json::to_vec(&u).unwrap_or_default();
                let subject = self.opts.channel_subject(c.id.as_str(), row.sku.as_str());
                if let Err(e) = self.client.publish(subject, payload.into()).await {
                    tracing::debug!(error = %e, "a channel quantity was not published");
                }
            }
        }
    }
}
