//! How the backend reads PostgreSQL's errors: a serialization failure or a deadlock (SQLSTATE
//! 40001, 40P01) means "run the transaction again"; a unique violation of the claimed
//! `(source, id)`s means another process claimed an id meanwhile (the group is decided again); a
//! lost or refused connection means the database is unavailable (the server answers 503 with
//! Retry-After, and the pool reconnects by itself); everything else is a database error.

use crate::StoreError;

/// Whether the transaction should simply be run again.
pub(super) fn retryable(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001" | "40P01"))
}

/// Whether a statement failed because another transaction claimed one of its `(source, id)`s
/// (the unique index of the claiming events).
pub(super) fn claimed_meanwhile(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("23505")
        && matches!(e, sqlx::Error::Database(d) if d.constraint() == Some("events_by_source_id"))
}

/// Whether the error says the database cannot be reached (rather than that a statement failed).
pub(super) fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exceptions; 57P01..57P03: the server shuts down, crashed or is
        // starting (also what `pg_terminate_backend` sends); 53300: too many connections.
        _ => matches!(
            sqlstate(e).as_deref(),
            Some(c) if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300")
        ),
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The boundary's error for a database error.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if unreachable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::from(e)
    }
}
