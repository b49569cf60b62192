//! `[[channels]]`: where the sellable quantity is pushed, what it is computed from, and how the
//! dispatcher reaches the channel.

use crate::checks::{either, glob, ident, non_negative, positive, share};
use crate::error::Locator;
use crate::raw::RawChannel;
use crate::{ChannelConfig, MAX_BATCH_SIZE, OnOverride};
use driftless_core::{ChannelRule, ChannelSpec, Location, Ppm, SystemId};

/// Connectors a channel may name.
const CONNECTORS: [&str; 4] = ["webhook", "shopify", "file", "none"];

/// One channel whose id is already checked; errors go to `loc`.
pub(crate) fn validate(loc: &mut Locator<'_>, c: &RawChannel, id: SystemId) -> ChannelConfig {
    let locations: Vec<Location> = c
        .locations
        .iter()
        .filter_map(|l| ident(loc, l, "location", Location::parse))
        .collect();
    let rules = rules(loc, c);
    let on_override = either(
        loc,
        c.on_override.as_ref(),
        "on_override",
        [
            ("overwrite", OnOverride::Overwrite),
            ("hold", OnOverride::Hold),
        ],
    );
    let connector = connector(loc, c, &id);
    // A channel's errors are listed in this order: locations and rules, connector, the
    // dispatcher's limits, then the quantity's own keys.
    let max_attempts = c
        .max_attempts
        .as_ref()
        .and_then(|v| positive(loc, v, "max_attempts", 100))
        .unwrap_or(8);
    let concurrency = c
        .concurrency
        .as_ref()
        .and_then(|v| positive(loc, v, "concurrency", 1024));
    let rate_limit = c
        .rate_limit
        .as_ref()
        .and_then(|v| positive(loc, v, "rate_limit", 1_000_000));
    let batch_size = batch_size(loc, c, &id, &connector);
    ChannelConfig {
        spec: ChannelSpec {
            id,
            locations,
            safety_stock: c
                .safety_stock
                .as_ref()
                .and_then(|v| non_negative(loc, v, "safety_stock"))
                .unwrap_or(0),
            allocation: c
                .allocation
                .as_ref()
                .and_then(|v| share(loc, v))
                .unwrap_or(Ppm::ONE),
            pack: c
                .pack
                .as_ref()
                .and_then(|v| positive(loc, v, "pack", 1_000_000))
                .unwrap_or(1),
            rules,
        },
        on_override,
        connector,
        url: c.url.clone(),
        secret_env: c.secret_env.clone(),
        path: c.path.clone(),
        schedule: c.schedule.clone(),
        shop_domain: c.shop_domain.clone(),
        api_version: c.api_version.clone(),
        token_env: c.token_env.clone(),
        max_attempts,
        concurrency,
        rate_limit,
        batch_size,
    }
}

/// The per-sku rules (`[[channels.rules]]`); a rule whose sku pattern is invalid is left out.
fn rules(loc: &mut Locator<'_>, c: &RawChannel) -> Vec<ChannelRule> {
    let mut rules = Vec::new();
    for r in &c.rules {
        let Some(sku) = glob(loc, &r.sku) else {
            continue;
        };
        rules.push(ChannelRule {
            sku,
            safety_stock: r
                .safety_stock
                .as_ref()
                .and_then(|v| non_negative(loc, v, "safety_stock")),
            allocation: r.allocation.as_ref().and_then(|v| share(loc, v)),
            pack: r
                .pack
                .as_ref()
                .and_then(|v| positive(loc, v, "pack", 1_000_000)),
        });
    }
    rules
}

/// The connector's name, with what it needs checked (a webhook's url and signing key).
fn connector(loc: &mut Locator<'_>, c: &RawChannel, id: &SystemId) -> String {
    let connector = c
        .connector
        .as_ref()
        .map_or("none", |v| v.get_ref().as_str())
        .to_owned();
    if !CONNECTORS.contains(&connector.as_str())
        && let Some(v) = &c.connector
    {
        loc.err(
            v.span(),
            format!("unknown connector {connector:?}"),
            Some("one of webhook, shopify, file, none".into()),
        );
    }
    if connector == "webhook" && c.url.is_none() {
        loc.err(
            c.id.span(),
            format!("channel `{id}` uses the webhook connector but has no url"),
            Some("url = \"http://127.0.0.1:9000/push\"".into()),
        );
    }
    // Without a key the dispatcher cannot sign, so the channel would stay stopped while its
    // outbox grows; better refused here than found out from a backlog.
    if connector == "webhook" && c.secret_env.as_deref().is_none_or(str::is_empty) {
        loc.err(
            c.id.span(),
            format!(
                "channel `{id}` uses the webhook connector but has no secret_env: its pushes \
                 could not be signed"
            ),
            Some(format!(
                "secret_env = \"DRIFTLESS_{}_SECRET\" (the environment variable holding the \
                 HMAC-SHA256 key the receiver checks)",
                id.as_str().to_ascii_uppercase().replace('-', "_")
            )),
        );
    }
    connector
}

fn batch_size(loc: &mut Locator<'_>, c: &RawChannel, id: &SystemId, connector: &str) -> u32 {
    let batch_size = c
        .batch_size
        .as_ref()
        .and_then(|v| positive(loc, v, "batch_size", MAX_BATCH_SIZE))
        .unwrap_or(1);
    // Only the webhook has a batch request; elsewhere a batch would be pushed one by one in
    // one slot, slower than the default, which is not what the key promises.
    if batch_size > 1
        && connector != "webhook"
        && let Some(v) = &c.batch_size
    {
        loc.err(
            v.span(),
            format!(
                "batch_size above 1 needs a connector with a batch request (webhook); \
                 channel `{id}` uses {connector}"
            ),
            Some("remove batch_size or set it to 1".into()),
        );
    }
    batch_size
}
