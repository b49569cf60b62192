//! Databases of the benchmarks' own on a PostgreSQL server: created empty, dropped afterwards
//! with whatever is still connected. Included with `#[path]` by the benchmarks that need it.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;

/// The server's administrative database, where databases are created and dropped.
async fn admin(url: &str) -> anyhow::Result<PgConnection> {
    Ok(PgConnectOptions::from_str(url)?
        .database("postgres")
        .connect()
        .await?)
}

/// A fresh database `name` on the server `url` names; its URL.
pub async fn create(url: &str, name: &str) -> anyhow::Result<String> {
    let mut c = admin(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(PgConnectOptions::from_str(url)?
        .database(name)
        .to_url_lossy()
        .to_string())
}

pub async fn drop_db(url: &str, name: &str) {
    if let Ok(mut c) = admin(url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}
