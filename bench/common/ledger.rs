//! What the benchmarks that keep a ledger between invocations (`--dir`) read of it.

use std::path::Path;

/// Events the ledger in `dir` holds, read from the file (the store keeps no count); 0 when there
/// is no ledger yet.
pub async fn ledger_events(dir: &Path) -> anyhow::Result<u64> {
    use sqlx::{ConnectOptions, Connection};
    let file = dir.join("driftless.sqlite3");
    if !file.exists() {
        return Ok(0);
    }
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .read_only(true)
        .connect()
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(lsn), 0) FROM events")
        .fetch_one(&mut c)
        .await?;
    c.close().await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
