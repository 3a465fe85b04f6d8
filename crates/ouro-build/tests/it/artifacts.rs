//! Artifacts and caches at the domain level, on both databases: collecting files (no escaping
//! the workspace, size limits), `expire-in`, uploads checked against the attempt token, needed
//! artifacts, cache lookup (exact, prefix), LRU eviction, the expiry GC, the cache archive, and a
//! real ShellExecutor job end to end through `JobFiles` + `InProcessTransfer`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use ouro_build::artifacts::{
    self, InProcessTransfer, JobFiles, Limits, StorageSettings, Upload, collect, parse_expire_in,
};
use ouro_build::blobs::{BlobStore, FsBlobStore};
use ouro_build::cache;
use ouro_build::exec::{
    ExecEvent, Executor, JobContext, JobHooks, JobSpec, JobStatus, ShellExecutor, StepSpec,
};
use ouro_build::runs;
use ouro_core::{ErrorCode, OuroError};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{Store, q};

struct Env {
    store: Store,
    blobs: Arc<dyn BlobStore>,
    /// The data-dir store's root (for the tests of the data-dir store only).
    fs_root: std::path::PathBuf,
    /// The S3 server when `blobs` is in S3.
    _moto: Option<ouro_build::testing::Moto>,
    project: i64,
    run: i64,
    _dir: tempfile::TempDir,
}

async fn env(db: &TestDb) -> Env {
    env_on(db, false).await.expect("the data-dir store")
}

/// The blob stores the artifact flows are checked on: the data dir, and S3 when moto is there.
const STORES: [bool; 2] = [false, true];

/// An environment whose blobs are in the data dir, or in S3 (`None` when moto is missing).
async fn env_on(db: &TestDb, s3: bool) -> Option<Env> {
    let moto = if s3 {
        Some(ouro_build::testing::moto()?)
    } else {
        None
    };
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let migrations = [
        ouro_store::PLATFORM_MIGRATIONS,
        ouro_code::MIGRATIONS,
        ouro_build::MIGRATIONS,
    ]
    .concat();
    let store = Store::open(&url, &migrations).await.unwrap();
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await.unwrap();
    let project = q(
        "INSERT INTO projects (slug, name, description, visibility, created_at, updated_at) \
                     VALUES ('demo', 'Demo', '', 'private', $1, $1) RETURNING id",
    )
    .bind(now)
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    let run = q("INSERT INTO build_runs (project_id, repo_name, number, trigger_kind, git_ref, sha, actor, \
                 status, file, name, created_at) VALUES ($1, 'app', 1, 'push', 'refs/heads/main', $2, \
                 'user:alice', 'queued', '.ouro/pipelines/ci.yml', 'ci', $3) RETURNING id")
    .bind(project)
    .bind("a".repeat(40))
    .bind(now)
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    for (key, needs) in [("build", "[]"), ("test", "[\"build\"]"), ("other", "[]")] {
        q("INSERT INTO build_jobs (run_id, job_key, name, needs, status) VALUES ($1, $2, $2, $3, 'queued')")
            .bind(run)
            .bind(key)
            .bind(needs)
            .execute(&mut tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let fs = FsBlobStore::in_data_dir(dir.path(), None);
    let fs_root = fs.root().to_path_buf();
    let blobs: Arc<dyn BlobStore> = match &moto {
        Some(m) => Arc::new(m.store(&m.bucket("artifacts"), None)),
        None => Arc::new(fs),
    };
    Some(Env {
        store,
        blobs,
        fs_root,
        _moto: moto,
        project,
        run,
        _dir: dir,
    })
}

/// Claims the next job; it must be `key`.
async fn claim(e: &Env, key: &str) -> runs::Claim {
    let c = runs::claim_next(&e.store, "r1", 60_000)
        .await
        .unwrap()
        .expect("a claimable job");
    assert_eq!(c.job.key, key);
    c
}

fn code(e: ouro_store::StoreError) -> ErrorCode {
    OuroError::from(e).code
}

async fn upload(
    e: &Env,
    job: i64,
    token: &str,
    path: &str,
    data: &[u8],
) -> Result<artifacts::Artifact, ErrorCode> {
    artifacts::store_upload(
        &e.store,
        e.blobs.clone(),
        &StorageSettings::default(),
        Upload {
            job_id: job,
            token,
            path,
            expire_in: None,
        },
        Box::new(std::io::Cursor::new(data.to_vec())),
    )
    .await
    .map_err(code)
}

fn read_blob(b: &Arc<dyn BlobStore>, sha: &str) -> Vec<u8> {
    let mut out = Vec::new();
    b.open(sha).unwrap().unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn expire_in_is_parsed() {
    let day = 86_400_000;
    assert_eq!(parse_expire_in("30 days").unwrap(), Some(30 * day));
    assert_eq!(parse_expire_in("1 week").unwrap(), Some(7 * day));
    assert_eq!(parse_expire_in("2h").unwrap(), Some(2 * 3_600_000));
    assert_eq!(
        parse_expire_in("1 day 12 hours").unwrap(),
        Some(day + 12 * 3_600_000)
    );
    assert_eq!(parse_expire_in("45 minutes").unwrap(), Some(45 * 60_000));
    assert_eq!(parse_expire_in("never").unwrap(), None);
    for bad in ["", "soon", "3", "days", "3 fortnights", "-1 day"] {
        let e = parse_expire_in(bad).unwrap_err();
        assert!(e.contains("expire-in"), "{bad}: {e}");
    }
}

fn limits() -> Limits {
    Limits {
        max_file_bytes: 1000,
        max_job_bytes: 1500,
    }
}

#[test]
fn collect_takes_globs_and_directories_inside_the_workspace() {
    let d = tempfile::tempdir().unwrap();
    let ws = d.path();
    std::fs::create_dir_all(ws.join("out/sub")).unwrap();
    std::fs::write(ws.join("out/report.txt"), "r").unwrap();
    std::fs::write(ws.join("out/sub/deep.bin"), "dd").unwrap();
    std::fs::write(ws.join("a.log"), "aaa").unwrap();
    std::fs::write(ws.join("b.txt"), "b").unwrap();
    let files = collect(
        ws,
        &["out".into(), "*.log".into(), "nothing/*".into()],
        limits(),
    )
    .unwrap();
    let names: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    assert_eq!(
        names,
        [("a.log", 3), ("out/report.txt", 1), ("out/sub/deep.bin", 2)]
    );
}

#[test]
fn collect_refuses_escaping_the_workspace() {
    let d = tempfile::tempdir().unwrap();
    let ws = d.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(d.path().join("secret"), "s").unwrap();
    for bad in ["../secret", "/etc/passwd", "out/../../secret"] {
        let e = collect(&ws, &[bad.into()], limits()).unwrap_err();
        assert!(e.contains("without `..`"), "{bad}: {e}");
    }
    std::os::unix::fs::symlink(d.path().join("secret"), ws.join("link")).unwrap();
    let e = collect(&ws, &["link".into()], limits()).unwrap_err();
    assert!(e.contains("outside the workspace"), "{e}");
    std::os::unix::fs::symlink(d.path(), ws.join("dirlink")).unwrap();
    let e = collect(&ws, &["dirlink/secret".into()], limits()).unwrap_err();
    assert!(e.contains("outside the workspace"), "{e}");
    // A symlink inside the workspace is fine.
    std::fs::write(ws.join("real.txt"), "x").unwrap();
    std::os::unix::fs::symlink("real.txt", ws.join("inside")).unwrap();
    let files = collect(&ws, &["inside".into()], limits()).unwrap();
    assert_eq!(files[0].path, "inside");
}

#[test]
fn collect_enforces_the_size_limits() {
    let d = tempfile::tempdir().unwrap();
    let ws = d.path();
    std::fs::write(ws.join("big"), vec![0u8; 1001]).unwrap();
    let e = collect(ws, &["big".into()], limits()).unwrap_err();
    assert!(
        e.contains("more than the limit of 1000 bytes per file"),
        "{e}"
    );
    std::fs::write(ws.join("one"), vec![0u8; 800]).unwrap();
    std::fs::write(ws.join("two"), vec![0u8; 800]).unwrap();
    let e = collect(ws, &["one".into(), "two".into()], limits()).unwrap_err();
    assert!(
        e.contains("1600 bytes, more than the limit of 1500 bytes per job"),
        "{e}"
    );
}

#[test]
fn the_cache_archive_keeps_modes_and_inner_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("c/bin")).unwrap();
    std::fs::write(s.join("c/bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(s.join("c/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(s.join("c/data"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("bin/tool", s.join("c/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.join("c/outside")).unwrap();
    let mut buf = Vec::new();
    let n = cache::write_archive(s, &["c".into()], &mut buf).unwrap();
    assert_eq!(n, 2);
    let dst = tempfile::tempdir().unwrap();
    let d = dst.path();
    let n = cache::extract_archive(&mut &buf[..], d).unwrap();
    assert_eq!(n, 2);
    assert_eq!(std::fs::read(d.join("c/data")).unwrap(), vec![7u8; 100_000]);
    let mode = std::fs::metadata(d.join("c/bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(d.join("c/link")).unwrap(),
        Path::new("bin/tool")
    );
    assert!(
        std::fs::symlink_metadata(d.join("c/outside")).is_err(),
        "a link out is not kept"
    );
    // Extracting never writes through a symlink of the workspace.
    let evil = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(target.path(), evil.path().join("c")).unwrap();
    cache::extract_archive(&mut &buf[..], evil.path()).unwrap();
    assert!(
        std::fs::read_dir(target.path()).unwrap().next().is_none(),
        "nothing written through the link"
    );
    assert!(
        std::fs::symlink_metadata(evil.path().join("c"))
            .unwrap()
            .is_dir()
    );
    assert!(cache::extract_archive(&mut &b"not an archive"[..], d).is_err());
}

#[tokio::test]
async fn uploads_need_the_current_attempt_token() {
    for (db, s3) in backends()
        .into_iter()
        .flat_map(|d| STORES.map(|s| (d.clone(), s)))
    {
        let Some(e) = env_on(&db, s3).await else {
            continue;
        };
        let c = claim(&e, "build").await;
        assert_eq!(
            upload(&e, c.job.id, "att_wrong", "out/a.txt", b"x")
                .await
                .unwrap_err(),
            ErrorCode::StaleAttempt,
            "{}",
            db.name()
        );
        let a = upload(&e, c.job.id, &c.token, "out/a.txt", b"hello")
            .await
            .unwrap();
        assert_eq!(
            (a.path.as_str(), a.size, a.job.as_str()),
            ("out/a.txt", 5, "build")
        );
        assert!(
            a.expires_at.unwrap() > a.created_at + 29 * 86_400_000,
            "default 30 days"
        );
        assert_eq!(read_blob(&e.blobs, &a.sha256), b"hello");
        for bad in ["../x", "/abs", ""] {
            assert_eq!(
                upload(&e, c.job.id, &c.token, bad, b"x").await.unwrap_err(),
                ErrorCode::ValidationFailed,
                "{bad}"
            );
        }
        // The job ends: its token is stale from then on.
        runs::finish_job(&e.store, c.job.id, &c.token, "success", Some(0))
            .await
            .unwrap();
        assert_eq!(
            upload(&e, c.job.id, &c.token, "late.txt", b"x")
                .await
                .unwrap_err(),
            ErrorCode::StaleAttempt
        );
        let list = artifacts::list_for_run(&mut e.store.read().await.unwrap(), e.run)
            .await
            .unwrap();
        assert_eq!(list.len(), 1);
        let kinds: Vec<String> =
            q("SELECT kind FROM events WHERE kind = 'build.artifacts_uploaded'")
                .fetch_all(&mut e.store.read().await.unwrap())
                .await
                .unwrap()
                .iter()
                .map(|r| r.text("kind").unwrap())
                .collect();
        assert_eq!(kinds.len(), 1, "{}", db.name());
    }
}

#[tokio::test]
async fn upload_limits_and_storage_full() {
    for db in backends() {
        let e = env(&db).await;
        let c = claim(&e, "build").await;
        let settings = StorageSettings {
            max_file_bytes: 100,
            max_job_bytes: 150,
            ..Default::default()
        };
        let up = |path: &'static str, n: usize, blobs: Arc<dyn BlobStore>| {
            let (store, token, settings) = (e.store.clone(), c.token.clone(), settings.clone());
            let job = c.job.id;
            async move {
                artifacts::store_upload(
                    &store,
                    blobs,
                    &settings,
                    Upload {
                        job_id: job,
                        token: &token,
                        path,
                        expire_in: Some("1 week"),
                    },
                    Box::new(std::io::Cursor::new(vec![path.len() as u8; n])),
                )
                .await
                .map_err(code)
            }
        };
        assert_eq!(
            up("a", 101, e.blobs.clone()).await.unwrap_err(),
            ErrorCode::ArtifactTooLarge
        );
        up("a", 100, e.blobs.clone()).await.unwrap();
        assert_eq!(
            up("bb", 60, e.blobs.clone()).await.unwrap_err(),
            ErrorCode::ArtifactTooLarge
        );
        up("bb", 50, e.blobs.clone()).await.unwrap();
        // A store that is full: 507, nothing recorded.
        let full: Arc<dyn BlobStore> = Arc::new(FsBlobStore::new(e.fs_root.clone(), Some(160)));
        assert_eq!(full.usage().unwrap(), 150);
        assert_eq!(up("a", 20, full).await.unwrap_err(), ErrorCode::StorageFull);
        let list = artifacts::list_for_run(&mut e.store.read().await.unwrap(), e.run)
            .await
            .unwrap();
        assert_eq!(list.len(), 2, "{}", db.name());
        assert_eq!(
            list.iter().find(|a| a.path == "a").unwrap().size,
            100,
            "the old one is kept"
        );
    }
}

#[tokio::test]
async fn downstream_jobs_get_the_artifacts_of_the_jobs_they_need() {
    for (db, s3) in backends()
        .into_iter()
        .flat_map(|d| STORES.map(|s| (d.clone(), s)))
    {
        let Some(e) = env_on(&db, s3).await else {
            continue;
        };
        let b = claim(&e, "build").await;
        upload(&e, b.job.id, &b.token, "out/bin", b"binary")
            .await
            .unwrap();
        runs::finish_job(&e.store, b.job.id, &b.token, "success", Some(0))
            .await
            .unwrap();
        let o = claim(&e, "test").await;
        let other = claim(&e, "other").await;
        upload(&e, other.job.id, &other.token, "o.txt", b"o")
            .await
            .unwrap();
        let mut c = e.store.read().await.unwrap();
        let got = artifacts::needed(&mut c, &o.job).await.unwrap();
        assert_eq!(got.len(), 1, "{}", db.name());
        assert_eq!(
            (got[0].job.as_str(), got[0].path.as_str()),
            ("build", "out/bin")
        );
        assert!(
            artifacts::needed(&mut c, &other.job)
                .await
                .unwrap()
                .is_empty()
        );
        let one = artifacts::get(&mut c, e.run, got[0].id).await.unwrap();
        assert_eq!(one.sha256, got[0].sha256);
        assert_eq!(
            code(artifacts::get(&mut c, e.run, 9999).await.unwrap_err()),
            ErrorCode::ArtifactNotFound
        );
    }
}

fn blob(b: &Arc<dyn BlobStore>, data: &[u8]) -> ouro_build::blobs::BlobRef {
    b.put(&mut &data[..], None).unwrap()
}

#[tokio::test]
async fn cache_lookup_exact_then_newest_prefix_and_lru_eviction() {
    for db in backends() {
        let e = env(&db).await;
        let p = e.project;
        assert!(
            cache::lookup(&e.store, p, "k", &[])
                .await
                .unwrap()
                .is_none()
        );
        let quota = 250;
        let s1 = cache::save(
            &e.store,
            p,
            "deps-linux-aaa",
            &blob(&e.blobs, &[1; 100]),
            quota,
        )
        .await
        .unwrap();
        assert!(s1.saved);
        let again = cache::save(
            &e.store,
            p,
            "deps-linux-aaa",
            &blob(&e.blobs, &[9; 10]),
            quota,
        )
        .await
        .unwrap();
        assert!(!again.saved, "an existing key is never overwritten");
        cache::save(
            &e.store,
            p,
            "deps-linux-bbb",
            &blob(&e.blobs, &[2; 100]),
            quota,
        )
        .await
        .unwrap();
        let hit = cache::lookup(&e.store, p, "deps-linux-bbb", &["deps-".into()])
            .await
            .unwrap()
            .unwrap();
        assert!(hit.exact);
        assert_eq!(hit.entry.key, "deps-linux-bbb");
        let hit = cache::lookup(
            &e.store,
            p,
            "deps-linux-ccc",
            &["nope-".into(), "deps-linux-".into()],
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!hit.exact);
        assert_eq!(hit.entry.key, "deps-linux-bbb", "the newest match");
        assert!(
            cache::lookup(&e.store, p, "x", &["other-".into()])
                .await
                .unwrap()
                .is_none()
        );
        // Use aaa so bbb is the least recently used; a third entry evicts bbb.
        cache::lookup(&e.store, p, "deps-linux-aaa", &[])
            .await
            .unwrap()
            .unwrap();
        let s3 = cache::save(
            &e.store,
            p,
            "deps-mac-ccc",
            &blob(&e.blobs, &[3; 100]),
            quota,
        )
        .await
        .unwrap();
        assert_eq!(
            s3.evicted,
            vec!["deps-linux-bbb".to_string()],
            "{}",
            db.name()
        );
        let keys: Vec<String> = cache::list(&mut e.store.read().await.unwrap(), p)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(keys, ["deps-mac-ccc", "deps-linux-aaa"]);
        let err = cache::save(&e.store, p, "huge", &blob(&e.blobs, &[4; 300]), quota)
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::ArtifactTooLarge);
    }
}

#[tokio::test]
async fn gc_removes_expired_rows_and_unreferenced_blobs_only() {
    for (db, s3) in backends()
        .into_iter()
        .flat_map(|d| STORES.map(|s| (d.clone(), s)))
    {
        let Some(e) = env_on(&db, s3).await else {
            continue;
        };
        let c = claim(&e, "build").await;
        let keep = upload(&e, c.job.id, &c.token, "keep.txt", b"keep")
            .await
            .unwrap();
        let shared = upload(&e, c.job.id, &c.token, "shared.txt", b"shared")
            .await
            .unwrap();
        let old = upload(&e, c.job.id, &c.token, "old.txt", b"old")
            .await
            .unwrap();
        let old_same = upload(&e, c.job.id, &c.token, "old-shared.txt", b"shared")
            .await
            .unwrap();
        let cached = blob(&e.blobs, b"cache archive");
        cache::save(&e.store, e.project, "k", &cached, 1000)
            .await
            .unwrap();
        let orphan = blob(&e.blobs, b"orphan");
        let mut tx = e.store.begin().await.unwrap();
        q("UPDATE build_artifacts SET expires_at = 1 WHERE id = $1 OR id = $2")
            .bind(old.id)
            .bind(old_same.id)
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let now = ouro_core::time::now_ms();
        // With a grace period, fresh blobs are kept even when unreferenced.
        let r = artifacts::gc(&e.store, e.blobs.clone(), now, 3_600_000)
            .await
            .unwrap();
        assert_eq!((r.rows, r.blobs), (2, 0), "{}", db.name());
        assert!(e.blobs.exists(&old.sha256).unwrap());
        let r = artifacts::gc(&e.store, e.blobs.clone(), now + 10_000, 0)
            .await
            .unwrap();
        assert_eq!((r.rows, r.blobs), (0, 2), "{}", db.name());
        assert!(!e.blobs.exists(&old.sha256).unwrap());
        assert!(!e.blobs.exists(&orphan.sha256).unwrap());
        for kept in [&keep.sha256, &shared.sha256, &cached.sha256] {
            assert!(e.blobs.exists(kept).unwrap());
        }
        let left: Vec<String> = artifacts::list_for_run(&mut e.store.read().await.unwrap(), e.run)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.path)
            .collect();
        assert_eq!(left, ["keep.txt", "shared.txt"]);
    }
}

/// Runs `job` with hooks; returns the outcome and the job log text.
async fn run_job(
    root: &Path,
    job: &JobSpec,
    hooks: Arc<dyn JobHooks>,
) -> (ouro_build::exec::JobOutcome, String) {
    let ex = ShellExecutor::new(root);
    let (mut ctx, mut rx, _cancel) = JobContext::channel(64);
    ctx.hooks = Some(hooks);
    let drain = async {
        let mut text = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let ExecEvent::Log { data, .. } = ev {
                text.extend_from_slice(&data);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    };
    let (out, text) = tokio::join!(ex.run(job, ctx), drain);
    (out.unwrap(), text)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository with `lock.txt` at two commits (v1, v2).
fn lock_repo() -> (tempfile::TempDir, String, String) {
    let d = tempfile::tempdir().unwrap();
    git(d.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(d.path().join("lock.txt"), "v1\n").unwrap();
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-q", "-m", "v1"]);
    let v1 = git(d.path(), &["rev-parse", "HEAD"]);
    std::fs::write(d.path().join("lock.txt"), "v2\n").unwrap();
    git(d.path(), &["commit", "-q", "-am", "v2"]);
    let v2 = git(d.path(), &["rev-parse", "HEAD"]);
    (d, v1, v2)
}

fn spec(id: &str, script: &str) -> JobSpec {
    JobSpec {
        id: id.into(),
        steps: vec![StepSpec {
            name: "main".into(),
            run: script.into(),
            ..Default::default()
        }],
        env: BTreeMap::new(),
        ..Default::default()
    }
}

fn files(e: &Env, c: &runs::Claim, arts: bool, key: Option<&str>) -> Arc<JobFiles> {
    let transfer = Arc::new(InProcessTransfer {
        store: e.store.clone(),
        blobs: e.blobs.clone(),
        settings: StorageSettings::default(),
        job_id: c.job.id,
        token: c.token.clone(),
    });
    let artifacts = arts.then(|| ouro_build::pipeline::Artifacts {
        paths: vec!["out/".into()],
        expire_in: Some("2h".into()),
        reports: None,
    });
    let cache = key.map(|key| ouro_build::pipeline::Cache {
        key: key.into(),
        paths: vec![".cache".into()],
        restore_keys: vec!["deps-".into()],
    });
    Arc::new(JobFiles::new(
        transfer,
        artifacts,
        cache,
        ouro_build::expr::Context::new(),
        Limits::from(&StorageSettings::default()),
    ))
}

const KEY: &str = "deps-${{ hashFiles('lock.txt') }}";

#[tokio::test]
async fn a_real_job_uploads_artifacts_saves_its_cache_and_the_next_job_gets_both() {
    for db in backends() {
        let e = env(&db).await;
        let root = tempfile::tempdir().unwrap();
        let (repo, v1, v2) = lock_repo();
        let at = |sha: &str, mut s: JobSpec| {
            s.checkout = Some(ouro_build::exec::Checkout {
                repo: repo.path().to_path_buf(),
                sha: sha.into(),
            });
            s
        };
        let b = claim(&e, "build").await;
        let script = "mkdir -p out .cache\nprintf 'report \\x00\\xff\\n' > out/report.txt\necho cached > .cache/data.txt\n";
        let (out, log) = run_job(
            root.path(),
            &at(&v1, spec("build", script)),
            files(&e, &b, true, Some(KEY)),
        )
        .await;
        assert_eq!(out.status, JobStatus::Success, "{log}");
        assert!(log.contains("cache miss: key deps-"), "{log}");
        assert!(log.contains("cache saved: key deps-"), "{log}");
        assert!(log.contains("artifacts: uploaded 1 file(s)"), "{log}");
        let arts = artifacts::list_for_run(&mut e.store.read().await.unwrap(), e.run)
            .await
            .unwrap();
        assert_eq!(arts.len(), 1, "{}", db.name());
        assert_eq!(arts[0].path, "out/report.txt");
        assert_eq!(
            read_blob(&e.blobs, &arts[0].sha256),
            b"report \x00\xff\n",
            "byte-exact"
        );
        let exp = arts[0].expires_at.unwrap() - arts[0].created_at;
        assert!(
            (7_000_000..=7_300_000).contains(&exp),
            "expire-in 2h: {exp}"
        );
        runs::finish_job(&e.store, b.job.id, &b.token, "success", Some(0))
            .await
            .unwrap();

        let t = claim(&e, "test").await;
        let script = "test \"$(cat .cache/data.txt)\" = cached\ncmp out/report.txt <(printf 'report \\x00\\xff\\n')\n";
        let (out, log) = run_job(
            root.path(),
            &at(&v2, spec("test", script)),
            files(&e, &t, false, Some(KEY)),
        )
        .await;
        assert_eq!(out.status, JobStatus::Success, "{log}");
        assert!(
            log.contains("artifacts: 1 file(s) from needed jobs"),
            "{log}"
        );
        assert!(log.contains("cache hit: key deps-"), "{log}");
        assert!(
            log.contains("(restore key)"),
            "lock.txt differs at v2: the exact key misses, the restore key hits: {log}"
        );
        assert!(
            log.contains("cache saved: key deps-"),
            "saved under the new key: {log}"
        );
        runs::finish_job(&e.store, t.job.id, &t.token, "success", Some(0))
            .await
            .unwrap();

        // A failing job saves neither its cache nor its artifacts.
        let o = claim(&e, "other").await;
        let script = "mkdir -p out .cache\necho x > out/x\necho y > .cache/y\nexit 3\n";
        let (out, log) = run_job(
            root.path(),
            &at(&v2, spec("other", script)),
            files(&e, &o, true, Some("other-${{ hashFiles('lock.txt') }}")),
        )
        .await;
        assert_eq!(out.status, JobStatus::Failure, "{log}");
        assert!(log.contains("(restore key)"), "restored from deps-: {log}");
        assert!(!log.contains("cache saved"), "{log}");
        let caches = cache::list(&mut e.store.read().await.unwrap(), e.project)
            .await
            .unwrap();
        assert_eq!(caches.len(), 2, "{}: {caches:?}", db.name());
        assert!(caches.iter().all(|c| c.key.starts_with("deps-")));
        let arts = artifacts::list_for_run(&mut e.store.read().await.unwrap(), e.run)
            .await
            .unwrap();
        assert_eq!(arts.len(), 1);
    }
}
