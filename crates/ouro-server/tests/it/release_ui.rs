//! The release pages of the web UI beyond the release itself: the release settings page (0.x
//! rules, first version, notes template, `auto_promote`), the promotion path settings page (the
//! YAML kept in the project settings and the path in effect for the newest release), and the
//! "Create release" form on a successful run's page. Viewers read, maintainers edit (others get
//! 403), a refused value keeps what was typed and shows the stable error's message.

use reqwest::Method;
use serde_json::{Value, json};

use crate::code_hosting::{app_checkout, member};
use crate::support::*;

/// GETs a page with `token`: status and body.
async fn page(s: &TestServer, token: &str, path: &str) -> (u16, String) {
    let r = s.req(Method::GET, path, Some(token)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What a form post answered.
struct Posted {
    status: u16,
    location: String,
    /// The one-off message left for the next page (decoded).
    flash: String,
    body: String,
}

/// POSTs an urlencoded form with `token` (a token needs no CSRF field).
async fn post(s: &TestServer, token: &str, path: &str, fields: &[(&str, &str)]) -> Posted {
    let r = s
        .req(Method::POST, path, Some(token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(fields))
        .send()
        .await
        .unwrap();
    let header = |name: &str| -> Vec<String> {
        r.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let location = header("location").first().cloned().unwrap_or_default();
    let flash = header("set-cookie")
        .iter()
        .find_map(|c| c.strip_prefix("ouro_flash="))
        .and_then(|c| c.split(';').next())
        .and_then(ouro_server::ui::url_decode)
        .unwrap_or_default();
    Posted {
        status: r.status().as_u16(),
        location,
        flash,
        body: r.text().await.unwrap(),
    }
}

const SETTINGS_PAGE: &str = "/projects/demo/settings/release";
const SETTINGS_API: &str = "/api/v1/projects/demo/release-settings";

#[tokio::test]
async fn release_settings_page_reads_for_viewers_and_keeps_a_refused_template() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        s.demo_project().await;
        let viewer = member(&s, "vera", "viewer").await;
        let dev = member(&s, "dan", "developer").await;
        let maint = member(&s, "mia", "maintainer").await;

        // Viewers read the defaults, without a way to save.
        let (st, html) = page(&s, &viewer, SETTINGS_PAGE).await;
        assert_eq!(st, 200, "{name}: {html}");
        assert!(html.contains("value=\"0.1.0\""), "{html}");
        assert!(html.contains("Only maintainers can change them"), "{html}");
        assert!(!html.contains("id=\"save-release-settings\""), "{html}");
        assert!(html.contains("id=\"default-layout\""), "{html}");
        let (st, html) = page(&s, &maint, SETTINGS_PAGE).await;
        assert_eq!(st, 200, "{name}");
        assert!(html.contains("id=\"save-release-settings\""), "{html}");

        // Viewers and developers cannot change them.
        let fields = [
            ("initial_version", "0.2.0"),
            ("notes_template", "# {{ version }}"),
        ];
        for (who, tok) in [("viewer", &viewer), ("developer", &dev)] {
            let p = post(&s, tok, SETTINGS_PAGE, &fields).await;
            assert_eq!(p.status, 403, "{name}: {who}: {}", p.body);
            let p = post(&s, tok, &format!("{SETTINGS_PAGE}/reset-template"), &[]).await;
            assert_eq!(p.status, 403, "{name}: {who}");
        }

        // A broken template is refused with release.template_invalid's message; what was typed
        // stays on the page and nothing is stored.
        let broken = "# {{ version\nbody line kept";
        let p = post(
            &s,
            &maint,
            SETTINGS_PAGE,
            &[
                ("initial_version", "0.3.0"),
                ("notes_template", broken),
                ("auto_promote", "on"),
            ],
        )
        .await;
        assert_eq!(p.status, 422, "{name}: {}", p.body);
        assert!(p.body.contains("id=\"notes_template-error\""), "{}", p.body);
        assert!(
            p.body.contains("the notes template fails at line"),
            "{}",
            p.body
        );
        assert!(p.body.contains(broken), "the input is kept: {}", p.body);
        assert!(p.body.contains("value=\"0.3.0\""), "{}", p.body);
        assert!(
            p.body
                .contains("name=\"auto_promote\" id=\"auto_promote\" value=\"on\" checked"),
            "{}",
            p.body
        );
        let (_, stored) = s.admin(Method::GET, SETTINGS_API, None).await;
        assert_eq!(stored["initial_version"], "0.1.0", "{name}: {stored}");
        assert_eq!(stored["notes_template"], Value::Null);
        assert_eq!(stored["auto_promote"], false);

        // A first version with a pre-release suffix is refused next to its field.
        let p = post(
            &s,
            &maint,
            SETTINGS_PAGE,
            &[("initial_version", "1.0.0-rc.1"), ("notes_template", "")],
        )
        .await;
        assert_eq!(p.status, 422, "{name}: {}", p.body);
        assert!(
            p.body.contains("id=\"initial_version-error\""),
            "{}",
            p.body
        );
        assert!(p.body.contains("without a pre-release"), "{}", p.body);
        assert!(p.body.contains("value=\"1.0.0-rc.1\""), "{}", p.body);

        // Saving: unticked boxes are false, the template's CRLF (as browsers send it) is stored
        // as LF, and the ledger records the change.
        let p = post(
            &s,
            &maint,
            SETTINGS_PAGE,
            &[
                ("zero_minor_bumps_patch", "on"),
                ("initial_version", "0.3.0"),
                ("notes_template", "# {{ version }}\r\n\r\nOur notes.\r\n"),
                ("auto_promote", "on"),
            ],
        )
        .await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, SETTINGS_PAGE),
            "{name}"
        );
        assert_eq!(p.flash, "Release settings saved.");
        let (_, stored) = s.admin(Method::GET, SETTINGS_API, None).await;
        assert_eq!(
            stored,
            json!({
                "zero_major_bumps_minor": false,
                "zero_minor_bumps_patch": true,
                "initial_version": "0.3.0",
                "notes_template": "# {{ version }}\n\nOur notes.\n",
                "auto_promote": true,
            }),
            "{name}"
        );
        let (_, html) = page(&s, &viewer, SETTINGS_PAGE).await;
        assert!(html.contains("last changed by mia"), "{html}");
        assert!(html.contains("Our notes."), "{html}");

        // Reset puts the template back to none (the default layout); the rest stays.
        let (_, html) = page(&s, &maint, SETTINGS_PAGE).await;
        assert!(html.contains("id=\"reset-template\""), "{html}");
        let p = post(&s, &maint, &format!("{SETTINGS_PAGE}/reset-template"), &[]).await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, SETTINGS_PAGE),
            "{name}"
        );
        let (_, stored) = s.admin(Method::GET, SETTINGS_API, None).await;
        assert_eq!(stored["notes_template"], Value::Null, "{name}: {stored}");
        assert_eq!(stored["auto_promote"], true);
        let (_, events) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=release.settings_changed",
                None,
            )
            .await;
        assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
        s.stop().await;
    }
}

const PATH_PAGE: &str = "/projects/demo/settings/environments";

/// Writes a release row (the release flow itself is tested in `releases`): `version` at `sha` of
/// the repository `app`.
async fn release_row(s: &TestServer, project_id: i64, version: &str, sha: &str, created: i64) {
    let mut tx = s.state.store.begin().await.unwrap();
    let repo = ouro_store::q("SELECT id FROM code_repos WHERE name = 'app'")
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    ouro_store::q(
        "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, \
         created_at) VALUES ($1, $2, $3, $4, $5, 'draft', '', $6)",
    )
    .bind(project_id)
    .bind(repo)
    .bind(version)
    .bind(format!("v{version}"))
    .bind(sha)
    .bind(created)
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn promotion_path_page_shows_the_source_in_effect_and_refuses_bad_yaml_with_diagnostics() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        let project = s.demo_project().await;
        let viewer = member(&s, "vera", "viewer").await;
        let dev = member(&s, "dan", "developer").await;
        let maint = member(&s, "mia", "maintainer").await;

        let (st, html) = page(&s, &viewer, PATH_PAGE).await;
        assert_eq!(st, 200, "{name}: {html}");
        assert!(html.contains("id=\"no-release\""), "{html}");
        assert!(html.contains("id=\"no-settings-path\""), "{html}");
        assert!(!html.contains("id=\"environments-form\""), "{html}");

        let good = "environments:\n  dev: {}\n  staging:\n    wait: 90m\n    approvals: {required: 1, from: [maintainers], no-self-approval: true}\n    checks: [tests-passed]\n";
        for (who, tok) in [("viewer", &viewer), ("developer", &dev)] {
            let p = post(&s, tok, PATH_PAGE, &[("yaml", good)]).await;
            assert_eq!(p.status, 403, "{name}: {who}: {}", p.body);
        }

        // A bad file: every diagnostic in the contract form above the textarea, input kept.
        let bad = "environments:\n  dev: {}\n  prod:\n    aproval: {}\n";
        let p = post(&s, &maint, PATH_PAGE, &[("yaml", bad)]).await;
        assert_eq!(p.status, 422, "{name}: {}", p.body);
        assert!(
            p.body.contains(
                "project settings (environments):4:5: error[release.env_unknown_key]: unknown key `aproval` in environment `prod`"
            ),
            "{}",
            p.body
        );
        assert!(p.body.contains("id=\"yaml-diagnostics\""), "{}", p.body);
        assert!(
            p.body.contains("    aproval: {}\n</textarea>"),
            "{}",
            p.body
        );
        let (st, _) = s
            .admin(Method::GET, "/api/v1/projects/demo/environments", None)
            .await;
        assert_eq!(st, 404, "{name}: nothing was stored");

        // A good one is saved (CRLF from the browser is stored as LF) and shown parsed.
        let p = post(
            &s,
            &maint,
            PATH_PAGE,
            &[("yaml", &good.replace('\n', "\r\n"))],
        )
        .await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, PATH_PAGE),
            "{name}: {}",
            p.body
        );
        assert_eq!(p.flash, "Promotion path saved: dev → staging.");
        let (st, html) = page(&s, &viewer, PATH_PAGE).await;
        assert_eq!(st, 200, "{name}");
        assert!(html.contains("id=\"settings-path\""), "{html}");
        assert!(
            html.contains("approvals: 1 from maintainers (no self-approval)"),
            "{html}"
        );
        assert!(html.contains("wait: 1h 30m after dev succeeded"), "{html}");
        assert!(html.contains("check: tests-passed"), "{html}");
        assert!(
            html.contains("id=\"settings-yaml\""),
            "viewers see the YAML: {html}"
        );
        let stored = ouro_release::promotions::settings_yaml(
            &mut s.state.store.read().await.unwrap(),
            project.id,
        )
        .await
        .unwrap();
        assert_eq!(stored.as_deref(), Some(good), "{name}");

        // A release at a commit without the file: the settings are in effect.
        let (git, work, _) = app_checkout(&s).await;
        let plain = git.commit(&work, "README", "app\n", "Start").await;
        std::fs::create_dir_all(work.join(".ouro")).unwrap();
        let with_file = git
            .commit(
                &work,
                ".ouro/environments.yml",
                "environments:\n  qa: {}\n  live:\n    after: qa\n    freeze:\n      - {cron: \"* * 24-26 12 *\", timezone: \"Europe/Paris\"}\n",
                "Path in the repository",
            )
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        release_row(&s, project.id, "1.0.0", &plain, 1).await;
        let (_, html) = page(&s, &viewer, PATH_PAGE).await;
        assert!(html.contains("id=\"effect-source\""), "{html}");
        assert!(
            html.contains("so the <strong>project settings</strong> below apply"),
            "{html}"
        );
        assert!(html.contains("<tr data-env=\"staging\">"), "{html}");

        // A newer release whose commit has the file: the file is in effect, with its gates.
        release_row(&s, project.id, "1.1.0", &with_file, 2).await;
        let (_, html) = page(&s, &viewer, PATH_PAGE).await;
        assert!(
            html.contains("the path comes from <strong><code>.ouro/environments.yml</code> at its commit</strong>"),
            "{html}"
        );
        assert!(html.contains("<tr data-env=\"live\">"), "{html}");
        assert!(
            html.contains("freeze: * * 24-26 12 * (Europe/Paris)"),
            "{html}"
        );

        // A newer release whose file is broken: the page says so with the diagnostics.
        let broken = git
            .commit(
                &work,
                ".ouro/environments.yml",
                "environments:\n  qa:\n    wait: soon\n",
                "Break the path",
            )
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        release_row(&s, project.id, "1.2.0", &broken, 3).await;
        let (st, html) = page(&s, &viewer, PATH_PAGE).await;
        assert_eq!(st, 200, "{name}: {html}");
        assert!(html.contains("id=\"effect-problem\""), "{html}");
        assert!(
            html.contains(".ouro/environments.yml:3:11: error[release.env_bad_duration]"),
            "{html}"
        );

        // Empty removes the settings' path.
        let p = post(&s, &maint, PATH_PAGE, &[("yaml", "  \r\n")]).await;
        assert_eq!(p.status, 303, "{name}: {}", p.body);
        assert_eq!(
            p.flash,
            "The promotion path was removed from the project settings."
        );
        let (_, html) = page(&s, &viewer, PATH_PAGE).await;
        assert!(html.contains("id=\"no-settings-path\""), "{html}");
        s.stop().await;
    }
}

/// Succeeds with an artifact, unless the commit has `fail.txt` (also the browser walk's).
pub(crate) const PIPELINE: &str = r#"name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    artifacts:
      paths: [dist/app.txt]
    steps:
      - run: test ! -f fail.txt && mkdir -p dist && echo "app $(git log -1 --format=%s)" > dist/app.txt
"#;

#[tokio::test]
async fn a_green_runs_page_creates_a_draft_release_for_developers_only() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let name = db.name();
        s.demo_project().await;
        let viewer = member(&s, "vera", "viewer").await;
        let dev = member(&s, "dan", "developer").await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/ci.yml", PIPELINE, "chore: CI")
            .await;
        let head = git
            .commit(&work, "lib.rs", "pub fn a() {}\n", "feat: first feature")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{name}: {run}");

        // The form is for developers on a successful run.
        let (st, html) = page(&s, &viewer, "/projects/demo/pipelines/1").await;
        assert_eq!(st, 200, "{name}");
        assert!(!html.contains("id=\"create-release-form\""), "{html}");
        let (_, html) = page(&s, &dev, "/projects/demo/pipelines/1").await;
        assert!(html.contains("id=\"create-release-form\""), "{html}");
        assert!(
            html.contains("action=\"/projects/demo/pipelines/1/release\""),
            "{html}"
        );
        let p = post(&s, &viewer, "/projects/demo/pipelines/1/release", &[]).await;
        assert_eq!(p.status, 403, "{name}");
        // A page opened while the run was active gets the box with the graph's last poll.
        let (st, html) = page(&s, &dev, "/projects/demo/pipelines/1/graph").await;
        assert_eq!(st, 200, "{name}");
        assert!(
            html.contains("<div id=\"create-release-slot\" hx-swap-oob=\"true\">"),
            "{html}"
        );
        assert!(html.contains("id=\"create-release-form\""), "{html}");
        let (_, html) = page(&s, &viewer, "/projects/demo/pipelines/1/graph").await;
        assert!(!html.contains("create-release"), "{html}");

        // Creating: a draft with the computed version (the first is 0.1.0) and the artifact.
        let p = post(
            &s,
            &dev,
            "/projects/demo/pipelines/1/release",
            &[("version", ""), ("_csrf", "ignored-with-a-token")],
        )
        .await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, "/projects/demo/releases/0.1.0"),
            "{name}: {} {}",
            p.flash,
            p.body
        );
        assert_eq!(p.flash, "Draft release 0.1.0 created from run #1.");
        let (st, d) = s
            .admin(Method::GET, "/api/v1/projects/demo/releases/0.1.0", None)
            .await;
        assert_eq!(st, 200, "{name}: {d}");
        assert_eq!(d["state"], "draft");
        assert_eq!(d["run"], 1);
        assert_eq!(d["sha"], head.as_str());
        assert_eq!(d["created_by"], "dan");
        assert_eq!(d["artifacts"][0]["path"], "dist/app.txt", "{d}");

        // Refusals come back to the run page as a flash with their message.
        let p = post(&s, &dev, "/projects/demo/pipelines/1/release", &[]).await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, "/projects/demo/pipelines/1"),
            "{name}"
        );
        assert_eq!(p.flash, "the project already has a release 0.1.0");
        let p = post(
            &s,
            &dev,
            "/projects/demo/pipelines/1/release",
            &[("version", "v0.1.0")],
        )
        .await;
        assert_eq!(p.flash, "the project already has a release 0.1.0");
        let p = post(
            &s,
            &dev,
            "/projects/demo/pipelines/1/release",
            &[("version", "banana")],
        )
        .await;
        assert_eq!(p.location, "/projects/demo/pipelines/1", "{name}");
        assert!(p.flash.contains("banana"), "{}", p.flash);
        let p = post(
            &s,
            &dev,
            "/projects/demo/pipelines/1/release",
            &[("version", "2.0.0"), ("prerelease", "on")],
        )
        .await;
        assert!(p.flash.contains("1.4.0-rc.1"), "{}", p.flash);
        // The pre-release box on a computed version: 0.1.0 exists as a draft, so rc.1 of it.
        let p = post(
            &s,
            &dev,
            "/projects/demo/pipelines/1/release",
            &[("prerelease", "on")],
        )
        .await;
        assert_eq!(p.status, 303, "{name}: {}", p.body);
        assert!(
            p.location.starts_with("/projects/demo/releases/0.1.0-rc."),
            "{name}: {} {}",
            p.location,
            p.flash
        );

        // The Release tab's form makes drafts the same way, naming repository and run.
        let p = post(
            &s,
            &dev,
            "/projects/demo/releases",
            &[("repo", "app"), ("run", "1"), ("version", "0.2.0")],
        )
        .await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, "/projects/demo/releases/0.2.0"),
            "{name}: {}",
            p.flash
        );
        assert_eq!(p.flash, "Draft release 0.2.0 created from run #1.");
        let p = post(
            &s,
            &dev,
            "/projects/demo/releases",
            &[("repo", "app"), ("run", "first")],
        )
        .await;
        assert_eq!(
            (p.location.as_str(), p.flash.as_str()),
            ("/projects/demo/releases", "Pick a pipeline run."),
            "{name}"
        );

        // A failed run has no form, and posting to it anyway is refused with the reason.
        git.commit(&work, "fail.txt", "x\n", "fix: break the build")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 2).await;
        assert_eq!(run["status"], "failure", "{name}: {run}");
        for path in [
            "/projects/demo/pipelines/2",
            "/projects/demo/pipelines/2/graph",
        ] {
            let (_, html) = page(&s, &dev, path).await;
            assert!(
                !html.contains("id=\"create-release-form\""),
                "{path}: {html}"
            );
        }
        let p = post(&s, &dev, "/projects/demo/pipelines/2/release", &[]).await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (303, "/projects/demo/pipelines/2"),
            "{name}"
        );
        assert!(
            p.flash.contains("a release is made from a successful run"),
            "{}",
            p.flash
        );
        // An unknown run is a 404 page, not a 500.
        let p = post(&s, &dev, "/projects/demo/pipelines/99/release", &[]).await;
        assert_eq!(p.status, 404, "{name}: {}", p.body);
        s.stop().await;
    }
}
