//! Wiring of the optional JetStream event bus (`[server] nats_url`, `DRIFTLESS_NATS_URL`,
//! `--nats-url`; `docs/nats.md`): connect, set the stream up and start this process's appliers.
//! Three operational knobs come from the environment only: `DRIFTLESS_NATS_PREFIX` (subject
//! prefix and stream name, default `driftless`: hubs that share a ledger share it),
//! `DRIFTLESS_NATS_WAIT_MS` (how long `POST /v1/events` waits for outcomes before answering
//! `accepted`, default 2000) and `DRIFTLESS_NATS_ACK_WAIT_MS` (how long a message taken by a
//! process that died waits before JetStream hands it to another, default 30000).

use anyhow::Context;
use driftless_bus::{Bus, BusOptions};
use driftless_config::Settings;
use driftless_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// The bus when the settings name a NATS URL, with its appliers running.
pub async fn start(s: &Settings, store: Arc<dyn Store>) -> anyhow::Result<Option<Arc<Bus>>> {
    let Some(url) = &s.server.nats_url else {
        return Ok(None);
    };
    let mut opts = BusOptions::new(url.clone());
    if let Ok(p) = std::env::var("DRIFTLESS_NATS_PREFIX") {
        opts.prefix = p;
    }
    if let Ok(ms) = std::env::var("DRIFTLESS_NATS_WAIT_MS") {
        let ms: u64 = ms
            .parse()
            .context("DRIFTLESS_NATS_WAIT_MS: must be a whole number of milliseconds")?;
        opts.outcome_wait = Duration::from_millis(ms.min(60_000));
    }
    if let Ok(ms) = std::env::var("DRIFTLESS_NATS_ACK_WAIT_MS") {
        let ms: u64 = ms
            .parse()
            .context("DRIFTLESS_NATS_ACK_WAIT_MS: must be a whole number of milliseconds")?;
        // At least a second: below it a group still being applied would be handed out again
        // (harmless to the ledger, which answers duplicate, but wasted work).
        opts.ack_wait = Duration::from_millis(ms.clamp(1_000, 600_000));
    }
    let stream = opts.stream_name();
    let bus = Bus::connect(opts, store, s.rules.clone(), Arc::new(s.channel_specs()))
        .await
        .context("starting the JetStream event bus (nats_url)")?;
    bus.start_appliers();
    tracing::info!(stream = %stream, "events go through JetStream");
    Ok(Some(bus))
}
