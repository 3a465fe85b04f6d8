//! A content-addressed blob store for artifacts and caches: blobs are named by the sha256 of
//! their bytes, so identical content is stored once.
//!
//! [`BlobStore`] is the interface (blocking: call it from `spawn_blocking`); [`FsBlobStore`] keeps
//! blobs in the data dir as `blobs/sha256/ab/<hex>`. A put streams the bytes into a temporary file
//! next to the blobs while hashing, fsyncs it, and renames it into place (an existing blob is kept
//! and the copy dropped). A full disk (`ENOSPC`, `EDQUOT`) or going over the configured capacity is
//! [`BlobError::Full`], which maps to `build.storage_full` (HTTP 507): the temporary file is
//! removed and nothing that was stored before is touched.
//!
//! Another backend (S3-compatible object storage through the `object_store` crate) implements the
//! same trait; see ARCHITECTURE.md.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ouro_core::{ErrorCode, OuroError};
use ouro_store::{Executor, StoreError, q};
use sha2::{Digest, Sha256};

/// A stored blob: its sha256 (lowercase hex) and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The disk is full or the configured capacity would be exceeded.
    #[error("the artifact store is full: {0}")]
    Full(String),
    /// A digest that is not 64 lowercase hex digits.
    #[error("invalid blob digest {0:?}")]
    BadDigest(String),
    /// The source of a put failed (a client hung up, ...), or more than the allowed bytes came.
    #[error("reading the upload failed: {0}")]
    Source(io::Error),
    /// The upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    #[error("blob store I/O: {0}")]
    Io(#[from] io::Error),
}

impl From<BlobError> for OuroError {
    fn from(e: BlobError) -> OuroError {
        match e {
            BlobError::Full(m) => OuroError::new(
                ErrorCode::StorageFull,
                format!("the artifact store is full ({m}); nothing was stored"),
            ),
            BlobError::BadDigest(d) => OuroError::field("sha256", format!("invalid digest {d:?}")),
            BlobError::Source(e) => {
                OuroError::new(ErrorCode::InvalidBody, format!("the upload failed: {e}"))
            }
            BlobError::TooLarge(m) => OuroError::new(ErrorCode::ArtifactTooLarge, m),
            BlobError::Io(e) => {
                tracing::error!(error = %e, "blob store I/O error");
                OuroError::internal()
            }
        }
    }
}

/// Whether an I/O error means "no space left" (disk full or quota exceeded).
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Pins a blob for `owner`/`owner_id` (`build_blob_pins`): [`crate::artifacts::gc`] never deletes
/// a pinned blob, even when no artifact or cache references it any more. Pinning twice is a no-op.
pub async fn pin(
    ex: &mut impl Executor,
    owner: &str,
    owner_id: i64,
    sha256: &str,
) -> Result<(), StoreError> {
    q(
        "INSERT INTO build_blob_pins (owner, owner_id, sha256) VALUES ($1, $2, $3) \
       ON CONFLICT (owner, owner_id, sha256) DO NOTHING",
    )
    .bind(owner)
    .bind(owner_id)
    .bind(sha256)
    .execute(ex)
    .await?;
    Ok(())
}

/// Removes every pin of `owner`/`owner_id`; returns how many there were.
pub async fn unpin_all(
    ex: &mut impl Executor,
    owner: &str,
    owner_id: i64,
) -> Result<u64, StoreError> {
    q("DELETE FROM build_blob_pins WHERE owner = $1 AND owner_id = $2")
        .bind(owner)
        .bind(owner_id)
        .execute(ex)
        .await
}

/// Checks a digest: 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Content-addressed storage. Blocking; implementations are shared between threads.
pub trait BlobStore: Send + Sync {
    /// Stores everything `src` yields (at most `max` bytes, else [`BlobError::TooLarge`]).
    fn put(&self, src: &mut dyn Read, max: Option<u64>) -> Result<BlobRef, BlobError>;
    /// The blob's bytes, or `None` when it does not exist.
    fn open(&self, sha256: &str) -> Result<Option<Box<dyn Read + Send>>, BlobError>;
    fn exists(&self, sha256: &str) -> Result<bool, BlobError>;
    /// Removes a blob (no error when it is already gone).
    fn delete(&self, sha256: &str) -> Result<(), BlobError>;
    /// Every blob with its size and age in milliseconds since the epoch (modification time).
    fn list(&self) -> Result<Vec<(BlobRef, i64)>, BlobError>;
    /// Bytes stored.
    fn usage(&self) -> Result<u64, BlobError> {
        Ok(self.list()?.iter().map(|(b, _)| b.size).sum())
    }
}

/// Copies `src` into `dst` while hashing; at most `max` bytes. Write errors that mean "no space"
/// become [`BlobError::Full`]; `budget` is the capacity left (bytes), if any.
pub fn copy_hashing(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    max: Option<u64>,
    budget: Option<u64>,
) -> Result<BlobRef, BlobError> {
    let (blob, over) = copy_inner(src, dst, max, budget)?;
    if over {
        return Err(over_budget(budget));
    }
    Ok(blob)
}

fn over_budget(budget: Option<u64>) -> BlobError {
    BlobError::Full(format!(
        "the configured capacity would be exceeded ({} bytes left)",
        budget.unwrap_or(0)
    ))
}

/// Like [`copy_hashing`], but going over `budget` stops the writing only: the rest is still
/// hashed, so content that is already stored can be recognised. Returns whether it went over.
fn copy_inner(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    max: Option<u64>,
    budget: Option<u64>,
) -> Result<(BlobRef, bool), BlobError> {
    let mut over = false;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BlobError::Source(e)),
        };
        size += n as u64;
        if let Some(m) = max
            && size > m
        {
            return Err(BlobError::TooLarge(format!(
                "the upload is larger than the limit of {m} bytes"
            )));
        }
        if let Some(b) = budget
            && size > b
        {
            over = true;
        }
        h.update(&buf[..n]);
        if !over {
            dst.write_all(&buf[..n]).map_err(write_err)?;
        }
    }
    dst.flush().map_err(write_err)?;
    Ok((
        BlobRef {
            sha256: hex::encode(h.finalize()),
            size,
        },
        over,
    ))
}

fn write_err(e: io::Error) -> BlobError {
    if is_no_space(&e) {
        BlobError::Full(e.to_string())
    } else {
        BlobError::Io(e)
    }
}

/// A writer that fails with `ENOSPC` after `limit` bytes: tests use it to play a full disk.
pub struct FaultyWriter<W> {
    pub inner: W,
    pub limit: u64,
    pub written: u64,
}

impl<W: Write> Write for FaultyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.written += buf.len() as u64;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Blobs in a directory: `<root>/sha256/ab/<hex>`, temporary files in `<root>/tmp`.
pub struct FsBlobStore {
    root: PathBuf,
    /// At most this many bytes stored (`None`: until the disk is full).
    capacity: Option<u64>,
    /// Tests: fail writes with `ENOSPC` after this many bytes of one put.
    fault_after: AtomicU64,
}

impl FsBlobStore {
    /// The store under `data_dir/blobs`.
    pub fn in_data_dir(data_dir: &Path, capacity: Option<u64>) -> FsBlobStore {
        FsBlobStore::new(data_dir.join("blobs"), capacity)
    }

    pub fn new(root: PathBuf, capacity: Option<u64>) -> FsBlobStore {
        FsBlobStore {
            root,
            capacity,
            fault_after: AtomicU64::new(u64::MAX),
        }
    }

    /// Makes every later put fail with `ENOSPC` after `bytes` bytes (fault injection for tests).
    pub fn inject_enospc_after(&self, bytes: u64) {
        self.fault_after.store(bytes, Ordering::SeqCst);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (the digest must be valid).
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }

    fn check(sha256: &str) -> Result<(), BlobError> {
        if valid_digest(sha256) {
            Ok(())
        } else {
            Err(BlobError::BadDigest(sha256.into()))
        }
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, src: &mut dyn Read, max: Option<u64>) -> Result<BlobRef, BlobError> {
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(write_err)?;
        let budget = match self.capacity {
            Some(c) => Some(c.saturating_sub(self.usage()?)),
            None => None,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(write_err)?;
        let fault = self.fault_after.load(Ordering::SeqCst);
        let blob = {
            let file = tmp.as_file_mut();
            if fault == u64::MAX {
                let mut w = io::BufWriter::with_capacity(64 * 1024, file);
                copy_inner(src, &mut w, max, budget)?
            } else {
                let mut w = FaultyWriter {
                    inner: file,
                    limit: fault,
                    written: 0,
                };
                copy_inner(src, &mut w, max, budget)?
            }
        };
        let (blob, over) = blob;
        // An error drops `tmp`, which removes the temporary file.
        let dst = self.path_of(&blob.sha256);
        if dst.exists() {
            return Ok(blob);
        }
        if over {
            return Err(over_budget(budget));
        }
        tmp.as_file().sync_all().map_err(write_err)?;
        let dir = dst.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(write_err)?;
        tmp.persist(&dst).map_err(|e| write_err(e.error))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(blob)
    }

    fn open(&self, sha256: &str) -> Result<Option<Box<dyn Read + Send>>, BlobError> {
        Self::check(sha256)?;
        match File::open(self.path_of(sha256)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn exists(&self, sha256: &str) -> Result<bool, BlobError> {
        Self::check(sha256)?;
        Ok(self.path_of(sha256).is_file())
    }

    fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        Self::check(sha256)?;
        match fs::remove_file(self.path_of(sha256)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> Result<Vec<(BlobRef, i64)>, BlobError> {
        let mut out = Vec::new();
        let top = self.root.join("sha256");
        let dirs = match fs::read_dir(&top) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for d in dirs {
            let d = d?;
            if !d.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(d.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if !valid_digest(&name) {
                    continue;
                }
                let meta = f.metadata()?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                out.push((
                    BlobRef {
                        sha256: name,
                        size: meta.len(),
                    },
                    mtime,
                ));
            }
        }
        out.sort_by(|a, b| a.0.sha256.cmp(&b.0.sha256));
        Ok(out)
    }
}
