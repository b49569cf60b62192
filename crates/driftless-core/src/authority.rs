//! Which system is a source of truth for which state, and what happens when another writes it.

use crate::id::SystemId;
use crate::state::State;

/// What to do with a write by a system that is not a source of truth for the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Record the override incident and change nothing (default).
    #[default]
    Reject,
    /// Record the override incident and apply the write.
    Accept,
}

/// The judgement on one event's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Authorized,
    /// Some states are not the source's to write. `applied` is true only when every such state's
    /// policy is `accept`: an event is judged whole, never applied in part.
    Override {
        states: Vec<State>,
        applied: bool,
    },
}

/// Writers and policy per state. A state with no configured writers is open to every registered
/// system: authority is something an operator declares, and an undeclared state has no owner to
/// protect.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    writers: [Option<Vec<SystemId>>; 5],
    policy: [Policy; 5],
}

impl Authority {
    pub fn set_writers(&mut self, state: State, writers: Vec<SystemId>) {
        self.writers[state.index()] = Some(writers);
    }

    pub fn set_policy(&mut self, state: State, policy: Policy) {
        self.policy[state.index()] = policy;
    }

    pub fn writers(&self, state: State) -> Option<&[SystemId]> {
        self.writers[state.index()].as_deref()
    }

    pub fn policy(&self, state: State) -> Policy {
        self.policy[state.index()]
    }

    pub fn may_write(&self, source: &SystemId, state: State) -> bool {
        self.writers(state).is_none_or(|w| w.contains(source))
    }

    pub fn judge(&self, source: &SystemId, states: impl IntoIterator<Item = State>) -> Verdict {
        let denied: Vec<State> = states
            .into_iter()
            .filter(|s| !self.may_write(source, *s))
            .collect();
        if denied.is_empty() {
            return Verdict::Authorized;
        }
        let applied = denied.iter().all(|s| self.policy(*s) == Policy::Accept);
        Verdict::Override {
            states: denied,
            applied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(s: &str) -> SystemId {
        SystemId::parse(s).unwrap()
    }

    #[test]
    fn judges_an_event_whole() {
        let mut a = Authority::default();
        a.set_writers(State::OnHand, vec![sys("wms")]);
        a.set_writers(State::Committed, vec![sys("shop"), sys("wms")]);
        a.set_writers(State::Reserved, vec![sys("erp")]);
        a.set_policy(State::Reserved, Policy::Accept);
        assert_eq!(
            a.judge(&sys("wms"), [State::OnHand, State::Committed]),
            Verdict::Authorized
        );
        assert_eq!(
            a.judge(&sys("shop"), [State::OnHand, State::Committed]),
            Verdict::Override {
                states: vec![State::OnHand],
                applied: false
            }
        );
        assert_eq!(
            a.judge(&sys("wms"), [State::Reserved]),
            Verdict::Override {
                states: vec![State::Reserved],
                applied: true
            }
        );
        // One rejecting state holds back the whole event even if the other accepts.
        assert_eq!(
            a.judge(&sys("erp"), [State::OnHand, State::Reserved]),
            Verdict::Override {
                states: vec![State::OnHand],
                applied: false
            }
        );
        // Unconfigured states are open.
        assert_eq!(
            a.judge(&sys("anyone"), [State::Incoming]),
            Verdict::Authorized
        );
    }
}
