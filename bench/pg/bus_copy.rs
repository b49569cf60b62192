//! The ceiling of the JetStream path: the same events carried by JetStream the way the hubs carry
//! them, stored by `COPY`, and answered with the messages the contract asks of that path, with
//! nothing else.
//!
//! Eight publishers send the events a request at a time: each request's events packed into one
//! message per partition (16, by a hash of the sku, as the API packs them), published with a
//! message id and their acknowledgements awaited. Two copiers (as two hubs' appliers) pull from
//! one durable consumer of a work-queue stream on file storage, `COPY` each pulled batch into a
//! table like `events` (same keys and indexes), acknowledge its messages, and publish what the
//! appliers must: the batch's outcomes, one message per source as the appliers send them, to
//! two subscribers standing for the two hubs' APIs, and each sku's channel quantity on its own
//! subject (DESIGN 10: other consumers subscribe to them). Timed from the first publish until
//! every event is stored, as the hubs with JetStream are. No HTTP, no JSON of events, no
//! idempotency lookup, no fold: what JetStream and `COPY` together reach on these cores when the
//! path carries what it has to.

use crate::{Ev, Opts, ev};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use driftless_bus::codec::{ChannelUpdate, OutcomeWire, OutcomesWire};
use futures::StreamExt;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The API's partitions (`BusOptions::partitions`' default).
const PARTITIONS: usize = 16;
/// Messages a copier pulls and copies at once.
const PULL: usize = 64;
/// Requests published at once (the hubs' benchmark keeps eight in flight).
const PUBLISHERS: usize = 8;
const COLUMNS: &str = "id, fingerprint, source, sku, location, at_nanos, seq, kind, on_hand, \
     received_nanos, outcome, effective, claims";

/// The fingerprint column of every row: 32 bytes in `COPY`'s text form of `bytea` (`\\x` and hex).
const FINGERPRINT: &str = "\\\\xabababababababababababababababababababababababababababababababab";

/// An event as a line of `COPY`'s text format, the row the hubs' `COPY` ceiling writes.
pub fn copy_line(e: &Ev) -> String {
    format!(
        "{}\t{FINGERPRINT}\twms\t{}\tDC1\t{}\t0\tadjust\t{}\t{}\tapplied\tt\tt\n",
        e.id, e.sku, e.at_nanos, e.delta, e.at_nanos
    )
}

/// Runs the ceiling on database `db` (which holds the hub's `events`) and NATS at `nats`, with a
/// stream of its own named after `prefix` (deleted after); returns events/s and the CPU spent.
pub async fn run(
    o: &Opts,
    db: &str,
    nats: &str,
    prefix: &str,
) -> anyhow::Result<(f64, crate::cpu::Spent)> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    sqlx::query("CREATE TABLE events_bus (LIKE events INCLUDING ALL)")
        .execute(&mut c)
        .await?;
    let client = async_nats::connect(nats).await?;
    let js = jetstream::new(client.clone());
    let name = format!("{prefix}_ceiling");
    // The two APIs' subscriptions to the outcomes, made before the stream and spawned only once
    // nothing can fail before the clean-up below, so that an error leaves no stream or task.
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let c = async_nats::connect(nats).await?;
        subscribers.push(c.subscribe(format!("{prefix}.ceiling_outcomes.>")).await?);
    }
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.ceiling.*")],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            max_bytes: 4 << 30,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            "copier",
            pull::Config {
                durable_name: Some("copier".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 8192,
                ..Default::default()
            },
        )
        .await?;
    let apis: Vec<_> = subscribers
        .into_iter()
        .map(|mut outcomes| tokio::spawn(async move { while outcomes.next().await.is_some() {} }))
        .collect();
    let result = async {
        let meter = crate::Phase::start(db).await?;
        let stored = Arc::new(AtomicUsize::new(0));
        let copiers: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(copier(
                    consumer.clone(),
                    (client.clone(), prefix.to_owned()),
                    db.to_owned(),
                    stored.clone(),
                    o.events,
                ))
            })
            .collect();
        let next = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|_| {
                let (js, next, prefix) = (js.clone(), next.clone(), prefix.to_owned());
                let (events, batch, skus) = (o.events, o.batch, o.skus);
                tokio::spawn(async move {
                    loop {
                        let first = next.fetch_add(batch, Ordering::Relaxed);
                        if first >= events {
                            return anyhow::Ok(());
                        }
                        let last = (first + batch).min(events);
                        publish_request(&js, &prefix, first..last, skus).await?;
                    }
                })
            })
            .collect();
        for p in publishers {
            p.await??;
        }
        for c in copiers {
            c.await??;
        }
        let spent = meter.stop().await?;
        anyhow::Ok((o.events as f64 / spent.wall, spent))
    }
    .await;
    let _ = js.delete_stream(&name).await;
    for api in apis {
        api.abort();
    }
    result
}

/// One request's events: a message per partition, sent, then their acknowledgements awaited.
async fn publish_request(
    js: &jetstream::Context,
    prefix: &str,
    events: std::ops::Range<usize>,
    skus: usize,
) -> anyhow::Result<()> {
    let mut parts = vec![String::new(); PARTITIONS];
    let first = events.start;
    for i in events {
        let e = ev(i, skus);
        parts[partition(&e.sku)].push_str(&copy_line(&e));
    }
    let mut acks = Vec::with_capacity(PARTITIONS);
    for (p, payload) in parts.into_iter().enumerate() {
        if payload.is_empty() {
            continue;
        }
        let msg = PublishMessage::build()
            .payload(payload.into())
            .message_id(format!("{first}-{p}"));
        acks.push(
            js.send_publish(format!("{prefix}.ceiling.{p}"), msg)
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

fn partition(sku: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sku.hash(&mut h);
    (h.finish() % PARTITIONS as u64) as usize
}

/// Pulls batches, copies them, acknowledges them, until `total` events are stored by all copiers.
async fn copier(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    (client, prefix): (async_nats::Client, String),
    db: String,
    stored: Arc<AtomicUsize>,
    total: usize,
) -> anyhow::Result<()> {
    let mut conn = PgConnectOptions::from_str(&db)?.connect().await?;
    while stored.load(Ordering::Relaxed) < total {
        let mut batch = consumer
            .batch()
            .max_messages(PULL)
            .expires(Duration::from_millis(100))
            .messages()
            .await?;
        let mut msgs = Vec::with_capacity(PULL);
        while let Some(m) = batch.next().await {
            msgs.push(m.map_err(|e| anyhow::anyhow!("pull: {e}"))?);
        }
        if msgs.is_empty() {
            continue;
        }
        let mut copy = conn
            .copy_in_raw(&format!("COPY events_bus ({COLUMNS}) FROM STDIN"))
            .await?;
        let mut n = 0;
        for m in &msgs {
            n += m.payload.iter().filter(|&&b| b == b'\n').count();
            copy.send(m.payload.as_ref()).await?;
        }
        copy.finish().await?;
        for m in &msgs {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        answer(&client, &prefix, &msgs).await?;
        stored.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// The messages an applier owes for a batch: its events' outcomes, one message (every event is
/// `wms`'s), and the channel quantity of each sku it touched, one message each.
async fn answer(
    client: &async_nats::Client,
    prefix: &str,
    msgs: &[jetstream::Message],
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let mut skus = std::collections::BTreeSet::new();
    for m in msgs {
        for line in std::str::from_utf8(&m.payload)?.lines() {
            let mut fields = line.split('\t');
            let id = fields.next().unwrap_or_default();
            let sku = fields.nth(2).unwrap_or_default();
            results.push(OutcomeWire {
                id: id.to_owned(),
                outcome: "applied".into(),
                reason: None,
            });
            skus.insert(sku.to_owned());
        }
    }
    let outcomes = serde_json::to_vec(&OutcomesWire::new("wms".into(), results))?;
    client
        .publish(format!("{prefix}.ceiling_outcomes.wms"), outcomes.into())
        .await?;
    for (version, sku) in skus.into_iter().enumerate() {
        let u = ChannelUpdate {
            channel: "shop".into(),
            quantity: 0,
            version: Some(version as i64),
            sku,
        };
        let subject = format!("{prefix}.ceiling_channels.shop.{}", u.sku);
        client
            .publish(subject, serde_json::to_vec(&u)?.into())
            .await?;
    }
    Ok(())
}
