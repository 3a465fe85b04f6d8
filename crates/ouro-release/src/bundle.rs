//! Release bundles: one `{project}-{version}.tar.zst` per release with the release's artifacts and
//! a signed manifest, verifiable offline (`ouro release verify`). The format is documented in
//! docs/releases.md ("Bundles").
//!
//! The archive holds, in this order: `manifest.json` ([`Manifest`], pretty JSON), `manifest.sig`
//! (the Ed25519 signature of manifest.json's exact bytes, hex), `manifest.pub` (the signing public
//! key, hex) and `files/<path>` for each file of the manifest, sorted by path. Only regular files;
//! every header has mode 0644, uid/gid 0, no user names and the release's creation time as mtime,
//! so the same release gives the same bytes.
//!
//! [`write`] and [`verify`] stream: memory stays bounded whatever the size of the artifacts.
//! [`create_for_release`] builds a release's bundle from the blob store, stores it there, pins the
//! blobs (so artifact expiry never takes them) and appends `release.bundled`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use ed25519_dalek::{SigningKey, VerifyingKey};
use ouro_build::blobs::{self as build_blobs, BlobStore, valid_digest};
use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::signing;

/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const PUBLIC_KEY: &str = "manifest.pub";
/// The directory of the artifacts inside the archive.
pub const FILES_DIR: &str = "files/";
/// The owner name of the blob pins a release holds (`build_blob_pins.owner`).
pub const PIN_OWNER: &str = "release";
/// manifest.json is read into memory: at most this large.
const MAX_MANIFEST: u64 = 64 << 20;
const MAX_SMALL: u64 = 4096;
const ZSTD_LEVEL: i32 = 3;
const CHUNK: usize = 64 * 1024;

/// What a bundle contains: the release and each file's digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    pub format: u32,
    pub project: String,
    pub version: String,
    pub tag: String,
    pub sha: String,
    /// Milliseconds since the epoch (the release's creation).
    pub created_at: i64,
    /// Sorted by path.
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

impl Manifest {
    /// The exact bytes stored as manifest.json (and signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        b.push(b'\n');
        b
    }

    /// Checks the format, every path and digest, and that paths are unique and sorted.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not supported (this ouro reads format {FORMAT})",
                self.format
            ));
        }
        let mut prev: Option<&str> = None;
        for f in &self.files {
            check_path(&f.path).map_err(|r| format!("file path {:?}: {r}", f.path))?;
            if !valid_digest(&f.sha256) {
                return Err(format!("file {:?}: sha256 is not 64 hex digits", f.path));
            }
            if let Some(p) = prev
                && p >= f.path.as_str()
            {
                return Err(format!(
                    "files are not sorted by path or not unique ({p:?}, {:?})",
                    f.path
                ));
            }
            prev = Some(&f.path);
        }
        Ok(())
    }
}

/// Checks a path inside a bundle: relative, `/`-separated, no empty, `.` or `..` component, no
/// backslash or control character, at most 4096 bytes.
pub fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.len() > 4096 {
        return Err("path longer than 4096 bytes".into());
    }
    if p.starts_with('/') {
        return Err("absolute path".into());
    }
    if p.contains('\\') || p.chars().any(|c| c.is_control()) {
        return Err("backslash or control character in path".into());
    }
    for c in p.split('/') {
        match c {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("{c:?} path component")),
            _ => {}
        }
    }
    Ok(())
}

/// The bundle's file name: `{project}-{version}.tar.zst` (characters outside `A-Za-z0-9._+-`
/// become `_`).
pub fn file_name(project: &str, version: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}-{}.tar.zst", clean(project), clean(version))
}

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// A file's content differs from what the manifest says (or it could not be read).
    #[error("{path}: {reason}")]
    Content { path: String, reason: String },
    #[error("writing the bundle: {0}")]
    Io(#[from] io::Error),
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h
}

/// Hashes and counts what goes through; yields at most `limit` bytes.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
    limit: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.limit - self.n).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let k = self.inner.read(&mut buf[..room])?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// Writes a bundle of `manifest` to `out`, signed with `key`. `files` yields each file's path and
/// content in the manifest's order (sorted by path); each content must match the manifest's size
/// and sha256, else the bundle is abandoned with [`WriteError::Content`] (what was written to
/// `out` is then not a valid bundle).
pub fn write<R: Read>(
    out: &mut dyn Write,
    manifest: &Manifest,
    files: impl IntoIterator<Item = (String, R)>,
    key: &SigningKey,
) -> Result<(), WriteError> {
    manifest.check().map_err(WriteError::Manifest)?;
    let bytes = manifest.to_bytes();
    let sig = format!("{}\n", signing::sign_hex(key, &bytes));
    let public = format!("{}\n", signing::public_key_hex(key));
    let mtime = (manifest.created_at.max(0) / 1000) as u64;
    let enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(enc);
    for (name, data) in [
        (MANIFEST, bytes.as_slice()),
        (SIGNATURE, sig.as_bytes()),
        (PUBLIC_KEY, public.as_bytes()),
    ] {
        let mut h = header(data.len() as u64, mtime);
        tar.append_data(&mut h, name, data)?;
    }
    let mut it = files.into_iter();
    for f in &manifest.files {
        let Some((path, reader)) = it.next() else {
            return Err(WriteError::Content {
                path: f.path.clone(),
                reason: "no content was given for this file".into(),
            });
        };
        if path != f.path {
            return Err(WriteError::Content {
                path,
                reason: format!(
                    "files must come in the manifest's order (sorted by path); expected {:?}",
                    f.path
                ),
            });
        }
        let mut src = Hashing {
            inner: reader,
            hash: Sha256::new(),
            n: 0,
            limit: f.size,
        };
        let mut h = header(f.size, mtime);
        let content_err = |reason: String| WriteError::Content {
            path: f.path.clone(),
            reason,
        };
        tar.append_data(&mut h, format!("{FILES_DIR}{}", f.path), &mut src)
            .map_err(|e| content_err(format!("reading failed: {e}")))?;
        let mut one = [0u8; 1];
        let more = loop {
            match src.inner.read(&mut one) {
                Ok(n) => break n > 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(content_err(format!("reading failed: {e}"))),
            }
        };
        if src.n != f.size || more {
            return Err(content_err(format!(
                "size differs from the manifest ({} bytes)",
                f.size
            )));
        }
        let actual = hex::encode(src.hash.finalize());
        if actual != f.sha256 {
            return Err(content_err(format!(
                "sha256 differs from the manifest ({}, actual {actual})",
                f.sha256
            )));
        }
    }
    if let Some((path, _)) = it.next() {
        return Err(WriteError::Content {
            path,
            reason: "not listed in the manifest".into(),
        });
    }
    let enc = tar.into_inner()?;
    let out = enc.finish()?;
    out.flush()?;
    Ok(())
}

/// Why a bundle does not verify. Each names the file concerned ([`VerifyError::file`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{file}: sha256 mismatch (manifest {expected}, actual {actual})")]
    Sha256Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: size mismatch (manifest {expected} bytes, actual {actual} bytes)")]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: missing from the bundle")]
    Missing { file: String },
    #[error("{file}: in the bundle but not listed in manifest.json")]
    Extra { file: String },
    #[error("{file}: appears more than once in the bundle")]
    Duplicate { file: String },
    #[error("{file}: must come after manifest.json, manifest.sig and manifest.pub")]
    Order { file: String },
    #[error("{file}: refused: {reason}")]
    Unsafe { file: String, reason: String },
    #[error(
        "manifest.sig: the signature does not match manifest.json (the manifest was changed, or signed with another key)"
    )]
    BadSignature,
    #[error("manifest.pub: the bundle is signed with key {actual}, not the expected {expected}")]
    KeyMismatch { expected: String, actual: String },
    #[error("manifest.pub: {0}")]
    BadKey(String),
    #[error("manifest.json: {0}")]
    Manifest(String),
    #[error("{file}: the bundle is truncated or corrupt ({detail})")]
    Corrupt { file: String, detail: String },
}

impl VerifyError {
    /// The file of the bundle the error is about (`bundle` for the archive as a whole).
    pub fn file(&self) -> &str {
        match self {
            VerifyError::Sha256Mismatch { file, .. }
            | VerifyError::SizeMismatch { file, .. }
            | VerifyError::Missing { file }
            | VerifyError::Extra { file }
            | VerifyError::Duplicate { file }
            | VerifyError::Order { file }
            | VerifyError::Unsafe { file, .. }
            | VerifyError::Corrupt { file, .. } => file,
            VerifyError::BadSignature => SIGNATURE,
            VerifyError::KeyMismatch { .. } | VerifyError::BadKey(_) => PUBLIC_KEY,
            VerifyError::Manifest(_) => MANIFEST,
        }
    }
}

fn corrupt(file: &str, e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Corrupt {
        file: file.to_string(),
        detail: e.to_string(),
    }
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Directory => "a directory",
        tar::EntryType::Fifo => "a FIFO",
        _ => "a special entry",
    }
}

/// Reads a whole small entry (at most `limit` bytes).
fn read_small(r: &mut dyn Read, name: &str, limit: u64) -> Result<Vec<u8>, VerifyError> {
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| corrupt(name, e))?;
    if buf.len() as u64 > limit {
        return Err(VerifyError::Unsafe {
            file: name.into(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(buf)
}

/// Checks the signature, the key and the manifest once the three metadata files were read.
fn open_manifest(
    meta: &BTreeMap<&'static str, Vec<u8>>,
    expected_key: Option<&VerifyingKey>,
) -> Result<Manifest, VerifyError> {
    let public = std::str::from_utf8(&meta[PUBLIC_KEY])
        .map_err(|_| VerifyError::BadKey("not UTF-8".into()))?;
    let key = signing::parse_public_key(public).map_err(VerifyError::BadKey)?;
    if let Some(want) = expected_key
        && want != &key
    {
        return Err(VerifyError::KeyMismatch {
            expected: hex::encode(want.as_bytes()),
            actual: hex::encode(key.as_bytes()),
        });
    }
    let sig = std::str::from_utf8(&meta[SIGNATURE]).map_err(|_| VerifyError::BadSignature)?;
    if !signing::verify_hex(&key, &meta[MANIFEST], sig) {
        return Err(VerifyError::BadSignature);
    }
    let m: Manifest = serde_json::from_slice(&meta[MANIFEST])
        .map_err(|e| VerifyError::Manifest(format!("not a valid manifest: {e}")))?;
    m.check().map_err(VerifyError::Manifest)?;
    Ok(m)
}

/// Verifies a bundle read from `reader`: the signature of manifest.json (by `expected_key` when
/// given, else by the key in manifest.pub), then every file's size and sha256; no file missing,
/// none extra, no unsafe entry. Returns the manifest when everything matches.
pub fn verify(
    reader: impl Read,
    expected_key: Option<&VerifyingKey>,
) -> Result<Manifest, VerifyError> {
    let dec = zstd::stream::read::Decoder::new(reader).map_err(|e| corrupt("bundle", e))?;
    let mut archive = tar::Archive::new(dec);
    let entries = archive.entries().map_err(|e| corrupt("bundle", e))?;
    let mut meta: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    // The verified manifest and its files by path: (sha256, size).
    type Index = BTreeMap<String, (String, u64)>;
    let mut manifest: Option<(Manifest, Index)> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last = String::from("bundle");
    let mut buf = vec![0u8; CHUNK];
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&last, e))?;
        let name = match std::str::from_utf8(&entry.path_bytes()) {
            Ok(s) => s.to_string(),
            Err(_) => {
                return Err(VerifyError::Unsafe {
                    file: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    reason: "the path is not UTF-8".into(),
                });
            }
        };
        check_path(&name).map_err(|reason| VerifyError::Unsafe {
            file: name.clone(),
            reason,
        })?;
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(VerifyError::Unsafe {
                file: name,
                reason: format!("{} (only regular files are allowed)", entry_kind(kind)),
            });
        }
        last = name.clone();
        if !seen.insert(name.clone()) {
            return Err(VerifyError::Duplicate { file: name });
        }
        let meta_name = [MANIFEST, SIGNATURE, PUBLIC_KEY]
            .into_iter()
            .find(|m| *m == name);
        if let Some(m) = meta_name {
            let limit = if m == MANIFEST {
                MAX_MANIFEST
            } else {
                MAX_SMALL
            };
            meta.insert(m, read_small(&mut entry, &name, limit)?);
            if meta.len() == 3 {
                let mf = open_manifest(&meta, expected_key)?;
                let index = mf
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), (f.sha256.clone(), f.size)))
                    .collect();
                manifest = Some((mf, index));
            }
            continue;
        }
        let Some(rel) = name.strip_prefix(FILES_DIR) else {
            return Err(VerifyError::Extra { file: name });
        };
        let Some((_, index)) = &manifest else {
            return Err(VerifyError::Order { file: name });
        };
        let Some((want_sha, want_size)) = index.get(rel) else {
            return Err(VerifyError::Extra { file: name });
        };
        let mut h = Sha256::new();
        let mut n: u64 = 0;
        loop {
            let k = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(&name, e)),
            };
            h.update(&buf[..k]);
            n += k as u64;
        }
        if n != entry.header().size().unwrap_or(n) {
            return Err(corrupt(&name, "the entry ends early"));
        }
        if n != *want_size {
            return Err(VerifyError::SizeMismatch {
                file: name,
                expected: *want_size,
                actual: n,
            });
        }
        let actual = hex::encode(h.finalize());
        if &actual != want_sha {
            return Err(VerifyError::Sha256Mismatch {
                file: name,
                expected: want_sha.clone(),
                actual,
            });
        }
    }
    // Drain the rest of the stream so a truncated zstd frame is noticed even after the tar end.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| corrupt("bundle", e))?;
    let Some((mf, _)) = manifest else {
        let missing = [MANIFEST, SIGNATURE, PUBLIC_KEY]
            .into_iter()
            .find(|m| !meta.contains_key(m))
            .unwrap_or(MANIFEST);
        return Err(VerifyError::Missing {
            file: missing.into(),
        });
    };
    for f in &mf.files {
        let name = format!("{FILES_DIR}{}", f.path);
        if !seen.contains(&name) {
            return Err(VerifyError::Missing { file: name });
        }
    }
    Ok(mf)
}

// ---------------------------------------------------------------------------------------------
// Server side: a release's bundle from the blob store

/// A stored bundle: its blob digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleRef {
    pub sha256: String,
    pub size: u64,
}

const ACTOR: Actor = Actor::System("releases");

fn store_err(e: StoreError) -> OuroError {
    e.into()
}

/// Pins every artifact blob of a release (`build_blob_pins`, owner [`PIN_OWNER`]) so artifact
/// expiry and GC keep them. Call it in the transaction that records `release_artifacts`.
pub async fn pin_release_artifacts(
    ex: &mut impl Executor,
    release_id: i64,
) -> Result<(), StoreError> {
    let rows = q("SELECT sha256 FROM release_artifacts WHERE release_id = $1")
        .bind(release_id)
        .fetch_all(ex)
        .await?;
    for r in rows {
        build_blobs::pin(ex, PIN_OWNER, release_id, &r.text("sha256")?).await?;
    }
    Ok(())
}

enum Chunk {
    Data(Vec<u8>),
    End,
    Failed(String),
}

/// The writing end of a bounded in-memory pipe (chunks of 64 KiB, a few in flight).
struct ChunkWriter {
    tx: SyncSender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Chunk::Data(chunk)).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the blob store stopped reading")
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let k = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..k]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The reading end: ends only at an explicit `End`; a writer that failed or vanished is an error,
/// so a half-written bundle is never stored.
struct ChunkReader {
    rx: Receiver<Chunk>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.done = true,
                Ok(Chunk::Failed(m)) => return Err(io::Error::other(m)),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the bundle writer stopped",
                    ));
                }
            }
        }
        let k = out.len().min(self.cur.len() - self.pos);
        out[..k].copy_from_slice(&self.cur[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

/// A reader that fails with the given message (a blob that could not be opened).
struct FailingReader(String);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other(self.0.clone()))
    }
}

fn unavailable(missing: Vec<String>) -> OuroError {
    OuroError::new(
        ErrorCode::ReleaseArtifactsUnavailable,
        format!(
            "the release cannot be bundled: {} artifact(s) are missing from the artifact store ({})",
            missing.len(),
            missing.join(", ")
        ),
    )
    .with_details(json!({ "missing": missing }))
}

/// Builds the bundle of release `release_id` from its artifacts in the blob store, stores the
/// bundle in the blob store, and in one transaction sets `bundle_sha256`/`bundle_size`, pins the
/// artifacts and the bundle (replacing the release's earlier pins) and appends `release.bundled`.
/// The same release gives the same bundle bytes. Refused with `release.artifacts_unavailable`
/// when an artifact's blob is missing.
pub async fn create_for_release(
    store: &Store,
    blobs: Arc<dyn BlobStore>,
    key: &SigningKey,
    release_id: i64,
) -> Result<BundleRef, OuroError> {
    let (manifest, project_id, slug) = {
        let mut c = store.read().await.map_err(store_err)?;
        let r = q(
            "SELECT r.project_id, p.slug, r.version, r.tag, r.sha, r.created_at \
                   FROM release_releases r JOIN projects p ON p.id = r.project_id WHERE r.id = $1",
        )
        .bind(release_id)
        .fetch_optional(&mut c)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::ReleaseBundleNotFound,
                format!("no release with id {release_id}"),
            )
        })?;
        let mut files = Vec::new();
        for a in q("SELECT path, sha256, size FROM release_artifacts WHERE release_id = $1")
            .bind(release_id)
            .fetch_all(&mut c)
            .await
            .map_err(store_err)?
        {
            files.push(ManifestFile {
                path: a.text("path").map_err(store_err)?,
                sha256: a.text("sha256").map_err(store_err)?,
                size: a.i64("size").map_err(store_err)?.max(0) as u64,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let slug = r.text("slug").map_err(store_err)?;
        (
            Manifest {
                format: FORMAT,
                project: slug.clone(),
                version: r.text("version").map_err(store_err)?,
                tag: r.text("tag").map_err(store_err)?,
                sha: r.text("sha").map_err(store_err)?,
                created_at: r.i64("created_at").map_err(store_err)?,
                files,
            },
            r.i64("project_id").map_err(store_err)?,
            slug,
        )
    };
    if let Err(e) = manifest.check() {
        tracing::error!(release_id, error = %e, "release artifacts do not make a valid manifest");
        return Err(OuroError::new(
            ErrorCode::ReleaseArtifactsUnavailable,
            format!("the release cannot be bundled: {e}"),
        ));
    }
    let key = key.clone();
    let m = manifest.clone();
    let bundle = tokio::task::spawn_blocking(move || -> Result<BundleRef, OuroError> {
        let mut missing = Vec::new();
        for f in &m.files {
            if !blobs.exists(&f.sha256).map_err(OuroError::from)? {
                missing.push(f.path.clone());
            }
        }
        if !missing.is_empty() {
            return Err(unavailable(missing));
        }
        let (tx, rx) = sync_channel::<Chunk>(4);
        let source = blobs.clone();
        let writer = std::thread::spawn(move || -> Result<(), WriteError> {
            let mut w = ChunkWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let files = m.files.iter().map(|f| {
                let r: Box<dyn Read + Send> = match source.open(&f.sha256) {
                    Ok(Some(r)) => r,
                    Ok(None) => Box::new(FailingReader("the blob is missing".into())),
                    Err(e) => Box::new(FailingReader(e.to_string())),
                };
                (f.path.clone(), r)
            });
            match write(&mut w, &m, files, &key).and_then(|()| Ok(w.flush()?)) {
                Ok(()) => {
                    let _ = w.tx.send(Chunk::End);
                    Ok(())
                }
                Err(e) => {
                    let _ = w.tx.send(Chunk::Failed(e.to_string()));
                    Err(e)
                }
            }
        });
        let mut reader = ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        let put = blobs.put(&mut reader, None);
        drop(reader);
        let written = writer.join().map_err(|_| OuroError::internal())?;
        match written {
            Ok(()) => {}
            Err(WriteError::Content { path, reason }) => {
                return Err(OuroError::new(
                    ErrorCode::ReleaseArtifactsUnavailable,
                    format!("the release cannot be bundled: artifact {path}: {reason}"),
                )
                .with_details(json!({ "missing": [path] })));
            }
            Err(e) => {
                // When the store stopped reading (a full disk), its error is the one to report.
                if put.is_ok() {
                    tracing::error!(error = %e, "writing a release bundle failed");
                    return Err(OuroError::internal());
                }
            }
        }
        let b = put.map_err(OuroError::from)?;
        Ok(BundleRef {
            sha256: b.sha256,
            size: b.size,
        })
    })
    .await
    .map_err(|_| OuroError::internal())??;

    let mut tx = store.begin().await.map_err(store_err)?;
    q("UPDATE release_releases SET bundle_sha256 = $1, bundle_size = $2 WHERE id = $3")
        .bind(bundle.sha256.as_str())
        .bind(bundle.size as i64)
        .bind(release_id)
        .execute(&mut tx)
        .await
        .map_err(store_err)?;
    build_blobs::unpin_all(&mut tx, PIN_OWNER, release_id)
        .await
        .map_err(store_err)?;
    for f in &manifest.files {
        build_blobs::pin(&mut tx, PIN_OWNER, release_id, &f.sha256)
            .await
            .map_err(store_err)?;
    }
    build_blobs::pin(&mut tx, PIN_OWNER, release_id, &bundle.sha256)
        .await
        .map_err(store_err)?;
    tx.append(
        NewEvent::new(
            ev::RELEASE_BUNDLED,
            &ACTOR,
            release_id,
            json!({
                "version": manifest.version,
                "sha256": bundle.sha256,
                "size": bundle.size,
                "files": manifest.files.len(),
            }),
        )
        .in_project(project_id, &slug),
    )
    .await
    .map_err(store_err)?;
    tx.commit().await.map_err(store_err)?;
    Ok(bundle)
}

/// A release's stored bundle, by project slug and version: its file name and blob, or `None`
/// when no such release exists or it has no bundle yet.
pub async fn find(
    ex: &mut impl Executor,
    project_slug: &str,
    version: &str,
) -> Result<Option<(String, BundleRef)>, StoreError> {
    let row = q(
        "SELECT r.bundle_sha256, r.bundle_size FROM release_releases r \
         JOIN projects p ON p.id = r.project_id WHERE p.slug = $1 AND r.version = $2",
    )
    .bind(project_slug)
    .bind(version)
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let (Some(sha256), Some(size)) = (r.opt_text("bundle_sha256")?, r.opt_i64("bundle_size")?)
    else {
        return Ok(None);
    };
    Ok(Some((
        file_name(project_slug, version),
        BundleRef {
            sha256,
            size: size.max(0) as u64,
        },
    )))
}
