//! The API side: publish a validated request's events, wait (bounded) for their outcomes, answer
//! `accepted` for the rest, and remember which ids were accepted so that
//! `GET /v1/events/{source}/{id}` can say 202 until the outcome is stored.
//!
//! How an API process learns outcomes: every hub process subscribes (core NATS, no JetStream) to
//! `<prefix>.outcomes.>` and hands each outcome to the requests waiting for that `(source, id)`
//! in this process. An outcome that is lost (a reconnect) only turns an answer into `accepted`;
//! the stored outcome is what `GET` reads.

use crate::codec::{self, AcceptedWire, OutcomeWire, OutcomesWire};
use crate::{Bus, BusError};
use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use driftless_core::{Event, EventId, Outcome, SystemId};
use driftless_store::{Incoming, Receipt};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type Key = (SystemId, EventId);

/// One event's answer to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The ledger decided (an applier in some hub process, or this one).
    Final(Receipt),
    /// Durable in JetStream, not applied yet: `202` with `"outcome": "accepted"`.
    Accepted,
}

/// Requests in this process waiting for an outcome, by event identity.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    by_key: HashMap<Key, Vec<oneshot::Sender<Receipt>>>,
    count: usize,
}

impl Waiting {
    fn add(&mut self, key: Key) -> oneshot::Receiver<Receipt> {
        let (tx, rx) = oneshot::channel();
        self.by_key.entry(key).or_default().push(tx);
        self.count += 1;
        rx
    }

    fn deliver(&mut self, key: &Key, r: &Receipt) {
        if let Some(txs) = self.by_key.remove(key) {
            self.count -= txs.len();
            for tx in txs {
                let _ = tx.send(r.clone());
            }
        }
    }

    /// Forgets waiters whose request stopped waiting (timed out, or the client went away).
    fn prune(&mut self, key: &Key) {
        if let Some(txs) = self.by_key.get_mut(key) {
            let before = txs.len();
            txs.retain(|tx| !tx.is_closed());
            self.count -= before - txs.len();
            if txs.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

/// Ids answered `accepted` whose outcome has not been seen, bounded in number and age: an id
/// whose outcome message was lost is forgotten after `ttl`, and `GET` then answers from the
/// ledger alone (the stored outcome, or 404 for an event the ledger did not keep).
#[derive(Debug)]
pub(crate) struct AcceptedIds {
    at: HashMap<Key, Instant>,
    order: VecDeque<(Instant, Key)>,
    max: usize,
    ttl: Duration,
}

impl AcceptedIds {
    pub(crate) fn new(max: usize, ttl: Duration) -> AcceptedIds {
        AcceptedIds {
            at: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
            ttl,
        }
    }

    fn insert(&mut self, key: Key, now: Instant) {
        self.expire(now);
        while self.at.len() >= self.max {
            match self.order.pop_front() {
                Some((t, k)) => {
                    if self.at.get(&k) == Some(&t) {
                        self.at.remove(&k);
                    }
                }
                None => break,
            }
        }
        self.at.insert(key.clone(), now);
        self.order.push_back((now, key));
        // Entries superseded by a later insert of the same key stay in `order` until they reach
        // its front; bound that too.
        while self.order.len() > self.max.saturating_mul(2) {
            if let Some((t, k)) = self.order.pop_front()
                && self.at.get(&k) == Some(&t)
            {
                self.at.remove(&k);
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        self.at.remove(key);
    }

    fn contains(&mut self, key: &Key, now: Instant) -> bool {
        self.expire(now);
        self.at.contains_key(key)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < self.ttl {
                break;
            }
            if let Some((t, k)) = self.order.pop_front()
                && self.at.get(&k) == Some(&t)
            {
                self.at.remove(&k);
            }
        }
    }
}

/// Subscribes to every outcome and to the other processes' accepted ids; the task hands each
/// outcome to this process's waiters.
pub(crate) async fn listen(bus: &Arc<Bus>) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let sub_err = |e: async_nats::SubscribeError| BusError::Setup(format!("subscribe: {e}"));
    let mut outcomes = bus
        .client
        .subscribe(format!("{}.outcomes.>", bus.opts.prefix))
        .await
        .map_err(sub_err)?;
    let mut accepted = bus
        .client
        .subscribe(bus.opts.accepted_subject())
        .await
        .map_err(sub_err)?;
    let (waiting, accepted_ids) = (bus.waiting.clone(), bus.accepted.clone());
    let mut stop = bus.stop.subscribe();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                m = outcomes.next() => match m {
                    Some(m) => on_outcomes(&m.payload, &waiting, &accepted_ids),
                    None => break,
                },
                m = accepted.next() => match m {
                    Some(m) => on_accepted(&m.payload, &accepted_ids),
                    None => break,
                },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }))
}

fn on_outcomes(
    payload: &[u8],
    waiting: &std::sync::Mutex<Waiting>,
    accepted: &std::sync::Mutex<AcceptedIds>,
) {
    let Ok(m) = serde_json::from_slice::<OutcomesWire>(payload) else {
        tracing::warn!("an outcome message could not be read; ignored");
        return;
    };
    let Ok(source) = SystemId::parse(m.source) else {
        return;
    };
    let mut keyed = Vec::with_capacity(m.results.len());
    for r in m.results {
        let (Ok(id), Ok(outcome)) = (EventId::parse(r.id), r.outcome.parse::<Outcome>()) else {
            continue;
        };
        keyed.push((
            (source.clone(), id),
            Receipt {
                outcome,
                detail: r.reason,
            },
        ));
    }
    if let Ok(mut a) = accepted.lock() {
        for (k, _) in &keyed {
            a.remove(k);
        }
    }
    if let Ok(mut w) = waiting.lock() {
        for (k, r) in &keyed {
            w.deliver(k, r);
        }
    }
}

fn on_accepted(payload: &[u8], accepted: &std::sync::Mutex<AcceptedIds>) {
    let Ok(m) = serde_json::from_slice::<AcceptedWire>(payload) else {
        return;
    };
    let Ok(source) = SystemId::parse(m.source) else {
        return;
    };
    let now = Instant::now();
    if let Ok(mut a) = accepted.lock() {
        for id in m.ids {
            if let Ok(id) = EventId::parse(id) {
                a.insert((source.clone(), id), now);
            }
        }
    }
}

/// How one event of a request travels.
enum Route {
    /// Published; its outcome arrives on this receiver.
    Published(oneshot::Receiver<Receipt>),
    /// JetStream already held a message with its `Nats-Msg-Id` (or the same id came earlier in
    /// this request): the ledger decides it directly, after the rest.
    Direct,
}

impl Bus {
    /// Publishes the events of one validated request (all from the API's `received_at`) and
    /// answers each in request order: its outcome if it arrived within `outcome_wait`, else
    /// [`Delivery::Accepted`].
    ///
    /// An error means some events may be durable in JetStream and others not; the sender
    /// retries with the same ids, and the ledger's idempotency makes that safe.
    pub async fn submit(
        &self,
        received_at: DateTime<Utc>,
        events: Vec<Event>,
    ) -> Result<Vec<Delivery>, BusError> {
        if *self.stop.borrow() {
            return Err(BusError::Closed);
        }
        let deadline = tokio::time::Instant::now() + self.opts.outcome_wait;
        let keys: Vec<Key> = events
            .iter()
            .map(|e| (e.source.clone(), e.id.clone()))
            .collect();
        // Waiters are registered before publishing, so an outcome can never arrive unseen.
        let mut routes = Vec::with_capacity(events.len());
        {
            let mut w = self.waiting.lock().map_err(|_| BusError::Closed)?;
            if w.count.saturating_add(events.len()) > self.opts.max_waiting {
                return Err(BusError::Overloaded);
            }
            let mut first = std::collections::HashSet::with_capacity(keys.len());
            for k in &keys {
                routes.push(if first.insert(k) {
                    Route::Published(w.add(k.clone()))
                } else {
                    Route::Direct
                });
            }
        }
        let published = self.publish_all(received_at, &events, &mut routes).await;
        if let Err(e) = published {
            self.forget_waiters(&keys, routes);
            return Err(e);
        }
        // Outcomes of the published events, up to the shared deadline.
        let mut answers: Vec<Option<Delivery>> = vec![None; events.len()];
        let mut direct = Vec::new();
        let mut accepted = Vec::new();
        for (i, route) in routes.iter_mut().enumerate() {
            match route {
                Route::Direct => direct.push(i),
                Route::Published(rx) => {
                    answers[i] = Some(match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(r)) => Delivery::Final(r),
                        _ => {
                            accepted.push(i);
                            Delivery::Accepted
                        }
                    })
                }
            }
        }
        self.forget_waiters(&keys, routes);
        self.remember_accepted(&events, &accepted).await;
        if !direct.is_empty() {
            let receipts = self.apply_direct(received_at, &events, &direct).await?;
            for (i, r) in direct.into_iter().zip(receipts) {
                answers[i] = Some(Delivery::Final(r));
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or(Delivery::Accepted))
            .collect())
    }

    /// Publishes every event routed to the bus: those of one partition packed into as few
    /// messages as the bounds allow ([`codec::pack`]), pipelined (a chunk of messages sent, then
    /// their acknowledgements awaited). The events of a message whose `PubAck` says `duplicate`
    /// are re-routed to the ledger.
    async fn publish_all(
        &self,
        received_at: DateTime<Utc>,
        events: &[Event],
        routes: &mut [Route],
    ) -> Result<(), BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let mut by_partition: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            if matches!(routes[i], Route::Published(_)) {
                by_partition
                    .entry(self.opts.partition(e.sku.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        let max_bytes = usize::try_from(self.opts.max_message_bytes).unwrap_or(usize::MAX);
        let mut messages = Vec::new();
        for (partition, idx) in by_partition {
            let subject = self.opts.event_subject(partition);
            for m in codec::pack(received_at, idx.iter().map(|&i| (i, &events[i])), max_bytes) {
                messages.push((subject.clone(), m.indices, bytes::Bytes::from(m.payload)));
            }
        }
        for chunk in messages.chunks(crate::PUBLISH_CHUNK) {
            self.publish_chunk(events, routes, chunk)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }

    /// Sends a chunk of messages, then awaits their acknowledgements. Each unacknowledged
    /// publish holds one of the context's `MAX_ACK_INFLIGHT` permits, and a request blocks for a
    /// permit while holding others: chunks keep every request's holding below `PUBLISH_CHUNK`,
    /// and the server lets at most 256 event requests run at once, so 256 x `PUBLISH_CHUNK` <
    /// `MAX_ACK_INFLIGHT` and requests can never all wait on each other.
    async fn publish_chunk(
        &self,
        events: &[Event],
        routes: &mut [Route],
        chunk: &[(String, Vec<usize>, bytes::Bytes)],
    ) -> Result<(), String> {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, indices, payload) in chunk {
            let id = crate::events_message_id(
                indices
                    .iter()
                    .map(|&i| (events[i].source.as_str(), events[i].id.as_str())),
            );
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            let ack = self
                .js
                .send_publish(subject.clone(), msg)
                .await
                .map_err(|e| e.to_string())?;
            acks.push((indices, ack));
        }
        let results = futures::future::join_all(
            acks.into_iter()
                .map(|(indices, ack)| async move { (indices, ack.await) }),
        )
        .await;
        for (indices, r) in results {
            let ack = r.map_err(|e| e.to_string())?;
            if ack.duplicate {
                for &i in indices {
                    routes[i] = Route::Direct;
                }
            }
        }
        Ok(())
    }

    fn forget_waiters(&self, keys: &[Key], routes: Vec<Route>) {
        drop(routes);
        if let Ok(mut w) = self.waiting.lock() {
            for k in keys {
                w.prune(k);
            }
        }
    }

    /// Records the ids answered `accepted`, here and (core NATS, best effort) in every other
    /// hub process.
    async fn remember_accepted(&self, events: &[Event], accepted: &[usize]) {
        if accepted.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut by_source: HashMap<&SystemId, Vec<String>> = HashMap::new();
        if let Ok(mut a) = self.accepted.lock() {
            for &i in accepted {
                let e = &events[i];
                a.insert((e.source.clone(), e.id.clone()), now);
                by_source
                    .entry(&e.source)
                    .or_default()
                    .push(e.id.to_string());
            }
        }
        for (source, ids) in by_source {
            let m = AcceptedWire {
                v: 1,
                source: source.to_string(),
                ids,
            };
            let payload = serde_json::to_vec(&m).unwrap_or_default();
            if let Err(e) = self
                .client
                .publish(self.opts.accepted_subject(), payload.into())
                .await
            {
                tracing::debug!(error = %e, "accepted ids not told to the other hub processes");
            }
        }
    }

    /// The ledger decides events the bus would not carry again: a `Nats-Msg-Id` JetStream had
    /// already seen (the first delivery may have been applied, rejected or still be waiting: in
    /// every case the ledger's idempotency gives the right answer) and a repeat of an id earlier
    /// in the same request. Applied after the request's published events were waited for, so a
    /// repeat in one request is answered as it is without the bus.
    async fn apply_direct(
        &self,
        received_at: DateTime<Utc>,
        events: &[Event],
        direct: &[usize],
    ) -> Result<Vec<Receipt>, BusError> {
        let batch: Vec<Incoming> = direct
            .iter()
            .map(|&i| crate::apply::incoming(&self.rules, events[i].clone(), received_at))
            .collect();
        let receipts = self.store.apply(Utc::now(), batch).await?;
        let decided: Vec<(&Event, &Receipt)> =
            direct.iter().map(|&i| &events[i]).zip(&receipts).collect();
        self.publish_outcomes(&decided).await;
        self.publish_channels(&decided).await;
        Ok(receipts)
    }

    /// Whether this process knows the event as accepted and not yet decided.
    pub fn is_accepted(&self, source: &SystemId, id: &EventId) -> bool {
        self.accepted
            .lock()
            .map(|mut a| a.contains(&(source.clone(), id.clone()), Instant::now()))
            .unwrap_or(false)
    }

    /// Publishes outcomes grouped by source (core NATS: losing one only delays an answer).
    pub(crate) async fn publish_outcomes(&self, decided: &[(&Event, &Receipt)]) {
        let mut by_source: HashMap<&SystemId, Vec<OutcomeWire>> = HashMap::new();
        for (e, r) in decided {
            by_source.entry(&e.source).or_default().push(OutcomeWire {
                id: e.id.to_string(),
                outcome: r.outcome.as_str().to_owned(),
                reason: r.detail.clone(),
            });
        }
        for (source, results) in by_source {
            let m = OutcomesWire::new(source.to_string(), results);
            let payload = serde_json::to_vec(&m).unwrap_or_default();
            if let Err(e) = self
                .client
                .publish(self.opts.outcome_subject(source.as_str()), payload.into())
                .await
            {
                tracing::warn!(error = %e, "outcomes not published; the senders get `accepted`");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        (
            SystemId::parse("wms").unwrap(),
            EventId::parse(format!("e{i}")).unwrap(),
        )
    }

    #[test]
    fn accepted_ids_are_bounded_in_number_and_age() {
        let mut a = AcceptedIds::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..5 {
            a.insert(key(i), t0);
        }
        assert_eq!(a.at.len(), 3);
        assert!(!a.contains(&key(0), t0) && a.contains(&key(4), t0));
        a.remove(&key(4));
        assert!(!a.contains(&key(4), t0));
        assert!(!a.contains(&key(3), t0 + Duration::from_secs(11)));
        assert!(a.order.is_empty() && a.at.is_empty());
        for _ in 0..100 {
            a.insert(key(1), t0 + Duration::from_secs(20));
        }
        assert!(a.order.len() <= 6);
    }

    #[test]
    fn waiters_are_counted_and_pruned() {
        let mut w = Waiting::default();
        let rx1 = w.add(key(1));
        let mut rx2 = w.add(key(1));
        assert_eq!(w.count, 2);
        drop(rx1);
        w.prune(&key(1));
        assert_eq!(w.count, 1);
        let r = Receipt {
            outcome: Outcome::Applied,
            detail: None,
        };
        w.deliver(&key(1), &r);
        assert_eq!(w.count, 0);
        assert_eq!(rx2.try_recv().unwrap(), r);
    }
}
