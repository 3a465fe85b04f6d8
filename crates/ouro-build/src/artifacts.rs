//! Artifacts: files a job keeps (`artifacts: {paths, expire-in}`), stored in the blob store
//! ([`crate::blobs`]) and recorded in `build_artifacts` (run, job, path, sha256, size, expiry).
//!
//! - Job side: [`collect`] finds the files matching the job's globs in the workspace (relative
//!   paths only; nothing outside the workspace, also not through symlinks; per-file and per-job
//!   size limits). [`JobFiles`] is the [`JobHooks`] implementation the runner gives the executor:
//!   after the checkout it restores the cache ([`crate::cache`]) and downloads the artifacts of
//!   the jobs this one `needs`; after the steps it uploads artifacts and saves the cache (both on
//!   success only, as GitLab does by default). It talks to the server through [`FileTransfer`]:
//!   [`InProcessTransfer`] (the in-process runner: domain calls) or [`HttpTransfer`] (`ouro
//!   runner`: the runner API, authenticated by the job's attempt token).
//! - Server side: [`store_upload`] (stream into the blob store, then [`record`] the rows and a
//!   `build.artifacts_uploaded` event), [`list_for_run`], [`get`], [`needed`], and [`gc`] which
//!   deletes expired rows and the blobs nothing references any more.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::blobs::{BlobError, BlobRef, BlobStore};
use crate::cache;
use crate::exec::{BoxFuture, ExecEvent, JobHooks};
use crate::runs::Job;

const ACTOR: Actor = Actor::System("pipelines");
/// Blobs younger than this are never collected (an upload may not have recorded its row yet).
pub const GC_GRACE_MS: i64 = 60 * 60 * 1000;

/// Settings of artifacts, caches and the blob store (`[artifacts]` in ouro.toml).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// At most this many bytes in the blob store (none: until the disk is full).
    pub capacity_bytes: Option<u64>,
    /// How long artifacts are kept when a job does not say (`expire-in`).
    pub default_expire_in: String,
    /// The largest single artifact file.
    pub max_file_bytes: u64,
    /// The most artifact bytes one job may upload.
    pub max_job_bytes: u64,
    /// Cache bytes per project; least recently used entries are evicted beyond it.
    pub cache_quota_bytes: u64,
    /// Seconds between garbage collections.
    pub gc_interval_secs: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            capacity_bytes: None,
            default_expire_in: "30 days".into(),
            max_file_bytes: 1024 * 1024 * 1024,
            max_job_bytes: 4 * 1024 * 1024 * 1024,
            cache_quota_bytes: 4 * 1024 * 1024 * 1024,
            gc_interval_secs: 3600,
        }
    }
}

/// Parses `expire-in`: `never`, or amounts with units, e.g. `30 days`, `1 week`, `2h`,
/// `1 day 12 hours` (units: s/sec/second, m/min/minute, h/hour, d/day, w/week, mo/month (30
/// days), y/year (365 days), singular or plural). `None` for `never`; milliseconds otherwise.
pub fn parse_expire_in(s: &str) -> Result<Option<i64>, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "never" {
        return Ok(None);
    }
    let bad = || {
        format!(
            "expire-in {s:?}: write an amount and a unit, e.g. `30 days`, `1 week`, `2h`, or `never`"
        )
    };
    let mut total: i64 = 0;
    let mut rest = t.as_str();
    let mut any = false;
    while !rest.trim().is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..end];
        rest = rest[end..].trim_start_matches([',', ' ']);
        let ms: i64 = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "w" | "week" | "weeks" => 7 * 86_400_000,
            "mo" | "month" | "months" => 30 * 86_400_000,
            "y" | "year" | "years" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        any = true;
    }
    if !any {
        return Err(bad());
    }
    Ok(Some(total))
}

// ---------------------------------------------------------------------------------------------
// Collecting files in the workspace

/// Size limits of one job's artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_job_bytes: u64,
}

impl From<&StorageSettings> for Limits {
    fn from(s: &StorageSettings) -> Limits {
        Limits {
            max_file_bytes: s.max_file_bytes,
            max_job_bytes: s.max_job_bytes,
        }
    }
}

/// A file to upload: its path relative to the workspace (`/`-separated) and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedFile {
    pub path: String,
    pub abs: PathBuf,
    pub size: u64,
}

/// Checks an artifact path: relative, `/`-separated normal components, at most 1024 bytes.
pub fn check_path(p: &str) -> Result<String, OuroError> {
    match cache::clean_relative(p) {
        Some(c) if c.len() <= 1024 => Ok(c),
        _ => Err(OuroError::field(
            "path",
            format!("artifact path {p:?} must be relative to the workspace, without `..`"),
        )),
    }
}

fn add_file(
    ws: &Path,
    abs: &Path,
    out: &mut BTreeMap<String, CollectedFile>,
    limits: Limits,
) -> Result<(), String> {
    let real = abs
        .canonicalize()
        .map_err(|e| format!("{}: {e}", abs.display()))?;
    let Ok(rel) = abs.strip_prefix(ws) else {
        return Ok(());
    };
    let rel = rel.to_string_lossy().to_string();
    if !real.starts_with(ws) {
        return Err(format!(
            "artifact {rel} points outside the workspace (through a symlink); it was not uploaded"
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{rel}: {e}"))?;
    if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(abs)
            .map_err(|e| format!("{rel}: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        names.sort();
        for n in names {
            add_file(ws, &n, out, limits)?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        return Ok(());
    }
    if meta.len() > limits.max_file_bytes {
        return Err(format!(
            "artifact {rel} is {} bytes, more than the limit of {} bytes per file",
            meta.len(),
            limits.max_file_bytes
        ));
    }
    let path = check_path(&rel).map_err(|e| e.message)?;
    out.insert(
        path.clone(),
        CollectedFile {
            path,
            abs: real,
            size: meta.len(),
        },
    );
    Ok(())
}

/// The files matching `globs` (relative to the workspace; directories are taken whole), sorted
/// by path. Refuses patterns that leave the workspace, matches that resolve outside it (symlinks),
/// and files over the limits, with a message for the job log.
pub fn collect(
    workspace: &Path,
    globs: &[String],
    limits: Limits,
) -> Result<Vec<CollectedFile>, String> {
    let ws = workspace
        .canonicalize()
        .map_err(|e| format!("workspace: {e}"))?;
    let mut out = BTreeMap::new();
    for g in globs {
        let Some(clean) = cache::clean_relative(g) else {
            return Err(format!(
                "artifact path {g:?} must be relative to the workspace, without `..`"
            ));
        };
        let pattern = format!("{}/{clean}", glob::Pattern::escape(&ws.to_string_lossy()));
        let paths = glob::glob(&pattern).map_err(|e| format!("artifact path {g:?}: {e}"))?;
        for p in paths.filter_map(Result::ok) {
            add_file(&ws, &p, &mut out, limits)?;
        }
    }
    let total: u64 = out.values().map(|f| f.size).sum();
    if total > limits.max_job_bytes {
        return Err(format!(
            "the job's artifacts are {total} bytes, more than the limit of {} bytes per job",
            limits.max_job_bytes
        ));
    }
    Ok(out.into_values().collect())
}

// ---------------------------------------------------------------------------------------------
// Storage

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Artifact {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    /// The job's key (`build`, `test (linux)`).
    pub job: String,
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub sha256: String,
    pub size: i64,
    /// When it expires (RFC 3339); none: kept forever.
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<i64>,
    #[serde(serialize_with = "ouro_core::time::serde_ms::serialize")]
    #[schemars(with = "String")]
    pub created_at: i64,
    /// Past its expiry (the garbage collector removes it).
    pub expired: bool,
}

fn artifact_from(r: &Row, now: i64) -> Result<Artifact, StoreError> {
    let expires_at = r.opt_i64("expires_at")?;
    Ok(Artifact {
        id: r.i64("id")?,
        run_id: r.i64("run_id")?,
        job_id: r.i64("job_id")?,
        job: r.text("job_key")?,
        path: r.text("path")?,
        sha256: r.text("sha256")?,
        size: r.i64("size")?,
        expires_at,
        created_at: r.i64("created_at")?,
        expired: expires_at.is_some_and(|e| e <= now),
    })
}

const SELECT: &str =
    "SELECT a.*, j.job_key FROM build_artifacts a JOIN build_jobs j ON j.id = a.job_id";

/// Records stored blobs as artifacts of `job` (replacing the same paths of an earlier attempt)
/// and appends `build.artifacts_uploaded`.
pub async fn record(
    store: &Store,
    job: &Job,
    files: &[(String, BlobRef)],
    expires_at: Option<i64>,
) -> Result<Vec<Artifact>, StoreError> {
    let mut tx = store.begin().await?;
    let run = crate::runs::run_by_id(&mut tx, job.run_id).await?;
    let now = ouro_core::time::now_ms();
    for (path, blob) in files {
        q("DELETE FROM build_artifacts WHERE job_id = $1 AND path = $2")
            .bind(job.id)
            .bind(path.as_str())
            .execute(&mut tx)
            .await?;
        q("INSERT INTO build_artifacts (project_id, run_id, job_id, path, sha256, size, expires_at, created_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(run.project_id)
        .bind(run.id)
        .bind(job.id)
        .bind(path.as_str())
        .bind(blob.sha256.as_str())
        .bind(blob.size as i64)
        .bind(expires_at)
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    let slug = q("SELECT slug FROM projects WHERE id = $1")
        .bind(run.project_id)
        .fetch_one(&mut tx)
        .await?
        .text("slug")?;
    let bytes: u64 = files.iter().map(|(_, b)| b.size).sum();
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    tx.append(
        NewEvent::new(
            ev::ARTIFACTS_UPLOADED,
            &ACTOR,
            job.id,
            json!({"run": run.number, "job": job.key, "count": files.len(), "bytes": bytes, "paths": paths}),
        )
        .in_project(run.project_id, &slug),
    )
    .await?;
    let rows = q(format!("{SELECT} WHERE a.job_id = $1 ORDER BY a.path"))
        .bind(job.id)
        .fetch_all(&mut tx)
        .await?
        .iter()
        .map(|r| artifact_from(r, now))
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().await?;
    let wanted: BTreeSet<&str> = paths.into_iter().collect();
    Ok(rows
        .into_iter()
        .filter(|a| wanted.contains(a.path.as_str()))
        .collect())
}

/// A run's artifacts, by job then path.
pub async fn list_for_run(
    ex: &mut impl Executor,
    run_id: i64,
) -> Result<Vec<Artifact>, StoreError> {
    let now = ouro_core::time::now_ms();
    q(format!(
        "{SELECT} WHERE a.run_id = $1 ORDER BY a.job_id, a.path"
    ))
    .bind(run_id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| artifact_from(r, now))
    .collect()
}

/// One artifact of a run; `build.artifact_not_found` when it is not there.
pub async fn get(ex: &mut impl Executor, run_id: i64, id: i64) -> Result<Artifact, StoreError> {
    let now = ouro_core::time::now_ms();
    q(format!("{SELECT} WHERE a.run_id = $1 AND a.id = $2"))
        .bind(run_id)
        .bind(id)
        .fetch_optional(ex)
        .await?
        .map(|r| artifact_from(&r, now))
        .transpose()?
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::ArtifactNotFound,
                format!("artifact {id} does not exist in this run"),
            )
            .into()
        })
}

/// The unexpired artifacts of the jobs `job` needs (same run).
pub async fn needed(ex: &mut impl Executor, job: &Job) -> Result<Vec<Artifact>, StoreError> {
    let needs: BTreeSet<&str> = job.needs.iter().map(String::as_str).collect();
    Ok(list_for_run(ex, job.run_id)
        .await?
        .into_iter()
        .filter(|a| needs.contains(a.job.as_str()) && !a.expired)
        .collect())
}

/// Which job attempt uploads which file ([`store_upload`]).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub job_id: i64,
    /// The attempt token (`Ouro-Attempt-Token`).
    pub token: &'a str,
    /// Relative to the workspace.
    pub path: &'a str,
    /// The job's `expire-in` (none: the default setting).
    pub expire_in: Option<&'a str>,
}

/// Streams `src` into the blob store for the running job holding `token` and records it as the
/// artifact `path`. Checks the token before and after the upload (`build.stale_attempt`), the
/// path (422), the per-file and per-job limits (413 `build.artifact_too_large`), and the store's
/// space (507 `build.storage_full`). Blocking I/O runs on a blocking thread.
pub async fn store_upload(
    store: &Store,
    blobs: Arc<dyn BlobStore>,
    settings: &StorageSettings,
    up: Upload<'_>,
    mut src: Box<dyn Read + Send>,
) -> Result<Artifact, StoreError> {
    let Upload {
        job_id,
        token,
        path,
        expire_in,
    } = up;
    let path = check_path(path)?;
    let expires = match expire_in {
        Some(e) if !e.trim().is_empty() => parse_expire_in(e),
        _ => parse_expire_in(&settings.default_expire_in),
    }
    .map_err(|m| OuroError::field("expire_in", m))?;
    let job = crate::runs::check_attempt(&mut store.read().await?, job_id, token).await?;
    let used: i64 = q(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS s FROM build_artifacts WHERE job_id = $1 AND path <> $2",
    )
    .bind(job_id)
    .bind(path.as_str())
    .fetch_one(&mut store.read().await?)
    .await?
    .i64("s")?;
    let left = settings.max_job_bytes.saturating_sub(used.max(0) as u64);
    let max = settings.max_file_bytes.min(left);
    let blob = tokio::task::spawn_blocking(move || blobs.put(&mut src, Some(max)))
        .await
        .map_err(|_| OuroError::internal())?
        .map_err(|e| match e {
            BlobError::TooLarge(_) => OuroError::new(
                ErrorCode::ArtifactTooLarge,
                format!(
                    "artifact {path} is over the limit ({max} bytes left of the per-file and per-job limits)"
                ),
            ),
            e => OuroError::from(e),
        })?;
    // The attempt may have been replaced while the bytes came in.
    let job = crate::runs::check_attempt(&mut store.read().await?, job.id, token).await?;
    let expires_at = expires.map(|ms| ouro_core::time::now_ms() + ms);
    let mut rows = record(store, &job, &[(path, blob)], expires_at).await?;
    rows.pop().ok_or_else(|| OuroError::internal().into())
}

/// What [`gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub rows: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// Deletes artifact rows that expired before `now`, then every blob older than `grace_ms` that no
/// artifact or cache references and nothing pins ([`crate::blobs::pin`]).
pub async fn gc(
    store: &Store,
    blobs: Arc<dyn BlobStore>,
    now: i64,
    grace_ms: i64,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    let mut tx = store.begin().await?;
    let expired = q("SELECT a.project_id, p.slug, COUNT(*) AS n, CAST(SUM(a.size) AS BIGINT) AS bytes FROM build_artifacts a \
                     JOIN projects p ON p.id = a.project_id \
                     WHERE a.expires_at IS NOT NULL AND a.expires_at <= $1 GROUP BY a.project_id, p.slug")
    .bind(now)
    .fetch_all(&mut tx)
    .await?;
    if !expired.is_empty() {
        report.rows =
            q("DELETE FROM build_artifacts WHERE expires_at IS NOT NULL AND expires_at <= $1")
                .bind(now)
                .execute(&mut tx)
                .await?;
        for r in &expired {
            let project_id = r.i64("project_id")?;
            tx.append(
                NewEvent::new(
                    ev::ARTIFACTS_EXPIRED,
                    &ACTOR,
                    project_id,
                    json!({"count": r.i64("n")?, "bytes": r.opt_i64("bytes")?.unwrap_or(0)}),
                )
                .in_project(project_id, &r.text("slug")?),
            )
            .await?;
        }
    }
    tx.commit().await?;
    let mut referenced = BTreeSet::new();
    {
        let mut c = store.read().await?;
        for sql in [
            "SELECT DISTINCT sha256 FROM build_artifacts",
            "SELECT DISTINCT sha256 FROM build_caches",
            "SELECT DISTINCT sha256 FROM build_blob_pins",
        ] {
            for r in q(sql).fetch_all(&mut c).await? {
                referenced.insert(r.text("sha256")?);
            }
        }
    }
    let (blobs_removed, bytes) = tokio::task::spawn_blocking(move || {
        let mut n = 0u64;
        let mut bytes = 0u64;
        for (b, mtime) in blobs.list()? {
            if referenced.contains(&b.sha256) || mtime > now - grace_ms {
                continue;
            }
            blobs.delete(&b.sha256)?;
            n += 1;
            bytes += b.size;
        }
        Ok::<_, BlobError>((n, bytes))
    })
    .await
    .map_err(|_| OuroError::internal())?
    .map_err(OuroError::from)?;
    report.blobs = blobs_removed;
    report.bytes = bytes;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The job side: hooks and transfers

/// An artifact a job can download (of a job it needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NeededArtifact {
    pub id: i64,
    pub job: String,
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// A cache the server found for a job: the matched key and the archive's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FoundCache {
    pub key: String,
    pub sha256: String,
    pub size: i64,
    pub exact: bool,
}

/// How a job's files get to and from the server. Errors are messages for the job log.
pub trait FileTransfer: Send + Sync {
    fn upload_artifact<'a>(
        &'a self,
        path: &'a str,
        file: &'a Path,
        expire_in: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>>;
    fn needed_artifacts(&self) -> BoxFuture<'_, Result<Vec<NeededArtifact>, String>>;
    fn download_artifact<'a>(
        &'a self,
        a: &'a NeededArtifact,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Looks the cache up and downloads the archive into `dest` on a hit.
    fn restore_cache<'a>(
        &'a self,
        key: &'a str,
        restore_keys: &'a [String],
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<Option<FoundCache>, String>>;
    /// Saves `archive` as the cache `key`; `false` when the key already existed.
    fn save_cache<'a>(
        &'a self,
        key: &'a str,
        archive: &'a Path,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn store_msg(e: StoreError) -> String {
    let o: OuroError = e.into();
    format!("{}: {}", o.code.as_str(), o.message)
}

async fn copy_blob(blobs: Arc<dyn BlobStore>, sha: String, dest: PathBuf) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let mut r = blobs
            .open(&sha)
            .map_err(msg)?
            .ok_or_else(|| format!("blob {sha} is missing from the store"))?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(msg)?;
        }
        let mut f = std::fs::File::create(&dest).map_err(msg)?;
        std::io::copy(&mut r, &mut f).map_err(msg)?;
        Ok(())
    })
    .await
    .map_err(msg)?
}

/// Domain calls for the in-process runner.
pub struct InProcessTransfer {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub settings: StorageSettings,
    pub job_id: i64,
    pub token: String,
}

impl InProcessTransfer {
    async fn job(&self) -> Result<Job, String> {
        let mut c = self.store.read().await.map_err(store_msg)?;
        crate::runs::check_attempt(&mut c, self.job_id, &self.token)
            .await
            .map_err(store_msg)
    }
    async fn project(&self) -> Result<i64, String> {
        let job = self.job().await?;
        let mut c = self.store.read().await.map_err(store_msg)?;
        Ok(crate::runs::run_by_id(&mut c, job.run_id)
            .await
            .map_err(store_msg)?
            .project_id)
    }
}

impl FileTransfer for InProcessTransfer {
    fn upload_artifact<'a>(
        &'a self,
        path: &'a str,
        file: &'a Path,
        expire_in: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let f = std::fs::File::open(file).map_err(msg)?;
            store_upload(
                &self.store,
                self.blobs.clone(),
                &self.settings,
                Upload {
                    job_id: self.job_id,
                    token: &self.token,
                    path,
                    expire_in,
                },
                Box::new(f),
            )
            .await
            .map_err(store_msg)?;
            Ok(())
        })
    }

    fn needed_artifacts(&self) -> BoxFuture<'_, Result<Vec<NeededArtifact>, String>> {
        Box::pin(async move {
            let job = self.job().await?;
            let mut c = self.store.read().await.map_err(store_msg)?;
            Ok(needed(&mut c, &job)
                .await
                .map_err(store_msg)?
                .into_iter()
                .map(|a| NeededArtifact {
                    id: a.id,
                    job: a.job,
                    path: a.path,
                    sha256: a.sha256,
                    size: a.size,
                })
                .collect())
        })
    }

    fn download_artifact<'a>(
        &'a self,
        a: &'a NeededArtifact,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(copy_blob(
            self.blobs.clone(),
            a.sha256.clone(),
            dest.to_path_buf(),
        ))
    }

    fn restore_cache<'a>(
        &'a self,
        key: &'a str,
        restore_keys: &'a [String],
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<Option<FoundCache>, String>> {
        Box::pin(async move {
            let project = self.project().await?;
            let Some(hit) = cache::lookup(&self.store, project, key, restore_keys)
                .await
                .map_err(store_msg)?
            else {
                return Ok(None);
            };
            copy_blob(
                self.blobs.clone(),
                hit.entry.sha256.clone(),
                dest.to_path_buf(),
            )
            .await?;
            Ok(Some(FoundCache {
                key: hit.entry.key,
                sha256: hit.entry.sha256,
                size: hit.entry.size,
                exact: hit.exact,
            }))
        })
    }

    fn save_cache<'a>(
        &'a self,
        key: &'a str,
        archive: &'a Path,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let project = self.project().await?;
            save_cache_file(
                &self.store,
                self.blobs.clone(),
                &self.settings,
                project,
                key,
                Box::new(std::fs::File::open(archive).map_err(msg)?),
            )
            .await
            .map(|s| s.saved)
            .map_err(store_msg)
        })
    }
}

/// Stores a cache archive from `src` and records it (the server's `PUT .../cache` and the
/// in-process runner).
pub async fn save_cache_file(
    store: &Store,
    blobs: Arc<dyn BlobStore>,
    settings: &StorageSettings,
    project_id: i64,
    key: &str,
    mut src: Box<dyn Read + Send>,
) -> Result<cache::Saved, StoreError> {
    cache::check_key(key)?;
    {
        let mut c = store.read().await?;
        let exists = q("SELECT id FROM build_caches WHERE project_id = $1 AND cache_key = $2")
            .bind(project_id)
            .bind(key)
            .fetch_optional(&mut c)
            .await?
            .is_some();
        if exists {
            return Ok(cache::Saved {
                saved: false,
                evicted: vec![],
            });
        }
    }
    let quota = settings.cache_quota_bytes;
    let blob = tokio::task::spawn_blocking(move || blobs.put(&mut src, Some(quota)))
        .await
        .map_err(|_| OuroError::internal())?
        .map_err(OuroError::from)?;
    cache::save(store, project_id, key, &blob, quota).await
}

/// Talks to the runner API of a server (`ouro runner`), with the job's attempt token.
pub struct HttpTransfer {
    pub client: reqwest::Client,
    /// `https://ouro.example.com` (no trailing slash).
    pub base_url: String,
    pub job_id: i64,
    pub token: String,
}

/// The header carrying the attempt token on runner writes.
pub const TOKEN_HEADER: &str = "Ouro-Attempt-Token";

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl HttpTransfer {
    fn url(&self, rest: &str) -> String {
        format!(
            "{}/api/v1/runner/jobs/{}/{rest}",
            self.base_url, self.job_id
        )
    }
    async fn check(res: reqwest::Response) -> Result<reqwest::Response, String> {
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        Err(format!("the server answered {status}: {body}"))
    }
    /// Downloads into `dest`; the response headers, or `None` for 204 No Content.
    async fn download_to(
        &self,
        url: String,
        dest: &Path,
    ) -> Result<Option<reqwest::header::HeaderMap>, String> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let res = self
            .client
            .get(url)
            .header(TOKEN_HEADER, &self.token)
            .send()
            .await
            .map_err(msg)?;
        let res = Self::check(res).await?;
        if res.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(msg)?;
        }
        let headers = res.headers().clone();
        let mut f = tokio::fs::File::create(dest).await.map_err(msg)?;
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.next().await {
            f.write_all(&chunk.map_err(msg)?).await.map_err(msg)?;
        }
        f.flush().await.map_err(msg)?;
        Ok(Some(headers))
    }
}

impl FileTransfer for HttpTransfer {
    fn upload_artifact<'a>(
        &'a self,
        path: &'a str,
        file: &'a Path,
        expire_in: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let f = tokio::fs::File::open(file).await.map_err(msg)?;
            let len = f.metadata().await.map_err(msg)?.len();
            let body = reqwest::Body::wrap_stream(tokio_util_stream(f));
            let segs: Vec<String> = path.split('/').map(enc).collect();
            let mut url = self.url(&format!("artifacts/{}", segs.join("/")));
            if let Some(e) = expire_in {
                url.push_str(&format!("?expire_in={}", enc(e)));
            }
            let res = self
                .client
                .put(url)
                .header(TOKEN_HEADER, &self.token)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await
                .map_err(msg)?;
            Self::check(res).await.map(|_| ())
        })
    }

    fn needed_artifacts(&self) -> BoxFuture<'_, Result<Vec<NeededArtifact>, String>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct List {
                artifacts: Vec<NeededArtifact>,
            }
            let res = self
                .client
                .get(self.url("needed-artifacts"))
                .header(TOKEN_HEADER, &self.token)
                .send()
                .await
                .map_err(msg)?;
            let l: List = Self::check(res).await?.json().await.map_err(msg)?;
            Ok(l.artifacts)
        })
    }

    fn download_artifact<'a>(
        &'a self,
        a: &'a NeededArtifact,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.download_to(self.url(&format!("needed-artifacts/{}", a.id)), dest)
                .await
                .map(|_| ())
        })
    }

    fn restore_cache<'a>(
        &'a self,
        key: &'a str,
        restore_keys: &'a [String],
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<Option<FoundCache>, String>> {
        Box::pin(async move {
            let url = self.url(&format!(
                "cache?key={}&restore_keys={}",
                enc(key),
                enc(&restore_keys.join("\n"))
            ));
            let Some(headers) = self.download_to(url, dest).await? else {
                return Ok(None);
            };
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            Ok(Some(FoundCache {
                key: h("ouro-cache-key"),
                sha256: h("ouro-cache-sha256"),
                size: h("content-length").parse().unwrap_or(0),
                exact: h("ouro-cache-exact") == "true",
            }))
        })
    }

    fn save_cache<'a>(
        &'a self,
        key: &'a str,
        archive: &'a Path,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let f = tokio::fs::File::open(archive).await.map_err(msg)?;
            let len = f.metadata().await.map_err(msg)?.len();
            let res = self
                .client
                .put(self.url(&format!("cache?key={}", enc(key))))
                .header(TOKEN_HEADER, &self.token)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(reqwest::Body::wrap_stream(tokio_util_stream(f)))
                .send()
                .await
                .map_err(msg)?;
            let saved: cache::Saved = Self::check(res).await?.json().await.map_err(msg)?;
            Ok(saved.saved)
        })
    }
}

/// A file as a stream of chunks (for streaming request bodies).
fn tokio_util_stream(
    f: tokio::fs::File,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// Where a job's `artifacts.reports` files are stored among its artifacts:
/// `.ouro-reports/junit/<path>` and `.ouro-reports/coverage/<path>`.
pub const REPORTS_PREFIX: &str = ".ouro-reports";

/// The [`JobHooks`] of a job with `artifacts:` and/or `cache:`: see the module docs.
pub struct JobFiles {
    pub transfer: Arc<dyn FileTransfer>,
    pub artifacts: Option<crate::pipeline::Artifacts>,
    pub cache: Option<crate::pipeline::Cache>,
    /// The job's expression context (`ouro`, `env`, `matrix`, ...), for rendering the cache key;
    /// `hashFiles()` is added over the workspace after the checkout.
    pub expr: crate::expr::Context,
    pub limits: Limits,
    /// The rendered cache key (set after the checkout).
    rendered: std::sync::Mutex<Option<(String, bool)>>,
}

impl JobFiles {
    pub fn new(
        transfer: Arc<dyn FileTransfer>,
        artifacts: Option<crate::pipeline::Artifacts>,
        cache: Option<crate::pipeline::Cache>,
        expr: crate::expr::Context,
        limits: Limits,
    ) -> JobFiles {
        JobFiles {
            transfer,
            artifacts,
            cache,
            expr,
            limits,
            rendered: std::sync::Mutex::new(None),
        }
    }

    /// The hooks for a job the in-process runner claimed, or `None` when the job has no
    /// `cache:`, no `artifacts:` and no `needs` (nothing to do). The one call the runner makes:
    /// `JobContext { hooks: JobFiles::in_process(..), .. }` or `exec::run_logged_with_hooks`.
    pub fn in_process(
        store: Store,
        blobs: Arc<dyn BlobStore>,
        settings: &StorageSettings,
        claim: &crate::runs::Claim,
        job: &crate::pipeline::Job,
        expr: crate::expr::Context,
    ) -> Option<Arc<dyn JobHooks>> {
        Self::in_process_for(
            store,
            blobs,
            settings,
            (claim.job.id, &claim.token),
            !claim.job.needs.is_empty(),
            job,
            expr,
        )
    }

    /// [`JobFiles::in_process`] from the job id and attempt token (what the runner protocol's
    /// claim carries).
    pub fn in_process_for(
        store: Store,
        blobs: Arc<dyn BlobStore>,
        settings: &StorageSettings,
        (job_id, token): (i64, &str),
        has_needs: bool,
        job: &crate::pipeline::Job,
        expr: crate::expr::Context,
    ) -> Option<Arc<dyn JobHooks>> {
        if !Self::needed_for(job, has_needs) {
            return None;
        }
        let transfer = Arc::new(InProcessTransfer {
            store,
            blobs,
            settings: settings.clone(),
            job_id,
            token: token.to_string(),
        });
        Some(Arc::new(JobFiles::new(
            transfer,
            job.artifacts.clone(),
            job.cache.clone(),
            expr,
            Limits::from(settings),
        )))
    }

    /// The hooks for `ouro runner`: the same over the runner API of `base_url` (limits: the
    /// server's defaults; the server enforces its own on upload).
    pub fn over_http(
        client: reqwest::Client,
        base_url: &str,
        job_id: i64,
        token: &str,
        job: &crate::pipeline::Job,
        has_needs: bool,
        expr: crate::expr::Context,
    ) -> Option<Arc<dyn JobHooks>> {
        if !Self::needed_for(job, has_needs) {
            return None;
        }
        let transfer = Arc::new(HttpTransfer {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            job_id,
            token: token.to_string(),
        });
        Some(Arc::new(JobFiles::new(
            transfer,
            job.artifacts.clone(),
            job.cache.clone(),
            expr,
            Limits::from(&StorageSettings::default()),
        )))
    }

    /// Whether the job has anything for the hooks to do (else pass no hooks at all).
    pub fn needed_for(job: &crate::pipeline::Job, has_needs: bool) -> bool {
        job.cache.is_some() || job.artifacts.is_some() || has_needs
    }

    /// Uploads the files of `artifacts.reports` as artifacts under [`REPORTS_PREFIX`]
    /// (`.ouro-reports/junit/<path>`, `.ouro-reports/coverage/<path>`), where the server's
    /// finish hook finds them. Problems are logged, never fatal.
    async fn upload_reports(
        &self,
        workspace: &Path,
        r: &crate::pipeline::Reports,
        events: &mpsc::Sender<ExecEvent>,
    ) {
        let kinds: [(&str, Vec<String>); 2] = [
            ("junit", r.junit.clone()),
            ("coverage", r.coverage.iter().cloned().collect()),
        ];
        for (kind, globs) in kinds {
            if globs.is_empty() {
                continue;
            }
            match collect(workspace, &globs, self.limits) {
                Err(e) => log(events, format!("reports: {e}")).await,
                Ok(files) if files.is_empty() => {
                    log(
                        events,
                        format!("reports: no {kind} file matches {}", globs.join(", ")),
                    )
                    .await
                }
                Ok(files) => {
                    let expire = self.artifacts.as_ref().and_then(|a| a.expire_in.as_deref());
                    let mut n = 0;
                    for f in &files {
                        let dest = format!("{REPORTS_PREFIX}/{kind}/{}", f.path);
                        match self.transfer.upload_artifact(&dest, &f.abs, expire).await {
                            Ok(()) => n += 1,
                            Err(e) => {
                                log(events, format!("reports: uploading {}: {e}", f.path)).await
                            }
                        }
                    }
                    log(events, format!("reports: uploaded {n} {kind} file(s)")).await;
                }
            }
        }
    }

    fn render(&self, workspace: &Path, src: &str) -> Result<String, String> {
        let ctx = self
            .expr
            .clone()
            .with_hash_files(Arc::new(crate::expr::DirHashFiles::new(workspace)));
        crate::expr::parse_template(src)
            .map_err(|e| format!("cache key {src:?}: {}", e.message))?
            .render(&ctx)
            .map_err(|e| format!("cache key {src:?}: {}", e.message))
    }
}

async fn log(events: &mpsc::Sender<ExecEvent>, line: String) {
    let _ = events
        .send(ExecEvent::Log {
            step: None,
            data: format!("{line}\n").into_bytes(),
        })
        .await;
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

impl JobHooks for JobFiles {
    fn after_checkout<'a>(
        &'a self,
        workspace: &'a Path,
        events: &'a mpsc::Sender<ExecEvent>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // Artifacts of needed jobs first: they may be what the cache key hashes.
            let needed = self.transfer.needed_artifacts().await?;
            for a in &needed {
                let rel = check_path(&a.path).map_err(|e| e.message)?;
                self.transfer
                    .download_artifact(a, &workspace.join(&rel))
                    .await
                    .map_err(|e| format!("downloading artifact {rel} of job {}: {e}", a.job))?;
            }
            if !needed.is_empty() {
                let bytes: i64 = needed.iter().map(|a| a.size).sum();
                log(
                    events,
                    format!(
                        "artifacts: {} file(s) from needed jobs ({})",
                        needed.len(),
                        mb(bytes)
                    ),
                )
                .await;
            }
            let Some(c) = &self.cache else {
                return Ok(());
            };
            let key = match self.render(workspace, &c.key) {
                Ok(k) => k,
                Err(e) => {
                    log(events, format!("cache: not used: {e}")).await;
                    return Ok(());
                }
            };
            let mut restore = Vec::new();
            for r in &c.restore_keys {
                match self.render(workspace, r) {
                    Ok(k) => restore.push(k),
                    Err(e) => log(events, format!("cache: restore key skipped: {e}")).await,
                }
            }
            let tmp = tempfile::NamedTempFile::new().map_err(msg)?;
            match self
                .transfer
                .restore_cache(&key, &restore, tmp.path())
                .await
            {
                Ok(Some(found)) => {
                    let ws = workspace.to_path_buf();
                    let path = tmp.path().to_path_buf();
                    let res = tokio::task::spawn_blocking(move || {
                        let mut f = std::fs::File::open(path)?;
                        cache::extract_archive(&mut f, &ws)
                    })
                    .await
                    .map_err(msg)?;
                    match res {
                        Ok(n) => {
                            let how = if found.exact { "" } else { " (restore key)" };
                            log(
                                events,
                                format!(
                                    "cache hit: key {}{how} (restored {}, {n} files)",
                                    found.key,
                                    mb(found.size)
                                ),
                            )
                            .await;
                        }
                        Err(e) => log(events, format!("cache: restore failed: {e}")).await,
                    }
                    *self.rendered.lock().expect("lock") = Some((key, found.exact));
                }
                Ok(None) => {
                    log(events, format!("cache miss: key {key}")).await;
                    *self.rendered.lock().expect("lock") = Some((key, false));
                }
                Err(e) => {
                    log(events, format!("cache: lookup failed: {e}")).await;
                }
            }
            Ok(())
        })
    }

    fn after_steps<'a>(
        &'a self,
        workspace: &'a Path,
        success: bool,
        events: &'a mpsc::Sender<ExecEvent>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // Test and coverage reports are kept whether the steps passed or not: a failing test
            // run is when they matter most.
            if let Some(r) = self.artifacts.as_ref().and_then(|a| a.reports.as_ref()) {
                self.upload_reports(workspace, r, events).await;
            }
            if !success {
                return Ok(());
            }
            let mut err = None;
            if let Some(a) = &self.artifacts
                && !a.paths.is_empty()
            {
                match collect(workspace, &a.paths, self.limits) {
                    Err(e) => err = Some(e),
                    Ok(files) => {
                        let mut bytes = 0;
                        for f in &files {
                            if let Err(e) = self
                                .transfer
                                .upload_artifact(&f.path, &f.abs, a.expire_in.as_deref())
                                .await
                            {
                                err = Some(format!("uploading artifact {}: {e}", f.path));
                                break;
                            }
                            bytes += f.size;
                        }
                        if err.is_none() {
                            log(
                                events,
                                format!(
                                    "artifacts: uploaded {} file(s) ({})",
                                    files.len(),
                                    mb(bytes as i64)
                                ),
                            )
                            .await;
                        }
                    }
                }
            }
            let pending = self.rendered.lock().expect("lock").clone();
            if let (Some(c), Some((key, false))) = (&self.cache, pending) {
                let tmp = tempfile::NamedTempFile::new().map_err(msg)?;
                let ws = workspace.to_path_buf();
                let paths = c.paths.clone();
                let dst = tmp.path().to_path_buf();
                let n = tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::File::create(dst).map_err(msg)?;
                    cache::write_archive(&ws, &paths, &mut f)
                })
                .await
                .map_err(msg)?;
                match n {
                    Err(e) => log(events, format!("cache: not saved: {e}")).await,
                    Ok(n) => match self.transfer.save_cache(&key, tmp.path()).await {
                        Ok(true) => {
                            let size = std::fs::metadata(tmp.path()).map(|m| m.len()).unwrap_or(0);
                            log(
                                events,
                                format!("cache saved: key {key} ({n} files, {})", mb(size as i64)),
                            )
                            .await
                        }
                        Ok(false) => log(events, format!("cache: key {key} exists already")).await,
                        Err(e) => log(events, format!("cache: not saved: {e}")).await,
                    },
                }
            }
            match err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }
}
