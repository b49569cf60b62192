//! The driftless domain: identifiers, quantities, units, the canonical event, the fold, authority,
//! available-to-promise and channel quantities.
//!
//! # Layout
//! - [`id`]: validated identifiers (`Sku`, `Location`, `SystemId`, `EventId`, `Unit`).
//! - [`state`]: the five inventory buckets and a fixed-size map over them.
//! - [`event`]: the canonical event, its position and its fingerprint (for duplicate detection).
//! - [`units`]: exact integer unit-of-measure conversion.
//! - [`authority`]: which system is a source of truth for which state.
//! - [`asof`]: a sku's stored entries folded up to a chosen moment.
//! - [`checkpoint`]: the consistency rules judged at ingest (negative stock, overcommitted, jump,
//!   cross-source cover).
//! - [`fold`]: the decision for one event against the current cells, and the outcomes.
//! - [`memory`]: a complete in-memory ledger over the fold (the simulator's hub, the tests' reference).
//! - [`channel`]: ATP and the quantity a channel may sell.
//! - [`glob`]: the sku patterns configuration uses.
//!
//! Nothing here does I/O, knows a wire format or needs an async runtime. Every function is
//! deterministic; time enters only as a value.

pub mod asof;
pub mod authority;
pub mod channel;
pub mod checkpoint;
pub mod event;
pub mod fold;
pub mod glob;
pub mod id;
pub mod memory;
pub mod state;
pub mod units;

pub use asof::{AsOf, LedgerEntry, fold_as_of};
pub use authority::{Authority, Policy, Verdict};
pub use channel::{ChannelRule, ChannelSpec, Levels, Ppm};
pub use checkpoint::{Checkpoints, Finding, Mode, Rule, Swallowed};
pub use event::{Change, Event, EventError, OrderKey, Position};
pub use event::{Fingerprint, RawEvent};
pub use fold::{Cell, Decision, Effect, Outcome, Prepared, Rejection, Rules, effects_of};
pub use glob::Glob;
pub use id::{EventId, IdError, Location, Sku, SystemId, Unit};
pub use memory::MemoryLedger;
pub use state::{State, StateMap};
pub use units::{UnitError, UnitTable};

/// The largest absolute quantity the hub accepts in one state, in base units. It keeps every sum of
/// a whole batch far from `i64` overflow and rejects obviously broken feeds (a GTIN in a quantity
/// field) instead of storing them.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
