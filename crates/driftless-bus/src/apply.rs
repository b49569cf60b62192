//! The appliers. In every hub process, one puller per partition takes messages from the
//! partition's durable consumer (JetStream spreads a consumer's messages over every process
//! pulling from it) into one queue of the process; a few group workers take from that queue
//! whatever has gathered, across all partitions, and apply it through [`Store::apply`] in one
//! call (one transaction), then publish the outcomes and acknowledge. A crash anywhere before the
//! acknowledgement means JetStream redelivers; the ledger answers the redelivery `duplicate` and
//! applies nothing twice.
//!
//! Why one queue rather than one group per partition: a partition carries a sixteenth of the
//! traffic and each process pulls half of that, so a partition's own groups are a few events,
//! each a transaction (locks, reads, a commit) of its own. Gathered over every partition, a group
//! holds what arrived while the previous one committed, as the store's own group commit does.
//!
//! [`Store::apply`]: driftless_store::Store::apply

use crate::codec;
use crate::{Bus, BusError};
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Message};
use chrono::{DateTime, Utc};
use driftless_core::{Event, Outcome, Rules};
use driftless_store::{Incoming, Receipt, StoreError};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, watch};

/// How long an applier waits before pulling again after NATS or the store failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Messages one pull request of a partition asks for. Groups gather across partitions, so a
/// partition's pulls need not hold a group each; what is pulled and not applied waits
/// unacknowledged, and a short `ack_wait` would hand it out again, so this stays modest.
const PULL_BATCH: usize = 512;

/// The queue from the pullers to the group workers.
type Queue = Arc<Mutex<mpsc::Receiver<Message>>>;

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

/// The readable messages of a group, with their events as the store takes them.
struct Decoded {
    events: Vec<Event>,
    batch: Vec<Incoming>,
    msgs: Vec<Message>,
}

/// What ended a puller's stream of messages.
enum Pulled {
    /// Set the consumer up again (its stream ended or failed).
    Again,
    Stopped,
}

impl Bus {
    /// Starts this process's pullers (one per partition) and group workers. Each stops at
    /// [`Bus::stop`]: a worker after the group it is applying. Messages pulled and not yet
    /// applied are never acknowledged, so JetStream hands them out again.
    pub fn start_appliers(self: &Arc<Bus>) {
        // Room for a full group per worker beyond the one being gathered: enough to keep the
        // workers busy, small beside `max_ack_pending`.
        let room = self.opts.apply_batch.saturating_mul(self.opts.appliers + 1);
        let (tx, rx) = mpsc::channel(room.max(1));
        for p in 0..self.opts.partitions {
            let (bus, tx) = (self.clone(), tx.clone());
            self.push_task(tokio::spawn(async move { bus.run_puller(p, tx).await }));
        }
        let queue: Queue = Arc::new(Mutex::new(rx));
        for _ in 0..self.opts.appliers {
            let (bus, queue) = (self.clone(), queue.clone());
            self.push_task(tokio::spawn(async move { bus.run_worker(queue).await }));
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

    /// Sets the partition's consumer up (and the stream, should NATS have lost it) and starts
    /// pulling from it.
    async fn pull(&self, partition: u16) -> Result<pull::Stream, String> {
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
            .max_messages_per_batch(PULL_BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| format!("pulling applier-{partition}: {e}"))
    }

    /// One partition's puller: its messages into the process's queue, the consumer set up again
    /// whenever pulling fails, until the bus stops.
    async fn run_puller(self: Arc<Bus>, partition: u16, queue: mpsc::Sender<Message>) {
        let mut stop = self.stop.subscribe();
        loop {
            let pulled = match self.pull(partition).await {
                Ok(messages) => self.forward(partition, messages, &queue, &mut stop).await,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "applier cannot pull; retrying");
                    Pulled::Again
                }
            };
            if matches!(pulled, Pulled::Stopped) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Hands every message of one pull stream to the queue until the stream fails or ends.
    async fn forward(
        &self,
        partition: u16,
        mut messages: pull::Stream,
        queue: &mpsc::Sender<Message>,
        stop: &mut watch::Receiver<bool>,
    ) -> Pulled {
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = stop.wait_for(|s| *s) => return Pulled::Stopped,
            };
            let m = match next {
                Some(Ok(m)) => m,
                // Missed heartbeats (a reconnect): the pull stream re-issues its own requests.
                Some(Err(e)) if matches!(e.kind(), MessagesErrorKind::MissingHeartbeat) => {
                    tracing::debug!(partition, error = %e, "applier pull");
                    continue;
                }
                // Anything else (the consumer deleted by an operator, the stream gone) is met by
                // setting the consumer up again.
                Some(Err(e)) => {
                    tracing::debug!(partition, error = %e, "applier pull");
                    return Pulled::Again;
                }
                None => return Pulled::Again,
            };
            tokio::select! {
                sent = queue.send(m) => if sent.is_err() { return Pulled::Stopped },
                _ = stop.wait_for(|s| *s) => return Pulled::Stopped,
            }
        }
    }

    /// A group worker: gathers a group from the queue, applies it, and again, until the bus
    /// stops.
    async fn run_worker(self: Arc<Bus>, queue: Queue) {
        let mut stop = self.stop.subscribe();
        loop {
            let group = tokio::select! {
                g = self.gather(&queue) => g,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(group) = group else { return };
            if let Err(e) = self.apply_group(group).await {
                tracing::warn!(error = %e, "applying a group failed; JetStream redelivers it");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE) => {},
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// The next group: the first message to arrive, then whatever else arrives within
    /// `gather_wait` of it, up to `apply_batch`. One worker gathers at a time while the others
    /// apply, so a group holds what arrived while they committed. `None` once the pullers are
    /// gone.
    async fn gather(&self, queue: &Queue) -> Option<Vec<Message>> {
        let mut rx = queue.lock().await;
        let first = rx.recv().await?;
        let deadline = tokio::time::Instant::now() + self.opts.gather_wait;
        let mut group = Vec::with_capacity(self.opts.apply_batch.min(4096));
        group.push(first);
        while group.len() < self.opts.apply_batch {
            // What has arrived already, without a timer per message.
            match rx.try_recv() {
                Ok(m) => {
                    group.push(m);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => group.push(m),
                _ => break,
            }
        }
        Some(group)
    }

    /// Decodes, applies, publishes the outcomes, acknowledges, and queues the changed skus for
    /// their channel quantities. On a store failure every message is handed back (`nak` with a
    /// delay) and nothing is acknowledged.
    async fn apply_group(&self, group: Vec<Message>) -> Result<(), BusError> {
        let mut clock = GroupClock::start(group.len());
        let Decoded {
            events,
            batch,
            msgs,
        } = self.decode(group).await;
        if events.is_empty() {
            return Ok(());
        }
        clock.lap(Step::Decode);
        let receipts = match self.store.apply(Utc::now(), batch).await {
            Ok(r) => r,
            Err(e) => {
                nak_all(&msgs).await;
                return Err(e.into());
            }
        };
        clock.lap(Step::Apply);
        let receipts = self.own_outcomes(&events, &msgs, receipts).await?;
        let decided: Vec<(&Event, &Receipt)> = events.iter().zip(&receipts).collect();
        self.publish_outcomes(&decided).await;
        clock.lap(Step::Outcomes);
        ack_all(&msgs).await;
        clock.lap(Step::Ack);
        self.channel_skus_changed(&decided);
        clock.log();
        Ok(())
    }

    /// The group's events, read back and prepared. A message that cannot be read was never valid
    /// (another version wrote it, or it was not ours): redelivering it forever would wedge its
    /// partition, so it is terminated; its sender was answered `accepted` at most, and the log
    /// names it.
    async fn decode(&self, group: Vec<Message>) -> Decoded {
        let mut out = Decoded {
            events: Vec::with_capacity(group.len()),
            batch: Vec::with_capacity(group.len()),
            msgs: Vec::with_capacity(group.len()),
        };
        for m in group {
            match codec::decode_event(&m.payload) {
                Ok((received_at, e)) => {
                    out.batch
                        .push(incoming(&self.rules, e.clone(), received_at));
                    out.events.push(e);
                    out.msgs.push(m);
                }
                Err(e) => {
                    tracing::error!(subject = %m.subject, error = %e, "a bus message could not be read; dropped");
                    let _ = m.ack_with(AckKind::Term).await;
                }
            }
        }
        out
    }

    /// A message delivered again after its first delivery was applied (the process died, or its
    /// acknowledgement was lost) is `duplicate` to the ledger. The sender is owed the first
    /// delivery's outcome, which the ledger stored: that is what is published for it.
    async fn own_outcomes(
        &self,
        events: &[Event],
        msgs: &[Message],
        mut receipts: Vec<Receipt>,
    ) -> Result<Vec<Receipt>, StoreError> {
        for ((e, m), r) in events.iter().zip(msgs).zip(receipts.iter_mut()) {
            let redelivered = m.info().map(|i| i.delivered > 1).unwrap_or(false);
            if r.outcome == Outcome::Duplicate
                && redelivered
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
}

/// Acknowledges a committed group. Each acknowledgement is one message to the server, written
/// into the client's buffer (no round trip is awaited). A lost one means one redelivery, which the
/// ledger answers `duplicate`. `AckAll` (one acknowledgement up to a sequence) is not used: every
/// process pulls from the same consumers, and it would acknowledge the other processes'
/// messages of lower sequences before they committed.
async fn ack_all(msgs: &[Message]) {
    for m in msgs {
        if let Err(e) = m.ack().await {
            tracing::debug!(error = %e, "acknowledgement not sent; the message comes back");
        }
    }
}

/// Hands a group back after the store failed: redelivered after a pause, to any process.
async fn nak_all(msgs: &[Message]) {
    for m in msgs {
        let _ = m.ack_with(AckKind::Nak(Some(RETRY_PAUSE))).await;
    }
}

/// The steps of a group, timed for the `debug` log (`driftless_bus=debug`), beside the store's
/// own phase times (`driftless_store=debug`): where a group's time goes.
#[derive(Clone, Copy)]
enum Step {
    Decode,
    Apply,
    Outcomes,
    Ack,
}

struct GroupClock {
    messages: usize,
    last: Instant,
    micros: [u64; 4],
}

impl GroupClock {
    fn start(messages: usize) -> GroupClock {
        GroupClock {
            messages,
            last: Instant::now(),
            micros: [0; 4],
        }
    }

    fn lap(&mut self, s: Step) {
        let now = Instant::now();
        self.micros[s as usize] =
            u64::try_from(now.duration_since(self.last).as_micros()).unwrap_or(u64::MAX);
        self.last = now;
    }

    fn log(&self) {
        let [decode, apply, outcomes, ack] = self.micros;
        tracing::debug!(
            messages = self.messages,
            decode,
            apply,
            outcomes,
            ack,
            "bus group applied (step times in µs)"
        );
    }
}
