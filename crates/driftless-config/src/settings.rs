//! The validated configuration: the server, systems, channels, items, locations and hops the hub
//! runs with, and the layering of environment variables and command-line flags over the file.

use crate::checks::{DEMO_TOKEN_FIX, check_auth_listen, check_demo_tokens};
use crate::error::{ConfigError, ConfigErrors, Locator};
use crate::validate::validate;
use crate::{AuditSettings, CheckpointSettings, EpcisRule, raw};
use driftless_core::{ChannelSpec, Location, Rules, Sku, SystemId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The example configuration shipped with the binary; `driftless serve` uses it when given none.
pub const EXAMPLE: &str = include_str!("../../../driftless.example.toml");
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
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub auth: Option<String>,
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
}
