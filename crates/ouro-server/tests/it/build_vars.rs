//! Pipeline variables and secrets: sealed at rest, never returned, environment overrides, no
//! secrets for untrusted runs, validation, who may do what, the audit events, and the page.

use crate::code_hosting::member;
use crate::support::*;
use ouro_build::secrets::{self, Kind};
use ouro_store::q;
use reqwest::Method;
use serde_json::{Value, json};

const VARS: &str = "/api/v1/projects/demo/variables";
const SECRETS: &str = "/api/v1/projects/demo/secrets";
const TOKEN: &str = "tok-very-secret-123";

async fn events(s: &TestServer, kind: &str) -> Vec<Value> {
    let (st, body) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/demo/events?kind={kind}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_never_returned() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let p = s.demo_project().await;
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{SECRETS}/DEPLOY_TOKEN"),
                Some(json!({"value": TOKEN})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        assert!(!b.to_string().contains(TOKEN), "{b}");
        assert_eq!(b["name"], "DEPLOY_TOKEN");
        assert_eq!(b["environment"], "");
        assert_eq!(b["created_by"], "user:admin");
        assert!(b.get("value").is_none(), "{b}");

        // The raw column holds only the sealed form.
        let rows = q("SELECT value FROM build_variables WHERE project_id = $1")
            .bind(p.id)
            .fetch_all(&mut s.state.store.read().await.unwrap())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{}", db.name());
        let raw = rows[0].text("value").unwrap();
        assert!(!raw.contains(TOKEN), "{raw}");
        assert!(raw.starts_with("v1:"), "{raw}");
        assert_eq!(s.state.secrets.open(&raw).as_deref(), Some(TOKEN));

        let (st, list) = s.admin(Method::GET, SECRETS, None).await;
        assert_eq!(st, 200);
        assert!(!list.to_string().contains(TOKEN), "{list}");
        assert_eq!(list["secrets"][0]["name"], "DEPLOY_TOKEN");

        // Replacing keeps created_at and answers 200.
        let created_at = list["secrets"][0]["created_at"].clone();
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{SECRETS}/DEPLOY_TOKEN"),
                Some(json!({"value": "another-value"})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["created_at"], created_at);

        // The page lists it without the value.
        let (st, page) = s.admin_page("/projects/demo/settings/variables").await;
        assert_eq!(st, 200);
        assert!(page.contains("DEPLOY_TOKEN"), "{page}");
        assert!(!page.contains(TOKEN) && !page.contains("another-value"));

        // Variables are plain and shown.
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{VARS}/REGION"),
                Some(json!({"value": "eu-west", "environment": "prod"})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let (_, list) = s.admin(Method::GET, VARS, None).await;
        assert_eq!(list["variables"][0]["value"], "eu-west");
        assert_eq!(list["variables"][0]["environment"], "prod");
        s.stop().await;
    }
}

#[tokio::test]
async fn environment_values_override_and_untrusted_runs_get_no_secrets() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let p = s.demo_project().await;
        for (path, body) in [
            ("variables/REGION", json!({"value": "eu"})),
            (
                "variables/REGION",
                json!({"value": "us", "environment": "prod"}),
            ),
            ("variables/ONLY_ALL", json!({"value": "x"})),
            ("secrets/TOKEN", json!({"value": "token-all-envs"})),
            (
                "secrets/TOKEN",
                json!({"value": "token-prod-only", "environment": "prod"}),
            ),
            (
                "secrets/STAGING_ONLY",
                json!({"value": "staging-secret", "environment": "staging"}),
            ),
        ] {
            let (st, b) = s
                .admin(
                    Method::PUT,
                    &format!("/api/v1/projects/demo/{path}"),
                    Some(body),
                )
                .await;
            assert_eq!(st, 201, "{path}: {b}");
        }
        let mut conn = s.state.store.read().await.unwrap();
        let jv = secrets::for_job(&mut conn, &s.state.secrets, p.id, Some("prod"), true)
            .await
            .unwrap();
        assert_eq!(jv.vars["REGION"], "us");
        assert_eq!(jv.vars["ONLY_ALL"], "x");
        assert_eq!(jv.secrets["TOKEN"], "token-prod-only");
        assert!(!jv.secrets.contains_key("STAGING_ONLY"));

        let jv = secrets::for_job(&mut conn, &s.state.secrets, p.id, None, true)
            .await
            .unwrap();
        assert_eq!(jv.vars["REGION"], "eu");
        assert_eq!(jv.secrets["TOKEN"], "token-all-envs");
        assert_eq!(jv.secrets.len(), 1);

        // Untrusted: variables still, no secrets at all.
        let jv = secrets::for_job(&mut conn, &s.state.secrets, p.id, Some("prod"), false)
            .await
            .unwrap();
        assert_eq!(jv.vars["REGION"], "us");
        assert!(jv.secrets.is_empty(), "{jv:?}");
        drop(conn);

        // Who is trusted: developers and up, admins; not viewers, strangers or unknown users.
        member(&s, "dev", "developer").await;
        member(&s, "view", "viewer").await;
        s.user("stranger").await;
        let mut conn = s.state.store.read().await.unwrap();
        for (who, want) in [
            ("dev", true),
            ("admin", true),
            ("view", false),
            ("stranger", false),
            ("nobody", false),
        ] {
            assert_eq!(
                secrets::is_trusted(&mut conn, p.id, who).await.unwrap(),
                want,
                "{who}"
            );
        }
        assert!(
            !secrets::is_trusted_actor(&mut conn, p.id, "user:view")
                .await
                .unwrap()
        );
        assert!(
            secrets::is_trusted_actor(&mut conn, p.id, "user:dev")
                .await
                .unwrap()
        );
        drop(conn);
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_names_and_values_are_refused_with_the_field() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let cases = [
            (
                format!("{SECRETS}/SHORT"),
                json!({"value": "12345"}),
                "build.invalid_variable_value",
                "value",
            ),
            (
                format!("{VARS}/lower"),
                json!({"value": "x"}),
                "build.invalid_variable_name",
                "name",
            ),
            (
                format!("{VARS}/OURO_TOKEN"),
                json!({"value": "x"}),
                "build.invalid_variable_name",
                "name",
            ),
            (
                format!("{VARS}/{}", "A".repeat(101)),
                json!({"value": "x"}),
                "build.invalid_variable_name",
                "name",
            ),
            (
                format!("{VARS}/BIG"),
                json!({"value": "x".repeat(64 * 1024 + 1)}),
                "build.invalid_variable_value",
                "value",
            ),
            (
                format!("{VARS}/ENV"),
                json!({"value": "x", "environment": "a/b"}),
                "request.validation_failed",
                "environment",
            ),
        ];
        for (path, body, code, field) in cases {
            let (st, b) = s.admin(Method::PUT, &path, Some(body)).await;
            assert_eq!(st, 422, "{path}: {b}");
            assert_eq!(error_code(&b), code, "{path}");
            assert_eq!(b["error"]["details"]["field"], field, "{path}");
        }
        let (_, b) = s
            .admin(
                Method::PUT,
                &format!("{SECRETS}/SHORT"),
                Some(json!({"value": "12345"})),
            )
            .await;
        assert!(
            b["error"]["message"].as_str().unwrap().contains("masked"),
            "{b}"
        );
        let (st, b) = s.admin(Method::DELETE, &format!("{VARS}/NOPE"), None).await;
        assert_eq!(st, 404);
        assert_eq!(error_code(&b), "build.variable_not_found");
        let (_, list) = s.admin(Method::GET, VARS, None).await;
        assert_eq!(list["variables"], json!([]));
        s.stop().await;
    }
}

#[tokio::test]
async fn permissions_viewer_cannot_list_developer_cannot_set() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let view = member(&s, "view", "viewer").await;
        let dev = member(&s, "dev", "developer").await;
        let maint = member(&s, "maint", "maintainer").await;
        for path in [VARS, SECRETS] {
            let (st, _) = s.call(Method::GET, path, Some(&view), None).await;
            assert_eq!(st, 403, "{path}");
            let (st, _) = s.call(Method::GET, path, Some(&dev), None).await;
            assert_eq!(st, 200, "{path}");
            let one = format!("{path}/NAME_1");
            let body = json!({"value": "value-123"});
            let (st, _) = s
                .call(Method::PUT, &one, Some(&dev), Some(body.clone()))
                .await;
            assert_eq!(st, 403, "{path}");
            let (st, b) = s.call(Method::PUT, &one, Some(&maint), Some(body)).await;
            assert_eq!(st, 201, "{path}: {b}");
            let (st, _) = s.call(Method::DELETE, &one, Some(&dev), None).await;
            assert_eq!(st, 403, "{path}");
            let (st, _) = s.call(Method::DELETE, &one, Some(&maint), None).await;
            assert_eq!(st, 204, "{path}");
        }
        // The page: developers read, viewers do not; developers cannot post.
        let r = s
            .req(
                Method::GET,
                "/projects/demo/settings/variables",
                Some(&view),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let r = s
            .req(Method::GET, "/projects/demo/settings/variables", Some(&dev))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(!r.text().await.unwrap().contains("id=\"secret-form\""));
        let r = s
            .req(
                Method::POST,
                "/projects/demo/settings/variables",
                Some(&dev),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("kind", "secret"),
                ("name", "X_TOKEN"),
                ("value", "value-123"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        s.stop().await;
    }
}

#[tokio::test]
async fn changes_are_audited_without_the_value() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        s.admin(
            Method::PUT,
            &format!("{SECRETS}/DEPLOY_TOKEN"),
            Some(json!({"value": TOKEN, "environment": "prod"})),
        )
        .await;
        s.admin(
            Method::PUT,
            &format!("{VARS}/REGION"),
            Some(json!({"value": "plain-region"})),
        )
        .await;
        let (st, _) = s
            .admin(
                Method::DELETE,
                &format!("{SECRETS}/DEPLOY_TOKEN?environment=prod"),
                None,
            )
            .await;
        assert_eq!(st, 204);
        let evs = events(&s, "build.secret_changed").await;
        assert_eq!(evs.len(), 2, "{evs:?}");
        let all = serde_json::to_string(&evs).unwrap();
        assert!(!all.contains(TOKEN), "{all}");
        let actions: Vec<&str> = evs
            .iter()
            .map(|e| e["payload"]["action"].as_str().unwrap())
            .collect();
        assert!(actions.contains(&"set") && actions.contains(&"deleted"));
        for e in &evs {
            assert_eq!(e["payload"]["name"], "DEPLOY_TOKEN");
            assert_eq!(e["payload"]["environment"], "prod");
            assert_eq!(e["actor"], "user:admin", "{e}");
        }
        let vevs = events(&s, "build.variable_changed").await;
        assert_eq!(vevs.len(), 1);
        assert!(
            !serde_json::to_string(&vevs)
                .unwrap()
                .contains("plain-region")
        );
        let (_, list) = s.admin(Method::GET, SECRETS, None).await;
        assert_eq!(list["secrets"], json!([]));
        s.stop().await;
    }
}

#[tokio::test]
async fn the_page_adds_updates_and_deletes() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let p = s.demo_project().await;
        let (st, loc, _) = s
            .admin_form(
                "/projects/demo/settings/variables",
                form_body(&[
                    ("kind", "secret"),
                    ("name", "DEPLOY_TOKEN"),
                    ("environment", "prod"),
                    ("value", TOKEN),
                ]),
            )
            .await;
        assert_eq!(st, 303, "{loc}");
        assert_eq!(loc, "/projects/demo/settings/variables");
        let (st, body) = s.admin_page("/projects/demo/settings/variables").await;
        assert_eq!(st, 200);
        assert!(body.contains("DEPLOY_TOKEN") && !body.contains(TOKEN));
        assert!(body.contains("type=\"password\""));
        assert!(
            body.contains("Variables and secrets</a>"),
            "settings nav link"
        );

        // A too-short secret: 422 with the reason and without the value echoed.
        let (st, _, body) = s
            .admin_form(
                "/projects/demo/settings/variables",
                form_body(&[("kind", "secret"), ("name", "SHORT"), ("value", "abc12")]),
            )
            .await;
        assert_eq!(st, 422);
        assert!(body.contains("masked") && !body.contains("abc12"), "{body}");

        let (st, _, _) = s
            .admin_form(
                "/projects/demo/settings/variables",
                form_body(&[("kind", "var"), ("name", "REGION"), ("value", "eu-1")]),
            )
            .await;
        assert_eq!(st, 303);
        let mut conn = s.state.store.read().await.unwrap();
        assert_eq!(
            secrets::list(&mut conn, p.id, Kind::Variable)
                .await
                .unwrap()[0]
                .value
                .as_deref(),
            Some("eu-1")
        );
        drop(conn);

        let (st, _, _) = s
            .admin_form(
                "/projects/demo/settings/variables/delete",
                form_body(&[
                    ("kind", "secret"),
                    ("name", "DEPLOY_TOKEN"),
                    ("environment", "prod"),
                ]),
            )
            .await;
        assert_eq!(st, 303);
        let mut conn = s.state.store.read().await.unwrap();
        assert!(
            secrets::list(&mut conn, p.id, Kind::Secret)
                .await
                .unwrap()
                .is_empty()
        );
        drop(conn);
        s.stop().await;
    }
}

/// Project settings → the limit of jobs running at once: maintainers set and clear it on the
/// page (the same setting as `/api/v1/projects/{slug}/pipeline-settings`), a bad value is refused
/// next to the field with the input kept, developers see it but cannot change it.
#[tokio::test]
async fn the_running_jobs_limit_is_set_and_cleared_on_the_settings_page() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dave", "developer").await;
        let page = "/projects/demo/settings/variables";
        let post = |token: Option<String>, value: &'static str| {
            let r = s
                .req(
                    Method::POST,
                    "/projects/demo/settings/variables/limit",
                    Some(token.as_deref().unwrap_or(&s.admin_token)),
                )
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&[("max_running_jobs", value)]));
            async move { r.send().await.unwrap() }
        };
        let (st, html) = s.admin_page(page).await;
        assert_eq!(st, 200);
        assert!(html.contains("No limit"), "{html}");

        let r = post(None, "3").await;
        assert_eq!(r.status().as_u16(), 303);
        let (_, settings) = s
            .admin(Method::GET, "/api/v1/projects/demo/pipeline-settings", None)
            .await;
        assert_eq!(settings["max_running_jobs"], 3, "{settings}");
        let (_, html) = s.admin_page(page).await;
        assert!(html.contains("At most <strong>3</strong>"), "{html}");

        for bad in ["0", "many", "10001"] {
            let r = post(None, bad).await;
            assert_eq!(r.status().as_u16(), 422, "{bad}");
            let html = r.text().await.unwrap();
            assert!(html.contains("id=\"limit-error\""), "{bad}: {html}");
            assert!(
                html.contains(&format!("value=\"{bad}\"")),
                "{bad}: the input is kept"
            );
        }
        let (_, settings) = s
            .admin(Method::GET, "/api/v1/projects/demo/pipeline-settings", None)
            .await;
        assert_eq!(settings["max_running_jobs"], 3, "unchanged: {settings}");

        // Developers see the limit, not the form, and cannot post.
        let html = s
            .req(Method::GET, page, Some(&dev))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("id=\"limit-now\"") && !html.contains("id=\"limit-form\""));
        let r = post(Some(dev.clone()), "").await;
        assert_eq!(r.status().as_u16(), 403);

        // Empty clears it.
        let r = post(None, "").await;
        assert_eq!(r.status().as_u16(), 303);
        let (_, settings) = s
            .admin(Method::GET, "/api/v1/projects/demo/pipeline-settings", None)
            .await;
        assert_eq!(settings["max_running_jobs"], Value::Null, "{settings}");
        s.stop().await;
    }
}
