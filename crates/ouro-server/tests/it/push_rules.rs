//! The push pipeline with real `git` pushes over HTTP: branch protection (default and saved
//! rules), secret scanning (each rule family, the allow-list file, disabled rules), size limits,
//! `code.push_rejected`, and faults (concurrent pushes, a killed push, invalid refs, tags only,
//! deletions). Both databases.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use ouro_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

const REPOS: &str = "/api/v1/projects/demo/repos";

struct Git {
    home: tempfile::TempDir,
}

impl Git {
    fn new() -> Git {
        Git {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("GIT_AUTHOR_NAME", "Ada Dev")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada Dev")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com");
        tokio::process::Command::from(c)
    }

    async fn try_run(&self, dir: &Path, args: &[&str]) -> (bool, String) {
        let out = self.cmd(dir, args).output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn run(&self, dir: &Path, args: &[&str]) -> String {
        let (ok, text) = self.try_run(dir, args).await;
        assert!(ok, "git {args:?} failed: {text}");
        text
    }

    async fn fails(&self, dir: &Path, args: &[&str]) -> String {
        let (ok, text) = self.try_run(dir, args).await;
        assert!(!ok, "git {args:?} succeeded: {text}");
        text
    }

    async fn commit(&self, repo: &Path, file: &str, content: &[u8], message: &str) -> String {
        let path = repo.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self.run(repo, &["add", "-A"]).await;
        self.run(repo, &["commit", "-q", "-m", message]).await;
        self.head(repo).await
    }

    async fn head(&self, repo: &Path) -> String {
        self.run(repo, &["rev-parse", "HEAD"])
            .await
            .trim()
            .to_string()
    }

    /// A clone of `url` in a fresh directory named `name`.
    async fn clone(&self, url: &str, name: &str) -> PathBuf {
        self.run(self.home.path(), &["clone", "-q", url, name])
            .await;
        self.home.path().join(name)
    }
}

fn creds(clone_url: &str, user: &str, token: &str) -> String {
    clone_url.replacen("http://", &format!("http://{user}:{token}@"), 1)
}

async fn member(s: &TestServer, name: &str, role: &str) -> String {
    let tok = s.user(name).await;
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/api/v1/projects/demo/members/{name}"),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tok
}

async fn events(s: &TestServer, kind: &str) -> Vec<Value> {
    let (st, body) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/demo/events?kind={kind}&limit=200"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Refs of the server's bare repository.
async fn server_refs(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("git")
        .args([
            "-C",
            dir.to_str().unwrap(),
            "for-each-ref",
            "--format=%(refname) %(objectname)",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A project `demo` with a repository `app` whose main branch has one commit (pushed by a
/// maintainer); returns the server, the repo JSON and tokens of a developer and a maintainer.
struct Setup {
    s: TestServer,
    /// The server's bare repository.
    repo: PathBuf,
    git: Git,
    dev_url: String,
    main_url: String,
    dev: String,
    maint: String,
}

async fn setup(db: &TestDb, opts: Options) -> Setup {
    let s = TestServer::start_with(db, opts).await;
    let project = s.demo_project().await;
    let dev = member(&s, "dev", "developer").await;
    let maint = member(&s, "maint", "maintainer").await;
    let (st, repo) = s
        .admin(Method::POST, REPOS, Some(json!({"name": "app"})))
        .await;
    assert_eq!(st, 201, "{repo}");
    let url = repo["clone_url"].as_str().unwrap().to_string();
    let git = Git::new();
    let main_url = creds(&url, "maint", &maint);
    let dev_url = creds(&url, "dev", &dev);
    let m = git.clone(&main_url, "seed").await;
    git.run(&m, &["checkout", "-q", "-b", "main"]).await;
    git.commit(&m, "README.md", b"# app\n", "Start").await;
    git.run(&m, &["push", "-q", "origin", "main"]).await;
    let root = ouro_code::repos::root(&s.state.settings.data_dir);
    let repo = ouro_code::repos::dir(&root, project.id, repo["id"].as_i64().unwrap());
    Setup {
        s,
        repo,
        git,
        dev_url,
        main_url,
        dev,
        maint,
    }
}

#[tokio::test]
async fn protected_branches_default_and_saved() {
    for db in backends() {
        let Setup {
            s,
            repo,
            git,
            dev_url,
            main_url,
            dev,
            maint,
        } = setup(&db, Options::default()).await;
        let pushed_before = events(&s, "code.pushed").await.len();
        assert_eq!(pushed_before, 1);
        let d = git.clone(&dev_url, "dev").await;
        let main_at = git.head(&d).await;

        // A developer may not push to the default branch: git shows why and what to do.
        git.commit(&d, "a.txt", b"a\n", "Dev change").await;
        let out = git.fails(&d, &["push", "origin", "HEAD:main"]).await;
        assert!(
            out.contains("remote: ouro: refs/heads/main is protected"),
            "{out}"
        );
        assert!(
            out.contains("direct pushes need the maintainer role; you are developer"),
            "{out}"
        );
        assert!(out.contains("open a change request"), "{out}");
        assert!(out.contains("pre-receive hook declined"), "{out}");
        let refs = server_refs(&repo).await;
        assert_eq!(refs, vec![("refs/heads/main".to_string(), main_at.clone())]);
        let rejected = events(&s, "code.push_rejected").await;
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        let p = &rejected[0]["payload"];
        assert_eq!(p["ref"], "refs/heads/main");
        assert_eq!(p["rule"], "protected.push");
        assert_eq!(p["pusher"], "dev");
        assert_eq!(p["refs"][0]["old"], main_at.as_str());
        assert_eq!(events(&s, "code.pushed").await.len(), 1);

        // An unprotected branch is fine; so is deleting it.
        git.run(&d, &["push", "-q", "origin", "HEAD:feature"]).await;
        git.run(&d, &["push", "-q", "origin", "--delete", "feature"])
            .await;
        assert_eq!(events(&s, "code.pushed").await.len(), 3);

        // A maintainer may push directly, but neither force-push nor delete.
        let m = git.clone(&main_url, "maint").await;
        let c1 = git.commit(&m, "m.txt", b"m\n", "Maintainer change").await;
        git.run(&m, &["push", "-q", "origin", "main"]).await;
        git.run(&m, &["reset", "-q", "--hard", "HEAD~1"]).await;
        git.commit(&m, "m.txt", b"other\n", "Rewritten").await;
        let out = git.fails(&m, &["push", "--force", "origin", "main"]).await;
        assert!(out.contains("force pushes are not allowed"), "{out}");
        let out = git.fails(&m, &["push", "origin", "--delete", "main"]).await;
        assert!(out.contains("it cannot be deleted"), "{out}");
        let refs = server_refs(&repo).await;
        assert_eq!(refs, vec![("refs/heads/main".to_string(), c1.clone())]);
        let rules: Vec<String> = events(&s, "code.push_rejected")
            .await
            .iter()
            .map(|e| e["payload"]["rule"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            rules
                .iter()
                .filter(|r| *r == "protected.force_push")
                .count(),
            1,
            "{rules:?}"
        );
        assert!(
            rules.contains(&"protected.deletion".to_string()),
            "{rules:?}"
        );
        assert_eq!(events(&s, "code.pushed").await.len(), 4);

        // The first push into a repository without branches may create the default branch,
        // even for a developer; afterwards it is protected.
        let (st, body) = s
            .call(
                Method::POST,
                REPOS,
                Some(&dev),
                Some(json!({"name": "fresh"})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        let fresh_url = creds(body["clone_url"].as_str().unwrap(), "dev", &dev);
        let f = git.clone(&fresh_url, "fresh").await;
        git.run(&f, &["checkout", "-q", "-b", "main"]).await;
        git.commit(&f, "a.txt", b"a\n", "First").await;
        git.run(&f, &["push", "-q", "origin", "main"]).await;
        git.commit(&f, "a.txt", b"b\n", "Second").await;
        let out = git.fails(&f, &["push", "origin", "main"]).await;
        assert!(out.contains("refs/heads/main is protected"), "{out}");

        // The API: maintainers only; the default rule is shown until rules are saved.
        let path = "/api/v1/projects/demo/repos/app/protected-branches";
        let (st, _) = s.call(Method::GET, path, Some(&dev), None).await;
        assert_eq!(st, 403);
        let (st, body) = s.call(Method::GET, path, Some(&maint), None).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            body,
            json!([{"pattern": "main", "push_role": "maintainer", "allow_force_push": false, "allow_deletion": false}])
        );
        let (st, body) = s
            .call(
                Method::PUT,
                path,
                Some(&maint),
                Some(json!([{"pattern": "a..b", "push_role": "developer"}])),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "protected_branches");
        let (st, body) = s
            .call(
                Method::PUT,
                path,
                Some(&maint),
                Some(json!([
                    {"pattern": "release/*", "push_role": "nobody"},
                    {"pattern": "main", "push_role": "developer", "allow_force_push": true}
                ])),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body[1]["allow_force_push"], true);
        assert_eq!(events(&s, "repo.push_rules_changed").await.len(), 1);

        // Now developers push to main (even forced), and nobody pushes to release/*.
        git.run(&d, &["fetch", "-q", "origin"]).await;
        git.run(&d, &["reset", "-q", "--hard", "origin/main"]).await;
        git.commit(&d, "d.txt", b"d\n", "Dev on main").await;
        git.run(&d, &["push", "-q", "origin", "HEAD:main"]).await;
        git.run(&d, &["reset", "-q", "--hard", "HEAD~1"]).await;
        git.commit(&d, "d.txt", b"forced\n", "Forced").await;
        git.run(&d, &["push", "-q", "--force", "origin", "HEAD:main"])
            .await;
        let out = git.fails(&d, &["push", "origin", "HEAD:release/1.0"]).await;
        assert!(out.contains("nobody may push to it directly"), "{out}");

        // An empty list protects nothing: developers create and delete release branches.
        let (st, _) = s
            .call(Method::PUT, path, Some(&maint), Some(json!([])))
            .await;
        assert_eq!(st, 200);
        git.run(&d, &["push", "-q", "origin", "HEAD:release/1.0"])
            .await;
        git.run(&d, &["push", "-q", "origin", "--delete", "release/1.0"])
            .await;
        assert!(
            !server_refs(&repo)
                .await
                .iter()
                .any(|r| r.0.starts_with("refs/heads/release/"))
        );
        s.stop().await;
    }
}

/// (rule id, file, content) for each rule family; the secret is on line 2.
fn secret_cases() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "private-key",
            "deploy/id_rsa",
            "# key\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n".into(),
        ),
        (
            "aws-access-key-id",
            "config/aws.env",
            "region=eu-west-1\naws_key_id=AKIAQ3EGRTW5PLUSXY7Z\n".into(),
        ),
        (
            "github-token",
            "ci/token.txt",
            format!("# ci\nghp_{}\n", "R4nD0mCh4r5R4nD0mCh4r5R4nD0mCh4r5xYz9"),
        ),
        (
            "slack-token",
            "notify.sh",
            "#!/bin/sh\ncurl -H 'Authorization: Bearer xoxb-9876543210-1234567890123-ZyXwVuTsRqPoNmLkJiHgFeDc'\n".into(),
        ),
        (
            "gcp-service-account",
            "sa.json",
            "{\n  \"private_key_id\": \"a1b2c3d4e5f60718293a4b5c6d7e8f9012345678\",\n}\n".into(),
        ),
        (
            "generic-assignment",
            "settings.py",
            "DEBUG = False\nDATABASE_PASSWORD = 'Tr0ub4dor&3x'\n".into(),
        ),
        (
            "high-entropy",
            "src/key.rs",
            "// signing\nconst K: &str = \"q8Z2mX4vB7nL1kP9sD3fG6hJ0wE5rT2y\";\n".into(),
        ),
    ]
}

#[tokio::test]
async fn secret_scanning_blocks_pushes() {
    for db in backends() {
        let Setup {
            s,
            repo,
            git,
            dev_url,
            maint,
            ..
        } = setup(&db, Options::default()).await;
        let d = git.clone(&dev_url, "dev").await;
        let base = git.head(&d).await;
        for (rule, file, content) in secret_cases() {
            git.run(&d, &["checkout", "-q", "-B", "t", &base]).await;
            git.commit(&d, "ok.txt", b"fine\n", "Harmless").await;
            let c = git.commit(&d, file, content.as_bytes(), "Add config").await;
            let out = git
                .fails(&d, &["push", "origin", "HEAD:refs/heads/secrets"])
                .await;
            let expect = format!(
                "possible secret in {file} line 2 (commit {}): rule {rule}",
                &c[..10]
            );
            assert!(out.contains(&expect), "{rule}: {out}");
            assert!(out.contains("remote: ouro:"), "{out}");
            assert!(out.contains(".ouroignore-secrets"), "{out}");
            // The secret itself is not echoed.
            let secret_line = content.lines().nth(1).unwrap();
            assert!(!out.contains(secret_line.trim()), "{rule} echoed: {out}");
        }
        assert!(
            !server_refs(&repo)
                .await
                .iter()
                .any(|r| r.0 == "refs/heads/secrets")
        );
        let rejected = events(&s, "code.push_rejected").await;
        assert_eq!(rejected.len(), secret_cases().len());
        let mut rules: Vec<String> = rejected
            .iter()
            .map(|e| e["payload"]["rule"].as_str().unwrap().to_string())
            .collect();
        rules.sort();
        let mut want: Vec<String> = secret_cases()
            .iter()
            .map(|c| format!("secret.{}", c.0))
            .collect();
        want.sort();
        assert_eq!(rules, want);
        assert_eq!(events(&s, "code.pushed").await.len(), 1);

        // The allow-list file in the pushed commit: a path glob, a rule id, a fingerprint.
        git.run(&d, &["checkout", "-q", "-B", "t", &base]).await;
        git.commit(
            &d,
            ".ouroignore-secrets",
            b"# test fixtures\npath: fixtures/**\nrule: slack-token\n",
            "Allow-list",
        )
        .await;
        git.commit(
            &d,
            "fixtures/keys/test.pem",
            b"x\n-----BEGIN PRIVATE KEY-----\n",
            "Fixture",
        )
        .await;
        let slack = secret_cases()
            .into_iter()
            .find(|c| c.0 == "slack-token")
            .unwrap();
        git.commit(&d, slack.1, slack.2.as_bytes(), "Slack").await;
        git.run(&d, &["push", "-q", "origin", "HEAD:refs/heads/allowed"])
            .await;
        // A fingerprint from the refusal message allows that one secret.
        let aws = secret_cases()
            .into_iter()
            .find(|c| c.0 == "aws-access-key-id")
            .unwrap();
        git.commit(&d, aws.1, aws.2.as_bytes(), "AWS").await;
        let out = git
            .fails(&d, &["push", "origin", "HEAD:refs/heads/allowed"])
            .await;
        let fp = out
            .split("fingerprint ")
            .nth(1)
            .map(|t| t[..16].to_string())
            .unwrap_or_else(|| panic!("no fingerprint: {out}"));
        git.run(&d, &["reset", "-q", "--hard", "HEAD~1"]).await;
        git.commit(
            &d,
            ".ouroignore-secrets",
            format!("path: fixtures/**\nrule: slack-token\nfingerprint: {fp}\n").as_bytes(),
            "Allow the example key",
        )
        .await;
        git.commit(&d, aws.1, aws.2.as_bytes(), "AWS").await;
        git.run(&d, &["push", "-q", "origin", "HEAD:refs/heads/allowed"])
            .await;

        // A rule disabled for the repository lets its findings through.
        let entropy = secret_cases()
            .into_iter()
            .find(|c| c.0 == "high-entropy")
            .unwrap();
        git.run(&d, &["checkout", "-q", "-B", "t", &base]).await;
        git.commit(&d, entropy.1, entropy.2.as_bytes(), "Key").await;
        git.fails(&d, &["push", "origin", "HEAD:refs/heads/entropy"])
            .await;
        let (st, body) = s
            .call(
                Method::PUT,
                "/api/v1/projects/demo/repos/app/push-rules",
                Some(&maint),
                Some(json!({"disabled_secret_rules": ["high-entropy"]})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["disabled_secret_rules"], json!(["high-entropy"]));
        // Protection was not touched by this save.
        assert_eq!(body["custom_protection"], false);
        git.run(&d, &["push", "-q", "origin", "HEAD:refs/heads/entropy"])
            .await;
        let (st, body) = s
            .call(
                Method::PUT,
                "/api/v1/projects/demo/repos/app/push-rules",
                Some(&maint),
                Some(json!({"disabled_secret_rules": ["nope"]})),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "disabled_secret_rules");
        s.stop().await;
    }
}

#[tokio::test]
async fn size_limits_refuse_with_clear_messages() {
    for db in backends() {
        let Setup {
            s,
            repo,
            git,
            dev_url,
            maint,
            ..
        } = setup(
            &db,
            Options {
                tweak: |st| st.push_max_file_bytes = 1000,
                ..Options::default()
            },
        )
        .await;
        let d = git.clone(&dev_url, "dev").await;
        let base = git.head(&d).await;
        let big: Vec<u8> = (0..3000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        git.commit(&d, "assets/big.txt", &big, "Big file").await;
        let out = git
            .fails(&d, &["push", "origin", "HEAD:refs/heads/big"])
            .await;
        assert!(out.contains("file assets/big.txt"), "{out}");
        assert!(out.contains("the limit is 1000 bytes per file"), "{out}");
        let rejected = events(&s, "code.push_rejected").await;
        assert_eq!(rejected[0]["payload"]["rule"], "limit.file_size");

        // The repository's own limit wins over the server's.
        let rules = "/api/v1/projects/demo/repos/app/push-rules";
        let (st, body) = s
            .call(
                Method::PUT,
                rules,
                Some(&maint),
                Some(json!({"max_file_bytes": 10000})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        git.run(&d, &["push", "-q", "origin", "HEAD:refs/heads/big"])
            .await;

        // The push size limit (receive.maxInputSize): an incompressible pack over it.
        let (st, body) = s
            .call(
                Method::PUT,
                rules,
                Some(&maint),
                Some(json!({"max_file_bytes": 10000000, "max_push_bytes": 20000})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        git.run(&d, &["checkout", "-q", "-B", "t", &base]).await;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        git.commit(&d, "noise.bin", &noise, "Noise").await;
        let out = git
            .fails(&d, &["push", "origin", "HEAD:refs/heads/noise"])
            .await;
        assert!(out.contains("maximum allowed size"), "{out}");
        assert!(
            out.contains("the limit is 19.5 KiB (20000 bytes) per push"),
            "{out}"
        );
        assert!(
            !server_refs(&repo)
                .await
                .iter()
                .any(|r| r.0 == "refs/heads/noise")
        );
        let rejected = events(&s, "code.push_rejected").await;
        assert!(
            rejected
                .iter()
                .any(|e| e["payload"]["rule"] == "limit.push_size"),
            "{rejected:?}"
        );
        let (st, body) = s
            .call(
                Method::PUT,
                rules,
                Some(&maint),
                Some(json!({"max_push_bytes": 0})),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "max_push_bytes");
        s.stop().await;
    }
}

#[tokio::test]
async fn push_faults_leave_refs_and_events_consistent() {
    for db in backends() {
        let Setup {
            s,
            repo,
            git,
            dev_url,
            ..
        } = setup(&db, Options::default()).await;
        let a = git.clone(&dev_url, "a").await;
        let b = git.clone(&dev_url, "b").await;
        git.run(&a, &["push", "-q", "origin", "HEAD:shared"]).await;
        git.run(&b, &["fetch", "-q", "origin"]).await;
        git.run(&b, &["reset", "-q", "--hard", "origin/shared"])
            .await;

        // Two pushes to one branch at once: one wins, the other is refused.
        let ca = git.commit(&a, "a.txt", b"a\n", "From a").await;
        let cb = git.commit(&b, "b.txt", b"b\n", "From b").await;
        let (ra, rb) = tokio::join!(
            git.try_run(&a, &["push", "origin", "HEAD:shared"]),
            git.try_run(&b, &["push", "origin", "HEAD:shared"])
        );
        assert!(ra.0 != rb.0, "exactly one push wins: {ra:?} {rb:?}");
        let (winner, loser_out) = if ra.0 { (&ca, &rb.1) } else { (&cb, &ra.1) };
        assert!(
            loser_out.contains("rejected") || loser_out.contains("failed"),
            "{loser_out}"
        );
        let refs = server_refs(&repo).await;
        assert!(
            refs.contains(&("refs/heads/shared".into(), winner.clone())),
            "{refs:?}"
        );
        let shared: Vec<Value> = events(&s, "code.pushed")
            .await
            .into_iter()
            .filter(|e| e["payload"]["ref"] == "refs/heads/shared")
            .collect();
        assert_eq!(shared.len(), 2, "{shared:?}"); // created, then moved once
        assert!(
            shared
                .iter()
                .any(|e| e["payload"]["new"] == winner.as_str())
        );

        // A push killed while it uploads: the repository stays consistent and has an event
        // for a ref exactly when the ref moved.
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let noise: Vec<u8> = (0..8_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        git.commit(&a, "big.bin", &noise, "Big").await;
        // In its own process group, killed as a whole: killing only `git push` can leave its
        // git-remote-http helper running, which then pushes after the probe below.
        let mut child = git
            .cmd(&a, &["push", "-q", "origin", "HEAD:killed"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        // Whatever the server was still doing for that push finishes under the push lock.
        git.try_run(&b, &["push", "-q", "origin", "HEAD:probe"])
            .await;
        let dir = repo.clone();
        let fsck = Command::new("git")
            .args(["-C", dir.to_str().unwrap(), "fsck", "--no-progress"])
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        let moved = server_refs(&repo)
            .await
            .iter()
            .any(|r| r.0 == "refs/heads/killed");
        let killed_events = events(&s, "code.pushed")
            .await
            .iter()
            .filter(|e| e["payload"]["ref"] == "refs/heads/killed")
            .count();
        assert_eq!(killed_events, usize::from(moved));

        // Invalid ref names are refused by git; refs outside heads and tags by Ouro.
        git.fails(&a, &["push", "origin", "HEAD:refs/heads/bad..name"])
            .await;
        let out = git
            .fails(&a, &["push", "origin", "HEAD~1:refs/ouro/x"])
            .await;
        assert!(
            out.contains("only branches and tags can be pushed"),
            "{out}"
        );
        assert!(
            !server_refs(&repo)
                .await
                .iter()
                .any(|r| r.0.contains("bad") || r.0.starts_with("refs/ouro/"))
        );

        // A push of only a tag: one event, for the tag.
        let before = events(&s, "code.pushed").await.len();
        git.run(&b, &["tag", "-a", "v1.0", "-m", "Release"]).await;
        git.run(&b, &["push", "-q", "origin", "v1.0"]).await;
        let after = events(&s, "code.pushed").await;
        assert_eq!(
            after.len(),
            before + 1,
            "{:?}",
            after
                .iter()
                .map(|e| (e["payload"]["ref"].clone(), e["time"].clone()))
                .collect::<Vec<_>>()
        );
        assert!(
            after
                .iter()
                .any(|e| e["payload"]["ref"] == "refs/tags/v1.0")
        );

        // Deleting: allowed for an unprotected branch, refused for the protected default.
        git.run(&b, &["push", "-q", "origin", "--delete", "shared"])
            .await;
        let out = git.fails(&b, &["push", "origin", "--delete", "main"]).await;
        assert!(out.contains("refs/heads/main is protected"), "{out}");
        let refs = server_refs(&repo).await;
        assert!(!refs.iter().any(|r| r.0 == "refs/heads/shared"));
        assert!(refs.iter().any(|r| r.0 == "refs/heads/main"));
        let deleted = events(&s, "code.pushed")
            .await
            .into_iter()
            .filter(|e| e["payload"]["deleted"] == true)
            .count();
        assert_eq!(deleted, 1);

        // Ouro's hook refuses a push that did not come through Ouro (no channel).
        let hooks = ouro_code::hook::hooks_dir(&s.state.settings.data_dir);
        // (A local push runs receive-pack with this command, as a server configured by hand would.)
        let hooks_cfg = format!(
            "--receive-pack=git -c core.hooksPath={} receive-pack",
            hooks.display()
        );
        let out = git
            .fails(
                &b,
                &[
                    "push",
                    &hooks_cfg,
                    repo.to_str().unwrap(),
                    "HEAD:refs/heads/local",
                ],
            )
            .await;
        assert!(out.contains("pushes go through Ouro"), "{out}");
        assert!(
            !server_refs(&repo)
                .await
                .iter()
                .any(|r| r.0 == "refs/heads/local")
        );

        // No FIFO channel is left behind.
        let run = s.state.settings.data_dir.join("run").join("push");
        let left: Vec<_> = std::fs::read_dir(&run)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        s.stop().await;
    }
}

#[tokio::test]
async fn settings_page_saves_push_rules() {
    for db in backends() {
        let Setup {
            s,
            dev,
            dev_url,
            git,
            ..
        } = setup(&db, Options::default()).await;
        let page = "/projects/demo/code/app/settings";
        let (st, html) = s.admin_page(page).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("id=\"no-refusals\""), "{html}");
        // A refused push shows up on the page.
        let d = git.clone(&dev_url, "dev").await;
        git.commit(&d, "x.txt", b"x\n", "Direct").await;
        git.fails(&d, &["push", "origin", "HEAD:main"]).await;
        let (_, html) = s.admin_page(page).await;
        assert!(html.contains("id=\"refusals\""), "{html}");
        assert!(html.contains("protected.push"), "{html}");
        assert!(html.contains("Protected branches"), "{html}");
        assert!(html.contains("value=\"main\""), "{html}");
        assert!(html.contains("secret.high-entropy"), "{html}");
        let (st, list) = s.admin_page("/projects/demo/code").await;
        assert_eq!(st, 200);
        assert!(list.contains(page), "{list}");
        let r = s.req(Method::GET, page, Some(&dev)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403);

        let mut fields = vec![
            ("rows", "2"),
            ("pattern.0", "main"),
            ("role.0", "developer"),
            ("delete.0", "on"),
            ("pattern.1", "release/*"),
            ("role.1", "nobody"),
            ("max_file_bytes", "5000"),
            ("max_push_bytes", ""),
        ];
        let on: Vec<String> = ouro_code::secrets::RULES
            .iter()
            .filter(|r| r.id != "high-entropy")
            .map(|r| format!("secret.{}", r.id))
            .collect();
        for f in &on {
            fields.push((f.as_str(), "on"));
        }
        let (st, location, body) = s.admin_form(page, form_body(&fields)).await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(location, page);
        let (st, rules) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/repos/app/push-rules",
                None,
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(rules["custom_protection"], true);
        assert_eq!(
            rules["protected_branches"],
            json!([
                {"pattern": "main", "push_role": "developer", "allow_force_push": false, "allow_deletion": true},
                {"pattern": "release/*", "push_role": "nobody", "allow_force_push": false, "allow_deletion": false}
            ])
        );
        assert_eq!(rules["disabled_secret_rules"], json!(["high-entropy"]));
        assert_eq!(rules["max_file_bytes"], 5000);
        assert_eq!(rules["max_push_bytes"], Value::Null);

        // Bad input: the page again with the message, nothing saved.
        let (st, _, html) = s
            .admin_form(
                page,
                form_body(&[("rows", "1"), ("pattern.0", "a b"), ("role.0", "developer")]),
            )
            .await;
        assert_eq!(st, 422, "{html}");
        assert!(html.contains("not a valid branch pattern"), "{html}");
        let (st, html) = s.admin_page(page).await;
        assert_eq!(st, 200);
        assert!(html.contains("value=\"release/*\""), "{html}");
        s.stop().await;
    }
}
