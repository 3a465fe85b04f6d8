//! The runner's cache of checked-out commits, and job directories removed in the background.
//!
//! With a cache directory ([`super::ShellExecutor::cache_dir`]) a commit is checked out once
//! (`git read-tree` into `CACHE/trees/SHA-REPOHASH`) and each job gets a *copy* of that tree (its
//! files and its `.git`: the same repository a fresh checkout makes). A copy, not hard links: a
//! job writing to its files must never change what the next job of the commit gets. The last
//! [`KEPT_TREES`] commits are kept; an older tree is removed once no job is copying it.
//!
//! A finished job's directory is renamed into `CACHE/trash/` and removed by a background thread,
//! so the job's result is reported without waiting for the removal.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How many commit trees a cache keeps.
pub const KEPT_TREES: usize = 8;

/// Per cache directory: the cached trees, least recently used first, with how many jobs are
/// copying each. Process-wide, so executors sharing a cache directory agree.
static IN_USE: LazyLock<Mutex<HashMap<PathBuf, Trees>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Tree names, least recently used first, with the number of jobs using each.
type Trees = Vec<(String, usize)>;

/// The tree directory name of `sha` of the repository at `repo`: the checkout's `.git` names its
/// repository, so one commit of two repositories is two trees.
pub(crate) fn key(repo: &Path, sha: &str) -> String {
    let h = Sha256::digest(repo.as_os_str().as_encoded_bytes());
    format!("{sha}-{}", hex::encode(&h[..8]))
}

/// A job's use of a cached tree: the tree is not evicted while it lives.
pub(crate) struct TreeUse {
    cache: PathBuf,
    key: String,
}

impl TreeUse {
    /// Marks `key` of `cache` as used (and most recently used).
    pub(crate) fn acquire(cache: &Path, key: &str) -> TreeUse {
        let mut all = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.entry(cache.to_path_buf()).or_default();
        let count = match list.iter().position(|(k, _)| k == key) {
            Some(i) => list.remove(i).1,
            None => 0,
        };
        list.push((key.to_string(), count + 1));
        TreeUse {
            cache: cache.to_path_buf(),
            key: key.to_string(),
        }
    }
}

impl Drop for TreeUse {
    fn drop(&mut self) {
        let evicted: Vec<String> = {
            let mut all = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            let Some(list) = all.get_mut(&self.cache) else {
                return;
            };
            if let Some(e) = list.iter_mut().find(|(k, _)| *k == self.key) {
                e.1 = e.1.saturating_sub(1);
            }
            let mut out = Vec::new();
            let mut i = 0;
            while list.len() > KEPT_TREES && i < list.len() {
                if list[i].1 == 0 {
                    out.push(list.remove(i).0);
                } else {
                    i += 1;
                }
            }
            out
        };
        for k in evicted {
            remove_later(&self.cache, &self.cache.join("trees").join(k));
        }
    }
}

/// Moves `dir` into `CACHE/trash/` and removes it on a background thread (at once when the
/// rename fails: another file system).
pub(crate) fn remove_later(cache: &Path, dir: &Path) {
    let trash = cache.join("trash");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let target = trash.join(format!("{name}-{nonce:x}"));
    let moved = std::fs::create_dir_all(&trash).is_ok() && std::fs::rename(dir, &target).is_ok();
    if !moved {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    let queued = remover().map(|tx| tx.send(target.clone()).is_ok());
    if queued != Some(true) {
        let _ = std::fs::remove_dir_all(&target);
    }
}

/// How long the trash waits for a quiet moment: removal starts once no directory has been
/// trashed for [`QUIET`], or when the oldest has waited [`MAX_WAIT`] (a runner busy for a long
/// time still frees its disk).
const QUIET: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The one background thread that removes trashed directories, in order (a thread per job cost
/// a thread's creation and stack per job). `None` when the thread cannot be started.
///
/// Removal waits for a pause between jobs instead of running beside them: deleting a workspace
/// competes with the next job's checkout for the file system, and on ext4 without a journal
/// every inode freed in the last seconds makes each new file or directory slower to allocate
/// (a `mkdir` took about 100 us instead of about 20). A burst of jobs creates, the pause
/// after it deletes.
fn remover() -> Option<&'static std::sync::mpsc::Sender<PathBuf>> {
    static TX: std::sync::OnceLock<Option<std::sync::mpsc::Sender<PathBuf>>> =
        std::sync::OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("ouro-rm".into())
            .spawn(move || {
                lowest_priority();
                remove_in_pauses(&rx, QUIET, MAX_WAIT)
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Puts the calling thread last in line for the CPU (nice 19) and the disk (the idle I/O
/// class): removing a large workspace is kernel work that would otherwise compete with the
/// running jobs for a core and the disk. Best effort: without the permission or support, the
/// thread runs at normal priority.
fn lowest_priority() {
    // SAFETY: both calls change only the calling thread's own scheduling attributes.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// Removes the directories sent on `rx` once `quiet` passes without a new one (one at a time,
/// stopping when another arrives), or when the oldest has waited `max_wait`; all that are left
/// when the sender goes.
fn remove_in_pauses(rx: &Receiver<PathBuf>, quiet: Duration, max_wait: Duration) {
    let mut pending: VecDeque<(PathBuf, Instant)> = VecDeque::new();
    loop {
        let next = if pending.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(quiet)
        };
        match next {
            Ok(dir) => pending.push_back((dir, Instant::now())),
            Err(RecvTimeoutError::Timeout) => {
                // A pause: remove until the next directory arrives.
                while let Some((dir, _)) = pending.pop_front() {
                    let _ = std::fs::remove_dir_all(&dir);
                    match rx.try_recv() {
                        Ok(dir) => {
                            pending.push_back((dir, Instant::now()));
                            break;
                        }
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                for (dir, _) in pending.drain(..) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return;
            }
        }
        while let Some((dir, _)) = pending.front().filter(|(_, at)| at.elapsed() >= max_wait) {
            let _ = std::fs::remove_dir_all(dir);
            pending.pop_front();
        }
    }
}

/// Empties a cache directory (a runner starting: nothing uses it yet).
pub fn clear(cache: &Path) {
    IN_USE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(cache);
    let _ = std::fs::remove_dir_all(cache);
}

/// Copies the tree `src` to `dst` (which must not exist): directories, files with their
/// permission bits, symbolic links as links.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ty = e.file_type()?;
        if ty.is_dir() {
            copy_tree(&from, &to)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    std::fs::set_permissions(dst, std::fs::metadata(src)?.permissions())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_modes_and_links_and_are_independent() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/run.sh"), "echo hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            src.join("sub/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/run.sh", src.join("link")).unwrap();
        let dst = d.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        let mode = std::fs::metadata(dst.join("sub/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            Path::new("sub/run.sh")
        );
        std::fs::write(dst.join("sub/run.sh"), "changed\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join("sub/run.sh")).unwrap(),
            "echo hi\n"
        );
    }

    fn trashed(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("ws/.git")).unwrap();
        std::fs::write(dir.join("ws/file"), "x").unwrap();
        dir
    }

    /// [`remove_in_pauses`] on a thread of its own, and the sender it removes for.
    fn removing(
        quiet: Duration,
        max_wait: Duration,
    ) -> (
        std::sync::mpsc::Sender<PathBuf>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let rm = std::thread::spawn(move || remove_in_pauses(&rx, quiet, max_wait));
        (tx, rm)
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn trash_waits_for_a_pause_then_goes() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rm) = removing(Duration::from_secs(2), Duration::from_secs(600));
        let (a, b) = (trashed(d.path(), "a"), trashed(d.path(), "b"));
        tx.send(a.clone()).unwrap();
        tx.send(b.clone()).unwrap();
        // Within the quiet time nothing is removed ...
        assert!(a.exists() && b.exists());
        // ... after it, all of it.
        wait_until("both are removed", || !a.exists() && !b.exists());
        let c = trashed(d.path(), "c");
        tx.send(c.clone()).unwrap();
        drop(tx);
        rm.join().unwrap();
        assert!(!c.exists(), "what is left goes when the sender does");
    }

    #[test]
    fn trash_of_a_busy_runner_goes_after_the_longest_wait() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rm) = removing(Duration::from_secs(600), Duration::from_millis(100));
        let first = trashed(d.path(), "first");
        tx.send(first.clone()).unwrap();
        // Never a pause: a directory every 20 ms.
        let mut sent = vec![first.clone()];
        let deadline = Instant::now() + Duration::from_secs(30);
        while first.exists() {
            assert!(Instant::now() < deadline, "the oldest was never removed");
            let next = trashed(d.path(), &format!("n{}", sent.len()));
            tx.send(next.clone()).unwrap();
            sent.push(next);
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(tx);
        rm.join().unwrap();
        assert!(sent.iter().all(|p| !p.exists()));
    }

    /// The calling thread's nice value: field 19 of its stat line (after the name in brackets).
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn the_remover_runs_last_in_line_for_cpu_and_disk() {
        let before = own_nice();
        let (nice, ioprio) = std::thread::spawn(|| {
            lowest_priority();
            // SAFETY: reads the calling thread's I/O priority.
            let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, libc::gettid() as i64) };
            (own_nice(), ioprio)
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
        assert_eq!(ioprio >> 13, 3, "the idle I/O class");
        assert_eq!(own_nice(), before, "only the remover's thread changes");
    }

    #[test]
    fn old_trees_go_once_unused() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let trees = cache.join("trees");
        let held = TreeUse::acquire(&cache, "k0");
        std::fs::create_dir_all(trees.join("k0")).unwrap();
        for i in 1..=KEPT_TREES + 2 {
            std::fs::create_dir_all(trees.join(format!("k{i}"))).unwrap();
            drop(TreeUse::acquire(&cache, &format!("k{i}")));
        }
        // k0 is in use: kept; the oldest unused are gone, the newest are kept.
        let gone = |k: &str| {
            let p = trees.join(k);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while p.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            !p.exists()
        };
        assert!(trees.join("k0").exists());
        assert!(gone("k1") && gone("k2"));
        assert!(trees.join(format!("k{}", KEPT_TREES + 2)).exists());
        drop(held);
        std::fs::create_dir_all(trees.join("k99")).unwrap();
        drop(TreeUse::acquire(&cache, "k99"));
        assert!(gone("k0"), "the oldest tree goes once its job is done");
    }
}
