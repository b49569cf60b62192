//! `[[hops]]`: how events travel between two systems (trigger, schedule, latency SLA, direction),
//! which the drift auditor needs to name the hand-off where an error entered.

use crate::checks::{either, known_system};
use crate::error::Locator;
use crate::raw::RawHop;
use crate::{Hop, Trigger, audit, parse_duration};
use driftless_core::SystemId;
use std::collections::HashSet;
use std::time::Duration;
use toml::Spanned;

/// Every hop whose systems are declared (`ids`); errors go to `loc`.
pub(crate) fn validate(loc: &mut Locator<'_>, raw: &[RawHop], ids: &HashSet<SystemId>) -> Vec<Hop> {
    let mut hops = Vec::new();
    for h in raw {
        let from = known_system(loc, &h.from, ids);
        let to = known_system(loc, &h.to, ids);
        let trigger = trigger(loc, &h.trigger);
        let every = h.schedule.as_ref().and_then(|s| every(loc, s));
        let latency_sla = latency_sla(loc, &h.latency_sla);
        let bidirectional = either(
            loc,
            h.direction.as_ref(),
            "direction",
            [("one-way", false), ("bidirectional", true)],
        );
        if let (Some(from), Some(to), Some(trigger)) = (from, to, trigger) {
            hops.push(Hop {
                from,
                to,
                trigger,
                schedule: h.schedule.as_ref().map(|s| s.get_ref().clone()),
                every,
                latency_sla,
                bidirectional,
                transform: h.transform.clone(),
            });
        }
    }
    hops
}

fn trigger(loc: &mut Locator<'_>, v: &Spanned<String>) -> Option<Trigger> {
    match v.get_ref().as_str() {
        "event" => Some(Trigger::Event),
        "poll" => Some(Trigger::Poll),
        "batch" => Some(Trigger::Batch),
        other => {
            loc.err(
                v.span(),
                format!("trigger must be event, poll or batch, not {other:?}"),
                None,
            );
            None
        }
    }
}

/// The interval of a schedule ("hourly", "every 15m"); an error when it is not one.
fn every(loc: &mut Locator<'_>, s: &Spanned<String>) -> Option<Duration> {
    let every = audit::schedule_every(s.get_ref());
    if every.is_none() {
        // Ignoring it would silently shrink the audit's lag window for this hop.
        loc.err(
            s.span(),
            format!("hop schedule {:?} is not a schedule", s.get_ref()),
            Some(
                "\"hourly\", \"daily\", \"weekly\", or an interval: \"every 15m\", \"4h\" (units \
                 ms, s, m, h, d, w)"
                    .into(),
            ),
        );
    }
    every
}

fn latency_sla(loc: &mut Locator<'_>, v: &Spanned<String>) -> Duration {
    parse_duration(v.get_ref()).unwrap_or_else(|| {
        loc.err(
            v.span(),
            format!("latency_sla {:?} is not a duration", v.get_ref()),
            Some("e.g. \"500ms\", \"30s\", \"15m\", \"4h\", \"1d\"".into()),
        );
        Duration::ZERO
    })
}
