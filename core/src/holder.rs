//! Which process holds a slot: the one whose sender sends its request, then
//! the worker that accepted it and runs its tasks. A slot whose holder died
//! is freed as soon as a worker of the same machine notices, rather than at
//! its deadline (see docs/architecture.md, "Dead workers").

use std::sync::OnceLock;

/// This machine's boot and process-id namespace (`<boot id>/<namespace
/// inode>`): a process id means one process only within both. None where
/// `/proc` does not tell them (then no holder is recorded or judged).
fn namespace() -> Option<&'static str> {
    static NAMESPACE: OnceLock<Option<String>> = OnceLock::new();
    NAMESPACE
        .get_or_init(|| {
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
            let inode = link.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?;
            Some(format!("{}/{inode}", boot.trim()))
        })
        .as_deref()
}

/// This process as a slot's holder: `<boot id>/<namespace inode>/<pid>`.
/// Read at each call, so a forked child is itself.
pub(crate) fn this_process() -> Option<String> {
    namespace().map(|ns| format!("{ns}/{}", std::process::id()))
}

/// The process id part of `holder` (what an error message names).
pub(crate) fn pid(holder: &str) -> &str {
    holder.rsplit_once('/').map_or(holder, |(_, pid)| pid)
}

/// Whether `holder` names a process of this boot and namespace that no
/// longer exists. A process of another machine, boot or container, this
/// process, or one another user owns (which signal 0 may not reach) is
/// never called dead.
pub(crate) fn is_dead(holder: &str) -> bool {
    let Some((ns, _)) = holder.rsplit_once('/') else {
        return false;
    };
    let Ok(pid) = pid(holder).parse::<libc::pid_t>() else {
        return false;
    };
    if Some(ns) != namespace() || pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 delivers nothing; kill() only checks that the
    // process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The holder string of process `pid` on this machine (tests).
#[cfg(test)]
pub(crate) fn of(pid: u32) -> String {
    format!("{}/{pid}", namespace().expect("/proc tells the namespace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_exited_is_dead_and_a_running_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let holder = of(child.id());
        assert!(!is_dead(&holder));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(is_dead(&holder));
    }

    #[test]
    fn this_process_other_machines_and_garbage_are_never_dead() {
        let me = this_process().unwrap();
        assert!(!is_dead(&me));
        // Init runs in every namespace this test can run in.
        assert!(!is_dead(&of(1)));
        assert!(!is_dead("another-boot/4026531836/999999999"));
        assert!(!is_dead(&format!("{}/x", namespace().unwrap())));
        assert!(!is_dead(&format!("{}/-1", namespace().unwrap())));
        assert!(!is_dead(""));
    }
}
