//! GS1 EPCIS 2.0 capture, as a pure transform: an `EPCISDocument` (or one event) in JSON / JSON-LD
//! to canonical events, one answer per EPCIS event. No I/O: the route in the server hands the
//! canonical events to the ledger.
//!
//! # Layout
//! - [`gs1`]: GTIN-14 of an `epcClass`, GLN of a location, canonical Digital Links.
//! - [`hash`]: the GS1 event hash, the identity of an event without `eventID`.
//! - [`table`]: `action` + `bizStep` + `disposition` to states and signs (`docs/epcis.md`).
//! - [`capture`](mod@capture): the document walk, quantities and units, retractions.

pub mod capture;
pub mod gs1;
pub mod hash;
pub mod table;

pub use capture::{Capture, Captured, Mapping, SchemaError, Verdict, capture};
