//! The WAL's checkpointer: a task of its own that copies the WAL back into the database beside the
//! writer, on the other core, and keeps the WAL short.
//!
//! `PASSIVE` never takes the write lock, so commits go on while it runs. But SQLite starts the WAL
//! over only when a group begins with everything in it copied, and under a steady stream of groups
//! that never happens by itself: the restart benchmark's burst of 1M events left a 2.2 GB WAL, and
//! after a SIGKILL the open reads all of it back to rebuild the WAL's index (~0.9 s for 2 GB on
//! this machine) before the replay reads through it. So once the WAL is longer than
//! `max_wal_bytes` and a pass has nearly caught up, the checkpointer takes the writer's turn for
//! one more pass: with no group writing, that pass copies the last frames, and the next group
//! starts the WAL over from its beginning. The writer waits for that short pass, about once per
//! `max_wal_bytes` written.

use sqlx::sqlite::SqliteConnection;
use std::sync::Arc;
use std::time::Duration;

const CHECKPOINT_EVERY_MS: u64 = 200;
/// WAL frames (4 KiB pages) not yet copied back that are worth a warning.
const WAL_WARN_FRAMES: i64 = 250_000;
/// Frames a pass may leave uncopied for the next one, in the writer's turn, to finish: what the
/// groups wrote while the pass ran. More means readers held the pass back; the writer does not
/// wait for them.
const CATCH_UP_FRAMES: i64 = 8_192;
const PAGE_BYTES: u64 = 4_096;

/// `max_wal_bytes` in frames.
pub(super) fn frames(max_wal_bytes: u64) -> i64 {
    i64::try_from(max_wal_bytes / PAGE_BYTES).unwrap_or(i64::MAX)
}

/// Runs until the store closes (its handle is aborted). `gate` is the writer's turn.
pub(super) async fn checkpoint(
    mut conn: SqliteConnection,
    gate: Arc<tokio::sync::Mutex<()>>,
    max_frames: i64,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(CHECKPOINT_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The WAL's length after the last pass in the writer's turn: while it is the same, no group
    // has written since, and the next one starts the WAL over anyway.
    let mut turned_at: Option<i64> = None;
    loop {
        tick.tick().await;
        let Some(pass) = passive(&mut conn).await else {
            continue;
        };
        if pass.left() > WAL_WARN_FRAMES {
            tracing::warn!(
                frames = pass.log,
                copied = pass.done,
                "the WAL is growing faster than it is checkpointed"
            );
        } else if pass.log > max_frames
            && pass.left() <= CATCH_UP_FRAMES
            && turned_at != Some(pass.log)
        {
            // Even a pass that copied everything does not do: the group running beside it began
            // before the copy ended, so it goes on writing at the end of the WAL.
            if let Some(last) = pass_in_writers_turn(&mut conn, &gate).await {
                turned_at = Some(last.log);
            }
        }
    }
}

/// One more pass while no group writes (waiting for the one running), so the WAL is copied to
/// its end and the next group starts it over.
async fn pass_in_writers_turn(
    conn: &mut SqliteConnection,
    gate: &tokio::sync::Mutex<()>,
) -> Option<Pass> {
    let asked = std::time::Instant::now();
    let _turn = gate.lock().await;
    let turn = std::time::Instant::now();
    let last = passive(conn).await?;
    tracing::debug!(
        frames = last.log,
        left = last.left(),
        wait_ms = (turn - asked).as_secs_f64() * 1e3,
        pass_ms = turn.elapsed().as_secs_f64() * 1e3,
        "the WAL is copied; the next group starts it over"
    );
    Some(last)
}

/// What one pass found: frames in the WAL and frames copied back.
struct Pass {
    log: i64,
    done: i64,
}

impl Pass {
    fn left(&self) -> i64 {
        self.log - self.done
    }
}

async fn passive(conn: &mut SqliteConnection) -> Option<Pass> {
    match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await
    {
        Ok((_, log, done)) => Some(Pass { log, done }),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint failed; will retry");
            None
        }
    }
}
