//! The `sandbox` executor's isolation: bubblewrap (`bwrap`, Debian package `bubblewrap`).
//!
//! Every step runs as `bwrap ARGS -- SHELL SCRIPT` with:
//! - the host read-only (`--ro-bind / /`), a fresh `/dev` and `/proc`;
//! - private, empty `/tmp` and `/home` (tmpfs);
//! - the hidden directories (the Ouro data dir, the runner's work root with the other jobs)
//!   covered by an empty tmpfs, then only this job's directory bound read-write;
//! - all namespaces unshared (`--unshare-all`: user, ipc, pid, net, uts, cgroup), the network
//!   shared back only when the job asks for it (`--share-net`);
//! - `--die-with-parent` (killing bwrap kills the whole pid namespace) and `--new-session` (no
//!   access to the runner's terminal).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The bwrap binary (`bwrap` looked up in PATH by default).
    pub bwrap: PathBuf,
    /// Directories the job must not see (the data dir; the work root is added by the executor).
    pub hidden: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: PathBuf::from("bwrap"),
            hidden: Vec::new(),
        }
    }
}

impl SandboxConfig {
    /// Whether bubblewrap is installed and can create its namespaces here; the reason when not.
    pub fn available(&self) -> Result<(), String> {
        let out = Command::new(&self.bwrap)
            .args([
                "--ro-bind",
                "/",
                "/",
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--",
                "true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "bubblewrap ({}) is not installed (Debian package `bubblewrap`)",
                self.bwrap.display()
            )),
            Err(e) => Err(format!("bubblewrap cannot start: {e}")),
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "bubblewrap cannot create namespaces here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    }

    /// The arguments before `--` for a step of the job in `job_dir`, started in `cwd`.
    pub fn args(
        &self,
        job_dir: &Path,
        cwd: &Path,
        extra_hidden: &[PathBuf],
        read_only: &[PathBuf],
        network: bool,
    ) -> Vec<String> {
        let mut a: Vec<String> = [
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/home",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for h in self.hidden.iter().chain(extra_hidden) {
            if h.exists() {
                a.push("--tmpfs".into());
                a.push(h.display().to_string());
            }
        }
        // Shown again read-only: the object directories the checkout borrows (`git clone --shared`
        // writes them to `.git/objects/info/alternates`); the repository may live in a hidden dir.
        for r in read_only {
            if r.exists() {
                a.push("--ro-bind".into());
                a.push(r.display().to_string());
                a.push(r.display().to_string());
            }
        }
        a.push("--bind".into());
        a.push(job_dir.display().to_string());
        a.push(job_dir.display().to_string());
        a.push("--unshare-all".into());
        if network {
            a.push("--share-net".into());
        }
        a.extend(
            ["--die-with-parent", "--new-session", "--chdir"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.push(cwd.display().to_string());
        a
    }
}
