//! Attachments: files on work items. The bytes live in the data directory, content-addressed by
//! their SHA-256 (`attachments/<sha256>`), written to a temporary file, synced and renamed into
//! place so a crash never leaves a half-written blob under a real name. The table
//! `plan_attachments` keeps the metadata; every upload or removal appends `item.attached` in the
//! same transaction (a removal carries `"removed": true`).
//!
//! Blobs are never served inline as HTML: a download is `application/octet-stream` unless its
//! stored type is on a short image allow-list ([`safe_content_type`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::items::{self, Item};

/// The longest stored file name, in characters.
pub const MAX_FILENAME: usize = 200;
/// The longest stored content type.
pub const MAX_CONTENT_TYPE: usize = 100;
/// Types a download may keep; everything else is sent as `application/octet-stream`.
pub const INLINE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// A file attached to an item.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Attachment {
    pub id: i64,
    pub filename: String,
    /// The type given at upload (sanitised); downloads use [`safe_content_type`].
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    /// The uploader's name; `None` once the account is deleted.
    pub uploader: Option<String>,
    #[serde(skip)]
    pub uploader_id: Option<i64>,
    pub created_at: i64,
}

/// The directory blobs are stored in, under the data dir.
pub fn blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("attachments")
}

/// Where the blob with this digest lives. `sha256` must be 64 lowercase hex characters (it
/// always is when it comes from the table).
pub fn blob_path(data_dir: &Path, sha256: &str) -> PathBuf {
    blob_dir(data_dir).join(sha256)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `bytes` content-addressed under `data_dir` and returns their SHA-256. A blob that is
/// already there is kept as it is. Blocking: call it off the async runtime.
pub fn write_blob(data_dir: &Path, bytes: &[u8]) -> std::io::Result<String> {
    let sha = hex(&Sha256::digest(bytes));
    let dir = blob_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join(&sha);
    if dest.exists() {
        // Freshen it: [`collect_garbage`] spares young blobs, and this one is about to get a
        // row again even if the last row that used it is gone.
        std::fs::File::options()
            .write(true)
            .open(&dest)?
            .set_modified(std::time::SystemTime::now())?;
        return Ok(sha);
    }
    let tmp = dir.join(format!(
        ".tmp-{sha}-{}-{}",
        std::process::id(),
        ouro_core::time::now_ms()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &dest)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|_| sha)
}

/// A file name safe to store and to put in a header: the last path component, without control
/// characters, quotes or path separators, trimmed, at most [`MAX_FILENAME`] characters (the
/// extension is kept when the name is cut). Empty names become `file`.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\u{2028}' | '\u{2029}'))
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        return "file".into();
    }
    if trimmed.chars().count() <= MAX_FILENAME {
        return trimmed.to_string();
    }
    let (stem, ext) = match trimmed.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() && e.chars().count() <= 16 => (s, format!(".{e}")),
        _ => (trimmed, String::new()),
    };
    let keep = MAX_FILENAME - ext.chars().count();
    format!("{}{ext}", stem.chars().take(keep).collect::<String>())
}

/// The content type to store: `type/subtype` in lowercase without parameters, or
/// `application/octet-stream` when it does not look like one.
pub fn sanitize_content_type(raw: Option<&str>) -> String {
    let t = raw
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = t.len() <= MAX_CONTENT_TYPE
        && t.split_once('/').is_some_and(|(a, b)| {
            let tok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
            };
            tok(a) && tok(b)
        });
    if ok {
        t
    } else {
        "application/octet-stream".into()
    }
}

/// The `Content-Type` a download is served with: the stored type when it is an allow-listed
/// image, otherwise `application/octet-stream` (never HTML or SVG).
pub fn safe_content_type(stored: &str) -> &'static str {
    INLINE_TYPES
        .iter()
        .find(|t| **t == stored)
        .copied()
        .unwrap_or("application/octet-stream")
}

/// The error for an upload over `max` bytes.
pub fn too_large(max: usize) -> OuroError {
    OuroError::new(
        ErrorCode::AttachmentTooLarge,
        format!("the file is larger than the {max} bytes this instance accepts for attachments"),
    )
    .with_details(json!({"max_bytes": max}))
}

fn not_found(key: &str, id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::AttachmentNotFound,
        format!("attachment {id} does not exist on {key}"),
    )
}

async fn item_or_404(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
) -> Result<Item, StoreError> {
    Ok(items::get(ex, project_id, key)
        .await?
        .ok_or_else(|| items::not_found(key))?)
}

const SELECT: &str = "SELECT a.id, a.filename, a.content_type, a.size, a.sha256, a.uploader_id, \
    a.created_at, u.name AS uploader FROM plan_attachments a LEFT JOIN users u ON u.id = a.uploader_id";

fn from_row(r: &Row) -> Result<Attachment, StoreError> {
    Ok(Attachment {
        id: r.i64("id")?,
        filename: r.text("filename")?,
        content_type: r.text("content_type")?,
        size: r.i64("size")?,
        sha256: r.text("sha256")?,
        uploader: r.opt_text("uploader")?,
        uploader_id: r.opt_i64("uploader_id")?,
        created_at: r.i64("created_at")?,
    })
}

/// Records an attachment whose bytes are already stored (see [`write_blob`]).
#[allow(clippy::too_many_arguments)]
pub async fn add(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    filename: &str,
    content_type: &str,
    size: i64,
    sha256: &str,
) -> Result<Attachment, StoreError> {
    let filename = sanitize_filename(filename);
    let content_type = sanitize_content_type(Some(content_type));
    let mut tx = store.begin().await?;
    let item = item_or_404(&mut tx, project.id, key).await?;
    let now = ouro_core::time::now_ms();
    let row = q("INSERT INTO plan_attachments \
        (item_id, filename, content_type, size, sha256, uploader_id, created_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
    .bind(item.id)
    .bind(filename.as_str())
    .bind(content_type.as_str())
    .bind(size)
    .bind(sha256)
    .bind(actor.user_id())
    .bind(now)
    .fetch_one(&mut tx)
    .await?;
    let id = row.i64("id")?;
    tx.append(
        NewEvent::new(
            ev::ITEM_ATTACHED,
            actor,
            item.id,
            json!({"key": item.key, "attachment": id, "filename": filename, "size": size, "sha256": sha256}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    let uploader = match actor {
        Actor::User { name, .. } => Some(name.clone()),
        _ => None,
    };
    Ok(Attachment {
        id,
        filename,
        content_type,
        size,
        sha256: sha256.into(),
        uploader,
        uploader_id: actor.user_id(),
        created_at: now,
    })
}

/// The attachments of item `item_id`, oldest first.
pub async fn list(ex: &mut impl Executor, item_id: i64) -> Result<Vec<Attachment>, StoreError> {
    let rows = q(format!("{SELECT} WHERE a.item_id = $1 ORDER BY a.id"))
        .bind(item_id)
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Attachment `id` of item `key` in the project; 404 when either does not exist.
pub async fn get(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
    id: i64,
) -> Result<Attachment, StoreError> {
    let item = item_or_404(ex, project_id, key).await?;
    let row = q(format!("{SELECT} WHERE a.id = $1 AND a.item_id = $2"))
        .bind(id)
        .bind(item.id)
        .fetch_optional(ex)
        .await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(not_found(&item.key, id).into()),
    }
}

/// Removes attachment `id` from item `key`. Its uploader may, and so may a maintainer
/// (`may_manage`); anyone else gets 403. The blob stays in the data dir until
/// [`collect_garbage`] finds no attachment using it (another one may share it).
pub async fn remove(
    store: &Store,
    project: &Project,
    actor: &Actor,
    may_manage: bool,
    key: &str,
    id: i64,
) -> Result<Attachment, StoreError> {
    let mut tx = store.begin().await?;
    let item = item_or_404(&mut tx, project.id, key).await?;
    let row = q(format!("{SELECT} WHERE a.id = $1 AND a.item_id = $2"))
        .bind(id)
        .bind(item.id)
        .fetch_optional(&mut tx)
        .await?;
    let a = match row {
        Some(r) => from_row(&r)?,
        None => return Err(not_found(&item.key, id).into()),
    };
    let own = a.uploader_id.is_some() && a.uploader_id == actor.user_id();
    if !own && !may_manage {
        return Err(OuroError::new(
            ErrorCode::Forbidden,
            "only the uploader or a maintainer may remove this attachment",
        )
        .into());
    }
    q("DELETE FROM plan_attachments WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::ITEM_ATTACHED,
            actor,
            item.id,
            json!({"key": item.key, "attachment": id, "filename": a.filename, "removed": true}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(a)
}

/// What a [`collect_garbage`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs (and stale temporary files) deleted.
    pub deleted: usize,
    pub bytes: u64,
    /// Blobs still referenced by an attachment, or too young to judge.
    pub kept: usize,
}

/// Deletes blobs that no attachment refers to any more (removed attachments, deleted items and
/// projects) and temporary files a crash left behind. Only files older than `min_age` go: an
/// upload writes (or freshens) its blob before the row that refers to it commits, so a young
/// unreferenced blob may be about to be used.
pub async fn collect_garbage(
    store: &Store,
    data_dir: &Path,
    min_age: std::time::Duration,
) -> Result<GcReport, StoreError> {
    let dir = blob_dir(data_dir);
    if !dir.is_dir() {
        return Ok(GcReport::default());
    }
    let rows = q("SELECT DISTINCT sha256 FROM plan_attachments")
        .fetch_all(&mut store.read().await?)
        .await?;
    let used: std::collections::HashSet<String> = rows
        .iter()
        .map(|r| r.text("sha256"))
        .collect::<Result<_, _>>()?;
    let dir2 = dir.clone();
    let sweep = move || -> std::io::Result<GcReport> {
        let mut report = GcReport::default();
        let now = std::time::SystemTime::now();
        for entry in std::fs::read_dir(&dir2)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age);
            let orphan = name.starts_with(".tmp-") || !used.contains(&name);
            if orphan && old {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        report.deleted += 1;
                        report.bytes += meta.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            } else {
                report.kept += 1;
            }
        }
        Ok(report)
    };
    let failed = |e: String| -> StoreError {
        OuroError::new(
            ErrorCode::Internal,
            format!("cannot sweep attachments in {}: {e}", dir.display()),
        )
        .into()
    };
    tokio::task::spawn_blocking(sweep)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_sanitised() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_filename("a\r\nb\"c.txt"), "abc.txt");
        assert_eq!(sanitize_filename("  "), "file");
        assert_eq!(sanitize_filename("..."), "file");
        assert_eq!(sanitize_filename(".htaccess"), "htaccess");
        let long = format!("{}.png", "x".repeat(500));
        let s = sanitize_filename(&long);
        assert_eq!(s.chars().count(), MAX_FILENAME);
        assert!(s.ends_with(".png"));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            sanitize_content_type(Some("Image/PNG; charset=x")),
            "image/png"
        );
        assert_eq!(
            sanitize_content_type(Some("text/html\r\nX: y")),
            "application/octet-stream"
        );
        assert_eq!(sanitize_content_type(None), "application/octet-stream");
        assert_eq!(safe_content_type("image/png"), "image/png");
        assert_eq!(safe_content_type("text/html"), "application/octet-stream");
        assert_eq!(
            safe_content_type("image/svg+xml"),
            "application/octet-stream"
        );
    }

    #[test]
    fn blobs_are_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_blob(dir.path(), b"hello").unwrap();
        let b = write_blob(dir.path(), b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(std::fs::read(blob_path(dir.path(), &a)).unwrap(), b"hello");
        let names: Vec<_> = std::fs::read_dir(blob_dir(dir.path())).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary files are left behind");
    }
}
