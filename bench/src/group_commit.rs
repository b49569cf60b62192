//! The single-event ceiling of a durable design: an HTTP server that answers each request only
//! after its event is durable, with the textbook group commit and nothing else.
//!
//! Each request's body is parsed into an event row and handed to one writer, which takes every
//! event that has arrived (up to `MAX_GROUP`), makes them durable together and then answers their
//! requests: either inserted into the ledger's `events` table in one SQLite transaction
//! (`synchronous = FULL`), or appended to a plain file followed by one `fdatasync` (the cheapest
//! durable write there is). No idempotency lookup, no fold, no cells, no outbox, no metrics. The
//! bare HTTP server measures what HTTP costs, the bare commits what the disk costs; this measures
//! the two together on the same cores, which is what an acknowledgement that means durable can
//! reach with the same client.

use crate::{Row, bare_db, insert_rows, spawn_app};
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::{mpsc, oneshot};

/// Rows per transaction at most; 64 clients with one request in flight each never reach it.
const MAX_GROUP: usize = 1000;

/// An event waiting for its group: the row, the body as received, and its answer.
type Pending = (Row, axum::body::Bytes, oneshot::Sender<()>);

/// Where the events are made durable.
#[derive(Clone, Copy, PartialEq)]
pub enum Durable {
    /// The ledger's `events` table in SQLite, one transaction per group.
    Sqlite,
    /// A plain file, the bodies appended and one `fdatasync` per group.
    File,
}

/// Starts the server on `addr` writing into `dir`; returns its base URL and a stopper.
pub async fn serve(
    dir: &std::path::Path,
    addr: &str,
    durable: Durable,
) -> anyhow::Result<(String, oneshot::Sender<()>)> {
    let (tx, rx) = mpsc::channel::<Pending>(4096);
    match durable {
        Durable::Sqlite => {
            let conn = bare_db(dir, "group.sqlite3").await?;
            tokio::spawn(writer(conn, rx));
        }
        Durable::File => {
            let file = std::fs::File::create(dir.join("group.log"))?;
            std::thread::spawn(move || appender(file, rx));
        }
    }
    let app = axum::Router::new()
        .route("/v1/events", axum::routing::post(accept))
        .with_state(tx);
    spawn_app(app, addr).await
}

/// Parses the event, waits for its commit, answers.
async fn accept(
    State(writer): State<mpsc::Sender<Pending>>,
    body: axum::body::Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    const JSON: [(&str, &str); 1] = [("content-type", "application/json")];
    let Some(row) = parse(&body) else {
        return (StatusCode::BAD_REQUEST, JSON, r#"{"error":"bad event"}"#);
    };
    let (done, committed) = oneshot::channel();
    if writer.send((row, body, done)).await.is_err() || committed.await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            JSON,
            r#"{"error":"writer"}"#,
        );
    }
    (
        StatusCode::OK,
        JSON,
        r#"{"results":[{"outcome":"applied"}]}"#,
    )
}

/// The benchmark's event JSON (`crate::json`) back into a row.
fn parse(body: &[u8]) -> Option<Row> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |k: &str| v.get(k)?.as_str().map(str::to_owned);
    let (set, q) = match (v.get("set"), v.get("adjust")) {
        (Some(q), _) => (true, q),
        (None, Some(q)) => (false, q),
        _ => return None,
    };
    let at = text("occurred_at")?;
    let at_nanos = chrono::DateTime::parse_from_rfc3339(&at)
        .ok()?
        .timestamp_nanos_opt()?;
    Some(Row {
        id: text("id")?,
        sku: text("sku")?,
        location: text("location")?,
        at,
        at_nanos,
        set,
        qty: q.get("on_hand")?.as_i64()?,
    })
}

/// Takes what has arrived, commits it durably, answers; until every sender is gone.
async fn writer(mut conn: sqlx::SqliteConnection, mut rx: mpsc::Receiver<Pending>) {
    use sqlx::Connection;
    let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (rows, done): (Vec<Row>, Vec<oneshot::Sender<()>>) =
            group.drain(..).map(|(r, _, d)| (r, d)).unzip();
        let committed = async {
            let mut tx = conn.begin().await?;
            insert_rows(&mut tx, &rows, None).await?;
            tx.commit().await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = committed {
            // The requests of the group get 503 (their senders are dropped); the benchmark stops.
            eprintln!("group commit ceiling: {e:#}");
            return;
        }
        for d in done {
            let _ = d.send(());
        }
    }
}

/// On a thread of its own (the file calls block): takes what has arrived, appends the bodies,
/// `fdatasync`, answers; until every sender is gone.
fn appender(mut file: std::fs::File, mut rx: mpsc::Receiver<Pending>) {
    use std::io::Write;
    let mut buf = Vec::with_capacity(1 << 20);
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        buf.clear();
        for (_, body, _) in &group {
            buf.extend_from_slice(body);
            buf.push(b'\n');
        }
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            eprintln!("group commit ceiling: {e}");
            return;
        }
        for (_, _, done) in group {
            let _ = done.send(());
        }
    }
}
