//! The storage test story: what every ledger backend must do, written against the traits
//! ([`Store`], with [`driftless_store::Outbox`]) so that each backend runs the very same story.
//! A backend's test binary implements [`Backend`] and calls each story function from a test of
//! its own (see `tests/sqlite.rs`).
//!
//! - `ledger`: outcomes and levels against the core's `MemoryLedger` across concurrent groups,
//!   restarts and crashes without flushing; history and paging; incidents; audits.
//! - `checkpoints`: the live checkpoints' rows.
//! - `outbox`: marks, coalescing, acknowledgements, dead letters, replay, holds, observations.

pub mod checkpoints;
pub mod common;
pub mod ledger;
pub mod outbox;

use driftless_core::{ChannelSpec, Rules};
use driftless_store::Store;
use std::future::Future;

/// How a backend's ledger is opened for the story.
pub trait Backend: Sync {
    type S: Store;

    /// Where a ledger lives (a data directory, a database): fresh and empty when made, removed
    /// when dropped.
    type Place: Send + Sync;

    /// A fresh place for a ledger.
    fn place(&self) -> impl Future<Output = Self::Place>;

    /// Opens (creating if needed) the ledger at `place`, as a hub does.
    fn open(
        &self,
        place: &Self::Place,
        rules: Rules,
        channels: Vec<ChannelSpec>,
    ) -> impl Future<Output = Self::S>;

    /// Opens it so that closing it is a crash: nothing held in memory is written on close or
    /// when idle, and at most about `held` rows of each kind are held before being written (a
    /// backend that holds nothing in memory opens as usual).
    fn open_crashy(
        &self,
        place: &Self::Place,
        rules: Rules,
        channels: Vec<ChannelSpec>,
        held: usize,
    ) -> impl Future<Output = Self::S>;
}
