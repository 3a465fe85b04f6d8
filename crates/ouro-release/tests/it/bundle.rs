//! Release bundles: a round trip, determinism, every tamper case naming its file, key pinning,
//! unsafe entries refused, truncation; and on both databases `create_for_release` with its blob
//! pins surviving artifact GC.

use std::io::{Cursor, Read};
use std::sync::Arc;

use ouro_build::artifacts;
use ouro_build::blobs::{BlobStore, FsBlobStore};
use ouro_core::ErrorCode;
use ouro_release::bundle::{self, Manifest, ManifestFile, VerifyError};
use ouro_release::signing::{self, SigningKey};
use ouro_store::testing::backends;
use ouro_store::{Store, q};
use sha2::{Digest, Sha256};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("app.bin", vec![7u8; 100_000]),
        ("docs/README.md", b"# App\n".to_vec()),
        ("empty.txt", Vec::new()),
    ]
}

fn manifest_of(files: &[(&str, Vec<u8>)]) -> Manifest {
    let mut fs: Vec<ManifestFile> = files
        .iter()
        .map(|(p, b)| ManifestFile {
            path: p.to_string(),
            sha256: sha(b),
            size: b.len() as u64,
        })
        .collect();
    fs.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest {
        format: 1,
        project: "demo".into(),
        version: "1.2.3".into(),
        tag: "v1.2.3".into(),
        sha: "a".repeat(40),
        created_at: 1_700_000_000_000,
        files: fs,
    }
}

fn build(files: &[(&str, Vec<u8>)], k: &SigningKey) -> Vec<u8> {
    let m = manifest_of(files);
    let mut sorted = files.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    bundle::write(
        &mut out,
        &m,
        sorted
            .into_iter()
            .map(|(p, b)| (p.to_string(), Cursor::new(b))),
        k,
    )
    .unwrap();
    out
}

/// One entry of a hand-made archive.
enum E<'a> {
    File(&'a str, Vec<u8>),
    /// A raw name (written into the header as is, bypassing the tar crate's checks).
    Raw(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// A bundle made by hand: `manifest` is signed with `k` exactly as given.
fn hand_made(manifest: &[u8], k: &SigningKey, entries: Vec<E>, meta_first: bool) -> Vec<u8> {
    let sig = format!("{}\n", signing::sign_hex(k, manifest));
    let public = format!("{}\n", signing::public_key_hex(k));
    let mut tar = tar::Builder::new(Vec::new());
    let add = |tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, data).unwrap();
    };
    let meta = |tar: &mut tar::Builder<Vec<u8>>| {
        add(tar, "manifest.json", manifest);
        add(tar, "manifest.sig", sig.as_bytes());
        add(tar, "manifest.pub", public.as_bytes());
    };
    if meta_first {
        meta(&mut tar);
    }
    for e in entries {
        match e {
            E::File(name, data) => add(&mut tar, name, &data),
            E::Raw(name, data) => {
                let mut h = tar::Header::new_gnu();
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                tar.append(&h, data.as_slice()).unwrap();
            }
            E::Symlink(name, target) | E::HardLink(name, target) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                tar.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    if !meta_first {
        meta(&mut tar);
    }
    let raw = tar.into_inner().unwrap();
    zstd::encode_all(raw.as_slice(), 3).unwrap()
}

fn check(b: &[u8]) -> Result<Manifest, VerifyError> {
    bundle::verify(Cursor::new(b), None)
}

#[test]
fn round_trip_returns_the_manifest() {
    let k = key(1);
    let b = build(&files(), &k);
    let m = check(&b).unwrap();
    assert_eq!(m, manifest_of(&files()));
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["app.bin", "docs/README.md", "empty.txt"]);
    // The archive holds the files under files/ with their bytes.
    let raw = zstd::decode_all(b.as_slice()).unwrap();
    let mut ar = tar::Archive::new(raw.as_slice());
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(e.header().mode().unwrap(), 0o644);
        assert_eq!(e.header().uid().unwrap(), 0);
        if name == "files/docs/README.md" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "# App\n");
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "manifest.json",
            "manifest.sig",
            "manifest.pub",
            "files/app.bin",
            "files/docs/README.md",
            "files/empty.txt"
        ]
    );
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let k = key(1);
    assert_eq!(build(&files(), &k), build(&files(), &k));
    assert_ne!(
        build(&files(), &k),
        build(&files(), &key(2)),
        "another key signs differently"
    );
}

#[test]
fn key_pinning_accepts_the_key_and_refuses_another() {
    let k = key(1);
    let b = build(&files(), &k);
    bundle::verify(Cursor::new(&b), Some(&k.verifying_key())).unwrap();
    let other = key(2).verifying_key();
    let e = bundle::verify(Cursor::new(&b), Some(&other)).unwrap_err();
    assert!(matches!(e, VerifyError::KeyMismatch { .. }), "{e}");
    assert_eq!(e.file(), "manifest.pub");
    assert!(e.to_string().contains(&signing::public_key_hex(&k)), "{e}");
}

#[test]
fn a_changed_file_is_named_with_both_digests() {
    let k = key(1);
    let m = manifest_of(&files()).to_bytes();
    let mut changed = vec![7u8; 100_000];
    changed[500] = 8;
    let b = hand_made(
        &m,
        &k,
        vec![
            E::File("files/app.bin", changed.clone()),
            E::File("files/docs/README.md", b"# App\n".to_vec()),
            E::File("files/empty.txt", vec![]),
        ],
        true,
    );
    let e = check(&b).unwrap_err();
    assert_eq!(
        e,
        VerifyError::Sha256Mismatch {
            file: "files/app.bin".into(),
            expected: sha(&[7u8; 100_000]),
            actual: sha(&changed),
        }
    );
    assert!(
        e.to_string()
            .starts_with("files/app.bin: sha256 mismatch (manifest ")
    );
}

#[test]
fn a_file_of_another_size_is_named() {
    let k = key(1);
    let m = manifest_of(&files()).to_bytes();
    let b = hand_made(
        &m,
        &k,
        vec![
            E::File("files/app.bin", vec![7u8; 100_000]),
            E::File("files/docs/README.md", b"# App!\n".to_vec()),
            E::File("files/empty.txt", vec![]),
        ],
        true,
    );
    let e = check(&b).unwrap_err();
    assert!(matches!(e, VerifyError::SizeMismatch { .. }), "{e}");
    assert_eq!(e.file(), "files/docs/README.md");
}

#[test]
fn a_missing_and_an_extra_file_are_named() {
    let k = key(1);
    let m = manifest_of(&files()).to_bytes();
    let b = hand_made(
        &m,
        &k,
        vec![
            E::File("files/app.bin", vec![7u8; 100_000]),
            E::File("files/empty.txt", vec![]),
        ],
        true,
    );
    assert_eq!(
        check(&b).unwrap_err(),
        VerifyError::Missing {
            file: "files/docs/README.md".into()
        }
    );
    let b = hand_made(
        &m,
        &k,
        vec![
            E::File("files/app.bin", vec![7u8; 100_000]),
            E::File("files/docs/README.md", b"# App\n".to_vec()),
            E::File("files/empty.txt", vec![]),
            E::File("files/backdoor.sh", b"rm -rf".to_vec()),
        ],
        true,
    );
    assert_eq!(
        check(&b).unwrap_err(),
        VerifyError::Extra {
            file: "files/backdoor.sh".into()
        }
    );
    let b = hand_made(&m, &k, vec![E::File("README", b"hi".to_vec())], true);
    assert_eq!(check(&b).unwrap_err().file(), "README");
}

#[test]
fn a_changed_manifest_fails_the_signature() {
    let k = key(1);
    let mut mf = manifest_of(&files());
    let good = mf.to_bytes();
    mf.files[0].sha256 = sha(b"evil");
    let evil = mf.to_bytes();
    let b = hand_made(&good, &k, vec![], true);
    // Replace the manifest's bytes after signing: re-pack with the good signature.
    let raw = zstd::decode_all(b.as_slice()).unwrap();
    let mut ar = tar::Archive::new(raw.as_slice());
    let mut out = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if name == "manifest.json" {
            data = evil.clone();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        out.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    let b = zstd::encode_all(out.into_inner().unwrap().as_slice(), 3).unwrap();
    let e = check(&b).unwrap_err();
    assert_eq!(e, VerifyError::BadSignature);
    assert_eq!(e.file(), "manifest.sig");
}

#[test]
fn a_manifest_that_is_not_json_is_named() {
    let k = key(1);
    let b = hand_made(b"{not json", &k, vec![], true);
    let e = check(&b).unwrap_err();
    assert!(matches!(e, VerifyError::Manifest(_)), "{e}");
    assert!(e.to_string().starts_with("manifest.json: "), "{e}");
    // Signed, valid JSON, but a traversal path inside the manifest.
    let mut mf = manifest_of(&files());
    mf.files[0].path = "../etc/passwd".into();
    let b = hand_made(&mf.to_bytes(), &k, vec![], true);
    let e = check(&b).unwrap_err();
    assert!(matches!(e, VerifyError::Manifest(_)), "{e}");
}

#[test]
fn unsafe_entries_are_refused() {
    let k = key(1);
    let m = manifest_of(&[]).to_bytes();
    for (entries, file) in [
        (
            vec![E::Raw("files/../../evil", b"x".to_vec())],
            "files/../../evil",
        ),
        (vec![E::Raw("/etc/passwd", b"x".to_vec())], "/etc/passwd"),
        (vec![E::Symlink("files/link", "/etc/passwd")], "files/link"),
        (
            vec![E::HardLink("files/hard", "manifest.json")],
            "files/hard",
        ),
    ] {
        let b = hand_made(&m, &k, entries, true);
        let e = check(&b).unwrap_err();
        assert!(matches!(e, VerifyError::Unsafe { .. }), "{file}: {e}");
        assert_eq!(e.file(), file);
    }
}

#[test]
fn files_before_the_manifest_are_refused() {
    let k = key(1);
    let m = manifest_of(&[("a.txt", b"a".to_vec())]).to_bytes();
    let b = hand_made(&m, &k, vec![E::File("files/a.txt", b"a".to_vec())], false);
    assert_eq!(
        check(&b).unwrap_err(),
        VerifyError::Order {
            file: "files/a.txt".into()
        }
    );
}

#[test]
fn a_truncated_bundle_is_reported() {
    let k = key(1);
    let b = build(&files(), &k);
    for cut in [b.len() - 1, b.len() / 2, 10] {
        let e = check(&b[..cut]).unwrap_err();
        assert!(
            matches!(e, VerifyError::Corrupt { .. }),
            "cut at {cut}: {e}"
        );
    }
    // Not zstd at all.
    let e = check(b"plain text").unwrap_err();
    assert!(matches!(e, VerifyError::Corrupt { .. }), "{e}");
    // An archive without the signature.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    tar.append_data(&mut h, "manifest.json", &b"{}"[..])
        .unwrap();
    let b = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
    assert_eq!(
        check(&b).unwrap_err(),
        VerifyError::Missing {
            file: "manifest.sig".into()
        }
    );
}

#[test]
fn write_refuses_content_that_differs_from_the_manifest() {
    let k = key(1);
    let m = manifest_of(&[("a.txt", b"abc".to_vec())]);
    for content in [&b"abd"[..], b"ab", b"abcd"] {
        let e = bundle::write(
            &mut Vec::new(),
            &m,
            [("a.txt".to_string(), Cursor::new(content.to_vec()))],
            &k,
        )
        .unwrap_err();
        assert!(
            matches!(e, bundle::WriteError::Content { ref path, .. } if path == "a.txt"),
            "{e}"
        );
    }
    let mut bad = m.clone();
    bad.files[0].path = "../x".into();
    assert!(matches!(
        bundle::write(
            &mut Vec::new(),
            &bad,
            Vec::<(String, Cursor<Vec<u8>>)>::new(),
            &k
        ),
        Err(bundle::WriteError::Manifest(_))
    ));
}

/// A large file streams through write and verify (bytes made on the fly).
#[test]
fn a_large_file_streams() {
    struct Gen(u64);
    impl Read for Gen {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let k = (b.len() as u64).min(self.0) as usize;
            for (i, x) in b[..k].iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            self.0 -= k as u64;
            Ok(k)
        }
    }
    const SIZE: u64 = 32 << 20;
    let mut h = Sha256::new();
    std::io::copy(&mut Gen(SIZE), &mut HashW(&mut h)).unwrap();
    struct HashW<'a>(&'a mut Sha256);
    impl std::io::Write for HashW<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let digest = hex::encode(h.finalize());
    let m = Manifest {
        files: vec![ManifestFile {
            path: "big.bin".into(),
            sha256: digest,
            size: SIZE,
        }],
        ..manifest_of(&[])
    };
    let mut out = Vec::new();
    bundle::write(&mut out, &m, [("big.bin".to_string(), Gen(SIZE))], &key(3)).unwrap();
    assert_eq!(check(&out).unwrap(), m);
}

// ---------------------------------------------------------------------------------------------
// create_for_release and blob pins, on both databases

struct Env {
    store: Store,
    blobs: Arc<FsBlobStore>,
    project: i64,
    job: i64,
    run: i64,
    _dir: tempfile::TempDir,
}

async fn env(db: &ouro_store::testing::TestDb) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let (store, project) = crate::support::store_with_project(&url).await;
    let mut tx = store.begin().await.unwrap();
    let run = q("INSERT INTO build_runs (project_id, repo_name, number, trigger_kind, git_ref, sha, actor, \
                 status, file, name, created_at) VALUES ($1, 'app', 1, 'push', 'refs/heads/main', $2, \
                 'user:alice', 'success', '.ouro/pipelines/ci.yml', 'ci', 1) RETURNING id")
    .bind(project)
    .bind("a".repeat(40))
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    let job = q("INSERT INTO build_jobs (run_id, job_key, name, status) VALUES ($1, 'build', 'build', 'success') RETURNING id")
        .bind(run)
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    tx.commit().await.unwrap();
    let blobs = Arc::new(FsBlobStore::new(dir.path().join("blobs"), None));
    Env {
        store,
        blobs,
        project,
        job,
        run,
        _dir: dir,
    }
}

/// A release row with `files` as its artifacts (stored in the blob store when `stored`).
async fn release(e: &Env, version: &str, files: &[(&str, &[u8])], stored: bool) -> i64 {
    let mut tx = e.store.begin().await.unwrap();
    let id = q("INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, created_at) \
                VALUES ($1, 1, $2, $3, $4, 'draft', '', 1700000000000) RETURNING id")
        .bind(e.project)
        .bind(version)
        .bind(format!("v{version}"))
        .bind("b".repeat(40))
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    for (path, content) in files {
        if stored {
            e.blobs.put(&mut &content[..], None).unwrap();
        }
        q("INSERT INTO release_artifacts (release_id, path, sha256, size) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(*path)
            .bind(sha(content))
            .bind(content.len() as i64)
            .execute(&mut tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    id
}

fn blobs_of(e: &Env) -> Arc<dyn BlobStore> {
    e.blobs.clone()
}

#[tokio::test]
async fn create_for_release_stores_a_verifiable_bundle_and_records_it() {
    for db in backends() {
        let e = env(&db).await;
        let k = key(9);
        let files: &[(&str, &[u8])] = &[("dist/app.tar.gz", b"app bytes"), ("SHA256SUMS", b"sums")];
        let id = release(&e, "1.0.0", files, true).await;
        let b = bundle::create_for_release(&e.store, blobs_of(&e), &k, id)
            .await
            .unwrap();
        let mut r = e.blobs.open(&b.sha256).unwrap().expect("bundle stored");
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, b.size);
        let m = bundle::verify(Cursor::new(&bytes), Some(&k.verifying_key())).unwrap();
        assert_eq!(
            (m.project.as_str(), m.version.as_str(), m.tag.as_str()),
            ("demo", "1.0.0", "v1.0.0"),
            "{}",
            db.name()
        );
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["SHA256SUMS", "dist/app.tar.gz"]);

        let mut c = e.store.read().await.unwrap();
        let row = q("SELECT bundle_sha256, bundle_size FROM release_releases WHERE id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(row.text("bundle_sha256").unwrap(), b.sha256);
        assert_eq!(row.i64("bundle_size").unwrap() as u64, b.size);
        let ev = q("SELECT subject_id, payload FROM events WHERE kind = 'release.bundled'")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert_eq!(ev.len(), 1, "{}", db.name());
        assert_eq!(ev[0].text("subject_id").unwrap(), id.to_string());
        assert!(ev[0].text("payload").unwrap().contains(&b.sha256));
        let pins: Vec<String> = q("SELECT sha256 FROM build_blob_pins WHERE owner = 'release' AND owner_id = $1 ORDER BY sha256")
            .bind(id)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.text("sha256").unwrap())
            .collect();
        let mut want = vec![sha(b"app bytes"), sha(b"sums"), b.sha256.clone()];
        want.sort();
        assert_eq!(pins, want, "{}", db.name());
        let found = bundle::find(&mut c, "demo", "1.0.0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.0, "demo-1.0.0.tar.zst");
        assert_eq!(found.1, b);
        assert!(
            bundle::find(&mut c, "demo", "9.9.9")
                .await
                .unwrap()
                .is_none()
        );
        drop(c);

        // Bundling again gives the same bytes; the pins are not duplicated.
        let again = bundle::create_for_release(&e.store, blobs_of(&e), &k, id)
            .await
            .unwrap();
        assert_eq!(again, b, "{}", db.name());
        let mut c = e.store.read().await.unwrap();
        let n = q("SELECT COUNT(*) AS n FROM build_blob_pins WHERE owner_id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .i64("n")
            .unwrap();
        assert_eq!(n, 3);
    }
}

#[tokio::test]
async fn a_missing_artifact_blob_refuses_the_bundle() {
    for db in backends() {
        let e = env(&db).await;
        let id = release(&e, "1.0.0", &[("gone.bin", b"never stored")], false).await;
        let err = bundle::create_for_release(&e.store, blobs_of(&e), &key(9), id)
            .await
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::ReleaseArtifactsUnavailable,
            "{}",
            db.name()
        );
        assert!(err.message.contains("gone.bin"), "{}", err.message);
        assert_eq!(
            err.details.unwrap()["missing"],
            serde_json::json!(["gone.bin"])
        );
        let mut c = e.store.read().await.unwrap();
        let row = q("SELECT bundle_sha256 FROM release_releases WHERE id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(row.opt_text("bundle_sha256").unwrap(), None);
        let n = q("SELECT COUNT(*) AS n FROM events WHERE kind = 'release.bundled'")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .i64("n")
            .unwrap();
        assert_eq!(n, 0);
        // An unknown release.
        let err = bundle::create_for_release(&e.store, blobs_of(&e), &key(9), id + 100)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ReleaseBundleNotFound);
    }
}

#[tokio::test]
async fn gc_keeps_expired_artifacts_pinned_by_a_release() {
    for db in backends() {
        let e = env(&db).await;
        let mut tx = e.store.begin().await.unwrap();
        for (path, content) in [
            ("released.bin", &b"released"[..]),
            ("scratch.bin", b"scratch"),
        ] {
            e.blobs.put(&mut &content[..], None).unwrap();
            q("INSERT INTO build_artifacts (project_id, run_id, job_id, path, sha256, size, expires_at, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6, 1, 1)")
                .bind(e.project)
                .bind(e.run)
                .bind(e.job)
                .bind(path)
                .bind(sha(content))
                .bind(content.len() as i64)
                .execute(&mut tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let id = release(&e, "2.0.0", &[("released.bin", b"released")], false).await;
        let b = bundle::create_for_release(&e.store, blobs_of(&e), &key(9), id)
            .await
            .unwrap();
        let now = ouro_core::time::now_ms() + 60_000;
        let r = artifacts::gc(&e.store, blobs_of(&e), now, 0).await.unwrap();
        assert_eq!((r.rows, r.blobs), (2, 1), "{}", db.name());
        assert!(e.blobs.exists(&sha(b"released")).unwrap(), "{}", db.name());
        assert!(e.blobs.exists(&b.sha256).unwrap(), "the bundle is pinned");
        assert!(!e.blobs.exists(&sha(b"scratch")).unwrap(), "{}", db.name());
        // Once unpinned, the next GC removes them.
        let mut tx = e.store.begin().await.unwrap();
        let n = ouro_build::blobs::unpin_all(&mut tx, "release", id)
            .await
            .unwrap();
        assert_eq!(n, 2);
        tx.commit().await.unwrap();
        let r = artifacts::gc(&e.store, blobs_of(&e), now, 0).await.unwrap();
        assert_eq!(r.blobs, 2, "{}", db.name());
    }
}
