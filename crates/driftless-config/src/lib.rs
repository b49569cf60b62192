//! The configuration file (one TOML document), its validation into domain values, and the layering
//! defaults < file < `DRIFTLESS_*` environment < command-line flags.
//!
//! # Layout
//! - [`raw`]: the file as written, with spans, `deny_unknown_fields` everywhere so a typo is an
//!   error with its line and column rather than a silently ignored key.
//! - [`audit`]: the `[audit]` section (chain, thresholds, snapshot formats); `channels`: each
//!   `[[channels]]` entry; `hops`: the `[[hops]]` between systems.
//! - `server`: the `[server]` section.
//! - this module: [`Settings`], the validated whole, and [`ConfigError`].
//!
//! Secrets never appear here in clear: tokens are configured as SHA-256 digests, webhook keys by
//! the name of the environment variable that holds them.

pub mod audit;
mod channels;
pub mod checkpoints;
pub mod epcis;
mod hops;
pub mod raw;
mod server;

use driftless_core::authority::Policy;
use driftless_core::units::UnitRule;
use driftless_core::{
    Authority, ChannelSpec, Glob, Location, Ppm, Rules, Sku, State, SystemId, Unit, UnitTable,
};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use audit::AuditSettings;
pub use checkpoints::CheckpointSettings;
pub use epcis::{EpcisEffect, EpcisRule};

/// The example configuration shipped with the binary; `driftless serve` uses it when given none.
pub const EXAMPLE: &str = include_str!("../../../driftless.example.toml");

/// One problem in a configuration, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (an environment variable).
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What to write instead, when there is an obvious fix.
    pub fix: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// All problems found, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns byte spans into line/column and collects errors.
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigError>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Locator {
            file,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn error_at(&self, span: Range<usize>, message: String, fix: Option<String>) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message,
            fix,
        }
    }

    pub(crate) fn warn(&mut self, span: Range<usize>, message: String, fix: Option<String>) {
        let w = self.error_at(span, message, fix);
        self.warnings.push(w);
    }

    pub(crate) fn err(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            fix,
        });
    }
}

/// Who may call the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Tokens,
    /// No authentication; only allowed on a loopback address.
    None,
}

/// The `[server]` section, validated.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub auth: AuthMode,
    pub read_tokens: Vec<[u8; 32]>,
    /// Digests of the operators' tokens: replaying dead letters, holding and releasing skus.
    pub operator_tokens: Vec<[u8; 32]>,
    /// From when the hub is ready for a request on a connection (a new one, or one kept alive
    /// after an answer) until the request's headers are in; past it the connection is closed.
    /// So it is also the idle keep-alive limit.
    pub header_read_timeout: Duration,
    /// From the headers until the whole body is in; past it the request gets 408.
    pub body_read_timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_batch: usize,
    /// Requests waiting for the writer before the API answers 503.
    pub max_pending: usize,
}

/// A system's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Wms,
    Erp,
    Oms,
    Storefront,
    Marketplace,
    Pos,
    Other,
}

impl Role {
    pub const NAMES: [&'static str; 7] = [
        "wms",
        "erp",
        "oms",
        "storefront",
        "marketplace",
        "pos",
        "other",
    ];
    const ALL: [Role; 7] = [
        Role::Wms,
        Role::Erp,
        Role::Oms,
        Role::Storefront,
        Role::Marketplace,
        Role::Pos,
        Role::Other,
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|r| *r == self).unwrap_or(6)]
    }

    /// Storefronts and marketplaces show the channel quantity; the others show stock levels.
    pub fn is_channel_like(self) -> bool {
        matches!(self, Role::Storefront | Role::Marketplace)
    }
}

#[derive(Debug, Clone)]
pub struct SystemSpec {
    pub id: SystemId,
    pub role: Role,
    pub token_sha256: Option<[u8; 32]>,
}

/// What the hub does when a channel was changed behind its back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOverride {
    Overwrite,
    Hold,
}

/// A channel: the quantity formula plus how to reach it.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub spec: ChannelSpec,
    pub on_override: OnOverride,
    /// `webhook`, `shopify`, `file` or `none`.
    pub connector: String,
    pub url: Option<String>,
    pub secret_env: Option<String>,
    /// `file` connector: where to write the CSV snapshot.
    pub path: Option<String>,
    /// `file` connector: how often (`every 15m`).
    pub schedule: Option<String>,
    /// `shopify` connector: the shop's domain (`example.myshopify.com`) or a stand-in base URL.
    pub shop_domain: Option<String>,
    /// `shopify` connector: Admin API version (`2026-01` or later).
    pub api_version: Option<String>,
    /// `shopify` connector: environment variable holding the Admin API access token.
    pub token_env: Option<String>,
    /// Pushes after which a failing one goes to the dead-letter list.
    pub max_attempts: u32,
    /// Pushes in flight at once (`None`: the hub's default).
    pub concurrency: Option<u32>,
    /// Requests started per second at most (`None`: no limit beyond the channel's own answers).
    /// A request carries one push, or one batch when `batch_size` is above 1.
    pub rate_limit: Option<u32>,
    /// Pushes per request, 1..=[`MAX_BATCH_SIZE`]; 1 (the default) is the contract's one sku per
    /// request, above 1 the webhook's batch shape (`docs/fanout.md`).
    pub batch_size: u32,
}

/// Most pushes one batch request carries: about 75 KB of body, a few hundred microseconds of
/// work for the receiver, and a request that still fits well inside a client timeout.
pub const MAX_BATCH_SIZE: i64 = 500;

#[derive(Debug, Clone)]
pub struct ItemSpec {
    pub sku: Sku,
    pub gtin: Option<String>,
    pub shopify_inventory_item_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LocationSpec {
    pub id: Location,
    pub sgln: Option<String>,
    pub shopify_location_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Event,
    Poll,
    Batch,
}

#[derive(Debug, Clone)]
pub struct Hop {
    pub from: SystemId,
    pub to: SystemId,
    pub trigger: Trigger,
    pub schedule: Option<String>,
    /// Interval parsed from `schedule` ("every 4h"), when it has one.
    pub every: Option<Duration>,
    pub latency_sla: Duration,
    pub bidirectional: bool,
    pub transform: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where it came from (a path, or `example configuration`).
    pub origin: String,
    pub server: Server,
    pub systems: Vec<SystemSpec>,
    pub rules: Rules,
    pub channels: Vec<ChannelConfig>,
    pub items: Vec<ItemSpec>,
    pub locations: Vec<LocationSpec>,
    pub hops: Vec<Hop>,
    pub audit: AuditSettings,
    /// What is allowed but probably not meant (a state open to every system); `check-config`
    /// prints these, `serve` logs them.
    pub warnings: Vec<ConfigError>,
    /// `[[epcis.rules]]`: overrides of the EPCIS mapping table, in file order.
    pub epcis_rules: Vec<EpcisRule>,
    /// `[checkpoints]`: its rules are also in `rules.checkpoints`, where the ledger judges them.
    pub checkpoints: CheckpointSettings,
    /// `[ledger] max_replay_events`: on the embedded ledger, how many events a crash may leave to
    /// replay on the next start (`None`: the store's default). PostgreSQL replays nothing.
    pub max_replay_events: Option<i64>,
}

impl Settings {
    pub fn system(&self, id: &SystemId) -> Option<&SystemSpec> {
        self.systems.iter().find(|s| &s.id == id)
    }

    pub fn channel(&self, id: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.spec.id.as_str() == id)
    }

    pub fn channel_specs(&self) -> Vec<ChannelSpec> {
        self.channels.iter().map(|c| c.spec.clone()).collect()
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Settings, ConfigErrors> {
        let mut loc = Locator::new(file, text);
        let raw: raw::RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e.message().to_owned();
                let fix = raw::fix_for(&msg);
                loc.err(span, msg, fix);
                return Err(ConfigErrors(loc.errors));
            }
        };
        let settings = validate(&mut loc, raw, file);
        if loc.errors.is_empty() {
            settings.ok_or_else(|| ConfigErrors(vec![]))
        } else {
            Err(ConfigErrors(loc.errors))
        }
    }

    /// Reads a file, or the shipped example when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
        match path {
            None => Settings::parse("example configuration", EXAMPLE),
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        file: name.clone(),
                        line: 0,
                        column: 0,
                        message: format!("cannot read: {e}"),
                        fix: None,
                    }])
                })?;
                Settings::parse(&name, &text)
            }
        }
    }

    /// Applies `DRIFTLESS_*` variables (read through `var`, so tests need not touch the process
    /// environment) and then explicit overrides, re-checking what they affect.
    pub fn layer(
        mut self,
        var: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigErrors> {
        let env = |k: &str| var(k).filter(|v| !v.is_empty());
        let mut errors = Vec::new();
        let mut apply =
            |name: &str,
             value: Option<String>,
             slot: &mut dyn FnMut(String) -> Result<(), String>| {
                if let Some(v) = value
                    && let Err(m) = slot(v)
                {
                    errors.push(ConfigError {
                        file: name.to_owned(),
                        line: 0,
                        column: 0,
                        message: m,
                        fix: None,
                    });
                }
            };
        let server = &mut self.server;
        for (name, value) in [
            ("DRIFTLESS_LISTEN", env("DRIFTLESS_LISTEN")),
            ("--listen", overrides.listen.clone()),
        ] {
            apply(name, value, &mut |v| {
                server.listen = v;
                Ok(())
            });
        }
        for (name, value) in [
            ("DRIFTLESS_DATA_DIR", env("DRIFTLESS_DATA_DIR")),
            ("--data-dir", overrides.data_dir.clone()),
        ] {
            apply(name, value, &mut |v| {
                server.data_dir = PathBuf::from(v);
                Ok(())
            });
        }
        for (name, value) in [
            ("DRIFTLESS_DATABASE_URL", env("DRIFTLESS_DATABASE_URL")),
            ("--database-url", overrides.database_url.clone()),
        ] {
            apply(name, value, &mut |v| {
                server.database_url = Some(v);
                Ok(())
            });
        }
        for (name, value) in [
            ("DRIFTLESS_NATS_URL", env("DRIFTLESS_NATS_URL")),
            ("--nats-url", overrides.nats_url.clone()),
        ] {
            apply(name, value, &mut |v| {
                server.nats_url = Some(v);
                Ok(())
            });
        }
        for (name, value) in [
            ("DRIFTLESS_AUTH", env("DRIFTLESS_AUTH")),
            ("--auth", overrides.auth.clone()),
        ] {
            apply(name, value, &mut |v| {
                server.auth = match v.as_str() {
                    "tokens" => AuthMode::Tokens,
                    "none" => AuthMode::None,
                    other => {
                        return Err(format!(
                            "auth must be \"tokens\" or \"none\", not {other:?}"
                        ));
                    }
                };
                Ok(())
            });
        }
        if let Err(m) = check_auth_listen(&self.server) {
            errors.push(ConfigError {
                file: self.origin.clone(),
                line: 0,
                column: 0,
                message: m,
                fix: Some("set auth = \"tokens\" or listen on 127.0.0.1".into()),
            });
        }
        if let Err(m) = check_demo_tokens(&self.server, &self.systems) {
            errors.push(ConfigError {
                file: self.origin.clone(),
                line: 0,
                column: 0,
                message: m,
                fix: Some(DEMO_TOKEN_FIX.into()),
            });
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// How far ahead of the hub's clock an `occurred_at` may be when `[ledger] max_future_skew` is not
/// set: room for ordinary clock drift and queues, not for a wrong year.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// `[server] header_read_timeout` when not set: a client on any real network sends its headers in
/// well under a second; a kept-alive connection with nothing to say is closed after this too.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// `[server] body_read_timeout` when not set: the largest default body (16 MiB) needs about
/// 0.3 MB/s to arrive in time.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest either read timeout may be.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub auth: Option<String>,
}

/// The tokens of the shipped example configuration and the demo. They are published (in the
/// example file, the README and this source), so they protect nothing: accepted on loopback for
/// the tour, refused anywhere else.
pub const PUBLIC_DEMO_TOKENS: [(&str, &str); 5] = [
    (
        "wms-demo-token",
        "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35",
    ),
    (
        "erp-demo-token",
        "eabc55371eccdd5bf5ad14c1c026c941f7bac3d4a7be229489c728d6f296a95a",
    ),
    (
        "shop-demo-token",
        "e3f27ff6c476961f3421e5872fdfad166cd4488c33d9431290043654624ecb15",
    ),
    (
        "read-demo-token",
        "bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95",
    ),
    (
        "operator-demo-token",
        "053fa11d794b3d944f1cd07a6cd7e574762682bb9e02bbbac8fb0690c6403e6e",
    ),
];

/// The public demo token whose digest is `digest`, if it is one.
pub fn public_demo_token(digest: &[u8; 32]) -> Option<&'static str> {
    let hex = hex::encode(digest);
    PUBLIC_DEMO_TOKENS
        .iter()
        .find(|(_, d)| *d == hex)
        .map(|(t, _)| *t)
}

/// Whether `listen` (`host:port`) is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses the public demo tokens when the hub listens beyond loopback: anyone who has read the
/// README could send events as the WMS.
fn check_demo_tokens(server: &Server, systems: &[SystemSpec]) -> Result<(), String> {
    if server.auth == AuthMode::None || is_loopback(&server.listen) {
        return Ok(());
    }
    let digests = systems
        .iter()
        .filter_map(|s| s.token_sha256.map(|d| (format!("system `{}`", s.id), d)))
        .chain(
            server
                .read_tokens
                .iter()
                .map(|d| ("a read token".to_owned(), *d)),
        )
        .chain(
            server
                .operator_tokens
                .iter()
                .map(|d| ("an operator token".to_owned(), *d)),
        );
    let public: Vec<String> = digests
        .filter_map(|(who, d)| public_demo_token(&d).map(|t| format!("{who} ({t})")))
        .collect();
    if public.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the public demo tokens are refused on {} (they are published with the example \
         configuration; only a loopback address may use them): {}",
        server.listen,
        public.join(", ")
    ))
}

/// The fix for [`check_demo_tokens`].
const DEMO_TOKEN_FIX: &str = "make a secret token per system (e.g. `openssl rand -hex 32`), put \
    `driftless token-hash < token-file` in its place, or listen on 127.0.0.1";

fn check_auth_listen(s: &Server) -> Result<(), String> {
    if s.auth != AuthMode::None {
        return Ok(());
    }
    if is_loopback(&s.listen) {
        Ok(())
    } else {
        Err(format!(
            "auth = \"none\" is refused on {}: without tokens the API may only listen on a loopback address",
            s.listen
        ))
    }
}

/// Parses `"4h"`, `"30m"`, `"90s"`, `"2d"`, `"500ms"`, optionally prefixed by `every `.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let s = s.strip_prefix("every ").unwrap_or(s).trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" | "min" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        "w" => n.checked_mul(604_800)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn sha256_hex(loc: &mut Locator<'_>, v: &toml::Spanned<String>, what: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    match hex::decode_to_slice(v.get_ref().trim(), &mut out) {
        Ok(()) => Some(out),
        Err(_) => {
            loc.err(
                v.span(),
                format!("{what} must be 64 hex digits (the SHA-256 of the token, not the token)"),
                Some("driftless token-hash <TOKEN> prints it".into()),
            );
            None
        }
    }
}

fn ident<T>(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<String>,
    what: &str,
    parse: impl Fn(String) -> Result<T, driftless_core::IdError>,
) -> Option<T> {
    match parse(v.get_ref().clone()) {
        Ok(x) => Some(x),
        Err(e) => {
            loc.err(v.span(), format!("{what} {e}"), None);
            None
        }
    }
}

fn glob(loc: &mut Locator<'_>, v: &toml::Spanned<String>) -> Option<Glob> {
    match Glob::new(v.get_ref().clone()) {
        Ok(g) => Some(g),
        Err(e) => {
            loc.err(v.span(), format!("sku pattern {e}"), None);
            None
        }
    }
}

fn share(loc: &mut Locator<'_>, v: &toml::Spanned<f64>) -> Option<Ppm> {
    let share = *v.get_ref();
    let p = Ppm::from_share(share);
    // The channel quantity computes with parts per million (`Ppm`): a seventh decimal would be
    // rounded away silently, and the operator would sell a different share than configured.
    // (1e-7 of a ppm is far above f64's error on a six-decimal value, far below a real seventh
    // decimal.)
    let ppm = share * 1_000_000.0;
    if p.is_some() && (ppm - ppm.round()).abs() > 1e-7 {
        loc.err(
            v.span(),
            format!(
                "allocation {share} has more than 6 decimal places; the channel quantity is \
                 computed in millionths, so it would be {}",
                ppm.round() / 1_000_000.0
            ),
            Some(format!(
                "allocation = {} (at most 6 decimal places)",
                ppm.round() / 1_000_000.0
            )),
        );
        return None;
    }
    if p.is_none() {
        loc.err(
            v.span(),
            format!(
                "allocation must be between 0.0 and 1.0 (got {})",
                v.get_ref()
            ),
            Some("allocation = 1.0 sells everything available".into()),
        );
    }
    p
}

/// One of two words, the first the default when the key is absent; an error naming both
/// otherwise (and the default stands).
fn either<T: Copy>(
    loc: &mut Locator<'_>,
    v: Option<&toml::Spanned<String>>,
    key: &str,
    [(first, a), (second, b)]: [(&str, T); 2],
) -> T {
    let Some(v) = v else { return a };
    match v.get_ref().as_str() {
        w if w == first => a,
        w if w == second => b,
        other => {
            loc.err(
                v.span(),
                format!("{key} must be \"{first}\" or \"{second}\", not {other:?}"),
                None,
            );
            a
        }
    }
}

fn positive(loc: &mut Locator<'_>, v: &toml::Spanned<i64>, what: &str, max: i64) -> Option<u32> {
    whole_in(loc, v, what, 1..=max, None).and_then(|n| u32::try_from(n).ok())
}

/// A whole number within `range`, or an error at its position naming `what` and the range.
fn whole_in(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<i64>,
    what: &str,
    range: std::ops::RangeInclusive<i64>,
    fix: Option<String>,
) -> Option<i64> {
    let n = *v.get_ref();
    if !range.contains(&n) {
        loc.err(
            v.span(),
            format!(
                "{what} must be a whole number from {} to {} (got {n})",
                range.start(),
                range.end()
            ),
            fix,
        );
        return None;
    }
    Some(n)
}

/// `[ledger] max_replay_events`, within bounds that keep it meaningful: below 10,000 nearly every
/// group would write all it holds; above 10^8 a crash's replay would take tens of minutes.
fn replay_bound(loc: &mut Locator<'_>, v: &toml::Spanned<i64>) -> Option<i64> {
    whole_in(
        loc,
        v,
        "max_replay_events",
        10_000..=100_000_000,
        Some(
            "100000 for a restart after a crash in about a second; 1000000 (the default) for \
             the fastest ingest"
                .into(),
        ),
    )
}

fn non_negative(loc: &mut Locator<'_>, v: &toml::Spanned<i64>, what: &str) -> Option<i64> {
    let n = *v.get_ref();
    if !(0..=driftless_core::MAX_QUANTITY).contains(&n) {
        loc.err(
            v.span(),
            format!(
                "{what} must be between 0 and {} (got {n})",
                driftless_core::MAX_QUANTITY
            ),
            None,
        );
        return None;
    }
    Some(n)
}

/// Token digests with where each stands in the file and whose it is.
pub(crate) type Digests = Vec<([u8; 32], Range<usize>, String)>;

/// Refuses a token digest given twice: the hub maps a digest to one principal, so a read token equal
/// to a system's digest would make that reader a writer (or the writer a reader).
fn unique_digests(loc: &mut Locator<'_>, mut digests: Digests) {
    digests.sort_by_key(|(_, span, _)| span.start);
    let mut first: HashMap<[u8; 32], (usize, String)> = HashMap::new();
    for (d, span, who) in digests {
        if let Some((line, earlier)) = first.get(&d) {
            let msg = format!(
                "this token digest is already {earlier}'s (line {line}); every digest must be \
                 unique across systems, read and operator tokens"
            );
            let fix = format!(
                "give {who} a token of its own and put `driftless token-hash < token-file` here"
            );
            loc.err(span, msg, Some(fix));
        } else {
            let (line, _) = loc.position(span.start);
            first.insert(d, (line, who));
        }
    }
}

/// Warns about each state no `[authority]` list covers: any registered system may write it
/// without an `override` (allowed, and what a one-system deployment wants, but rarely meant).
fn uncovered_states(loc: &mut Locator<'_>, a: Option<&toml::Spanned<raw::RawAuthority>>) {
    let listed: Vec<State> = a.map_or_else(Vec::new, |a| {
        a.get_ref().writers().into_iter().map(|(s, _)| s).collect()
    });
    // At the section when there is one, else at the end of the file, where it would go.
    let span = a.map_or(loc.text.len()..loc.text.len(), toml::Spanned::span);
    for state in State::ALL {
        if !listed.contains(&state) {
            loc.warn(
                span.clone(),
                format!(
                    "state `{state}` has no writer list under [authority]: every registered \
                     system may write it"
                ),
                Some(format!(
                    "{state} = [\"<system id>\", ...] under [authority] names its sources of truth"
                )),
            );
        }
    }
}

/// A system id that `[[systems]]` declares; an error otherwise.
fn known_system(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<String>,
    ids: &HashSet<SystemId>,
) -> Option<SystemId> {
    let id = ident(loc, v, "system id", SystemId::parse)?;
    if !ids.contains(&id) {
        loc.err(
            v.span(),
            format!("unknown system `{id}`"),
            Some("declare it under [[systems]] first".into()),
        );
        return None;
    }
    Some(id)
}

fn validate(loc: &mut Locator<'_>, raw: raw::RawConfig, origin: &str) -> Option<Settings> {
    let rs = raw.server.unwrap_or_default();
    let listen_span = rs.listen.as_ref().map(|l| l.span());
    // Every token's digest, to refuse one given twice.
    let mut digests = Digests::new();
    let server = crate::server::validate(loc, rs, &mut digests);

    let mut systems = Vec::new();
    let mut ids = HashSet::new();
    for s in raw.systems.iter() {
        let Some(id) = ident(loc, &s.id, "system id", SystemId::parse) else {
            continue;
        };
        if !ids.insert(id.clone()) {
            loc.err(
                s.id.span(),
                format!("system `{id}` is declared twice"),
                None,
            );
        }
        let role = match Role::parse(s.role.get_ref()) {
            Some(r) => r,
            None => {
                loc.err(
                    s.role.span(),
                    format!("unknown role {:?}", s.role.get_ref()),
                    Some(format!("one of {}", Role::NAMES.join(", "))),
                );
                Role::Other
            }
        };
        let token_sha256 = s
            .token_sha256
            .as_ref()
            .and_then(|t| sha256_hex(loc, t, "token_sha256"));
        if let (Some(d), Some(t)) = (token_sha256, &s.token_sha256) {
            digests.push((d, t.span(), format!("system `{id}`")));
        }
        systems.push(SystemSpec {
            id,
            role,
            token_sha256,
        });
    }
    unique_digests(loc, digests);

    let mut authority = Authority::default();
    uncovered_states(loc, raw.authority.as_ref());
    if let Some(a) = raw.authority.as_ref().map(toml::Spanned::get_ref) {
        for (state, writers) in a.writers() {
            let list = writers
                .iter()
                .filter_map(|w| known_system(loc, w, &ids))
                .collect();
            authority.set_writers(state, list);
        }
        for (state, p) in a.policies() {
            match p.get_ref().as_str() {
                "reject" => authority.set_policy(state, Policy::Reject),
                "accept" => authority.set_policy(state, Policy::Accept),
                other => loc.err(
                    p.span(),
                    format!("policy for {state} must be \"reject\" or \"accept\", not {other:?}"),
                    None,
                ),
            }
        }
    }

    let mut unit_rules = Vec::new();
    for u in &raw.units {
        let sku = glob(loc, &u.sku);
        let unit = ident(loc, &u.unit, "unit", Unit::parse);
        if unit.as_ref().is_some_and(Unit::is_base) {
            loc.err(
                u.unit.span(),
                "EA is the base unit and always 1; it cannot be redefined",
                None,
            );
            continue;
        }
        let factor = positive(loc, &u.factor, "factor", 1_000_000);
        if let (Some(sku), Some(unit), Some(factor)) = (sku, unit, factor) {
            unit_rules.push(UnitRule { sku, unit, factor });
        }
    }

    let mut locations = Vec::new();
    for l in &raw.locations {
        if let Some(id) = ident(loc, &l.id, "location id", Location::parse) {
            locations.push(LocationSpec {
                id,
                sgln: l.sgln.clone(),
                shopify_location_id: l.shopify_location_id.clone(),
            });
        }
    }

    let mut channels = Vec::new();
    let mut channel_ids = HashSet::new();
    for c in &raw.channels {
        let Some(id) = ident(loc, &c.id, "channel id", SystemId::parse) else {
            continue;
        };
        if !channel_ids.insert(id.clone()) {
            loc.err(
                c.id.span(),
                format!("channel `{id}` is declared twice"),
                None,
            );
        }
        channels.push(crate::channels::validate(loc, c, id));
    }

    let mut items = Vec::new();
    for i in &raw.items {
        if let Some(sku) = ident(loc, &i.sku, "sku", Sku::parse) {
            items.push(ItemSpec {
                sku,
                gtin: i.gtin.clone(),
                shopify_inventory_item_id: i.shopify_inventory_item_id.clone(),
            });
        }
    }

    let hops = crate::hops::validate(loc, &raw.hops, &ids);

    let strict = raw.ledger.as_ref().is_some_and(|l| l.strict_skus);
    let max_future_skew = raw
        .ledger
        .as_ref()
        .and_then(|l| l.max_future_skew.as_ref())
        .map_or(Some(DEFAULT_MAX_FUTURE_SKEW), |v| {
            let d = parse_duration(v.get_ref());
            if d.is_none() {
                loc.err(
                    v.span(),
                    format!("max_future_skew {:?} is not a duration", v.get_ref()),
                    Some("e.g. \"30s\", \"5m\" (the default), \"1h\"".into()),
                );
            }
            d
        });
    let max_replay_events = raw
        .ledger
        .as_ref()
        .and_then(|l| l.max_replay_events.as_ref())
        .and_then(|v| replay_bound(loc, v));
    let checkpoint_settings = checkpoints::validate(loc, raw.checkpoints.as_ref());
    let rules = Rules {
        units: UnitTable::new(unit_rules),
        authority,
        systems: ids.clone(),
        known_skus: strict.then(|| items.iter().map(|i| i.sku.clone()).collect()),
        max_future_skew,
        checkpoints: checkpoint_settings.rules.clone(),
    };
    if let Some(span) = listen_span
        && let Err(m) = check_demo_tokens(&server, &systems)
    {
        loc.err(span, m, Some(DEMO_TOKEN_FIX.into()));
    }
    let system_roles: HashMap<SystemId, Role> =
        systems.iter().map(|s| (s.id.clone(), s.role)).collect();
    let audit = audit::validate(loc, raw.audit.as_ref(), &system_roles);
    let warnings = std::mem::take(&mut loc.warnings);
    let epcis_rules = epcis::validate(loc, raw.epcis.as_ref());

    Some(Settings {
        origin: origin.to_owned(),
        server,
        systems,
        rules,
        channels,
        items,
        locations,
        hops,
        audit,
        warnings,
        epcis_rules,
        checkpoints: checkpoint_settings,
        max_replay_events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid() {
        let s = Settings::parse("example", EXAMPLE).unwrap();
        assert!(!s.systems.is_empty());
        assert!(!s.channels.is_empty());
    }

    #[test]
    fn errors_have_line_column_and_fix() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[[units]]\nsku = \"TEE-*\"\nunit = \"CS\"\nfactor = -12\n";
        let e = Settings::parse("f.toml", text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].column), (7, 10), "{e}");
        assert!(e.0[0].message.contains("factor"), "{e}");

        let e = Settings::parse("f.toml", "[server]\nlisen = \"x\"\n").unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        assert!(e.0[0].message.contains("lisen"), "{e}");

        let e = Settings::parse(
            "f.toml",
            "[[systems]]\nid = \"wms\"\nrole = \"warehouse\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, 3);
        assert!(e.0[0].fix.as_deref().unwrap_or("").contains("wms"));

        let e = Settings::parse("f.toml", "[authority]\non_hand = [\"ghost\"]\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown system `ghost`"), "{e}");
    }

    #[test]
    fn a_hop_and_a_channel_list_every_error_in_order_with_its_line() {
        let text = "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\n\
                    [[hops]]\nfrom = \"wms\"\nto = \"ghost\"\ntrigger = \"push\"\n\
                    schedule = \"fortnightly\"\nlatency_sla = \"soon\"\ndirection = \"both\"\n\n\
                    [[channels]]\nid = \"shop\"\nlocations = [\"DC1\"]\nconnector = \"webhook\"\n\
                    on_override = \"ignore\"\nmax_attempts = 0\n";
        let e = Settings::parse("f.toml", text).unwrap_err();
        let got: Vec<(usize, &str)> = e.0.iter().map(|x| (x.line, x.message.as_str())).collect();
        // Sections in the order they are checked (channels before hops), and within one the
        // order its keys are checked in.
        let want = [
            (17, "on_override must be \"overwrite\" or \"hold\""),
            (14, "uses the webhook connector but has no url"),
            (14, "uses the webhook connector but has no secret_env"),
            (18, "max_attempts"),
            (7, "unknown system `ghost`"),
            (8, "trigger must be event, poll or batch"),
            (9, "hop schedule \"fortnightly\" is not a schedule"),
            (10, "latency_sla \"soon\" is not a duration"),
            (11, "direction must be \"one-way\" or \"bidirectional\""),
        ];
        assert_eq!(got.len(), want.len(), "{e}");
        for ((line, message), (want_line, want_message)) in got.iter().zip(want) {
            assert_eq!(*line, want_line, "{message}");
            assert!(message.contains(want_message), "{message}");
        }
    }

    #[test]
    fn batch_size_is_checked_with_its_position() {
        let channel = |connector: &str, batch: &str| {
            format!(
                "[[channels]]\nid = \"shop\"\nlocations = [\"DC1\"]\nconnector = \"{connector}\"\n\
                 url = \"http://127.0.0.1:1/push\"\nsecret_env = \"S\"\n{batch}"
            )
        };
        let s = Settings::parse("f.toml", &channel("webhook", "")).unwrap();
        assert_eq!(
            s.channels[0].batch_size, 1,
            "one sku per request by default"
        );
        let s = Settings::parse("f.toml", &channel("webhook", "batch_size = 500\n")).unwrap();
        assert_eq!(s.channels[0].batch_size, 500);
        for bad in ["0", "501", "-3"] {
            let e = Settings::parse(
                "f.toml",
                &channel("webhook", &format!("batch_size = {bad}\n")),
            )
            .unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!((e.0[0].line, e.0[0].column), (7, 14), "{e}");
            assert!(
                e.0[0].message.contains("batch_size") && e.0[0].message.contains("1 to 500"),
                "{e}"
            );
        }
        let e = Settings::parse("f.toml", &channel("none", "batch_size = 10\n")).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (7, 14), "{e}");
        assert!(e.0[0].message.contains("webhook"), "{e}");
        assert!(Settings::parse("f.toml", &channel("none", "batch_size = 1\n")).is_ok());
        // A quoted number is a type error at the value (serde names the type, the position the key).
        let e =
            Settings::parse("f.toml", &channel("webhook", "batch_size = \"10\"\n")).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (7, 14), "{e}");
    }

    #[test]
    fn auth_none_only_on_loopback() {
        let ok = Settings::parse(
            "f",
            "[server]\nauth = \"none\"\nlisten = \"127.0.0.1:7400\"\n",
        );
        assert!(ok.is_ok());
        let bad = Settings::parse(
            "f",
            "[server]\nauth = \"none\"\nlisten = \"0.0.0.0:7400\"\n",
        );
        assert!(bad.is_err());
        let layered = ok.unwrap().layer(
            |_| None,
            &Overrides {
                listen: Some("0.0.0.0:1".into()),
                ..Overrides::default()
            },
        );
        assert!(layered.is_err());
    }

    #[test]
    fn public_demo_tokens_only_on_loopback() {
        // The example's own tokens: fine on loopback, refused when layered onto another address.
        let s = Settings::parse("example", EXAMPLE).unwrap();
        assert!(s.clone().layer(|_| None, &Overrides::default()).is_ok());
        let e = s
            .layer(
                |k| (k == "DRIFTLESS_LISTEN").then(|| "0.0.0.0:7400".to_owned()),
                &Overrides::default(),
            )
            .unwrap_err();
        assert!(
            e.0[0]
                .message
                .contains("public demo tokens are refused on 0.0.0.0:7400")
                && e.0[0].message.contains("system `wms` (wms-demo-token)"),
            "{e}"
        );
        assert!(e.0[0].fix.as_deref().unwrap().contains("token-hash"), "{e}");
        // In the file: located at `listen`.
        let text = EXAMPLE.replace("listen = \"127.0.0.1:7400\"", "listen = \"10.0.0.5:7400\"");
        let e = Settings::parse("f.toml", &text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let line = 1 + EXAMPLE
            .lines()
            .position(|l| l.starts_with("listen ="))
            .unwrap();
        assert_eq!((e.0[0].line, e.0[0].column), (line, 10), "{e}");
        // Own tokens off loopback are fine.
        let own = "[server]\nlisten = \"0.0.0.0:7400\"\n\n[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\
                   token_sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n";
        assert!(Settings::parse("f.toml", own).is_ok());
    }

    #[test]
    fn read_timeouts() {
        let s = Settings::parse("f.toml", "").unwrap();
        assert_eq!(s.server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(s.server.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
        let s = Settings::parse(
            "f.toml",
            "[server]\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(s.server.header_read_timeout, Duration::from_millis(500));
        assert_eq!(s.server.body_read_timeout, Duration::from_secs(2));
        for bad in ["\"0s\"", "\"2h\"", "\"soon\""] {
            let e = Settings::parse("f.toml", &format!("[server]\nbody_read_timeout = {bad}\n"))
                .unwrap_err();
            assert_eq!((e.0[0].line, e.0[0].column), (2, 21), "{e}");
        }
    }

    const WMS: &str = "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\
        token_sha256 = \"79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35\"\n";

    /// The one error of `text`, as `(line, column, message, fix)`.
    fn one_error(text: &str) -> (usize, usize, String, String) {
        let e = Settings::parse("f.toml", text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let e = &e.0[0];
        (
            e.line,
            e.column,
            e.message.clone(),
            e.fix.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn each_state_no_authority_list_covers_is_a_warning() {
        let s = Settings::parse(
            "f.toml",
            &format!("{WMS}\n[authority]\non_hand = [\"wms\"]\n"),
        )
        .unwrap();
        let states: Vec<&str> = s
            .warnings
            .iter()
            .map(|w| w.message.split('`').nth(1).unwrap())
            .collect();
        assert_eq!(states, ["committed", "reserved", "incoming", "unavailable"]);
        assert!(
            s.warnings.iter().all(|w| (w.line, w.column) == (6, 1)),
            "{:?}",
            s.warnings
        );
        assert!(
            s.warnings[0]
                .message
                .contains("every registered system may write it")
        );
        assert!(
            s.warnings[0]
                .fix
                .as_deref()
                .unwrap()
                .starts_with("committed = [")
        );
        // Without the section, all five, at the end of the file where it would go.
        let s = Settings::parse("f.toml", WMS).unwrap();
        assert_eq!(s.warnings.len(), 5);
        assert_eq!(s.warnings[0].line, 5);
        assert!(
            Settings::parse("example", EXAMPLE)
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn a_token_digest_is_unique_across_systems_read_and_operator_tokens() {
        // A read token equal to the wms digest would have made every reader a writer.
        let text = format!(
            "[server]\nread_token_sha256 = [\"bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95\"]\n\
             operator_token_sha256 = [\"79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35\"]\n\n{WMS}"
        );
        let (line, column, msg, fix) = one_error(&text);
        assert_eq!((line, column), (8, 16), "{msg}");
        assert!(
            msg.contains("already an operator token's (line 3)"),
            "{msg}"
        );
        assert!(
            fix.contains("system `wms`") && fix.contains("token-hash"),
            "{fix}"
        );
        let two = format!("{WMS}\n{}", WMS.replace("\"wms\"", "\"erp\""));
        let (line, _, msg, _) = one_error(&two);
        assert_eq!(line, 9, "{msg}");
        assert!(msg.contains("already system `wms`'s (line 4)"), "{msg}");
    }

    #[test]
    fn a_webhook_channel_needs_secret_env() {
        let text = "[[channels]]\nid = \"shop\"\nconnector = \"webhook\"\nurl = \"http://127.0.0.1:1/push\"\n";
        let (line, column, msg, fix) = one_error(text);
        assert_eq!((line, column), (2, 6));
        assert!(msg.contains("no secret_env"), "{msg}");
        assert!(
            fix.starts_with("secret_env = \"DRIFTLESS_SHOP_SECRET\""),
            "{fix}"
        );
        assert!(Settings::parse("f.toml", &format!("{text}secret_env = \"S\"\n")).is_ok());
    }

    #[test]
    fn an_allocation_finer_than_millionths_is_refused() {
        let channel = |a: &str| {
            format!(
                "[[channels]]\nid = \"shop\"\nallocation = {a}\n\n[[channels.rules]]\nsku = \"HOT-*\"\nallocation = 0.5\n"
            )
        };
        for ok in ["0.29", "0.123456", "1.0", "0.0", "1e-6"] {
            assert!(Settings::parse("f.toml", &channel(ok)).is_ok(), "{ok}");
        }
        let (line, column, msg, fix) = one_error(&channel("0.3333333"));
        assert_eq!((line, column), (3, 14));
        assert!(msg.contains("more than 6 decimal places"), "{msg}");
        assert_eq!(fix, "allocation = 0.333333 (at most 6 decimal places)");
        // A per-sku rule's allocation too.
        let rule = channel("0.5");
        let rule = rule.strip_suffix("allocation = 0.5\n").unwrap();
        let (line, _, _, _) = one_error(&format!("{rule}allocation = 0.12345678\n"));
        assert_eq!(line, 7);
    }

    #[test]
    fn a_hop_schedule_that_cannot_be_read_is_refused() {
        let hop = |schedule: &str| {
            format!(
                "{WMS}\n{}\n[[hops]]\nfrom = \"wms\"\nto = \"erp\"\ntrigger = \"batch\"\n\
                 schedule = \"{schedule}\"\nlatency_sla = \"4h\"\n",
                WMS.replace("\"wms\"", "\"erp\"").replace("79e1", "0000")
            )
        };
        for ok in ["every 24h", "4h", "hourly", "daily", "weekly", "every 90s"] {
            let s = Settings::parse("f.toml", &hop(ok)).unwrap();
            assert!(s.hops[0].every.is_some(), "{ok}");
        }
        for bad in ["nightly", "every day", "0s", "at 02:00"] {
            let (line, column, msg, fix) = one_error(&hop(bad));
            assert_eq!((line, column), (15, 12), "{bad}: {msg}");
            assert!(msg.contains("hop schedule"), "{msg}");
            assert!(fix.contains("\"every 15m\""), "{fix}");
        }
    }

    #[test]
    fn layering_order() {
        let s = Settings::parse("f", "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let env = |k: &str| (k == "DRIFTLESS_LISTEN").then(|| "127.0.0.1:2".to_owned());
        let s2 = s.clone().layer(env, &Overrides::default()).unwrap();
        assert_eq!(s2.server.listen, "127.0.0.1:2");
        let s3 = s
            .layer(
                env,
                &Overrides {
                    listen: Some("127.0.0.1:3".into()),
                    ..Overrides::default()
                },
            )
            .unwrap();
        assert_eq!(s3.server.listen, "127.0.0.1:3");
    }

    #[test]
    fn max_replay_events_is_optional_and_bounded_with_its_position() {
        let s = Settings::parse("f.toml", "").unwrap();
        assert_eq!(s.max_replay_events, None);
        let s = Settings::parse("f.toml", "[ledger]\nmax_replay_events = 100000\n").unwrap();
        assert_eq!(s.max_replay_events, Some(100_000));
        for bad in ["0", "9999", "100000001", "-5"] {
            let e = Settings::parse("f.toml", &format!("[ledger]\nmax_replay_events = {bad}\n"))
                .unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert!(e.0[0].message.contains("max_replay_events"), "{e}");
            assert!(e.0[0].message.contains(bad), "{e}");
            assert_eq!((e.0[0].line, e.0[0].column), (2, 21), "{e}");
        }
    }

    #[test]
    fn max_future_skew_defaults_and_is_checked_with_its_position() {
        let s = Settings::parse("f.toml", "").unwrap();
        assert_eq!(s.rules.max_future_skew, Some(Duration::from_secs(300)));
        let s = Settings::parse("f.toml", "[ledger]\nmax_future_skew = \"30s\"\n").unwrap();
        assert_eq!(s.rules.max_future_skew, Some(Duration::from_secs(30)));
        let e = Settings::parse("f.toml", "[ledger]\nmax_future_skew = \"soon\"\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].column), (2, 19), "{e}");
        assert!(e.0[0].message.contains("max_future_skew"), "{e}");
        assert!(e.0[0].fix.is_some(), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("every 4h"),
            Some(Duration::from_secs(14_400))
        );
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("soon"), None);
    }
}
