//! The decision for one event: its outcome and what it does to each state's cell.
//!
//! For each `(sku, location, state)` the value is the newest-positioned `set` (0 if none) plus every
//! effective `adjust` delta positioned after that `set`. This module decides; the caller (the
//! in-memory ledger or a database store) owns the cells and the stored deltas. Keeping the decision
//! here means SQLite, PostgreSQL and the simulator cannot disagree on what an event does.

use crate::authority::{Authority, Verdict};
use crate::event::{Event, Fingerprint, OrderKey};
use crate::id::{Sku, SystemId, Unit};
use crate::state::{State, StateMap};
use crate::units::UnitTable;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Every event gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    Duplicate,
    Conflict,
    Stale,
    Covered,
    Override,
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Applied,
        Outcome::Duplicate,
        Outcome::Conflict,
        Outcome::Stale,
        Outcome::Covered,
        Outcome::Override,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict => "conflict",
            Outcome::Stale => "stale",
            Outcome::Covered => "covered",
            Outcome::Override => "override",
            Outcome::Rejected => "rejected",
        }
    }

    /// Whether an event with this outcome marks the outbox of every channel its location feeds:
    /// every event that counts (`effective`: applied, or an override policy accepted, even one
    /// that changed nothing), so a crash replay counts the same versions from the stored outcome.
    /// The one statement of the rule; every store and the simulator ask it.
    pub fn marks_outbox(self, effective: bool) -> bool {
        effective && matches!(self, Outcome::Applied | Outcome::Override)
    }

    /// Whether an event with this outcome is kept in the ledger (and shows in history): all but
    /// redeliveries (`duplicate`, `conflict`) and events refused before deciding (`rejected`).
    /// Whether it also claims its `(source, id)` is [`Decision::claims_id`].
    pub fn is_stored(self) -> bool {
        matches!(
            self,
            Outcome::Applied | Outcome::Stale | Outcome::Covered | Outcome::Override
        )
    }

    /// Whether an event with this outcome is recorded as an incident of its own kind.
    pub fn raises_incident(self) -> bool {
        matches!(
            self,
            Outcome::Conflict
                | Outcome::Stale
                | Outcome::Covered
                | Outcome::Override
                | Outcome::Rejected
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome `{s}`"))
    }
}

/// Why an event was `rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

/// The current state of one `(sku, location, state)`: its value and the key of the `set` it is
/// based on, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub value: i64,
    pub set: Option<OrderKey>,
}

impl Cell {
    /// Whether an event at `key` is newer than this cell's base.
    pub fn is_newer(&self, key: &OrderKey) -> bool {
        self.set.as_ref().is_none_or(|s| key > s)
    }
}

/// What applying an event does to one state's cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Add a delta to the value.
    Add(i64),
    /// Re-base the cell on a newer `set`: the new value is `value` plus the sum of the effective
    /// adjust deltas already stored for this state whose key is greater than `key` (the caller
    /// holds those deltas), and the cell's base becomes `key`.
    Rebase { key: OrderKey, value: i64 },
}

impl Effect {
    /// Applies the effect to its cell: the one place a cell changes, for every ledger. `later` is
    /// the sum of the effective adjust deltas of this state positioned after a re-base's key (the
    /// caller holds those: in memory, or in its tables); an `Add` ignores it.
    pub fn apply(&self, cell: &mut Cell, later: i64) {
        match self {
            Effect::Add(delta) => cell.value = cell.value.saturating_add(*delta),
            Effect::Rebase { key, value } => {
                *cell = Cell {
                    value: value.saturating_add(later),
                    set: Some(key.clone()),
                }
            }
        }
    }
}

/// The decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Human-readable detail for the sender and the incident log.
    pub detail: Option<String>,
    /// Whether the event's `(source, id)` is now taken. Rejected events and overrides that policy
    /// does not apply do not claim it, so a sender can fix its configuration (add the missing
    /// unit, the missing writer) and redeliver the same event.
    pub claims_id: bool,
    /// Whether the event's deltas count in later re-bases (it was applied, possibly as an accepted
    /// override). Stored with the event.
    pub effective: bool,
    pub effects: Vec<(State, Effect)>,
}

/// An event validated against the configuration and converted to base units.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub event: Event,
    /// Quantities in base units.
    pub base: StateMap<i64>,
    pub fingerprint: Fingerprint,
}

/// The configuration the fold is judged against.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub units: UnitTable,
    pub authority: Authority,
    /// Registered systems. An event from an unregistered source is rejected.
    pub systems: HashSet<SystemId>,
    /// In strict mode, only these skus are accepted.
    pub known_skus: Option<HashSet<Sku>>,
    /// How far ahead of the hub's clock an `occurred_at` may be ([`Rules::prepare_at`]); `None`
    /// accepts any (the simulator and the property tests, which have no hub clock).
    pub max_future_skew: Option<Duration>,
    /// The consistency rules judged after [`Rules::decide`] ([`crate::checkpoint`]); all off by
    /// default.
    pub checkpoints: crate::checkpoint::Checkpoints,
}

impl Rules {
    /// Checks what needs the configuration (source, sku, unit) and converts to base units. A
    /// refused event comes back with the reason, so the caller can record it; boxed because the
    /// refusal is the rare path and the event is large.
    pub fn prepare(&self, event: Event) -> Result<Prepared, Box<(Event, Rejection)>> {
        if !self.systems.contains(&event.source) {
            let msg = format!("unknown source system `{}`", event.source);
            return Err(Box::new((event, Rejection(msg))));
        }
        if let Some(known) = &self.known_skus
            && !known.contains(&event.sku)
        {
            let msg = format!(
                "unknown sku `{}` (strict mode: declare it under [[items]])",
                event.sku
            );
            return Err(Box::new((event, Rejection(msg))));
        }
        let unit = event.uom.clone().unwrap_or_else(Unit::base);
        let base = match event
            .change
            .quantities()
            .try_map(|_, q| self.units.to_base(&event.sku, &unit, q))
        {
            Ok(b) => b,
            Err(e) => return Err(Box::new((event, Rejection(e.to_string())))),
        };
        if let Some((s, q)) = base
            .iter()
            .find(|(_, q)| q.unsigned_abs() > crate::MAX_QUANTITY as u64)
        {
            let msg = format!(
                "{s} = {q} EA after conversion exceeds the limit of {}",
                crate::MAX_QUANTITY
            );
            return Err(Box::new((event, Rejection(msg))));
        }
        let fingerprint = event.fingerprint();
        Ok(Prepared {
            event,
            base,
            fingerprint,
        })
    }

    /// [`Rules::prepare`] for an event the hub receives at `now` (its clock, passed in so the
    /// core stays pure and tests can fix it): an `occurred_at` further ahead than
    /// `max_future_skew` is refused too. One sender with a wrong clock would otherwise place a
    /// `set` in the far future, and every real count after it would be `stale` until that date.
    pub fn prepare_at(
        &self,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Prepared, Box<(Event, Rejection)>> {
        let p = self.prepare(event)?;
        match self.check_clock(&p.event, now) {
            Ok(()) => Ok(p),
            Err(r) => Err(Box::new((p.event, r))),
        }
    }

    /// Whether `event` is dated no further ahead of `now` than `max_future_skew` allows.
    pub fn check_clock(&self, event: &Event, now: DateTime<Utc>) -> Result<(), Rejection> {
        let Some(skew) = self.max_future_skew else {
            return Ok(());
        };
        let skew_nanos = i64::try_from(skew.as_nanos()).unwrap_or(i64::MAX);
        let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let ahead = event.position.at_nanos.saturating_sub(now_nanos);
        if ahead <= skew_nanos {
            return Ok(());
        }
        Err(Rejection(format!(
            "occurred_at {} is {} ahead of the hub's clock ({}); at most {} is accepted \
             ([ledger] max_future_skew): correct the sender's clock and send the event again",
            event.position.occurred_at_rfc3339(),
            span(ahead),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            span(skew_nanos),
        )))
    }

    /// Decides what a prepared event does. `prior` is the fingerprint stored under its id, if the id
    /// was seen; `cells` are the current cells of its sku and location.
    pub fn decide(&self, p: &Prepared, prior: Option<Fingerprint>, cells: &[Cell; 5]) -> Decision {
        if let Some(f) = prior {
            let (outcome, detail) = if f == p.fingerprint {
                (Outcome::Duplicate, None)
            } else {
                (
                    Outcome::Conflict,
                    Some("id already used by an event with a different payload".to_owned()),
                )
            };
            return Decision {
                outcome,
                detail,
                claims_id: false,
                effective: false,
                effects: vec![],
            };
        }
        let ev = &p.event;
        let verdict = self
            .authority
            .judge(&ev.source, p.base.iter().map(|(s, _)| s));
        let (mut outcome, detail, apply) = match &verdict {
            Verdict::Authorized => (Outcome::Applied, None, true),
            Verdict::Override { states, applied } => {
                let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
                let detail = format!(
                    "`{}` is not a source of truth for {}; {}",
                    ev.source,
                    names.join(", "),
                    if *applied {
                        "accepted by policy"
                    } else {
                        "not applied"
                    }
                );
                (Outcome::Override, Some(detail), *applied)
            }
        };
        let mut effects = Vec::new();
        if apply {
            effects = effects_of(ev.change.is_set(), &ev.order_key(), &p.base, cells);
            if effects.is_empty() && outcome == Outcome::Applied {
                outcome = if ev.change.is_set() {
                    Outcome::Stale
                } else {
                    Outcome::Covered
                };
            }
        }
        let detail = detail.or_else(|| match outcome {
            Outcome::Stale => Some("a newer set is already in place for every state".to_owned()),
            Outcome::Covered => {
                Some("positioned before the set in place; the set already counts it".to_owned())
            }
            _ => None,
        });
        Decision {
            outcome,
            detail,
            // An override that policy does not apply changes nothing and does not claim its
            // `(source, id)`: the sender can redeliver it once it is configured as a writer.
            claims_id: apply || outcome != Outcome::Override,
            effective: apply,
            effects,
        }
    }
}

/// A span of nanoseconds as an operator reads it: `172 days`, `3 hours`, `6 minutes`, `40 seconds`.
fn span(nanos: i64) -> String {
    const SEC: i64 = 1_000_000_000;
    let secs = nanos / SEC;
    let (n, unit) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3_600 => (s / 3_600, "hours"),
        s if s >= 2 * 60 => (s / 60, "minutes"),
        s if s >= 1 => (s, if s == 1 { "second" } else { "seconds" }),
        _ => return format!("{} ms", nanos / 1_000_000),
    };
    format!("{n} {unit}")
}

/// What an event that counts (`effective`) does to the cells as they are: an adjustment adds to
/// every state whose base it is positioned after; a `set` re-bases every state whose base is older.
/// Shared by [`Rules::decide`] and by a store replaying stored events after a crash, which must not
/// consult the configuration again (it may have changed since the event was decided).
pub fn effects_of(
    is_set: bool,
    key: &OrderKey,
    base: &StateMap<i64>,
    cells: &[Cell; 5],
) -> Vec<(State, Effect)> {
    base.iter()
        .filter(|(s, _)| cells[s.index()].is_newer(key))
        .map(|(s, q)| {
            let effect = if is_set {
                Effect::Rebase {
                    key: key.clone(),
                    value: q,
                }
            } else {
                Effect::Add(q)
            };
            (s, effect)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RawEvent;

    fn event(at: &str) -> Event {
        Event::from_raw(&RawEvent {
            id: "c1",
            source: "wms",
            sku: "TEE-1",
            location: "DC1",
            occurred_at: at,
            set: Some(vec![("on_hand", 50)]),
            ..RawEvent::default()
        })
        .unwrap()
    }

    fn rules(skew: Option<Duration>) -> Rules {
        Rules {
            systems: [SystemId::parse("wms").unwrap()].into_iter().collect(),
            max_future_skew: skew,
            ..Rules::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_clock_too_far_ahead_is_rejected_naming_the_field() {
        let r = rules(Some(Duration::from_secs(300)));
        let refused = r
            .prepare_at(event("2199-01-01T00:00:00Z"), now())
            .unwrap_err();
        let reason = &refused.1.0;
        assert!(
            reason.starts_with("occurred_at 2199-01-01T00:00:00Z is "),
            "{reason}"
        );
        assert!(reason.contains("max_future_skew"), "{reason}");
        assert!(reason.contains("5 minutes"), "{reason}");
        // Exactly at the bound is accepted; one second past it is not.
        assert!(r.prepare_at(event("2026-11-27T10:05:00Z"), now()).is_ok());
        assert!(r.prepare_at(event("2026-11-27T10:05:01Z"), now()).is_err());
        // The past is never too far ahead.
        assert!(r.prepare_at(event("2020-01-01T00:00:00Z"), now()).is_ok());
        // Without a bound (no hub clock: the simulator), anything inside the window is accepted.
        assert!(
            rules(None)
                .prepare_at(event("2199-01-01T00:00:00Z"), now())
                .is_ok()
        );
    }
}
