//! Releases on both databases: a draft from a successful run pins its artifacts, publishing tags
//! the repository, withdrawing keeps the tag; published releases are immutable; duplicate
//! versions and existing tags are 409s; failed runs, expired artifacts and missing blobs are
//! refused with the reason; notes edits use the revision; the ledger gets every change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ouro_build::blobs::{BlobStore, FsBlobStore};
use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_release::releases::{self, NewRelease};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{Store, StoreError, q};

struct Env {
    store: Store,
    env: releases::Env,
    project: i64,
    repo_id: i64,
    git_dir: PathBuf,
    work: PathBuf,
    blobs: Arc<FsBlobStore>,
    actor: Actor,
    _dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn env(db: &TestDb) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let store = crate::support::open_store(&url).await;
    let sys = Actor::System("test");
    let user = ouro_store::accounts::create_user(&store, &sys, "ada", "ada-password-1", true)
        .await
        .unwrap();
    let project = ouro_store::projects::create(
        &store,
        &user,
        "demo",
        "Demo",
        "",
        ouro_store::projects::Visibility::Private,
    )
    .await
    .unwrap();
    let data_dir = dir.path().join("data");
    let root = ouro_code::repos::root(&data_dir);
    let repo = ouro_code::repos::create(
        &store,
        &root,
        (project.id, "demo"),
        &sys,
        &ouro_code::repos::NewRepo {
            name: "app".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let git_dir = repo.dir(&root);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let blobs = Arc::new(FsBlobStore::in_data_dir(&data_dir, None));
    Env {
        env: releases::Env {
            data_dir,
            blobs: blobs.clone(),
        },
        store,
        project: project.id,
        repo_id: repo.id,
        git_dir,
        work,
        blobs,
        actor: Actor::User {
            id: user.id,
            name: "ada".into(),
        },
        _dir: dir,
    }
}

impl Env {
    /// Commits `msg` and pushes it to the hosted repository; returns the sha.
    fn commit(&self, msg: &str) -> String {
        let f = self.work.join("log.txt");
        let mut text = std::fs::read_to_string(&f).unwrap_or_default();
        text.push_str(msg);
        text.push('\n');
        std::fs::write(&f, text).unwrap();
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", msg]);
        let dst = self.git_dir.to_string_lossy().into_owned();
        git(&self.work, &["push", "-q", &dst, "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// A pipeline run of `sha` with `status` and one job with the given artifacts
    /// `(path, content, expires_at)`; returns the run number.
    async fn run(&self, sha: &str, status: &str, files: &[(&str, &str, Option<i64>)]) -> i64 {
        let mut tx = self.store.begin().await.unwrap();
        let number =
            q("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM build_runs WHERE project_id = $1")
                .bind(self.project)
                .fetch_one(&mut tx)
                .await
                .unwrap()
                .i64("n")
                .unwrap();
        let run_id = q("INSERT INTO build_runs (project_id, repo_id, repo_name, number, trigger_kind, \
             git_ref, sha, actor, status, file, name, created_at) VALUES ($1, $2, 'app', $3, 'push', \
             'refs/heads/main', $4, 'user:ada', $5, '.ouro/pipelines/ci.yml', 'ci', 1) RETURNING id")
        .bind(self.project)
        .bind(self.repo_id)
        .bind(number)
        .bind(sha)
        .bind(status)
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
        let job_id = q("INSERT INTO build_jobs (run_id, job_key, name, status) VALUES ($1, 'build', 'build', $2) RETURNING id")
            .bind(run_id)
            .bind(status)
            .fetch_one(&mut tx)
            .await
            .unwrap()
            .i64("id")
            .unwrap();
        for (path, content, expires) in files {
            let blob = self.blobs.put(&mut content.as_bytes(), None).unwrap();
            q("INSERT INTO build_artifacts (project_id, run_id, job_id, path, sha256, size, expires_at, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, 1)")
            .bind(self.project)
            .bind(run_id)
            .bind(job_id)
            .bind(*path)
            .bind(blob.sha256.as_str())
            .bind(blob.size as i64)
            .bind(*expires)
            .execute(&mut tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        number
    }

    fn req(&self, run: i64, version: Option<&str>) -> NewRelease {
        NewRelease {
            repo: "app".into(),
            run,
            version: version.map(str::to_string),
            ..Default::default()
        }
    }

    async fn events(&self, kind: &str) -> i64 {
        q("SELECT COUNT(*) AS n FROM events WHERE kind = $1")
            .bind(kind)
            .fetch_one(&mut self.store.read().await.unwrap())
            .await
            .unwrap()
            .i64("n")
            .unwrap()
    }
}

fn code(r: Result<impl std::fmt::Debug, StoreError>) -> ErrorCode {
    OuroError::from(r.expect_err("must fail")).code
}

#[tokio::test]
async fn draft_publish_withdraw_with_tag_and_events() {
    for db in backends() {
        let e = env(&db).await;
        e.commit("chore: start");
        let sha = e.commit("feat: greet people (DEMO-1)");
        let run = e
            .run(&sha, "success", &[("dist/app.tar", "bytes", None)])
            .await;
        let d = releases::create(
            &e.store,
            &e.env,
            &e.actor,
            e.project,
            &e.req(run, Some("v1.0.0")),
        )
        .await
        .unwrap();
        let r = &d.release;
        assert_eq!(
            (r.version.as_str(), r.tag.as_str(), r.state.as_str()),
            ("1.0.0", "v1.0.0", "draft"),
            "{}",
            db.name()
        );
        assert_eq!(r.sha, sha);
        assert_eq!(r.run, Some(run));
        assert_eq!(r.created_by.as_deref(), Some("ada"));
        assert_eq!(d.artifacts.len(), 1);
        assert_eq!(d.artifacts[0].path, "dist/app.tar");
        assert_eq!(d.artifacts[0].size, 5);
        assert!(
            r.notes.contains("greet people"),
            "generated notes: {}",
            r.notes
        );
        assert!(
            !releases::tag_present(&e.git_dir, "v1.0.0").await,
            "a draft has no tag"
        );

        // Notes edit with a stale revision, then a good one.
        let stale = releases::edit_notes(
            &e.store,
            &e.actor,
            e.project,
            "1.0.0",
            "x",
            Some(r.revision + 5),
        )
        .await;
        assert_eq!(code(stale), ErrorCode::StaleVersion);
        let edited = releases::edit_notes(
            &e.store,
            &e.actor,
            e.project,
            "1.0.0",
            "## Hello",
            Some(r.revision),
        )
        .await
        .unwrap();
        assert_eq!(edited.notes, "## Hello");
        assert_eq!(edited.revision, r.revision + 1);

        let p = releases::publish(&e.store, &e.env, &e.actor, e.project, "1.0.0")
            .await
            .unwrap();
        assert_eq!(p.state, "published");
        assert_eq!(p.published_by.as_deref(), Some("ada"));
        assert!(p.published_at.is_some());
        let tagged = git(&e.git_dir, &["rev-parse", "v1.0.0^{commit}"]);
        assert_eq!(
            tagged,
            sha,
            "{}: the tag points at the run's commit",
            db.name()
        );
        assert_eq!(
            git(&e.git_dir, &["cat-file", "-t", "v1.0.0"]),
            "tag",
            "annotated"
        );

        // Immutable once published.
        let edit =
            releases::edit_notes(&e.store, &e.actor, e.project, "1.0.0", "changed", None).await;
        assert_eq!(code(edit), ErrorCode::ReleaseImmutable);
        let again = releases::publish(&e.store, &e.env, &e.actor, e.project, "1.0.0").await;
        assert_eq!(code(again), ErrorCode::ReleaseImmutable);

        let empty = releases::withdraw(&e.store, &e.actor, e.project, "1.0.0", "  ").await;
        assert_eq!(code(empty), ErrorCode::ValidationFailed);
        let w = releases::withdraw(&e.store, &e.actor, e.project, "v1.0.0", "broken build")
            .await
            .unwrap();
        assert_eq!(w.state, "withdrawn");
        assert_eq!(w.withdrawn_reason.as_deref(), Some("broken build"));
        assert!(
            releases::tag_present(&e.git_dir, "v1.0.0").await,
            "the tag stays"
        );
        let twice = releases::withdraw(&e.store, &e.actor, e.project, "1.0.0", "again").await;
        assert_eq!(code(twice), ErrorCode::ReleaseWrongState);

        for (kind, n) in [
            ("release.created", 1),
            ("release.notes_edited", 1),
            ("release.published", 1),
            ("release.withdrawn", 1),
        ] {
            assert_eq!(e.events(kind).await, n, "{}: {kind}", db.name());
        }
        let list = releases::list(&mut e.store.read().await.unwrap(), e.project)
            .await
            .unwrap();
        assert_eq!(list.len(), 1);
        let missing = releases::get(&mut e.store.read().await.unwrap(), e.project, "9.9.9").await;
        assert_eq!(code(missing), ErrorCode::ReleaseNotFound);
    }
}

#[tokio::test]
async fn duplicates_and_existing_tags_are_conflicts() {
    for db in backends() {
        let e = env(&db).await;
        let sha = e.commit("fix: one");
        let run = e.run(&sha, "success", &[]).await;
        releases::create(
            &e.store,
            &e.env,
            &e.actor,
            e.project,
            &e.req(run, Some("1.0.0")),
        )
        .await
        .unwrap();
        let dup = releases::create(
            &e.store,
            &e.env,
            &e.actor,
            e.project,
            &e.req(run, Some("v1.0.0")),
        )
        .await;
        assert_eq!(code(dup), ErrorCode::ReleaseVersionExists, "{}", db.name());

        // Someone pushes the tag before the release is published: 409, nothing changes.
        git(&e.work, &["tag", "v1.0.0"]);
        let dst = e.git_dir.to_string_lossy().into_owned();
        git(&e.work, &["push", "-q", &dst, "v1.0.0"]);
        let p = releases::publish(&e.store, &e.env, &e.actor, e.project, "1.0.0").await;
        assert_eq!(code(p), ErrorCode::ReleaseTagExists, "{}", db.name());
        let r = releases::get(&mut e.store.read().await.unwrap(), e.project, "1.0.0")
            .await
            .unwrap();
        assert_eq!(r.state, "draft");
        assert_eq!(e.events("release.published").await, 0);

        let bad = releases::create(
            &e.store,
            &e.env,
            &e.actor,
            e.project,
            &e.req(run, Some("1.0")),
        )
        .await;
        assert_eq!(code(bad), ErrorCode::ReleaseInvalidVersion);
    }
}

#[tokio::test]
async fn unusable_runs_and_artifacts_are_refused_with_the_reason() {
    for db in backends() {
        let e = env(&db).await;
        let sha = e.commit("feat: x");
        let failed = e.run(&sha, "failure", &[]).await;
        let err = OuroError::from(
            releases::create(
                &e.store,
                &e.env,
                &e.actor,
                e.project,
                &e.req(failed, Some("1.0.0")),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(
            err.code,
            ErrorCode::ReleaseRunNotSuccessful,
            "{}",
            db.name()
        );
        assert_eq!(err.details.unwrap()["status"], "failure");

        let expired = e.run(&sha, "success", &[("old.bin", "old", Some(1))]).await;
        let err = OuroError::from(
            releases::create(
                &e.store,
                &e.env,
                &e.actor,
                e.project,
                &e.req(expired, Some("1.0.0")),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(err.code, ErrorCode::ReleaseArtifactsUnavailable);
        assert!(err.message.contains("old.bin (expired)"), "{}", err.message);

        let gone = e
            .run(&sha, "success", &[("gone.bin", "vanishing", None)])
            .await;
        let digest = {
            use sha2::Digest;
            format!("{:x}", sha2::Sha256::digest(b"vanishing"))
        };
        e.blobs.delete(&digest).unwrap();
        let err = OuroError::from(
            releases::create(
                &e.store,
                &e.env,
                &e.actor,
                e.project,
                &e.req(gone, Some("1.0.0")),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(err.code, ErrorCode::ReleaseArtifactsUnavailable);
        assert_eq!(err.details.unwrap()["artifacts"][0]["path"], "gone.bin");
        assert_eq!(e.events("release.created").await, 0, "nothing was created");
    }
}

#[tokio::test]
async fn computed_versions_and_nothing_to_release() {
    for db in backends() {
        let e = env(&db).await;
        let sha = e.commit("feat: first feature");
        let run = e.run(&sha, "success", &[]).await;
        let first = releases::create(&e.store, &e.env, &e.actor, e.project, &e.req(run, None))
            .await
            .unwrap();
        let v1 = first.release.version.clone();
        releases::publish(&e.store, &e.env, &e.actor, e.project, &v1)
            .await
            .unwrap();

        let sha = e.commit("chore: tidy up");
        let run = e.run(&sha, "success", &[]).await;
        let none = releases::create(&e.store, &e.env, &e.actor, e.project, &e.req(run, None)).await;
        assert_eq!(
            code(none),
            ErrorCode::ReleaseNothingToRelease,
            "{}",
            db.name()
        );

        let sha = e.commit("fix: a bug");
        let run = e.run(&sha, "success", &[]).await;
        let next = releases::create(&e.store, &e.env, &e.actor, e.project, &e.req(run, None))
            .await
            .unwrap();
        assert_eq!(next.release.previous_version.as_deref(), Some(v1.as_str()));
        assert_eq!(
            releases::cmp_versions(&next.release.version, &v1),
            std::cmp::Ordering::Greater,
            "{} after {v1}",
            next.release.version
        );
        assert_eq!(next.release.bump.as_deref(), Some("patch"));
        assert!(next.release.notes.contains("a bug"));
        assert!(
            !next.release.notes.contains("first feature"),
            "only commits since {v1}"
        );
    }
}
