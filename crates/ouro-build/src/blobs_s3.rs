//! The S3-compatible blob store (AWS S3, MinIO, Ceph RGW, Garage, ...) through the `object_store`
//! crate, and the `[blobs]` settings that choose between it and the data-dir store.
//!
//! Blobs are objects named `<prefix>sha256/ab/<hex>` in one bucket. [`BlobStore`] is blocking
//! (callers use `spawn_blocking`), `object_store` is async: the store owns a small tokio runtime
//! on a thread of its own, and every call hands a future to that runtime and waits on a plain
//! channel. No `block_on` ever runs on a worker thread of the server's runtime, and dropping the
//! store (even inside async code) only tells that thread to stop.
//!
//! A put reads the source in parts while hashing. A blob that fits in one part is written with a
//! single PUT under its final name (its digest is known by then). A larger one is streamed as a
//! multipart upload under `<prefix>tmp/<random>` and, once complete and hashed, copied to its
//! final name (skipped when that blob exists already) and the temporary object deleted; any
//! failure aborts the multipart upload, so nothing partial is left behind.

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::blobs::{BlobError, BlobRef, BlobStore, FsBlobStore, valid_digest};

/// The smallest part S3 accepts (all parts but the last).
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The default part size of multipart uploads.
pub const DEFAULT_PART_BYTES: usize = 8 * 1024 * 1024;

/// Where blobs are kept: `[blobs]` in `ouro.toml`, `OURO_BLOBS_*` in the environment
/// (docs/artifacts.md). `Debug` never prints the keys.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlobSettings {
    /// `fs` (the default: `DATA_DIR/blobs`) or `s3`.
    #[serde(default)]
    pub backend: BlobBackend,
    pub bucket: Option<String>,
    /// The service URL, e.g. `http://127.0.0.1:9000` for MinIO; none: AWS for the region.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_id_file: Option<std::path::PathBuf>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Path-style requests (`ENDPOINT/BUCKET/KEY`), which most self-hosted servers need.
    /// Default: true when an endpoint is set, false for AWS.
    pub path_style: Option<bool>,
    /// A key prefix inside the bucket (e.g. `ouro/`), so one bucket can serve several instances.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    #[default]
    Fs,
    S3,
}

impl fmt::Debug for BlobSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobSettings")
            .field("backend", &self.backend)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "***"))
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn read_secret(path: &FsPath, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| format!("cannot read {what} from {}: {e}", path.display()))
}

impl BlobSettings {
    /// Applies `OURO_BLOBS_*` variables over these settings (`env` is passed in so tests control
    /// it) and reads the `*_FILE` / `*_file` secrets. Errors say which key is wrong.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = env("OURO_BLOBS_BACKEND") {
            self.backend = match v.trim().to_ascii_lowercase().as_str() {
                "fs" => BlobBackend::Fs,
                "s3" => BlobBackend::S3,
                _ => return Err(format!("OURO_BLOBS_BACKEND={v:?}: use `fs` or `s3`")),
            };
        }
        for (key, slot) in [
            ("OURO_BLOBS_BUCKET", &mut self.bucket),
            ("OURO_BLOBS_ENDPOINT", &mut self.endpoint),
            ("OURO_BLOBS_REGION", &mut self.region),
            ("OURO_BLOBS_ACCESS_KEY_ID", &mut self.access_key_id),
            ("OURO_BLOBS_SECRET_ACCESS_KEY", &mut self.secret_access_key),
        ] {
            if let Some(v) = env(key) {
                *slot = Some(v);
            }
        }
        if let Some(v) = env("OURO_BLOBS_ACCESS_KEY_ID_FILE") {
            self.access_key_id_file = Some(v.into());
        }
        if let Some(v) = env("OURO_BLOBS_SECRET_ACCESS_KEY_FILE") {
            self.secret_access_key_file = Some(v.into());
        }
        if let Some(v) = env("OURO_BLOBS_PATH_STYLE") {
            self.path_style = Some(match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => return Err(format!("OURO_BLOBS_PATH_STYLE={v:?}: use true or false")),
            });
        }
        if let Some(v) = env("OURO_BLOBS_PREFIX") {
            self.prefix = v;
        }
        self.resolve_files()
    }

    /// Reads `access_key_id_file` / `secret_access_key_file` into the values (the file wins).
    pub fn resolve_files(&mut self) -> Result<(), String> {
        if let Some(p) = self.access_key_id_file.take() {
            self.access_key_id = Some(read_secret(&p, "the S3 access key id")?);
        }
        if let Some(p) = self.secret_access_key_file.take() {
            self.secret_access_key = Some(read_secret(&p, "the S3 secret access key")?);
        }
        Ok(())
    }

    /// Checks the settings without connecting: an `s3` backend needs a bucket, and a prefix is
    /// relative and ends with `/`.
    pub fn validate(&self) -> Result<(), String> {
        if self.backend == BlobBackend::S3 {
            match self.bucket.as_deref() {
                Some(b) if !b.trim().is_empty() => {}
                _ => return Err("blobs.bucket is required when blobs.backend = \"s3\"".into()),
            }
            if self.access_key_id.is_some() != self.secret_access_key.is_some() {
                return Err(
                    "blobs: set both access_key_id and secret_access_key (or neither)".into(),
                );
            }
        }
        if !self.prefix.is_empty()
            && (self.prefix.starts_with('/')
                || !self.prefix.ends_with('/')
                || self.prefix.split('/').any(|s| s == ".." || s == "."))
        {
            return Err(format!(
                "blobs.prefix {:?}: write a relative prefix ending in `/`, e.g. `ouro/`",
                self.prefix
            ));
        }
        Ok(())
    }
}

/// The store the settings choose: the data-dir store, or S3 (checked with one request, so a
/// wrong bucket or key fails at start, not at the first artifact).
pub fn open(
    settings: &BlobSettings,
    data_dir: &FsPath,
    capacity: Option<u64>,
) -> Result<Arc<dyn BlobStore>, String> {
    settings.validate()?;
    match settings.backend {
        BlobBackend::Fs => Ok(Arc::new(FsBlobStore::in_data_dir(data_dir, capacity))),
        BlobBackend::S3 => {
            let s = S3BlobStore::new(settings, capacity)?;
            s.probe()?;
            Ok(Arc::new(s))
        }
    }
}

type Registry = std::sync::Mutex<Vec<(std::path::PathBuf, Arc<dyn BlobStore>)>>;

fn registry() -> &'static Registry {
    static R: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// Makes `store` the blob store of the instance with this data dir, for code that only knows the
/// data dir (finish hooks of later phases). The server calls it at start.
pub fn register(data_dir: &FsPath, store: Arc<dyn BlobStore>) {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|(d, _)| d != data_dir);
    r.push((data_dir.to_path_buf(), store));
}

/// The blob store of the instance with this data dir: the registered one, else the data-dir
/// store. Later phases read blobs through this, never through `FsBlobStore` directly.
pub fn for_data_dir(data_dir: &FsPath) -> Arc<dyn BlobStore> {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.iter()
        .find(|(d, _)| d == data_dir)
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| Arc::new(FsBlobStore::in_data_dir(data_dir, None)))
}

/// A small runtime on a thread of its own; futures are spawned onto it and waited for through
/// a std channel, so callers may be on any thread (never nested `block_on`).
struct IoThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IoThread {
    fn start() -> Result<IoThread, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ouro-blobs-s3")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 client runtime: {e}"))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ouro-blobs-s3".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                rt.shutdown_background();
            })
            .map_err(|e| format!("cannot start the S3 client thread: {e}"))?;
        Ok(IoThread {
            handle,
            stop: Some(stop),
        })
    }

    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the S3 client runtime stopped")
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Blobs in an S3-compatible bucket. See the module documentation.
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    capacity: Option<u64>,
    part_bytes: usize,
    io: IoThread,
    bucket: String,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn io_err(e: object_store::Error) -> BlobError {
    BlobError::Io(io::Error::other(e.to_string()))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3BlobStore {
    pub fn new(settings: &BlobSettings, capacity: Option<u64>) -> Result<S3BlobStore, String> {
        settings.validate()?;
        let bucket = settings
            .bucket
            .clone()
            .ok_or_else(|| "blobs.bucket is required".to_string())?;
        let mut b = AmazonS3Builder::new().with_bucket_name(&bucket);
        if let Some(r) = &settings.region {
            b = b.with_region(r);
        } else {
            b = b.with_region("us-east-1");
        }
        if let Some(e) = &settings.endpoint {
            b = b
                .with_endpoint(e.trim_end_matches('/'))
                .with_allow_http(e.starts_with("http://"));
        }
        let path_style = settings.path_style.unwrap_or(settings.endpoint.is_some());
        b = b.with_virtual_hosted_style_request(!path_style);
        if let (Some(k), Some(s)) = (&settings.access_key_id, &settings.secret_access_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        let store = b
            .build()
            .map_err(|e| format!("blobs: the S3 settings are not usable: {e}"))?;
        Ok(S3BlobStore {
            store: Arc::new(store),
            prefix: settings.prefix.clone(),
            capacity,
            part_bytes: DEFAULT_PART_BYTES,
            io: IoThread::start()?,
            bucket,
        })
    }

    /// Multipart part size (at least [`MIN_PART_BYTES`]); tests use small values.
    pub fn with_part_bytes(mut self, n: usize) -> S3BlobStore {
        self.part_bytes = n.max(MIN_PART_BYTES);
        self
    }

    pub fn part_bytes(&self) -> usize {
        self.part_bytes
    }

    /// One request that proves the bucket is reachable with these credentials.
    pub fn probe(&self) -> Result<(), String> {
        let store = self.store.clone();
        let key = Path::from(format!("{}probe", self.prefix));
        let bucket = self.bucket.clone();
        // A listing (unlike a HEAD of a missing key) fails when the bucket does not exist.
        self.io.run(async move {
            match store.list(Some(&key)).next().await {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(format!("blobs: cannot reach S3 bucket {bucket:?}: {e}")),
            }
        })
    }

    /// The object key of a blob (the digest must be valid).
    pub fn key_of(&self, sha256: &str) -> String {
        format!("{}sha256/{}/{}", self.prefix, &sha256[..2], sha256)
    }

    /// Temporary objects of multipart uploads in progress (tests check none is left behind).
    pub fn temporary_objects(&self) -> Result<usize, BlobError> {
        let store = self.store.clone();
        let prefix = Path::from(format!("{}tmp", self.prefix));
        self.io
            .run(async move {
                let mut n = 0;
                let mut s = store.list(Some(&prefix));
                while let Some(m) = s.next().await {
                    m?;
                    n += 1;
                }
                Ok::<_, object_store::Error>(n)
            })
            .map_err(io_err)
    }

    fn check(sha256: &str) -> Result<(), BlobError> {
        if valid_digest(sha256) {
            Ok(())
        } else {
            Err(BlobError::BadDigest(sha256.into()))
        }
    }

    fn exists_key(&self, key: String) -> Result<bool, BlobError> {
        let store = self.store.clone();
        self.io
            .run(async move {
                match store.head(&Path::from(key)).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .map_err(io_err)
    }

    /// Reads up to one part from `src` (hashing it); `None` at the end of the source.
    fn read_part(
        &self,
        src: &mut dyn Read,
        h: &mut Sha256,
        size: &mut u64,
        max: Option<u64>,
    ) -> Result<Vec<u8>, BlobError> {
        let mut part = Vec::with_capacity(self.part_bytes.min(1024 * 1024));
        let mut buf = vec![0u8; 64 * 1024];
        while part.len() < self.part_bytes {
            let want = (self.part_bytes - part.len()).min(buf.len());
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BlobError::Source(e)),
            };
            *size += n as u64;
            if let Some(m) = max
                && *size > m
            {
                return Err(BlobError::TooLarge(format!(
                    "the upload is larger than the limit of {m} bytes"
                )));
            }
            h.update(&buf[..n]);
            part.extend_from_slice(&buf[..n]);
        }
        Ok(part)
    }

    fn over_budget(budget: Option<u64>, size: u64) -> Option<BlobError> {
        match budget {
            Some(b) if size > b => Some(BlobError::Full(format!(
                "the configured capacity would be exceeded ({b} bytes left)"
            ))),
            _ => None,
        }
    }
}

impl BlobStore for S3BlobStore {
    fn put(&self, src: &mut dyn Read, max: Option<u64>) -> Result<BlobRef, BlobError> {
        let budget = match self.capacity {
            Some(c) => Some(c.saturating_sub(self.usage()?)),
            None => None,
        };
        let mut h = Sha256::new();
        let mut size = 0u64;
        let first = self.read_part(src, &mut h, &mut size, max)?;
        if first.len() < self.part_bytes {
            // All of it fits in one request: the name is known, write it in place.
            let blob = BlobRef {
                sha256: hex::encode(h.finalize()),
                size,
            };
            let key = self.key_of(&blob.sha256);
            if self.exists_key(key.clone())? {
                return Ok(blob);
            }
            if let Some(e) = Self::over_budget(budget, size) {
                return Err(e);
            }
            let store = self.store.clone();
            self.io
                .run(async move {
                    store
                        .put(&Path::from(key), PutPayload::from(Bytes::from(first)))
                        .await
                })
                .map_err(io_err)?;
            return Ok(blob);
        }
        // Multipart under a temporary name, hashed while the parts go out.
        let tmp = Path::from(format!("{}tmp/{}", self.prefix, hex::encode(rand_bytes())));
        let store = self.store.clone();
        let tmp2 = tmp.clone();
        let mut upload = self
            .io
            .run(async move { store.put_multipart(&tmp2).await })
            .map_err(io_err)?;
        let mut part = first;
        let result = loop {
            if let Some(e) = Self::over_budget(budget, size) {
                break Err(e);
            }
            let fut = upload.put_part(PutPayload::from(Bytes::from(std::mem::take(&mut part))));
            if let Err(e) = self.io.run(fut) {
                break Err(io_err(e));
            }
            match self.read_part(src, &mut h, &mut size, max) {
                Ok(p) if p.is_empty() => break Ok(()),
                Ok(p) => part = p,
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = self.io.run(async move { upload.abort().await });
            return Err(e);
        }
        let blob = BlobRef {
            sha256: hex::encode(h.finalize()),
            size,
        };
        self.io
            .run(async move { upload.complete().await })
            .map_err(io_err)?;
        let key = Path::from(self.key_of(&blob.sha256));
        let store = self.store.clone();
        let exists = self.exists_key(key.to_string())?;
        self.io
            .run(async move {
                let copied = if exists {
                    Ok(())
                } else {
                    store.copy(&tmp, &key).await
                };
                let deleted = store.delete(&tmp).await;
                copied.and(deleted)
            })
            .map_err(io_err)?;
        Ok(blob)
    }

    fn open(&self, sha256: &str) -> Result<Option<Box<dyn Read + Send>>, BlobError> {
        Self::check(sha256)?;
        let store = self.store.clone();
        let key = Path::from(self.key_of(sha256));
        let got = self
            .io
            .run(async move {
                match store.get(&key).await {
                    Ok(r) => Ok(Some(r)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .map_err(io_err)?;
        let Some(got) = got else {
            return Ok(None);
        };
        // The body streams on the client runtime into a small bounded channel; `None` marks
        // the end, so a body cut short is an error and never a silently shorter blob.
        let (mut tx, rx) = futures::channel::mpsc::channel::<io::Result<Option<Bytes>>>(4);
        self.io.handle.spawn(async move {
            use futures::SinkExt;
            let mut s = got.into_stream();
            while let Some(chunk) = s.next().await {
                let item = chunk.map(Some).map_err(|e| io::Error::other(e.to_string()));
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return; // the reader went away, or the body failed
                }
            }
            let _ = tx.send(Ok(None)).await;
        });
        Ok(Some(Box::new(ChannelReader {
            rx,
            cur: Bytes::new(),
            done: false,
        })))
    }

    fn exists(&self, sha256: &str) -> Result<bool, BlobError> {
        Self::check(sha256)?;
        self.exists_key(self.key_of(sha256))
    }

    fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        Self::check(sha256)?;
        let store = self.store.clone();
        let key = Path::from(self.key_of(sha256));
        self.io
            .run(async move {
                match store.delete(&key).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .map_err(io_err)
    }

    fn list(&self) -> Result<Vec<(BlobRef, i64)>, BlobError> {
        let store = self.store.clone();
        let prefix = Path::from(format!("{}sha256", self.prefix));
        let mut out = self
            .io
            .run(async move {
                let mut out = Vec::new();
                let mut s = store.list(Some(&prefix));
                while let Some(m) = s.next().await {
                    let m = m?;
                    let Some(name) = m.location.filename() else {
                        continue;
                    };
                    if !valid_digest(name) {
                        continue;
                    }
                    out.push((
                        BlobRef {
                            sha256: name.to_string(),
                            size: m.size,
                        },
                        m.last_modified.timestamp_millis(),
                    ));
                }
                Ok::<_, object_store::Error>(out)
            })
            .map_err(io_err)?;
        out.sort_by(|a, b| a.0.sha256.cmp(&b.0.sha256));
        Ok(out)
    }
}

fn rand_bytes() -> [u8; 16] {
    // Unique enough for a temporary name: time, process, a counter, hashed.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A `Read` over chunks arriving on a channel (waits with `futures::executor::block_on`, which
/// never panics, whichever thread reads).
struct ChannelReader {
    rx: futures::channel::mpsc::Receiver<io::Result<Option<Bytes>>>,
    cur: Bytes,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match futures::executor::block_on(self.rx.next()) {
                Some(Ok(Some(b))) => self.cur = b,
                Some(Ok(None)) => {
                    self.done = true;
                    return Ok(0);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the S3 download ended early",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}
