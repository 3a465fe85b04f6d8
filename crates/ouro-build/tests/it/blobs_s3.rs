//! The S3 blob store against a real S3-compatible server (moto, `pip install 'moto[server]'`):
//! one conformance function run for the data-dir store and for S3 (hashing, dedupe, list,
//! usage, open, exists, delete, limits, capacity, digests), multipart uploads of large blobs,
//! aborted uploads leaving nothing behind, and the `[blobs]` settings. Without `moto_server` the
//! S3 half is skipped with a message; with `CI=true` a missing moto_server fails.

use std::io::{self, Read};
use std::sync::Arc;

use ouro_build::blobs::{BlobError, BlobStore, FsBlobStore};
use ouro_build::blobs_s3::{self, BlobBackend, BlobSettings, MIN_PART_BYTES};
use ouro_build::testing::moto;
use ouro_core::{ErrorCode, OuroError};

fn read_all(s: &dyn BlobStore, sha: &str) -> Vec<u8> {
    let mut out = Vec::new();
    s.open(sha)
        .unwrap()
        .expect("blob exists")
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// What every `BlobStore` must do. `make(capacity)` gives a fresh, empty store.
fn conformance(name: &str, make: &dyn Fn(Option<u64>) -> Arc<dyn BlobStore>) {
    let s = make(None);
    assert!(s.list().unwrap().is_empty(), "{name}");
    let a = s.put(&mut &b"hello\n"[..], None).unwrap();
    assert_eq!(
        a.sha256, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        "{name}"
    );
    assert_eq!(a.size, 6);
    assert_eq!(s.put(&mut &b"hello\n"[..], None).unwrap(), a, "{name}");
    let c = s.put(&mut &b"other"[..], None).unwrap();
    let empty = s.put(&mut &b""[..], None).unwrap();
    assert_eq!(empty.size, 0);
    let list = s.list().unwrap();
    assert_eq!(list.len(), 3, "{name}: {list:?}");
    let now = ouro_core::time::now_ms();
    for (b, mtime) in &list {
        assert!(
            (now - mtime).abs() < 600_000,
            "{name}: {b:?} time {mtime} vs {now}"
        );
    }
    assert_eq!(s.usage().unwrap(), 11, "{name}");
    assert_eq!(read_all(&*s, &a.sha256), b"hello\n", "{name}");
    assert_eq!(read_all(&*s, &empty.sha256), b"", "{name}");
    assert!(s.exists(&a.sha256).unwrap());
    s.delete(&a.sha256).unwrap();
    assert!(!s.exists(&a.sha256).unwrap(), "{name}");
    assert!(s.open(&a.sha256).unwrap().is_none(), "{name}");
    s.delete(&a.sha256).unwrap();
    assert!(s.exists(&c.sha256).unwrap());

    // A large blob streams in and out unchanged (multipart on S3).
    let data: Vec<u8> = (0..(2 * MIN_PART_BYTES + 123_457) as u32)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect();
    let big = s.put(&mut &data[..], None).unwrap();
    assert_eq!(big.size, data.len() as u64, "{name}");
    let back = read_all(&*s, &big.sha256);
    assert!(back == data, "{name}: the large blob came back different");
    // The same large content again is deduplicated.
    assert_eq!(s.put(&mut &data[..], None).unwrap(), big);
    assert_eq!(s.list().unwrap().len(), 3, "{name}");

    // Size limit.
    let err = s.put(&mut &[0u8; 100][..], Some(99)).unwrap_err();
    assert!(matches!(err, BlobError::TooLarge(_)), "{name}: {err:?}");
    assert_eq!(OuroError::from(err).code, ErrorCode::ArtifactTooLarge);
    s.put(&mut &[0u8; 99][..], Some(99)).unwrap();
    let err = s
        .put(&mut &data[..], Some(MIN_PART_BYTES as u64 + 1))
        .unwrap_err();
    assert!(matches!(err, BlobError::TooLarge(_)), "{name}: {err:?}");
    assert_eq!(s.list().unwrap().len(), 4, "{name}");

    // Digests are checked before anything is asked of the store.
    for bad in ["", "../etc/passwd", &"A".repeat(64), &"0".repeat(63)] {
        assert!(matches!(s.open(bad), Err(BlobError::BadDigest(_))), "{bad}");
        assert!(matches!(s.delete(bad), Err(BlobError::BadDigest(_))));
        assert!(matches!(s.exists(bad), Err(BlobError::BadDigest(_))));
    }
    assert!(s.open(&"0".repeat(64)).unwrap().is_none());

    // A configured capacity: over it is storage_full, and nothing stored before is lost.
    let s = make(Some(100));
    let first = s.put(&mut &[1u8; 60][..], None).unwrap();
    let err = s.put(&mut &[2u8; 60][..], None).unwrap_err();
    assert!(matches!(err, BlobError::Full(_)), "{name}: {err:?}");
    assert_eq!(OuroError::from(err).code, ErrorCode::StorageFull);
    assert_eq!(s.list().unwrap().len(), 1, "{name}");
    assert_eq!(read_all(&*s, &first.sha256), vec![1u8; 60]);
    // Content already stored is accepted even when full; what fits still goes in.
    assert_eq!(s.put(&mut &[1u8; 60][..], None).unwrap(), first);
    s.put(&mut &[3u8; 40][..], None).unwrap();
    assert_eq!(s.usage().unwrap(), 100, "{name}");
}

#[test]
fn the_data_dir_store_passes_the_conformance() {
    let d = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU64::new(0);
    conformance("fs", &|cap| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Arc::new(FsBlobStore::new(d.path().join(format!("b{i}")), cap))
    });
}

#[test]
fn the_s3_store_passes_the_conformance() {
    let Some(m) = moto() else { return };
    let bucket = m.bucket("conformance");
    conformance("s3", &|cap| Arc::new(m.store(&bucket, cap)));
    // The large puts went through multipart uploads under tmp/ and left nothing there.
    let s = m.store(&bucket, None);
    assert_eq!(s.temporary_objects().unwrap(), 0);
}

/// A source that fails after `ok` bytes (a client hanging up mid-upload).
struct Failing {
    ok: usize,
    sent: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sent >= self.ok {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "hung up"));
        }
        let n = buf.len().min(self.ok - self.sent);
        buf[..n].fill(7);
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn an_s3_upload_that_fails_midway_leaves_nothing_behind() {
    let Some(m) = moto() else { return };
    let bucket = m.bucket("aborts");
    let s = m.store(&bucket, None);
    let kept = s.put(&mut &b"kept"[..], None).unwrap();
    // Fails in the second part: the multipart upload is aborted.
    let err = s
        .put(
            &mut Failing {
                ok: MIN_PART_BYTES + 1000,
                sent: 0,
            },
            None,
        )
        .unwrap_err();
    assert!(matches!(err, BlobError::Source(_)), "{err:?}");
    // Over the size limit in the third part.
    let err = s
        .put(
            &mut &vec![5u8; 2 * MIN_PART_BYTES + 10][..],
            Some(2 * MIN_PART_BYTES as u64),
        )
        .unwrap_err();
    assert!(matches!(err, BlobError::TooLarge(_)), "{err:?}");
    assert_eq!(s.temporary_objects().unwrap(), 0);
    let list = s.list().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].0, kept);
    // A capacity that the large blob would exceed: storage_full, nothing left behind.
    let s = m.store(&bucket, Some(MIN_PART_BYTES as u64 + 10));
    let err = s
        .put(&mut &vec![6u8; 2 * MIN_PART_BYTES][..], None)
        .unwrap_err();
    assert!(matches!(err, BlobError::Full(_)), "{err:?}");
    assert_eq!(s.temporary_objects().unwrap(), 0);
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn s3_blobs_are_readable_from_inside_a_runtime_and_by_a_second_store() {
    let Some(m) = moto() else { return };
    let bucket = m.bucket("shared");
    let settings = m.settings(&bucket, "inst/");
    let a: Arc<dyn BlobStore> =
        blobs_s3::open(&settings, std::path::Path::new("/nonexistent"), None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let a2 = a.clone();
    let blob = rt
        .block_on(async move {
            tokio::task::spawn_blocking(move || a2.put(&mut &b"from a runtime"[..], None))
                .await
                .unwrap()
        })
        .unwrap();
    // Another store with the same settings (another server process) sees the same blob.
    let b = blobs_s3::open(&settings, std::path::Path::new("/nonexistent"), None).unwrap();
    assert_eq!(read_all(&*b, &blob.sha256), b"from a runtime");
    // Dropping the stores inside async code does not panic.
    rt.block_on(async move {
        drop(a);
        drop(b);
    });
}

#[test]
fn blob_settings_from_env_and_files_and_their_checks() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("key");
    std::fs::write(&key, "AKIDFROMFILE\n").unwrap();
    let secret = d.path().join("secret");
    std::fs::write(&secret, "s3cr3t-from-file\n").unwrap();
    let env = |k: &str| -> Option<String> {
        match k {
            "OURO_BLOBS_BACKEND" => Some("S3".into()),
            "OURO_BLOBS_BUCKET" => Some("artifacts".into()),
            "OURO_BLOBS_ENDPOINT" => Some("http://127.0.0.1:9000".into()),
            "OURO_BLOBS_PATH_STYLE" => Some("true".into()),
            "OURO_BLOBS_ACCESS_KEY_ID_FILE" => Some(key.display().to_string()),
            "OURO_BLOBS_SECRET_ACCESS_KEY_FILE" => Some(secret.display().to_string()),
            _ => None,
        }
    };
    let mut s = BlobSettings::default();
    assert_eq!(s.backend, BlobBackend::Fs);
    s.apply_env(&env).unwrap();
    assert_eq!(s.backend, BlobBackend::S3);
    assert_eq!(s.bucket.as_deref(), Some("artifacts"));
    assert_eq!(s.path_style, Some(true));
    assert_eq!(s.access_key_id.as_deref(), Some("AKIDFROMFILE"));
    assert_eq!(s.secret_access_key.as_deref(), Some("s3cr3t-from-file"));
    s.validate().unwrap();
    let dbg = format!("{s:?}");
    assert!(
        !dbg.contains("s3cr3t") && !dbg.contains("AKIDFROMFILE"),
        "{dbg}"
    );
    // From TOML, with the checks.
    let t: BlobSettings = toml_like(
        r#"{"backend":"s3","endpoint":"http://x","access_key_id":"a","secret_access_key":"b"}"#,
    );
    assert!(t.validate().unwrap_err().contains("bucket"));
    let t: BlobSettings =
        toml_like(r#"{"backend":"s3","bucket":"b","access_key_id":"a","prefix":"x"}"#);
    assert!(t.validate().unwrap_err().contains("secret_access_key"));
    for bad in ["/abs/", "noslash", "a/../b/"] {
        let t = BlobSettings {
            prefix: bad.into(),
            ..Default::default()
        };
        assert!(t.validate().unwrap_err().contains("prefix"), "{bad}");
    }
    let e = BlobSettings::default()
        .apply_env(&|k| (k == "OURO_BLOBS_BACKEND").then(|| "gcs".to_string()))
        .unwrap_err();
    assert!(e.contains("OURO_BLOBS_BACKEND"), "{e}");
    let e = BlobSettings::default()
        .apply_env(&|k| {
            (k == "OURO_BLOBS_SECRET_ACCESS_KEY_FILE").then(|| "/nonexistent/x".to_string())
        })
        .unwrap_err();
    assert!(e.contains("secret access key"), "{e}");
    // The data-dir store is the default.
    let fs = blobs_s3::open(&BlobSettings::default(), d.path(), None).unwrap();
    let b = fs.put(&mut &b"x"[..], None).unwrap();
    assert!(
        d.path()
            .join("blobs/sha256")
            .join(&b.sha256[..2])
            .join(&b.sha256)
            .is_file()
    );
}

fn toml_like(json: &str) -> BlobSettings {
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_missing_bucket_fails_at_open_with_a_clear_message() {
    let Some(m) = moto() else { return };
    let err = blobs_s3::open(
        &m.settings("no-such-bucket", ""),
        std::path::Path::new("/nonexistent"),
        None,
    )
    .err()
    .expect("a missing bucket is refused");
    assert!(err.contains("no-such-bucket"), "{err}");
}
