//! Channel quantities on `<prefix>.channels.<channel>.<sku>` (core NATS). The group workers and
//! the API's direct path only note which skus changed; one task per process reads the noted
//! skus' levels and versions (two statements for all of them) and publishes every channel's
//! quantity. So applying never waits for these reads, and a sku changed by many groups while the
//! task was busy is read and published once, with its newest quantity and version.
//!
//! A consumer keeps the highest `version` of a sku (processes publish concurrently). Publishing
//! is best effort, as core NATS is: a consumer that must not miss an update captures
//! `<prefix>.channels.>` in a stream of its own.

use crate::Bus;
use crate::codec::ChannelUpdate;
use driftless_core::{Event, Sku};
use driftless_store::Receipt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Skus read in one pair of statements.
const READ_CHUNK: usize = 1000;

/// The skus whose channel quantities are waiting to be published.
#[derive(Debug, Default)]
pub(crate) struct ChangedSkus {
    skus: std::sync::Mutex<BTreeSet<Sku>>,
    wake: Notify,
    closed: AtomicBool,
}

impl ChangedSkus {
    fn take(&self) -> Vec<Sku> {
        self.skus
            .lock()
            .map(|mut s| std::mem::take(&mut *s).into_iter().collect())
            .unwrap_or_default()
    }

    /// Ends the publisher once it has published what is noted.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

impl Bus {
    /// Notes the skus of a decided group whose channel quantities may have moved: those of the
    /// outcomes that mark the outbox. A receipt does not say whether its event was effective; an
    /// ineffective one only publishes its sku's unchanged quantity again, which a consumer
    /// keeping the highest version ignores.
    pub(crate) fn channel_skus_changed(&self, decided: &[(&Event, &Receipt)]) {
        if self.channels.is_empty() {
            return;
        }
        let mut noted = false;
        if let Ok(mut skus) = self.changed.skus.lock() {
            for (e, _) in decided.iter().filter(|(_, r)| r.outcome.marks_outbox(true)) {
                noted |= skus.insert(e.sku.clone());
            }
        }
        if noted {
            self.changed.wake.notify_one();
        }
    }

    /// The publisher task: whatever is noted, read and published, until [`ChangedSkus::close`].
    pub(crate) async fn run_channel_publisher(self: Arc<Bus>) {
        loop {
            self.changed.wake.notified().await;
            // Until nothing is noted: skus noted while this round published are taken too, so
            // after `close` (called once nothing applies any more) nothing is left behind.
            loop {
                let skus = self.changed.take();
                if skus.is_empty() {
                    break;
                }
                for chunk in skus.chunks(READ_CHUNK) {
                    self.publish_channels(chunk).await;
                }
            }
            if self.changed.closed.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Every channel's quantity of these skus: two reads for all of them, not two per sku.
    async fn publish_channels(&self, skus: &[Sku]) {
        let (levels, versions) = match tokio::try_join!(
            self.store.checkpoint_levels(skus),
            self.store.sku_versions(skus)
        ) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "channel quantities not published");
                return;
            }
        };
        for sku in skus {
            let Some(levels) = levels.get(sku) else {
                continue;
            };
            let version = versions.get(sku).copied();
            for c in self.channels.iter() {
                let atp = levels
                    .iter()
                    .filter(|(loc, _)| c.feeds_from(loc))
                    .map(|(_, l)| l.available())
                    .fold(0i64, i64::saturating_add);
                let u = ChannelUpdate {
                    channel: c.id.to_string(),
                    sku: sku.to_string(),
                    quantity: c.quantity(sku, atp),
                    version,
                };
                let payload = serde_json::to_vec(&u).unwrap_or_default();
                let subject = self.opts.channel_subject(c.id.as_str(), sku.as_str());
                if let Err(e) = self.client.publish(subject, payload.into()).await {
                    tracing::debug!(error = %e, "a channel quantity was not published");
                }
            }
        }
    }
}
