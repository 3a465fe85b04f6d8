//! The pre-receive hook channel. `git receive-pack` runs `DATA_DIR/hooks/pre-receive` (the one
//! hooks directory Ouro writes at start, made every repository's `core.hooksPath` through
//! `GIT_CONFIG_*` variables) after the pack is received into a quarantine directory and before
//! any ref moves. The hook is a small `sh` script; the decision is made in-process by Ouro:
//!
//! 1. Per push Ouro creates a private directory with two FIFOs, `req` and `resp` ([`HookDir`]),
//!    and passes its path to http-backend as `OURO_HOOK_DIR` (receive-pack passes the
//!    environment on to the hook).
//! 2. The hook writes the quarantine variables and the `old new ref` lines into `req`, ending
//!    with `end`; then copies `resp` to its stderr (git shows each line to the pusher as
//!    `remote: ...`) and exits 0 only when the last line is [`ACCEPT`].
//! 3. Ouro reads the request ([`HookDir::receive`]), runs the checks, and writes the messages
//!    and verdict ([`HookDir::respond`]).
//!
//! Anything else refuses the push: no `OURO_HOOK_DIR` (a push that did not come through Ouro),
//! a missing FIFO, an answer without the verdict line. Dropping a [`HookDir`] unblocks a hook
//! that waits for an answer (it then reads end-of-file: refused) and removes the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

/// The line that accepts a push.
pub const ACCEPT: &str = "ouro-verdict: accept";
/// The most bytes a hook request may have (the ref lines of one push).
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// The hook script (POSIX sh).
pub const SCRIPT: &str = r#"#!/bin/sh
# pre-receive hook written by Ouro. Ouro decides in-process; this script only relays.
if [ -z "$OURO_HOOK_DIR" ]; then
  echo "ouro: pushes go through Ouro's HTTP endpoint; this push did not and is refused." >&2
  exit 1
fi
if [ ! -p "$OURO_HOOK_DIR/req" ] || [ ! -p "$OURO_HOOK_DIR/resp" ]; then
  echo "ouro: the push check is no longer waiting for this push; it is refused. Try again." >&2
  exit 1
fi
{
  printf 'objects %s\n' "$GIT_OBJECT_DIRECTORY"
  printf 'alternates %s\n' "$GIT_ALTERNATE_OBJECT_DIRECTORIES"
  printf 'quarantine %s\n' "$GIT_QUARANTINE_PATH"
  while read -r old new ref; do
    printf 'update %s %s %s\n' "$old" "$new" "$ref"
  done
  printf 'end\n'
} > "$OURO_HOOK_DIR/req" || exit 1
verdict=reject
while IFS= read -r line; do
  case "$line" in
    "ouro-verdict: accept") verdict=accept ;;
    *) printf '%s\n' "$line" >&2 ;;
  esac
done < "$OURO_HOOK_DIR/resp"
if [ "$verdict" = accept ]; then
  exit 0
fi
exit 1
"#;

/// The hooks directory under the data dir.
pub fn hooks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("hooks")
}

/// Writes `DATA_DIR/hooks/pre-receive` (mode 0755) unless it is already current; returns the
/// hooks directory (the value for `core.hooksPath`).
pub fn install(data_dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // Absolute: git resolves a relative core.hooksPath against the repository it runs in.
    let dir = std::path::absolute(hooks_dir(data_dir))?;
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("pre-receive");
    let current = std::fs::read_to_string(&file).ok();
    let mode_ok = std::fs::metadata(&file)
        .map(|m| m.permissions().mode() & 0o777 == 0o755)
        .unwrap_or(false);
    if current.as_deref() != Some(SCRIPT) || !mode_ok {
        // Written next to it and renamed, so a concurrent push never runs half a script.
        let tmp = dir.join(format!(
            ".pre-receive.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&tmp, SCRIPT)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &file)?;
    }
    Ok(dir)
}

/// Where the per-push channel directories are made (`DATA_DIR/run/push`).
pub fn channels_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("push")
}

/// Removes channel directories a previous process left behind (it was killed mid-push); called
/// at start, before any push is served.
pub fn clean_stale(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(channels_dir(data_dir));
}

/// One update as the hook reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

/// What the hook sent: where the quarantined objects are, and the updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookRequest {
    /// `GIT_OBJECT_DIRECTORY` (the quarantine) and `GIT_ALTERNATE_OBJECT_DIRECTORIES` (the
    /// repository's own objects); empty when the push carried no pack (deletions only).
    pub object_dir: String,
    pub alternates: String,
    pub updates: Vec<HookUpdate>,
}

impl HookRequest {
    /// Parses the request text; `None` when it is malformed or lacks `end`.
    pub fn parse(text: &str) -> Option<HookRequest> {
        let mut r = HookRequest::default();
        let mut ended = false;
        for line in text.lines() {
            if ended {
                return None;
            }
            if line == "end" {
                ended = true;
            } else if let Some(v) = line.strip_prefix("objects ") {
                r.object_dir = v.to_string();
            } else if let Some(v) = line.strip_prefix("alternates ") {
                r.alternates = v.to_string();
            } else if line.starts_with("quarantine ") {
            } else if let Some(v) = line.strip_prefix("update ") {
                let mut parts = v.splitn(3, ' ');
                let (old, new, refname) = (parts.next()?, parts.next()?, parts.next()?);
                r.updates.push(HookUpdate {
                    old: old.to_string(),
                    new: new.to_string(),
                    refname: refname.to_string(),
                });
            } else if line == "objects" || line == "alternates" || line == "quarantine" {
                // An empty variable (`printf 'objects %s\n' ""` gives "objects ").
            } else {
                return None;
            }
        }
        ended.then_some(r)
    }

    /// The environment that makes git see the quarantined objects.
    pub fn git_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if !self.object_dir.is_empty() {
            env.push(("GIT_OBJECT_DIRECTORY", self.object_dir.clone()));
        }
        if !self.alternates.is_empty() {
            env.push(("GIT_ALTERNATE_OBJECT_DIRECTORIES", self.alternates.clone()));
        }
        env
    }
}

/// A push's private channel directory with its two FIFOs. The request side is opened at once
/// (read-write, so opening never blocks and a writer that comes and goes is not an end of
/// file); dropping it unblocks a waiting hook and removes the directory.
pub struct HookDir {
    path: PathBuf,
    req: Option<pipe::Receiver>,
}

fn mkfifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: `c` is a valid NUL-terminated path that lives for the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl HookDir {
    /// Creates `base/<unique>/{req,resp}` (the directory mode 0700). Must be called inside a
    /// tokio runtime.
    pub fn create(base: &Path) -> io::Result<HookDir> {
        use std::os::unix::fs::DirBuilderExt;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(base)?;
        // Absolute: the hook runs inside the repository directory.
        let path = std::path::absolute(base)?.join(format!(
            "push-{}-{}-{}",
            std::process::id(),
            ouro_core::time::now_ms(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let mut dir = HookDir { path, req: None };
        mkfifo(&dir.path.join("req"))?;
        mkfifo(&dir.path.join("resp"))?;
        dir.req = Some(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(dir.path.join("req"))?,
        );
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the hook's request (as long as it takes: the caller stops waiting when
    /// receive-pack ends, which it does without running the hook when there is nothing to do).
    pub async fn receive(&mut self) -> io::Result<HookRequest> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let req = self.req.as_mut().ok_or_else(|| bad("already received"))?;
        let mut reader = BufReader::new(req);
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await?;
            if n == 0 {
                return Err(bad("the hook channel closed"));
            }
            text.push_str(&line);
            if text.len() > MAX_REQUEST {
                return Err(bad("the hook request is too large"));
            }
            if line == "end\n" {
                break;
            }
        }
        HookRequest::parse(&text).ok_or_else(|| bad("a malformed hook request"))
    }

    /// Writes the messages (one `remote:` line each) and, when `accept`, the verdict. Waits up
    /// to `wait` for the hook to open its end.
    pub async fn respond(&self, lines: &[String], accept: bool, wait: Duration) -> io::Result<()> {
        let deadline = Instant::now() + wait;
        let path = self.path.join("resp");
        let mut tx = loop {
            match pipe::OpenOptions::new().open_sender(&path) {
                Ok(tx) => break tx,
                // No reader yet (ENXIO): the hook has not opened its end.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut text = String::new();
        for l in lines {
            // One message per line; a newline inside a message must not forge the verdict.
            for part in l.split(['\n', '\r']) {
                if part == ACCEPT {
                    text.push(' ');
                }
                text.push_str(part);
                text.push('\n');
            }
        }
        if accept {
            text.push_str(ACCEPT);
            text.push('\n');
        }
        tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5),
            tx.write_all(text.as_bytes()),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the hook did not read"))??;
        tx.flush().await?;
        Ok(())
    }
}

impl Drop for HookDir {
    fn drop(&mut self) {
        self.req = None;
        // A hook blocked opening `resp` for reading is released by a writer that opens and
        // closes at once: it reads end-of-file, no verdict, and refuses. (Opening a FIFO
        // read-write never blocks on Linux.)
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join("resp"));
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r = HookRequest::parse(
            "objects /q/objects\nalternates /r/objects\nquarantine /q\nupdate a b refs/heads/main\nupdate c d refs/tags/v1\nend\n",
        )
        .unwrap();
        assert_eq!(r.object_dir, "/q/objects");
        assert_eq!(r.updates.len(), 2);
        assert_eq!(r.updates[1].refname, "refs/tags/v1");
        assert_eq!(r.git_env().len(), 2);
        let empty = HookRequest::parse("objects \nalternates \nquarantine \nend\n").unwrap();
        assert!(empty.git_env().is_empty());
        assert!(HookRequest::parse("update a b refs/heads/main\n").is_none());
        assert!(HookRequest::parse("bogus\nend\n").is_none());
    }

    async fn run_hook(dir: &Path, hook_dir: Option<&Path>, stdin: &str) -> (bool, String) {
        let mut c = tokio::process::Command::new("sh");
        c.arg(dir.join("pre-receive"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .env_remove("OURO_HOOK_DIR")
            .env("GIT_OBJECT_DIRECTORY", "/q");
        if let Some(h) = hook_dir {
            c.env("OURO_HOOK_DIR", h);
        }
        let mut child = c.spawn().unwrap();
        let mut sin = child.stdin.take().unwrap();
        // The hook may refuse before reading its input.
        let _ = sin.write_all(stdin.as_bytes()).await;
        drop(sin);
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[tokio::test]
    async fn the_script_relays_requests_and_verdicts() {
        let data = tempfile::tempdir().unwrap();
        let hooks = install(data.path()).unwrap();
        install(data.path()).unwrap();
        assert!(hooks.is_absolute());

        // Without the channel the hook refuses.
        let (ok, err) = run_hook(&hooks, None, "a b refs/heads/x\n").await;
        assert!(!ok);
        assert!(err.contains("go through Ouro"), "{err}");

        for accept in [true, false] {
            let mut ch = HookDir::create(&data.path().join("run")).unwrap();
            let path = ch.path().to_path_buf();
            let hook = tokio::spawn({
                let hooks = hooks.clone();
                async move { run_hook(&hooks, Some(&path), "a b refs/heads/main\n").await }
            });
            let req = ch.receive().await.unwrap();
            assert_eq!(req.object_dir, "/q");
            assert_eq!(req.updates[0].refname, "refs/heads/main");
            ch.respond(
                &["ouro: hello".into(), format!("x\n{ACCEPT}")],
                accept,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
            let (ok, err) = hook.await.unwrap();
            assert_eq!(ok, accept, "{err}");
            assert!(err.contains("ouro: hello"), "{err}");
            let dir = ch.path().to_path_buf();
            drop(ch);
            assert!(!dir.exists());
        }

        // Ouro gives up without answering: the waiting hook is released and refuses.
        let mut ch = HookDir::create(&data.path().join("run")).unwrap();
        let path = ch.path().to_path_buf();
        let hook = tokio::spawn({
            let hooks = hooks.clone();
            async move { run_hook(&hooks, Some(&path), "a b refs/heads/main\n").await }
        });
        ch.receive().await.unwrap();
        drop(ch);
        let (ok, _) = hook.await.unwrap();
        assert!(!ok);
    }
}
