//! The content-addressed blob store: hashing and dedupe, a configured capacity and a full disk
//! (`build.storage_full`, nothing else lost), size limits, digests.

use std::io::Read;

use ouro_build::blobs::{BlobError, BlobStore, FaultyWriter, FsBlobStore, copy_hashing};
use ouro_core::{ErrorCode, OuroError};

fn read_all(s: &FsBlobStore, sha: &str) -> Vec<u8> {
    let mut out = Vec::new();
    s.open(sha)
        .unwrap()
        .expect("blob exists")
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn tmp_files(s: &FsBlobStore) -> usize {
    std::fs::read_dir(s.root().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn put_hashes_and_stores_identical_content_once() {
    let d = tempfile::tempdir().unwrap();
    let s = FsBlobStore::in_data_dir(d.path(), None);
    let a = s.put(&mut &b"hello\n"[..], None).unwrap();
    assert_eq!(
        a.sha256,
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    assert_eq!(a.size, 6);
    let b = s.put(&mut &b"hello\n"[..], None).unwrap();
    assert_eq!(a, b);
    let c = s.put(&mut &b"other"[..], None).unwrap();
    assert_ne!(a.sha256, c.sha256);
    let list = s.list().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(s.usage().unwrap(), 11);
    assert_eq!(read_all(&s, &a.sha256), b"hello\n");
    assert!(
        s.path_of(&a.sha256)
            .ends_with(format!("blobs/sha256/58/{}", a.sha256))
    );
    assert!(s.exists(&a.sha256).unwrap());
    s.delete(&a.sha256).unwrap();
    assert!(!s.exists(&a.sha256).unwrap());
    s.delete(&a.sha256).unwrap();
    assert_eq!(tmp_files(&s), 0);
}

#[test]
fn a_large_blob_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let s = FsBlobStore::in_data_dir(d.path(), None);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let b = s.put(&mut &data[..], None).unwrap();
    assert_eq!(b.size, data.len() as u64);
    assert_eq!(read_all(&s, &b.sha256), data);
}

#[test]
fn capacity_exceeded_is_storage_full_and_keeps_everything_else() {
    let d = tempfile::tempdir().unwrap();
    let s = FsBlobStore::in_data_dir(d.path(), Some(100));
    let first = s.put(&mut &[1u8; 60][..], None).unwrap();
    let err = s.put(&mut &[2u8; 60][..], None).unwrap_err();
    assert!(matches!(err, BlobError::Full(_)), "{err:?}");
    let o: OuroError = err.into();
    assert_eq!(o.code, ErrorCode::StorageFull);
    assert_eq!(o.code.as_str(), "build.storage_full");
    assert_eq!(o.code.http_status(), 507);
    assert_eq!(s.list().unwrap().len(), 1);
    assert_eq!(read_all(&s, &first.sha256), vec![1u8; 60]);
    assert_eq!(tmp_files(&s), 0, "the partial upload was removed");
    // What fits still goes in.
    s.put(&mut &[3u8; 40][..], None).unwrap();
    assert_eq!(s.usage().unwrap(), 100);
}

#[test]
fn a_full_disk_is_storage_full_and_keeps_everything_else() {
    let d = tempfile::tempdir().unwrap();
    let s = FsBlobStore::in_data_dir(d.path(), None);
    let kept = s.put(&mut &b"kept"[..], None).unwrap();
    s.inject_enospc_after(1000);
    let big = vec![9u8; 200_000];
    let err = s.put(&mut &big[..], None).unwrap_err();
    assert!(matches!(err, BlobError::Full(_)), "{err:?}");
    assert_eq!(OuroError::from(err).code, ErrorCode::StorageFull);
    assert_eq!(s.list().unwrap().len(), 1);
    assert_eq!(read_all(&s, &kept.sha256), b"kept");
    assert_eq!(tmp_files(&s), 0);
    s.inject_enospc_after(u64::MAX);
    s.put(&mut &big[..], None).unwrap();
    assert_eq!(s.list().unwrap().len(), 2);
}

#[test]
fn the_faulty_writer_plays_enospc() {
    let mut sink = Vec::new();
    let mut w = FaultyWriter {
        inner: &mut sink,
        limit: 10,
        written: 0,
    };
    let err = copy_hashing(&mut &[0u8; 100][..], &mut w, None, None).unwrap_err();
    assert!(matches!(err, BlobError::Full(_)), "{err:?}");
}

#[test]
fn over_the_size_limit_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = FsBlobStore::in_data_dir(d.path(), None);
    let err = s.put(&mut &[0u8; 100][..], Some(99)).unwrap_err();
    assert!(matches!(err, BlobError::TooLarge(_)), "{err:?}");
    assert_eq!(OuroError::from(err).code, ErrorCode::ArtifactTooLarge);
    assert!(s.list().unwrap().is_empty());
    s.put(&mut &[0u8; 99][..], Some(99)).unwrap();
}

#[test]
fn bad_digests_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = FsBlobStore::in_data_dir(d.path(), None);
    for bad in ["", "../etc/passwd", &"A".repeat(64), &"0".repeat(63)] {
        assert!(matches!(s.open(bad), Err(BlobError::BadDigest(_))), "{bad}");
        assert!(
            matches!(s.delete(bad), Err(BlobError::BadDigest(_))),
            "{bad}"
        );
    }
    assert!(s.open(&"0".repeat(64)).unwrap().is_none());
}
