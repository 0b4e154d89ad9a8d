//! Keeping SQLite's write-ahead log short under load. SQLite's own
//! checkpoint after a commit is passive: it stops at the oldest snapshot a
//! reader still uses, and the log starts over only after one copied it
//! all. With many processes reading and writing without pause some reader
//! always held an older snapshot, so the log grew without end (770 MiB
//! after 40,000 tasks on 4 workers, and each process's mapping of its
//! index, `-shm`, with it), and every commit of every process ran a
//! checkpoint with its `fsync`. Instead, a commit that finds the log past
//! [`CHECKPOINT_FRAMES`] copies what it can, then the rest, and has it
//! start over, waiting briefly for readers to move on; one that cannot
//! (another process is at it, or a reader is slow) leaves it to the next
//! commits (see docs/architecture.md, "The write-ahead log").

use rusqlite::hooks::{CheckpointMode, Wal};
use std::cell::Cell;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

/// Log length (frames of one page) past which a commit checkpoints: 1000,
/// SQLite's own default.
const CHECKPOINT_FRAMES: c_int = 1000;
/// Longest a checkpointing commit waits for other readers and writers.
pub(crate) const RESTART_WAIT: Duration = Duration::from_millis(50);
/// After a checkpoint that could not finish, this connection's commits
/// leave the log alone this long (another process is checkpointing, or a
/// long reader would make each of them wait).
const PAUSE: Duration = Duration::from_millis(50);

thread_local! {
    /// Whether this thread's connection is checkpointing: its busy handler
    /// then gives up after [`RESTART_WAIT`].
    static RESTARTING: Cell<bool> = const { Cell::new(false) };
    /// No checkpoint from this thread before this instant.
    static PAUSED_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Whether the current thread is checkpointing (its busy handler keeps
/// the wait short).
pub(crate) fn restarting() -> bool {
    RESTARTING.with(Cell::get)
}

/// The commit hook (`sqlite3_wal_hook`): `frames` is the log's length after
/// the commit. It never returns an error: the commit has happened, and a
/// later one tries again.
pub(crate) fn after_commit(wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    if frames < CHECKPOINT_FRAMES {
        return Ok(());
    }
    let now = Instant::now();
    if PAUSED_UNTIL.with(|p| p.get().is_some_and(|t| now < t)) {
        return Ok(());
    }
    // Copied first without holding other writers back, so the restart
    // that does hold them has little or nothing left to copy and sync.
    let restarted = wal.checkpoint_v2(CheckpointMode::PASSIVE).and_then(|_| {
        RESTARTING.with(|r| r.set(true));
        let restarted = wal.checkpoint_v2(CheckpointMode::RESTART);
        RESTARTING.with(|r| r.set(false));
        restarted
    });
    if restarted.is_err() {
        PAUSED_UNTIL.with(|p| p.set(Some(Instant::now() + PAUSE)));
    }
    Ok(())
}
