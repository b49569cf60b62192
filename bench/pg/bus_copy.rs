//! The ceiling of the JetStream path: the same events carried by JetStream the way the hubs carry
//! them and stored by `COPY`, with nothing else.
//!
//! Eight publishers send the events a request at a time: each request's events packed into one
//! message per partition (16, by a hash of the sku, as the API packs them), published with a
//! message id and their acknowledgements awaited. Two copiers (as two hubs' appliers) pull from
//! one durable consumer of a work-queue stream on file storage, `COPY` each pulled batch into a
//! table like `events` (same keys and indexes) and acknowledge its messages. Timed from the first
//! publish until every event is stored, as the hubs with JetStream are. No HTTP, no JSON, no
//! idempotency lookup, no fold, no outcomes or channel messages: what JetStream and `COPY`
//! together reach on these cores.

use crate::{Ev, Opts, ev};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use futures::StreamExt;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
/// stream of its own named after `prefix` (deleted after); returns events/s.
pub async fn run(o: &Opts, db: &str, nats: &str, prefix: &str) -> anyhow::Result<f64> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    sqlx::query("CREATE TABLE events_bus (LIKE events INCLUDING ALL)")
        .execute(&mut c)
        .await?;
    let js = jetstream::new(async_nats::connect(nats).await?);
    let name = format!("{prefix}_ceiling");
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
    let result = async {
        let start = Instant::now();
        let stored = Arc::new(AtomicUsize::new(0));
        let copiers: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(copier(
                    consumer.clone(),
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
        anyhow::Ok(o.events as f64 / start.elapsed().as_secs_f64())
    }
    .await;
    let _ = js.delete_stream(&name).await;
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
        stored.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}
