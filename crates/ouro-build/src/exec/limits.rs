//! Per-job resource limits (rlimits, applied to every step process before `exec`) and process
//! group handling (finding and killing what a step left behind).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Resource limits of a job; `None` leaves the runner's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Data segment size in bytes (`RLIMIT_DATA`: heap and private writable mappings; unlike
    /// `RLIMIT_AS` it does not count reserved-but-unused address space, which runtimes such as
    /// Go and the JVM reserve generously).
    pub memory_bytes: Option<u64>,
    /// Processes of the user (`RLIMIT_NPROC`; not enforced by the kernel for root).
    pub processes: Option<u64>,
    /// Open files per process (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// CPU seconds per process (`RLIMIT_CPU`; SIGXCPU, then SIGKILL).
    pub cpu_seconds: Option<u64>,
}

impl Limits {
    /// The `(resource, value)` pairs to set.
    pub(crate) fn pairs(&self) -> Vec<(libc::__rlimit_resource_t, u64)> {
        let mut v = Vec::new();
        if let Some(m) = self.memory_bytes {
            v.push((libc::RLIMIT_DATA, m));
        }
        if let Some(p) = self.processes {
            v.push((libc::RLIMIT_NPROC, p));
        }
        if let Some(n) = self.open_files {
            v.push((libc::RLIMIT_NOFILE, n));
        }
        if let Some(c) = self.cpu_seconds {
            v.push((libc::RLIMIT_CPU, c));
        }
        v
    }
}

/// Sets the limits; called between `fork` and `exec` (async-signal-safe: only `setrlimit`).
pub(crate) fn apply(pairs: &[(libc::__rlimit_resource_t, u64)]) -> std::io::Result<()> {
    for (res, val) in pairs {
        let lim = libc::rlimit {
            rlim_cur: *val as libc::rlim_t,
            rlim_max: *val as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid pointer to a local struct.
        if unsafe { libc::setrlimit(*res, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let _ppid = f.next();
        let pgrp = f.next().and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != Some("Z") && state != Some("X") {
            out.push(pid);
        }
    }
    out
}

/// Whether process `pid` is alive (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// Whether process group `pgid` has no process at all (not even a zombie): one `killpg(pgid, 0)`
/// instead of reading `/proc` (the common case after a step's main process exited).
fn group_gone(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists; nothing is sent.
    pgid > 1
        && unsafe { libc::killpg(pgid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: killpg on a group id we created; errors (ESRCH) are fine.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// Kills process group `pgid`: SIGTERM, up to `grace` for it to go, then SIGKILL. Returns at once
/// when the group has no live member.
pub async fn kill_group(pgid: i32, grace: Duration) {
    if group_gone(pgid) || group_members(pgid).is_empty() {
        return;
    }
    signal_group(pgid, libc::SIGTERM);
    // SIGCONT in case something was stopped (a stopped process ignores SIGTERM until then).
    signal_group(pgid, libc::SIGCONT);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if group_members(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(pgid, libc::SIGKILL);
    // Wait a little for the kernel to finish them off.
    for _ in 0..50 {
        if group_members(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills a group with SIGKILL at once (drop paths, where nothing can be awaited).
pub fn kill_group_now(pgid: i32) {
    signal_group(pgid, libc::SIGKILL);
}

/// Live processes whose environment holds the entry `tag` (`NAME=value`), this process excepted.
pub fn tagged_processes(tag: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|entry| entry == tag) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Kills the processes carrying `tag` in their environment: the backstop for a step process that
/// left its process group (`setsid`). SIGTERM, up to `grace`, SIGKILL.
pub async fn kill_tagged(tag: &[u8], grace: Duration) {
    let pids = tagged_processes(tag);
    if pids.is_empty() {
        return;
    }
    for p in &pids {
        // SAFETY: kill on pids just read from /proc; ESRCH is fine.
        unsafe {
            libc::kill(*p, libc::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if pids.iter().all(|p| !alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in tagged_processes(tag) {
        // SAFETY: as above.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

/// Ties a step process to the runner: called in the forked child before `exec` (`pre_exec`).
///
/// The step gets `PR_SET_PDEATHSIG` = SIGKILL, so it dies with the runner's thread that spawned
/// it (the runner's async workers live as long as the runner). That signal reaches only the step's
/// own process, so the step also forks a tiny watchdog into its process group: all descriptors
/// closed, it checks every 200 ms that the step is still its parent, and once the step is gone
/// (it ended, or died with the runner) it SIGKILLs the whole group and exits. So `kill -9` of
/// the runner takes every process of the running step's group with it, and nothing waits on a
/// pipe the watchdog holds. (Processes that left the group with `setsid` are found by the
/// workspace tag when a runner starts again.)
///
/// # Safety
/// Only async-signal-safe calls (prctl, getppid, getpid, fork, syscall, close, nanosleep,
/// kill, _exit) between the fork and `exec`/`_exit`.
pub(crate) fn tie_to_runner(runner: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: see above; no allocation, no locks.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // The runner may have died between the fork and the prctl: then nothing would signal us.
        if libc::getppid() != runner {
            libc::_exit(137);
        }
        let step = libc::getpid();
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
                    for fd in 0..4096 {
                        libc::close(fd);
                    }
                }
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 200_000_000,
                };
                while libc::getppid() == step {
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
                libc::kill(-step, libc::SIGKILL);
                libc::_exit(0)
            }
            _ => Ok(()),
        }
    }
}
