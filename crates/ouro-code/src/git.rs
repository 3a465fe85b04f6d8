//! The git CLI, run as a child process: creating bare repositories, importing, reading refs.
//! The CLI is a runtime dependency of Ouro (`ouro serve` checks for it at start).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::Command;

/// The all-zero object id git uses for "no commit" (a created or deleted ref).
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// What a failed git command said.
#[derive(Debug, thiserror::Error)]
#[error("git {what}: {message}")]
pub struct GitError {
    pub what: String,
    pub message: String,
}

/// A git command with a clean environment: no terminal prompts, no user or system config
/// that could change what the server does.
pub fn command(args: &[&str]) -> Command {
    program(std::ffi::OsStr::new("git"), args)
}

fn program(path: &std::ffi::OsStr, args: &[&str]) -> Command {
    let mut c = Command::new(path);
    c.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ASKPASS", "")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs git and returns its stdout, or its stderr as the error.
pub async fn run(args: &[&str]) -> Result<String, GitError> {
    let what = args.first().copied().unwrap_or("").to_string();
    let out = command(args).output().await.map_err(|e| GitError {
        what: what.clone(),
        message: format!("cannot run git: {e}"),
    })?;
    if !out.status.success() {
        return Err(GitError {
            what,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How long an import clone or a mirror fetch may take (`ouro serve` sets it from
/// `git_fetch_timeout_secs`): a source that hangs must not hold a request or the mirror
/// scheduler forever.
static FETCH_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(600);

pub fn set_fetch_timeout(d: Duration) {
    FETCH_TIMEOUT_SECS.store(d.as_secs().max(1), Ordering::Relaxed);
}

pub fn fetch_timeout() -> Duration {
    Duration::from_secs(FETCH_TIMEOUT_SECS.load(Ordering::Relaxed))
}

/// [`run`] with a deadline; git is killed when it passes.
pub async fn run_for(args: &[&str], limit: Duration) -> Result<String, GitError> {
    match tokio::time::timeout(limit, run(args)).await {
        Ok(r) => r,
        Err(_) => Err(GitError {
            what: args.first().copied().unwrap_or("").to_string(),
            message: format!(
                "gave up after {} s (the limit is git_fetch_timeout_secs)",
                limit.as_secs()
            ),
        }),
    }
}

/// The URL with any password replaced by `***` (`https://me:***@host/r.git`), for showing and
/// storing where a secret may not go.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth.rsplit_once('@') {
        Some((userinfo, hostpart)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hostpart}{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The password part of a URL's user info, if any (to mask it in git's messages).
pub fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let auth = rest.split('/').next()?;
    let userinfo = auth.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// `message` with the URL's password masked.
pub fn mask_in(message: &str, url: &str) -> String {
    match url_password(url) {
        Some(p) => message.replace(p, "***"),
        None => message.to_string(),
    }
}

/// The installed git's version line, or `None` when git cannot be run.
pub async fn version() -> Option<String> {
    run(&["--version"]).await.ok().map(|v| v.trim().to_string())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `git init --bare` with `branch` as the initial HEAD.
pub async fn init_bare(dir: &Path, branch: &str) -> Result<(), GitError> {
    let head = format!("--initial-branch={branch}");
    run(&["init", "--bare", "--quiet", &head, &path_str(dir)]).await?;
    configure(dir).await
}

/// `git clone --bare URL` (an import); returns the default branch the source's HEAD names.
/// The source is forgotten afterwards (`origin` removed), so a password in the URL never stays
/// in the repository's config; mirrors fetch with the URL given each time ([`fetch_mirror`]).
pub async fn clone_bare(url: &str, dir: &Path) -> Result<String, GitError> {
    run_for(
        &["clone", "--bare", "--quiet", "--", url, &path_str(dir)],
        fetch_timeout(),
    )
    .await
    .map_err(|e| GitError {
        message: mask_in(&e.message, url),
        ..e
    })?;
    run(&["-C", &path_str(dir), "remote", "remove", "origin"]).await?;
    configure(dir).await?;
    let head = run(&["-C", &path_str(dir), "symbolic-ref", "--short", "HEAD"]).await?;
    Ok(head.trim().to_string())
}

/// Server-side settings every hosted repository gets: pushes over HTTP are allowed (Ouro has
/// authenticated the pusher), and the repository keeps reflogs for recovery.
async fn configure(dir: &Path) -> Result<(), GitError> {
    let d = path_str(dir);
    for (k, v) in [
        ("http.receivepack", "true"),
        ("core.logAllRefUpdates", "true"),
        ("receive.fsckObjects", "true"),
    ] {
        run(&["-C", &d, "config", k, v]).await?;
    }
    Ok(())
}

/// Every ref of the repository (under `refs/`) and the object it points at; symbolic refs are
/// left out (they move only with their target). Read in-process with gix: a push reads the refs
/// twice, and two `git for-each-ref` processes cost more than the read.
pub async fn refs(dir: &Path) -> Result<BTreeMap<String, String>, GitError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || read_refs(&dir))
        .await
        .map_err(|e| refs_failed(e.to_string()))?
}

fn refs_failed(message: String) -> GitError {
    GitError {
        what: "read refs".into(),
        message,
    }
}

fn read_refs(dir: &Path) -> Result<BTreeMap<String, String>, GitError> {
    let repo = gix::open(dir).map_err(|e| refs_failed(e.to_string()))?;
    let platform = repo.references().map_err(|e| refs_failed(e.to_string()))?;
    let mut out = BTreeMap::new();
    for r in platform.all().map_err(|e| refs_failed(e.to_string()))? {
        let r = r.map_err(|e| refs_failed(e.to_string()))?;
        if let gix::refs::TargetRef::Object(id) = r.target() {
            out.insert(r.name().as_bstr().to_string(), id.to_hex().to_string());
        }
    }
    Ok(out)
}

/// A program of git's exec path (`git --exec-path`), so a request runs it directly instead of
/// through the `git` wrapper (one process less). `None` when git is missing or has no such file.
fn exec_program(name: &str) -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let p = Path::new(dir.trim()).join(name);
    p.is_file().then_some(p)
}

/// The path of `git-http-backend`; callers fall back to `git http-backend` when `None`.
pub fn http_backend_path() -> Option<&'static Path> {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| exec_program("git-http-backend"))
        .as_deref()
}

/// `git http-backend` with [`command`]'s clean environment.
pub fn http_backend() -> Command {
    match http_backend_path() {
        Some(p) => program(p.as_os_str(), &[]),
        None => command(&["http-backend"]),
    }
}

/// `git receive-pack ARGS` with [`command`]'s clean environment, run directly from the exec path
/// when it is there.
pub fn receive_pack(args: &[&str]) -> Command {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    match PATH.get_or_init(|| exec_program("git-receive-pack")) {
        Some(p) => program(p.as_os_str(), args),
        None => {
            let mut all = vec!["receive-pack"];
            all.extend_from_slice(args);
            command(&all)
        }
    }
}

/// Whether git's automatic housekeeping (`git maintenance run --auto`, i.e. `gc --auto`) might
/// have work in the repository: git estimates loose objects from `objects/17` (due above
/// `gc.auto` / 256, 27 by default) and counts packs (due above `gc.autoPackLimit`, 50). This
/// looks at the same things with lower bounds, and defers to git whenever the repository sets
/// its own `gc` or `maintenance` options, so git (which has the last word) is started only
/// when it may act, not after every push.
pub fn housekeeping_may_be_due(dir: &Path) -> bool {
    let count = |sub: &str, keep: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir.join(sub)).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .count()
        })
    };
    let loose = count("objects/17", &|n| {
        n.len() == 38 && n.bytes().all(|b| b.is_ascii_hexdigit())
    });
    let packs = count("objects/pack", &|n| n.ends_with(".pack"));
    let config = std::fs::read_to_string(dir.join("config"))
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace([' ', '\t'], "");
    loose >= 20 || packs >= 40 || config.contains("[gc") || config.contains("[maintenance")
}

// ---------------------------------------------------------------------------------------------
// Reading files at a commit in process (what `ls-tree` + `cat-file` and `rev-parse` answered)

fn read_failed(what: &str, e: impl std::fmt::Display) -> GitError {
    GitError {
        what: what.into(),
        message: e.to_string(),
    }
}

/// The tree of `commit` (an object id, full or abbreviated, or any name `rev-parse` takes).
fn commit_tree<'r>(repo: &'r gix::Repository, commit: &str) -> Result<gix::Tree<'r>, GitError> {
    let id = repo
        .rev_parse_single(commit)
        .map_err(|e| read_failed("rev-parse", e))?;
    let obj = id.object().map_err(|e| read_failed("rev-parse", e))?;
    obj.peel_to_commit()
        .map_err(|e| read_failed("rev-parse", e))?
        .tree()
        .map_err(|e| read_failed("ls-tree", e))
}

/// The files directly inside directory `dir` (a path without trailing slash, e.g.
/// `.ouro/pipelines`) at `commit` in the repository at `repo_dir`, sorted by path, with their
/// bytes: what `git ls-tree COMMIT -- DIR/` lists as blobs (files, executables, and symbolic
/// links, whose bytes are the link's target) and `git cat-file blob` gives, read with gix: no
/// process per read. `keep` chooses by path, and only the first `max` chosen are read. Empty when
/// the directory does not exist; an error when the commit does not.
pub fn files_in_dir(
    repo_dir: &Path,
    commit: &str,
    dir: &str,
    keep: impl Fn(&str) -> bool,
    max: usize,
) -> Result<Vec<(String, Vec<u8>)>, GitError> {
    let repo = gix::open(repo_dir).map_err(|e| read_failed("open", e))?;
    let Some((mode, id)) = entry_at(&repo, commit, dir)? else {
        return Ok(Vec::new());
    };
    if !mode.is_tree() {
        return Ok(Vec::new());
    }
    let sub = repo.find_tree(id).map_err(|e| read_failed("ls-tree", e))?;
    let decoded = sub.decode().map_err(|e| read_failed("ls-tree", e))?;
    let mut found: Vec<(String, gix::ObjectId)> = decoded
        .entries
        .iter()
        .filter(|e| e.mode.is_blob_or_symlink())
        .filter_map(|e| {
            let name = std::str::from_utf8(e.filename).ok()?;
            let path = format!("{dir}/{name}");
            keep(&path).then(|| (path, e.oid.to_owned()))
        })
        .collect();
    found.sort();
    found.truncate(max);
    found
        .into_iter()
        .map(|(path, oid)| Ok((path, bytes_of(&repo, oid)?)))
        .collect()
}

/// The bytes of the file `path` at `commit` (`None`: no such file, or not a file), read with
/// gix. An error when the commit does not exist.
pub fn file_at(repo_dir: &Path, commit: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
    let repo = gix::open(repo_dir).map_err(|e| read_failed("open", e))?;
    match entry_at(&repo, commit, path)? {
        Some((mode, id)) if mode.is_blob_or_symlink() => Ok(Some(bytes_of(&repo, id)?)),
        _ => Ok(None),
    }
}

/// The mode and id of `path` in `commit`'s tree (`None`: nothing there).
fn entry_at(
    repo: &gix::Repository,
    commit: &str,
    path: &str,
) -> Result<Option<(gix::object::tree::EntryMode, gix::ObjectId)>, GitError> {
    Ok(commit_tree(repo, commit)?
        .lookup_entry_by_path(path)
        .map_err(|e| read_failed("ls-tree", e))?
        .map(|e| (e.mode(), e.object_id())))
}

fn bytes_of(repo: &gix::Repository, id: gix::ObjectId) -> Result<Vec<u8>, GitError> {
    Ok(repo
        .find_object(id)
        .map_err(|e| read_failed("cat-file", e))?
        .detach()
        .data)
}

/// The commit `refs/heads/BRANCH` points at, peeled (`None`: no such branch, or it does not
/// point at a commit), read with gix.
pub fn branch_commit(repo_dir: &Path, branch: &str) -> Option<String> {
    let repo = gix::open(repo_dir).ok()?;
    let mut r = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
    let id = r.peel_to_id().ok()?;
    let commit = id.object().ok()?.peel_to_commit().ok()?;
    Some(commit.id.to_string())
}

/// The commits reachable from `tip` and from none of `known`, oldest first, read with gix
/// (what [`new_commits`] asks `git rev-list` for, without a process). `known` may hold tags
/// (peeled) and ids of other objects or of missing ones (ignored, as rev-list does for
/// objects that are not commits).
pub fn new_commits_gix(
    repo: &gix::Repository,
    tip: &str,
    known: &[String],
) -> Result<Vec<String>, GitError> {
    let fail = |m: String| GitError {
        what: "rev-walk".into(),
        message: m,
    };
    let tip = gix::ObjectId::from_hex(tip.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let mut hidden = Vec::with_capacity(known.len());
    for k in known {
        let Ok(id) = gix::ObjectId::from_hex(k.as_bytes()) else {
            continue;
        };
        if let Ok(obj) = repo.find_object(id)
            && let Ok(c) = obj.peel_to_commit()
        {
            hidden.push(c.id);
        }
    }
    let walk = repo
        .rev_walk([tip])
        .with_hidden(hidden)
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            gix::traverse::commit::simple::CommitTimeOrder::NewestFirst,
        ))
        .all()
        .map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    for info in walk {
        out.push(info.map_err(|e| fail(e.to_string()))?.id.to_string());
    }
    out.reverse();
    Ok(out)
}

/// The commits reachable from `tip` and from none of `known`, oldest first.
pub async fn new_commits(dir: &Path, tip: &str, known: &[String]) -> Result<Vec<String>, GitError> {
    use tokio::io::AsyncWriteExt;
    let mut c = command(&["-C", &path_str(dir), "rev-list", "--reverse", "--stdin"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let err = |e: std::io::Error| GitError {
        what: "rev-list".into(),
        message: e.to_string(),
    };
    let mut child = c.spawn().map_err(err)?;
    let mut input = format!("{tip}\n");
    for k in known {
        input.push('^');
        input.push_str(k);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let out = child.wait_with_output().await.map_err(err)?;
    let _ = writer.await;
    if !out.status.success() {
        return Err(GitError {
            what: "rev-list".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}

/// Fetches branches and tags from `url` into a mirror, pruning what the source deleted
/// (bounded by [`fetch_timeout`]; the password of the URL is masked in errors).
pub async fn fetch_mirror(dir: &Path, url: &str) -> Result<(), GitError> {
    run_for(
        &[
            "-C",
            &path_str(dir),
            "fetch",
            "--prune",
            "--quiet",
            "--no-write-fetch-head",
            "--",
            url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        fetch_timeout(),
    )
    .await
    .map(|_| ())
    .map_err(|e| GitError {
        message: mask_in(&e.message, url),
        ..e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// git in `dir` with an identity (reflogs and tags need one).
    async fn g(dir: &str, args: &[&str]) -> String {
        let mut all = vec!["-C", dir, "-c", "user.name=A", "-c", "user.email=a@e"];
        all.extend_from_slice(args);
        run(&all).await.unwrap().trim().to_string()
    }

    #[tokio::test]
    async fn files_read_in_process_match_ls_tree_and_cat_file() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("w");
        let d = tmp.path().join("r.git");
        init_bare(&d, "main").await.unwrap();
        let w = path_str(&work);
        run(&["init", "-q", "-b", "main", &w]).await.unwrap();
        let pipes = work.join(".ouro/pipelines");
        std::fs::create_dir_all(pipes.join("sub")).unwrap();
        std::fs::write(pipes.join("b.yml"), "name: b\n").unwrap();
        std::fs::write(pipes.join("a.yml"), "name: a\n").unwrap();
        std::fs::write(pipes.join("notes.txt"), "not a pipeline\n").unwrap();
        std::fs::write(pipes.join("sub/c.yml"), "name: c\n").unwrap();
        std::fs::write(pipes.join("run.yml"), "name: run\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(pipes.join("run.yml"), mode).unwrap();
        }
        std::os::unix::fs::symlink("a.yml", pipes.join("link.yml")).unwrap();
        std::fs::write(work.join(".ouro/environments.yml"), "environments: {}\n").unwrap();
        g(&w, &["add", "-A"]).await;
        g(&w, &["commit", "-qm", "files"]).await;
        g(&w, &["push", "-q", &path_str(&d), "main"]).await;
        let sha = g(&path_str(&d), &["rev-parse", "main"]).await;

        let got = files_in_dir(&d, &sha, ".ouro/pipelines", |p| p.ends_with(".yml"), 50).unwrap();
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        // What ls-tree lists as blobs directly in the directory, .yml only, in path order.
        let listed = g(
            &path_str(&d),
            &["ls-tree", "--name-only", &sha, "--", ".ouro/pipelines/"],
        )
        .await;
        let mut want: Vec<&str> = listed.lines().filter(|p| p.ends_with(".yml")).collect();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(
            names,
            [
                ".ouro/pipelines/a.yml",
                ".ouro/pipelines/b.yml",
                ".ouro/pipelines/link.yml",
                ".ouro/pipelines/run.yml"
            ]
        );
        for (path, bytes) in &got {
            let spec = format!("{sha}:{path}");
            let shown = g(&path_str(&d), &["cat-file", "-p", &spec]).await;
            assert_eq!(String::from_utf8_lossy(bytes).trim(), shown, "{path}");
        }
        assert_eq!(
            files_in_dir(&d, &sha, ".ouro/pipelines", |p| p.ends_with(".yml"), 2)
                .unwrap()
                .len(),
            2,
            "at most max"
        );
        assert!(
            files_in_dir(&d, &sha, ".ouro/none", |_| true, 50)
                .unwrap()
                .is_empty()
        );
        let missing = "0123456789012345678901234567890123456789";
        assert!(files_in_dir(&d, missing, ".ouro/pipelines", |_| true, 50).is_err());

        assert_eq!(
            file_at(&d, &sha, ".ouro/environments.yml")
                .unwrap()
                .as_deref(),
            Some(&b"environments: {}\n"[..])
        );
        assert_eq!(file_at(&d, &sha, ".ouro/services.yml").unwrap(), None);
        assert_eq!(
            file_at(&d, &sha, ".ouro/pipelines").unwrap(),
            None,
            "a directory"
        );
        assert_eq!(
            file_at(&d, missing, ".ouro/environments.yml")
                .unwrap_err()
                .what,
            "rev-parse"
        );

        assert_eq!(branch_commit(&d, "main").as_deref(), Some(sha.as_str()));
        assert_eq!(branch_commit(&d, "nope"), None);
    }

    #[tokio::test]
    async fn refs_match_for_each_ref() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("r.git");
        init_bare(&d, "main").await.unwrap();
        assert!(
            refs(&d).await.unwrap().is_empty(),
            "an empty repository has no refs"
        );
        let p = path_str(&d);
        let tree = g(&p, &["mktree"]).await;
        let c = g(&p, &["commit-tree", "-m", "x", &tree]).await;
        for name in ["refs/heads/main", "refs/heads/a/b", "refs/tags/v1"] {
            g(&p, &["update-ref", name, &c]).await;
        }
        g(&p, &["tag", "-a", "-m", "note", "v2", &c]).await;
        g(&p, &["pack-refs", "--all"]).await;
        g(&p, &["update-ref", "refs/heads/loose", &c]).await;
        g(&p, &["symbolic-ref", "refs/heads/alias", "refs/heads/main"]).await;
        let listed = g(
            &p,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname) %(symref)",
            ],
        )
        .await;
        let expected: BTreeMap<String, String> = listed
            .lines()
            .map(|l| l.splitn(3, ' ').collect::<Vec<_>>())
            .filter(|f| f.get(2).is_none_or(|sym| sym.is_empty()))
            .map(|f| (f[1].to_string(), f[0].to_string()))
            .collect();
        let got = refs(&d).await.unwrap();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_ne!(got["refs/tags/v2"], c, "an annotated tag is its tag object");
    }

    #[tokio::test]
    async fn the_gix_walk_lists_what_rev_list_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("r.git");
        init_bare(&d, "main").await.unwrap();
        let p = path_str(&d);
        let tree = g(&p, &["mktree"]).await;
        // Distinct dates, so the order does not depend on how ties are broken.
        let at = |n: u32| format!("GIT_COMMITTER_DATE=17000000{n:02} +0000");
        let commit = async |n: u32, parents: &[&str]| {
            let mut args = vec!["-c".to_string(), "user.name=A".into()];
            args.push("-c".into());
            args.push("user.email=a@e".into());
            args.push("commit-tree".into());
            args.push("-m".into());
            args.push(format!("c{n}"));
            for p in parents {
                args.push("-p".into());
                args.push(p.to_string());
            }
            args.push(tree.clone());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut c = command(&[&["-C", &p], refs.as_slice()].concat());
            let (k, v) = at(n)
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap();
            c.env(k, v);
            let out = c.output().await.unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let c1 = commit(1, &[]).await;
        let c2 = commit(2, &[&c1]).await;
        let c3 = commit(3, &[&c1]).await;
        let c4 = commit(4, &[&c2, &c3]).await;
        let c5 = commit(5, &[&c4]).await;
        g(&p, &["update-ref", "refs/heads/main", &c2]).await;
        g(&p, &["tag", "-a", "-m", "t", "v1", &c1]).await;
        let tag = g(&p, &["rev-parse", "refs/tags/v1"]).await;
        let repo = gix::open(&d).unwrap();
        for known in [
            vec![],
            vec![c2.clone()],
            vec![tag.clone()],
            vec![tag.clone(), tree.clone()],
            vec![c3.clone(), c2.clone()],
            vec![c5.clone()],
        ] {
            let by_git = new_commits(&d, &c5, &known).await.unwrap();
            let by_gix = new_commits_gix(&repo, &c5, &known).unwrap();
            assert_eq!(by_gix, by_git, "known {known:?}");
        }
        assert_eq!(
            new_commits_gix(&repo, &c5, std::slice::from_ref(&c2))
                .unwrap()
                .len(),
            3
        );
        // A missing object among the known ones is ignored (rev-list would give up).
        assert_eq!(
            new_commits_gix(&repo, &c5, &[c2.clone(), ZERO_ID.to_string()]).unwrap(),
            new_commits_gix(&repo, &c5, std::slice::from_ref(&c2)).unwrap()
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("https://me:s3cret@example.com/r.git"),
            "https://me:***@example.com/r.git"
        );
        assert_eq!(
            mask_url("https://me@example.com/r.git"),
            "https://me@example.com/r.git"
        );
        assert_eq!(
            mask_url("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(mask_url("file:///srv/r.git"), "file:///srv/r.git");
        assert_eq!(url_password("https://me:s3cret@h/r"), Some("s3cret"));
        assert_eq!(url_password("https://h/me:x@y"), None);
        assert_eq!(
            mask_in(
                "fatal: cannot reach https://me:s3cret@h/r",
                "https://me:s3cret@h/r"
            ),
            "fatal: cannot reach https://me:***@h/r"
        );
    }
}
