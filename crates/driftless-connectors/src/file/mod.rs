//! The file connector: a CSV snapshot (`sku,quantity`) of every sku's channel quantity, written on a
//! schedule for consumers that read files. It replaces the whole file atomically (write beside it,
//! fsync, rename), so a reader never sees half a snapshot.
//!
//! The other way, [`batch`] reads the CSV batch files such systems write into canonical events
//! (`driftless import`, which sends them to a hub).

pub mod batch;
pub mod client;
pub mod transform;

pub use client::FileSink;
