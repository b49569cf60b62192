//! The configuration file (one TOML document), its validation into domain values, and the layering
//! defaults < file < `DRIFTLESS_*` environment < command-line flags.
//!
//! # Layout
//! - [`raw`]: the file as written, with spans, `deny_unknown_fields` everywhere so a typo is an
//!   error with its line and column rather than a silently ignored key.
//! - [`audit`]: the `[audit]` section (chain, thresholds, snapshot formats); `channels`: each
//!   `[[channels]]` entry; `hops`: the `[[hops]]` between systems.
//! - `server`: the `[server]` section.
//! - `settings`: [`Settings`], the validated whole; `validate` builds it from [`raw`], with the
//!   small value checks in `checks`; `error`: [`ConfigError`] and the span locator.
//!
//! Secrets never appear here in clear: tokens are configured as SHA-256 digests, webhook keys by
//! the name of the environment variable that holds them.

pub mod audit;
mod channels;
pub mod checkpoints;
mod checks;
pub mod epcis;
mod error;
mod hops;
pub mod raw;
mod server;
mod settings;
mod validate;

pub use audit::AuditSettings;
pub use checkpoints::CheckpointSettings;
pub use checks::{PUBLIC_DEMO_TOKENS, is_loopback, parse_duration, public_demo_token};
pub use epcis::{EpcisEffect, EpcisRule};
pub use error::{ConfigError, ConfigErrors};
pub use settings::{
    AuthMode, ChannelConfig, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_FUTURE_SKEW, EXAMPLE, Hop, ItemSpec, LocationSpec, MAX_BATCH_SIZE, OnOverride,
    Overrides, Role, Server, Settings, SystemSpec, Trigger,
};
