//! The runtime after `fork()`: a child must not use its parent's
//! connection. Its own test binary, so no other test holds the runtime's
//! lock while the process forks.

mod common;

use async_engine_core::runtime;
use common::*;

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_forked_child_opens_a_connection_of_its_own() {
    let dir = TempDir::new("fork");
    let s = settings(&dir.sqlite_db());
    runtime::with(|| false, |rt| rt.engine(&s).map(drop)).unwrap();
    let before = open_fds();
    runtime::with(|| false, |rt| rt.engine(&s).map(drop)).unwrap();
    assert_eq!(open_fds(), before, "the parent reuses its connection");
    // SAFETY: the child only reads files, uses the runtime and exits.
    match unsafe { libc::fork() } {
        0 => {
            let reopened = runtime::with(|| false, |rt| rt.engine(&s).map(drop)).is_ok()
                && open_fds() > before;
            unsafe { libc::_exit(if reopened { 0 } else { 1 }) };
        }
        -1 => panic!("fork failed"),
        child => {
            let mut status = 0;
            unsafe { libc::waitpid(child, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the child reused its parent's connection (status {status})"
            );
        }
    }
}
