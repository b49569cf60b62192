//! Consistency at ingest: the checkpoint rules an event is judged by after the fold decided what it
//! does (DESIGN §7a).
//!
//! The fold says whether an event is newer; it cannot say whether the result makes sense. These
//! rules look at the cells before and after the event and say so: `negative_stock` (`on_hand`
//! below 0), `overcommitted` (`committed + reserved` above `on_hand`), `jump` (one event moving a
//! state by more than `max_jump`) and `cross_source_cover` (a `set` that swallows another system's
//! recent deltas). Each rule is `warn` (the event is applied and an incident records it) or
//! `reject` (the event is `rejected` with the rule's reason and claims nothing).
//!
//! Every backend calls [`Checkpoints::judge`] at its decision point, between [`crate::Rules::decide`]
//! and keeping the effects, so SQLite, PostgreSQL and the simulator judge alike. The caller works
//! out the cells after the effects (a re-base needs the stored deltas, which only it holds) and,
//! for `cross_source_cover`, the deltas a `set` swallows ([`Checkpoints::cover_range`] says which
//! to look up). Nothing here does I/O.

use crate::event::{OrderKey, Position};
use crate::fold::{Cell, Decision, Outcome, Prepared};
use crate::id::{EventId, SystemId};
use crate::state::State;
use std::fmt;

/// What a rule does when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Not checked (the core's default: a ledger built without configuration, the property tests).
    #[default]
    Off,
    /// Applied as decided, and an incident of the rule's kind is recorded.
    Warn,
    /// The event is `rejected` with the rule's reason; its id stays free.
    Reject,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "warn" => Some(Mode::Warn),
            "reject" => Some(Mode::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Warn => "warn",
            Mode::Reject => "reject",
        }
    }
}

/// The consistency rules; also the incident kinds they raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    NegativeStock,
    Overcommitted,
    Jump,
    CrossSourceCover,
}

impl Rule {
    pub const ALL: [Rule; 4] = [
        Rule::NegativeStock,
        Rule::Overcommitted,
        Rule::Jump,
        Rule::CrossSourceCover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NegativeStock => "negative_stock",
            Rule::Overcommitted => "overcommitted",
            Rule::Jump => "jump",
            Rule::CrossSourceCover => "cross_source_cover",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[checkpoints]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints {
    pub negative_stock: Mode,
    pub overcommitted: Mode,
    pub jump: Mode,
    pub cross_source_cover: Mode,
    /// The largest move of one state by one event that is not a `jump`; `None` checks no jumps.
    pub max_jump: Option<i64>,
    /// How long before a `set`'s `occurred_at` another system's delta counts as one the setting
    /// system may not have seen yet (nanoseconds). See [`Checkpoints::cover_range`].
    pub cover_window_nanos: i64,
}

/// The window when `[checkpoints] cover_window` is not given: one hour, the slowest event-driven
/// hand-off the example configuration documents. A delta older than that is one the setting
/// system had every chance to see.
pub const DEFAULT_COVER_WINDOW_NANOS: i64 = 3_600 * 1_000_000_000;

impl Default for Checkpoints {
    /// Every rule off: the core judges nothing unless configured. The configuration's defaults
    /// (every rule `warn`) are `driftless-config`'s.
    fn default() -> Self {
        Checkpoints {
            negative_stock: Mode::Off,
            overcommitted: Mode::Off,
            jump: Mode::Off,
            cross_source_cover: Mode::Off,
            max_jump: None,
            cover_window_nanos: DEFAULT_COVER_WINDOW_NANOS,
        }
    }
}

impl Checkpoints {
    /// Every rule `warn`, as the configuration file's defaults.
    pub fn warn_all() -> Self {
        Checkpoints {
            negative_stock: Mode::Warn,
            overcommitted: Mode::Warn,
            jump: Mode::Warn,
            cross_source_cover: Mode::Warn,
            ..Checkpoints::default()
        }
    }

    pub fn mode(&self, rule: Rule) -> Mode {
        match rule {
            Rule::NegativeStock => self.negative_stock,
            Rule::Overcommitted => self.overcommitted,
            Rule::Jump if self.max_jump.is_some() => self.jump,
            Rule::Jump => Mode::Off,
            Rule::CrossSourceCover => self.cross_source_cover,
        }
    }

    /// Whether any rule is checked; a backend skips working out the cells after when none is.
    pub fn any(&self) -> bool {
        Rule::ALL.iter().any(|r| self.mode(*r) != Mode::Off)
    }

    /// For a `set` that re-bases `state` from `prior` (the cell's base before it, if any): the keys
    /// between which the deltas it swallows must be looked up, `(lo, hi)`, both exclusive, or
    /// `None` when the rule is off or the event is not a set.
    ///
    /// **The definition.** A `set` claims its value was true at its `occurred_at`. Re-basing a cell
    /// drops every effective delta positioned between the old base and the set (the fold counts
    /// them as part of the set's value). When one of those deltas came from *another* system and
    /// happened within `cover_window` before the set, the setting system may well not have seen
    /// it: a lagging snapshot stamped with its send time (the ERP's `set committed 3` stamped 10:06
    /// but built from 10:00 data) swallows the storefront's order of 10:05. The hub cannot see
    /// when the setting system's data was read, only the set's `occurred_at` and the other
    /// system's deltas' positions, so that is the test: a delta of another source, positioned after
    /// the old base, before the set, and later than `occurred_at - cover_window`. Deltas
    /// older than the window are ones the setting system had time to receive; deltas from its own
    /// source are its own business. An `adjust` arriving after a newer `set` is already the
    /// `covered` outcome and is not judged again here.
    pub fn cover_range(
        &self,
        p: &Prepared,
        prior: Option<&OrderKey>,
    ) -> Option<(OrderKey, OrderKey)> {
        if self.cross_source_cover == Mode::Off || !p.event.change.is_set() {
            return None;
        }
        let key = p.event.order_key();
        let window_start = OrderKey {
            position: Position {
                at_nanos: key
                    .position
                    .at_nanos
                    .saturating_sub(self.cover_window_nanos),
                seq: u64::MAX,
            },
            id: EventId::parse("~").ok()?,
        };
        let lo = match prior {
            Some(k) if *k > window_start => k.clone(),
            _ => window_start,
        };
        Some((lo, key))
    }

    /// For each state the decision re-bases, the range [`Checkpoints::cover_range`] gives over
    /// that state's current set: what a backend looks up for `cross_source_cover`.
    pub fn rebased_ranges(
        &self,
        p: &Prepared,
        d: &Decision,
        cells: &[Cell; 5],
    ) -> Vec<(State, OrderKey, OrderKey)> {
        d.effects
            .iter()
            .filter(|(_, effect)| matches!(effect, crate::fold::Effect::Rebase { .. }))
            .filter_map(|(state, _)| {
                let (lo, hi) = self.cover_range(p, cells[state.index()].set.as_ref())?;
                Some((*state, lo, hi))
            })
            .collect()
    }

    /// Judges one decided event. `before` are the cells as the event found them, `after` as its
    /// effects leave them; `swallowed` the deltas a `set` drops (looked up in the range
    /// [`Checkpoints::cover_range`] gave, for the states it re-bases; the caller may pass deltas
    /// of the setting source too, they are ignored). Only an event that changes cells is judged:
    /// a stale, covered or refused event changes nothing to judge.
    pub fn judge(
        &self,
        p: &Prepared,
        decision: &Decision,
        before: &[Cell; 5],
        after: &[Cell; 5],
        swallowed: &[Swallowed],
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        if decision.effects.is_empty() || !decision.effective {
            return out;
        }
        let v = |c: &[Cell; 5], s: State| c[s.index()].value;
        let ev = &p.event;
        let touched = |s: State| decision.effects.iter().any(|(t, _)| *t == s);
        let mut push = |rule: Rule, detail: String| {
            let mode = self.mode(rule);
            if mode != Mode::Off {
                out.push(Finding { rule, mode, detail });
            }
        };

        // Only an event that makes things worse is flagged: a count that lifts a negative on_hand
        // towards 0 must not be rejected for the state it repairs.
        let (oh0, oh1) = (v(before, State::OnHand), v(after, State::OnHand));
        if touched(State::OnHand) && oh1 < 0 && oh1 < oh0 {
            push(
                Rule::NegativeStock,
                format!(
                    "on_hand {oh0} -> {oh1} at {} (event `{}` from `{}`)",
                    ev.location, ev.id, ev.source
                ),
            );
        }

        let excess = |c: &[Cell; 5]| {
            v(c, State::Committed)
                .saturating_add(v(c, State::Reserved))
                .saturating_sub(v(c, State::OnHand))
        };
        // Nothing committed is not overcommitted, however negative on_hand is (that is the
        // negative_stock rule's business).
        let claimed = v(after, State::Committed).saturating_add(v(after, State::Reserved));
        let (x0, x1) = (excess(before), excess(after));
        if claimed > 0 && x1 > 0 && x1 > x0 {
            push(
                Rule::Overcommitted,
                format!(
                    "committed + reserved {} -> {} above on_hand {oh0} -> {oh1} at {} \
                     (event `{}` from `{}`)",
                    v(before, State::Committed).saturating_add(v(before, State::Reserved)),
                    v(after, State::Committed).saturating_add(v(after, State::Reserved)),
                    ev.location,
                    ev.id,
                    ev.source
                ),
            );
        }

        if let Some(max) = self.max_jump {
            for (s, _) in &decision.effects {
                let (a, b) = (v(before, *s), v(after, *s));
                let moved = b.saturating_sub(a).unsigned_abs();
                if moved > max.unsigned_abs() {
                    push(
                        Rule::Jump,
                        format!(
                            "{s} {a} -> {b} moves {moved}, more than max_jump {max} at {} \
                             (event `{}` from `{}`)",
                            ev.location, ev.id, ev.source
                        ),
                    );
                }
            }
        }

        if self.cross_source_cover != Mode::Off && ev.change.is_set() {
            let key = ev.order_key();
            let lo = key
                .position
                .at_nanos
                .saturating_sub(self.cover_window_nanos);
            let mut others: Vec<&Swallowed> = swallowed
                .iter()
                .filter(|d| d.source != ev.source && d.key < key && d.key.position.at_nanos > lo)
                .filter(|d| touched(d.state))
                .collect();
            others.sort_by(|a, b| a.key.cmp(&b.key));
            if !others.is_empty() {
                let shown: Vec<String> = others
                    .iter()
                    .take(5)
                    .map(|d| {
                        format!(
                            "`{}` {} {:+} at {}",
                            d.source,
                            d.state,
                            d.delta,
                            d.key.position.occurred_at_rfc3339()
                        )
                    })
                    .collect();
                let more = others.len().saturating_sub(shown.len());
                let states: Vec<String> = decision
                    .effects
                    .iter()
                    .map(|(s, _)| format!("{s} {} -> {}", v(before, *s), v(after, *s)))
                    .collect();
                push(
                    Rule::CrossSourceCover,
                    format!(
                        "set `{}` from `{}` stamped {} swallows {}{}; {} at {}: a set's \
                         occurred_at must be when its value was true",
                        ev.id,
                        ev.source,
                        key.position.occurred_at_rfc3339(),
                        shown.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        },
                        states.join(", "),
                        ev.location
                    ),
                );
            }
        }
        out
    }
}

/// An effective delta of another event that a `set` drops when it re-bases a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swallowed {
    pub source: SystemId,
    pub key: OrderKey,
    pub state: State,
    pub delta: i64,
}

/// One rule that holds for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub mode: Mode,
    /// The values before and after, the event id and its source, for the incident.
    pub detail: String,
}

/// The first finding that rejects, if any.
pub fn rejection(findings: &[Finding]) -> Option<&Finding> {
    findings.iter().find(|f| f.mode == Mode::Reject)
}

/// Turns a decision into the `rejected` one a rejecting rule makes: nothing applied, nothing
/// claimed (the sender may correct and redeliver), the rule's kind and detail as the reason.
pub fn reject(decision: &mut Decision, finding: &Finding) {
    decision.outcome = Outcome::Rejected;
    decision.detail = Some(format!("{}: {}", finding.rule, finding.detail));
    decision.claims_id = false;
    decision.effective = false;
    decision.effects.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, RawEvent};
    use crate::fold::{Effect, Rules, effects_of};

    fn prepared(id: &str, source: &str, at: &str, set: bool, q: &[(&str, i64)]) -> Prepared {
        let q: Vec<(&str, i64)> = q.to_vec();
        let raw = RawEvent {
            id,
            source,
            sku: "TEE-1",
            location: "DC1",
            occurred_at: at,
            set: set.then(|| q.clone()),
            adjust: (!set).then(|| q.clone()),
            ..RawEvent::default()
        };
        let ev = Event::from_raw(&raw).unwrap();
        let rules = Rules {
            systems: ["wms", "erp", "shop"]
                .iter()
                .map(|s| SystemId::parse(*s).unwrap())
                .collect(),
            ..Rules::default()
        };
        rules.prepare(ev).unwrap()
    }

    /// Decides and applies to a copy, with no deltas after a re-base (the tests' cells hold none).
    fn step(p: &Prepared, cells: &[Cell; 5]) -> (Decision, [Cell; 5]) {
        let rules = Rules {
            systems: ["wms", "erp", "shop"]
                .iter()
                .map(|s| SystemId::parse(*s).unwrap())
                .collect(),
            ..Rules::default()
        };
        let d = rules.decide(p, None, cells);
        let mut after = cells.clone();
        for (s, e) in &d.effects {
            e.apply(&mut after[s.index()], 0);
        }
        (d, after)
    }

    fn kinds(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule.as_str()).collect()
    }

    #[test]
    fn negative_stock_warns_with_values_and_rejects_when_configured() {
        let mut c = Checkpoints::warn_all();
        let cells: [Cell; 5] = Default::default();
        let (d, cells) = step(
            &prepared(
                "count",
                "wms",
                "2026-11-27T09:00:00Z",
                true,
                &[("on_hand", 10)],
            ),
            &cells,
        );
        assert!(
            c.judge(
                &prepared(
                    "count",
                    "wms",
                    "2026-11-27T09:00:00Z",
                    true,
                    &[("on_hand", 10)]
                ),
                &d,
                &Default::default(),
                &cells,
                &[]
            )
            .is_empty()
        );
        let ship = prepared(
            "ship",
            "wms",
            "2026-11-27T10:00:00Z",
            false,
            &[("on_hand", -25)],
        );
        let (d, after) = step(&ship, &cells);
        let f = c.judge(&ship, &d, &cells, &after, &[]);
        assert_eq!(kinds(&f), ["negative_stock"]);
        assert_eq!(f[0].mode, Mode::Warn);
        assert!(f[0].detail.contains("on_hand 10 -> -15"), "{}", f[0].detail);
        assert!(f[0].detail.contains("`ship` from `wms`"), "{}", f[0].detail);

        c.negative_stock = Mode::Reject;
        let f = c.judge(&ship, &d, &cells, &after, &[]);
        let mut d2 = d.clone();
        reject(&mut d2, rejection(&f).unwrap());
        assert_eq!(d2.outcome, Outcome::Rejected);
        assert!(!d2.claims_id && !d2.effective && d2.effects.is_empty());
        assert!(
            d2.detail
                .unwrap()
                .starts_with("negative_stock: on_hand 10 -> -15")
        );

        // A count that lifts a negative on_hand is not flagged.
        let fix = prepared(
            "fix",
            "wms",
            "2026-11-27T11:00:00Z",
            false,
            &[("on_hand", 5)],
        );
        let (d3, after3) = step(&fix, &after);
        assert!(c.judge(&fix, &d3, &after, &after3, &[]).is_empty());
        // Off checks nothing.
        assert!(
            Checkpoints::default()
                .judge(&ship, &d, &cells, &after, &[])
                .is_empty()
        );
    }

    #[test]
    fn overcommitted_flags_the_event_that_makes_it_worse() {
        let mut c = Checkpoints::warn_all();
        let cells: [Cell; 5] = Default::default();
        let count = prepared(
            "count",
            "wms",
            "2026-11-27T09:00:00Z",
            true,
            &[("on_hand", 10)],
        );
        let (_, cells) = step(&count, &cells);
        let order = prepared(
            "o1",
            "shop",
            "2026-11-27T10:00:00Z",
            false,
            &[("committed", 12)],
        );
        let (d, after) = step(&order, &cells);
        let f = c.judge(&order, &d, &cells, &after, &[]);
        assert_eq!(kinds(&f), ["overcommitted"]);
        assert!(
            f[0].detail
                .contains("committed + reserved 0 -> 12 above on_hand 10 -> 10"),
            "{}",
            f[0].detail
        );
        c.overcommitted = Mode::Reject;
        assert!(rejection(&c.judge(&order, &d, &cells, &after, &[])).is_some());
        // Releasing a commitment makes it better: not flagged.
        let release = prepared(
            "r1",
            "shop",
            "2026-11-27T11:00:00Z",
            false,
            &[("committed", -1)],
        );
        let (d, after2) = step(&release, &after);
        assert!(c.judge(&release, &d, &after, &after2, &[]).is_empty());
    }

    #[test]
    fn jump_needs_max_jump_and_names_the_move() {
        let mut c = Checkpoints::warn_all();
        let cells: [Cell; 5] = Default::default();
        let big = prepared(
            "rcv",
            "wms",
            "2026-11-27T09:00:00Z",
            false,
            &[("on_hand", 5000)],
        );
        let (d, after) = step(&big, &cells);
        assert!(
            c.judge(&big, &d, &cells, &after, &[]).is_empty(),
            "no max_jump, no jump"
        );
        c.max_jump = Some(1000);
        let f = c.judge(&big, &d, &cells, &after, &[]);
        assert_eq!(kinds(&f), ["jump"]);
        assert!(
            f[0].detail
                .contains("on_hand 0 -> 5000 moves 5000, more than max_jump 1000")
        );
        c.jump = Mode::Reject;
        assert!(rejection(&c.judge(&big, &d, &cells, &after, &[])).is_some());
        let small = prepared(
            "rcv2",
            "wms",
            "2026-11-27T09:00:00Z",
            false,
            &[("on_hand", 1000)],
        );
        let (d, after) = step(&small, &cells);
        assert!(c.judge(&small, &d, &cells, &after, &[]).is_empty());
    }

    #[test]
    fn a_set_swallowing_another_systems_recent_delta_is_a_cross_source_cover() {
        let mut c = Checkpoints {
            overcommitted: Mode::Off,
            ..Checkpoints::warn_all()
        };
        let cells: [Cell; 5] = Default::default();
        // shop commits 2 at 10:05; erp sets committed 3 stamped 10:06 (from its 10:00 data).
        let order = prepared(
            "o1",
            "shop",
            "2026-11-27T10:05:00Z",
            false,
            &[("committed", 2)],
        );
        let (_, cells) = step(&order, &cells);
        let snap = prepared(
            "snap",
            "erp",
            "2026-11-27T10:06:00Z",
            true,
            &[("committed", 3)],
        );
        let (lo, hi) = c.cover_range(&snap, None).unwrap();
        assert!(order.event.order_key() > lo && order.event.order_key() < hi);
        let swallowed = vec![Swallowed {
            source: order.event.source.clone(),
            key: order.event.order_key(),
            state: State::Committed,
            delta: 2,
        }];
        let (d, after) = step(&snap, &cells);
        assert!(matches!(d.effects[0].1, Effect::Rebase { .. }));
        let f = c.judge(&snap, &d, &cells, &after, &swallowed);
        assert_eq!(kinds(&f), ["cross_source_cover"]);
        assert!(
            f[0].detail
                .contains("`shop` committed +2 at 2026-11-27T10:05:00Z"),
            "{}",
            f[0].detail
        );
        assert!(f[0].detail.contains("committed 2 -> 3"), "{}", f[0].detail);
        c.cross_source_cover = Mode::Reject;
        assert!(rejection(&c.judge(&snap, &d, &cells, &after, &swallowed)).is_some());

        // Its own deltas, and deltas older than the window, are not another system's recent ones.
        let own = vec![Swallowed {
            source: snap.event.source.clone(),
            ..swallowed[0].clone()
        }];
        assert!(c.judge(&snap, &d, &cells, &after, &own).is_empty());
        let late = prepared(
            "snap2",
            "erp",
            "2026-11-27T12:06:00Z",
            true,
            &[("committed", 3)],
        );
        let (d, after) = step(&late, &cells);
        assert!(c.judge(&late, &d, &cells, &after, &swallowed).is_empty());
        let (lo, _) = c.cover_range(&late, None).unwrap();
        assert!(
            order.event.order_key() < lo,
            "outside the window: not looked up"
        );
        // An adjust is never a cover; the rule off looks nothing up.
        assert!(c.cover_range(&order, None).is_none());
        c.cross_source_cover = Mode::Off;
        assert!(c.cover_range(&snap, None).is_none());
        let _ = effects_of;
    }
}
