//! Repositories: rows in `code_repos`, bare git directories in the data dir.
//!
//! Creation runs git first (into a temporary directory next to the final one), then inserts the
//! row and appends `repo.created` in one transaction, then moves the directory into place: if git
//! fails there is no row, and if the transaction fails the directory is removed.

use std::path::{Path, PathBuf};

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::crypto::SecretBox;
use ouro_store::{Executor, Row, Store, StoreError, on_unique, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::git;

pub const MAX_NAME: usize = 100;
/// The branch a new empty repository starts on.
pub const DEFAULT_BRANCH: &str = "main";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// Created empty.
    Empty,
    /// Cloned once from `source_url`.
    Import,
    /// Follows `source_url` (fetched on a schedule; not built yet).
    Mirror,
}

impl RepoKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Empty => "empty",
            RepoKind::Import => "import",
            RepoKind::Mirror => "mirror",
        }
    }

    fn parse(s: &str) -> RepoKind {
        match s {
            "import" => RepoKind::Import,
            "mirror" => RepoKind::Mirror,
            _ => RepoKind::Empty,
        }
    }
}

/// A hosted repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Repo {
    pub id: i64,
    #[serde(skip)]
    pub project_id: i64,
    pub name: String,
    pub default_branch: String,
    pub kind: RepoKind,
    pub source_url: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
    pub version: i64,
}

/// Where the bare repositories live (`DATA_DIR/repos`).
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("repos")
}

/// The bare directory of a repository under `root`.
pub fn dir(root: &Path, project_id: i64, repo_id: i64) -> PathBuf {
    root.join(project_id.to_string())
        .join(format!("{repo_id}.git"))
}

impl Repo {
    pub fn dir(&self, root: &Path) -> PathBuf {
        dir(root, self.project_id, self.id)
    }
}

/// Checks a repository name: 1 to 100 of `A-Z a-z 0-9 . _ -`, no `..`, not starting with `.`
/// or `-`, not ending in `.git`. Returns the name.
pub fn validate_name(name: &str) -> Result<&str, OuroError> {
    let bad = |msg: &str| OuroError::field("name", msg.to_string());
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad("the name must be 1 to 100 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad(
            "the name may only contain letters, digits, '.', '_' and '-'",
        ));
    }
    if name.contains("..") {
        return Err(bad("the name may not contain '..'"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(bad("the name may not start with '.' or '-'"));
    }
    if name.to_ascii_lowercase().ends_with(".git") {
        return Err(bad("the name may not end in '.git' (clone URLs add it)"));
    }
    Ok(name)
}

/// Checks an import URL: http(s), git or file, without spaces or control characters. A file
/// URL may not point into Ouro's own repository directory (another project's repository).
pub fn validate_import_url(url: &str, root: &Path) -> Result<String, OuroError> {
    let bad = |msg: &str| OuroError::field("import_url", msg.to_string());
    let url = url.trim();
    if url.is_empty() || url.len() > 2000 || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad(
            "the import URL must be 1 to 2000 characters without spaces",
        ));
    }
    let scheme_ok = ["https://", "http://", "git://", "file://"]
        .iter()
        .any(|s| url.to_ascii_lowercase().starts_with(s));
    if !scheme_ok {
        return Err(bad(
            "the import URL must start with https://, http://, git:// or file://",
        ));
    }
    if let Some(path) = url.strip_prefix("file://") {
        let p = Path::new(path);
        let inside = |a: &Path| match (a.canonicalize(), root.canonicalize()) {
            (Ok(a), Ok(r)) => a.starts_with(r),
            _ => false,
        };
        if inside(p) {
            return Err(bad(
                "the import URL may not point into Ouro's own repositories",
            ));
        }
    }
    Ok(url.to_string())
}

pub fn not_found(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::RepoNotFound,
        format!("repository {name:?} does not exist in this project"),
    )
}

fn taken(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::RepoNameTaken,
        format!("a repository named {name:?} already exists in this project"),
    )
    .with_details(json!({"field": "name"}))
}

fn git_failed(e: &git::GitError) -> OuroError {
    OuroError::new(ErrorCode::GitFailed, "a git command failed on the server")
        .with_details(json!({"git": e.to_string()}))
}

pub(crate) fn from_row(r: &Row) -> Result<Repo, StoreError> {
    Ok(Repo {
        id: r.i64("id")?,
        project_id: r.i64("project_id")?,
        name: r.text("name")?,
        default_branch: r.text("default_branch")?,
        kind: RepoKind::parse(&r.text("kind")?),
        source_url: r.opt_text("source_url")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
        version: r.i64("version")?,
    })
}

/// A project's repositories, by name.
pub async fn list(ex: &mut impl Executor, project_id: i64) -> Result<Vec<Repo>, StoreError> {
    let rows = q("SELECT * FROM code_repos WHERE project_id = $1 ORDER BY name")
        .bind(project_id)
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Every repository of every project, oldest first (for whole-instance sweeps such as Build's
/// schedule sync at start).
pub async fn all(ex: &mut impl Executor) -> Result<Vec<Repo>, StoreError> {
    let rows = q("SELECT * FROM code_repos ORDER BY id")
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// A repository by id within its project, if it still exists.
pub async fn by_id(
    ex: &mut impl Executor,
    project_id: i64,
    repo_id: i64,
) -> Result<Option<Repo>, StoreError> {
    q("SELECT * FROM code_repos WHERE id = $1 AND project_id = $2")
        .bind(repo_id)
        .bind(project_id)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A repository by name, if it exists.
pub async fn by_name(
    ex: &mut impl Executor,
    project_id: i64,
    name: &str,
) -> Result<Option<Repo>, StoreError> {
    q("SELECT * FROM code_repos WHERE project_id = $1 AND name = $2")
        .bind(project_id)
        .bind(name)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A repository by name, or `code.repo_not_found`.
pub async fn get(ex: &mut impl Executor, project_id: i64, name: &str) -> Result<Repo, StoreError> {
    by_name(ex, project_id, name)
        .await?
        .ok_or_else(|| not_found(name).into())
}

/// What to create.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    /// `A-Z a-z 0-9 . _ -`, unique in the project; the clone URL is `/git/{project}/{name}.git`.
    pub name: String,
    /// Clone this URL (https, http, git or file) instead of starting empty.
    #[serde(default)]
    pub import_url: Option<String>,
    /// Keep following `import_url`: fetched every `mirror_interval_minutes` and on demand;
    /// pushes are refused. A password in the URL is stored encrypted and never shown.
    #[serde(default)]
    pub mirror: bool,
    /// Minutes between a mirror's fetches (1 to 10080; default 60).
    #[serde(default)]
    pub mirror_interval_minutes: Option<u32>,
}

/// Creates a repository (empty, or imported from `import_url`) and appends `repo.created`.
/// Mirrors need the instance's secret box: see [`create_with`].
pub async fn create(
    store: &Store,
    root: &Path,
    project: (i64, &str),
    actor: &Actor,
    new: &NewRepo,
) -> Result<Repo, StoreError> {
    create_with(store, root, project, actor, new, None).await
}

/// Creates a repository: empty, imported from `import_url`, or a mirror of it (`secrets`
/// seals the mirror's URL). An import's or mirror's history is indexed into `code.pushed`
/// events (see [`crate::index`]) in the same transaction as the row and `repo.created`.
pub async fn create_with(
    store: &Store,
    root: &Path,
    project: (i64, &str),
    actor: &Actor,
    new: &NewRepo,
    secrets: Option<&SecretBox>,
) -> Result<Repo, StoreError> {
    let (project_id, slug) = project;
    let mirror_interval = if new.mirror {
        if new
            .import_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            return Err(OuroError::field(
                "import_url",
                "a mirror needs the URL to follow in import_url",
            )
            .into());
        }
        Some(crate::mirror::validate_interval(
            new.mirror_interval_minutes
                .unwrap_or(crate::mirror::DEFAULT_INTERVAL_MINUTES),
        )?)
    } else {
        if new.mirror_interval_minutes.is_some() {
            return Err(OuroError::field(
                "mirror_interval_minutes",
                "an interval only applies to a mirror (set \"mirror\": true)",
            )
            .into());
        }
        None
    };
    let secrets = match (mirror_interval, secrets) {
        (Some(_), None) => {
            return Err(OuroError::new(
                ErrorCode::Internal,
                "mirrors cannot be created here (no secret key to seal the URL)",
            )
            .into());
        }
        (_, s) => s,
    };
    let name = validate_name(&new.name)?.to_string();
    let import = new
        .import_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .map(|u| validate_import_url(u, root))
        .transpose()?;
    if by_name(&mut store.read().await?, project_id, &name)
        .await?
        .is_some()
    {
        return Err(taken(&name).into());
    }
    let parent = root.join(project_id.to_string());
    std::fs::create_dir_all(&parent).map_err(|e| {
        OuroError::new(
            ErrorCode::GitFailed,
            "cannot create the repository directory",
        )
        .with_details(json!({"io": e.to_string()}))
    })?;
    // git writes into a temporary directory; it is moved into place once the row exists.
    let tmp = parent.join(format!(
        ".new-{}-{}.git",
        ouro_core::time::now_ms(),
        std::process::id()
    ));
    let tmp = TempDir(tmp);
    let (kind, branch) = match &import {
        None => {
            git::init_bare(&tmp.0, DEFAULT_BRANCH)
                .await
                .map_err(|e| git_failed(&e))?;
            (RepoKind::Empty, DEFAULT_BRANCH.to_string())
        }
        Some(url) => {
            let branch = git::clone_bare(url, &tmp.0).await.map_err(|e| {
                OuroError::field(
                    "import_url",
                    format!("cannot import {}: {}", git::mask_url(url), e.message),
                )
                .with_details(json!({"field": "import_url", "git": e.message}))
            });
            let branch = match branch {
                Ok(b) => b,
                Err(mut e) => {
                    e.code = ErrorCode::RepoImportFailed;
                    return Err(e.into());
                }
            };
            let kind = if mirror_interval.is_some() {
                RepoKind::Mirror
            } else {
                RepoKind::Import
            };
            (kind, branch)
        }
    };
    let history = if import.is_some() {
        let started = std::time::Instant::now();
        let h = crate::index::history(&tmp.0, &branch)
            .await
            .map_err(|e| git_failed(&e))?;
        tracing::info!(
            repo = %name,
            refs = h.len(),
            commits = h.iter().map(|r| r.commits.len()).sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "read the imported history"
        );
        h
    } else {
        Vec::new()
    };
    let shown_url = import.as_deref().map(git::mask_url);
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let row = on_unique(
        q(
            "INSERT INTO code_repos (project_id, name, default_branch, kind, source_url, \
           created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING *",
        )
        .bind(project_id)
        .bind(name.as_str())
        .bind(branch.as_str())
        .bind(kind.as_str())
        .bind(shown_url.clone())
        .bind(actor.user_id())
        .bind(now)
        .fetch_one(&mut tx)
        .await,
        || taken(&name),
    )?;
    let repo = from_row(&row)?;
    tx.append(
        NewEvent::new(
            ev::REPO_CREATED,
            actor,
            repo.id,
            json!({
                "name": repo.name,
                "kind": kind.as_str(),
                "default_branch": repo.default_branch,
                "source_url": shown_url,
                "mirror": mirror_interval.map(crate::mirror::created_payload),
            }),
        )
        .in_project(project_id, slug),
    )
    .await?;
    if let (Some(minutes), Some(secrets), Some(url)) = (mirror_interval, secrets, &import) {
        crate::mirror::insert(&mut tx, secrets, repo.id, url, minutes, now).await?;
    }
    for e in crate::index::events(repo.id, &repo.name, (project_id, slug), actor, history) {
        tx.append(e).await?;
    }
    let dest = repo.dir(root);
    // A directory left by a crashed earlier attempt with the same id cannot hold a live repo.
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp.0, &dest).map_err(|e| {
        OuroError::new(
            ErrorCode::GitFailed,
            "cannot move the new repository into place",
        )
        .with_details(json!({"io": e.to_string()}))
    })?;
    if let Err(e) = tx.commit().await {
        let _ = std::fs::remove_dir_all(&dest);
        return Err(e);
    }
    Ok(repo)
}

/// Removes a directory when dropped (unless it was moved away).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Deletes a repository: the row and `repo.deleted` in one transaction, then its directory.
pub async fn delete(
    store: &Store,
    root: &Path,
    project: (i64, &str),
    actor: &Actor,
    name: &str,
) -> Result<(), StoreError> {
    let (project_id, slug) = project;
    let mut tx = store.begin().await?;
    let repo = get(&mut tx, project_id, name).await?;
    q("DELETE FROM code_repos WHERE id = $1")
        .bind(repo.id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(ev::REPO_DELETED, actor, repo.id, json!({"name": repo.name}))
            .in_project(project_id, slug),
    )
    .await?;
    tx.commit().await?;
    let _ = std::fs::remove_dir_all(repo.dir(root));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["app", "my-app", "my_app", "v1.2", "A9", "a.b-c_d"] {
            assert_eq!(validate_name(ok).unwrap(), ok);
        }
        for bad in [
            "", "a b", "a/b", "a\\b", "..", "a..b", ".hidden", "-x", "app.git", "APP.GIT", "ü",
            "a:b", "a\nb",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{bad:?}");
            assert_eq!(e.details.unwrap()["field"], "name", "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME)).is_ok());
        assert!(validate_name(&"a".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn import_urls() {
        let root = tempfile::tempdir().unwrap();
        for ok in [
            "https://example.com/a.git",
            "http://h/r",
            "git://h/r",
            "file:///srv/r",
        ] {
            assert!(validate_import_url(ok, root.path()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ftp://h/r",
            "/srv/r",
            "ssh://h/r",
            "https://h/a b",
            "ext::sh -c x",
        ] {
            let e = validate_import_url(bad, root.path()).unwrap_err();
            assert_eq!(e.details.unwrap()["field"], "import_url", "{bad:?}");
        }
        // Not another project's repository.
        let inner = root.path().join("1").join("2.git");
        std::fs::create_dir_all(&inner).unwrap();
        let url = format!("file://{}", inner.display());
        assert!(validate_import_url(&url, root.path()).is_err());
    }

    #[test]
    fn directories_use_ids() {
        assert_eq!(
            dir(Path::new("/d/repos"), 3, 14),
            PathBuf::from("/d/repos/3/14.git")
        );
    }
}
