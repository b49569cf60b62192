//! The hub auditing itself on `[audit] schedule`: every interval it writes its own view (the ledger
//! and what each channel was last acknowledged or observed showing), judges it with the same engine
//! as `driftless audit --live`, and stores the result for `driftless trend`. A failed run is logged
//! and the next one comes on schedule; the hub keeps serving.

use super::audit::record;
use driftless_config::Settings;
use driftless_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Starts the schedule when the configuration has one and channels to audit.
pub fn spawn(settings: Arc<Settings>, store: Arc<dyn Store>) -> Option<JoinHandle<()>> {
    let every = settings.audit.every?;
    if settings.channels.is_empty() {
        tracing::warn!(
            "[audit] schedule is set but no [[channels]] are declared: nothing to audit"
        );
        return None;
    }
    tracing::info!(every = ?every, "self-audit scheduled");
    Some(tokio::spawn(async move {
        // The first audit comes one interval after start, not at start: a restart is no reason to
        // audit, and a weekly schedule should stay weekly.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + every,
            every.max(Duration::from_secs(1)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match run_once(settings.clone(), store.clone()).await {
                Ok((drifting, compared)) => {
                    tracing::info!(drifting, compared, "self-audit stored");
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "self-audit failed"),
            }
        }
    }))
}

/// One audit of the hub by itself, stored; returns `(drifting, skus_compared)`.
pub async fn run_once(
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
) -> anyhow::Result<(u64, u64)> {
    let at = chrono::Utc::now();
    let dir = driftless_audit::live::TempDir::new()?;
    driftless_store::views::write_views(store.as_ref(), &settings.channel_specs(), dir.path(), at)
        .await?;
    let incidents = super::audit::live::hub_incidents(store.as_ref()).await?;
    let s = settings.clone();
    let mut report = tokio::task::spawn_blocking(move || {
        let r = driftless_audit::live::audit_views(&s, dir.path(), None, at);
        drop(dir);
        r
    })
    .await??;
    // The hub's stale and override incidents of the last week are evidence, as for `audit --live`.
    driftless_audit::live::apply_incidents(&mut report, &incidents, at - chrono::Duration::days(7));
    store.save_audit(&record(&report)?).await?;
    Ok((report.drifting, report.skus_compared))
}
