//! Writing a commit's write-ahead log frames in two system calls. SQLite
//! writes each frame of the log as two `pwrite`s, its 24-byte header and
//! then its page: six calls for `defer()`'s three pages, a quarter of its
//! time. This VFS, SQLite's own `unix` one with the log's writes gathered,
//! holds a log's writes while they are contiguous (up to 64 KiB) and sends
//! them as one when the header of the frame that ends a transaction is
//! written, then that frame's page: both before SQLite publishes the commit
//! to other connections, which then read the frames. (SQLite may rewrite
//! the headers' checksums after the last page, so the commit's header
//! cannot wait for its page.) Any other call on the log (a read, a sync, a
//! truncation, its size, closing it) sends what is held first, so the file
//! is never behind what SQLite expects of it. Other files, and the database
//! itself, are the `unix` VFS's own (see docs/architecture.md, "The
//! write-ahead log").

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// The name connections open their database with ([`name`]).
const NAME: &CStr = c"async-engine";
/// The size of a log frame's header: a write of exactly this size is one.
const FRAME_HEADER: usize = 24;
/// Most bytes held: a write that would hold more sends the others first.
/// The `unix` VFS writes at most 128 KiB per call (it masks larger sizes),
/// and SQLite's own writes are at most a page (64 KiB at most).
const MAX_HELD: usize = 64 << 10;

/// The VFS to open databases with: this module's, registered on first use,
/// or `None` (SQLite's default) when the default is not the `unix` VFS
/// this module knows to wrap.
pub(crate) fn name() -> Option<&'static str> {
    // SAFETY: registration runs once; the VFS lives for the process.
    BASE.get_or_init(|| unsafe { register() })
        .as_ref()
        .and_then(|_| NAME.to_str().ok())
}

/// SQLite's `unix` VFS, which this one forwards to.
struct Base(*mut ffi::sqlite3_vfs);

// SAFETY: SQLite's VFS objects are process-wide and never freed.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}

/// The base VFS once registered (`None`: not the `unix` VFS, or failed).
static BASE: OnceLock<Option<Base>> = OnceLock::new();

/// Registers the VFS beside the default one (not as the default): the
/// base VFS's own, but with [`open`] and room for a [`LogFile`].
unsafe fn register() -> Option<Base> {
    let base = ffi::sqlite3_vfs_find(std::ptr::null());
    if base.is_null() || CStr::from_ptr((*base).zName) != c"unix" {
        return None;
    }
    let vfs = Box::leak(Box::new(std::ptr::read(base)));
    vfs.pNext = std::ptr::null_mut();
    vfs.zName = NAME.as_ptr();
    vfs.szOsFile = std::mem::size_of::<LogFile>() as c_int + (*base).szOsFile;
    vfs.xOpen = Some(open);
    (ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK).then_some(Base(base))
}

/// A log file: SQLite's handle (whose methods are [`LOG_METHODS`]), the
/// writes held, and the base VFS's own handle right after it.
#[repr(C)]
struct LogFile {
    handle: ffi::sqlite3_file,
    held: *mut Held,
}

/// Contiguous writes not yet sent: `bytes` belong at offset `start`.
#[derive(Default)]
struct Held {
    start: i64,
    bytes: Vec<u8>,
    /// The last write was the header of a frame that ends a transaction
    /// (sent at once): its page is sent as soon as it is written.
    commit_page: bool,
}

/// The writes a [`LogFile`] holds.
unsafe fn held_by<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Held {
    &mut *(*(file as *mut LogFile)).held
}

/// The base VFS's handle inside a [`LogFile`].
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    (file as *mut u8).add(std::mem::size_of::<LogFile>()) as *mut ffi::sqlite3_file
}

/// The base VFS's methods of a [`LogFile`].
unsafe fn base_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*inner(file)).pMethods
}

/// `xOpen`: a log file gets [`LOG_METHODS`] around the base VFS's handle;
/// any other file is the base VFS's own.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Some(Base(base))) = BASE.get() else {
        return ffi::SQLITE_CANTOPEN;
    };
    let Some(open) = (**base).xOpen else {
        return ffi::SQLITE_CANTOPEN;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a log: the base VFS's file, with its own methods, in place.
        return open(*base, name, file, flags, out_flags);
    }
    let rc = open(*base, name, inner(file), flags, out_flags);
    if rc != ffi::SQLITE_OK {
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    let log = file as *mut LogFile;
    (*log).held = Box::into_raw(Box::default());
    (*log).handle.pMethods = &LOG_METHODS;
    ffi::SQLITE_OK
}

/// The log's methods: writes held, every other call after a send.
static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(held_write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Sends the held writes as one; on failure they are dropped (the
/// transaction they belong to fails, and SQLite writes its frames anew).
unsafe fn send(file: *mut ffi::sqlite3_file) -> c_int {
    let held = held_by(file);
    if held.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let write = base_methods(file).xWrite.expect("the unix VFS writes");
    let rc = match c_int::try_from(held.bytes.len()) {
        Ok(len) => write(
            inner(file),
            held.bytes.as_ptr() as *const c_void,
            len,
            held.start,
        ),
        Err(_) => ffi::SQLITE_IOERR_WRITE,
    };
    held.bytes.clear();
    rc
}

/// `xWrite` of a log file: holds the write, sending what is held first
/// when it is not contiguous or would pass [`MAX_HELD`], and sends at once
/// a commit frame's header and then its page.
unsafe extern "C" fn held_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let held = held_by(file);
    let amount = amount.max(0) as usize;
    let apart = offset != held.start + held.bytes.len() as i64;
    if !held.bytes.is_empty() && (apart || held.bytes.len() + amount > MAX_HELD) {
        let rc = send(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let held = held_by(file);
    if held.bytes.is_empty() {
        held.start = offset;
    }
    let bytes = std::slice::from_raw_parts(data as *const u8, amount);
    held.bytes.extend_from_slice(bytes);
    let now = match bytes.len() {
        // Bytes 4..8 of a frame's header: the database's size in pages
        // after a commit, 0 in the other frames of a transaction. A
        // commit's header is sent at once: after it comes its page, or
        // nothing when SQLite rewrites the headers' checksums at the end.
        FRAME_HEADER => {
            held.commit_page = bytes[4..8] != [0, 0, 0, 0];
            held.commit_page
        }
        _ => std::mem::take(&mut held.commit_page),
    };
    match now {
        true => send(file),
        false => ffi::SQLITE_OK,
    }
}

/// Defines a method of the log that sends the held writes, then calls the
/// base VFS's method of the same name.
macro_rules! after_send {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            let rc = send(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            match base_methods(file).$method {
                Some(method) => method(inner(file), $($arg),*),
                None => ffi::SQLITE_IOERR,
            }
        }
    };
}

after_send!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
after_send!(truncate, xTruncate, (size: i64));
after_send!(sync, xSync, (flags: c_int));
after_send!(file_size, xFileSize, (size: *mut i64));
after_send!(lock, xLock, (level: c_int));
after_send!(unlock, xUnlock, (level: c_int));
after_send!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int));
after_send!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
after_send!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
after_send!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int));
after_send!(shm_unmap, xShmUnmap, (delete: c_int));
after_send!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));
after_send!(unfetch, xUnfetch, (offset: i64, page: *mut c_void));

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    base_methods(file)
        .xSectorSize
        .map_or(4096, |m| m(inner(file)))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    base_methods(file)
        .xDeviceCharacteristics
        .map_or(0, |m| m(inner(file)))
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    send(file);
    if let Some(m) = base_methods(file).xShmBarrier {
        m(inner(file));
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let sent = send(file);
    let log = file as *mut LogFile;
    drop(Box::from_raw((*log).held));
    (*log).held = std::ptr::null_mut();
    let closed = base_methods(file)
        .xClose
        .map_or(ffi::SQLITE_OK, |m| m(inner(file)));
    match sent {
        ffi::SQLITE_OK => closed,
        failed => failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::scratch;
    use rusqlite::{Connection, OpenFlags};

    /// Write system calls this thread has made (`/proc`'s count).
    fn writes() -> u64 {
        let tid = unsafe { libc::gettid() };
        let io = std::fs::read_to_string(format!("/proc/self/task/{tid}/io")).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A database in WAL mode through this VFS (`Some`) or SQLite's
    /// default, as the engine sets it up.
    fn open(path: &std::path::Path, vfs: Option<&str>) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = match vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs),
            None => Connection::open_with_flags(path, flags),
        }
        .unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .unwrap();
        conn
    }

    /// Write calls of one commit that changes three pages (a row and two
    /// indexes), after the log exists.
    fn writes_per_commit(conn: &Connection) -> u64 {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, a INT, b INT) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS t_a ON t(a);
             CREATE INDEX IF NOT EXISTS t_b ON t(b);
             INSERT INTO t VALUES ('first', 0, 0);",
        )
        .unwrap();
        let before = writes();
        conn.execute("INSERT INTO t VALUES ('second', 1, 1)", [])
            .unwrap();
        writes() - before
    }

    #[test]
    fn a_commit_writes_its_log_frames_in_two_calls() {
        let vfs = name().expect("the default VFS is unix");
        let (dir, settings) = scratch("log-writes-one-call");
        let path = settings.database_path().unwrap();
        let plain = writes_per_commit(&open(&path.with_extension("plain"), None));
        let gathered = writes_per_commit(&open(&path, Some(vfs)));
        assert_eq!(plain, 6, "SQLite's own: a header and a page per frame");
        assert_eq!(
            gathered, 2,
            "this VFS: two frames and a header, then a page"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Another connection, through SQLite's own VFS, sees every commit as
    /// soon as it is made, small ones and ones larger than what is held.
    #[test]
    fn other_connections_read_each_commit_at_once() {
        let (dir, settings) = scratch("log-writes-readers");
        let path = settings.database_path().unwrap();
        let writer = open(&path, name());
        writer
            .execute_batch(
                "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v);",
            )
            .unwrap();
        let reader = open(&path, None);
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        for i in 1..=500 {
            writer
                .execute("INSERT INTO t (v) VALUES (?1)", [format!("value {i}")])
                .unwrap();
            assert_eq!(count(&reader), i);
        }
        // Commits of 4 to 2,000 pages (up to 8 MiB): sent 64 KiB at a time,
        // wherever the commit's header and page fall.
        let big = "x".repeat(2000);
        let mut rows = 500;
        for pages in [4, 15, 16, 17, 33, 100, 2000] {
            writer.execute_batch("BEGIN").unwrap();
            for _ in 0..pages / 2 {
                writer
                    .execute("INSERT INTO t (v) VALUES (?1)", [&big])
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            rows += pages / 2;
            assert_eq!(count(&reader), rows);
            let check: String = reader
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok", "after a commit of {pages} pages");
        }
        drop(reader);
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        assert_eq!(count(&writer), rows);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
