//! Saved queries over HTTP: personal vs shared visibility, duplicates, invalid queries,
//! conflicts and permissions.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const SAVED: &str = "/api/v1/projects/demo/saved-queries";

/// Project `demo` with viewers `vic` and `val`; returns their tokens.
async fn setup(s: &TestServer) -> (String, String) {
    let (st, body) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "demo", "name": "Demo"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let mut toks = Vec::new();
    for name in ["vic", "val"] {
        let tok = s.user(name).await;
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("/api/v1/projects/demo/members/{name}"),
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200);
        toks.push(tok);
    }
    (toks.remove(0), toks.remove(0))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn saved_queries_over_http() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (vic, val) = setup(&s).await;
        let body =
            |name: &str, q: &str, shared: bool| json!({"name": name, "query": q, "shared": shared});

        let (st, mine) = s
            .call(
                Method::POST,
                SAVED,
                Some(&vic),
                Some(body("mine", "type:bug", false)),
            )
            .await;
        assert_eq!(st, 201, "{mine}");
        assert_eq!(mine["shared"], false);
        // A viewer may not share.
        let (st, e) = s
            .call(
                Method::POST,
                SAVED,
                Some(&vic),
                Some(body("team", "", true)),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (403, "auth.forbidden"));
        // The admin is the project's owner, so a maintainer.
        let (st, team) = s
            .admin(Method::POST, SAVED, Some(body("team", "state:open", true)))
            .await;
        assert_eq!(st, 201, "{team}");

        let (st, list) = s.call(Method::GET, SAVED, Some(&vic), None).await;
        assert_eq!(
            (st, names(&list)),
            (200, vec!["team", "mine"]),
            "{}",
            db.name()
        );
        let (_, list) = s.call(Method::GET, SAVED, Some(&val), None).await;
        assert_eq!(names(&list), ["team"]);

        // Duplicates.
        let (st, e) = s
            .call(
                Method::POST,
                SAVED,
                Some(&vic),
                Some(body("mine", "", false)),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "saved_query.name_taken")
        );
        let (st, e) = s
            .admin(Method::POST, SAVED, Some(body("team", "", true)))
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "saved_query.name_taken")
        );

        // Invalid query: located like the item list's.
        let (st, e) = s
            .call(
                Method::POST,
                SAVED,
                Some(&vic),
                Some(body("bad", "type:bug bogus:x", false)),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (400, "item.invalid_query"));
        assert_eq!(e["error"]["details"]["position"], 9, "{e}");
        assert!(
            e["error"]["details"]["caret"]
                .as_str()
                .unwrap()
                .contains('^')
        );
        let (st, e) = s
            .call(Method::POST, SAVED, Some(&vic), Some(json!({"name": "x"})))
            .await;
        assert_eq!(st, 422, "{e}");

        // Stale version.
        let one = format!("{SAVED}/{}", mine["id"]);
        let (st, up) = s
            .call(
                Method::PATCH,
                &one,
                Some(&vic),
                Some(json!({"query": "type:task", "version": 1})),
            )
            .await;
        assert_eq!((st, &up["version"]), (200, &json!(2)), "{up}");
        let (st, e) = s
            .call(
                Method::PATCH,
                &one,
                Some(&vic),
                Some(json!({"name": "x", "version": 1})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "conflict.stale_version")
        );
        assert_eq!(e["error"]["details"]["current_version"], 2);

        // Someone else's personal query is invisible; a shared one needs a maintainer.
        let (st, e) = s.call(Method::DELETE, &one, Some(&val), None).await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (404, "saved_query.not_found")
        );
        let (st, _) = s
            .admin(Method::PATCH, &one, Some(json!({"name": "x"})))
            .await;
        assert_eq!(st, 404);
        let team_one = format!("{SAVED}/{}", team["id"]);
        let (st, _) = s.call(Method::DELETE, &team_one, Some(&vic), None).await;
        assert_eq!(st, 403);
        let (st, _) = s
            .call(Method::DELETE, &format!("{SAVED}/abc"), Some(&vic), None)
            .await;
        assert_eq!(st, 400);
        let (st, _) = s.call(Method::DELETE, &one, Some(&vic), None).await;
        assert_eq!(st, 204);
        let (st, _) = s.admin(Method::DELETE, &team_one, None).await;
        assert_eq!(st, 204);
        let (_, list) = s.call(Method::GET, SAVED, Some(&vic), None).await;
        assert_eq!(list, json!([]));
        s.stop().await;
    }
}

async fn post_form(s: &TestServer, tok: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let res = s
        .req(Method::POST, path, Some(tok))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
        .unwrap();
    let loc = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (res.status().as_u16(), loc)
}

async fn page(s: &TestServer, tok: &str, path: &str) -> String {
    let res = s.req(Method::GET, path, Some(tok)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.unwrap()
}

#[tokio::test]
async fn backlog_saves_lists_and_deletes_searches() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (vic, val) = setup(&s).await;
        let body = page(&s, &vic, "/projects/demo/plan?q=type%3Abug").await;
        assert!(body.contains("save-search-form"), "{}", db.name());
        assert!(!body.contains("name=\"shared\""), "a viewer cannot share");
        let (st, loc) = post_form(
            &s,
            &vic,
            "/projects/demo/plan/saved",
            &[("name", "My bugs"), ("q", "type:bug")],
        )
        .await;
        assert_eq!(st, 303);
        assert!(loc.starts_with("/projects/demo/plan?q=type"), "{loc}");
        // A bad query is refused and nothing is saved.
        let (st, _) = post_form(
            &s,
            &vic,
            "/projects/demo/plan/saved",
            &[("name", "bad"), ("q", "bogus:x")],
        )
        .await;
        assert_eq!(st, 303);

        let body = page(&s, &vic, "/projects/demo/plan").await;
        assert!(body.contains("My bugs"));
        assert!(
            body.contains("href=\"/projects/demo/plan?q=type%3Abug\""),
            "{body}"
        );
        assert!(!body.contains(">bad<"));
        assert!(
            !page(&s, &val, "/projects/demo/plan")
                .await
                .contains("My bugs")
        );

        let (_, list) = s.call(Method::GET, SAVED, Some(&vic), None).await;
        assert_eq!(names(&list), ["My bugs"]);
        let del = format!("/projects/demo/plan/saved/{}/delete", list[0]["id"]);
        let (st, _) = post_form(&s, &val, &del, &[]).await;
        assert_eq!(st, 404);
        let (st, _) = post_form(&s, &vic, &del, &[]).await;
        assert_eq!(st, 303);
        assert!(
            !page(&s, &vic, "/projects/demo/plan")
                .await
                .contains("My bugs")
        );
        s.stop().await;
    }
}
