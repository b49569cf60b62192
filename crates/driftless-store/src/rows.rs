//! How a stored row is derived from the values that cross the seam, where every backend must
//! derive it the same way (a history written by one backend reads the same from another).

use crate::{Incident, StoreError};
use driftless_core::{Cell, EventId, IdError, OrderKey, Position, Prepared};

/// The outcomes whose effective events mark the outbox, as a statement's `outcome IN (...)` list
/// (`'applied', 'override'`): derived from the core's one rule
/// ([`driftless_core::Outcome::marks_outbox`]), so no statement states it again.
pub(crate) fn marking_outcomes() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        driftless_core::Outcome::ALL
            .iter()
            .filter(|o| o.marks_outbox(true))
            .map(|o| format!("'{}'", o.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    });
    &LIST
}

/// An id read back from a column the store wrote from a valid one: one that does not parse is
/// corruption, not a caller's mistake.
pub(crate) fn stored_id<T>(
    column: &str,
    value: String,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<T, StoreError> {
    parse(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// [`stored_id`] of a column that may be NULL.
pub(crate) fn stored_opt_id<T>(
    column: &str,
    value: Option<String>,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<Option<T>, StoreError> {
    value.map(|v| stored_id(column, v, parse)).transpose()
}

/// How many base units one unit the event was sent in is; `None` for the base unit (or when
/// every quantity is 0, which reads the same in any unit).
pub(crate) fn sent_factor(p: &Prepared) -> Option<i64> {
    p.event.uom.as_ref()?;
    p.event
        .change
        .quantities()
        .iter()
        .find(|(_, q)| *q != 0)
        .and_then(|(s, q)| p.base.get(s).map(|b| b / q))
        .filter(|f| *f != 1)
}

/// An incident's system and actor, apart: a channel override that names its actor inside the
/// system (`channel:actor`, as the fan-out wrote them) is stored as the channel and the actor.
pub(crate) fn system_and_actor(i: &Incident) -> (Option<String>, Option<String>) {
    match (&i.system, &i.actor) {
        (Some(s), None) if i.kind == "channel_override" => match s.split_once(':') {
            Some((system, actor)) => (Some(system.to_owned()), Some(actor.to_owned())),
            None => (Some(s.clone()), None),
        },
        _ => (i.system.clone(), i.actor.clone()),
    }
}

/// The incident an event's outcome raises (see [`driftless_core::Outcome::raises_incident`]).
pub(crate) fn incident_of(
    ev: &driftless_core::Event,
    outcome: driftless_core::Outcome,
    detail: String,
    at: chrono::DateTime<chrono::Utc>,
) -> Incident {
    Incident {
        kind: outcome.as_str().into(),
        sku: Some(ev.sku.clone()),
        location: Some(ev.location.clone()),
        system: Some(ev.source.to_string()),
        actor: None,
        event_id: Some(ev.id.to_string()),
        detail,
        at,
    }
}

/// What an event refused before deciding (its configuration check failed) leaves: an incident
/// with the reason, and its receipt. It claims no id, so a fixed sender can redeliver it.
pub(crate) fn rejected(
    ev: &driftless_core::Event,
    reason: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> (Incident, crate::Receipt) {
    let outcome = driftless_core::Outcome::Rejected;
    let incident = incident_of(ev, outcome, reason.to_owned(), at);
    let receipt = crate::Receipt {
        outcome,
        detail: Some(reason.to_owned()),
    };
    (incident, receipt)
}

/// The incident a consistency rule raises: its kind, the values before and after, the event id
/// and the source; a refusal says so.
pub(crate) fn checkpoint_incident(
    ev: &driftless_core::Event,
    f: &driftless_core::checkpoint::Finding,
    at: chrono::DateTime<chrono::Utc>,
) -> Incident {
    let detail = match f.mode {
        driftless_core::checkpoint::Mode::Reject => format!("rejected: {}", f.detail),
        _ => f.detail.clone(),
    };
    Incident {
        kind: f.rule.as_str().into(),
        detail,
        ..incident_of(ev, driftless_core::Outcome::Applied, String::new(), at)
    }
}

/// A stored delta a `set` would swallow, from its row's columns (`cross_source_cover`, looked up
/// by each backend's `checks.rs`); `None` for a row whose source or id no longer parses.
pub(crate) fn swallowed_of(
    (source, at_nanos, seq, id): (String, i64, i64, String),
    state: driftless_core::State,
    delta: i64,
) -> Option<driftless_core::checkpoint::Swallowed> {
    let (Ok(source), Ok(id)) = (
        driftless_core::SystemId::parse(source),
        driftless_core::EventId::parse(id),
    ) else {
        return None;
    };
    let key = driftless_core::OrderKey {
        position: driftless_core::Position {
            at_nanos,
            seq: u64::try_from(seq).unwrap_or(0),
        },
        id,
    };
    Some(driftless_core::checkpoint::Swallowed {
        source,
        key,
        state,
        delta,
    })
}

/// A stored cell from its columns: the state's index, its value and the key of its `set`.
pub(crate) fn cell_of(
    state: i64,
    value: i64,
    set: (Option<i64>, Option<i64>, Option<&str>),
) -> Result<(usize, Cell), StoreError> {
    let set = match set {
        (Some(n), Some(s), Some(id)) => Some(OrderKey {
            position: Position {
                at_nanos: n,
                seq: s as u64,
            },
            id: EventId::parse(id).map_err(|e| StoreError::Corrupt(format!("set id: {e}")))?,
        }),
        _ => None,
    };
    let i = usize::try_from(state)
        .ok()
        .filter(|i| *i < 5)
        .ok_or_else(|| StoreError::Corrupt(format!("state index {state}")))?;
    Ok((i, Cell { value, set }))
}
