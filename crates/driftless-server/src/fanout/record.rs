//! The recorder task behind each dispatcher: it writes push results to the store in batches, so
//! that waiting for the ledger never holds up the next pushes, and reports which skus are settled.

use driftless_core::Sku;
use driftless_store::Store;
use driftless_store::outbox::PushRecord;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Writes push results in batches, retrying until they are stored (losing one would lose an
/// attempt count or a dead letter; repeating one is harmless: every write is an upsert), then tells
/// the dispatcher which skus are settled.
pub(super) async fn record_loop(
    store: Arc<dyn Store>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    channel: String,
    mut rx: mpsc::Receiver<(Vec<PushRecord>, Vec<Sku>)>,
    settled: mpsc::UnboundedSender<(Vec<Sku>, Vec<Sku>)>,
) {
    while let Some((mut records, mut skus)) = rx.recv().await {
        while records.len() < 4000 {
            match rx.try_recv() {
                Ok((r, s)) => {
                    records.extend(r);
                    skus.extend(s);
                }
                Err(_) => break,
            }
        }
        if let Some(m) = &metrics {
            m.pushes(&channel, &records);
        }
        let mut delay = Duration::from_millis(10);
        let again = loop {
            match store.outbox_record(&channel, &records).await {
                Ok(again) => break again,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "recording push results failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let _ = settled.send((skus, again));
    }
}
