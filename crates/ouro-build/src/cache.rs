//! Caches: one archive per project and key (`build_caches`), kept in the blob store.
//!
//! - A job's `cache: {key, paths, restore-keys}` is restored after the checkout: the exact `key`
//!   first, then each `restore-keys` entry as a prefix (the newest matching entry). A hit is
//!   written to the job log. The key is rendered after the checkout, so `hashFiles()` sees the
//!   workspace (see [`crate::artifacts::JobFiles`]).
//! - It is saved only when the job succeeded and the key does not exist yet (keys are immutable).
//! - Each project has a quota; saving evicts the least recently used entries beyond it. Blobs no
//!   longer referenced are removed by the garbage collector ([`crate::artifacts::gc`]).
//! - The archive is Ouro's own small format, zstd-compressed ([`write_archive`], [`extract_archive`]):
//!   regular files with their permission bits, directories, and symlinks whose target stays inside
//!   the tree. Extraction refuses absolute paths, `..`, and writing through symlinks.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::blobs::BlobRef;

const ACTOR: Actor = Actor::System("pipelines");
const MAGIC: &[u8] = b"OURO-CACHE1\n";

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CacheEntry {
    pub id: i64,
    pub project_id: i64,
    pub key: String,
    pub sha256: String,
    pub size: i64,
    #[serde(serialize_with = "ouro_core::time::serde_ms::serialize")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(serialize_with = "ouro_core::time::serde_ms::serialize")]
    #[schemars(with = "String")]
    pub last_used_at: i64,
}

fn entry_from(r: &Row) -> Result<CacheEntry, StoreError> {
    Ok(CacheEntry {
        id: r.i64("id")?,
        project_id: r.i64("project_id")?,
        key: r.text("cache_key")?,
        sha256: r.text("sha256")?,
        size: r.i64("size")?,
        created_at: r.i64("created_at")?,
        last_used_at: r.i64("last_used_at")?,
    })
}

/// Checks a cache key: 1 to 512 characters, no control characters.
pub fn check_key(key: &str) -> Result<(), OuroError> {
    if key.is_empty() || key.len() > 512 || key.chars().any(char::is_control) {
        return Err(OuroError::field(
            "key",
            "a cache key is 1 to 512 characters without control characters",
        ));
    }
    Ok(())
}

/// A hit: the entry, and whether it matched the key exactly (not through a restore key).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CacheHit {
    pub entry: CacheEntry,
    pub exact: bool,
}

/// Finds the cache for `key`, else the newest entry whose key starts with one of `restore_keys`
/// (tried in order), and marks it used (for LRU).
pub async fn lookup(
    store: &Store,
    project_id: i64,
    key: &str,
    restore_keys: &[String],
) -> Result<Option<CacheHit>, StoreError> {
    let all =
        q("SELECT * FROM build_caches WHERE project_id = $1 ORDER BY created_at DESC, id DESC")
            .bind(project_id)
            .fetch_all(&mut store.read().await?)
            .await?
            .iter()
            .map(entry_from)
            .collect::<Result<Vec<_>, _>>()?;
    let hit = match all.iter().find(|e| e.key == key) {
        Some(e) => Some(CacheHit {
            entry: e.clone(),
            exact: true,
        }),
        None => restore_keys
            .iter()
            .filter(|p| !p.is_empty())
            .find_map(|p| all.iter().find(|e| e.key.starts_with(p.as_str())))
            .map(|e| CacheHit {
                entry: e.clone(),
                exact: false,
            }),
    };
    if let Some(h) = &hit {
        let mut tx = store.begin().await?;
        q("UPDATE build_caches SET last_used_at = $1 WHERE id = $2")
            .bind(ouro_core::time::now_ms().max(h.entry.last_used_at + 1))
            .bind(h.entry.id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
    }
    Ok(hit)
}

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Saved {
    /// `false` when the key already existed (nothing changed).
    pub saved: bool,
    /// Keys evicted to stay within the quota.
    pub evicted: Vec<String>,
}

/// Records the archive `blob` as the cache `key` of the project unless the key exists, then
/// evicts least-recently-used entries until the project is within `quota` bytes. An archive
/// larger than the quota itself: `build.artifact_too_large`.
pub async fn save(
    store: &Store,
    project_id: i64,
    key: &str,
    blob: &BlobRef,
    quota: u64,
) -> Result<Saved, StoreError> {
    check_key(key)?;
    if blob.size > quota {
        return Err(OuroError::new(
            ErrorCode::ArtifactTooLarge,
            format!(
                "the cache archive ({} bytes) is larger than the project's cache quota ({quota} bytes)",
                blob.size
            ),
        )
        .into());
    }
    let mut tx = store.begin().await?;
    let exists = q("SELECT id FROM build_caches WHERE project_id = $1 AND cache_key = $2")
        .bind(project_id)
        .bind(key)
        .fetch_optional(&mut tx)
        .await?
        .is_some();
    if exists {
        return Ok(Saved {
            saved: false,
            evicted: vec![],
        });
    }
    let now = ouro_core::time::now_ms();
    let last_used = q("SELECT MAX(last_used_at) AS m FROM build_caches WHERE project_id = $1")
        .bind(project_id)
        .fetch_one(&mut tx)
        .await?
        .opt_i64("m")?
        .unwrap_or(0);
    q(
        "INSERT INTO build_caches (project_id, cache_key, sha256, size, created_at, last_used_at) \
       VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(project_id)
    .bind(key)
    .bind(blob.sha256.as_str())
    .bind(blob.size as i64)
    .bind(now)
    .bind(now.max(last_used + 1))
    .execute(&mut tx)
    .await?;
    let all =
        q("SELECT * FROM build_caches WHERE project_id = $1 ORDER BY last_used_at DESC, id DESC")
            .bind(project_id)
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(entry_from)
            .collect::<Result<Vec<_>, _>>()?;
    let mut used: u64 = 0;
    let mut evicted = Vec::new();
    for e in &all {
        used += e.size as u64;
        if used > quota && e.key != key {
            q("DELETE FROM build_caches WHERE id = $1")
                .bind(e.id)
                .execute(&mut tx)
                .await?;
            used -= e.size as u64;
            evicted.push(e.key.clone());
        }
    }
    let slug = q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut tx)
        .await?
        .text("slug")?;
    tx.append(
        NewEvent::new(
            ev::CACHE_SAVED,
            &ACTOR,
            project_id,
            json!({"key": key, "sha256": blob.sha256, "size": blob.size, "evicted": evicted}),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    tx.commit().await?;
    Ok(Saved {
        saved: true,
        evicted,
    })
}

/// The project's caches, most recently used first.
pub async fn list(ex: &mut impl Executor, project_id: i64) -> Result<Vec<CacheEntry>, StoreError> {
    q("SELECT * FROM build_caches WHERE project_id = $1 ORDER BY last_used_at DESC, id DESC")
        .bind(project_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(entry_from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The archive

/// A relative path made of normal components only (`a/b`), as a string with `/`.
pub fn clean_relative(p: &str) -> Option<String> {
    let path = Path::new(p);
    if p.is_empty() || p.contains('\0') || path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

/// Whether `target` of a symlink at `link` (both relative to the tree root) stays inside it.
fn link_inside(link: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}

enum Entry {
    Dir(u32),
    File(u32, PathBuf),
    Link(PathBuf),
}

fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) -> io::Result<()> {
    let abs = root.join(rel);
    let meta = fs::symlink_metadata(&abs)?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&abs)?;
        if link_inside(rel, &target) {
            out.insert(rel.to_string(), Entry::Link(target));
        }
    } else if meta.is_dir() {
        out.insert(rel.to_string(), Entry::Dir(mode));
        let mut names: Vec<_> = fs::read_dir(&abs)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect();
        names.sort();
        for n in names {
            walk(root, &format!("{rel}/{n}"), out)?;
        }
    } else if meta.is_file() {
        out.insert(rel.to_string(), Entry::File(mode, abs));
    }
    Ok(())
}

/// Writes the files matching `paths` (globs relative to `root`) into a compressed archive.
/// Returns the number of files.
pub fn write_archive(root: &Path, paths: &[String], dst: &mut dyn Write) -> Result<usize, String> {
    let root = root.canonicalize().map_err(|e| format!("workspace: {e}"))?;
    let mut entries = BTreeMap::new();
    for p in paths {
        let Some(clean) = clean_relative(p) else {
            return Err(format!(
                "cache path {p:?} must be relative to the workspace, without `..`"
            ));
        };
        let pattern = format!("{}/{clean}", glob::Pattern::escape(&root.to_string_lossy()));
        let matches = glob::glob(&pattern).map_err(|e| format!("cache path {p:?}: {e}"))?;
        for m in matches.filter_map(Result::ok) {
            let Ok(rel) = m.strip_prefix(&root) else {
                continue;
            };
            let Some(rel) = rel.to_str().and_then(clean_relative) else {
                continue;
            };
            // Parents that are symlinks would lead outside: only real directories.
            let mut ok = true;
            let mut prefix = root.clone();
            for part in rel
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map(|x| x.1)
                .unwrap_or(&[])
            {
                prefix.push(part);
                if fs::symlink_metadata(&prefix)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(true)
                {
                    ok = false;
                }
            }
            if ok {
                walk(&root, &rel, &mut entries).map_err(|e| format!("{rel}: {e}"))?;
            }
        }
    }
    let mut z = zstd::Encoder::new(dst, 3).map_err(|e| e.to_string())?;
    let io = |e: io::Error| e.to_string();
    z.write_all(MAGIC).map_err(io)?;
    let mut files = 0;
    for (rel, e) in &entries {
        let (kind, mode) = match e {
            Entry::Dir(m) => (b'd', *m),
            Entry::File(m, _) => (b'f', *m),
            Entry::Link(_) => (b'l', 0o777),
        };
        z.write_all(&[kind]).map_err(io)?;
        z.write_all(&mode.to_be_bytes()).map_err(io)?;
        z.write_all(&(rel.len() as u32).to_be_bytes()).map_err(io)?;
        z.write_all(rel.as_bytes()).map_err(io)?;
        match e {
            Entry::Dir(_) => {}
            Entry::Link(t) => {
                let t = t.to_string_lossy();
                z.write_all(&(t.len() as u32).to_be_bytes()).map_err(io)?;
                z.write_all(t.as_bytes()).map_err(io)?;
            }
            Entry::File(_, abs) => {
                let mut f = fs::File::open(abs).map_err(|e| format!("{rel}: {e}"))?;
                let len = f.metadata().map_err(io)?.len();
                z.write_all(&len.to_be_bytes()).map_err(io)?;
                let n = io::copy(&mut (&mut f).take(len), &mut z).map_err(io)?;
                if n != len {
                    return Err(format!("{rel} changed while it was archived"));
                }
                files += 1;
            }
        }
    }
    z.write_all(b"e").map_err(io)?;
    z.finish().map_err(io)?;
    Ok(files)
}

fn read_u32(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_str(r: &mut dyn Read, max: u32) -> io::Result<String> {
    let n = read_u32(r)?;
    if n > max {
        return Err(io::Error::other("a name in the archive is too long"));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|_| io::Error::other("a name in the archive is not UTF-8"))
}

/// Checks that no existing ancestor of `rel` under `root` is a symlink (or a non-directory).
fn safe_parent(root: &Path, rel: &str) -> io::Result<()> {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{rel}: a parent in the workspace is not a directory"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&p)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Unpacks an archive made by [`write_archive`] into `root` (existing files are replaced).
/// Returns the number of files.
pub fn extract_archive(src: &mut dyn Read, root: &Path) -> io::Result<usize> {
    let mut z = zstd::Decoder::new(src)?;
    let mut magic = [0u8; MAGIC.len()];
    z.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(io::Error::other("not an Ouro cache archive"));
    }
    let mut files = 0;
    loop {
        let mut kind = [0u8; 1];
        z.read_exact(&mut kind)?;
        if kind[0] == b'e' {
            break;
        }
        let mode = read_u32(&mut z)? & 0o7777;
        let rel = read_str(&mut z, 4096)?;
        let Some(rel) = clean_relative(&rel) else {
            return Err(io::Error::other(format!(
                "unsafe path {rel:?} in the archive"
            )));
        };
        safe_parent(root, &rel)?;
        let abs = root.join(&rel);
        let existing = fs::symlink_metadata(&abs).ok();
        match kind[0] {
            b'd' => {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) => {
                        fs::remove_file(&abs)?;
                        fs::create_dir(&abs)?;
                    }
                    None => fs::create_dir(&abs)?,
                }
                fs::set_permissions(&abs, fs::Permissions::from_mode(mode | 0o700))?;
            }
            b'l' => {
                let target = read_str(&mut z, 4096)?;
                if !link_inside(&rel, Path::new(&target)) {
                    return Err(io::Error::other(format!(
                        "symlink {rel} in the archive points outside the workspace"
                    )));
                }
                if let Some(m) = existing {
                    if m.is_dir() {
                        fs::remove_dir_all(&abs)?;
                    } else {
                        fs::remove_file(&abs)?;
                    }
                }
                std::os::unix::fs::symlink(&target, &abs)?;
            }
            b'f' => {
                let mut len = [0u8; 8];
                z.read_exact(&mut len)?;
                let len = u64::from_be_bytes(len);
                if let Some(m) = existing {
                    if m.is_dir() {
                        fs::remove_dir_all(&abs)?;
                    } else {
                        fs::remove_file(&abs)?;
                    }
                }
                let mut f = fs::File::create(&abs)?;
                let n = io::copy(&mut (&mut z).take(len), &mut f)?;
                if n != len {
                    return Err(io::Error::other("the archive is truncated"));
                }
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                files += 1;
            }
            _ => return Err(io::Error::other("a corrupt cache archive")),
        }
    }
    Ok(files)
}
