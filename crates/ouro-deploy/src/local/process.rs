//! Replica processes at the operating-system level: spawning one in its own session with rlimits,
//! log files and the liveness lock; telling whether a recorded process is still the one Ouro
//! started; signalling its process group.
//!
//! The liveness lock: before spawning, Ouro opens the replica's lock file and takes an exclusive
//! `flock` on it, then lets the child inherit that descriptor and closes its own copy. The lock
//! is then held exactly as long as a process of the replica keeps the descriptor open, across
//! Ouro restarts, and without trusting pids (which the kernel reuses).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::spec::Resources;

/// What a freshly spawned replica process is.
pub(crate) struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub start_time: u64,
}

/// Everything needed to start one replica process.
pub(crate) struct Launch<'a> {
    pub run: &'a str,
    pub dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub resources: &'a Resources,
    pub lock_path: &'a Path,
    pub stdout_path: &'a Path,
    pub stderr_path: &'a Path,
}

/// Limits as plain numbers, prepared before `fork` (nothing may allocate in the child).
#[derive(Clone, Copy, Default)]
struct Limits {
    memory: Option<u64>,
    open_files: Option<u64>,
    processes: Option<u64>,
    cpu: Option<u64>,
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Opens the lock file and takes its lock; `Ok(None)` when a process still holds it.
pub(crate) fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(f));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Whether some process of a replica still holds its lock. A missing lock file means no.
pub(crate) fn lock_held(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    // Taking the lock and dropping the file at once releases it again.
    matches!(try_lock(path), Ok(None))
}

/// Starts `sh -c run` in its own session (so its process group is its own and it outlives Ouro),
/// with stdout/stderr appended to the log files, the rlimits applied and the lock inherited.
pub(crate) fn spawn(l: &Launch<'_>) -> io::Result<Spawned> {
    let lock = try_lock(l.lock_path)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            "a process of this replica is still running (its lock is held)",
        )
    })?;
    let stdout = open_log(l.stdout_path)?;
    let stderr = open_log(l.stderr_path)?;
    let limits = Limits {
        memory: l.resources.memory_bytes,
        open_files: l.resources.open_files,
        processes: l.resources.processes,
        cpu: l.resources.cpu_seconds,
    };
    let lock_fd = lock.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(l.run)
        .current_dir(l.dir)
        .env_clear()
        .envs(l.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // The replica must survive the request that started it and Ouro itself.
        .kill_on_drop(false);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::fcntl(lock_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(lock_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            apply_limits(&limits)
        });
    }
    let child = cmd.spawn()?;
    // Our copy of the descriptor goes; the child's keeps the lock.
    drop(lock);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the process exited before its pid was read"))?;
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Spawned {
        child,
        pid,
        start_time,
    })
}

macro_rules! set_limit {
    ($res:expr, $v:expr) => {{
        let r = libc::rlimit {
            rlim_cur: $v as libc::rlim_t,
            rlim_max: $v as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid pointer to a local value.
        if unsafe { libc::setrlimit($res, &r) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }};
}

fn apply_limits(l: &Limits) -> io::Result<()> {
    if let Some(v) = l.memory {
        set_limit!(libc::RLIMIT_AS, v);
    }
    if let Some(v) = l.open_files {
        set_limit!(libc::RLIMIT_NOFILE, v);
    }
    if let Some(v) = l.processes {
        set_limit!(libc::RLIMIT_NPROC, v);
    }
    if let Some(v) = l.cpu {
        set_limit!(libc::RLIMIT_CPU, v);
    }
    Ok(())
}

/// The fields of /proc/PID/stat after the command name: (state, pgrp, starttime).
fn stat_fields(text: &str) -> Option<(char, i64, u64)> {
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... starttime is field 22 of the whole line,
    // index 19 here.
    let state = f.first()?.chars().next()?;
    let pgrp = f.get(2)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, pgrp, start))
}

fn read_stat(pid: u32) -> Option<(char, i64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&text)
}

/// The process's start time (clock ticks since boot), which tells a reused pid apart.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|(_, _, s)| s)
}

/// Whether `pid` is still the (living, not zombie) process that started at `start`.
pub(crate) fn is_same_process(pid: u32, start: u64) -> bool {
    match read_stat(pid) {
        Some((state, _, s)) => s == start && state != 'Z' && state != 'X',
        None => false,
    }
}

/// Whether any living process is in process group `pgid`.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        matches!(read_stat(pid), Some((state, pgrp, _)) if pgrp == pgid as i64 && state != 'Z' && state != 'X')
    })
}

/// Sends `signal` to process group `pgid` (a group that is gone is not an error).
pub(crate) fn signal_group(pgid: u32, signal: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid addresses the group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

/// Whether the replica whose group is `pgid` and lock is `lock_path` has no process left.
pub(crate) fn replica_gone(pgid: u32, lock_path: &Path) -> bool {
    !lock_held(lock_path) && !group_alive(pgid)
}

/// Polls until the replica is gone or `limit` passed; true when gone.
pub(crate) async fn wait_gone(pgid: u32, lock_path: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if replica_gone(pgid, lock_path) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Picks a free loopback port (bind to port 0, read it, release it).
pub(crate) fn free_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Whether a loopback port can be bound right now.
pub(crate) fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(stat_fields(line), Some(('S', 4242, 987654)));
        assert_eq!(stat_fields("garbage"), None);
    }

    #[test]
    fn our_own_process_is_recognised_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let start = start_time(me).expect("own stat");
        assert!(is_same_process(me, start));
        assert!(!is_same_process(me, start + 1));
    }
}
