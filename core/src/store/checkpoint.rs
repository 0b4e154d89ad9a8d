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
//!
//! A checkpoint syncs the log and the database to disk, milliseconds on
//! a busy disk. A PHP request's thread does not wait for that: its
//! commits only mark the checkpoint wanted ([`leave_to_caller`]), and the
//! runtime hands it to the process's background thread, which runs it on
//! its own connection ([`run`]).

use rusqlite::hooks::{CheckpointMode, Wal};
use rusqlite::Connection;
use std::cell::Cell;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

/// Log length (frames of one page) past which a commit checkpoints: 4000
/// (8 MiB of the 2-KiB pages of a new database, 16 MiB of SQLite's usual
/// 4 KiB), four times SQLite's default. The hot pages (an
/// endpoint's row, the slots, the ends of the indexes) are rewritten by
/// nearly every commit but copied once per checkpoint, so a longer log
/// copies and syncs less per task (see docs/architecture.md, "The
/// write-ahead log").
const CHECKPOINT_FRAMES: c_int = 4000;
/// Log length past which a checkpoint has the log start over itself (a
/// RESTART, which holds other writers back) even when everything in it was
/// copied; below it that is left to the next commit (see [`must_restart`]).
/// It bounds the log at about 24 MiB.
const RESTART_FRAMES: c_int = CHECKPOINT_FRAMES + 2000;
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
    /// Whether this thread's commits leave their checkpoint to the caller.
    static LEAVE: Cell<bool> = const { Cell::new(false) };
    /// A commit of this thread found the log long and left its checkpoint.
    static WANTED: Cell<bool> = const { Cell::new(false) };
}

/// From now on, a commit of the current thread that finds the log long
/// only marks a checkpoint wanted (see [`take_wanted`]) instead of running
/// it: for a PHP request's thread, whose runtime hands it to the
/// background thread.
pub fn leave_to_caller() {
    LEAVE.with(|l| l.set(true));
}

/// Whether a commit of the current thread left a checkpoint to run since
/// the last call.
pub fn take_wanted() -> bool {
    WANTED.with(|w| w.replace(false))
}

/// Whether this thread's checkpoints pause after one that did not finish.
fn paused(now: Instant) -> bool {
    PAUSED_UNTIL.with(|p| p.get().is_some_and(|t| now < t))
}

/// Leaves this thread's checkpoints alone for [`PAUSE`].
fn pause() {
    PAUSED_UNTIL.with(|p| p.set(Some(Instant::now() + PAUSE)));
}

/// Runs `restart` (a checkpoint that has the log start over) with the
/// busy handler's short wait, and pauses this thread's checkpoints when it
/// could not finish.
fn restart_or_pause(restart: impl FnOnce() -> rusqlite::Result<bool>) {
    RESTARTING.with(|r| r.set(true));
    let restarted = restart();
    RESTARTING.with(|r| r.set(false));
    if !matches!(restarted, Ok(true)) {
        pause();
    }
}

/// Whether a passive checkpoint that found `log` frames in the log and
/// copied `copied` of them must be followed by a RESTART. Not when the log
/// is short by now (another process started it over; -1: a checkpoint of
/// another connection was running), nor when it copied them all: the next
/// commit then starts the log over by itself, without waiting for anyone,
/// unless a reader is still in it; a log that reaches [`RESTART_FRAMES`]
/// so is made to.
fn must_restart(log: c_int, copied: c_int) -> bool {
    log >= CHECKPOINT_FRAMES && (copied < log || log >= RESTART_FRAMES)
}

/// The two steps of a checkpoint: `passive` copies what it can without
/// holding other writers back (so a restart that does hold them has little
/// or nothing left to copy and sync) and reports (frames in the log, frames
/// copied); `restart` follows when [`must_restart`]. An error or a restart
/// that could not finish pauses this thread's checkpoints.
fn copy_then_restart(
    passive: impl FnOnce() -> rusqlite::Result<(c_int, c_int)>,
    restart: impl FnOnce() -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let (log, copied) = passive().inspect_err(|_| pause())?;
    if must_restart(log, copied) {
        restart_or_pause(restart);
    }
    Ok(())
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
    if paused(Instant::now()) {
        return Ok(());
    }
    if LEAVE.with(Cell::get) {
        WANTED.with(|w| w.set(true));
        return Ok(());
    }
    // The commit has happened: a failed checkpoint only pauses the next.
    let _ = copy_then_restart(
        || wal.checkpoint_v2(CheckpointMode::PASSIVE),
        || wal.checkpoint_v2(CheckpointMode::RESTART).map(|_| true),
    );
    Ok(())
}

/// The checkpoint a commit left to its caller, run on another connection
/// to the same database (the background thread's): as [`after_commit`]'s,
/// pausing after an error as it does, and nothing when the log is short by
/// now (another process ran one).
pub(crate) fn run(conn: &Connection) -> rusqlite::Result<()> {
    if paused(Instant::now()) {
        return Ok(());
    }
    // Each reports (busy, frames in the log, frames copied).
    copy_then_restart(
        || {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
        },
        || {
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
                .map(|busy| busy == 0)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::store::sqlite::scratch;
    use crate::task::{DeferOptions, TaskSpec};

    /// Frames in the log of the database at `path`, read through a
    /// connection of its own (a passive checkpoint's report; it copies
    /// what it can but never starts the log over).
    fn log_frames(path: &std::path::Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    /// A thread that leaves checkpoints to its caller lets the log grow
    /// past the limit and says so; the checkpoint run on another connection
    /// then has the log start over.
    #[test]
    fn a_checkpoint_left_to_the_caller_runs_on_another_connection() {
        let (dir, settings) = scratch("left-checkpoint");
        let path = settings.database_path().unwrap();
        let defer_many = move |count: i64| {
            let settings = settings.clone();
            std::thread::spawn(move || {
                leave_to_caller();
                let mut engine = Engine::open(&settings).unwrap();
                let spec = TaskSpec::new("/w.php", "t", "[]");
                for i in 0..count {
                    engine
                        .defer(&settings, None, &spec, &DeferOptions::default(), false, i)
                        .unwrap();
                }
                (take_wanted(), take_wanted(), engine)
            })
            .join()
            .unwrap()
        };
        // Two pages a task at least: past the limit after half as many.
        let (wanted, again, _page) = defer_many(i64::from(CHECKPOINT_FRAMES) / 2 + 100);
        assert!(wanted, "the commits past the limit said so");
        assert!(!again, "taking it clears it");
        let frames = log_frames(&path);
        assert!(
            frames > i64::from(CHECKPOINT_FRAMES),
            "{frames} frames: the page's thread ran none"
        );

        let (_, settings) = scratch("left-checkpoint");
        let mut background = Engine::open(&settings).unwrap();
        background.checkpoint().unwrap();
        let (_, _, _page) = defer_many(1);
        let frames = log_frames(&path);
        assert!(frames < 10, "{frames} frames: the log started over");
        drop(background);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A restart follows a passive checkpoint that left frames behind (a
    /// reader's snapshot) or found the log long; else the next commit
    /// starts the log over by itself.
    #[test]
    fn a_restart_only_when_the_log_was_not_all_copied_or_is_long() {
        let log = CHECKPOINT_FRAMES + 200;
        assert!(
            !must_restart(log, log),
            "all copied: left to the next commit"
        );
        assert!(must_restart(log, log - 400), "a reader held some back");
        assert!(
            must_restart(RESTART_FRAMES, RESTART_FRAMES),
            "long: made to"
        );
        assert!(
            !must_restart(10, 5),
            "short: another process started it over"
        );
        assert!(
            !must_restart(-1, -1),
            "another connection was checkpointing"
        );
    }

    /// A background checkpoint that fails (here: a connection that may not
    /// write) pauses the thread's checkpoints, as a commit's does, rather
    /// than trying again at every call.
    #[test]
    fn a_failed_checkpoint_pauses_the_next_ones() {
        let (dir, settings) = scratch("failed-checkpoint");
        let path = settings.database_path().unwrap();
        let engine = Engine::open(&settings).unwrap();
        let read_only =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        std::thread::spawn(move || {
            assert!(
                run(&read_only).is_err(),
                "a read-only connection cannot checkpoint"
            );
            assert!(
                paused(Instant::now()),
                "the failure paused the next checkpoints"
            );
            assert!(run(&read_only).is_ok(), "a paused thread does not try");
        })
        .join()
        .unwrap();
        drop(engine);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
