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
    // Most processes go within a millisecond of SIGTERM: look again soon, then less often.
    let mut pause = Duration::from_millis(1);
    while tokio::time::Instant::now() < deadline {
        if group_gone(pgid) || group_members(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    signal_group(pgid, libc::SIGKILL);
    // Wait a little for the kernel to finish them off.
    for _ in 0..50 {
        if group_gone(pgid) || group_members(pgid).is_empty() {
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
    tagged_processes_since(tag, Since::ALL)
}

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the comm: state is field 3, starttime field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Clock ticks since boot (the unit of /proc start times), one second ago. From the monotonic
/// clock, which never runs ahead of the boot-time clock the kernel stamps processes with, so a
/// process started after this call always has a later start time.
pub fn ticks_a_second_ago() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a local struct; sysconf has no preconditions.
    let (ok, hz) = unsafe {
        (
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) == 0,
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    if !ok || hz <= 0 {
        return 0;
    }
    let hz = hz as u64;
    let ticks = ts.tv_sec.max(0) as u64 * hz + ts.tv_nsec.max(0) as u64 * hz / 1_000_000_000;
    ticks.saturating_sub(hz)
}

/// Where a job's processes are: started at or after `ticks` (clock ticks since boot, see
/// [`ticks_a_second_ago`]) and, when the kernel's pid counter could be read, with pids handed
/// out after `pids`. A job's processes are never older than the job.
#[derive(Debug, Clone, Copy, Default)]
pub struct Since {
    ticks: u64,
    pids: Option<PidMark>,
}

/// The last pid handed out and the number of processes and threads created since boot.
#[derive(Debug, Clone, Copy)]
struct PidMark {
    last_pid: i32,
    forks: u64,
}

/// At most this many pids are probed one by one; a wider range reads all of /proc.
const MAX_PROBED_PIDS: i32 = 4096;

impl Since {
    /// Every process.
    pub const ALL: Since = Since {
        ticks: 0,
        pids: None,
    };

    /// The processes started from now on.
    pub fn now() -> Self {
        Since {
            ticks: ticks_a_second_ago(),
            pids: PidMark::read(),
        }
    }

    /// The pids handed out since, when that range is known and small: probing them one by one
    /// is much cheaper than listing /proc (a scan after every step). `None`: list /proc.
    fn pid_range(&self) -> Option<std::ops::RangeInclusive<i32>> {
        new_pids(self.pids?, PidMark::read()?, pid_max())
    }
}

/// The pids handed out between the marks `then` and `now`, when few (see [`Since::pid_range`]).
fn new_pids(then: PidMark, now: PidMark, pid_max: i32) -> Option<std::ops::RangeInclusive<i32>> {
    let created = now.forks.checked_sub(then.forks)?;
    // Pids grow until they wrap around at pid_max (to 300). Coming back up past
    // `then.last_pid` takes about pid_max creations; with fewer, every new pid is in the range.
    let span = now.last_pid.checked_sub(then.last_pid)?;
    let wrap_needs = pid_max.saturating_sub(300) as u64;
    ((0..=MAX_PROBED_PIDS).contains(&span) && created < wrap_needs)
        .then(|| then.last_pid + 1..=now.last_pid)
}

impl PidMark {
    fn read() -> Option<PidMark> {
        if !proc_is_ours() {
            return None;
        }
        // The fork count first: it may only be too low, which makes `pid_range` stricter.
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let forks = stat
            .lines()
            .find_map(|l| l.strip_prefix("processes "))?
            .trim()
            .parse()
            .ok()?;
        let last_pid = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(PidMark { last_pid, forks })
    }
}

/// Whether /proc shows this process's pid namespace (the pid counter is of our namespace).
fn proc_is_ours() -> bool {
    static OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OURS.get_or_init(|| {
        std::fs::read_link("/proc/self")
            .is_ok_and(|p| p.to_str() == Some(&std::process::id().to_string()))
    })
}

fn pid_max() -> i32 {
    static MAX: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(32768)
    })
}

/// [`tagged_processes`] among the processes of `since`: reading a process's start time is much
/// cheaper than reading its environment.
pub fn tagged_processes_since(tag: &[u8], since: Since) -> Vec<i32> {
    let me = std::process::id() as i32;
    let pids: Box<dyn Iterator<Item = i32>> = match since.pid_range() {
        Some(range) => Box::new(range),
        None => match std::fs::read_dir("/proc") {
            Ok(rd) => Box::new(
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())),
            ),
            Err(_) => return Vec::new(),
        },
    };
    let mut out = Vec::new();
    for pid in pids {
        if pid == me {
            continue;
        }
        // (Also drops pids that do not exist, when probing a range.)
        if start_ticks(pid).is_none_or(|t| t < since.ticks) {
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
    kill_tagged_since(tag, Since::ALL, grace).await
}

/// [`kill_tagged`] among the processes of `since` (see [`tagged_processes_since`]).
pub async fn kill_tagged_since(tag: &[u8], since: Since, grace: Duration) {
    let pids = tagged_processes_since(tag, since);
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
    let mut pause = Duration::from_millis(1);
    while tokio::time::Instant::now() < deadline {
        if pids.iter().all(|p| !alive(*p)) {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    for p in tagged_processes_since(tag, since) {
        // SAFETY: as above.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

/// Ties a step process to the runner: called in the step's process before `exec` (in the forked
/// child's `pre_exec`, or in the exec wrapper, see [`super::spawn`]).
///
/// The step gets `PR_SET_PDEATHSIG` = SIGKILL, so it dies with the runner's thread that spawned
/// it (the runner's async workers live as long as the runner). That signal reaches only the step's
/// own process, so the step also forks a tiny watchdog: all descriptors closed, in a process group
/// of its own (so the step's group is empty, and found empty at once, when the step's processes
/// are gone), it waits for the step to die (its own parent-death signal wakes it at once; it also
/// looks every 200 ms); then it stays until the step's group is empty, and SIGKILLs the whole
/// group if the runner is found dead meanwhile. (A live runner kills what is left of the group
/// itself, with its grace period.) So
/// `kill -9` of the runner takes every process of the running step's group with it, and nothing
/// waits on a pipe the watchdog holds. (Processes that left the group with `setsid` are found by the workspace tag
/// when a runner starts again.)
///
/// # Safety
/// Only async-signal-safe calls (prctl, getppid, getpid, fork, setpgid, sigprocmask, syscall,
/// close, sigtimedwait, kill, _exit) between the fork and `exec`/`_exit`.
pub(crate) fn tie_to_runner(
    runner: libc::pid_t,
    runner_stat: &std::ffi::CStr,
) -> std::io::Result<()> {
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
                watchdog(step, runner_stat);
            }
            _ => Ok(()),
        }
    }
}

/// The watchdog's life (see [`tie_to_runner`]); never returns.
///
/// # Safety
/// Async-signal-safe calls only (it runs in a forked child of a multi-threaded process).
unsafe fn watchdog(step: libc::pid_t, runner_stat: &std::ffi::CStr) -> ! {
    // SAFETY: async-signal-safe syscalls on local data.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
        libc::setpgid(0, 0);
        // The step's death arrives as SIGUSR2, blocked and taken with sigtimedwait.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGUSR2 as libc::c_ulong,
            0,
            0,
            0,
        );
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        while libc::getppid() == step {
            libc::sigtimedwait(&set, std::ptr::null_mut(), &pause);
        }
        // A live runner ends the step's group itself (SIGTERM, its grace period, SIGKILL); the
        // watchdog stays until the group is gone, and kills it if the runner dies meanwhile
        // (a runner being killed may still look alive for a moment: its threads end one by one).
        let short = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        loop {
            if libc::kill(-step, 0) != 0 {
                libc::_exit(0); // the group is gone
            }
            if !process_alive(runner_stat) {
                libc::kill(-step, libc::SIGKILL);
                libc::_exit(0);
            }
            libc::nanosleep(&short, std::ptr::null_mut());
        }
    }
}

/// Whether the process whose `/proc/PID/stat` is `stat` is alive (not a zombie): async-signal-
/// safe (open, read, close on a stack buffer).
///
/// # Safety
/// Plain syscalls; safe to call between fork and exec.
pub(crate) unsafe fn process_alive(stat: &std::ffi::CStr) -> bool {
    let mut buf = [0u8; 512];
    // SAFETY: a valid NUL-terminated path and a stack buffer of the given length.
    let n = unsafe {
        let fd = libc::open(stat.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return false;
    }
    let b = &buf[..n as usize];
    // `pid (comm) S ...`: the state follows the last `)` and a space.
    match b.iter().rposition(|&c| c == b')') {
        Some(i) if i + 2 < b.len() => !matches!(b[i + 2], b'Z' | b'X'),
        _ => false,
    }
}

/// The `/proc/PID/stat` path of `pid`, for [`tie_to_runner`] (made before any fork).
pub(crate) fn stat_path(pid: libc::pid_t) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/{pid}/stat")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged_sleep(tag: &str) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .env("OURO_TEST_TAG", tag)
            .spawn()
            .unwrap()
    }

    #[test]
    fn the_tag_search_finds_the_processes_started_since_and_not_older_ones() {
        let tag = format!("u{}", std::process::id());
        let entry = format!("OURO_TEST_TAG={tag}");
        let mut before = tagged_sleep(&tag);
        let since = Since::now();
        let mut after = tagged_sleep(&tag);
        // Let the children exec (the environment is read from /proc after the exec).
        std::thread::sleep(Duration::from_millis(200));
        if std::path::Path::new("/proc/sys/kernel/ns_last_pid").exists() {
            let range = since.pid_range().expect("a small range of new pids");
            assert!(range.contains(&(after.id() as i32)), "{range:?}");
            assert!(!range.contains(&(before.id() as i32)), "{range:?}");
            // Only the new one: the older process is outside the range.
            assert_eq!(
                tagged_processes_since(entry.as_bytes(), since),
                vec![after.id() as i32]
            );
        }
        // Listing all of /proc finds both.
        let mut all = tagged_processes_since(entry.as_bytes(), Since::ALL);
        all.sort();
        let mut want = vec![before.id() as i32, after.id() as i32];
        want.sort();
        assert_eq!(all, want);
        for c in [&mut before, &mut after] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(tagged_processes_since(entry.as_bytes(), Since::ALL).is_empty());
    }

    #[test]
    fn a_range_too_wide_to_probe_or_past_a_wrap_around_lists_proc_instead() {
        let mark = |last_pid, forks| PidMark { last_pid, forks };
        let then = mark(5000, 90_000);
        assert_eq!(new_pids(then, mark(5030, 90_040), 32768), Some(5001..=5030));
        let none_yet = new_pids(then, mark(5000, 90_000), 32768).expect("an empty range");
        assert_eq!(none_yet.count(), 0);
        // Too many to probe one by one.
        assert_eq!(new_pids(then, mark(5000 + 5000, 95_000), 4_194_304), None);
        // Wrapped around and came back up past the mark: as many creations as pid_max.
        assert_eq!(new_pids(then, mark(5030, 90_000 + 32_768), 32768), None);
        // Wrapped around, below the mark.
        assert_eq!(new_pids(then, mark(400, 90_100), 32768), None);
        // A fork count that went down (not this kernel's): not trusted.
        assert_eq!(new_pids(then, mark(5010, 80_000), 32768), None);
    }
}
