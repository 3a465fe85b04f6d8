//! The Plan pages over HTTP with bearer tokens (UI routes accept them, and a form posted with a
//! token needs no CSRF field): create, backlog, search, transitions, comments, edit conflicts,
//! escaping of hostile input, and what a viewer may not do.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

const PLAN: &str = "/projects/demo/plan";

struct Page {
    status: u16,
    location: String,
    body: String,
}

async fn send(
    s: &TestServer,
    tok: &str,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Page {
    let mut r = s.req(method.clone(), path, Some(tok));
    if method == Method::POST {
        r = r
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
    }
    let res = r.send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Page {
        status,
        location,
        body: res.text().await.unwrap(),
    }
}

async fn get(s: &TestServer, tok: &str, path: &str) -> Page {
    send(s, tok, Method::GET, path, &[]).await
}

async fn post(s: &TestServer, tok: &str, path: &str, form: &[(&str, &str)]) -> Page {
    send(s, tok, Method::POST, path, form).await
}

/// Project `demo` with a developer `dev` and a viewer `vic`; returns their tokens.
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
    for (name, role) in [("dev", "developer"), ("vic", "viewer")] {
        let tok = s.user(name).await;
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("/api/v1/projects/demo/members/{name}"),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(st, 200);
        toks.push(tok);
    }
    (toks.remove(0), toks.remove(0))
}

async fn version(s: &TestServer, key: &str) -> i64 {
    let (_, item) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/demo/items/{key}"),
            None,
        )
        .await;
    item["version"].as_i64().unwrap()
}

async fn edit(s: &TestServer, tok: &str, item: &str, title: &str, v: i64) -> Page {
    let v = v.to_string();
    let form = [
        ("title", title),
        ("description", "d"),
        ("priority", "high"),
        ("estimate", "3"),
        ("assignee", "dev"),
        ("labels", "ui, api"),
        ("version", &v),
    ];
    post(s, tok, &format!("{item}/edit"), &form).await
}

#[tokio::test]
async fn plan_ui_create_search_transition_comment() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (dev, _) = setup(&s).await;

        let p = get(&s, &dev, PLAN).await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains("The backlog is empty"), "{}", p.body);
        assert!(p.body.contains("id=\"new-item-form\""));
        // The phase is live in the project navigation.
        assert!(
            p.body
                .contains("href=\"/projects/demo/plan\" aria-current=\"page\"")
        );

        // Field errors come back next to the field, with the input kept.
        let p = post(
            &s,
            &dev,
            &format!("{PLAN}/items"),
            &[
                ("type", "story"),
                ("title", "  "),
                ("description", "keep me"),
            ],
        )
        .await;
        assert_eq!(p.status, 422, "{}", p.body);
        assert!(p.body.contains("id=\"new-title-error\""), "{}", p.body);
        assert!(p.body.contains(">keep me</textarea>"));
        let p = post(
            &s,
            &dev,
            &format!("{PLAN}/items"),
            &[("type", "nope"), ("title", "x")],
        )
        .await;
        assert_eq!(p.status, 422, "unknown type: {}", p.body);
        assert!(p.body.contains("id=\"new-type-error\""), "{}", p.body);
        let p = post(
            &s,
            &dev,
            &format!("{PLAN}/items"),
            &[("type", "story"), ("title", "a\0b")],
        )
        .await;
        assert_eq!(p.status, 422, "NUL in a title: {}", p.body);
        for q in [
            "%00",
            "%25%5F",
            "a%20b%20c%20d%20e%20f%20g%20h%20i%20j%20k%20l%20m%20n%20o%20p%20q%20r",
        ] {
            let p = get(&s, &dev, &format!("{PLAN}?q={q}&state=%00")).await;
            assert_eq!(p.status, 200, "search {q}");
        }

        let p = post(
            &s,
            &dev,
            &format!("{PLAN}/items"),
            &[
                ("type", "story"),
                ("title", "Pay by card"),
                ("description", "As a buyer I pay **by card**."),
            ],
        )
        .await;
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location, "/projects/demo/plan/items/DEMO-1");
        post(
            &s,
            &dev,
            &format!("{PLAN}/items"),
            &[("type", "bug"), ("title", "Refund fails")],
        )
        .await;

        let p = get(&s, &dev, PLAN).await;
        assert!(p.body.contains("data-key=\"DEMO-1\"") && p.body.contains("Pay by card"));
        assert!(p.body.contains("data-key=\"DEMO-2\""));
        assert!(
            p.body.contains("cat-todo"),
            "state badge carries its category"
        );
        let p = get(&s, &dev, &format!("{PLAN}?q=card")).await;
        assert!(p.body.contains("data-key=\"DEMO-1\"") && !p.body.contains("data-key=\"DEMO-2\""));
        assert!(
            p.body.contains("value=\"card\""),
            "the search box keeps the words"
        );
        let p = get(&s, &dev, &format!("{PLAN}?q=nothing-like-this")).await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains("No items match"));
        let p = get(&s, &dev, &format!("{PLAN}?type=bug")).await;
        assert!(
            p.body
                .contains("<input type=\"hidden\" name=\"type\" value=\"bug\">"),
            "a search keeps the type filter"
        );
        assert!(!p.body.contains("data-key=\"DEMO-1\"") && p.body.contains("data-key=\"DEMO-2\""));
        let p = get(&s, &dev, &format!("{PLAN}?state=new&cursor=junk")).await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains("data-key=\"DEMO-1\""));

        let item = format!("{PLAN}/items/DEMO-1");
        let p = get(&s, &dev, &item).await;
        assert_eq!(p.status, 200);
        assert!(
            p.body.contains("<strong>by card</strong>"),
            "description is rendered"
        );
        assert!(p.body.contains("name=\"to\" value=\"In progress\""));

        let p = post(
            &s,
            &dev,
            &format!("{item}/transition"),
            &[("to", "In progress")],
        )
        .await;
        assert_eq!(p.status, 303, "{}", p.body);
        let p = get(&s, &dev, &item).await;
        assert!(
            p.body.contains("id=\"item-state\">In progress<"),
            "{}",
            p.body
        );
        assert!(p.body.contains("moved it from New to In progress"));
        post(&s, &dev, &format!("{item}/transition"), &[("to", "Done")]).await;
        let p = post(
            &s,
            &dev,
            &format!("{item}/transition"),
            &[("to", "In progress")],
        )
        .await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("id=\"item-error\""), "{}", p.body);
        assert!(p.body.contains("allowed: Ready"), "{}", p.body);

        let p = post(
            &s,
            &dev,
            &format!("{item}/comments"),
            &[("body", "Ready for **review**")],
        )
        .await;
        assert_eq!(p.status, 303, "{}", p.body);
        let p = get(&s, &dev, &item).await;
        assert!(
            p.body.contains("Ready for <strong>review</strong>"),
            "{}",
            p.body
        );
        let p = post(&s, &dev, &format!("{item}/comments"), &[("body", " ")]).await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("id=\"comment-error\""));

        // Watching: the reporter and commenters watch; the button turns it off.
        assert!(p.body.contains("Unwatch"));
        let p = post(&s, &dev, &format!("{item}/watch"), &[("on", "false")]).await;
        assert_eq!(p.status, 303);
        let p = get(&s, &dev, &item).await;
        assert!(p.body.contains("☆ Watch"));

        // Unknown and hostile keys are a 404 page, never a 500.
        for k in ["DEMO-999", "x%00y", "%E2%80%AE"] {
            let p = get(&s, &dev, &format!("{PLAN}/items/{k}")).await;
            assert_eq!(p.status, 404, "{k}");
            let p = post(
                &s,
                &dev,
                &format!("{PLAN}/items/{k}/transition"),
                &[("to", "Done")],
            )
            .await;
            assert_eq!(p.status, 404, "{k}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_ui_edit_conflict_and_hostile_input() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (dev, vic) = setup(&s).await;
        let script = "<script>alert(1)</script>";
        let img = "<img src=x onerror=alert(1)>";
        let link = "[x](javascript:alert(1))";
        let hostile = format!("{script}\n\n{img}\n\n{link}");
        let p = post(
            &s,
            &dev,
            &format!("{PLAN}/items"),
            &[
                ("type", "task"),
                ("title", script),
                ("description", &hostile),
            ],
        )
        .await;
        assert_eq!(p.status, 303, "{}", p.body);
        let item = format!("{PLAN}/items/DEMO-1");
        post(&s, &dev, &format!("{item}/comments"), &[("body", &hostile)]).await;
        for tok in [&dev, &vic] {
            for path in [PLAN.to_string(), item.clone()] {
                let p = get(&s, tok, &path).await;
                assert_eq!(p.status, 200);
                assert!(!p.body.contains("<script>alert"), "{path}: {}", p.body);
                assert!(!p.body.contains("<img src=x"), "{path}");
                assert!(!p.body.contains("onerror=\""), "{path}");
                assert!(!p.body.contains("href=\"javascript"), "{path}");
                assert!(
                    p.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
                    "{path}: title escaped"
                );
            }
        }

        // A good edit, then one based on the old version: 409 with the current values.
        let v = version(&s, "DEMO-1").await;
        let p = edit(&s, &dev, &item, "First title", v).await;
        assert_eq!(p.status, 303, "{}", p.body);
        let p = get(&s, &dev, &item).await;
        assert!(p.body.contains("id=\"item-title\">First title<"));
        assert!(p.body.contains(">api</span>") && p.body.contains("3 pts"));
        assert!(
            p.body.contains("title</span> &#60;script&#62;"),
            "history shows the title change"
        );
        let p = edit(&s, &dev, &item, "Second title", v).await;
        assert_eq!(p.status, 409, "{}", p.body);
        assert!(p.body.contains("id=\"edit-conflict\""));
        assert!(
            p.body.contains("<td>First title</td><td>Second title</td>"),
            "{}",
            p.body
        );
        assert!(
            p.body.contains("value=\"Second title\""),
            "the form keeps what was typed"
        );
        let p = get(&s, &dev, &item).await;
        assert!(
            p.body.contains("id=\"item-title\">First title<"),
            "nothing was overwritten"
        );
        // Bad fields come back as field errors, not 500s.
        let v = version(&s, "DEMO-1").await.to_string();
        for (field, value, err) in [
            ("estimate", "abc", "edit-estimate-error"),
            ("estimate", "99999", "edit-estimate-error"),
            ("assignee", "nobody", "edit-assignee-error"),
            ("labels", &"l".repeat(60), "edit-labels-error"),
            ("priority", "urgent", "edit-priority-error"),
        ] {
            let mut form = vec![
                ("title", "T"),
                ("description", ""),
                ("priority", "low"),
                ("estimate", ""),
                ("assignee", ""),
                ("labels", ""),
                ("version", v.as_str()),
            ];
            form.retain(|(k, _)| *k != field);
            form.push((field, value));
            let p = post(&s, &dev, &format!("{item}/edit"), &form).await;
            assert_eq!(p.status, 422, "{field}={value}: {}", p.body);
            assert!(p.body.contains(&format!("id=\"{err}\"")), "{field}={value}");
        }
        let p = post(
            &s,
            &dev,
            &format!("{item}/edit"),
            &[("title", "no version")],
        )
        .await;
        assert!((400..500).contains(&p.status), "{}", p.status);

        // A viewer reads everything but sees no forms and may not post them.
        let p = get(&s, &vic, PLAN).await;
        assert!(p.body.contains("data-key=\"DEMO-1\""));
        assert!(!p.body.contains("new-item-form"));
        let p = get(&s, &vic, &item).await;
        assert_eq!(p.status, 200);
        for form in ["edit-form", "comment-form", "/transition"] {
            assert!(!p.body.contains(form), "viewer sees {form}");
        }
        for (path, form) in [
            (
                format!("{PLAN}/items"),
                vec![("type", "story"), ("title", "x")],
            ),
            (format!("{item}/transition"), vec![("to", "Ready")]),
            (format!("{item}/comments"), vec![("body", "hi")]),
            (
                format!("{item}/edit"),
                vec![("title", "x"), ("version", "1")],
            ),
        ] {
            let p = post(&s, &vic, &path, &form).await;
            assert_eq!(p.status, 403, "viewer POST {path}");
        }
        // Watching is personal, so a viewer may watch.
        let p = post(&s, &vic, &format!("{item}/watch"), &[("on", "true")]).await;
        assert_eq!(p.status, 303);
        s.stop().await;
    }
}

/// The backlog's search box speaks the query language; a query that does not parse is explained
/// under the box, with the position, instead of failing the page.
#[tokio::test]
async fn backlog_search_uses_the_query_language() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (dev, _) = setup(&s).await;
        for (ty, title) in [
            ("story", "Sign in with SSO"),
            ("bug", "Crash on empty cart"),
            ("bug", "Typo on sign in page"),
        ] {
            let (st, _) = s
                .call(
                    Method::POST,
                    "/api/v1/projects/demo/items",
                    Some(&dev),
                    Some(json!({"type": ty, "title": title})),
                )
                .await;
            assert_eq!(st, 201);
        }
        let page = get(
            &s,
            &dev,
            &format!("{PLAN}?q={}", ouro_server::ui::url_encode("type:bug sign")),
        )
        .await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Typo on sign in page"), "{}", page.body);
        assert!(
            !page.body.contains("Crash on empty cart") && !page.body.contains("Sign in with SSO")
        );
        let page = get(
            &s,
            &dev,
            &format!("{PLAN}?q={}", ouro_server::ui::url_encode("-type:bug")),
        )
        .await;
        assert!(
            page.body.contains("Sign in with SSO") && !page.body.contains("Crash on empty cart")
        );
        let page = get(
            &s,
            &dev,
            &format!("{PLAN}?q={}", ouro_server::ui::url_encode("state:")),
        )
        .await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("id=\"q-error\"") && page.body.contains("^"),
            "{}",
            page.body
        );
        s.stop().await;
    }
}
