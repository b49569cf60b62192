//! The one place the binary opens a ledger. The backend is chosen here, once, from the settings.
//! A command that only reads the ledger (`audit --live`, `trend`, `matrix`, and `audit` storing
//! its report for trends) opens it read-only: it never writes the ledger and never competes with
//! a running hub's writer, so it is safe beside `serve` on the same data directory.

use anyhow::Context;
use driftless_config::Settings;
use driftless_store::sqlite::SqliteOptions;
use driftless_store::{PgStore, SqliteStore, Store};
use std::sync::Arc;

/// What the command does with the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The hub: the only writer, with recovery on open and the held rows written on close.
    Serve,
    /// Reads (and appends a stored audit); nothing of the ledger is written.
    Read,
}

/// Opens the ledger the settings name.
pub async fn open(s: &Settings, access: Access) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &s.server.database_url {
        return open_postgres(s, url).await;
    }
    let dir = &s.server.data_dir;
    let (rules, channels) = (s.rules.clone(), s.channel_specs());
    let store = match access {
        Access::Serve => SqliteStore::open_with(dir, rules, channels, sqlite_options(s)).await,
        Access::Read => SqliteStore::open_reader(dir, rules, channels).await,
    }
    .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// The embedded ledger's options: the defaults, with what the settings choose.
fn sqlite_options(s: &Settings) -> SqliteOptions {
    let defaults = SqliteOptions::default();
    SqliteOptions {
        max_replay_events: s.max_replay_events.unwrap_or(defaults.max_replay_events),
        ..defaults
    }
}

/// PostgreSQL, for several hub processes on one database. Readers open it the same way: a
/// reader of PostgreSQL never competes with the hubs (MVCC), and the migrations it may apply are
/// taken under a lock every hub also takes.
async fn open_postgres(s: &Settings, url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let scheme = url.split(':').next().unwrap_or("");
    if !matches!(scheme, "postgres" | "postgresql") {
        anyhow::bail!(
            "database_url with scheme `{scheme}`: only postgres:// (or postgresql://) URLs are \
             supported; remove database_url (or DRIFTLESS_DATABASE_URL) to use the embedded \
             SQLite ledger in {}",
            s.server.data_dir.display()
        );
    }
    let store = PgStore::open(url, s.rules.clone(), s.channel_specs())
        .await
        // The URL may hold a password: name only the host part.
        .with_context(|| format!("opening the PostgreSQL ledger at {}", redact(url)))?;
    Ok(Arc::new(store))
}

/// Where the ledger is, for the log: the PostgreSQL URL without its user information, or the
/// SQLite file.
pub fn describe(s: &Settings) -> String {
    match &s.server.database_url {
        Some(url) => redact(url),
        None => s
            .server
            .data_dir
            .join("driftless.sqlite3")
            .display()
            .to_string(),
    }
}

/// The URL without its user information.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}://{}", &url[..i], &url[j + 1..]),
        _ => url.to_owned(),
    }
}
