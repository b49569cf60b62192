//! The server settings an acknowledgement depends on, read when a hub opens the database.
//!
//! A `201` says the event is durable. On PostgreSQL that holds only if a commit waits for its WAL
//! to be flushed (`synchronous_commit` not `off`, a common "tuning" of write-heavy servers), the
//! flush reaches the disk (`fsync`) and a page torn by a crash can be repaired from the WAL
//! (`full_page_writes`). The first is a session setting, so the hub pins it on its own
//! connections when the server, the database or the role turns it off; the other two are the
//! server's, so the hub says loudly that they break the promise. `autovacuum` is checked too:
//! slots, cells and outbox rows get a new version with nearly every group, and without vacuum
//! their tables and indexes grow without bound.

use super::errors::db;
use crate::StoreError;
use sqlx::PgConnection;

/// What a hub's own connection sees of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// As the hub's connections have it (after pinning): `on`, `remote_apply`, `remote_write`,
    /// `local` or `off`.
    pub synchronous_commit: String,
    pub fsync: bool,
    pub full_page_writes: bool,
    pub autovacuum: bool,
}

impl ServerSettings {
    /// Whether a commit may return before its WAL is flushed: the one value the hub overrides.
    pub fn commits_unflushed(&self) -> bool {
        self.synchronous_commit == "off"
    }

    /// What is wrong for a hub, one sentence each, naming the setting.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.commits_unflushed() {
            out.push(
                "synchronous_commit is off on the hub's connections: an acknowledged event \
                 may be lost if the database crashes"
                    .to_owned(),
            );
        }
        if !self.fsync {
            out.push(
                "the server runs with fsync = off: an acknowledged event may be lost (and the \
                 database corrupted) if the machine crashes; set fsync = on"
                    .to_owned(),
            );
        }
        if !self.full_page_writes {
            out.push(
                "the server runs with full_page_writes = off: a page torn by a crash cannot be \
                 repaired from the WAL; set full_page_writes = on unless the file system \
                 prevents torn pages"
                    .to_owned(),
            );
        }
        if !self.autovacuum {
            out.push(
                "the server runs with autovacuum = off: slots, cells and outbox rows get a new \
                 version with nearly every commit, so their tables grow until VACUUM runs; \
                 turn autovacuum on or schedule VACUUM"
                    .to_owned(),
            );
        }
        out
    }
}

/// Reads the settings as `conn` has them.
pub(super) async fn read(conn: &mut PgConnection) -> Result<ServerSettings, StoreError> {
    let row: (String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('synchronous_commit'), current_setting('fsync'), \
         current_setting('full_page_writes'), current_setting('autovacuum')",
    )
    .fetch_one(conn)
    .await
    .map_err(db)?;
    Ok(ServerSettings {
        synchronous_commit: row.0,
        fsync: row.1 == "on",
        full_page_writes: row.2 == "on",
        autovacuum: row.3 == "on",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sync: &str, fsync: bool, fpw: bool, vacuum: bool) -> ServerSettings {
        ServerSettings {
            synchronous_commit: sync.to_owned(),
            fsync,
            full_page_writes: fpw,
            autovacuum: vacuum,
        }
    }

    #[test]
    fn a_durable_server_has_nothing_to_say() {
        for sync in ["on", "local", "remote_write", "remote_apply"] {
            assert!(
                settings(sync, true, true, true).warnings().is_empty(),
                "{sync}"
            );
        }
    }

    #[test]
    fn each_setting_that_breaks_the_promise_is_named() {
        let w = settings("off", false, false, false).warnings();
        assert_eq!(w.len(), 4);
        for (line, name) in w.iter().zip([
            "synchronous_commit",
            "fsync",
            "full_page_writes",
            "autovacuum",
        ]) {
            assert!(line.contains(name), "{line} should name {name}");
        }
        assert!(settings("off", true, true, true).commits_unflushed());
        assert!(!settings("local", true, true, true).commits_unflushed());
    }
}
