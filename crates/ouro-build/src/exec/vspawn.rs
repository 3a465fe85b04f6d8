//! Starting a step with one `exec`: a `vfork`-like `clone(CLONE_VM | CLONE_VFORK)` whose child
//! sets the process group, the rlimits and the parent-death signal itself, registers its group
//! with the runner's watchdog and `exec`s the program.
//!
//! The exec wrapper ([`super::spawn`]) costs a second `exec` per step: the 74 MB `ouro` binary
//! relocating itself (about 1.7 ms of CPU and 500 page faults), then forking a watchdog of its own.
//! Here the child shares the runner's memory until its `exec` (no copy of the server, as with
//! `posix_spawn`), and one watchdog per runner process ([`Watchdog`]) does what the per-step
//! watchdog did: when the runner dies, its end of the watchdog's pipe closes and the watchdog
//! SIGKILLs every registered group. The child registers its group (a 4-byte write) before its
//! `exec`, so no step runs untied. Waiting is through a pidfd (Linux 5.3); without one, or
//! without the `ouro` binary to run the watchdog, the exec wrapper is used as before.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

/// The first argument that makes the binary the runner's watchdog.
pub const WATCHDOG_ARG: &str = "__exec-watchdog";

/// The runner process's watchdog: `ouro __exec-watchdog RUNNER_PID`, reading process groups to
/// guard from its stdin (a pipe whose write end only this process holds).
struct Watchdog {
    tx: Arc<OwnedFd>,
    child: std::process::Child,
}

static WATCHDOG: Mutex<Option<Watchdog>> = Mutex::new(None);

/// The write end of the watchdog's pipe, the watchdog started (again) when it is not running.
/// Held by the caller until its child has registered: a watchdog replaced meanwhile must not
/// close the descriptor (its number could be reused by another file).
fn watchdog_fd(binary: &Path) -> io::Result<Arc<OwnedFd>> {
    let mut w = WATCHDOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = w.as_mut()
        && d.child.try_wait()?.is_none()
    {
        return Ok(d.tx.clone());
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own; both close on exec (the read end is handed to the
    // watchdog as its stdin by dup2, which clears that).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds from pipe2.
    let (rd, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A full pipe must never block a step's start (the watchdog drains it continuously).
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(tx.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(tx.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(binary)
        .arg(WATCHDOG_ARG)
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::from(rd))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        // Its own group: a Ctrl-C meant for the server's terminal does not end it first.
        .process_group(0)
        .spawn()?;
    let tx = Arc::new(tx);
    *w = Some(Watchdog {
        tx: tx.clone(),
        child,
    });
    Ok(tx)
}

/// Tells the watchdog that group `pgid` is gone (it also finds out by itself within 200 ms).
pub(crate) fn forget_group(pgid: i32) {
    let w = WATCHDOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = w.as_ref() {
        let msg = (-pgid).to_ne_bytes();
        // SAFETY: a 4-byte write from a local buffer; EAGAIN or EPIPE is fine.
        unsafe {
            libc::write(d.tx.as_raw_fd(), msg.as_ptr().cast(), msg.len());
        }
    }
}

/// Whether [`spawn`] works here: the kernel has pidfds (checked once).
pub(crate) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        // SAFETY: pidfd_open of our own pid; the fd is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            return false;
        }
        // SAFETY: the fd just opened.
        unsafe { libc::close(fd as RawFd) };
        true
    })
}

/// What the child needs, prepared before the `clone` (the child may not allocate).
struct Prepared {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    limits: Vec<(libc::__rlimit_resource_t, u64)>,
    runner: libc::pid_t,
    stdin: RawFd,
    out: RawFd,
    watchdog: RawFd,
    mask: libc::sigset_t,
    /// The child's errno when it failed before or in `exec` (shared memory: `CLONE_VM`).
    err: AtomicI32,
}

/// A step started by [`spawn`]: its pid and a pidfd to wait on.
pub(crate) struct CloneChild {
    pid: libc::pid_t,
    pidfd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
    reaped: bool,
}

impl CloneChild {
    pub(crate) fn id(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits for the process to end and reaps it.
    pub(crate) async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let fd = self
            .pidfd
            .as_ref()
            .ok_or_else(|| io::Error::other("already waited for"))?;
        loop {
            let mut ready = fd.readable().await?;
            let mut status = 0;
            // SAFETY: waitpid on our own child with a local status.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                self.pidfd = None;
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            ready.clear_ready();
        }
    }
}

impl Drop for CloneChild {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        // SAFETY: our own unreaped child (its pid cannot be reused before we reap it).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            if libc::waitpid(pid, &mut status, libc::WNOHANG) == pid {
                return;
            }
        }
        // It dies at once after SIGKILL; reap it off this thread.
        let _ = std::thread::Builder::new()
            .name("ouro-reap".into())
            .spawn(move || {
                let mut status = 0;
                // SAFETY: as above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            });
    }
}

/// `program` (found on `PATH` from `envs` when it has no slash) with `args`, exactly `envs` as its
/// environment, in `cwd`, in a new process group, stdin from /dev/null and stdout and stderr to
/// `out`, with `limits`, tied to this runner through the watchdog run by `binary`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    binary: &Path,
    program: &OsStr,
    args: &[&OsStr],
    envs: &[(&OsStr, &OsStr)],
    cwd: Option<&Path>,
    out: RawFd,
    limits: Vec<(libc::__rlimit_resource_t, u64)>,
) -> io::Result<CloneChild> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let path_var = envs
        .iter()
        .find(|(k, _)| k.as_bytes() == b"PATH")
        .map(|(_, v)| v.as_bytes().to_vec())
        .unwrap_or_default();
    let path =
        resolve(program, &path_var).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    let path = cstr(path.as_os_str().as_bytes())?;
    let mut argv_c = vec![cstr(program.as_bytes())?];
    for a in args {
        argv_c.push(cstr(a.as_bytes())?);
    }
    let mut envp_c = Vec::with_capacity(envs.len());
    for (k, v) in envs {
        let mut e = k.as_bytes().to_vec();
        e.push(b'=');
        e.extend_from_slice(v.as_bytes());
        envp_c.push(cstr(&e)?);
    }
    let cwd = cwd.map(|d| cstr(d.as_os_str().as_bytes())).transpose()?;
    let devnull = std::fs::File::open("/dev/null")?;
    let watchdog_tx = watchdog_fd(binary)?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: zeroed sigsets are filled by the calls below.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: fills a local set.
    unsafe { libc::sigfillset(&mut all) };
    let prep = Prepared {
        path,
        argv,
        envp,
        cwd,
        limits,
        runner: std::process::id() as libc::pid_t,
        stdin: devnull.as_raw_fd(),
        out,
        watchdog: watchdog_tx.as_raw_fd(),
        mask,
        err: AtomicI32::new(0),
    };
    let mut prep = Box::new(prep);
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the child runs `child` on its own stack with our memory until its exec or exit,
    // and this thread is suspended meanwhile (CLONE_VFORK); every signal is blocked around the
    // clone, so no handler of ours runs in the child (it resets them and restores the mask).
    let pid = unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut mask);
        prep.mask = mask;
        let top = stack.as_mut_ptr().add(stack.len());
        let top = (top as usize & !15) as *mut libc::c_void;
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut *prep as *mut Prepared).cast(),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        pid
    };
    drop(stack);
    drop(watchdog_tx);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let err = prep.err.load(Ordering::SeqCst);
    if err != 0 {
        let mut status = 0;
        // SAFETY: reaps the child that failed before or at its exec.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(err));
    }
    // SAFETY: pidfd_open of our unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let opened = if fd >= 0 {
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd) for its whole life.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)
    } else {
        Err(io::Error::last_os_error())
    };
    let mut c = CloneChild {
        pid,
        pidfd: None,
        reaped: false,
    };
    // Without a way to wait for it, it goes (its Drop kills and reaps it).
    c.pidfd = Some(opened?);
    Ok(c)
}

/// The child, between `clone` and `exec`: raw system calls only (no allocation, no locks).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Prepared`, alive and unchanged while this thread runs (the
    // parent is suspended until the exec); only async-signal-safe calls follow.
    unsafe {
        let p = &*(arg as *const Prepared);
        // (errno is the suspended parent thread's: the child runs on its thread pointer.)
        let fail = |p: &Prepared| -> libc::c_int {
            p.err.store(*libc::__errno_location(), Ordering::SeqCst);
            libc::_exit(127)
        };
        // Handlers of the runner must not run here, and `exec` keeps only ignored signals:
        // everything back to the default (SIGPIPE too, which Rust ignores), then the mask.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(p);
        }
        if libc::dup2(p.stdin, 0) < 0 || libc::dup2(p.out, 1) < 0 || libc::dup2(p.out, 2) < 0 {
            return fail(p);
        }
        if let Some(d) = &p.cwd
            && libc::chdir(d.as_ptr()) != 0
        {
            return fail(p);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return fail(p);
        }
        // The runner may have died before the prctl: then nothing would signal us.
        if libc::getppid() != p.runner {
            libc::_exit(137);
        }
        for (res, val) in &p.limits {
            let lim = libc::rlimit {
                rlim_cur: *val as libc::rlim_t,
                rlim_max: *val as libc::rlim_t,
            };
            if libc::setrlimit(*res, &lim) != 0 {
                return fail(p);
            }
        }
        let me = libc::syscall(libc::SYS_getpid) as i32;
        let msg = me.to_ne_bytes();
        if libc::write(p.watchdog, msg.as_ptr().cast(), msg.len()) != msg.len() as isize {
            // Not registered: not tied to the runner's death. Do not run.
            return fail(p);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &p.mask, std::ptr::null_mut());
        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(p)
    }
}

/// `program` itself when it has a slash, else the first executable file named so on `path`.
fn resolve(program: &OsStr, path: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return Some(p.to_path_buf());
    }
    path.split(|b| *b == b':')
        .map(|d| if d.is_empty() { &b"."[..] } else { d })
        .map(|d| Path::new(OsStr::from_bytes(d)).join(p))
        .find(|c| {
            std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The watchdog: `RUNNER_PID`; never returns. Reads group ids from stdin (4 bytes each,
/// negative: forget), and SIGKILLs every remembered group when stdin ends or the runner is
/// gone. Groups that no longer exist are forgotten every 200 ms.
pub(crate) fn watchdog_main(runner: libc::pid_t) -> ! {
    let stat = super::limits::stat_path(runner);
    let mut groups: Vec<i32> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut carry: Vec<u8> = Vec::new();
    let end = |groups: &[i32]| -> ! {
        for g in groups {
            // SAFETY: SIGKILL to a group this runner registered.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
        std::process::exit(0)
    };
    loop {
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on stdin with a local struct.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n > 0 {
            // SAFETY: read into a local buffer.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                end(&groups); // the runner's end closed: it died (or stopped)
            }
            carry.extend_from_slice(&buf[..r as usize]);
            let whole = carry.len() / 4 * 4;
            for c in carry[..whole].chunks_exact(4) {
                let v = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                if v > 0 {
                    groups.push(v);
                } else {
                    groups.retain(|g| *g != -v);
                }
            }
            carry.drain(..whole);
        }
        // SAFETY: signal 0 only checks that a group exists.
        groups.retain(|g| unsafe { libc::kill(-*g, 0) } == 0);
        // SAFETY: reads the runner's /proc stat into a stack buffer.
        if unsafe { !super::limits::process_alive(&stat) } {
            end(&groups);
        }
    }
}
