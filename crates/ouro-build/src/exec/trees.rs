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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

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

/// The one background thread that removes trashed directories, in order (a thread per job cost
/// a thread's creation and stack per job). `None` when the thread cannot be started.
fn remover() -> Option<&'static std::sync::mpsc::Sender<PathBuf>> {
    static TX: std::sync::OnceLock<Option<std::sync::mpsc::Sender<PathBuf>>> =
        std::sync::OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("ouro-rm".into())
            .spawn(move || {
                for dir in rx {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
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
