//! The live checkpoint at each hand-off (DESIGN §7a): one system's observation of what it shows,
//! judged against what it is expected to show, continuously instead of weekly.
//!
//! Pure: the caller (the server) reads the hub's ledger for the expected value and the stored
//! state of the key, calls [`judge`], and stores what comes back. The rules are the audit's:
//! the same thresholds ([`crate::over`]'s), the same hand-off names (`upstream->system` from the
//! chain) and the same probable causes, as far as one observation and the hub's ledger can tell
//! them (no change log here: `uom_mismatch`, `committed_not_mapped`, `sync_lag`, `manual_override`
//! from an observation's actor, else `unexplained`).

use driftless_config::Settings;
use driftless_config::audit::Threshold;
use driftless_core::SystemId;
use std::time::Duration;

/// The SLA when no documented hop reaches the system: the hub's own push path is event-driven,
/// so a minute covers a healthy hand-off and still finds a broken one the same hour.
pub const DEFAULT_SLA: Duration = Duration::from_secs(60);

/// What is stored per `(system, sku, location, state)` between observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub quantity: i64,
    pub observed_nanos: i64,
    /// What the system was expected to show at `observed_nanos`.
    pub expected: i64,
    /// Since when (observation time) it has been over the thresholds; `None`: in line.
    pub diverged_nanos: Option<i64>,
    /// Whether a `handoff_drift` incident is open for the key.
    pub open: bool,
    pub handoff: String,
    pub cause: String,
}

/// One observation as judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub quantity: i64,
    pub observed_nanos: i64,
    /// Who changed it, when the system says (a person at a storefront's admin).
    pub actor: Option<String>,
}

/// What the hub's ledger says about the key, for the expected value and the cause.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reading {
    pub expected: i64,
    /// The hub's `committed` behind the expected value (phantom availability is off by it).
    pub committed: i64,
    /// Values the system was expected to show earlier within the hop's window (a lagging system
    /// shows one of them).
    pub earlier: Vec<i64>,
    /// The pack factors configured for the sku (a unit error is off by one of them).
    pub factors: Vec<i64>,
}

/// What an observation changes about the key's incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Nothing,
    /// A `handoff_drift` incident opens; the detail names the values, the hand-off and the cause.
    Open(String),
    /// The system is back in line: the open incident closes.
    Close(String),
}

/// The hand-off an observation of `system` checks and its SLA: the chain names it after the
/// system's upstream (`erp->shop`); the chain's head and systems outside the chain are fed by
/// the hub (`hub->system`), and the head, which *sends* the truth, is checked as `wms->hub` (the
/// hub lacking its events). The SLA is the documented hop's into the system (from its upstream,
/// else any hop into it), else [`DEFAULT_SLA`].
pub fn handoff_of(settings: &Settings, system: &SystemId) -> (String, Duration) {
    let chain = &settings.audit.chain;
    let pos = chain.iter().position(|s| s == system);
    let (handoff, from) = match pos {
        Some(0) => (format!("{system}->hub"), None),
        Some(i) => (format!("{}->{system}", chain[i - 1]), Some(&chain[i - 1])),
        None => (format!("hub->{system}"), None),
    };
    let sla = settings
        .hops
        .iter()
        .find(|h| &h.to == system && from.is_none_or(|f| &h.from == f))
        .or_else(|| {
            settings
                .hops
                .iter()
                .find(|h| &h.to == system || &h.from == system)
        })
        .map_or(DEFAULT_SLA, |h| h.latency_sla);
    (handoff, sla)
}

/// How far back a drifting observation looks for a value its system was expected to show (the
/// `sync_lag` cause): the hop's schedule interval plus its SLA (a daily batch shows data up to a
/// day old), else a day.
pub fn window_of(settings: &Settings, system: &SystemId, sla: Duration) -> Duration {
    settings
        .hops
        .iter()
        .find(|h| &h.to == system)
        .and_then(|h| h.every)
        .map_or(Duration::from_secs(86_400), |every| every + sla)
}

/// DESIGN §7: drift when `|delta| > units` **and** `|delta| > pct` percent of the expected value.
pub fn over(t: &Threshold, delta: i64, expected: i64) -> bool {
    crate::engine_over(t, delta, expected)
}

/// The probable cause of one drifting observation, first rule that holds (§7's order, less the
/// rules that need a change log).
pub fn cause(obs: &Observation, r: &Reading, integration: impl Fn(&str) -> bool) -> &'static str {
    let (q, e) = (obs.quantity, r.expected);
    if obs.actor.as_deref().is_some_and(|a| !integration(a)) {
        return "manual_override";
    }
    if r.factors
        .iter()
        .any(|f| *f > 1 && (q.checked_mul(*f) == Some(e) || e.checked_mul(*f) == Some(q)))
    {
        return "uom_mismatch";
    }
    if r.committed != 0 && q.saturating_sub(e) == r.committed {
        return "committed_not_mapped";
    }
    if r.earlier.iter().any(|v| *v == q && *v != e) {
        return "sync_lag";
    }
    "unexplained"
}

/// Judges one observation against the stored state of its key. `None`: the observation is older
/// than the one already stored (or as old) and changes nothing: an older observation never
/// replaces a newer.
pub fn judge(
    prev: Option<&Watch>,
    obs: &Observation,
    reading: &Reading,
    threshold: &Threshold,
    handoff: &str,
    sla: Duration,
    integration: impl Fn(&str) -> bool,
) -> Option<(Watch, Transition)> {
    if prev.is_some_and(|p| p.observed_nanos >= obs.observed_nanos) {
        return None;
    }
    let delta = obs.quantity.saturating_sub(reading.expected);
    let drifting = over(threshold, delta, reading.expected);
    let was_open = prev.is_some_and(|p| p.open);
    if !drifting {
        let w = Watch {
            quantity: obs.quantity,
            observed_nanos: obs.observed_nanos,
            expected: reading.expected,
            diverged_nanos: None,
            open: false,
            handoff: handoff.to_owned(),
            cause: String::new(),
        };
        let t = if was_open {
            Transition::Close(format!(
                "{handoff}: back in line, shows {} (expected {})",
                obs.quantity, reading.expected
            ))
        } else {
            Transition::Nothing
        };
        return Some((w, t));
    }
    let since = prev
        .and_then(|p| p.diverged_nanos)
        .unwrap_or(obs.observed_nanos);
    let cause = cause(obs, reading, integration);
    let opening = !was_open && outlived(since, obs.observed_nanos, sla);
    let mut w = Watch {
        quantity: obs.quantity,
        observed_nanos: obs.observed_nanos,
        expected: reading.expected,
        diverged_nanos: Some(since),
        open: was_open,
        handoff: handoff.to_owned(),
        // Once found, a divergence keeps its cause until the incident opens with the reading
        // then (the caller may look at the past only when it matters: first seen, and opening).
        cause: match prev {
            Some(p) if was_open || (p.diverged_nanos.is_some() && !opening) => p.cause.clone(),
            _ => cause.to_owned(),
        },
    };
    let t = match outlived(since, obs.observed_nanos, sla) {
        true if !was_open => {
            w.open = true;
            Transition::Open(open_detail(&w, sla))
        }
        _ => Transition::Nothing,
    };
    Some((w, t))
}

/// A key whose divergence has outlived the SLA by `now` without a new observation (a system that
/// reported once and fell silent): the incident opens on the stored values.
pub fn overdue(w: &Watch, now_nanos: i64, sla: Duration) -> Option<(Watch, String)> {
    let since = w.diverged_nanos?;
    if w.open || !outlived(since, now_nanos, sla) {
        return None;
    }
    let mut w = w.clone();
    w.open = true;
    let d = open_detail(&w, sla);
    Some((w, d))
}

/// Whether a divergence first seen at `since` has lasted the SLA by `now`. Reached, not exceeded:
/// the divergence began before it was first seen (up to one observation interval), so waiting
/// for more than the SLA after that would detect it later than the SLA plus one interval.
fn outlived(since: i64, now: i64, sla: Duration) -> bool {
    let sla = i64::try_from(sla.as_nanos()).unwrap_or(i64::MAX);
    now.saturating_sub(since) >= sla
}

fn open_detail(w: &Watch, sla: Duration) -> String {
    format!(
        "{}: shows {}, expected {} (delta {:+}) for longer than the hop's SLA of {}s; \
         probable cause {}",
        w.handoff,
        w.quantity,
        w.expected,
        w.quantity.saturating_sub(w.expected),
        sla.as_secs(),
        w.cause
    )
}

/// The live audit's half for systems that report observations: each `observed-<system>.csv`
/// that `driftless_store::views::write_observed` wrote (with an `on_hand` column) is audited
/// against the hub's `hub.csv`, as the chain `hub -> system`, one report each, for
/// [`crate::live::audit_views`] to merge.
pub fn audit_observed(
    settings: &Settings,
    dir: &std::path::Path,
    empty_baseline: &std::path::Path,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::Report>, crate::AuditError> {
    let hub = SystemId::parse("hub").map_err(|e| crate::AuditError::Config(e.to_string()))?;
    let mut reports = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(reports);
    };
    let mut files: Vec<(SystemId, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix("observed-")?
                .strip_suffix(".csv")?
                .to_owned();
            Some((SystemId::parse(id).ok()?, e.path()))
        })
        .collect();
    files.sort();
    for (id, path) in files {
        let Some(spec) = settings.system(&id).cloned() else {
            continue;
        };
        let header = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
            .unwrap_or_default();
        if !header.split(',').any(|c| c == "on_hand") {
            continue;
        }
        let mut s = settings.clone();
        s.systems.retain(|x| x.id != hub && x.id != id);
        s.systems.push(driftless_config::SystemSpec {
            id: hub.clone(),
            role: driftless_config::Role::Wms,
            token_sha256: None,
        });
        s.systems.push(driftless_config::SystemSpec {
            role: driftless_config::Role::Wms,
            ..spec
        });
        s.audit.chain = vec![hub.clone(), id.clone()];
        s.audit.snapshots.clear();
        s.hops.clear();
        let input = crate::AuditInput {
            baseline: empty_baseline.to_path_buf(),
            snapshots: vec![(hub.clone(), dir.join("hub.csv")), (id.clone(), path)],
            changes: vec![],
            at,
        };
        reports.push(crate::run_files(&s, &input)?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn t() -> Threshold {
        Threshold { units: 2, pct: 1.0 }
    }

    fn obs(q: i64, at: i64) -> Observation {
        Observation {
            quantity: q,
            observed_nanos: at * S,
            actor: None,
        }
    }

    fn reading(e: i64) -> Reading {
        Reading {
            expected: e,
            ..Reading::default()
        }
    }

    fn step(prev: Option<&Watch>, o: Observation, r: Reading) -> Option<(Watch, Transition)> {
        judge(
            prev,
            &o,
            &r,
            &t(),
            "wms->erp",
            Duration::from_secs(60),
            |_| true,
        )
    }

    #[test]
    fn drift_opens_after_the_sla_and_closes_when_back_in_line() {
        let (w, tr) = step(None, obs(90, 0), reading(100)).unwrap();
        assert_eq!(tr, Transition::Nothing, "within the SLA: not yet");
        assert_eq!(w.diverged_nanos, Some(0));
        let (w, tr) = step(Some(&w), obs(90, 30), reading(100)).unwrap();
        assert_eq!(tr, Transition::Nothing);
        let (w, tr) = step(Some(&w), obs(90, 61), reading(100)).unwrap();
        let Transition::Open(d) = tr else {
            panic!("{tr:?}")
        };
        assert!(
            d.starts_with("wms->erp: shows 90, expected 100 (delta -10)"),
            "{d}"
        );
        assert!(w.open);
        // Still drifting: stays open, no second incident.
        let (w, tr) = step(Some(&w), obs(91, 90), reading(100)).unwrap();
        assert_eq!(tr, Transition::Nothing);
        assert!(w.open);
        let (w, tr) = step(Some(&w), obs(100, 120), reading(100)).unwrap();
        assert!(matches!(tr, Transition::Close(_)), "{tr:?}");
        assert!(!w.open && w.diverged_nanos.is_none());
    }

    #[test]
    fn an_older_observation_never_replaces_a_newer() {
        let (w, _) = step(None, obs(100, 50), reading(100)).unwrap();
        assert!(step(Some(&w), obs(10, 40), reading(100)).is_none());
        assert!(step(Some(&w), obs(10, 50), reading(100)).is_none());
    }

    #[test]
    fn within_the_thresholds_is_not_drift() {
        let (w, tr) = step(None, obs(99, 0), reading(100)).unwrap();
        assert_eq!(tr, Transition::Nothing);
        assert!(w.diverged_nanos.is_none());
    }

    #[test]
    fn a_silent_system_opens_when_overdue() {
        let (w, _) = step(None, obs(50, 0), reading(100)).unwrap();
        assert!(overdue(&w, 30 * S, Duration::from_secs(60)).is_none());
        let (w2, d) = overdue(&w, 61 * S, Duration::from_secs(60)).unwrap();
        assert!(w2.open && d.contains("wms->erp"), "{d}");
        assert!(overdue(&w2, 100 * S, Duration::from_secs(60)).is_none());
    }

    #[test]
    fn causes_follow_the_audits_order() {
        let r = Reading {
            expected: 24,
            committed: 3,
            earlier: vec![20],
            factors: vec![12],
        };
        let by = |q: i64, actor: Option<&str>| {
            cause(
                &Observation {
                    quantity: q,
                    observed_nanos: 0,
                    actor: actor.map(str::to_owned),
                },
                &r,
                |a| a == "sync-bot",
            )
        };
        assert_eq!(by(2, None), "uom_mismatch");
        assert_eq!(by(27, None), "committed_not_mapped");
        assert_eq!(by(20, None), "sync_lag");
        assert_eq!(by(5, None), "unexplained");
        assert_eq!(by(5, Some("alice")), "manual_override");
        assert_eq!(by(5, Some("sync-bot")), "unexplained");
    }
}
