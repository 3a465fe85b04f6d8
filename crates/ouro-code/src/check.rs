//! The pre-receive checks of a push (see [`crate::hook`] for how a push reaches them): ref names,
//! branch protection, file size limit and secret scanning, run with git against the quarantined
//! objects. The result is a list of [`Violation`]s; any violation refuses the whole push (git's
//! pre-receive semantics: no ref moves).

use std::path::Path;
use std::process::Stdio;

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent, Role};
use ouro_store::{Store, StoreError};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::git::{self, GitError, ZERO_ID};
use crate::hook::{HookRequest, HookUpdate};
use crate::push_rules::PushRules;
use crate::repos::Repo;
use crate::secrets::{self, AllowList};

/// At most this many secret hits are listed in a refusal (the count says how many more).
pub const MAX_LISTED_HITS: usize = 20;

/// Why a push is refused, for one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub refname: String,
    /// A stable rule id: `ref.invalid`, `ref.namespace`, `protected.push`,
    /// `protected.force_push`, `protected.deletion`, `protected_tag.create`,
    /// `protected_tag.move`, `protected_tag.delete`, `limit.file_size`, `secret.<rule id>`.
    pub rule: String,
    /// What the pusher reads (without the `ouro: ` prefix).
    pub message: String,
}

/// Who pushes and what the server allows.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub role: Option<Role>,
    pub rules: &'a PushRules,
    /// The largest blob a push may add, in bytes.
    pub max_file_bytes: u64,
    /// The repository had no branch before this push: its first push may create a protected
    /// branch (GitLab's "fully protected after the initial push"), so a developer can push the
    /// first commit of a new repository.
    pub initial_push: bool,
    /// A private directory of this push where the checks may write (the hook channel's): gix
    /// sees the quarantined objects through an alternates file made there. `None`: ancestry is
    /// asked of git.
    pub scratch: Option<&'a Path>,
}

fn cmd(dir: &Path, env: &[(&'static str, String)], args: &[&str]) -> tokio::process::Command {
    let mut full = vec!["-C".to_string(), dir.to_string_lossy().into_owned()];
    full.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let mut c = git::command(&refs);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

async fn output(
    dir: &Path,
    env: &[(&'static str, String)],
    args: &[&str],
    input: Option<String>,
) -> Result<(bool, String), GitError> {
    let what = args.first().copied().unwrap_or("").to_string();
    let err = |e: std::io::Error| GitError {
        what: what.clone(),
        message: e.to_string(),
    };
    let mut c = cmd(dir, env, args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().map_err(err)?;
    let writer = input.map(|text| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
        })
    });
    let out = child.wait_with_output().await.map_err(err)?;
    if let Some(w) = writer {
        let _ = w.await;
    }
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

async fn must(
    dir: &Path,
    env: &[(&'static str, String)],
    args: &[&str],
    input: Option<String>,
) -> Result<String, GitError> {
    let (ok, out) = output(dir, env, args, input).await?;
    if !ok {
        return Err(GitError {
            what: args.first().copied().unwrap_or("").to_string(),
            message: "failed in the push check".into(),
        });
    }
    Ok(out)
}

/// True when `name` is a valid full ref name, by `git check-ref-format`'s rules (checked in
/// process: a git process per pushed ref cost more than the rest of the check; a test compares
/// the two on a corpus of awkward names).
pub fn valid_ref(name: &str) -> bool {
    // check-ref-format without --allow-onelevel wants at least two components.
    name.contains('/')
        && !name.starts_with('-')
        && gix::validate::reference::name(name.as_bytes().into()).is_ok()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit} ({bytes} bytes)")
}

pub fn human_bytes(bytes: u64) -> String {
    human(bytes)
}

/// Runs every check; returns the violations (empty: accept).
pub async fn run(
    dir: &Path,
    req: &HookRequest,
    ctx: &Context<'_>,
) -> Result<Vec<Violation>, GitError> {
    let env = req.git_env();
    let mut out = Vec::new();
    let mut scanned: Vec<String> = Vec::new();
    // Walking what each ref brings (`rev-list --objects`) must mark the whole tree of the old
    // tip as known: the slowest part of a small push into a big repository. The quarantine holds
    // exactly the objects the push sent, so one look at their sizes settles the common case;
    // only a push that does carry a big blob is walked, to name the file and the ref.
    let big_blob = match req.object_dir.is_empty() {
        true => true,
        false => quarantine_has_blob_over(&req.object_dir, ctx.max_file_bytes).await?,
    };
    for u in &req.updates {
        let before = out.len();
        refs_and_protection(dir, &env, u, ctx, &mut out).await?;
        if out.len() > before || u.new == ZERO_ID {
            continue;
        }
        if big_blob {
            file_sizes(dir, &env, u, &scanned, ctx, &mut out).await?;
        }
        secrets_of(dir, &env, u, &scanned, ctx, &mut out).await?;
        scanned.push(u.new.clone());
    }
    Ok(out)
}

async fn refs_and_protection(
    dir: &Path,
    env: &[(&'static str, String)],
    u: &HookUpdate,
    ctx: &Context<'_>,
    out: &mut Vec<Violation>,
) -> Result<(), GitError> {
    let v = |rule: &str, message: String| Violation {
        refname: u.refname.clone(),
        rule: rule.to_string(),
        message,
    };
    if !valid_ref(&u.refname) {
        out.push(v(
            "ref.invalid",
            format!(
                "{:?} is not a valid ref name (see git check-ref-format).",
                u.refname
            ),
        ));
        return Ok(());
    }
    if let Some(tag) = u.refname.strip_prefix("refs/tags/") {
        if let Some(pattern) = ctx.rules.tag_protection(tag) {
            tag_protection(u, tag, pattern, ctx, out);
        }
        return Ok(());
    }
    let Some(branch) = u.refname.strip_prefix("refs/heads/") else {
        out.push(v(
            "ref.namespace",
            format!(
                "{} is outside refs/heads/ and refs/tags/; only branches and tags can be pushed.",
                u.refname
            ),
        ));
        return Ok(());
    };
    let Some(rule) = ctx.rules.protection(branch) else {
        return Ok(());
    };
    let you = ctx.role.map(|r| r.as_str()).unwrap_or("nobody");
    let protected = format!("{} is protected (rule {:?})", u.refname, rule.pattern);
    if u.new == ZERO_ID {
        if !rule.allow_deletion {
            out.push(v(
                "protected.deletion",
                format!(
                    "{protected}: it cannot be deleted. A maintainer can change this in the repository's settings."
                ),
            ));
        }
        return Ok(());
    }
    let first_branch = ctx.initial_push && u.old == ZERO_ID;
    if !first_branch && !rule.push_role.allows(ctx.role) {
        let who = match rule.push_role {
            crate::push_rules::PushRole::Nobody => "nobody may push to it directly".to_string(),
            r => format!("direct pushes need the {} role; you are {you}", r.as_str()),
        };
        out.push(v(
            "protected.push",
            format!("{protected}: {who}. Push to a new branch and open a change request."),
        ));
        return Ok(());
    }
    let forced = u.old != ZERO_ID
        && !rule.allow_force_push
        && !is_ancestor(dir, env, &u.old, &u.new, ctx.scratch).await?;
    if forced {
        out.push(v(
            "protected.force_push",
            format!(
                "{protected}: force pushes are not allowed ({} is not an ancestor of {}). Pull and merge or rebase onto it, or push to a new branch and open a change request.",
                short(&u.old),
                short(&u.new)
            ),
        ));
    }
    Ok(())
}

/// A protected tag: created by maintainers (and owners) only; never moved or deleted by a push.
fn tag_protection(
    u: &HookUpdate,
    tag: &str,
    pattern: &str,
    ctx: &Context<'_>,
    out: &mut Vec<Violation>,
) {
    let v = |rule: &str, message: String| Violation {
        refname: u.refname.clone(),
        rule: rule.to_string(),
        message,
    };
    let protected = format!("tag {tag} is protected (pattern {pattern:?})");
    if u.old == ZERO_ID {
        if ctx.role < Some(Role::Maintainer) {
            let you = ctx.role.map(|r| r.as_str()).unwrap_or("nobody");
            out.push(v(
                "protected_tag.create",
                format!(
                    "{protected}: creating it needs the maintainer role; you are {you}. Ask a maintainer to push the tag, or use a name outside the protected patterns."
                ),
            ));
        }
    } else if u.new == ZERO_ID {
        out.push(v(
            "protected_tag.delete",
            format!(
                "{protected}: it cannot be deleted by anyone, as released tags must not disappear. A maintainer can remove the pattern in the repository's push rules first if it really must go."
            ),
        ));
    } else {
        out.push(v(
            "protected_tag.move",
            format!(
                "{protected}: it already points to {} and cannot be moved to {} by anyone. Create a new tag (e.g. the next version) instead.",
                short(&u.old),
                short(&u.new)
            ),
        ));
    }
}

/// Whether `old` is an ancestor of `new` (`git merge-base --is-ancestor`), read with gix from
/// the repository and the quarantine when [`Context::scratch`] allows, else asked of git. A
/// missing object is an error, not an answer.
async fn is_ancestor(
    dir: &Path,
    env: &[(&'static str, String)],
    old: &str,
    new: &str,
    scratch: Option<&Path>,
) -> Result<bool, GitError> {
    if let Some(scratch) = scratch {
        let (d, s, o, n) = (
            dir.to_path_buf(),
            scratch.to_path_buf(),
            old.to_string(),
            new.to_string(),
        );
        let env = env.to_vec();
        return tokio::task::spawn_blocking(move || {
            let repo = open_with_quarantine(&d, &env, &s)?;
            is_ancestor_gix(&repo, &o, &n)
        })
        .await
        .map_err(|e| GitError {
            what: "merge-base".into(),
            message: e.to_string(),
        })?;
    }
    let status = cmd(dir, env, &["merge-base", "--is-ancestor", old, new])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|e| GitError {
            what: "merge-base".into(),
            message: e.to_string(),
        })?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(GitError {
            what: "merge-base".into(),
            message: format!("cannot compare {old} and {new}"),
        }),
    }
}

fn gix_failed(what: &str, e: impl std::fmt::Display) -> GitError {
    GitError {
        what: what.into(),
        message: e.to_string(),
    }
}

/// The repository as its pre-receive hook sees it: its own objects and the quarantined ones
/// (git passes them as `GIT_OBJECT_DIRECTORY` and `GIT_ALTERNATE_OBJECT_DIRECTORIES`). gix
/// reads alternates only from a file, so the list is written to `scratch/objects/info/alternates`
/// (never into the quarantine: git moves its files into the repository on success).
pub fn open_with_quarantine(
    dir: &Path,
    env: &[(&'static str, String)],
    scratch: &Path,
) -> Result<gix::Repository, GitError> {
    let mut repo = gix::open(dir).map_err(|e| gix_failed("open", e))?;
    let var = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    let Some(objects) = var("GIT_OBJECT_DIRECTORY") else {
        return Ok(repo);
    };
    let mut list = vec![objects.to_string()];
    let alternates = var("GIT_ALTERNATE_OBJECT_DIRECTORIES").unwrap_or("");
    if alternates.contains('"') {
        return Err(gix_failed("open", "a quoted alternate object directory"));
    }
    list.extend(
        alternates
            .split(':')
            .filter(|a| !a.is_empty())
            .map(String::from),
    );
    let mut text = String::new();
    for p in list {
        // Relative paths are the hook's, and the hook runs in the repository.
        let p = if Path::new(&p).is_absolute() {
            p
        } else {
            dir.join(p).to_string_lossy().into_owned()
        };
        text.push_str(&p);
        text.push('\n');
    }
    let view = scratch.join("objects");
    std::fs::create_dir_all(view.join("info")).map_err(|e| gix_failed("open", e))?;
    std::fs::write(view.join("info/alternates"), text).map_err(|e| gix_failed("open", e))?;
    let odb = gix::odb::at(view, repo.object_hash()).map_err(|e| gix_failed("open", e))?;
    repo.objects = gix::OdbHandle::from(odb);
    Ok(repo)
}

fn is_ancestor_gix(repo: &gix::Repository, old: &str, new: &str) -> Result<bool, GitError> {
    let commit = |id: &str| -> Result<gix::ObjectId, GitError> {
        let oid =
            gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| gix_failed("merge-base", e))?;
        let obj = repo
            .find_object(oid)
            .map_err(|e| gix_failed("merge-base", e))?;
        Ok(obj
            .peel_to_commit()
            .map_err(|e| gix_failed("merge-base", e))?
            .id)
    };
    let (o, n) = (commit(old)?, commit(new)?);
    if o == n {
        return Ok(true);
    }
    match repo.merge_base(o, n) {
        Ok(base) => Ok(base.is_some_and(|b| b.detach() == o)),
        Err(e) => Err(gix_failed("merge-base", e)),
    }
}

/// Arguments selecting what `u` brings that the repository does not have: `new --not --all
/// <earlier tips of this push>`.
fn new_range<'a>(u: &'a HookUpdate, scanned: &'a [String]) -> Vec<&'a str> {
    let mut args = vec![u.new.as_str(), "--not", "--all"];
    args.extend(scanned.iter().map(String::as_str));
    args
}

/// Whether the quarantine (the objects this push sent, nothing else: no alternates) holds a
/// blob larger than `max`. Read with gix (the object headers only), no process.
async fn quarantine_has_blob_over(object_dir: &str, max: u64) -> Result<bool, GitError> {
    let dir = std::path::PathBuf::from(object_dir);
    tokio::task::spawn_blocking(move || {
        use gix::odb::HeaderExt;
        let odb =
            gix::odb::at(dir, gix::hash::Kind::Sha1).map_err(|e| gix_failed("cat-file", e))?;
        for id in odb.iter().map_err(|e| gix_failed("cat-file", e))? {
            let id = id.map_err(|e| gix_failed("cat-file", e))?;
            let h = odb.header(id).map_err(|e| gix_failed("cat-file", e))?;
            if h.kind() == gix::object::Kind::Blob && h.size() > max {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .map_err(|e| gix_failed("cat-file", e))?
}

async fn file_sizes(
    dir: &Path,
    env: &[(&'static str, String)],
    u: &HookUpdate,
    scanned: &[String],
    ctx: &Context<'_>,
    out: &mut Vec<Violation>,
) -> Result<(), GitError> {
    let mut args = vec!["rev-list", "--objects"];
    args.extend(new_range(u, scanned));
    let objects = must(dir, env, &args, None).await?;
    if objects.is_empty() {
        return Ok(());
    }
    let sizes = must(
        dir,
        env,
        &[
            "cat-file",
            "--batch-check=%(objecttype) %(objectsize) %(objectname) %(rest)",
        ],
        Some(objects),
    )
    .await?;
    for line in sizes.lines() {
        let mut p = line.splitn(4, ' ');
        let (kind, size, id, path) = (
            p.next().unwrap_or(""),
            p.next().unwrap_or("0"),
            p.next().unwrap_or(""),
            p.next().unwrap_or(""),
        );
        let size: u64 = size.parse().unwrap_or(0);
        if kind == "blob" && size > ctx.max_file_bytes {
            out.push(Violation {
                refname: u.refname.clone(),
                rule: "limit.file_size".into(),
                message: format!(
                    "{}: file {} (blob {}) is {}; the limit is {} per file. Remove it from the commits (git rm --cached, then amend or rebase) and push again.",
                    u.refname,
                    if path.is_empty() { "?" } else { path },
                    short(id),
                    human(size),
                    human(ctx.max_file_bytes)
                ),
            });
        }
    }
    Ok(())
}

async fn secrets_of(
    dir: &Path,
    env: &[(&'static str, String)],
    u: &HookUpdate,
    scanned: &[String],
    ctx: &Context<'_>,
    out: &mut Vec<Violation>,
) -> Result<(), GitError> {
    if secrets::RULES
        .iter()
        .all(|r| !ctx.rules.secret_rule_enabled(r.id))
    {
        return Ok(());
    }
    if let Some(scratch) = ctx.scratch {
        let (d, sc, env2, u2, sc2, rules) = (
            dir.to_path_buf(),
            scratch.to_path_buf(),
            env.to_vec(),
            u.clone(),
            scanned.to_vec(),
            ctx.rules.clone(),
        );
        let scan = tokio::task::spawn_blocking(move || {
            let repo = open_with_quarantine(&d, &env2, &sc)?;
            scan_with_gix(&repo, &u2, &sc2, &rules)
        })
        .await
        .map_err(|e| gix_failed("log", e))?;
        match scan {
            Ok(found) => {
                out.extend(found);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "scanning the push with gix failed; asking git");
            }
        }
    }
    // The allow-list as the pushed tip has it, read at the first finding.
    let mut allow: Option<AllowList> = None;

    let mut args = vec![
        "-c",
        "core.quotePath=false",
        "log",
        "-p",
        "-U0",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        "--format=%x01%H",
    ];
    args.extend(new_range(u, scanned));
    let mut c = cmd(dir, env, &args);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let err = |e: std::io::Error| GitError {
        what: "log".into(),
        message: e.to_string(),
    };
    let mut child = c.spawn().map_err(err)?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout"));
    let enabled = |id: &str| ctx.rules.secret_rule_enabled(id);
    let (mut commit, mut path, mut line_no) = (String::new(), String::new(), 0usize);
    let mut hits = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if lines.read_until(b'\n', &mut buf).await.map_err(err)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        let l = text.trim_end_matches(['\n', '\r']);
        if let Some(id) = l.strip_prefix('\u{1}') {
            commit = id.to_string();
            path.clear();
        } else if let Some(p) = l.strip_prefix("+++ ") {
            path = p.strip_prefix("b/").unwrap_or(p).to_string();
        } else if l.starts_with("diff --git ") {
            path.clear();
        } else if let Some(h) = l.strip_prefix("@@ ") {
            // @@ -a,b +c,d @@: added lines start at c.
            line_no = h
                .split(' ')
                .find_map(|p| p.strip_prefix('+'))
                .and_then(|p| p.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
        } else if let Some(added) = l.strip_prefix('+') {
            if path.is_empty() || path == "/dev/null" {
                continue;
            }
            for h in secrets::scan_line(added, &enabled) {
                let secret = h.secret(added);
                let fp = secrets::fingerprint(secret);
                if allow.is_none() {
                    let spec = format!("{}:{}", u.new, secrets::ALLOW_FILE);
                    let (found, text) = output(dir, env, &["cat-file", "-p", &spec], None).await?;
                    allow = Some(if found {
                        AllowList::parse(&text).0
                    } else {
                        AllowList::default()
                    });
                }
                if allow.as_ref().is_some_and(|a| a.allows(&path, h.rule, &fp)) {
                    continue;
                }
                hits += 1;
                if hits <= MAX_LISTED_HITS {
                    out.push(secret_violation(
                        u, &commit, &path, line_no, h.rule, secret, &fp,
                    ));
                }
            }
            line_no += 1;
        }
    }
    let status = child.wait().await.map_err(err)?;
    if !status.success() {
        return Err(GitError {
            what: "log".into(),
            message: "failed in the push check".into(),
        });
    }
    if hits > MAX_LISTED_HITS {
        out.push(Violation {
            refname: u.refname.clone(),
            rule: "secret.more".into(),
            message: format!("... and {} more possible secrets", hits - MAX_LISTED_HITS),
        });
    }
    Ok(())
}

fn secret_violation(
    u: &HookUpdate,
    commit: &str,
    path: &str,
    line_no: usize,
    rule: &str,
    secret: &str,
    fp: &str,
) -> Violation {
    Violation {
        refname: u.refname.clone(),
        rule: format!("secret.{rule}"),
        message: format!(
            "possible secret in {path} line {line_no} (commit {}): rule {rule}, {}, fingerprint {fp}",
            short(commit),
            secrets::mask(secret),
        ),
    }
}

/// git's test for a binary file in a diff: a NUL in the first 8000 bytes.
fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(8000)].contains(&0)
}

/// One side of a changed path: the blob and whether it is a symbolic link.
type Side = Option<(gix::ObjectId, bool)>;

/// A tree entry: (is a tree, is a blob or link, is a link, id).
type Entry = (bool, bool, bool, gix::ObjectId);

/// The tree entries keyed the way git orders them (a directory's name with a `/`).
fn tree_entries(
    repo: &gix::Repository,
    tree: Option<gix::ObjectId>,
) -> Result<Vec<(Vec<u8>, Entry)>, GitError> {
    let Some(id) = tree else {
        return Ok(Vec::new());
    };
    let tree = repo.find_tree(id).map_err(|e| gix_failed("log", e))?;
    let decoded = tree.decode().map_err(|e| gix_failed("log", e))?;
    let mut out: Vec<_> = decoded
        .entries
        .iter()
        .map(|e| {
            let mut key = e.filename.to_vec();
            if e.mode.is_tree() {
                key.push(b'/');
            }
            let file = e.mode.is_blob() || e.mode.is_link();
            (
                key,
                (e.mode.is_tree(), file, e.mode.is_link(), e.oid.to_owned()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The files a commit adds or changes relative to its first parent, in git's diff order, with
/// both sides (`git log -p --no-renames` without merges).
fn changed_files(
    repo: &gix::Repository,
    a: Option<gix::ObjectId>,
    b: Option<gix::ObjectId>,
    prefix: &[u8],
    out: &mut Vec<(Vec<u8>, Side, Side)>,
) -> Result<(), GitError> {
    if a == b {
        return Ok(());
    }
    let (ea, eb) = (tree_entries(repo, a)?, tree_entries(repo, b)?);
    let (mut i, mut j) = (0, 0);
    while i < ea.len() || j < eb.len() {
        let order = match (ea.get(i), eb.get(j)) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (x, y) = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                (ea.get(i - 1), None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (None, eb.get(j - 1))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (ea.get(i - 1), eb.get(j - 1))
            }
        };
        let Some((key, new)) = y else {
            continue;
        };
        if x.is_some_and(|x| x.1 == *new) {
            continue;
        }
        let mut path = prefix.to_vec();
        if new.0 {
            path.extend_from_slice(key);
            let old_tree = x.filter(|x| x.1.0).map(|x| x.1.3);
            changed_files(repo, old_tree, Some(new.3), &path, out)?;
        } else if new.1 {
            path.extend_from_slice(key);
            // A blob replaced by a link (or back) is a deletion and an addition in git's diff.
            let old = x
                .filter(|x| x.1.1 && x.1.2 == new.2)
                .map(|x| (x.1.3, x.1.2));
            out.push((path, old, Some((new.3, new.2))));
        }
    }
    Ok(())
}

/// The 1-based numbers of the lines `new` adds to `old` (the `+` lines of a diff).
fn added_lines(old: Option<&[u8]>, new: &[u8]) -> Vec<usize> {
    let lines = |d: &[u8]| -> Vec<Vec<u8>> {
        d.split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    let new_lines = lines(new);
    let Some(old) = old else {
        return (1..=new_lines.len()).collect();
    };
    let old_lines = lines(old);
    // Myers like git; a file whose diff takes too long gets a coarser (larger) set of lines.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let ops = similar::capture_diff_slices_deadline(
        similar::Algorithm::Myers,
        &old_lines,
        &new_lines,
        Some(deadline),
    );
    let mut out = Vec::new();
    for op in ops {
        let (tag, _, range) = op.as_tag_tuple();
        if matches!(tag, similar::DiffTag::Insert | similar::DiffTag::Replace) {
            out.extend(range.map(|n| n + 1));
        }
    }
    out
}

/// The secret scan of one update, in process: the commits `u.new` brings that no ref (nor an
/// earlier ref of this push) has, each diffed against its first parent (merges skipped, as
/// `git log -p` shows them without a diff), the added lines of text files scanned. Finds what
/// the `git log -p` scan finds; used when the quarantine can be read with gix.
fn scan_with_gix(
    repo: &gix::Repository,
    u: &HookUpdate,
    scanned: &[String],
    rules: &PushRules,
) -> Result<Vec<Violation>, GitError> {
    let mut known: Vec<String> = crate::advertise::advertised_refs(repo)
        .ok_or_else(|| gix_failed("log", "cannot read the refs"))?
        .into_values()
        .map(|id| id.to_string())
        .collect();
    known.extend(scanned.iter().cloned());
    let mut commits = git::new_commits_gix(repo, &u.new, &known)?;
    // git log's order: newest first.
    commits.reverse();
    let enabled = |id: &str| rules.secret_rule_enabled(id);
    let mut allow: Option<AllowList> = None;
    let mut out = Vec::new();
    let mut hits = 0usize;
    let blob = |id: gix::ObjectId| -> Result<Vec<u8>, GitError> {
        Ok(repo
            .find_object(id)
            .map_err(|e| gix_failed("log", e))?
            .detach()
            .data)
    };
    for id in &commits {
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| gix_failed("log", e))?;
        let c = repo.find_commit(oid).map_err(|e| gix_failed("log", e))?;
        let parents: Vec<gix::ObjectId> = c.parent_ids().map(|p| p.detach()).collect();
        if parents.len() > 1 {
            continue;
        }
        let tree = c.tree_id().map_err(|e| gix_failed("log", e))?.detach();
        let parent_tree = match parents.first() {
            Some(p) => Some(
                repo.find_commit(*p)
                    .map_err(|e| gix_failed("log", e))?
                    .tree_id()
                    .map_err(|e| gix_failed("log", e))?
                    .detach(),
            ),
            None => None,
        };
        let mut files = Vec::new();
        changed_files(repo, parent_tree, Some(tree), b"", &mut files)?;
        for (path, old, new) in files {
            let Some((new_id, _)) = new else { continue };
            let new_data = blob(new_id)?;
            let old_data = match old {
                Some((old_id, _)) => Some(blob(old_id)?),
                None => None,
            };
            if is_binary(&new_data) || old_data.as_deref().is_some_and(is_binary) {
                continue;
            }
            let path = String::from_utf8_lossy(&path).into_owned();
            let lines: Vec<&[u8]> = new_data.split_inclusive(|b| *b == b'\n').collect();
            for n in added_lines(old_data.as_deref(), &new_data) {
                let Some(line) = lines.get(n - 1) else {
                    continue;
                };
                let text = String::from_utf8_lossy(line);
                let added = text.trim_end_matches(['\n', '\r']);
                for h in secrets::scan_line(added, &enabled) {
                    let secret = h.secret(added);
                    let fp = secrets::fingerprint(secret);
                    if allow.is_none() {
                        allow = Some(allow_list_gix(repo, &u.new));
                    }
                    if allow.as_ref().is_some_and(|a| a.allows(&path, h.rule, &fp)) {
                        continue;
                    }
                    hits += 1;
                    if hits <= MAX_LISTED_HITS {
                        out.push(secret_violation(u, id, &path, n, h.rule, secret, &fp));
                    }
                }
            }
        }
    }
    if hits > MAX_LISTED_HITS {
        out.push(Violation {
            refname: u.refname.clone(),
            rule: "secret.more".into(),
            message: format!("... and {} more possible secrets", hits - MAX_LISTED_HITS),
        });
    }
    Ok(out)
}

/// The allow-list file at the root of the pushed tip (empty when there is none).
fn allow_list_gix(repo: &gix::Repository, tip: &str) -> AllowList {
    let text = (|| {
        let oid = gix::ObjectId::from_hex(tip.as_bytes()).ok()?;
        let tree = repo.find_commit(oid).ok()?.tree().ok()?;
        let entry = tree.find_entry(secrets::ALLOW_FILE)?;
        let data = repo.find_object(entry.oid()).ok()?.detach().data;
        Some(String::from_utf8_lossy(&data).into_owned())
    })();
    text.map(|t| AllowList::parse(&t).0).unwrap_or_default()
}

/// What a push over the size limit (`receive.maxInputSize`, set from `max_push_bytes`) is told,
/// after git's own `fatal: pack exceeds maximum allowed size`: the same words, the limit, and
/// how to change it. The first line is also the message of the recorded refusal.
pub fn push_size_lines(max: u64) -> Vec<String> {
    vec![
        format!(
            "ouro: push refused: pack exceeds maximum allowed size: the limit is {} per push; no ref was changed.",
            human(max)
        ),
        "ouro: A maintainer can raise it in the repository's push rules (Settings, Limits: \"Largest push\", \
         max_push_bytes; empty means the server's push_max_bytes), or push fewer commits at a time."
            .to_string(),
    ]
}

/// The `remote:` lines for a refusal: each violation, then what to do.
pub fn refusal_lines(violations: &[Violation]) -> Vec<String> {
    let mut lines = vec!["ouro: push refused; no ref was changed.".to_string()];
    for v in violations {
        if v.rule.starts_with("secret.") {
            lines.push(format!("ouro: {}: {}", v.refname, v.message));
        } else {
            lines.push(format!("ouro: {}", v.message));
        }
    }
    if violations.iter().any(|v| v.rule.starts_with("secret.")) {
        lines.push(format!(
            "ouro: Remove secrets from the commits (rewrite them, e.g. git commit --amend or git rebase -i) and revoke them. \
             If a finding is not a secret, list it in {} in the pushed commit (fingerprint: <fp>, rule: <id> or path: <glob>).",
            secrets::ALLOW_FILE
        ));
    }
    lines
}

/// Appends one `code.push_rejected` for a refused push: the refs it would have moved, each
/// violation (ref, rule, message) and the pusher; `ref` and `rule` repeat the first violation.
pub async fn record_rejection(
    store: &Store,
    repo: &Repo,
    project_slug: &str,
    actor: &Actor,
    updates: &[HookUpdate],
    violations: &[Violation],
) -> Result<(), StoreError> {
    let first = violations.first();
    let pusher = match actor {
        Actor::User { name, .. } => name.clone(),
        other => other.label(),
    };
    let mut tx = store.begin().await?;
    tx.append(
        NewEvent::new(
            ev::CODE_PUSH_REJECTED,
            actor,
            repo.id,
            json!({
                "repo": repo.name,
                "pusher": pusher,
                "ref": first.map(|v| v.refname.clone()).unwrap_or_default(),
                "rule": first.map(|v| v.rule.clone()).unwrap_or_default(),
                "refs": updates.iter().map(|u| json!({"ref": u.refname, "old": u.old, "new": u.new})).collect::<Vec<_>>(),
                "violations": violations.iter().map(|v| json!({"ref": v.refname, "rule": v.rule, "message": v.message})).collect::<Vec<_>>(),
            }),
        )
        .in_project(repo.project_id, project_slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push_rules::{ProtectedBranch, PushRole};

    async fn git(dir: &Path, args: &[&str]) -> String {
        let mut full = vec!["-C", dir.to_str().unwrap()];
        full.extend(args);
        let mut c = git::command(&full);
        c.env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "A")
            .env("GIT_COMMITTER_EMAIL", "a@example.com");
        let out = c.output().await.unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[tokio::test]
    async fn valid_ref_agrees_with_git_check_ref_format() {
        let names = [
            "refs/heads/main",
            "refs/heads/feature/x-1",
            "refs/tags/v1.0.0",
            "main",
            "HEAD",
            "refs/heads/",
            "refs//heads/x",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[b",
            "refs/heads/a\\b",
            "refs/heads/a@{1}",
            "refs/heads/@",
            "@",
            "refs/heads/x.",
            "refs/heads/x/",
            "/refs/heads/x",
            "refs/heads/\u{7f}x",
            "refs/heads/\tx",
            "refs/heads/ünïcode",
            "refs/heads/a/.b",
            "refs/heads/a.lock/b",
            "refs/heads/-x",
            "-refs/heads/x",
            "refs/heads/a@b",
            "refs/heads/{x}",
        ];
        for name in names {
            let by_git = git::command(&["check-ref-format", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .unwrap()
                .success();
            assert_eq!(valid_ref(name), by_git, "{name:?}");
        }
    }

    async fn commit(dir: &Path, file: &str, text: &str) -> String {
        std::fs::write(dir.join(file), text).unwrap();
        git(dir, &["add", "-A"]).await;
        git(dir, &["commit", "-q", "-m", "c"]).await;
        git(dir, &["rev-parse", "HEAD"]).await
    }

    fn rules(role: PushRole) -> PushRules {
        PushRules {
            custom_protection: true,
            protected_branches: vec![ProtectedBranch {
                pattern: "main".into(),
                push_role: role,
                allow_force_push: false,
                allow_deletion: false,
            }],
            disabled_secret_rules: Vec::new(),
            protected_tags: Vec::new(),
            max_push_bytes: None,
            max_file_bytes: None,
        }
    }

    fn update(old: &str, new: &str, refname: &str) -> HookRequest {
        HookRequest {
            updates: vec![HookUpdate {
                old: old.into(),
                new: new.into(),
                refname: refname.into(),
            }],
            ..Default::default()
        }
    }

    /// The in-process scan (gix) and the `git log -p` scan find the same things, in the same
    /// order, on a history with the awkward cases: a root commit, changes in the middle and at
    /// the end of files, a last line without newline, CRLF, a binary file, a merge that brings a
    /// secret (no diff for merges in either), a file replaced by a directory, a link, an
    /// allow-listed finding and more than the listed number of hits.
    #[tokio::test]
    async fn the_gix_scan_finds_what_git_log_finds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("w");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.as_path();
        git(dir, &["init", "-q", "-b", "main"]).await;
        let base = commit(dir, "README", "hello\n").await;
        git(dir, &["checkout", "-q", "-b", "topic"]).await;
        // Scanned last (newest first): its hits go past the listed number.
        let many: String = (0..25)
            .map(|i| format!("K{i}_TOKEN=9f8e7d6c5b{i:03}\n"))
            .collect();
        commit(dir, "many.txt", &many).await;
        let lines: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.join("a.env"), format!("A_TOKEN=9f8e7d6c5b4a1\n{lines}")).unwrap();
        commit(dir, "b.txt", "B_SECRET=1a2b3c4d5e6f7\n").await;
        let changed = lines
            .replace("line 7\n", "C_TOKEN=9f8e7d6c5b4a2\n")
            .replace("line 30\n", "D_PASSWORD=9f8e7d6c5b4a3");
        commit(dir, "a.env", &changed).await;
        commit(dir, "crlf.txt", "x\r\nE_TOKEN=9f8e7d6c5b4a4\r\n").await;
        std::fs::write(dir.join("bin.dat"), b"\0\0F_TOKEN=9f8e7d6c5b4a5\n").unwrap();
        commit(dir, "bin.dat", "\0\0F_TOKEN=9f8e7d6c5b4a5\n").await;
        std::fs::remove_file(dir.join("b.txt")).unwrap();
        std::fs::create_dir_all(dir.join("b.txt")).unwrap();
        commit(dir, "b.txt/inner", "G_TOKEN=9f8e7d6c5b4a6\n").await;
        std::os::unix::fs::symlink("H_TOKEN=9f8e7d6c5b4a7", dir.join("link")).unwrap();
        git(dir, &["add", "-A"]).await;
        git(dir, &["commit", "-q", "-m", "link"]).await;
        // A side branch merged in: its secret comes with the merge's second parent.
        git(dir, &["checkout", "-q", "-b", "side", &base]).await;
        commit(dir, "side.txt", "S_TOKEN=9f8e7d6c5b4a8\n").await;
        git(dir, &["checkout", "-q", "topic"]).await;
        git(dir, &["merge", "-q", "--no-edit", "side"]).await;
        let fp = secrets::fingerprint("9f8e7d6c5b4a2");
        commit(dir, secrets::ALLOW_FILE, &format!("fingerprint: {fp}\n")).await;
        let tip = git(dir, &["rev-parse", "HEAD"]).await;
        git(dir, &["checkout", "-q", "main"]).await;
        git(dir, &["branch", "-q", "-D", "topic", "side"]).await;

        let r = rules(PushRole::Developer);
        let scratch = tmp.path().join("scratch");
        let mut found = Vec::new();
        for scratch in [None, Some(scratch.as_path())] {
            let ctx = Context {
                role: Some(Role::Developer),
                rules: &r,
                max_file_bytes: 1 << 20,
                initial_push: false,
                scratch,
            };
            let v = run(dir, &update(ZERO_ID, &tip, "refs/heads/topic"), &ctx)
                .await
                .unwrap();
            found.push(v);
        }
        let text = |v: &[Violation]| {
            v.iter()
                .map(|v| format!("{} {}", v.rule, v.message))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(text(&found[1]), text(&found[0]));
        let all = text(&found[0]);
        assert!(found[0].len() == MAX_LISTED_HITS + 1, "{all}");
        assert!(found[0].iter().any(|v| v.rule == "secret.more"), "{all}");
        for expected in [
            "a.env line 30 ",
            "a.env line 1 ",
            "crlf.txt line 2 ",
            "link line 1 ",
            "b.txt/inner line 1 ",
            "side.txt line 1 ",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
        for unexpected in ["bin.dat", "a.env line 7 "] {
            assert!(!all.contains(unexpected), "{unexpected}: {all}");
        }
    }

    /// Commits not yet referenced by any ref stand in for a quarantined push.
    #[tokio::test]
    async fn checks_find_lines_sizes_and_force_pushes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "-q", "-b", "main"]).await;
        let body: String = (1..=9).map(|i| format!("line {i}\n")).collect();
        let c1 = commit(dir, "app.env", &body).await;
        let changed = body.replace("line 6\n", "API_TOKEN=9f8e7d6c5b4a3\n");
        let c2 = commit(dir, "app.env", &changed).await;
        git(dir, &["reset", "-q", "--hard", &c1]).await;
        let c3 = commit(dir, "big.bin", &"x".repeat(5000)).await;
        git(dir, &["reset", "-q", "--hard", &c1]).await;

        let scratch = tmp.path().join("scratch");
        // Ancestry asked of git, and read with gix.
        for scratch in [None, Some(scratch.as_path())] {
            git(dir, &["update-ref", "refs/heads/main", &c1]).await;
            let r = rules(PushRole::Developer);
            let ctx = Context {
                role: Some(Role::Developer),
                rules: &r,
                max_file_bytes: 1000,
                initial_push: false,
                scratch,
            };
            // A secret in the middle of a changed file: the line number of the new version.
            let v = run(dir, &update(&c1, &c2, "refs/heads/main"), &ctx)
                .await
                .unwrap();
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].rule, "secret.generic-assignment");
            assert!(v[0].message.contains("app.env line 6"), "{}", v[0].message);
            assert!(!v[0].message.contains("9f8e7d6c5b4a3"), "{}", v[0].message);
            // A file over the limit.
            let v = run(dir, &update(&c1, &c3, "refs/heads/topic"), &ctx)
                .await
                .unwrap();
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].rule, "limit.file_size");
            assert!(v[0].message.contains("file big.bin"), "{}", v[0].message);
            // main at c2 moved to c3 (not a descendant): a force push.
            git(dir, &["update-ref", "refs/heads/main", &c2]).await;
            let v = run(dir, &update(&c2, &c3, "refs/heads/main"), &ctx)
                .await
                .unwrap();
            assert!(v.iter().any(|v| v.rule == "protected.force_push"), "{v:?}");
            // A developer where maintainers are required; deletion; a ref outside heads/tags.
            let m = rules(PushRole::Maintainer);
            let dev = Context {
                rules: &m,
                ..ctx.clone()
            };
            let v = run(dir, &update(&c2, &c1, "refs/heads/main"), &dev)
                .await
                .unwrap();
            assert_eq!(v[0].rule, "protected.push");
            let v = run(dir, &update(&c2, ZERO_ID, "refs/heads/main"), &dev)
                .await
                .unwrap();
            assert_eq!(v[0].rule, "protected.deletion");
            let v = run(dir, &update(ZERO_ID, &c1, "refs/notes/x"), &dev)
                .await
                .unwrap();
            assert_eq!(v[0].rule, "ref.namespace");
            // Missing objects are an error (the server refuses the push), not a verdict.
            let missing = "1234567890123456789012345678901234567890";
            assert!(
                run(dir, &update(&c2, missing, "refs/heads/main"), &ctx)
                    .await
                    .is_err()
            );
            assert!(
                run(dir, &update(ZERO_ID, missing, "refs/heads/topic"), &ctx)
                    .await
                    .is_err()
            );
            // The first push into a repository without branches may create main.
            let first = Context {
                initial_push: true,
                ..dev.clone()
            };
            let v = run(dir, &update(ZERO_ID, &c1, "refs/heads/main"), &first)
                .await
                .unwrap();
            assert!(v.is_empty(), "{v:?}");
        }
        let lines = refusal_lines(&[Violation {
            refname: "refs/heads/main".into(),
            rule: "secret.x".into(),
            message: "m".into(),
        }]);
        assert!(lines.iter().all(|l| l.starts_with("ouro: ")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains(secrets::ALLOW_FILE)));
    }
}
