//! A hub run's events replayed on an accelerated real clock (`driftless demo`): which events are
//! due by a moment, each as canonical JSON (DESIGN section 2) with its time moved onto the replay's
//! clock. Pure: the caller reads the clock and sends.

use crate::world::{Run, START};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use driftless_core::{Change, Event};
use serde_json::{Value, json};

/// The events of a run, spread over `seconds` of real time from `start`.
#[derive(Debug)]
pub struct Replay<'a> {
    events: Vec<(i64, &'a Event)>,
    start: DateTime<Utc>,
    sim_start: DateTime<Utc>,
    speed: f64,
    next: usize,
}

impl<'a> Replay<'a> {
    pub fn new(run: &'a Run, start: DateTime<Utc>, seconds: u64) -> Replay<'a> {
        let events: Vec<(i64, &Event)> = run.hub_events().collect();
        let span = events.last().map_or(1, |(t, _)| (*t).max(1));
        let sim_start = DateTime::parse_from_rfc3339(START)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(start);
        Replay {
            events,
            start,
            sim_start,
            speed: span as f64 / seconds as f64,
            next: 0,
        }
    }

    /// Every event, in delivery order with its simulated delivery time.
    pub fn events(&self) -> &[(i64, &'a Event)] {
        &self.events
    }

    /// How many events were handed out so far.
    pub fn position(&self) -> usize {
        self.next
    }

    pub fn done(&self) -> bool {
        self.next >= self.events.len()
    }

    /// The next event due by `now`, and its JSON with `occurred_at` on the replay's clock (never
    /// after `now`).
    pub fn next_due(&mut self, now: DateTime<Utc>) -> Option<(&'a Event, Value)> {
        let real =
            |t: i64| self.start + Duration::milliseconds((t as f64 / self.speed * 1000.0) as i64);
        let (t, e) = *self.events.get(self.next)?;
        if real(t) > now {
            return None;
        }
        let occ_sim =
            (e.position.occurred_at() - self.sim_start).num_milliseconds() as f64 / 1000.0;
        let occurred = self.start + Duration::milliseconds((occ_sim / self.speed * 1000.0) as i64);
        self.next += 1;
        Some((e, event_json(e, occurred.min(now))))
    }
}

/// The canonical JSON of an event (DESIGN section 2), its time moved to `occurred_at`.
pub fn event_json(e: &Event, occurred_at: DateTime<Utc>) -> Value {
    let states: serde_json::Map<String, Value> = e
        .change
        .quantities()
        .iter()
        .map(|(s, q)| (s.as_str().to_owned(), json!(q)))
        .collect();
    let mut v = json!({
        "id": e.id.as_str(),
        "source": e.source.as_str(),
        "sku": e.sku.as_str(),
        "location": e.location.as_str(),
        "occurred_at": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "seq": e.position.seq,
    });
    let kind = match e.change {
        Change::Adjust(_) => "adjust",
        Change::Set(_) => "set",
    };
    v[kind] = Value::Object(states);
    if let Some(u) = &e.uom {
        v["uom"] = json!(u.as_str());
    }
    if let Some(r) = &e.reason {
        v["reason"] = json!(r);
    }
    if let Some(r) = &e.reference {
        v["ref"] = json!(r);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, Params};

    #[test]
    fn every_event_is_due_by_the_end_and_never_in_the_future() {
        let mut p = Params::scenario("everything", Architecture::Hub, 1).unwrap();
        p.skus = 20;
        p.days = 1;
        let out = crate::simulate(&p).unwrap();
        let start = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = Replay::new(&out.run, start, 60);
        assert!(!r.events().is_empty());
        assert!(r.next_due(start - Duration::seconds(1)).is_none());
        let now = start + Duration::seconds(30);
        while let Some((_, v)) = r.next_due(now) {
            let at = DateTime::parse_from_rfc3339(v["occurred_at"].as_str().unwrap()).unwrap();
            assert!(at <= now);
        }
        assert!(!r.done());
        while r.next_due(start + Duration::seconds(61)).is_some() {}
        assert!(r.done());
        assert_eq!(r.position(), r.events().len());
    }
}
