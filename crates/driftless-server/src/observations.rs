//! Observations from every system (DESIGN §7a): `POST /v1/observations`, and the same machinery
//! behind a channel's own observations route and the Shopify webhook.
//!
//! An observation is what a system says it *shows*; it never changes the ledger. Each one is
//! compared with what that system is expected to show (the hub's ledger, read live, or folded as
//! of the observation's time when it speaks of the past) and judged by the audit's rules
//! (`driftless_audit::checkpoint`): a difference over the thresholds that outlives the hop's
//! `latency_sla` opens a `handoff_drift` incident, and the system back in line closes it. The
//! store keeps one row per `(system, sku, location, state)` and refuses to let an older
//! observation replace a newer one.
//!
//! Quantities are in base units. Bounded: at most [`MAX_OBSERVATIONS`] per request, a 1 MiB body,
//! and `[checkpoints] max_observations_per_second` per system (429 beyond).

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::read_body;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use driftless_audit::checkpoint::{self as judge, Observation, Reading, Transition, Watch};
use driftless_core::{ChannelSpec, Levels, Location, Sku, State as Bucket, SystemId};
use driftless_store::{CheckpointRow, Incident};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most observations in one request.
pub const MAX_OBSERVATIONS: usize = 1000;
const MAX_BODY: usize = 1024 * 1024;
/// An observation older than this speaks of the past: its expected value is the ledger folded as
/// of then, not the live levels (which a fresh observation is compared with, cheaply).
const LIVE_WINDOW: Duration = Duration::from_secs(5);
/// How often the server sweeps for divergences that outlived their SLA without a new observation.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The state name of a channel-level observation.
pub const CHANNEL: &str = "channel";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/observations", post(post_observations))
}

/// Observations a system may report per second: a token bucket per system holding one second's
/// worth, so a burst up to the rate passes and a steady flood beyond it is refused.
#[derive(Debug)]
pub struct Limiter {
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(per_second: u32) -> Limiter {
        Limiter {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` observations from `system`'s bucket, or says how long until they fit.
    fn take(&self, system: &str, n: usize) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = b.entry(system.to_owned()).or_insert((self.per_second, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.per_second);
        *last = now;
        let need = n as f64;
        if *tokens >= need {
            *tokens -= need;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            ((need - *tokens) / self.per_second).min(3600.0),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObservation {
    sku: String,
    location: Option<String>,
    state: Option<String>,
    channel: Option<String>,
    quantity: i64,
    observed_at: Option<String>,
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body_ {
    /// Whose observations these are; the token's own system when absent (an operator names it).
    system: Option<String>,
    observations: Vec<RawObservation>,
}

/// One validated observation.
#[derive(Debug, Clone)]
pub struct Item {
    pub sku: Sku,
    /// `None`: channel level.
    pub location: Option<Location>,
    /// A state, `available`, or [`CHANNEL`].
    pub state: String,
    /// The channel whose quantity a channel-level observation shows.
    pub channel: Option<String>,
    pub quantity: i64,
    pub observed_at: DateTime<Utc>,
    pub actor: Option<String>,
}

/// `POST /v1/observations`: `{"system"?, "observations": [{"sku", "location"?, "state" |
/// "channel", "quantity", "observed_at", "actor"?}]}` with the system's own token.
async fn post_observations(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if matches!(who, Principal::Reader) {
        return Err(ApiError::Forbidden(
            "a read-only token cannot report observations".into(),
        ));
    }
    let bytes = read_body(&st, body, MAX_BODY).await?;
    let b: Body_ =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let system = match (&who, &b.system) {
        (Principal::System(me), Some(s)) if s != me.as_str() => {
            return Err(ApiError::Forbidden(format!(
                "the token belongs to `{me}`; only `{s}` reports its own observations"
            )));
        }
        (Principal::System(me), _) => me.clone(),
        (_, Some(s)) => SystemId::parse(s.clone())
            .map_err(|e| ApiError::InvalidRequest(format!("system: {e}")))?,
        (_, None) => {
            return Err(ApiError::InvalidRequest(
                "system: required with an operator token (whose observations these are)".into(),
            ));
        }
    };
    if st.settings.system(&system).is_none() {
        return Err(ApiError::InvalidRequest(format!(
            "system: `{system}` is not a registered system"
        )));
    }
    if b.observations.len() > MAX_OBSERVATIONS {
        return Err(ApiError::InvalidRequest(format!(
            "observations: at most {MAX_OBSERVATIONS} per request"
        )));
    }
    let now = (st.clock)();
    let mut items = Vec::with_capacity(b.observations.len());
    for (i, o) in b.observations.into_iter().enumerate() {
        items.push(validate(&st, &system, i, o, now)?);
    }
    take(&st, &system, items.len())?;
    let results = check(&st, &system, &items).await?;
    Ok(Json(json!({ "results": results })))
}

/// Counts `n` observations against `system`'s rate; 429 beyond it.
pub fn take(st: &AppState, system: &SystemId, n: usize) -> Result<(), ApiError> {
    st.observations.take(system.as_str(), n).map_err(|wait| {
        ApiError::RateLimited(format!(
            "`{system}` is over its {} observations per second ([checkpoints] \
             max_observations_per_second); retry in {} ms",
            st.settings.checkpoints.max_observations_per_second,
            wait.as_millis().max(1)
        ))
    })
}

/// A channel-level observation of `channel` (its observations route, the Shopify webhook).
pub fn channel_item(
    channel: &str,
    sku: &str,
    quantity: i64,
    observed_at: DateTime<Utc>,
    actor: Option<String>,
) -> Result<Item, ApiError> {
    Ok(Item {
        sku: Sku::parse(sku).map_err(|e| ApiError::InvalidRequest(format!("sku: {e}")))?,
        location: None,
        state: CHANNEL.to_owned(),
        channel: Some(channel.to_owned()),
        quantity,
        observed_at,
        actor,
    })
}

fn validate(
    st: &AppState,
    system: &SystemId,
    i: usize,
    o: RawObservation,
    now: DateTime<Utc>,
) -> Result<Item, ApiError> {
    let bad = |field: &str, m: String| {
        ApiError::InvalidRequest(format!("observations[{i}].{field}: {m}"))
    };
    let sku = Sku::parse(o.sku).map_err(|e| bad("sku", e.to_string()))?;
    if o.quantity.unsigned_abs() > driftless_core::MAX_QUANTITY as u64 {
        return Err(bad(
            "quantity",
            format!("at most {} in absolute value", driftless_core::MAX_QUANTITY),
        ));
    }
    let observed_at = match &o.observed_at {
        None => {
            return Err(bad(
                "observed_at",
                "required (RFC 3339: when the system showed it)".into(),
            ));
        }
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| bad("observed_at", format!("not an RFC 3339 timestamp ({e})")))?
            .with_timezone(&Utc),
    };
    if let Some(skew) = st.settings.rules.max_future_skew
        && observed_at > now + chrono::Duration::from_std(skew).unwrap_or_default()
    {
        return Err(bad(
            "observed_at",
            "ahead of the hub's clock by more than [ledger] max_future_skew".into(),
        ));
    }
    if o.actor.as_ref().is_some_and(|a| a.len() > 200) {
        return Err(bad("actor", "at most 200 bytes".into()));
    }
    let (location, state, channel) = match o.location {
        Some(l) => {
            if o.channel.is_some() {
                return Err(bad(
                    "channel",
                    "only for channel-level observations (no location)".into(),
                ));
            }
            let l = Location::parse(l).map_err(|e| bad("location", e.to_string()))?;
            let s = o.state.ok_or_else(|| {
                bad("state", "required with a location: on_hand, committed, reserved, incoming, unavailable or available".into())
            })?;
            if s != "available" && s.parse::<Bucket>().is_err() {
                return Err(bad(
                    "state",
                    format!(
                        "`{s}` is not a state (on_hand, committed, reserved, incoming, unavailable, available)"
                    ),
                ));
            }
            (Some(l), s, None)
        }
        None => {
            if o.state.as_deref().is_some_and(|s| s != CHANNEL) {
                return Err(bad(
                    "location",
                    "required for a state; without one the observation is of a channel's quantity"
                        .into(),
                ));
            }
            let ch = o.channel.unwrap_or_else(|| system.to_string());
            if st.channels.iter().all(|c| c.id.as_str() != ch) {
                return Err(bad(
                    "channel",
                    format!(
                        "`{ch}` is not a configured channel (give a location and state, or the channel)"
                    ),
                ));
            }
            (None, CHANNEL.to_owned(), Some(ch))
        }
    };
    Ok(Item {
        sku,
        location,
        state,
        channel,
        quantity: o.quantity,
        observed_at,
        actor: o.actor,
    })
}

/// The hub's levels of a sku as of a past moment, folded from its ledger.
async fn levels_as_of(
    st: &AppState,
    sku: &Sku,
    at: DateTime<Utc>,
) -> Result<Vec<(Location, Levels)>, ApiError> {
    let ledger = crate::asof::ledger(st, sku).await?;
    Ok(driftless_core::fold_as_of(&ledger, Some(at)).locations)
}

/// What the item's system is expected to show, from levels: the state (or ATP) at the location,
/// or the channel's quantity; with the `committed` behind it (for the cause).
fn expected_from(
    channels: &[ChannelSpec],
    item: &Item,
    levels: &[(Location, Levels)],
) -> (i64, i64) {
    match (&item.location, &item.channel) {
        (Some(loc), _) => {
            let l = levels
                .iter()
                .find(|(x, _)| x == loc)
                .map(|(_, l)| *l)
                .unwrap_or_default();
            let v = match item.state.parse::<Bucket>() {
                Ok(s) => l.get(s),
                Err(_) => l.available(),
            };
            (v, l.get(Bucket::Committed))
        }
        (None, Some(ch)) => {
            let Some(spec) = channels.iter().find(|c| c.id.as_str() == ch) else {
                return (0, 0);
            };
            let feeding = levels.iter().filter(|(l, _)| spec.feeds_from(l));
            let (atp, committed) = feeding.fold((0i64, 0i64), |(a, c), (_, l)| {
                (
                    a.saturating_add(l.available()),
                    c.saturating_add(l.get(Bucket::Committed)),
                )
            });
            (spec.quantity(&item.sku, atp), committed)
        }
        (None, None) => (0, 0),
    }
}

/// Most moments of a sku's history a drifting observation is compared with.
const MAX_EARLIER: usize = 64;

/// What `item`'s system was expected to show at each change the hub received within `window`
/// before the observation, and at the window's start.
async fn earlier(st: &AppState, item: &Item, window: Duration) -> Result<Vec<i64>, ApiError> {
    let ledger = crate::asof::ledger(st, &item.sku).await?;
    let start = item.observed_at - chrono::Duration::from_std(window).unwrap_or_default();
    let mut moments: Vec<DateTime<Utc>> = ledger
        .iter()
        .map(|e| e.received_at)
        .filter(|t| *t >= start && *t < item.observed_at)
        .collect();
    moments.sort_unstable();
    moments.dedup();
    let skip = moments.len().saturating_sub(MAX_EARLIER);
    let mut out = Vec::with_capacity(MAX_EARLIER + 1);
    for t in std::iter::once(start).chain(moments.into_iter().skip(skip)) {
        let folded = driftless_core::fold_as_of(&ledger, Some(t)).locations;
        out.push(expected_from(&st.channels, item, &folded).0);
    }
    Ok(out)
}

fn key_of(system: &SystemId, item: &Item) -> (String, String, String, String) {
    (
        system.to_string(),
        item.sku.to_string(),
        item.location
            .as_ref()
            .map(|l| l.to_string())
            .unwrap_or_default(),
        item.state.clone(),
    )
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn watch_of(r: &CheckpointRow) -> Watch {
    Watch {
        quantity: r.quantity,
        observed_nanos: nanos(r.observed_at),
        expected: r.expected,
        diverged_nanos: r.diverged_since.map(nanos),
        open: r.open,
        handoff: r.handoff.clone(),
        cause: r.cause.clone(),
    }
}

/// The row of a key (`key_of`'s strings; its system and sku as the typed ids they came from).
fn row_of(
    system: &SystemId,
    sku: &Sku,
    key: &(String, String, String, String),
    w: &Watch,
) -> CheckpointRow {
    use chrono::TimeZone;
    CheckpointRow {
        system: system.clone(),
        sku: sku.clone(),
        location: key.2.clone(),
        state: key.3.clone(),
        quantity: w.quantity,
        observed_at: Utc.timestamp_nanos(w.observed_nanos),
        expected: w.expected,
        diverged_since: w.diverged_nanos.map(|n| Utc.timestamp_nanos(n)),
        open: w.open,
        handoff: w.handoff.clone(),
        cause: w.cause.clone(),
    }
}

/// Judges and stores observations of `system` (already validated and counted against its rate):
/// the one machinery behind `POST /v1/observations`, a channel's observations route and the
/// Shopify webhook. Returns one result per item.
pub async fn check(
    st: &AppState,
    system: &SystemId,
    items: &[Item],
) -> Result<Vec<Value>, ApiError> {
    let keys: Vec<_> = items.iter().map(|i| key_of(system, i)).collect();
    let now = (st.clock)();
    let live_window = chrono::Duration::from_std(LIVE_WINDOW).unwrap_or_default();
    let past = |item: &Item| now.signed_duration_since(item.observed_at) > live_window;
    // The live levels of every sku a fresh observation speaks of, in one read beside the one of
    // the keys' rows (not a read per sku).
    let mut fresh: Vec<Sku> = items
        .iter()
        .filter(|i| !past(i))
        .map(|i| i.sku.clone())
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    let (stored, live) = tokio::try_join!(
        st.store.checkpoint_rows(&keys),
        st.store.checkpoint_levels(&fresh)
    )?;
    let mut watches: HashMap<(String, String, String, String), Watch> = stored
        .iter()
        .map(|r| {
            (
                (
                    r.system.to_string(),
                    r.sku.to_string(),
                    r.location.clone(),
                    r.state.clone(),
                ),
                watch_of(r),
            )
        })
        .collect();
    let (handoff, sla) = judge::handoff_of(&st.settings, system);
    let window = judge::window_of(&st.settings, system, sla);
    let audit = &st.settings.audit;
    let mut rows: Vec<(CheckpointRow, Option<Incident>)> = Vec::new();
    let mut results = Vec::with_capacity(items.len());
    for (item, key) in items.iter().zip(&keys) {
        let as_of;
        let levels: &[(Location, Levels)] = if past(item) {
            as_of = levels_as_of(st, &item.sku, item.observed_at).await?;
            &as_of
        } else {
            live.get(&item.sku).map_or(&[], |l| l.as_slice())
        };
        let (expected, committed) = expected_from(&st.channels, item, levels);
        let prev = watches.get(key);
        let threshold = audit.threshold_for(item.sku.as_str());
        let mut reading = Reading {
            expected,
            committed,
            earlier: prev.map(|p| p.expected).into_iter().collect(),
            factors: st
                .settings
                .rules
                .units
                .rules()
                .iter()
                .filter(|u| u.sku.matches(item.sku.as_str()))
                .map(|u| i64::from(u.factor))
                .collect(),
        };
        let drifting = judge::over(&threshold, item.quantity.saturating_sub(expected), expected);
        // The cause is kept from the observation that first sees the divergence (the sweep opens
        // on it) and from the one that opens the incident; in between it is not looked at.
        let since = prev.and_then(|p| p.diverged_nanos);
        let opens_now = since.is_none_or(|s| {
            nanos(item.observed_at).saturating_sub(s)
                >= i64::try_from(sla.as_nanos()).unwrap_or(i64::MAX)
        });
        if drifting && !prev.is_some_and(|p| p.open) && opens_now {
            // Only a drifting key pays for the past: the values it was expected to show earlier
            // within the hop's window (a system lagging behind, or whose replication stopped,
            // shows one of them), from one read of the sku's ledger.
            reading.earlier.extend(earlier(st, item, window).await?);
        }
        let obs = Observation {
            quantity: item.quantity,
            observed_nanos: nanos(item.observed_at),
            actor: item.actor.clone(),
        };
        let judged = judge::judge(prev, &obs, &reading, &threshold, &handoff, sla, |a| {
            audit.is_integration(a)
        });
        let mut result = json!({
            "sku": item.sku.as_str(),
            "location": item.location.as_ref().map(|l| l.as_str()),
            "state": item.state,
            "quantity": item.quantity,
            "expected": expected,
            "handoff": handoff,
        });
        let Some((w, transition)) = judged else {
            result["outcome"] = "ignored".into();
            result["reason"] = "older than the observation already recorded for this key".into();
            results.push(result);
            continue;
        };
        result["outcome"] = if w.diverged_nanos.is_some() {
            "drifting"
        } else {
            "in_line"
        }
        .into();
        let incident = match &transition {
            Transition::Nothing => None,
            Transition::Open(d) | Transition::Close(d) => {
                let closing = matches!(transition, Transition::Close(_));
                result["incident"] = if closing { "closed" } else { "opened" }.into();
                Some(Incident {
                    kind: "handoff_drift".into(),
                    sku: Some(item.sku.clone()),
                    location: item.location.clone(),
                    system: Some(system.to_string()),
                    actor: item.actor.clone(),
                    event_id: None,
                    detail: if closing {
                        format!("closed: {d}")
                    } else {
                        d.clone()
                    },
                    at: item.observed_at,
                })
            }
        };
        if w.diverged_nanos.is_some() {
            result["cause"] = w.cause.clone().into();
            if let Some(d) = w.diverged_nanos {
                use chrono::TimeZone;
                result["diverged_since"] = Utc
                    .timestamp_nanos(d)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                    .into();
            }
        }
        rows.push((row_of(system, &item.sku, key, &w), incident));
        watches.insert(key.clone(), w);
        results.push(result);
    }
    st.store.save_checkpoints(&rows).await?;
    Ok(results)
}

/// Opens the incidents of keys whose divergence outlived the SLA with no newer observation (a
/// system that reported once and fell silent). Run now and then by the server.
pub async fn sweep(st: &AppState) -> Result<usize, ApiError> {
    let now = nanos((st.clock)());
    let mut after = None;
    let mut opened = 0;
    loop {
        let page = st
            .store
            .checkpoints(&driftless_store::CheckpointFilter {
                system: None,
                drifting: true,
                after: after.clone(),
                limit: 1000,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((
            last.system.to_string(),
            last.sku.to_string(),
            last.location.clone(),
            last.state.clone(),
        ));
        let mut rows = Vec::new();
        for r in &page {
            let system = &r.system;
            let (_, sla) = judge::handoff_of(&st.settings, system);
            if let Some((w, detail)) = judge::overdue(&watch_of(r), now, sla) {
                let key = (
                    r.system.to_string(),
                    r.sku.to_string(),
                    r.location.clone(),
                    r.state.clone(),
                );
                let incident = Incident {
                    kind: "handoff_drift".into(),
                    sku: Some(r.sku.clone()),
                    // Empty at channel level; a stored location is one the hub accepted.
                    location: Location::parse(&r.location).ok(),
                    system: Some(r.system.to_string()),
                    actor: None,
                    event_id: None,
                    detail,
                    at: (st.clock)(),
                };
                rows.push((row_of(&r.system, &r.sku, &key, &w), Some(incident)));
            }
        }
        opened += st.store.save_checkpoints(&rows).await?;
        if page.len() < 1000 {
            break;
        }
    }
    Ok(opened)
}
