use crate::support::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn contract_create_and_read_a_project() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (st, body) = s
            .admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "demo", "name": "Demo"})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["visibility"], "private");
        let (st, body) = s.admin(Method::GET, "/api/v1/projects/demo", None).await;
        assert_eq!((st, body["slug"].as_str()), (200, Some("demo")));
        let (st, body) = s
            .call(Method::GET, "/api/v1/projects/demo", None, None)
            .await;
        assert_eq!(st, 401);
        assert_eq!(error_code(&body), "auth.required");
        let (st, body) = s
            .call(
                Method::GET,
                "/api/v1/projects/demo",
                Some("ouro_not-a-token"),
                None,
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (401, "auth.required"));
        let (st, body) = s
            .admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "demo", "name": "Again"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (409, "project.slug_taken")
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn roles_visibility_and_private_projects_do_not_leak() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let alice = s.user("alice").await;
        let bob = s.user("bob").await;
        let (st, _) = s
            .call(
                Method::POST,
                "/api/v1/projects",
                Some(&alice),
                Some(json!({"slug": "p", "name": "P"})),
            )
            .await;
        assert_eq!(st, 201);
        // Bob cannot tell a private project from a missing one.
        let (st1, b1) = s
            .call(Method::GET, "/api/v1/projects/p", Some(&bob), None)
            .await;
        let (st2, b2) = s
            .call(Method::GET, "/api/v1/projects/nope", Some(&bob), None)
            .await;
        assert_eq!((st1, st2), (404, 404));
        assert_eq!(error_code(&b1), error_code(&b2));
        let (_, list) = s
            .call(Method::GET, "/api/v1/projects", Some(&bob), None)
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0);

        // As a viewer Bob sees it but may not change it.
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/projects/p/members/bob",
                Some(&alice),
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(
            s.call(Method::GET, "/api/v1/projects/p", Some(&bob), None)
                .await
                .0,
            200
        );
        let (st, body) = s
            .call(
                Method::PATCH,
                "/api/v1/projects/p",
                Some(&bob),
                Some(json!({"name": "X"})),
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (403, "auth.forbidden"));
        assert_eq!(body["error"]["details"]["required_role"], "maintainer");

        // A maintainer may not hand out ownership; an owner may.
        s.call(
            Method::PUT,
            "/api/v1/projects/p/members/bob",
            Some(&alice),
            Some(json!({"role": "maintainer"})),
        )
        .await;
        let (st, _) = s
            .call(
                Method::PATCH,
                "/api/v1/projects/p",
                Some(&bob),
                Some(json!({"name": "Renamed"})),
            )
            .await;
        assert_eq!(st, 200);
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/projects/p/members/bob",
                Some(&bob),
                Some(json!({"role": "owner"})),
            )
            .await;
        assert_eq!(st, 403);
        let (st, body) = s
            .call(
                Method::DELETE,
                "/api/v1/projects/p/members/alice",
                Some(&alice),
                None,
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (409, "member.last_owner"));
        let (st, body) = s
            .call(Method::DELETE, "/api/v1/projects/p", Some(&bob), None)
            .await;
        assert_eq!(
            (st, body["error"]["details"]["required_role"].as_str()),
            (403, Some("owner"))
        );

        // Public projects are readable anonymously, but not writable.
        s.call(
            Method::PATCH,
            "/api/v1/projects/p",
            Some(&alice),
            Some(json!({"visibility": "public"})),
        )
        .await;
        assert_eq!(
            s.call(Method::GET, "/api/v1/projects/p", None, None)
                .await
                .0,
            200
        );
        let (_, list) = s.call(Method::GET, "/api/v1/projects", None, None).await;
        assert_eq!(list["items"][0]["slug"], "p");
        assert_eq!(
            s.call(
                Method::PATCH,
                "/api/v1/projects/p",
                None,
                Some(json!({"name": "Y"}))
            )
            .await
            .0,
            401
        );
        let (st, members) = s
            .call(Method::GET, "/api/v1/projects/p/members", Some(&bob), None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(members.as_array().unwrap().len(), 2);

        assert_eq!(
            s.call(Method::DELETE, "/api/v1/projects/p", Some(&alice), None)
                .await
                .0,
            204
        );
        assert_eq!(
            s.call(Method::GET, "/api/v1/projects/p", Some(&alice), None)
                .await
                .0,
            404
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn stale_update_gets_409_with_the_current_version() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (_, p) = s
            .admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "demo", "name": "Demo"})),
            )
            .await;
        let v = p["version"].as_i64().unwrap();
        let (st, p2) = s
            .admin(
                Method::PATCH,
                "/api/v1/projects/demo",
                Some(json!({"name": "One", "version": v})),
            )
            .await;
        assert_eq!((st, p2["version"].as_i64()), (200, Some(v + 1)));
        let (st, body) = s
            .admin(
                Method::PATCH,
                "/api/v1/projects/demo",
                Some(json!({"name": "Two", "version": v})),
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (409, "conflict.stale_version")
        );
        assert_eq!(body["error"]["details"]["current_version"], json!(v + 1));
        let (_, now) = s.admin(Method::GET, "/api/v1/projects/demo", None).await;
        assert_eq!(now["name"], "One", "the stale write changed nothing");
        s.stop().await;
    }
}

#[tokio::test]
async fn tokens_scopes_revocation_and_pagination() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (st, created) = s
            .admin(
                Method::POST,
                "/api/v1/user/tokens",
                Some(json!({"name": "reader", "scopes": ["read_api"], "expires_in_days": 7})),
            )
            .await;
        assert_eq!(st, 201, "{created}");
        let secret = created["secret"].as_str().unwrap().to_string();
        assert!(created["token"]["expires_at"].is_string());
        assert_eq!(
            s.call(Method::GET, "/api/v1/projects", Some(&secret), None)
                .await
                .0,
            200
        );
        let (st, body) = s
            .call(
                Method::POST,
                "/api/v1/projects",
                Some(&secret),
                Some(json!({"slug": "x", "name": "X"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (403, "auth.insufficient_scope")
        );
        let (_, list) = s.admin(Method::GET, "/api/v1/user/tokens", None).await;
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .all(|t| t.get("secret").is_none() && t.get("token_hash").is_none())
        );
        let id = created["token"]["id"].as_i64().unwrap();
        assert_eq!(
            s.admin(Method::DELETE, &format!("/api/v1/user/tokens/{id}"), None)
                .await
                .0,
            204
        );
        assert_eq!(
            s.call(Method::GET, "/api/v1/projects", Some(&secret), None)
                .await
                .0,
            401
        );

        for i in 0..5 {
            s.admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": format!("p{i}"), "name": "P"})),
            )
            .await;
        }
        let (_, page1) = s.admin(Method::GET, "/api/v1/projects?limit=2", None).await;
        assert_eq!(page1["items"].as_array().unwrap().len(), 2);
        let cursor = page1["next_cursor"].as_str().unwrap().to_string();
        let (_, page2) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects?limit=2&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(page2["items"][0]["slug"], "p2");
        let (_, last) = s
            .admin(Method::GET, "/api/v1/projects?limit=2&cursor=4", None)
            .await;
        assert_eq!(last["next_cursor"], serde_json::Value::Null);
        let (_, found) = s.admin(Method::GET, "/api/v1/projects?q=p3", None).await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1);
        let (st, body) = s.admin(Method::GET, "/api/v1/projects?limit=0", None).await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (400, "request.invalid_query")
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn admin_routes_need_an_admin() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let bob = s.user("bob").await;
        let (st, body) = s.call(Method::GET, "/api/v1/users", Some(&bob), None).await;
        assert_eq!((st, error_code(&body).as_str()), (403, "auth.forbidden"));
        let (st, users) = s.admin(Method::GET, "/api/v1/users", None).await;
        assert_eq!(st, 200);
        assert_eq!(users["items"].as_array().unwrap().len(), 2);
        let (st, u) = s
            .admin(
                Method::PATCH,
                "/api/v1/users/bob",
                Some(json!({"is_admin": true})),
            )
            .await;
        assert_eq!((st, u["is_admin"].as_bool()), (200, Some(true)));
        assert_eq!(
            s.call(Method::GET, "/api/v1/users", Some(&bob), None)
                .await
                .0,
            200
        );
        let (st, _) = s
            .admin(
                Method::PATCH,
                "/api/v1/users/admin",
                Some(json!({"is_admin": false})),
            )
            .await;
        assert_eq!(st, 422, "an admin cannot demote themselves");
        let (_, me) = s.call(Method::GET, "/api/v1/user", Some(&bob), None).await;
        assert_eq!(me["name"], "bob");
        s.stop().await;
    }
}

/// Error bodies are part of the API: their shape and messages are pinned by snapshots, and must be
/// identical on both databases.
#[tokio::test]
async fn bad_input_gets_the_error_shape_and_never_a_500() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st| st.max_body_bytes = 4096,
                ..Default::default()
            },
        )
        .await;
        s.admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "demo", "name": "Demo"})),
        )
        .await;
        let tok = s.admin_token.clone();
        let raw = |body: &'static str, ctype: Option<&'static str>| {
            let mut r = s
                .req(Method::POST, "/api/v1/projects", Some(&tok))
                .body(body);
            if let Some(c) = ctype {
                r = r.header("content-type", c);
            }
            r
        };
        let mut cases = Vec::new();
        cases.push((
            "malformed_json",
            parse(
                raw("{\"slug\": ", Some("application/json"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ));
        cases.push((
            "wrong_type",
            parse(
                raw("{\"slug\": 1, \"name\": \"x\"}", Some("application/json"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ));
        cases.push((
            "unknown_field",
            parse(
                raw(
                    "{\"slug\": \"a\", \"name\": \"x\", \"owner\": 1}",
                    Some("application/json"),
                )
                .send()
                .await
                .unwrap(),
            )
            .await,
        ));
        cases.push((
            "missing_field",
            parse(
                raw("{\"slug\": \"a\"}", Some("application/json"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ));
        cases.push((
            "no_content_type",
            parse(raw("{}", None).send().await.unwrap()).await,
        ));
        cases.push((
            "invalid_slug",
            s.admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "Not OK", "name": "x"})),
            )
            .await,
        ));
        cases.push((
            "empty_name",
            s.admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "ok", "name": "  "})),
            )
            .await,
        ));
        cases.push((
            "bad_visibility",
            s.admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "ok", "name": "x", "visibility": "secret"})),
            )
            .await,
        ));
        // PostgreSQL cannot store NUL; both backends must refuse it the same way.
        cases.push((
            "nul_in_text",
            s.admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "ok", "name": "a\u{0}b"})),
            )
            .await,
        ));
        let big = "x".repeat(10_000);
        cases.push((
            "too_large",
            parse(
                s.req(Method::POST, "/api/v1/projects", Some(&tok))
                    .header("content-type", "application/json")
                    .body(format!("{{\"slug\":\"{big}\"}}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ));
        cases.push((
            "no_route",
            s.admin(Method::GET, "/api/v1/nothing-here", None).await,
        ));
        cases.push((
            "wrong_method",
            s.admin(Method::PUT, "/api/v1/projects", None).await,
        ));
        cases.push((
            "invalid_utf8_path",
            s.admin(Method::GET, "/api/v1/projects/%FF%FE", None).await,
        ));
        cases.push((
            "bad_cursor",
            s.admin(Method::GET, "/api/v1/projects?cursor=abc", None)
                .await,
        ));
        cases.push((
            "bad_role",
            s.admin(
                Method::PUT,
                "/api/v1/projects/demo/members/admin",
                Some(json!({"role": "god"})),
            )
            .await,
        ));
        cases.push((
            "no_token",
            s.call(Method::GET, "/api/v1/user", None, None).await,
        ));
        cases.push((
            "bad_scheme",
            parse(
                s.client
                    .get(s.url("/api/v1/user"))
                    .header("authorization", "Basic abc")
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ));
        for (name, (status, body)) in cases {
            assert!((400..500).contains(&status), "{name}: {status} {body}");
            error_code(&body);
            insta::assert_json_snapshot!(
                format!("error_{name}"),
                json!({"status": status, "body": body})
            );
        }
        s.stop().await;
    }
}
