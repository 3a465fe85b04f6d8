//! Health probes with Kubernetes semantics: a check (HTTP GET, TCP connect, command) run every
//! interval with a timeout, and a tracker that turns single results into a healthy/unhealthy
//! state with success and failure thresholds, ignoring failures during the start period.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::spec::ProbeCheck;

/// Consecutive results folded into a state.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    healthy: bool,
    /// The start period ends early at the first success (as Docker's `start_period`): from
    /// then on the process is up and failures mean something.
    succeeded_once: bool,
}

impl Tracker {
    /// Readiness starts unhealthy (no traffic before the first successes), liveness healthy.
    pub fn new(success_threshold: u32, failure_threshold: u32, healthy: bool) -> Self {
        Tracker {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            successes: 0,
            failures: 0,
            healthy,
            succeeded_once: false,
        }
    }

    #[cfg(test)]
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Records one result; a failure inside the start period (before the first success) does
    /// not count. Returns the new state when it changed.
    pub fn record(&mut self, ok: bool, in_start_period: bool) -> Option<bool> {
        if ok {
            self.succeeded_once = true;
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= self.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            if in_start_period && !self.succeeded_once {
                return None;
            }
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= self.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// Where and how a check runs for one replica.
pub(crate) struct CheckTarget<'a> {
    pub port: u16,
    pub dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
}

/// Runs one check; `Err` says why it failed.
pub(crate) async fn check(
    c: &ProbeCheck,
    t: &CheckTarget<'_>,
    timeout: Duration,
) -> Result<(), String> {
    match c {
        ProbeCheck::Http { path } => {
            match tokio::time::timeout(timeout, http_get(t.port, path)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "GET {path}: no answer within {} ms",
                    timeout.as_millis()
                )),
            }
        }
        ProbeCheck::Tcp => {
            match tokio::time::timeout(timeout, TcpStream::connect(("127.0.0.1", t.port))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("TCP connect to port {}: {e}", t.port)),
                Err(_) => Err(format!(
                    "TCP connect to port {}: no answer within {} ms",
                    t.port,
                    timeout.as_millis()
                )),
            }
        }
        ProbeCheck::Command { run } => command(run, t, timeout).await,
    }
}

/// The status code of a status line such as `HTTP/1.1 200 OK`.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let fail = |e: String| format!("GET {path}: {e}");
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| fail(format!("connect to port {port}: {e}")))?;
    // A request path is sent as is; a space or line break would break the request line.
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail("the path contains whitespace".into()));
    }
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ouro-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| fail(format!("sending the request: {e}")))?;
    // Only the status line matters; read until its end (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| fail(format!("reading the response: {e}")))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    match status_code(line) {
        Some(code) if (200..=399).contains(&code) => Ok(()),
        Some(code) => Err(fail(format!("status {code}"))),
        None if buf.is_empty() => Err(fail("the connection closed without a response".into())),
        None => Err(fail(format!(
            "not an HTTP response: {:?}",
            truncate(line, 80)
        ))),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

async fn command(run: &str, t: &CheckTarget<'_>, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(run)
        .current_dir(t.dir)
        .env_clear()
        .envs(t.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so the timeout kills whatever the command started too.
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("command {run:?}: could not start: {e}"))?;
    let pid = child.id();
    // Whatever way this ends (done, timed out, or the probe dropped because the replica
    // exited), nothing the command started is left behind.
    let _group = KillGroup(pid);
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if msg.is_empty() {
                msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            Err(format!(
                "command {run:?}: {}{}",
                out.status,
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {}", truncate(&msg, 200))
                }
            ))
        }
        Ok(Err(e)) => Err(format!("command {run:?}: {e}")),
        Err(_) => Err(format!(
            "command {run:?}: killed after the {} ms timeout",
            timeout.as_millis()
        )),
    }
}

/// Kills a probe command's process group when dropped.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            super::process::signal_group(pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_success_threshold_successes_first() {
        let mut t = Tracker::new(2, 3, false);
        assert_eq!(t.record(true, false), None);
        assert_eq!(t.record(true, false), Some(true));
        assert!(t.healthy());
    }

    #[test]
    fn threshold_one_turns_unhealthy_at_the_first_failure() {
        let mut t = Tracker::new(1, 1, true);
        assert_eq!(t.record(false, false), Some(false));
        assert_eq!(t.record(true, false), Some(true));
    }

    #[test]
    fn threshold_n_needs_n_consecutive_failures() {
        let mut t = Tracker::new(1, 3, true);
        assert_eq!(t.record(false, false), None);
        assert_eq!(t.record(false, false), None);
        // A success in between resets the count.
        assert_eq!(t.record(true, false), None);
        assert_eq!(t.record(false, false), None);
        assert_eq!(t.record(false, false), None);
        assert_eq!(t.record(false, false), Some(false));
        assert!(!t.healthy());
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_but_successes_do() {
        let mut t = Tracker::new(1, 1, true);
        assert_eq!(t.record(false, true), None);
        assert!(t.healthy());
        let mut r = Tracker::new(1, 1, false);
        assert_eq!(r.record(true, true), Some(true));
        // After the first success the start period is over: failures count.
        assert_eq!(r.record(false, true), Some(false));
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(status_code("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(status_code("HTTP/1.0 503"), Some(503));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(""), None);
    }
}
