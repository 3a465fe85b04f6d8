//! Promotions end to end: a real repository with `.ouro/environments.yml` pushed with git, a
//! published release row, order enforced (409), approvals with no-self-approval through the API,
//! the environments view, the promotion page with its gates and the request form.

use reqwest::Method;
use serde_json::json;

use crate::code_hosting::app_checkout;
use crate::support::{TestServer, backends, error_code, form_body};

const ENVIRONMENTS: &str = r#"environments:
  dev: {}
  staging:
    approvals: {required: 1, from: [maintainers], no-self-approval: true}
    checks: [tests-passed]
  production:
    approvals: {required: 1, from: [ann]}
"#;

#[tokio::test]
async fn a_release_moves_along_the_path_through_its_gates() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        let project = s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro")).unwrap();
        let sha = git
            .commit(
                &work,
                ".ouro/environments.yml",
                ENVIRONMENTS,
                "Add the promotion path",
            )
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;

        let ann = s.user("ann").await;
        let rex = s.user("rex").await;
        let dave = s.user("dave").await;
        for (u, role) in [
            ("ann", "maintainer"),
            ("rex", "maintainer"),
            ("dave", "developer"),
        ] {
            let (st, body) = s
                .admin(
                    Method::PUT,
                    &format!("/api/v1/projects/demo/members/{u}"),
                    Some(json!({"role": role})),
                )
                .await;
            assert_eq!(st, 200, "{body}");
        }
        // RELB creates releases; here the row is written directly, published by the admin.
        {
            let mut tx = s.state.store.begin().await.unwrap();
            let repo = ouro_store::q("SELECT id FROM code_repos WHERE name = 'app'")
                .fetch_one(&mut tx)
                .await
                .unwrap()
                .i64("id")
                .unwrap();
            ouro_store::q(
                "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, \
                 test_summary, created_at, published_by, published_at) VALUES ($1, $2, '1.0.0', \
                 'v1.0.0', $3, 'published', '', '{\"totals\": {\"failed\": 0, \"errored\": 0}, \"gate_passed\": true}', 1, \
                 (SELECT id FROM users WHERE name = 'admin'), 1)",
            )
            .bind(project.id)
            .bind(repo)
            .bind(sha.as_str())
            .execute(&mut tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        let promote = "/api/v1/projects/demo/releases/1.0.0/promotions";

        let (st, body) = s
            .call(
                Method::POST,
                promote,
                Some(&rex),
                Some(json!({"environment": "staging"})),
            )
            .await;
        assert_eq!(st, 409, "{name}: {body}");
        assert_eq!(error_code(&body), "release.promotion_out_of_order");
        assert_eq!(body["error"]["details"]["after"], "dev");

        let (st, body) = s
            .call(
                Method::POST,
                promote,
                Some(&rex),
                Some(json!({"environment": "qa"})),
            )
            .await;
        assert_eq!(st, 404, "{name}: {body}");
        assert_eq!(error_code(&body), "release.environment_not_found");

        let (st, dev) = s
            .call(
                Method::POST,
                promote,
                Some(&rex),
                Some(json!({"environment": "dev"})),
            )
            .await;
        assert_eq!(st, 201, "{name}: {dev}");
        assert_eq!(dev["state"], "approved");
        assert_eq!(dev["config_source"], ".ouro/environments.yml");

        let (st, staging) = s
            .call(
                Method::POST,
                promote,
                Some(&rex),
                Some(json!({"environment": "staging"})),
            )
            .await;
        assert_eq!(st, 201, "{name}: {staging}");
        assert_eq!(staging["state"], "requested");
        let id = staging["id"].as_i64().unwrap();
        let approve = format!("/api/v1/projects/demo/promotions/{id}/approve");

        // The requester (a maintainer) cannot approve, nor can a developer.
        for (who, token) in [("rex", &rex), ("dave", &dave)] {
            let (st, body) = s
                .call(
                    Method::POST,
                    &approve,
                    Some(token),
                    Some(json!({"comment": "mine"})),
                )
                .await;
            assert_eq!(st, 403, "{name}: {who}: {body}");
            assert_eq!(error_code(&body), "release.approval_not_allowed");
        }
        let (st, body) = s
            .call(
                Method::POST,
                &approve,
                Some(&ann),
                Some(json!({"comment": "looks good"})),
            )
            .await;
        assert_eq!(st, 200, "{name}: {body}");
        assert_eq!(body["state"], "approved");
        assert_eq!(body["approvals"][0]["user"], "ann");
        assert_eq!(body["approvals"][0]["comment"], "looks good");
        let gates: Vec<(String, String)> = body["gates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["name"].as_str().unwrap().into(),
                    g["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            gates,
            [
                ("approvals".into(), "passed".into()),
                ("tests-passed".into(), "passed".into())
            ]
        );
        let (st, body) = s
            .call(Method::POST, &approve, Some(&ann), Some(json!({})))
            .await;
        assert_eq!(st, 409, "{name}: {body}");
        assert_eq!(error_code(&body), "release.promotion_closed");

        // Where the release is.
        let (st, envs) = s
            .admin(Method::GET, "/api/v1/projects/demo/environments", None)
            .await;
        assert_eq!(st, 200, "{name}: {envs}");
        assert_eq!(envs["source"], ".ouro/environments.yml");
        assert_eq!(envs["release"], "1.0.0");
        let names: Vec<&str> = envs["environments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["environment"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["dev", "staging", "production"]);
        assert_eq!(envs["environments"][1]["releases"][0]["release"], "1.0.0");
        assert_eq!(envs["environments"][1]["releases"][0]["state"], "approved");
        assert_eq!(
            envs["environments"][2]["releases"]
                .as_array()
                .unwrap()
                .len(),
            0
        );

        // The page shows each gate and the approval; the form requests production.
        let (st, html) = s
            .admin_page("/projects/demo/releases/1.0.0/promotions")
            .await;
        assert_eq!(st, 200, "{name}");
        assert!(html.contains("id=\"env-staging\""), "{html}");
        assert!(html.contains("gate-status-passed"), "{html}");
        assert!(html.contains("looks good"), "{html}");
        assert!(html.contains("id=\"request-production\""), "{html}");
        let (st, location, _) = s
            .admin_form(
                "/projects/demo/releases/1.0.0/promotions",
                form_body(&[("environment", "production")]),
            )
            .await;
        assert_eq!(st, 303, "{name}");
        assert!(
            location.starts_with("/projects/demo/releases/1.0.0/promotions"),
            "{location}"
        );
        let (_, list) = s.admin(Method::GET, promote, None).await;
        assert_eq!(list["environments"][2]["state"], "requested", "{list}");
        let (_, html) = s
            .admin_page("/projects/demo/releases/1.0.0/promotions")
            .await;
        assert!(html.contains("gate-status-pending"), "{html}");
        assert!(html.contains("id=\"approve-production\""), "{html}");

        // Only ann is named for production: she rejects it.
        let pid = list["environments"][2]["promotion"]["id"].as_i64().unwrap();
        let (st, body) = s
            .call(
                Method::POST,
                &format!("/api/v1/projects/demo/promotions/{pid}/reject"),
                Some(&ann),
                Some(json!({"comment": "not before the audit"})),
            )
            .await;
        assert_eq!(st, 200, "{name}: {body}");
        assert_eq!(body["state"], "rejected");
        assert_eq!(body["reason"], "rejected by ann");

        let (_, events) = s
            .admin(Method::GET, "/api/v1/projects/demo/events?limit=500", None)
            .await;
        let kinds: Vec<&str> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        for k in [
            "promotion.requested",
            "approval.requested",
            "approval.decided",
            "promotion.approved",
            "promotion.rejected",
        ] {
            assert!(kinds.contains(&k), "{name}: {k} missing in {kinds:?}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn project_settings_hold_the_path_when_the_commit_has_none() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        s.demo_project().await;
        let (st, body) = s
            .admin(Method::GET, "/api/v1/projects/demo/environments", None)
            .await;
        assert_eq!(st, 404, "{name}: {body}");
        assert_eq!(error_code(&body), "release.environments_not_configured");
        let (st, body) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/environments",
                Some(json!({"yaml": "environments:\n  dev: {}\n  prod:\n    aproval: {}\n"})),
            )
            .await;
        assert_eq!(st, 422, "{name}: {body}");
        assert_eq!(error_code(&body), "release.environments_invalid");
        assert_eq!(
            body["error"]["details"]["diagnostics"][0],
            "project settings (environments):4:5: error[release.env_unknown_key]: unknown key `aproval` in environment `prod`"
        );
        let (st, body) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/environments",
                Some(json!({"yaml": "environments:\n  dev: {}\n  prod: {}\n"})),
            )
            .await;
        assert_eq!(st, 200, "{name}: {body}");
        assert_eq!(body["environments"], json!(["dev", "prod"]));
        let (st, body) = s
            .admin(Method::GET, "/api/v1/projects/demo/environments", None)
            .await;
        assert_eq!(st, 200, "{name}: {body}");
        assert_eq!(body["source"], "settings");
        s.stop().await;
    }
}
