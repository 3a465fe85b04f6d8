//! Starting step processes without forking the runner.
//!
//! A step needs its rlimits and its tie to the runner ([`limits::tie_to_runner`]) set in its own
//! process before `exec`. Done in a `pre_exec` closure, that makes the standard library `fork`
//! the whole runner (the server: tens of MB of mappings and many threads) for every process.
//! With an exec wrapper instead, the runner starts the wrapper with `posix_spawn` (a `vfork`-like
//! clone that shares memory until the `exec`: no copy of the server), and the wrapper, a fresh
//! small process, sets the limits, ties itself to the runner and `exec`s the real program. The
//! step is then the same process the wrapper was, so its parent is still the runner's thread
//! and the parent-death signal works as before.
//!
//! The wrapper is the `ouro` binary itself (`ouro __exec-limits RUNNER LIMITS -- PROGRAM ARGS...`):
//! the binary calls [`run_if_wrapper`] first thing in `main` and [`set_wrapper`] once at start.
//! Without a wrapper (a library user, the tests of other crates) the `pre_exec` path is used.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::limits::{self, Limits};

/// The first argument that makes the binary the exec wrapper.
pub const WRAPPER_ARG: &str = "__exec-limits";

static WRAPPER: OnceLock<PathBuf> = OnceLock::new();

/// Makes `path` the exec wrapper of every [`super::ShellExecutor`] created afterwards in this
/// process (`/proc/self/exe` for the `ouro` binary: it stays valid when the file is replaced).
/// Later calls are ignored.
pub fn set_wrapper(path: impl Into<PathBuf>) {
    let _ = WRAPPER.set(path.into());
}

/// The wrapper set with [`set_wrapper`].
pub fn wrapper() -> Option<&'static Path> {
    WRAPPER.get().map(PathBuf::as_path)
}

/// Limits as one argument: `data=N,nproc=N,nofile=N,cpu=N` (only those set), `-` for none.
pub(crate) fn limits_arg(l: &Limits) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("data", l.memory_bytes),
        ("nproc", l.processes),
        ("nofile", l.open_files),
        ("cpu", l.cpu_seconds),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name}={v}"));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn parse_limits(text: &str) -> Option<Limits> {
    let mut l = Limits::default();
    if text == "-" {
        return Some(l);
    }
    for part in text.split(',') {
        let (name, v) = part.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match name {
            "data" => l.memory_bytes = Some(v),
            "nproc" => l.processes = Some(v),
            "nofile" => l.open_files = Some(v),
            "cpu" => l.cpu_seconds = Some(v),
            _ => return None,
        }
    }
    Some(l)
}

/// The wrapper's command line for running `program args` with `limits`, tied to `runner`.
pub(crate) fn wrapper_args(
    runner: libc::pid_t,
    limits: &Limits,
    program: &std::ffi::OsStr,
    args: impl IntoIterator<Item = OsString>,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        WRAPPER_ARG.into(),
        runner.to_string().into(),
        limits_arg(limits).into(),
        "--".into(),
        program.to_owned(),
    ];
    v.extend(args);
    v
}

/// When this process was started as the exec wrapper (`argv[1]` is [`WRAPPER_ARG`]), does the
/// wrapper's work and never returns; otherwise returns at once.
pub fn run_if_wrapper() {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if first.as_deref() == Some(std::ffi::OsStr::new(super::vspawn::WATCHDOG_ARG)) {
        let runner = args
            .next()
            .and_then(|a| a.to_str().and_then(|s| s.parse().ok()));
        match runner {
            Some(pid) => super::vspawn::watchdog_main(pid),
            None => {
                eprintln!("ouro: {} RUNNER_PID", super::vspawn::WATCHDOG_ARG);
                std::process::exit(126);
            }
        }
    }
    if first.as_deref() != Some(std::ffi::OsStr::new(WRAPPER_ARG)) {
        return;
    }
    let code = wrapper_main(args.collect());
    std::process::exit(code);
}

/// The wrapper: `RUNNER LIMITS -- PROGRAM ARGS...`. Returns an exit code only on failure.
fn wrapper_main(args: Vec<OsString>) -> i32 {
    use std::os::unix::process::CommandExt;
    let usage = || {
        eprintln!("ouro: {WRAPPER_ARG} RUNNER_PID LIMITS -- PROGRAM [ARGS...]");
        126
    };
    let [runner, lim, dashes, program, rest @ ..] = args.as_slice() else {
        return usage();
    };
    let runner: Option<libc::pid_t> = runner.to_str().and_then(|s| s.parse().ok());
    let lim = lim.to_str().and_then(parse_limits);
    let (Some(runner), Some(lim), true) = (runner, lim, dashes == "--") else {
        return usage();
    };
    let cannot = |e: std::io::Error| {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "ouro: cannot start {} in {cwd}: {e}",
            program.to_string_lossy()
        );
        127
    };
    if let Err(e) = limits::tie_to_runner(runner, &limits::stat_path(runner)) {
        return cannot(e);
    }
    if let Err(e) = limits::apply(&lim.pairs()) {
        return cannot(e);
    }
    // `exec` returns only on failure (a missing program: the step fails with 127, as before).
    let e = std::process::Command::new(program).args(rest).exec();
    cannot(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_the_argument() {
        let all = Limits {
            memory_bytes: Some(512 << 20),
            processes: Some(200),
            open_files: Some(32),
            cpu_seconds: Some(60),
        };
        for l in [Limits::default(), all] {
            assert_eq!(parse_limits(&limits_arg(&l)), Some(l));
        }
        assert_eq!(limits_arg(&Limits::default()), "-");
        assert_eq!(parse_limits("nofile=x"), None);
        assert_eq!(parse_limits("stack=1"), None);
    }
}
