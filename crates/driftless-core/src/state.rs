//! The five inventory buckets and a small total map over them.

use std::fmt;
use std::str::FromStr;

/// One inventory bucket of a sku at a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    OnHand,
    Committed,
    Reserved,
    Incoming,
    Unavailable,
}

impl State {
    pub const ALL: [State; 5] = [
        State::OnHand,
        State::Committed,
        State::Reserved,
        State::Incoming,
        State::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::OnHand => "on_hand",
            State::Committed => "committed",
            State::Reserved => "reserved",
            State::Incoming => "incoming",
            State::Unavailable => "unavailable",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state `{s}` (expected one of on_hand, committed, reserved, incoming, unavailable)"
                )
            })
    }
}

/// A value per state, absent where the state is not mentioned. Fixed size: no allocation per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateMap<T>([Option<T>; 5]);

impl<T: Copy> StateMap<T> {
    pub fn new() -> Self {
        StateMap([None; 5])
    }

    pub fn get(&self, s: State) -> Option<T> {
        self.0[s.index()]
    }

    pub fn insert(&mut self, s: State, v: T) -> Option<T> {
        self.0[s.index()].replace(v)
    }

    /// The present entries, in the fixed order of [`State::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (State, T)> + '_ {
        State::ALL
            .into_iter()
            .filter_map(|s| self.0[s.index()].map(|v| (s, v)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    pub fn len(&self) -> usize {
        self.0.iter().filter(|v| v.is_some()).count()
    }

    /// Applies `f` to every present value, failing on the first error.
    pub fn try_map<U: Copy, E>(
        &self,
        mut f: impl FnMut(State, T) -> Result<U, E>,
    ) -> Result<StateMap<U>, E> {
        let mut out = StateMap::<U>::new();
        for (s, v) in self.iter() {
            out.insert(s, f(s, v)?);
        }
        Ok(out)
    }
}

impl<T: Copy> FromIterator<(State, T)> for StateMap<T> {
    fn from_iter<I: IntoIterator<Item = (State, T)>>(iter: I) -> Self {
        let mut m = StateMap::new();
        for (s, v) in iter {
            m.insert(s, v);
        }
        m
    }
}
